//! Restore: a base backup from the repository, unpacked and checked
//! against its manifest, with recovery configured to replay WAL from the repository.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::error::{Code, Fail, Result};
use crate::ops::timelines;
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::walfile::WalFile;
use crate::progress::Progress;
use crate::repo::catalog::{backup_wal_complete, choose, follow, list_backups, wal_coverage, BackupInfo, Target};
use crate::repo::{layout, Repo};
use crate::store::ObjectInfo;

#[path = "restore_archives.rs"]
mod archives;
use archives::{archives, unpack};
#[path = "restore_chain.rs"]
mod chain;
#[path = "restore_dirs.rs"]
mod dirs;
#[path = "restore_recovery.rs"]
mod recovery;
use dirs::{
    check_space, check_target_dir, clear_data_dir, clear_tablespace_dir, refuse_other_cluster, tablespace_links,
};
use recovery::write_recovery_config;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    Pause,
    Promote,
    Shutdown,
}

/// A restore, as plain values (the verbs `restore` and `fork` fill it in).
#[derive(Clone, Debug)]
pub struct RestoreRequest {
    /// The new data directory (must be empty unless `force`)
    pub to: PathBuf,
    /// Backup id, or "latest" (the newest one before the target)
    pub backup: String,
    pub target_time: Option<SystemTime>,
    pub target_lsn: Option<Lsn>,
    pub target_xid: Option<String>,
    pub target_name: Option<String>,
    pub immediate: bool,
    pub target_action: Option<Action>,
    /// "latest", "current" or a number
    pub target_timeline: Option<String>,
    /// OID=DIR
    pub tablespace_map: Vec<String>,
    pub force: bool,
    /// Keep archiving on: the restored cluster becomes the repository's live line (disaster
    /// recovery). Otherwise it is a copy with `archive_mode = off`.
    pub as_primary: bool,
    /// A port for the restored cluster (a fork's)
    pub port: Option<u16>,
    /// This program, which recovery runs as restore_command
    pub exe: PathBuf,
    /// The configuration `wal-fetch` reads during recovery (written as [`FETCH_CONFIG`]):
    /// the repository this restore checked, whatever PostgreSQL's environment holds.
    pub fetch_config: String,
    /// The server, asked for its timeline when two lines of history share the repository
    pub conninfo: Option<String>,
    /// Put every tablespace that `tablespace_map` does not name under this directory, as
    /// `<dir>/<oid>`, never at its original location (a restore test's scratch copy).
    pub tablespace_root: Option<PathBuf>,
    /// Refuse a backup whose stored size exceeds the free space where it goes.
    pub check_space: bool,
}

/// What a restore did, for the caller to report.
#[derive(Clone, Debug)]
pub struct Restored {
    pub backup: BackupInfo,
    /// The data directory (absolute)
    pub to: PathBuf,
    /// Files checked against the backup manifest
    pub files_checked: usize,
    /// Settings that came with the backup and were commented out ("name (file)")
    pub removed_settings: Vec<String>,
    /// The backup brought a `postgresql.conf` (a Debian-layout cluster keeps it in /etc).
    pub has_config: bool,
}

/// The file in the data directory that recovery's restore_command reads.
pub const FETCH_CONFIG: &str = "tidewal-restore.toml";

/// How far past the newest archived segment's upload a time target may lie: the server's
/// and the store's clocks need not agree to the second.
const CLOCK_GRACE: Duration = Duration::from_secs(60);

