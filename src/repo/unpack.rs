//! Restoring one backup archive: the object is opened (decrypted, decompressed, verified) on
//! one thread, with 4 cores or more on the rayon pool driven in order from that thread, and
//! unpacked on another, joined by a bounded queue; every regular file is checked against the
//! manifest while it is written.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use super::manifest::Checker;
use crate::codec::{default_window, CodecError, Keyring, OpenReader, ParOpenReader, Spare};
use crate::error::{Code, Fail, Result};
#[path = "unpack_chain.rs"]
mod chain;
pub use chain::ChainState;
use chain::{incremental_target, newest_incremental, older_copy};

/// Bytes per piece (from the pool: an lz4 block or a chunk), and pieces queued.
const PIECE: usize = 1 << 20;
const QUEUE: usize = 8;

/// Unpack the sealed tar archive `obj` read from `src` into `dest`; files are checked
/// against `checker` under `prefix` (`""` for base.tar, `pg_tblspc/<oid>/` for a tablespace).
/// `layer`: a backup alone, or which member of a chain (newest first).
/// `count` is called with the plaintext bytes as they pass (progress).
#[allow(clippy::too_many_arguments)]
pub fn unpack(
    src: Box<dyn Read + Send>,
    keys: Keyring,
    obj: &str,
    dest: &Path,
    prefix: &str,
    checker: Arc<Checker>,
    layer: Layer,
    count: impl Fn(u64) + Send + 'static,
) -> Result<()> {
    unpack_with(src, keys, obj, dest, prefix, checker, layer, count, default_window())
}

/// [`unpack`], opened on the pool with `window` jobs per stage, or on one thread (`None`).
#[allow(clippy::too_many_arguments)]
fn unpack_with(
    src: Box<dyn Read + Send>,
    keys: Keyring,
    obj: &str,
    dest: &Path,
    prefix: &str,
    checker: Arc<Checker>,
    layer: Layer,
    count: impl Fn(u64) + Send + 'static,
    window: Option<usize>,
) -> Result<()> {
    let (tx, rx) = sync_channel::<io::Result<Vec<u8>>>(QUEUE);
    let (spare_tx, spare_rx) = sync_channel::<Option<Spare>>(1);
    let name = obj.to_string();
    let opener = std::thread::Builder::new()
        .name("tidewal-open".into())
        .spawn(move || {
            let sent = |piece: Vec<u8>| {
                count(piece.len() as u64);
                tx.send(Ok(piece)).is_ok() // if not, the unpacker stopped; its error explains
            };
            let failed = |e: CodecError| {
                let _ = tx.send(Err(io::Error::other("the archive could not be opened")));
                e
            };
            let Some(window) = window else {
                let _ = spare_tx.send(None);
                return open_here(src, &keys, &name, sent).map_err(failed);
            };
            // Chunks and lz4 blocks are opened on the rayon pool; this thread reads the
            // object and hashes the plaintext in order.
            let mut r = ParOpenReader::new(src, &keys, &name, window)?;
            let _ = spare_tx.send(Some(r.spare()));
            while let Some(piece) = r.next_piece().map_err(failed)? {
                if !sent(piece) {
                    break;
                }
            }
            Ok(())
        })
        .map_err(|e| Fail::new(Code::Internal, format!("cannot start a thread: {e}")))?;
    // Spent pieces go back to the opener (none if it failed before its first piece).
    let spare = spare_rx.recv().ok().flatten();
    let mut queue = QueueReader { rx, cur: Vec::new(), pos: 0, spare };
    let mut unpacked = write_tree(&mut queue, dest, prefix, &checker, &layer);
    if unpacked.is_ok() {
        // Past the tar end marker: read to the object's end, where the opener checks the
        // last frame and the whole-archive digest.
        if let Err(e) = io::copy(&mut queue, &mut io::sink()) {
            unpacked = Err(Unpack::Io(e));
        }
    }
    drop(queue);
    let opened = opener.join().map_err(|_| Fail::new(Code::Internal, "the archive reader panicked"))?;
    // The reader's error comes first: a damaged object explains a short tar stream.
    opened.map_err(|e| match e {
        e if e.is_integrity() => Fail::new(Code::Integrity, format!("object {obj}: {e}")),
        e => Fail::new(Code::Storage, format!("object {obj}: {e}")),
    })?;
    unpacked.map_err(|e| match e {
        Unpack::Io(e) => Fail::new(Code::Storage, format!("object {obj}: {e}")),
        Unpack::Mismatch(m) => {
            Fail::new(Code::Integrity, format!("object {obj}: restored files do not match the backup manifest: {m}"))
        }
    })
}

