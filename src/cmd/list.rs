//! `tidewal list` (alias `info`): the window the repository can restore and the current lag
//! first, then backups and WAL coverage per timeline with gaps.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::timelines;
use crate::pg::lsn::SegmentId;
use crate::progress::human_size;
use crate::repo::catalog::{
    backup_wal_complete, check_objects, follow, incomplete_backups, newest, read_backups, wal_coverage, BackupInfo,
    ABANDONED_AFTER,
};
use crate::repo::dumps::{check_dump, incomplete_dumps, read_dumps, DumpInfo};
use crate::store::ObjectInfo;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine-readable output (stable field names)
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct WalRun {
    timeline: u32,
    first: String,
    last: String,
    segments: u64,
}

/// A backup without `backup.json`: running now, or interrupted.
#[derive(Serialize)]
struct Incomplete {
    id: String,
    objects: usize,
    stored_bytes: u64,
    last_written: String,
    /// No object written for a day: interrupted; the next backup or prune removes it.
    interrupted: bool,
}

/// A complete backup, with whether its objects are there as `backup.json` recorded them.
#[derive(Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    info: &'a BackupInfo,
    /// Every listed object exists with the recorded size and digest.
    objects_ok: bool,
    /// Why not, naming the object.
    objects_problem: Option<String>,
}

/// A complete dump (`dump.json`), with whether its objects are there as recorded.
#[derive(Serialize)]
struct ListedDump {
    #[serde(flatten)]
    info: DumpInfo,
    objects_ok: bool,
    objects_problem: Option<String>,
}

#[derive(Serialize)]
struct Listing<'a> {
    backups: Vec<Listed<'a>>,
    incomplete_backups: Vec<Incomplete>,
    dumps: Vec<ListedDump>,
    /// Dumps without `dump.json`: running, or interrupted (prune removes them).
    incomplete_dumps: Vec<String>,
    wal: Vec<WalRun>,
    /// Oldest moment a restore can reach: the end of the oldest backup with complete WAL.
    restorable_from: Option<String>,
    /// Newest WAL segment reachable without a gap from the newest restorable backup, on the
    /// timeline recovery would follow.
    restorable_to_wal: Option<String>,
    /// That segment is there only as far as streaming got (the receiver's `.stream` copy).
    restorable_to_streamed: bool,
    /// When that segment was archived: no commit in it is newer.
    restorable_to: Option<String>,
    restorable_timeline: Option<u32>,
    /// Two clusters archive into the repository: each branch point where the old line went on.
    splits: Vec<SplitJson>,
    /// Why the window is not given: the repository has several live lines and the server
    /// could not say which one it is on (restore then needs --target-timeline).
    ambiguous: Option<String>,
    lag: Option<Lag>,
}

/// How far the repository is behind the server.
#[derive(Debug, PartialEq, Serialize)]
struct Lag {
    /// `daemon`: the running daemon's backup lag (the age of the oldest WAL byte the server
    /// wrote that is not yet durable; 0 when all is). `repository`: no daemon answered, so
    /// the age of the newest WAL object instead (with nothing missing it grows up to
    /// archive_timeout while anything is written, and on with no bound while nothing is).
    source: &'static str,
    seconds: Option<f64>,
    /// WAL written but not yet durable (from the daemon only).
    bytes: Option<u64>,
}

/// The age of the newest object under `wal/` (pure); `None` without any.
fn newest_wal_age(listing: &[ObjectInfo], now: SystemTime) -> Option<f64> {
    let newest = listing.iter().map(|o| o.modified).max()?;
    Some(now.duration_since(newest).unwrap_or_default().as_secs_f64())
}

