//! Client-side incremental backups, on any PostgreSQL version: a base backup's tar stream
//! rewritten as it passes. Every relation file is cut into 1 MiB pieces and hashed (the new
//! backup's file index). Where the parent backup's index has the same pieces, they are not
//! stored again: the file becomes an `INCREMENTAL.<name>` entry in PostgreSQL 17's format,
//! holding the blocks of its changed pieces (none when nothing changed), and a chain restore
//! takes the rest from older backups (`unpack_chain.rs`). The entry's header lists its
//! blocks before them, so changed pieces are held until the file ends; past 16 MiB of
//! them, everything from there to the file's end goes into the entry as it comes. Without a
//! parent, every file passes as it is and only the index is made. Pure: bytes in, bytes out.

use std::sync::Arc;

use super::file_index::{digest_of, Digest, FileIndex, CHUNK};
use super::manifest::FileSum;
use crate::pg::incremental::{self, Geometry};

const BLOCK: u64 = 8192;
const TAR_BLOCK: u64 = 512;

/// What a rewrite did, for the log and the bench.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeltaStats {
    /// Relation files stored whole, from a changed piece on, or not at all.
    pub whole: u64,
    pub partial: u64,
    pub unchanged: u64,
    /// Relation files' bytes received, and those left out as the parent's.
    pub relation_bytes: u64,
    pub left_out: u64,
}

impl DeltaStats {
    pub fn add(&mut self, o: DeltaStats) {
        self.whole += o.whole;
        self.partial += o.partial;
        self.unchanged += o.unchanged;
        self.relation_bytes += o.relation_bytes;
        self.left_out += o.left_out;
    }
}

/// What the rewrite of one archive found.
pub struct Rewritten {
    pub index: FileIndex,
    pub stats: DeltaStats,
    /// Every regular file as the server sent it (manifest name, size, checksum in the
    /// manifest's algorithm), to check against the manifest that follows the archives.
    pub sums: Vec<(String, u64, FileSum)>,
}

pub struct TarDelta {
    /// Prepended to entry names to give the manifest's names (`pg_tblspc/<oid>/`).
    prefix: String,
    new_sum: fn() -> FileSum,
    sums: Vec<(String, u64, FileSum)>,
    parent: Option<Arc<FileIndex>>,
    index: FileIndex,
    stats: DeltaStats,
    state: State,
    head: Vec<u8>,
    /// The last entry was a long-name or pax header: the next header's name is not its own.
    extended: bool,
    /// Bytes of changed pieces a file may hold (`HOLD`; smaller in tests).
    budget: usize,
}

enum State {
    Header,
    /// Bytes copied as they are (an entry not compared, padding included).
    Pass(u64),
    /// A regular file not compared: copied, and summed for the manifest check.
    Plain {
        key: String,
        size: u64,
        left: u64,
        sum: FileSum,
    },
    File(Box<Rel>),
    /// Input padding after a compared file.
    Skip(u64),
    /// After the end-of-archive blocks.
    End,
}

struct Rel {
    key: String,
    header: tar::Header,
    size: u64,
    at: u64,
    hasher: blake3::Hasher,
    in_piece: usize,
    pieces: Vec<Digest>,
    sum: FileSum,
    mode: Mode,
}

enum Mode {
    /// Comparing: the pieces that differ from the parent's so far (number, bytes) are held
    /// until the file ends or they pass the budget, and the current one until it is compared.
    Holding { changed: Vec<(usize, Vec<u8>)>, current: Vec<u8> },
    /// The entry is being written; its length, for the padding.
    Writing(u64),
}

/// Changed pieces held per archive before the rest of a file is written as it comes.
const HOLD: usize = 16 * CHUNK;

fn padded(n: u64) -> u64 {
    n.div_ceil(TAR_BLOCK) * TAR_BLOCK
}

fn pad(out: &mut Vec<u8>, entry: u64) {
    out.resize(out.len() + (padded(entry) - entry) as usize, 0);
}

/// `<digits>[_fsm|_init][.<segment>]`: a relation file whose blocks are PostgreSQL's pages.
/// A visibility map goes whole (it is small, and chain restores leave out a map sent in
/// part).
fn relation_file(name: &str) -> bool {
    let base = name.split_once('.').map_or(name, |(b, seg)| {
        if seg.is_empty() || !seg.bytes().all(|c| c.is_ascii_digit()) {
            ""
        } else {
            b
        }
    });
    let oid = base.strip_suffix("_fsm").or_else(|| base.strip_suffix("_init")).unwrap_or(base);
    !oid.is_empty() && oid.bytes().all(|c| c.is_ascii_digit())
}