/// Restore a backup and configure recovery (as a copy unless `as_primary`).
pub async fn restore(repo: &Repo, args: &RestoreRequest) -> Result<Restored> {
    // restore_command runs in the data directory: every path in it must be absolute.
    let to = std::path::absolute(&args.to).map_err(|e| local(&args.to, e))?;
    let args = &RestoreRequest { to, ..args.clone() };
    check_target_dir(&args.to, args.force, "")?;
    let target_time = args.target_time;
    // Which line of history: on a split, the server's (or refuse to guess); recovery is told
    // the same timeline, so it cannot wander onto the other line.
    // Each costs round trips on a remote store: together, not one after the other.
    let (survey, backups) = tokio::join!(timelines::survey(repo), list_backups(repo));
    let (survey, mut backups) = (survey?, backups?);
    // An incremental backup's chain may reach back before a timeline switch.
    let all_backups = backups.clone();
    let mut args = args.clone();
    args.target_timeline =
        timelines::resolve(repo, &survey, args.target_timeline.as_deref(), args.conninfo.as_deref()).await?;
    let args = &args;
    if let Some(tli) = args.target_timeline.as_deref().and_then(|t| t.parse::<u32>().ok()) {
        backups.retain(|b| timelines::on_line(b, tli, &survey, repo.identity.wal_segment_size));
    }
    let target = match (target_time, args.target_lsn) {
        (Some(t), _) => Target::Time(t),
        (_, Some(l)) => Target::Lsn(l),
        _ => Target::Latest,
    };
    let info = if args.backup == "latest" {
        choose(&backups, &target).ok_or_else(|| {
            let window = match (backups.first(), backups.last()) {
                (Some(f), Some(l)) => {
                    format!("backups in the repository finished between {} and {}", f.finished_at, l.finished_at)
                }
                _ => "the repository has no complete backup yet (run tidewal backup)".into(),
            };
            Fail::new(Code::NotFound, format!("no backup finished before the target: {window}"))
        })?
    } else {
        backups
            .iter()
            .find(|b| b.id == args.backup)
            .ok_or_else(|| Fail::new(Code::NotFound, format!("no complete backup with id {}", args.backup)))?
    };
    // The backups it restores with: itself alone, or from the full backup it builds on.
    let chain = chain::chain_of(&all_backups, info)?;
    // A chain unpacks newest first, so every block is written once (`repo/unpack_chain.rs`).
    let first = info;
    let state = Arc::new(crate::repo::unpack::ChainState::default());
    let layer = match chain.len() {
        1 => archives::Layer::Alone,
        _ => archives::Layer::Newest(state.clone()),
    };
    let spaces = tablespace_destinations(info, &args.tablespace_map, args.tablespace_root.as_deref())?;
    for (oid, dir) in &spaces {
        check_target_dir(dir, args.force, &format!("tablespace {oid}: "))?;
    }
    if args.check_space {
        check_space(info, &args.to)?;
    }
    let archives = archives(first, &args.to, &spaces)?;
    // At once, but the first check's complaint wins, as when they ran in turn. The manifest
    // is read meanwhile, and the archives' downloads start (on a remote store each is a
    // round trip); nothing is written before the checks pass. Not with --force: removing
    // the old data directory first may take long, and a download left waiting that long
    // may be cut by the store.
    let manifest_obj = layout::backup_object(&first.id, "backup_manifest");
    let early = !args.force;
    let open_all = || futures::future::try_join_all(archives.iter().map(|a| repo.reader(&a.obj, Some(a.stored_bytes))));
    let (reachable, objects, wal, manifest, readers) = tokio::join!(
        check_reachable(repo, info, args, target_time, &survey.listing),
        futures::future::try_join_all(chain.iter().map(|b| crate::repo::catalog::check_objects(repo, b))),
        check_backup_wal(repo, info),
        repo.open_bytes(&manifest_obj),
        async {
            if early {
                open_all().await.map(Some)
            } else {
                Ok(None)
            }
        },
    );
    reachable.and(objects.map(|_| ())).and(wal)?;
    let manifest = manifest?;
    if args.force {
        refuse_other_cluster(&args.to, repo.identity.system_id())?;
        // A tablespace directory is only emptied when it was mapped on purpose or belonged
        // to the data directory being replaced: its original location may be a running
        // production cluster's tablespace (restoring a copy on the same host).
        let mapped: Vec<&str> =
            args.tablespace_map.iter().filter_map(|m| m.split_once('=').map(|(o, _)| o.trim())).collect();
        let replaced = tablespace_links(&args.to);
        for (oid, dir) in &spaces {
            let non_empty = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
            if non_empty && !mapped.contains(&oid.to_string().as_str()) && !replaced.contains(dir) {
                return Err(Fail::new(
                    Code::Conflict,
                    format!(
                        "tablespace {oid}: {} is not empty and is not a tablespace of {} (it may be a running cluster's): restore it elsewhere with --tablespace-map {oid}=DIR",
                        dir.display(),
                        args.to.display()
                    ),
                ));
            }
        }
        // Nothing of an earlier attempt may be served to recovery: stale WAL, history files,
        // a prefetch spool.
        clear_data_dir(&args.to)?;
        for (_, dir) in &spaces {
            clear_tablespace_dir(dir)?;
        }
    }
    tracing::info!("restoring backup {} (finished {}, ends at {})", info.id, info.finished_at, info.end_lsn);
    for dir in std::iter::once(&args.to).chain(spaces.iter().map(|(_, d)| d)) {
        std::fs::create_dir_all(dir).map_err(|e| local(dir, e))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| local(dir, e))?;
    }
    // The manifest comes first, so every file is checked as it is written.
    let manifest_path = args.to.join("backup_manifest");
    std::fs::write(&manifest_path, &manifest).map_err(|e| local(&manifest_path, e))?;
    let checker = chain::checker(repo, &first.id, &manifest)?;
    // Every archive downloads and unpacks at the same time.
    let total = chain.iter().flat_map(|b| &b.objects).filter(|o| o.name.ends_with(".tar")).map(|o| o.bytes).sum();
    let progress = Progress::start(&format!("restore {}", info.id), total);
    let readers = match readers? {
        Some(r) => r,
        None => open_all().await?,
    };
    let jobs = archives
        .into_iter()
        .zip(readers)
        .map(|(a, reader)| unpack(repo.keys.clone(), a, reader, checker.clone(), layer.clone(), progress.clone()));
    let unpacked = futures::future::try_join_all(jobs).await;
    // What was written so far must not pass for a restore.
    let incomplete = |e: Fail| {
        let to = args.to.display();
        Fail::new(
            e.code,
            format!("{}; {to} holds an incomplete restore: do not start it (restore again with --force)", e.message),
        )
    };
    let checked = unpacked.map_err(incomplete).and_then(|_| {
        checker.complete().map_err(|e| {
            incomplete(Fail::new(Code::Integrity, format!("restored files do not match the backup manifest: {e}")))
        })
    })?;
    let checked = match chain.len() {
        1 => checked,
        _ => {
            let older = &chain[..chain.len() - 1];
            let more = chain::apply_older(repo, &checker, older, &args.to, &spaces, &state, &progress)
                .await
                .map_err(incomplete)?;
            chain::finish(&args.to, &state).map_err(incomplete)?;
            chain::check_rebuilt(&checker, &args.to, &spaces).await.map_err(incomplete)?;
            checked + more
        }
    };
    progress.finish();
    link_tablespaces(&args.to, &spaces)?;
    // Durable before it is declared restored (one syncfs per file system).
    for dir in std::iter::once(&args.to).chain(spaces.iter().map(|(_, d)| d)) {
        sync_filesystem(dir)?;
    }
    let removed_settings = write_recovery_config(args, target_time)?;
    let has_config = args.to.join("postgresql.conf").exists();
    Ok(Restored { backup: info.clone(), to: args.to.clone(), files_checked: checked, removed_settings, has_config })
}