/// The daemon's lag when one answers on `daemon.socket` for this repository, else the age of
/// the newest WAL object.
async fn lag(settings: &Settings, wal: &[ObjectInfo], now: SystemTime) -> Option<Lag> {
    use crate::daemon::socket::{ask_status, RepoIdentity};
    if let Some(socket) = &settings.daemon.socket {
        if let Some(Ok(st)) = ask_status(socket, Duration::from_secs(3)).await {
            let theirs = RepoIdentity { url: st.repository.clone(), key: st.key_id.clone() };
            if theirs.serves(&RepoIdentity::of(settings)) && st.lag_seconds.is_some() {
                return Some(Lag { source: "daemon", seconds: st.lag_seconds, bytes: st.lag_bytes });
            }
        }
    }
    newest_wal_age(wal, now).map(|age| Lag { source: "repository", seconds: Some(age), bytes: None })
}

fn lag_line(lag: Option<&Lag>) -> String {
    match lag {
        Some(Lag { source: "daemon", seconds: Some(s), bytes }) => format!(
            "lag: {s:.0}s{} (from the running daemon)",
            bytes.map_or(String::new(), |b| format!(", {} not yet durable", human_size(b)))
        ),
        Some(Lag { seconds: Some(s), .. }) => format!(
            "lag: the newest WAL object was stored {s:.0}s ago (no daemon answered on daemon.socket: from the repository)"
        ),
        _ => "lag: unknown (no WAL yet, and no daemon answered)".into(),
    }
}

