//! Unpacking a chain of backups newest first, as `pg_combinebackup` rebuilds one: every
//! block is written once, from the newest backup that has it. The newest backup's files are
//! written as they come (an `INCREMENTAL.<name>` file: its blocks where they belong, the
//! file at its rebuilt length); each older backup then only fills, below the newest
//! truncation length, the blocks still missing, and stops at a full copy. What the newest
//! backup does not have is never written. Every file still passes through its backup's
//! manifest check.

use std::collections::HashMap;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Unpack;
use crate::pg::incremental::{self, Geometry, Header};

/// Where a chain restore stands with each file of the newest backup.
#[derive(Default)]
pub struct ChainState {
    files: Mutex<HashMap<PathBuf, Fill>>,
    /// Files (manifest names) the last older backup wrote whole, every block from its copy:
    /// the file is that copy, which its own manifest check saw.
    copied_whole: Mutex<Vec<String>>,
}

enum Fill {
    /// Written whole (or, for a visibility map rebuilt from increments, left out on purpose).
    Complete,
    /// Blocks below `truncation` not yet in `filled` come from older backups. `pending`: the
    /// file is not made yet (the newest backup had none of its blocks), with this mode.
    Partial { truncation: u32, filled: Bits, pending: Option<u32> },
}

/// A set of block numbers.
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: u32) -> Bits {
        Bits(vec![0; (n as usize).div_ceil(64)])
    }
    fn get(&self, b: u32) -> bool {
        self.0.get(b as usize / 64).is_some_and(|w| w & (1 << (b % 64)) != 0)
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
    fn set(&mut self, b: u32) {
        if let Some(w) = self.0.get_mut(b as usize / 64) {
            *w |= 1 << (b % 64);
        }
    }
}

impl ChainState {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Fill>> {
        self.files.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A file the newest backup has whole.
    pub(super) fn written(&self, path: PathBuf) {
        self.lock().insert(path, Fill::Complete);
    }