/// Where each of the backup's tablespaces goes: its original location unless mapped.
fn tablespace_destinations(info: &BackupInfo, map: &[String], root: Option<&Path>) -> Result<Vec<(u32, PathBuf)>> {
    let known = || info.tablespaces.iter().map(|(o, l)| format!("{o} ({l})")).collect::<Vec<_>>().join(", ");
    let mut mapped = Vec::new();
    for m in map {
        let usage = |why: String| Fail::new(Code::Usage, format!("--tablespace-map {m:?}: {why}"));
        let (oid, dir) = m.split_once('=').ok_or_else(|| usage("give OID=DIR".into()))?;
        let oid: u32 = oid.trim().parse().map_err(|_| usage(format!("{oid:?} is not a tablespace OID")))?;
        if !info.tablespaces.iter().any(|(o, _)| *o == oid) {
            let have = if info.tablespaces.is_empty() { "none".into() } else { known() };
            return Err(usage(format!("backup {} has no tablespace {oid}; its tablespaces: {have}", info.id)));
        }
        let dir = PathBuf::from(dir);
        if !dir.is_absolute() {
            return Err(usage("the directory must be an absolute path".into()));
        }
        mapped.push((oid, dir));
    }
    Ok(info
        .tablespaces
        .iter()
        .map(|(oid, loc)| {
            let dir = mapped.iter().find(|(o, _)| o == oid).map(|(_, d)| d.clone());
            let moved = root.map(|r| r.join(oid.to_string()));
            (*oid, dir.or(moved).unwrap_or_else(|| PathBuf::from(loc)))
        })
        .collect())
}

