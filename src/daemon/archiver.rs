//! Archive mode: upload the files PostgreSQL marks `.ready` in `pg_wal/archive_status`
//! ahead of its one-at-a-time archiver, several at once, oldest first. inotify (notify) only
//! wakes the loop early, and only for a `.ready` file created or moved in: listing the
//! directory raises open and close events, and waking on those made the loop wake itself
//! for ever (a core at 100% on an idle cluster). A rescan every second catches what events
//! miss. The archiver's own `wal-push` then finds an identical object and returns at once.
//! Nothing is acknowledged here: PostgreSQL marks a file done only when its
//! `archive_command` exits 0.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use notify::event::{ModifyKind, RenameMode};
use notify::{EventKind, Watcher};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::{Code, Fail, Result};
use crate::pg::walfile::WalFile;
use crate::repo::Pushed;

/// The `.ready` files to upload, in the order PostgreSQL archives them: history files first,
/// then by name (pure).
pub fn ready_in_order(names: impl IntoIterator<Item = String>, seg_size: u64) -> Vec<String> {
    let mut ready: Vec<(bool, String)> = names
        .into_iter()
        .filter_map(|n| n.strip_suffix(".ready").map(str::to_string))
        .filter(|n| WalFile::parse(n, seg_size).is_ok())
        .map(|n| (!n.ends_with(".history"), n))
        .collect();
    ready.sort();
    ready.into_iter().map(|(_, n)| n).collect()
}

/// Whether a watcher event may announce a new `.ready` file (pure): one created, or renamed
/// into the directory. Opens, reads and closes (the daemon's own listing, PostgreSQL's) do
/// not, nor does PostgreSQL's rename of a `.ready` file to `.done`. Lost events do: rescan.
pub fn announces_ready(event: &notify::Result<notify::Event>) -> bool {
    let ready = |p: &PathBuf| p.extension().is_some_and(|x| x == "ready");
    match event {
        Err(_) => true,
        Ok(e) if e.need_rescan() => true,
        Ok(e) => match e.kind {
            EventKind::Create(_) | EventKind::Modify(ModifyKind::Name(RenameMode::To | RenameMode::Any)) => {
                e.paths.iter().any(ready)
            }
            // From and to: only where it went matters.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => e.paths.last().is_some_and(ready),
            _ => false,
        },
    }
}

pub async fn run(shared: Arc<Shared>, pg_wal: PathBuf, cancel: CancellationToken) -> Result<()> {
    let status = pg_wal.join("archive_status");
    let (_watcher, mut wake) = watch(&status)?;
    let seg = shared.repo.identity.wal_segment_size;
    let parallel = shared.settings.daemon.archive_parallel;
    tracing::info!("archiving ahead of PostgreSQL from {} ({parallel} at once)", pg_wal.display());
    // Stored in this run; PostgreSQL renames them .done soon after.
    let mut stored: HashSet<String> = HashSet::new();
    loop {
        let names = std::fs::read_dir(&status)
            .map_err(|e| Fail::new(Code::Storage, format!("cannot read {}: {e}", status.display())))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()));
        let ready = ready_in_order(names, seg);
        stored.retain(|n| ready.contains(n));
        let todo: Vec<String> = ready.into_iter().filter(|n| !stored.contains(n)).collect();
        metrics::gauge!("tidewal_wal_ready_files").set(todo.len() as f64);
        // In-flight uploads finish even when a stop is asked for: they are short, and a
        // half-done upload is never visible anyway.
        let results: Vec<(String, Result<()>)> = futures::stream::iter(todo.into_iter().map(|name| {
            let shared = shared.clone();
            let path = pg_wal.join(&name);
            async move {
                let r = push_once(&shared, &path).await.map(|_| ());
                (name, r)
            }
        }))
        // Unordered: a slow upload must not hold the slots of those that finished after it.
        .buffer_unordered(parallel)
        .collect()
        .await;
        for (name, r) in results {
            match r {
                Ok(()) => {
                    stored.insert(name);
                }
                Err(e) if e.code == Code::BadInput && !pg_wal.join(&name).exists() => {
                    // Archived and recycled by PostgreSQL meanwhile.
                }
                Err(e) => tracing::warn!("uploading {name} ahead of the archiver failed: {e}"),
            }
        }
        // The rescan is the safety net for what inotify cannot see (a queue overflow, a
        // directory replaced under its watch); listing a directory of a few names once a
        // second costs microseconds, and it bounds a missed file's delay to a second.
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = wake.recv() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Watch `status`; the receiver gets a message when a `.ready` file may have appeared (the
/// watch lasts as long as the watcher).
fn watch(status: &Path) -> Result<(notify::RecommendedWatcher, tokio::sync::mpsc::Receiver<()>)> {
    let (wake_tx, wake) = tokio::sync::mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
        if announces_ready(&e) {
            let _ = wake_tx.try_send(());
        }
    })
    .map_err(|e| Fail::new(Code::Internal, format!("cannot watch {}: {e}", status.display())))?;
    watcher
        .watch(status, notify::RecursiveMode::NonRecursive)
        .map_err(|e| Fail::new(Code::Storage, format!("cannot watch {}: {e}", status.display())))?;
    Ok((watcher, wake))
}