impl TarDelta {
    /// `new_sum`: a running checksum in the manifest's algorithm.
    pub fn new(prefix: &str, parent: Option<Arc<FileIndex>>, new_sum: fn() -> FileSum) -> TarDelta {
        TarDelta {
            prefix: prefix.to_string(),
            new_sum,
            sums: Vec::new(),
            parent,
            index: FileIndex::default(),
            stats: DeltaStats::default(),
            state: State::Header,
            head: Vec::with_capacity(TAR_BLOCK as usize),
            extended: false,
            budget: HOLD,
        }
    }

    /// Rewrite the next bytes of the archive into `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), String> {
        while !input.is_empty() {
            match &mut self.state {
                State::Header => {
                    let n = (TAR_BLOCK as usize - self.head.len()).min(input.len());
                    self.head.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.head.len() == TAR_BLOCK as usize {
                        self.on_header(out)?;
                        self.head.clear();
                    }
                }
                State::Pass(left) | State::Skip(left) => {
                    let n = (*left).min(input.len() as u64) as usize;
                    *left -= n as u64;
                    let done = *left == 0;
                    if matches!(self.state, State::Pass(_)) {
                        out.extend_from_slice(&input[..n]);
                    }
                    input = &input[n..];
                    if done {
                        self.state = State::Header;
                    }
                }
                State::End => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                State::Plain { left, sum, .. } => {
                    let n = (*left).min(input.len() as u64) as usize;
                    out.extend_from_slice(&input[..n]);
                    sum.update(&input[..n]);
                    input = &input[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        let State::Plain { key, size, sum, .. } = std::mem::replace(&mut self.state, State::Header)
                        else {
                            unreachable!()
                        };
                        if padded(size) > size {
                            self.state = State::Pass(padded(size) - size);
                        }
                        self.sums.push((key, size, sum));
                    }
                }
                State::File(rel) => {
                    let n = ((rel.size - rel.at) as usize).min(CHUNK - rel.in_piece).min(input.len());
                    let data = &input[..n];
                    input = &input[n..];
                    rel.hasher.update(data);
                    rel.sum.update(data);
                    rel.in_piece += n;
                    rel.at += n as u64;
                    match &mut rel.mode {
                        Mode::Holding { current, .. } => current.extend_from_slice(data),
                        Mode::Writing(_) => out.extend_from_slice(data),
                    }
                    if rel.in_piece == CHUNK || rel.at == rel.size {
                        self.piece_done(out);
                    }
                }
            }
        }
        Ok(())
    }

    fn on_header(&mut self, out: &mut Vec<u8>) -> Result<(), String> {
        if self.head.iter().all(|&b| b == 0) {
            out.extend_from_slice(&self.head);
            self.state = State::End;
            return Ok(());
        }
        let header = tar::Header::from_byte_slice(&self.head).clone();
        let size = header.size().map_err(|e| format!("a tar header in the server's archive: {e}"))?;
        let kind = header.entry_type();
        let extended = std::mem::replace(&mut self.extended, kind.is_gnu_longname() || kind.is_pax_local_extensions());
        let path = String::from_utf8(header.path_bytes().into_owned()).ok();
        let key = path.as_deref().map(|p| format!("{}{p}", self.prefix));
        let eligible = kind.is_file()
            && !extended
            && key.as_deref().is_some_and(|k| ["base/", "global/", "pg_tblspc/"].iter().any(|d| k.starts_with(d)))
            && path.as_deref().and_then(|p| p.rsplit('/').next()).is_some_and(relation_file)
            && path.as_deref().is_some_and(|p| p.len() + incremental::PREFIX.len() <= 100)
            && header.as_ustar().is_some_and(|u| u.prefix.iter().all(|&b| b == 0))
            && size > 0
            && size % BLOCK == 0
            && size / BLOCK <= Geometry::default().segment_blocks as u64;
        let key = match (key, eligible) {
            (Some(key), true) => key,
            (Some(key), false) if kind.is_file() && size > 0 => {
                out.extend_from_slice(&self.head);
                self.state = State::Plain { key, size, left: size, sum: (self.new_sum)() };
                return Ok(());
            }
            (key, _) => {
                if kind.is_file() {
                    // An empty file, or one whose name is not UTF-8 (which the check reports).
                    self.sums.extend(key.map(|k| (k, 0, (self.new_sum)())));
                }
                out.extend_from_slice(&self.head);
                self.state = match padded(size) {
                    0 => State::Header,
                    n => State::Pass(n),
                };
                return Ok(());
            }
        };
        self.stats.relation_bytes += size;
        let known = self.parent.as_ref().is_some_and(|p| p.chunks(&key).is_some());
        let mode = if known {
            Mode::Holding { changed: Vec::new(), current: Vec::new() }
        } else {
            out.extend_from_slice(&self.head);
            self.stats.whole += 1;
            Mode::Writing(size)
        };
        self.state = State::File(Box::new(Rel {
            key,
            header,
            size,
            at: 0,
            hasher: blake3::Hasher::new(),
            in_piece: 0,
            pieces: Vec::new(),
            sum: (self.new_sum)(),
            mode,
        }));
        Ok(())
    }

    /// A piece is complete: compare it while holding, and at the file's end close the entry.
    fn piece_done(&mut self, out: &mut Vec<u8>) {
        let State::File(rel) = &mut self.state else { return };
        let k = rel.pieces.len();
        rel.pieces.push(digest_of(&rel.hasher));
        rel.hasher.reset();
        rel.in_piece = 0;
        let ended = rel.at == rel.size;
        if let Mode::Holding { changed, current } = &mut rel.mode {
            let parents = self.parent.as_ref().and_then(|p| p.chunks(&rel.key));
            if parents.and_then(|p| p.get(k)) == rel.pieces.last() {
                current.clear();
            } else {
                changed.push((k, std::mem::take(current)));
            }
            let held: usize = changed.iter().map(|(_, p)| p.len()).sum();
            let blocks = (rel.size / BLOCK) as u32;
            let per_piece = (CHUNK as u64 / BLOCK) as u32;
            let all_changed = changed.len() == rel.pieces.len();
            if ended || held > self.budget {
                // Every piece changed so far: the file goes whole. Otherwise an increment of
                // the changed pieces and, when over the budget, of all that follows.
                let len = if all_changed {
                    out.extend_from_slice(rel.header.as_bytes());
                    self.stats.whole += 1;
                    rel.size
                } else {
                    let rest_from = (!ended).then_some(((k + 1) * CHUNK) as u64);
                    let mut list: Vec<u32> = changed
                        .iter()
                        .flat_map(|&(j, _)| j as u32 * per_piece..((j as u32 + 1) * per_piece).min(blocks))
                        .collect();
                    list.extend(rest_from.map_or(0..0, |from| (from / BLOCK) as u32..blocks));
                    let head = incremental::encode_header(list.into_iter(), blocks, Geometry::default());
                    let tail = rest_from.map_or(0, |from| rel.size - from);
                    let len = head.len() as u64 + held as u64 + tail;
                    write_header(out, &rel.header, len);
                    out.extend_from_slice(&head);
                    match changed.is_empty() {
                        true => self.stats.unchanged += 1,
                        false => self.stats.partial += 1,
                    }
                    self.stats.left_out += rel.size - held as u64 - tail;
                    len
                };
                for (_, p) in changed.drain(..) {
                    out.extend_from_slice(&p);
                }
                match ended {
                    true => pad(out, len),
                    false => rel.mode = Mode::Writing(len),
                }
            }
        }
        if ended {
            if let Mode::Writing(len) = rel.mode {
                pad(out, len);
            }
            let rel = match std::mem::replace(&mut self.state, State::Header) {
                State::File(rel) => rel,
                _ => unreachable!(),
            };
            if padded(rel.size) > rel.size {
                self.state = State::Skip(padded(rel.size) - rel.size);
            }
            self.sums.push((rel.key.clone(), rel.size, rel.sum));
            self.index.insert(rel.key, rel.pieces);
        }
    }

    /// The archive ended: it must have ended between entries. The index of its relation
    /// files and what was left out.
    pub fn finish(self) -> Result<Rewritten, String> {
        match self.state {
            State::End => {}
            State::Header if self.head.is_empty() => {}
            _ => return Err("the server's archive ended inside an entry".into()),
        }
        Ok(Rewritten { index: self.index, stats: self.stats, sums: self.sums })
    }
}

/// The header of `INCREMENTAL.<name>` for the original entry, `len` bytes long.
fn write_header(out: &mut Vec<u8>, original: &tar::Header, len: u64) {
    let mut h = original.clone();
    let path = original.path_bytes().into_owned();
    let (dir, name) = match path.iter().rposition(|&c| c == b'/') {
        Some(i) => path.split_at(i + 1),
        None => (&[][..], &path[..]),
    };
    let bytes = h.as_mut_bytes();
    bytes[..100].fill(0);
    let new = [dir, incremental::PREFIX.as_bytes(), name].concat();
    bytes[..new.len()].copy_from_slice(&new);
    h.set_size(len);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

#[cfg(test)]
#[path = "tar_delta_tests.rs"]
mod tests;
