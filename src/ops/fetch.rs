//! Serving PostgreSQL's restore_command (`tidewal wal-fetch %f %p`).
//!
//! Recovery asks for one segment at a time and waits for each. So after serving a segment,
//! wal-fetch leaves a detached worker downloading the next few into a spool next to `%p`
//! (`pg_wal/.tidewal-prefetch`); the next call then only renames a file that was already
//! authenticated and written in full. The spool is bound to one repository: a marker
//! (`.identity`) names it, and a spool filled from anywhere else is emptied, not served.

use std::os::unix::process::CommandExt;
use std::path::Path;

use futures::StreamExt;

use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::walfile::WalFile;
use crate::repo::catalog::load_history;
use crate::repo::{layout, Repo};

const SPOOL: &str = ".tidewal-prefetch";
/// The spool's marker: which repository (and cluster) filled it.
const SPOOL_IDENTITY: &str = ".identity";

/// What PostgreSQL asked for, and how far ahead to prefetch.
pub struct FetchRequest<'a> {
    /// The file PostgreSQL asks for (%f)
    pub name: &'a str,
    /// Where to put it (%p)
    pub path: &'a Path,
    /// Segments to download ahead (0: none)
    pub prefetch: usize,
    /// Run as the detached prefetch worker instead of serving `name`
    pub prefetch_worker: bool,
}

/// Serve one `restore_command` call: from the spool when a worker prefetched it, otherwise
/// from the repository (falling back to a streamed copy where that is safe).
pub async fn fetch(repo: &Repo, args: &FetchRequest<'_>) -> Result<()> {
    let seg_size = repo.identity.wal_segment_size;
    let kind = WalFile::parse(args.name, seg_size).map_err(|e| {
        Fail::new(Code::BadInput, format!("{e}: wal-fetch takes the file name PostgreSQL asks for (%f)"))
    })?;
    let spool = args.path.parent().unwrap_or(Path::new(".")).join(SPOOL);
    if args.prefetch_worker {
        if let WalFile::Segment(seg) = kind {
            prefetch(repo, seg, &spool, args.prefetch).await;
        }
        return Ok(());
    }
    let spooled = spool.join(args.name);
    if matches!(kind, WalFile::Segment(_))
        && spool_is_ours(&spool, &spool_identity(repo))
        && std::fs::rename(&spooled, args.path).is_ok()
    {
        sync_dir(args.path);
        tracing::info!("restored {} (prefetched)", args.name);
    } else {
        let obj = layout::wal_object(&kind, seg_size);
        let fetched = match (repo.fetch_to_path(&obj, args.path).await, &kind) {
            // The newest segment of a streamed timeline may only exist as the receiver's
            // .stream copy: its WAL is valid up to where streaming got, zeros after, as
            // pg_receivewal leaves it. Recovery replays it and ends there. Only absence
            // falls back: a damaged copy must stop recovery like any damaged object.
            // Not the segment in which its timeline was left, though: there the copy may hold
            // the old primary's WAL beyond the switch (PostgreSQL renames its own copy of
            // that segment to .partial so that recovery never takes it).
            (Err(f), WalFile::Segment(seg)) if f.code == Code::NotFound && !left_by_then(repo, *seg).await? => {
                let streamed = layout::wal_object(&WalFile::Streamed(*seg), seg_size);
                match repo.fetch_to_path(&streamed, args.path).await {
                    Ok(bytes) => {
                        tracing::info!("{} comes from its streamed copy, {streamed}", args.name);
                        Ok(bytes)
                    }
                    Err(p) if p.code == Code::NotFound => Err(f),
                    Err(p) => Err(p),
                }
            }
            (r, _) => r,
        };
        match fetched {
            Ok(bytes) => tracing::info!("restored {} ({bytes} bytes)", args.name),
            // PostgreSQL probes for files that do not exist as part of normal recovery.
            Err(f) if f.code == Code::NotFound => {
                return Err(Fail::new(Code::NotFound, format!("{} is not in the repository", args.name)))
            }
            Err(f) => return Err(f),
        }
    }
    if let (WalFile::Segment(seg), true) = (&kind, args.prefetch > 0) {
        // While the spool still reaches halfway ahead, a worker would find nothing to do.
        let ahead = SegmentId { tli: seg.tli, segno: seg.segno + (args.prefetch as u64).div_ceil(2) };
        if !spool.join(ahead.file_name(seg_size)).exists() {
            start_worker();
        }
    }
    Ok(())
}

