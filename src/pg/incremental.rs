//! PostgreSQL 17's incremental relation files (`INCREMENTAL.<name>` in a `BASE_BACKUP
//! (INCREMENTAL)` archive) and how a chain of backups rebuilds a segment from them, as
//! `pg_combinebackup` does. Pure: the caller reads bytes and writes blocks.
//!
//! An incremental file is, in the server's byte order (little-endian on every platform
//! PostgreSQL builds packages for): the magic number, the count of blocks it holds, the
//! truncation length in blocks, the block numbers (ascending, relative to the segment),
//! zeros up to a whole block when it holds any block, then the blocks themselves.

use std::ops::Range;

pub const INCREMENTAL_MAGIC: u32 = 0xd3ae_1f0d;
/// The file name prefix of an incremental file in an archive.
pub const PREFIX: &str = "INCREMENTAL.";
/// Magic, block count, truncation length.
const FIXED: usize = 12;

/// What a server's build fixes: the block size and the blocks per segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub block_size: u32,
    pub segment_blocks: u32,
}

impl Default for Geometry {
    /// PostgreSQL's defaults: 8 KiB blocks, 1 GiB segments.
    fn default() -> Self {
        Geometry { block_size: 8192, segment_blocks: 131_072 }
    }
}

/// The header of one incremental file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Blocks this file holds, ascending; the i-th block's bytes follow the header at
    /// `header_len + i * block_size`.
    pub blocks: Vec<u32>,
    /// Blocks below this that the file does not hold come from older backups.
    pub truncation_blocks: u32,
    /// Bytes before the first block (a multiple of the block size when there are blocks).
    pub header_len: u64,
}

/// The header's length for `n` blocks (pure): 12 + 4n bytes, rounded up to a whole block
/// when there is any block.
pub fn header_len(n: u32, g: Geometry) -> u64 {
    let raw = FIXED as u64 + 4 * n as u64;
    if n == 0 {
        raw
    } else {
        raw.div_ceil(g.block_size as u64) * g.block_size as u64
    }
}

/// How many bytes of the file's start [`parse_header`] needs, once the first 12 are known
/// (pure); `None` when the block count is impossible for this geometry.
pub fn needed(first: &[u8; FIXED], g: Geometry) -> Option<usize> {
    let n = u32::from_le_bytes(first[4..8].try_into().ok()?);
    (n <= g.segment_blocks).then_some(FIXED + 4 * n as usize)
}

/// `name`'s header from the first bytes of the file (at least [`needed`] of them), checked
/// against the file's size as its archive records it. Stricter than `pg_combinebackup`:
/// block numbers must ascend and stay within a segment, so a damaged header is an error
/// here rather than a file of the wrong length later.
pub fn parse_header(name: &str, bytes: &[u8], file_size: u64, g: Geometry) -> Result<Header, String> {
    let word = |i: usize| bytes.get(4 * i..4 * i + 4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes);
    let short = || format!("{name}: incremental file shorter than its header ({} bytes)", bytes.len());
    let magic = word(0).ok_or_else(short)?;
    if magic != INCREMENTAL_MAGIC {
        return Err(format!(
            "{name}: not an incremental file (magic 0x{magic:08x}, expected 0x{INCREMENTAL_MAGIC:08x})"
        ));
    }
    let n = word(1).ok_or_else(short)?;
    let truncation_blocks = word(2).ok_or_else(short)?;
    let limit = g.segment_blocks;
    if n > limit {
        return Err(format!("{name}: incremental file holds {n} blocks, more than a segment's {limit}"));
    }
    if truncation_blocks > limit {
        return Err(format!("{name}: truncation length {truncation_blocks} blocks is beyond a segment's {limit}"));
    }
    let blocks: Vec<u32> = (0..n as usize).map(|i| word(3 + i).ok_or_else(short)).collect::<Result<_, _>>()?;
    if let Some(w) = blocks.windows(2).find(|w| w[0] >= w[1]) {
        return Err(format!("{name}: block numbers out of order ({} then {})", w[0], w[1]));
    }
    if let Some(b) = blocks.last().filter(|&&b| b >= limit) {
        return Err(format!("{name}: block {b} is beyond a segment's {limit} blocks"));
    }
    let header_len = header_len(n, g);
    let want = header_len + n as u64 * g.block_size as u64;
    if file_size != want {
        return Err(format!("{name}: {file_size} bytes, but its header describes {want}"));
    }
    Ok(Header { blocks, truncation_blocks, header_len })
}

/// An older backup's copy of a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Older {
    /// The whole file, this many bytes long.
    Full {
        size: u64,
    },
    Incremental(Header),
}