/// What tells a file's content without reading it: PostgreSQL never rewrites a segment it
/// has marked `.ready` (a recycled one gets another name), so a file with the same device,
/// inode, size and change times as when the archiver stored it holds the bytes it stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

pub fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(path).ok()?;
    m.is_file().then(|| Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Files the archiver stored, by path, kept for `wal-push`'s question (answered from here
/// without reading 16 MiB again); bounded, a miss only means the full check.
const STORED_FILES_KEPT: usize = 4096;

/// What the daemon stored, and what it is storing now.
#[derive(Default)]
pub struct StoredFiles {
    done: HashMap<PathBuf, Stamp>,
    /// Uploads under way; the sender is dropped when one ends (either way).
    in_flight: HashMap<PathBuf, tokio::sync::watch::Receiver<()>>,
}

/// Store `path` once, for the archiver and for `wal-push` alike: a file stored already and
/// unchanged since is not read again, and an upload of it under way is waited for, not
/// repeated. PostgreSQL asks for the oldest segment, which is usually the one the archiver
/// is uploading; a second upload beside it would cost a whole upload plus the look that
/// finds the first one's copy.
pub async fn push_once(shared: &Shared, path: &Path) -> Result<Pushed> {
    loop {
        let now = stamp(path);
        let claim = {
            let mut s = super::lock(&shared.stored_files);
            if now.is_some() && s.done.get(path) == now.as_ref() {
                return Ok(Pushed::AlreadyPresent);
            }
            match s.in_flight.get(path) {
                Some(under_way) => Err(under_way.clone()),
                None => {
                    let (ended, watch) = tokio::sync::watch::channel(());
                    s.in_flight.insert(path.to_path_buf(), watch);
                    Ok(ended)
                }
            }
        };
        match claim {
            Ok(ended) => return upload(shared, path, now, ended).await,
            // It ended: stored (seen above next time round), or failed, and then we try.
            Err(mut under_way) => {
                let _ = under_way.changed().await;
            }
        }
    }
}

async fn upload(
    shared: &Shared,
    path: &Path,
    before: Option<Stamp>,
    ended: tokio::sync::watch::Sender<()>,
) -> Result<Pushed> {
    let began = Instant::now();
    let pushed = crate::ops::push::push_file(&shared.repo, path).await;
    let mut stored = super::lock(&shared.stored_files);
    stored.in_flight.remove(path);
    // Unchanged while it was read: what is stored is that file.
    if let (Ok(_), Some(s)) = (&pushed, before.filter(|s| Some(*s) == stamp(path))) {
        if stored.done.len() >= STORED_FILES_KEPT {
            stored.done.clear();
        }
        stored.done.insert(path.to_path_buf(), s);
    }
    drop(stored);
    drop(ended);
    match pushed {
        Ok(r) => {
            metrics::histogram!("tidewal_wal_upload_seconds").record(began.elapsed().as_secs_f64());
            if r.outcome == Pushed::Stored {
                metrics::counter!("tidewal_wal_segments_archived_total").increment(1);
                metrics::counter!("tidewal_uploaded_bytes_total").increment(r.stored_bytes);
            }
            if let Some(WalFile::Segment(s)) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| WalFile::parse(n, shared.repo.identity.wal_segment_size).ok())
            {
                let mut ahead = super::lock(&shared.pushed_ahead);
                ahead.insert(s);
                // Only recent segments matter for the lag; keep the set small.
                let keep_from = s.segno.saturating_sub(1024);
                ahead.retain(|x| x.segno >= keep_from);
            }
            let mut st = super::lock(&shared.state);
            st.upload_failures_in_a_row = 0;
            st.last_upload_error = None;
            Ok(r.outcome)
        }
        Err(e) => {
            if e.code != Code::BadInput || path.exists() {
                metrics::counter!("tidewal_upload_failures_total").increment(1);
                let mut st = super::lock(&shared.state);
                st.upload_failures_in_a_row += 1;
                st.last_upload_error = Some(e.to_string());
            }
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_changes_with_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("000000010000000000000001");
        std::fs::write(&p, b"one").unwrap();
        let first = stamp(&p).unwrap();
        assert_eq!(stamp(&p), Some(first));
        // Rewritten in place (same size): the change times move.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&p, b"two").unwrap();
        assert_ne!(stamp(&p), Some(first));
        // Replaced by another file under the name: another inode.
        let second = stamp(&p).unwrap();
        let other = dir.path().join("x");
        std::fs::write(&other, b"two").unwrap();
        std::fs::rename(&other, &p).unwrap();
        assert_ne!(stamp(&p), Some(second));
        std::fs::remove_file(&p).unwrap();
        assert_eq!(stamp(&p), None);
        assert_eq!(stamp(dir.path()), None, "a directory has no stamp");
    }
    use notify::event::{AccessKind, AccessMode, CreateKind, DataChange, Flag};

    fn event(kind: EventKind, paths: &[&str]) -> notify::Result<notify::Event> {
        let mut e = notify::Event::new(kind);
        for p in paths {
            e = e.add_path(PathBuf::from(p));
        }
        Ok(e)
    }

    /// A real watch: the archiver's own listing and PostgreSQL marking a file done do not
    /// wake it (they did, which kept a core busy); a new `.ready` file does.
    #[tokio::test]
    async fn the_watch_ignores_listings_and_wakes_for_a_new_ready_file() {
        let dir = tempfile::tempdir().unwrap();
        let name = |n: &str| dir.path().join(format!("00000001000000000000000{n}"));
        std::fs::write(name("1.ready"), b"").unwrap();
        std::fs::write(name("2.done"), b"").unwrap();
        let (_watcher, mut wake) = watch(dir.path()).unwrap();
        for _ in 0..20 {
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        }
        std::fs::rename(name("1.ready"), name("1.done")).unwrap();
        std::fs::remove_file(name("2.done")).unwrap();
        let woke = tokio::time::timeout(Duration::from_millis(500), wake.recv()).await;
        assert!(woke.is_err(), "woke without a new .ready file");
        std::fs::write(name("3.ready"), b"").unwrap();
        let woke = tokio::time::timeout(Duration::from_secs(30), wake.recv()).await;
        assert!(woke.is_ok_and(|m| m.is_some()), "a new .ready file did not wake it");
    }

    #[test]
    fn only_a_new_ready_file_wakes_the_archiver() {
        let dir = "/d/pg_wal/archive_status";
        let ready = "/d/pg_wal/archive_status/000000010000000000000002.ready";
        let done = "/d/pg_wal/archive_status/000000010000000000000002.done";
        let wakes = [
            event(EventKind::Create(CreateKind::File), &[ready]),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &[ready]),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &[done, ready]),
            Ok(notify::Event::new(EventKind::Other).set_flag(Flag::Rescan)),
            Err(notify::Error::generic("queue overflow")),
        ];
        for e in &wakes {
            assert!(announces_ready(e), "{e:?}");
        }
        let quiet = [
            // Listing the directory: what made the loop wake itself.
            event(EventKind::Access(AccessKind::Open(AccessMode::Any)), &[dir]),
            event(EventKind::Access(AccessKind::Close(AccessMode::Read)), &[dir]),
            event(EventKind::Access(AccessKind::Read), &[dir]),
            // PostgreSQL marks a file done.
            event(EventKind::Modify(ModifyKind::Name(RenameMode::From)), &[ready]),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::To)), &[done]),
            event(EventKind::Modify(ModifyKind::Name(RenameMode::Both)), &[ready, done]),
            event(EventKind::Remove(notify::event::RemoveKind::File), &[done]),
            event(EventKind::Access(AccessKind::Close(AccessMode::Write)), &[ready]),
            event(EventKind::Modify(ModifyKind::Data(DataChange::Any)), &[ready]),
            event(EventKind::Create(CreateKind::File), &[done]),
        ];
        for e in &quiet {
            assert!(!announces_ready(e), "{e:?}");
        }
    }

    #[test]
    fn history_first_then_by_name() {
        let names = [
            "000000010000000000000003.ready",
            "000000010000000000000002.ready",
            "00000002.history.ready",
            "000000010000000000000001.done",
            "garbage.ready",
        ]
        .map(String::from);
        assert_eq!(
            ready_in_order(names, 16 << 20),
            vec!["00000002.history", "000000010000000000000002", "000000010000000000000003"]
        );
    }
}