/// `pg_tblspc/<oid>` must point where the tablespace was unpacked (the tar holds the old target).
fn link_tablespaces(data: &Path, spaces: &[(u32, PathBuf)]) -> Result<()> {
    let tblspc = data.join("pg_tblspc");
    std::fs::create_dir_all(&tblspc).map_err(|e| local(&tblspc, e))?;
    for (oid, dir) in spaces {
        let link = tblspc.join(oid.to_string());
        if std::fs::read_link(&link).ok().as_deref() == Some(dir.as_path()) {
            continue;
        }
        match std::fs::remove_file(&link) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(local(&link, e)),
        }
        std::os::unix::fs::symlink(dir, &link).map_err(|e| local(&link, e))?;
    }
    Ok(())
}

/// Refuse what cannot work before writing anything: the backup's own WAL must be complete,
/// and the target must lie within the WAL that follows it on the timeline recovery takes.
async fn check_reachable(
    repo: &Repo,
    info: &BackupInfo,
    args: &RestoreRequest,
    time: Option<SystemTime>,
    listing: &[ObjectInfo],
) -> Result<()> {
    let seg = repo.identity.wal_segment_size;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let cov = wal_coverage(&names, seg);
    let bad = |m: String| Fail::new(Code::NotFound, m);
    if !backup_wal_complete(info, &cov, seg) {
        return Err(bad(format!(
            "backup {} cannot be restored: WAL between {} and {} is missing from the repository (see tidewal list)",
            info.id, info.start_wal, info.end_wal
        )));
    }
    let f = follow(repo, info, listing, args.target_timeline.as_deref()).await?;
    let window = if f.streamed {
        format!(
            "the WAL from backup {} reaches into {}, as far as it was streamed (stored {}) (see tidewal list)",
            info.id,
            f.missing.file_name(seg),
            humantime::format_rfc3339_seconds(f.last_written)
        )
    } else {
        format!(
            "WAL segment {} is missing; the WAL from backup {} reaches {} (archived {}) (see tidewal list)",
            f.missing.file_name(seg),
            info.id,
            f.last.file_name(seg),
            humantime::format_rfc3339_seconds(f.last_written)
        )
    };
    // A gap with WAL after it: recovery to the end would stop at the gap and leave out all
    // that was archived after it, without a word. Only a target before the gap may use it.
    let runs_past = |tli: u32, segno: u64| cov.get(&tli).and_then(|r| r.last()).is_some_and(|&(_, z)| z > segno);
    let past_gap = runs_past(f.missing.tli, f.missing.segno) || (f.missing.tli != f.tli && cov.contains_key(&f.tli));
    let targeted = args.target_lsn.is_some()
        || time.is_some()
        || args.target_xid.is_some()
        || args.target_name.is_some()
        || args.immediate;
    if past_gap && !targeted && !f.streamed {
        return Err(bad(format!(
            "backup {} cannot be restored to the end of the archive: WAL segment {} is missing but WAL after it is archived, so recovery would stop at the gap and leave that out; give a target before {} to restore up to the gap (see tidewal verify)",
            info.id,
            f.missing.file_name(seg),
            f.missing.start_lsn(seg)
        )));
    }
    // A streamed copy holds part of its segment: how much, only recovery finds out.
    let reachable_segno = if f.streamed { f.missing.segno } else { f.last.segno };
    if let Some(lsn) = args.target_lsn {
        if lsn.0 / seg > reachable_segno {
            return Err(bad(format!("target {lsn} cannot be reached: {window}")));
        }
    }
    if let Some(t) = time {
        if t > f.last_written + CLOCK_GRACE {
            return Err(bad(format!(
                "target time {} cannot be reached: {window}; omit the target to restore everything archived",
                humantime::format_rfc3339_seconds(t)
            )));
        }
        if t > f.last_written {
            // Within the clocks' grace: reachable only if a commit after it is archived.
            tracing::warn!(
                "target time {} is after the newest archived WAL (stored {}): unless WAL with a commit after the target is archived before recovery gets there, PostgreSQL stops with \"recovery ended before configured recovery target was reached\"; then start it again once more WAL is archived (tidewal list shows how far the archive reaches)",
                humantime::format_rfc3339_seconds(t),
                humantime::format_rfc3339_seconds(f.last_written)
            );
        }
    }
    Ok(())
}