/// Where a run of output blocks comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Bytes of one copy, from this offset on: copy 0 is the newest (incremental) file,
    /// copy `i` the `i`-th older one.
    Copy {
        copy: usize,
        offset: u64,
    },
    Zeros,
}

/// A run of consecutive output blocks with one source, read consecutively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub blocks: Range<u32>,
    pub from: Source,
}

/// How to rebuild one segment from its newest, incremental, copy and the older copies,
/// newest first (pure), as `pg_combinebackup` does: the newest file's blocks, then each
/// older one's for blocks below the newest truncation length that are still missing, down
/// to the first full copy; what no copy holds is zeros. The runs are in output order and
/// cover every block once. Blocks below the truncation length must all be found: a chain
/// without a full copy that leaves one missing is an error, not zeros.
pub fn plan(name: &str, newest: &Header, older: &[Older], g: Geometry) -> Result<Vec<Run>, String> {
    let bs = g.block_size as u64;
    let trunc = newest.truncation_blocks;
    let len = rebuilt_blocks(newest);
    let mut source: Vec<Option<(usize, u64)>> = vec![None; len as usize];
    for (i, &b) in newest.blocks.iter().enumerate() {
        source[b as usize] = Some((0, newest.header_len + i as u64 * bs));
    }
    let mut reached_full = false;
    for (i, c) in older.iter().enumerate() {
        let copy = i + 1;
        match c {
            Older::Incremental(h) => {
                for (j, &b) in h.blocks.iter().enumerate() {
                    if b < trunc && source[b as usize].is_none() {
                        source[b as usize] = Some((copy, h.header_len + j as u64 * bs));
                    }
                }
            }
            Older::Full { size } => {
                let have = (size / bs).min(trunc as u64) as usize;
                for (b, s) in source.iter_mut().enumerate().take(have) {
                    if s.is_none() {
                        *s = Some((copy, b as u64 * bs));
                    }
                }
                reached_full = true;
                break;
            }
        }
    }
    if !reached_full && source[..trunc as usize].iter().any(Option::is_none) {
        return Err(format!(
            "{name}: no older backup holds a full copy of this file, and the incremental copies leave blocks missing"
        ));
    }
    Ok(runs(&source, bs))
}

/// The rebuilt segment's length in blocks (pure): the truncation length, or past the last
/// block the file holds if that is further.
pub fn rebuilt_blocks(h: &Header) -> u32 {
    h.blocks.last().map_or(h.truncation_blocks, |&b| h.truncation_blocks.max(b + 1))
}

/// The header of an incremental file holding `blocks` (ascending), as the server writes it
/// (pure); tidewal's client-side incremental backups write the same format.
pub fn encode_header(blocks: impl ExactSizeIterator<Item = u32>, truncation: u32, g: Geometry) -> Vec<u8> {
    let n = blocks.len() as u32;
    let mut f = Vec::with_capacity(header_len(n, g) as usize);
    f.extend_from_slice(&INCREMENTAL_MAGIC.to_le_bytes());
    f.extend_from_slice(&n.to_le_bytes());
    f.extend_from_slice(&truncation.to_le_bytes());
    for b in blocks {
        f.extend_from_slice(&b.to_le_bytes());
    }
    f.resize(header_len(n, g) as usize, 0);
    f
}

/// An incremental file as the server writes it (tests build chains with it).
#[cfg(test)]
pub(crate) fn encode(blocks: &[(u32, Vec<u8>)], truncation: u32, g: Geometry) -> Vec<u8> {
    let mut f = encode_header(blocks.iter().map(|(b, _)| *b), truncation, g);
    for (_, data) in blocks {
        f.extend_from_slice(data);
    }
    f
}

/// Consecutive blocks read consecutively from one copy become one run (pure).
fn runs(source: &[Option<(usize, u64)>], bs: u64) -> Vec<Run> {
    let mut out: Vec<Run> = Vec::new();
    for (b, s) in source.iter().enumerate() {
        let b = b as u32;
        let from = match *s {
            Some((copy, offset)) => Source::Copy { copy, offset },
            None => Source::Zeros,
        };
        if let Some(last) = out.last_mut() {
            let follows = match (&last.from, &from) {
                (Source::Zeros, Source::Zeros) => true,
                (Source::Copy { copy: a, offset: o }, Source::Copy { copy: c, offset }) => {
                    a == c && o + (b - last.blocks.start) as u64 * bs == *offset
                }
                _ => false,
            };
            if follows {
                last.blocks.end = b + 1;
                continue;
            }
        }
        out.push(Run { blocks: b..b + 1, from });
    }
    out
}

#[cfg(test)]
#[path = "incremental_tests.rs"]
mod tests;