/// Whether a later timeline's history (consecutive numbers, as PostgreSQL probes them)
/// shows `seg`'s timeline ending before the end of `seg`.
async fn left_by_then(repo: &Repo, seg: SegmentId) -> Result<bool> {
    let end = Lsn((seg.segno + 1) * repo.identity.wal_segment_size);
    let mut tli = seg.tli + 1;
    loop {
        let history = match load_history(repo, tli).await {
            Ok(h) => h,
            Err(f) if f.code == Code::NotFound => return Ok(false),
            Err(f) => return Err(f),
        };
        if history.iter().any(|e| e.parent_tli == seg.tli && e.switchpoint < end) {
            return Ok(true);
        }
        tli += 1;
    }
}

/// Re-run this command line as a detached worker. Best effort: recovery works without it.
fn start_worker() {
    let Ok(exe) = std::env::current_exe() else { return };
    let spawned = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .arg("--prefetch-worker")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        // Its own process group, so it neither holds up nor gets the signals meant for the caller.
        .process_group(0)
        .spawn();
    if let Err(e) = spawned {
        tracing::debug!("no prefetch worker: {e}");
    }
}

/// Download the `depth` segments after `current` into the spool, several at once, and drop
/// spooled segments recovery has passed. One worker at a time (an flock on the spool).
async fn prefetch(repo: &Repo, current: SegmentId, spool: &Path, depth: usize) {
    if std::fs::create_dir_all(spool).is_err() {
        return;
    }
    let Ok(lock) = std::fs::File::create(spool.join(".lock")) else { return };
    // SAFETY: flock on a file descriptor this function owns.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return;
    }
    let identity = spool_identity(repo);
    if !spool_is_ours(spool, &identity) {
        // Emptied; mark it ours (atomically: a reader never sees half a marker).
        let tmp = spool.join(".identity.tmp");
        if std::fs::write(&tmp, &identity).and_then(|()| std::fs::rename(&tmp, spool.join(SPOOL_IDENTITY))).is_err() {
            return;
        }
    }
    let seg_size = repo.identity.wal_segment_size;
    if let Ok(entries) = std::fs::read_dir(spool) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let stale = match SegmentId::parse(&name, seg_size) {
                Ok(s) => s.tli != current.tli || s.segno <= current.segno,
                Err(_) => name != ".lock" && name != SPOOL_IDENTITY,
            };
            if stale {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let wanted: Vec<SegmentId> = (1..=depth as u64)
        .map(|i| SegmentId { tli: current.tli, segno: current.segno + i })
        .filter(|s| !spool.join(s.file_name(seg_size)).exists())
        .collect();
    let fetches = wanted.into_iter().map(|s| async move {
        let obj = layout::wal_object(&WalFile::Segment(s), seg_size);
        if let Err(f) = repo.fetch_to_path(&obj, &spool.join(s.file_name(seg_size))).await {
            tracing::debug!("prefetch of {} stopped: {f}", s.file_name(seg_size));
        }
    });
    futures::stream::iter(fetches).buffer_unordered(4).collect::<Vec<()>>().await;
}

/// What binds a spool to one repository: its URL, the cluster and the repository's creation
/// (a repository made anew at the same URL is another one), and the key it was made with.
fn spool_identity(repo: &Repo) -> String {
    let id = &repo.identity;
    format!(
        "repository {}\nsystem_identifier {}\ncreated_at {}\nkey_id {}\n",
        repo.store.url(),
        id.system_identifier,
        id.created_at,
        id.key_id.as_deref().unwrap_or("none")
    )
}

/// Whether the spool was filled from this repository. A spool without the same marker (left
/// by another repository, another cluster or an older tidewal) is emptied.
fn spool_is_ours(spool: &Path, identity: &str) -> bool {
    match std::fs::read_to_string(spool.join(SPOOL_IDENTITY)) {
        Ok(t) if t == identity => return true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !spool.exists() => return false,
        _ => {}
    }
    if let Ok(entries) = std::fs::read_dir(spool) {
        for e in entries.flatten() {
            if e.file_name() != ".lock" {
                tracing::info!("dropping {} from a prefetch spool of another repository", e.path().display());
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    false
}

fn sync_dir(file: &Path) {
    if let Some(dir) = file.parent() {
        if let Ok(d) = std::fs::File::open(if dir.as_os_str().is_empty() { Path::new(".") } else { dir }) {
            let _ = d.sync_all();
        }
    }
}