/// Open on this thread alone, in 1 MiB pieces, until `sent` says to stop.
fn open_here(
    src: Box<dyn Read + Send>,
    keys: &Keyring,
    name: &str,
    mut sent: impl FnMut(Vec<u8>) -> bool,
) -> std::result::Result<(), CodecError> {
    let mut r = OpenReader::new(src, keys, name)?;
    loop {
        let mut buf = vec![0u8; PIECE];
        let mut filled = 0;
        while filled < PIECE {
            match r.read(&mut buf[filled..]).map_err(CodecError::from_io)? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            return Ok(());
        }
        buf.truncate(filled);
        if !sent(buf) {
            return Ok(());
        }
    }
}

enum Unpack {
    Io(io::Error),
    Mismatch(String),
}

impl From<io::Error> for Unpack {
    fn from(e: io::Error) -> Self {
        Unpack::Io(e)
    }
}

/// How an archive is unpacked: a backup alone, or one of a chain, newest first.
#[derive(Clone)]
pub enum Layer {
    Alone,
    Newest(Arc<ChainState>),
    Older(Arc<ChainState>),
}

/// Regular files are written here (checked on the way); directories and links by `tar`.
fn write_tree(
    src: &mut impl Read,
    dest: &Path,
    prefix: &str,
    checker: &Checker,
    layer: &Layer,
) -> std::result::Result<(), Unpack> {
    let mut archive = tar::Archive::new(src);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
            // The newest backup's directories and links are the ones the cluster has.
            if !matches!(layer, Layer::Older(_)) {
                entry.unpack_in(dest)?;
            }
            continue;
        }
        let rel = safe_relative(&entry.path()?)?;
        let key = format!("{prefix}{}", rel.display());
        let size = entry.header().size()?;
        let mode = entry.header().mode().unwrap_or(0o600) & 0o7777;
        let target = incremental_target(&rel, &key);
        let path = dest.join(target.as_ref().unwrap_or(&rel));
        let mut sum = checker.start(&key);
        let mut src = Summed { inner: &mut entry, sum: &mut sum };
        match (layer, target.is_some()) {
            (Layer::Alone, false) => write_whole(&mut src, &path, mode)?,
            (Layer::Newest(state), false) => {
                write_whole(&mut src, &path, mode)?;
                state.written(path);
            }
            (Layer::Alone, true) => {
                return Err(Unpack::Mismatch(format!(
                    "{key}: an incremental file, in a backup restored without its chain"
                )))
            }
            (Layer::Newest(state), true) => newest_incremental(&mut src, &key, size, &path, mode, state)?,
            (Layer::Older(state), incremental) => older_copy(&mut src, &key, size, &path, incremental, state)?,
        }
        // What was not written still counts for the manifest check.
        io::copy(&mut src, &mut io::sink())?;
        checker.finish(&key, size, sum).map_err(Unpack::Mismatch)?;
    }
    Ok(())
}

/// A new file, its directory made if need be.
fn create_file(path: &Path, mode: u32) -> io::Result<std::fs::File> {
    if let Some(parent) = path.parent() {
        if !parent.is_dir() {
            std::fs::create_dir_all(parent)?;
        }
    }
    let file = std::fs::File::create(path)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))?;
    Ok(file)
}

fn write_whole(src: &mut impl Read, path: &Path, mode: u32) -> io::Result<()> {
    let mut file = create_file(path, mode)?;
    let mut buf = vec![0u8; PIECE];
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        file.write_all(&buf[..n])?;
    }
}

/// A reader that feeds a manifest checksum with what passes.
struct Summed<'a, R> {
    inner: &'a mut R,
    sum: &'a mut super::manifest::FileSum,
}

impl<R: Read> Read for Summed<'_, R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.sum.update(&out[..n]);
        Ok(n)
    }
}

/// A tar member path that stays inside the destination.
fn safe_relative(p: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(io::Error::other(format!("archive member {} leaves the directory", p.display()))),
        }
    }
    if out.as_os_str().is_empty() {
        return Err(io::Error::other("archive member with an empty name"));
    }
    Ok(out)
}