    /// The files the older backup just unpacked wrote whole; each is given once.
    pub fn take_copied_whole(&self) -> Vec<String> {
        std::mem::take(&mut *self.copied_whole.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// After the last (full) backup: every block below a truncation length must have been
    /// found; the error names the first file where one was not.
    pub fn finish(&self) -> Result<(), String> {
        let files = self.lock();
        let mut missing: Vec<&PathBuf> = files
            .iter()
            .filter(|(_, f)| match f {
                Fill::Complete => false,
                Fill::Partial { truncation, filled, .. } => (0..*truncation).any(|b| !filled.get(b)),
            })
            .map(|(p, _)| p)
            .collect();
        missing.sort();
        match missing.first() {
            None => Ok(()),
            Some(p) => Err(format!(
                "{}: no backup of the chain holds a full copy, and its incremental copies leave blocks missing",
                p.display()
            )),
        }
    }
}

/// Where an incremental file's changes go: `dir/INCREMENTAL.name` is `dir/name`, for the
/// relation directories only (elsewhere such a name is an ordinary file, as in
/// pg_combinebackup).
pub(super) fn incremental_target(rel: &Path, key: &str) -> Option<PathBuf> {
    let name = rel.file_name()?.to_str()?.strip_prefix(incremental::PREFIX)?;
    let relation_dir = ["base/", "global/", "pg_tblspc/"].iter().any(|d| key.starts_with(d));
    (relation_dir && !name.is_empty()).then(|| rel.with_file_name(name))
}

/// Is this a visibility map fork (`<relfilenode>_vm[.<segment>]`)? (pure)
fn visibility_map(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    name.split('.').next().is_some_and(|fork| fork.ends_with("_vm"))
}

fn read_header(src: &mut impl Read, name: &str, size: u64) -> Result<Header, Unpack> {
    let g = Geometry::default();
    let bad = Unpack::Mismatch;
    let mut head = vec![0u8; 12];
    src.read_exact(&mut head)?;
    let fixed: &[u8; 12] = head[..].try_into().map_err(|_| bad(format!("{name}: short header")))?;
    let need = incremental::needed(fixed, g).ok_or_else(|| bad(format!("{name}: more blocks than a segment holds")))?;
    head.resize(need, 0);
    src.read_exact(&mut head[12..])?;
    let h = incremental::parse_header(name, &head, size, g).map_err(bad)?;
    io::copy(&mut src.take(h.header_len - need as u64), &mut io::sink())?;
    Ok(h)
}

const BLOCK: u64 = 8192;
/// Blocks of a whole older copy read at a time.
const RUN: u32 = 128;

/// The newest backup's incremental file `name` for `path`: the file at its rebuilt length,
/// its blocks where they belong, the rest to come from older backups. A visibility map is
/// left out: PostgreSQL clears its bits without naming the block in WAL, so the summaries
/// miss those changes and a rebuilt map could call a changed page all-visible (index-only
/// scans would return deleted rows); without the fork no page counts as all-visible, which
/// is always safe, and recovery and VACUUM set the bits again.
pub(super) fn newest_incremental(
    src: &mut impl Read,
    name: &str,
    size: u64,
    path: &Path,
    mode: u32,
    state: &ChainState,
) -> Result<(), Unpack> {
    let h = read_header(src, name, size)?;
    if visibility_map(path) {
        state.written(path.to_path_buf());
        return Ok(());
    }
    if h.blocks.is_empty() && h.truncation_blocks > 0 {
        // Made by the older backup that has its blocks: one file creation, not two opens.
        let (truncation, filled) = (h.truncation_blocks, Bits::new(h.truncation_blocks));
        state.lock().insert(path.to_path_buf(), Fill::Partial { truncation, filled, pending: Some(mode) });
        return Ok(());
    }
    let file = super::create_file(path, mode)?;
    let len = incremental::rebuilt_blocks(&h);
    file.set_len(len as u64 * BLOCK)?;
    let mut filled = Bits::new(len);
    let mut block = vec![0u8; BLOCK as usize];
    for &b in &h.blocks {
        src.read_exact(&mut block)?;
        std::os::unix::fs::FileExt::write_all_at(&file, &block, b as u64 * BLOCK)?;
        filled.set(b);
    }
    state.lock().insert(path.to_path_buf(), Fill::Partial { truncation: h.truncation_blocks, filled, pending: None });
    Ok(())
}

/// An older backup's copy of `path` (`incremental` or whole): the blocks still missing below
/// the newest truncation length. A whole copy is the last one needed. Nothing is written for
/// a file the newest backup has whole or does not have.
pub(super) fn older_copy(
    src: &mut impl Read,
    name: &str,
    size: u64,
    path: &Path,
    incremental: bool,
    state: &ChainState,
) -> Result<(), Unpack> {
    // Taken out while it is worked on, so other archives' threads are not held up.
    let taken = state.lock().remove(path);
    let (truncation, mut filled, pending) = match taken {
        Some(Fill::Partial { truncation, filled, pending }) => (truncation, filled, pending),
        Some(Fill::Complete) => {
            state.written(path.to_path_buf());
            return Ok(());
        }
        None => return Ok(()),
    };
    let header = match incremental {
        true => Some(read_header(src, name, size)?),
        false => None,
    };
    if header.as_ref().is_some_and(|h| h.blocks.is_empty()) {
        state.lock().insert(path.to_path_buf(), Fill::Partial { truncation, filled, pending });
        return Ok(());
    }
    let file = match pending {
        Some(mode) => {
            let f = super::create_file(path, mode)?;
            f.set_len(truncation as u64 * BLOCK)?;
            f
        }
        None => std::fs::OpenOptions::new().write(true).open(path)?,
    };
    let mut block = vec![0u8; BLOCK as usize];
    let fill = |b: u32, block: &[u8], filled: &mut Bits| -> io::Result<()> {
        if b < truncation && !filled.get(b) {
            std::os::unix::fs::FileExt::write_all_at(&file, block, b as u64 * BLOCK)?;
            filled.set(b);
        }
        Ok(())
    };
    let done = if let Some(h) = header {
        for &b in &h.blocks {
            src.read_exact(&mut block)?;
            fill(b, &block, &mut filled)?;
        }
        Fill::Partial { truncation, filled, pending: None }
    } else {
        let untouched = filled.is_empty();
        let have = (size / BLOCK).min(truncation as u64) as u32;
        // A run of blocks read at a time, each stretch still missing written with one call
        // (a write per block made a chain restore a quarter slower than a full one).
        let mut buf = vec![0u8; RUN as usize * BLOCK as usize];
        let mut at = 0;
        while at < have {
            let n = RUN.min(have - at);
            let data = &mut buf[..n as usize * BLOCK as usize];
            src.read_exact(data)?;
            let mut i = 0;
            while i < n {
                let start = i;
                while i < n && !filled.get(at + i) {
                    filled.set(at + i);
                    i += 1;
                }
                if i > start {
                    let bytes = &data[start as usize * BLOCK as usize..i as usize * BLOCK as usize];
                    std::os::unix::fs::FileExt::write_all_at(&file, bytes, (at + start) as u64 * BLOCK)?;
                } else {
                    i += 1;
                }
            }
            at += n;
        }
        if untouched && size == truncation as u64 * BLOCK {
            state.copied_whole.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(name.to_string());
        }
        Fill::Complete
    };
    state.lock().insert(path.to_path_buf(), done);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::incremental::{encode, plan, Older, Source};

    fn run(h: &Header, copies: &[Vec<u8>], older: &[Older]) -> Vec<u8> {
        let bs = BLOCK as usize;
        let mut want = Vec::new();
        for r in plan("f", h, older, Geometry::default()).unwrap() {
            let n = (r.blocks.end - r.blocks.start) as usize * bs;
            match r.from {
                Source::Zeros => want.resize(want.len() + n, 0),
                Source::Copy { copy, offset } => {
                    want.extend_from_slice(&copies[copy][offset as usize..offset as usize + n])
                }
            }
        }
        want
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]

        /// Newest first, each block written once, the chain gives what its plan rebuilds.
        #[test]
        fn newest_first_matches_the_plan(
            full_blocks in 0u32..300,
            increments in proptest::collection::vec(
                (proptest::collection::btree_set(0u32..300, 0..8), 0u32..300), 1..4),
        ) {
            let g = Geometry::default();
            let bs = BLOCK as usize;
            let full: Vec<u8> = (0..full_blocks as usize * bs).map(|i| (i / bs) as u8 ^ 0x5a).collect();
            // Oldest increment first; each block's bytes name the increment and the block.
            let files: Vec<Vec<u8>> = increments
                .iter()
                .enumerate()
                .map(|(k, (blocks, trunc))| {
                    let blocks: Vec<(u32, Vec<u8>)> =
                        blocks.iter().map(|&b| (b, vec![((k as u8 + 1) * 16).wrapping_add(b as u8); bs])).collect();
                    encode(&blocks, *trunc, g)
                })
                .collect();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("base/5/16384");
            let state = ChainState::default();
            let newest = files.last().unwrap();
            newest_incremental(&mut &newest[..], "n", newest.len() as u64, &path, 0o600, &state)
                .map_err(|_| "newest").unwrap();
            for f in files.iter().rev().skip(1) {
                older_copy(&mut &f[..], "o", f.len() as u64, &path, true, &state).map_err(|_| "older").unwrap();
            }
            older_copy(&mut &full[..], "full", full.len() as u64, &path, false, &state).map_err(|_| "full").unwrap();
            state.finish().unwrap();
            // The plan's view: copy 0 the newest, then the older increments, then the full copy.
            let h = incremental::parse_header("n", newest, newest.len() as u64, g).unwrap();
            let mut copies = vec![newest.clone()];
            let mut older = Vec::new();
            for f in files.iter().rev().skip(1) {
                older.push(Older::Incremental(incremental::parse_header("o", f, f.len() as u64, g).unwrap()));
                copies.push(f.clone());
            }
            older.push(Older::Full { size: full.len() as u64 });
            copies.push(full.clone());
            proptest::prop_assert!(std::fs::read(&path).unwrap() == run(&h, &copies, &older));
        }
    }

    #[test]
    fn what_the_newest_backup_lacks_or_has_whole_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let state = ChainState::default();
        let whole = dir.path().join("base/5/1");
        std::fs::create_dir_all(whole.parent().unwrap()).unwrap();
        std::fs::write(&whole, b"newest").unwrap();
        state.written(whole.clone());
        let older = vec![7u8; BLOCK as usize];
        older_copy(&mut &older[..], "o", BLOCK, &whole, false, &state).map_err(|_| "older").unwrap();
        assert_eq!(std::fs::read(&whole).unwrap(), b"newest");
        let dropped = dir.path().join("base/5/2");
        older_copy(&mut &older[..], "o", BLOCK, &dropped, false, &state).map_err(|_| "older").unwrap();
        assert!(!dropped.exists(), "a file the newest backup does not have stays away");
        // A visibility map sent as an increment is left out.
        let vm = dir.path().join("base/5/3_vm");
        let inc = encode(&[(0, vec![1; BLOCK as usize])], 1, Geometry::default());
        newest_incremental(&mut &inc[..], "n", inc.len() as u64, &vm, 0o600, &state).map_err(|_| "vm").unwrap();
        assert!(!vm.exists());
        older_copy(&mut &older[..], "o", BLOCK, &vm, false, &state).map_err(|_| "older").unwrap();
        assert!(!vm.exists());
        state.finish().unwrap();
    }