#[derive(Serialize)]
struct SplitJson {
    parent_timeline: u32,
    child_timeline: u32,
    switchpoint: String,
    /// The parent's WAL from the switch segment on.
    parent_first: String,
    parent_last: String,
    parent_last_upload: String,
    /// The child's WAL (absent while it has stored only its history file).
    child_first: Option<String>,
    child_last: Option<String>,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = super::open_repo(settings).await?;
    let seg = repo.identity.wal_segment_size;
    // One listing of backups/ for the complete backups and the incomplete ones.
    let backup_objects = repo.store.list_meta("backups/").await?;
    let names: Vec<String> = backup_objects.iter().map(|o| o.name.clone()).collect();
    let backups = read_backups(&repo, &names).await?;
    let mut listed = Vec::new();
    for b in &backups {
        let problem = match check_objects(&repo, b).await {
            Ok(()) => None,
            Err(f) if matches!(f.code, Code::Integrity | Code::NotFound) => Some(f.message),
            Err(f) => return Err(f),
        };
        listed.push(Listed { info: b, objects_ok: problem.is_none(), objects_problem: problem });
    }
    let now = SystemTime::now();
    // Staging files count too: they may be all a killed backup left (file:// only).
    let mut with_staging = backup_objects.clone();
    with_staging.extend(repo.store.staging_leftovers().await?.into_iter().filter(|o| o.name.starts_with("backups/")));
    let incomplete: Vec<Incomplete> = incomplete_backups(&with_staging)
        .into_iter()
        .map(|(id, objs)| {
            let last = newest(&objs).unwrap_or(std::time::UNIX_EPOCH);
            Incomplete {
                id: id.to_string(),
                objects: objs.len(),
                stored_bytes: objs.iter().map(|o| o.size).sum(),
                last_written: humantime::format_rfc3339_seconds(last).to_string(),
                interrupted: last + ABANDONED_AFTER < now,
            }
        })
        .collect();
    let dump_objects = repo.store.list_meta("dumps/").await?;
    let names: Vec<String> = dump_objects.iter().map(|o| o.name.clone()).collect();
    let mut dumps = Vec::new();
    for info in read_dumps(&repo, &names).await? {
        let problem = match check_dump(&repo, &info).await {
            Ok(()) => None,
            Err(f) if matches!(f.code, Code::Integrity | Code::NotFound) => Some(f.message),
            Err(f) => return Err(f),
        };
        dumps.push(ListedDump { info, objects_ok: problem.is_none(), objects_problem: problem });
    }
    let incomplete_dumps: Vec<String> = incomplete_dumps(&dump_objects).into_iter().map(|(id, _, _)| id).collect();
    let survey = timelines::survey(&repo).await?;
    let listing = &survey.listing;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let cov = wal_coverage(&names, seg);
    let name = |tli: u32, segno: u64| SegmentId { tli, segno }.file_name(seg);
    let wal: Vec<WalRun> = cov
        .iter()
        .flat_map(|(tli, runs)| {
            runs.iter().map(move |&(a, b)| WalRun {
                timeline: *tli,
                first: name(*tli, a),
                last: name(*tli, b),
                segments: b - a + 1,
            })
        })
        .collect();
    // On a split, the window is the line of the server the configuration points at.
    let (line, ambiguous) = match timelines::resolve(&repo, &survey, None, settings.conninfo.as_deref()).await {
        Ok(l) => (l, None),
        Err(e) => (None, Some(e.message)),
    };
    let tli: Option<u32> = line.as_deref().and_then(|l| l.parse().ok());
    let usable = |l: &&Listed| {
        l.objects_ok
            && backup_wal_complete(l.info, &cov, seg)
            && tli.is_none_or(|t| timelines::on_line(l.info, t, &survey, seg))
    };
    let anchor = listed.iter().find(usable).map(|l| l.info).filter(|_| ambiguous.is_none());
    let followed = match listed.iter().rev().find(usable).filter(|_| ambiguous.is_none()) {
        Some(l) => follow(&repo, l.info, listing, line.as_deref()).await.ok(),
        None => None,
    };
    let fmt = |s: crate::pg::lsn::SegmentId| s.file_name(seg);
    let splits: Vec<SplitJson> = survey
        .splits()
        .iter()
        .map(|s| SplitJson {
            parent_timeline: s.parent_tli,
            child_timeline: s.child_tli,
            switchpoint: s.switchpoint.to_string(),
            parent_first: fmt(s.parent.first),
            parent_last: fmt(s.parent.last),
            parent_last_upload: humantime::format_rfc3339_seconds(s.parent.last_upload).to_string(),
            child_first: s.child.map(|c| fmt(c.first)),
            child_last: s.child.map(|c| fmt(c.last)),
        })
        .collect();
    let listing = Listing {
        backups: listed,
        incomplete_backups: incomplete,
        dumps,
        incomplete_dumps,
        wal,
        restorable_from: anchor.map(|b| b.finished_at.clone()),
        restorable_to_wal: followed.as_ref().map(|f| if f.streamed { f.missing } else { f.last }.file_name(seg)),
        restorable_to_streamed: followed.as_ref().is_some_and(|f| f.streamed),
        restorable_to: followed.as_ref().map(|f| humantime::format_rfc3339_seconds(f.last_written).to_string()),
        restorable_timeline: followed.as_ref().map(|f| f.tli),
        splits,
        ambiguous,
        lag: lag(settings, listing, now).await,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&listing).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    println!("repository {} (database system {})", repo.store.url(), repo.identity.system_identifier);
    match (&listing.ambiguous, &listing.restorable_from, &listing.restorable_to, &listing.restorable_to_wal) {
        (Some(why), ..) => println!("no single restorable window: {why}"),
        (None, Some(from), Some(to), Some(wal)) => println!(
            "restorable from {from} to {to} ({} WAL segment {wal}, timeline {})",
            if listing.restorable_to_streamed { "as far as streaming got into" } else { "the end of" },
            listing.restorable_timeline.unwrap_or(1)
        ),
        _ => println!("nothing is restorable yet: a backup and its WAL are needed"),
    }
    println!("{}", lag_line(listing.lag.as_ref()));
    println!("\nbackups");
    if backups.is_empty() {
        println!("  none yet: run tidewal backup");
    }
    for l in &listing.backups {
        let b = l.info;
        let size: u64 = b.objects.iter().map(|o| o.bytes).sum();
        let stored: u64 = b.objects.iter().map(|o| o.stored_bytes).sum();
        println!(
            "  {}  finished {}  {:>6.1}s  {} ({} stored)  LSN {} - {}  timeline {}{}{}",
            b.id,
            b.finished_at,
            b.duration_seconds,
            human_size(size),
            human_size(stored),
            b.start_lsn,
            b.end_lsn,
            b.timeline,
            b.parent.as_ref().map(|p| format!("  incremental on {p}{}", increment_kind(b))).unwrap_or_default(),
            if backup_wal_complete(b, &cov, seg) { "" } else { "  (WAL incomplete: cannot be restored)" }
        );
        if let Some(p) = &l.objects_problem {
            println!("    not restorable: {p}");
        }
    }
    for b in &listing.incomplete_backups {
        println!(
            "  {}  incomplete: {} object(s), {} stored, last written {}  ({})",
            b.id,
            b.objects,
            human_size(b.stored_bytes),
            b.last_written,
            if b.interrupted {
                "interrupted: the next backup or prune removes it"
            } else {
                "running now, or interrupted less than a day ago"
            }
        );
    }
    if !listing.dumps.is_empty() || !listing.incomplete_dumps.is_empty() {
        println!("\ndumps");
    }
    for d in &listing.dumps {
        let i = &d.info;
        let dbs: Vec<String> = i
            .databases
            .iter()
            .map(|db| match &db.timescaledb_version {
                Some(v) => format!("{} (TimescaleDB {v})", db.name),
                None => db.name.clone(),
            })
            .collect();
        println!(
            "  {}  finished {}  {:>6.1}s  {} ({} stored)  PostgreSQL {}  {}",
            i.id,
            i.finished_at,
            i.duration_seconds,
            human_size(i.bytes()),
            human_size(i.stored_bytes()),
            i.server_version,
            dbs.join(", ")
        );
        if let Some(p) = &d.objects_problem {
            println!("    not restorable: {p}");
        }
    }
    for id in &listing.incomplete_dumps {
        println!("  {id}  incomplete: running now, or interrupted (prune removes it)");
    }
    println!("\nWAL");
    if listing.wal.is_empty() {
        println!("  none yet: check archive_command (tidewal check)");
    }
    let mut prev: Option<&WalRun> = None;
    for r in &listing.wal {
        if let Some(p) = prev.filter(|p| p.timeline == r.timeline) {
            println!("  gap: segments after {} up to {} are missing", p.last, r.first);
        }
        println!("  timeline {}: {} .. {} ({} segments)", r.timeline, r.first, r.last, r.segments);
        prev = Some(r);
    }
    for sp in survey.splits() {
        println!("\nSPLIT: two clusters archive into this repository: {}", timelines::describe_split(&sp, seg));
    }
    Ok(())
}

/// How an incremental backup was taken, for a person.
fn increment_kind(b: &BackupInfo) -> &'static str {
    match b.increment {
        Some(crate::repo::catalog::Increment::Client) => " (client-side)",
        _ => " (server-side)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_from_the_repository_is_the_newest_wal_objects_age() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + s);
        let o = |name: &str, s: u64| ObjectInfo { name: name.into(), size: 1, modified: t(s) };
        assert_eq!(newest_wal_age(&[], t(0)), None);
        let wal = [o("wal/00000001/000000010000000000000001", 10), o("wal/00000001.history", 40)];
        assert_eq!(newest_wal_age(&wal, t(100)), Some(60.0));
        // A store clock ahead of ours: no negative lag.
        assert_eq!(newest_wal_age(&wal, t(20)), Some(0.0));
        let line = lag_line(Some(&Lag { source: "repository", seconds: Some(60.0), bytes: None }));
        assert!(line.contains("60s ago") && line.contains("from the repository"), "{line}");
        let line = lag_line(Some(&Lag { source: "daemon", seconds: Some(2.0), bytes: Some(2048) }));
        assert!(line.contains("lag: 2s, 2.0 KiB not yet durable (from the running daemon)"), "{line}");
    }
}