/// `Read` over pieces arriving from the opener thread.
struct QueueReader {
    rx: Receiver<io::Result<Vec<u8>>>,
    cur: Vec<u8>,
    pos: usize,
    spare: Option<Spare>,
}

impl Read for QueueReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.cur.len() {
            match self.rx.recv() {
                Ok(piece) => {
                    let spent = std::mem::replace(&mut self.cur, piece?);
                    if let Some(s) = &self.spare {
                        s.give(spent);
                    }
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len() - self.pos);
        out[..n].copy_from_slice(&self.cur[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::codec::{seal_to_vec, Key, SealOptions};

    type Files = Vec<(&'static str, Vec<u8>)>;

    /// A tar of a few files (one of several lz4 blocks) and the manifest that lists them.
    fn archive() -> (Vec<u8>, Files, Checker) {
        let mut big = Vec::new();
        let mut x = 7u64;
        while big.len() < 3 << 20 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let noise = x.to_le_bytes();
            big.extend_from_slice(if x >> 62 == 0 { &noise[..] } else { b"pgbench_accounts filler" });
        }
        let files = vec![("PG_VERSION", b"15\n".to_vec()), ("base/1/16384", big), ("base/1/empty", Vec::new())];
        let mut tar = tar::Builder::new(Vec::new());
        for (path, data) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o600);
            tar.append_data(&mut h, path, &data[..]).unwrap();
        }
        let listed: Vec<String> = files
            .iter()
            .map(|(p, d)| {
                let sum = hex::encode(crc32c::crc32c(d).to_le_bytes());
                format!(r#"{{"Path": "{p}", "Size": {}, "Last-Modified": "x", "Checksum-Algorithm": "CRC32C", "Checksum": "{sum}"}}"#, d.len())
            })
            .collect();
        let text = format!(r#"{{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [{}]}}"#, listed.join(","));
        let checker = Checker::new(super::super::manifest::parse(text.as_bytes()).unwrap()).unwrap();
        (tar.into_inner().unwrap(), files, checker)
    }

    #[test]
    fn unpacks_alike_on_one_thread_and_on_the_pool() {
        let key = Key::from_text(&"44".repeat(32), "test").unwrap();
        let keys = Keyring::new(key.clone(), vec![]);
        let (tar, files, _) = archive();
        let obj = "backups/b/base.tar";
        let sealed =
            seal_to_vec(&tar, Some(&key), obj, SealOptions { lz4: true, digest: None, chain: false }).unwrap().out;
        let mut damaged = sealed.clone();
        damaged[sealed.len() / 2] ^= 4;
        for window in [None, Some(1), Some(4)] {
            let dir = tempfile::tempdir().unwrap();
            let checker = Arc::new(archive().2);
            let src = Box::new(io::Cursor::new(sealed.clone()));
            unpack_with(src, keys.clone(), obj, dir.path(), "", checker.clone(), Layer::Alone, |_| {}, window).unwrap();
            assert_eq!(checker.complete().unwrap(), files.len());
            for (path, data) in &files {
                assert!(std::fs::read(dir.path().join(path)).unwrap() == *data, "{path}, window {window:?}");
            }
            // A damaged chunk: an integrity failure naming the object, whichever way it opens.
            let dir = tempfile::tempdir().unwrap();
            let src = Box::new(io::Cursor::new(damaged.clone()));
            let e = unpack_with(
                src,
                keys.clone(),
                obj,
                dir.path(),
                "",
                Arc::new(archive().2),
                Layer::Alone,
                |_| {},
                window,
            )
            .unwrap_err();
            assert_eq!(e.code, Code::Integrity, "{e}");
            assert!(e.message.contains(obj) && e.message.contains("failed authentication"), "{e}");
        }
    }

    #[test]
    fn member_paths_stay_inside() {
        assert_eq!(safe_relative(Path::new("./base/1/123")).unwrap(), PathBuf::from("base/1/123"));
        assert!(safe_relative(Path::new("../etc/passwd")).is_err());
        assert!(safe_relative(Path::new("/etc/passwd")).is_err());
        assert!(safe_relative(Path::new("base/../../x")).is_err());
    }
}