    #[test]
    fn a_file_copied_whole_from_one_older_backup_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let state = ChainState::default();
        let g = Geometry::default();
        let full = vec![7u8; 2 * BLOCK as usize];
        let (whole, mixed) = (dir.path().join("base/5/1"), dir.path().join("base/5/2"));
        let empty = encode(&[], 2, g);
        for p in [&whole, &mixed] {
            newest_incremental(&mut &empty[..], "n", empty.len() as u64, p, 0o600, &state).map_err(|_| "n").unwrap();
        }
        let one = encode(&[(1, vec![1; BLOCK as usize])], 2, g);
        older_copy(&mut &one[..], "base/5/2", one.len() as u64, &mixed, true, &state).map_err(|_| "o").unwrap();
        assert!(state.take_copied_whole().is_empty());
        for (key, p) in [("base/5/1", &whole), ("base/5/2", &mixed)] {
            older_copy(&mut &full[..], key, full.len() as u64, p, false, &state).map_err(|_| "f").unwrap();
        }
        assert_eq!(state.take_copied_whole(), ["base/5/1"], "the second file has a block from elsewhere");
        state.finish().unwrap();
    }

    #[test]
    fn a_chain_without_a_full_copy_is_an_error_when_blocks_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        let state = ChainState::default();
        let path = dir.path().join("base/5/16384");
        let inc = encode(&[(1, vec![1; BLOCK as usize])], 2, Geometry::default());
        newest_incremental(&mut &inc[..], "n", inc.len() as u64, &path, 0o600, &state).map_err(|_| "n").unwrap();
        let e = state.finish().unwrap_err();
        assert!(e.contains("16384") && e.contains("no backup of the chain holds a full copy"), "{e}");
        assert_eq!(
            incremental_target(Path::new("base/5/INCREMENTAL.16384"), "base/5/INCREMENTAL.16384"),
            Some("base/5/16384".into())
        );
        assert_eq!(incremental_target(Path::new("INCREMENTAL.x"), "INCREMENTAL.x"), None, "not a relation directory");
        assert!(visibility_map(Path::new("base/5/16384_vm.1")) && !visibility_map(Path::new("base/5/16384")));
    }
}