/// The backup's own WAL (its start to its end), opened in full before anything is written:
/// without it the restored cluster can never become consistent.
async fn check_backup_wal(repo: &Repo, info: &BackupInfo) -> Result<()> {
    let seg = repo.identity.wal_segment_size;
    let ends = [&info.start_wal, &info.end_wal].map(|w| SegmentId::parse(w, seg));
    let [Ok(start), Ok(end)] = ends else {
        return Err(Fail::new(
            Code::Integrity,
            format!("backup {}: its start or end segment is not a WAL name", info.id),
        ));
    };
    let segs: Vec<SegmentId> = if start.tli == end.tli {
        (start.segno..=end.segno).map(|segno| SegmentId { tli: start.tli, segno }).collect()
    } else {
        vec![start, end]
    };
    let objs = segs.iter().map(|s| layout::wal_object(&WalFile::Segment(*s), seg)).collect();
    if let Some(p) = super::verify::check_wal_objects(repo, objs).await?.first() {
        return Err(Fail::new(
            Code::Integrity,
            format!(
                "backup {} cannot be used: its WAL object {} {}; choose another backup with --backup (see tidewal verify)",
                info.id, p.object, p.problem
            ),
        ));
    }
    Ok(())
}

fn local(p: &Path, e: std::io::Error) -> Fail {
    Fail::new(Code::Storage, format!("{}: {e}", p.display()))
}

/// A target time in UTC: RFC 3339 or PostgreSQL's form, fractions of a second kept.
pub fn parse_time(t: &str) -> Result<SystemTime> {
    let bare = ["Z", "z", "+00:00", "+00", " UTC"].iter().find_map(|z| t.strip_suffix(z)).unwrap_or(t);
    humantime::parse_rfc3339_weak(bare).map_err(|e| {
        Fail::new(
            Code::Usage,
            format!("--target-time {t:?}: {e}; give UTC in RFC 3339 form, e.g. 2026-11-24T13:05:00Z"),
        )
    })
}

fn sync_filesystem(dir: &Path) -> Result<()> {
    let f = std::fs::File::open(dir).map_err(|e| local(dir, e))?;
    // SAFETY: syncfs on a descriptor owned by `f`.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f)) } != 0 {
        return Err(local(dir, std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::StoredObject;

    fn info(stored: u64, tablespaces: Vec<(u32, String)>) -> BackupInfo {
        let obj = StoredObject {
            name: "backups/b/base.tar".into(),
            digest: String::new(),
            bytes: stored,
            stored_bytes: stored,
        };
        BackupInfo {
            id: "b".into(),
            label: String::new(),
            system_identifier: String::new(),
            pg_version: "15".into(),
            timescaledb_version: None,
            timeline: 1,
            start_lsn: "0/2000028".into(),
            end_lsn: "0/2000100".into(),
            start_wal: String::new(),
            end_wal: String::new(),
            started_at: String::new(),
            finished_at: String::new(),
            duration_seconds: 0.0,
            tablespaces,
            objects: vec![obj],
            parent: None,
            increment: None,
        }
    }

    #[test]
    fn space_check_refuses_only_what_cannot_fit() {
        let dir = tempfile::tempdir().unwrap();
        let to = dir.path().join("not/yet/made");
        check_space(&info(1, vec![]), &to).unwrap();
        let e = check_space(&info(u64::MAX / 4, vec![]), &to).unwrap_err();
        assert_eq!(e.code, Code::Storage);
        assert!(e.message.contains("free") && e.message.contains("backup b"), "{e}");
    }

    #[test]
    fn tablespaces_go_under_a_root_unless_mapped() {
        let i = info(1, vec![(16400, "/srv/ts1".into()), (16401, "/srv/ts2".into())]);
        let root = Path::new("/scratch/tablespaces");
        let d = tablespace_destinations(&i, &["16401=/elsewhere".into()], Some(root)).unwrap();
        assert_eq!(d, [(16400, root.join("16400")), (16401, PathBuf::from("/elsewhere"))]);
        let d = tablespace_destinations(&i, &[], None).unwrap();
        assert_eq!(d, [(16400, PathBuf::from("/srv/ts1")), (16401, PathBuf::from("/srv/ts2"))]);
    }
}
