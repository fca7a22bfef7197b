//! The backup catalog: reading `backup.json` records and choosing a backup for a target.

use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{Repo, StoredObject};
use crate::error::{Code, Fail, Result};
use std::time::SystemTime;

use crate::pg::history::{parse_history, HistoryEntry};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::walfile::WalFile;
use crate::store::ObjectInfo;

/// `backup.json`: the record that makes a backup exist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupInfo {
    pub id: String,
    pub label: String,
    pub system_identifier: String,
    pub pg_version: String,
    pub timescaledb_version: Option<String>,
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    pub start_wal: String,
    pub end_wal: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    pub tablespaces: Vec<(u32, String)>,
    pub objects: Vec<StoredObject>,
    /// The backup an incremental one builds on (and restores only with); none for a full
    /// backup. Absent from records that predate incremental backups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// How an incremental backup was taken; records without it (and with a parent) are
    /// server-side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub increment: Option<Increment>,
}

/// How an incremental backup knows what changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Increment {
    /// PostgreSQL 17's WAL summaries: the server sent only changed blocks.
    Server,
    /// tidewal compared what the server sent with the parent's file index.
    Client,
}

impl BackupInfo {
    pub fn end(&self) -> Lsn {
        self.end_lsn.parse().unwrap_or_default()
    }

    pub fn finished(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.finished_at).ok()
    }
}

/// Every complete backup (one with `backup.json`), oldest first.
pub async fn list_backups(repo: &Repo) -> Result<Vec<BackupInfo>> {
    read_backups(repo, &repo.store.list("backups").await?).await
}

/// The backups among object names already listed under `backups/`, their records read 16
/// at once (one round trip each on a remote store, and a repository holds dozens).
pub async fn read_backups(repo: &Repo, names: &[String]) -> Result<Vec<BackupInfo>> {
    let reads: Vec<_> = names
        .iter()
        .filter(|n| n.ends_with("/backup.json"))
        .map(|name| async move {
            let plain = repo.open_bytes(name).await?;
            serde_json::from_slice::<BackupInfo>(&plain)
                .map_err(|e| Fail::new(Code::Integrity, format!("object {name}: not a valid backup record: {e}")))
        })
        .collect();
    let mut out: Vec<BackupInfo> = futures::stream::iter(reads).buffered(16).try_collect().await?;
    // By start time, so ids of earlier versions (whole seconds) sort among today's.
    out.sort_by(|a, b| {
        (super::layout::parse_backup_id(&a.id), &a.id).cmp(&(super::layout::parse_backup_id(&b.id), &b.id))
    });
    Ok(out)
}

/// Is the next scheduled backup incremental (pure)? Yes while the newest backup's chain
/// starts with a full backup that finished less than `full_every` before `now`.
pub fn incremental_due(backups: &[BackupInfo], now: SystemTime, full_every: std::time::Duration) -> bool {
    let Some(mut at) = backups.last() else { return false };
    for _ in 0..backups.len() {
        match at.parent.as_deref() {
            None => break,
            Some(p) => match backups.iter().find(|b| b.id == p) {
                Some(b) => at = b,
                None => return false,
            },
        }
    }
    at.parent.is_none() && at.finished().is_some_and(|done| now.duration_since(done).is_ok_and(|age| age < full_every))
}

/// The objects a restore needs that `backup.json` does not list (pure): `base.tar`, the
/// manifest, and each of its tablespaces' archives.
pub fn unlisted_objects(info: &BackupInfo) -> Vec<String> {
    let mut need = vec!["base.tar".to_string(), "backup_manifest".to_string()];
    need.extend(info.tablespaces.iter().map(|(oid, _)| format!("{oid}.tar")));
    need.into_iter()
        .map(|n| super::layout::backup_object(&info.id, &n))
        .filter(|obj| !info.objects.iter().any(|o| &o.name == obj))
        .collect()
}

/// Before a backup is used: every object `backup.json` lists is there, with the recorded
/// stored size and the recorded plaintext digest (read from the object's authenticated
/// header or last frame, not downloaded). The error names the first bad object.
pub async fn check_objects(repo: &Repo, info: &BackupInfo) -> Result<()> {
    if let Some(obj) = unlisted_objects(info).first() {
        return Err(Fail::new(
            Code::Integrity,
            format!(
                "backup {} cannot be used: its backup.json does not list {obj}; choose another backup with --backup (see tidewal list)",
                info.id
            ),
        ));
    }
    let who = format!("backup {}", info.id);
    check_stored(repo, &who, "backup.json", "choose another backup with --backup (see tidewal list)", &info.objects)
        .await
}

/// Every object of `objects` is there with its recorded stored size and plaintext digest
/// (header or last frame, not downloaded), 16 at once (a dump may have thousands); the
/// error names `who` and the first bad object found.
pub async fn check_stored(repo: &Repo, who: &str, record: &str, hint: &str, objects: &[StoredObject]) -> Result<()> {
    // Collected first: a stream over the closure itself would make callers' futures not Send.
    let checks: Vec<_> = objects
        .iter()
        .map(|o| async move {
            let bad = |what: String| {
                Fail::new(Code::Integrity, format!("{who} cannot be used: object {} {what}; {hint}", o.name))
            };
            let found = repo.recorded_digest(&o.name, o.stored_bytes).await.map_err(|e| match e.code {
                Code::NotFound => bad("is missing".into()),
                Code::Integrity => bad(format!("is damaged ({e})")),
                _ => e,
            })?;
            let digest = match found {
                Ok(d) => crate::codec::digest_hex(&d),
                Err(size) => return Err(bad(format!("has {size} bytes, {record} recorded {}", o.stored_bytes))),
            };
            if digest != o.digest {
                return Err(bad(format!("holds BLAKE3 {digest}, {record} recorded {}", o.digest)));
            }
            Ok(())
        })
        .collect();
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(checks).buffer_unordered(16).try_collect::<Vec<()>>().await.map(|_| ())
}

/// Contiguous runs of archived segments, per timeline: `(first segno, last segno)`.
pub type Coverage = std::collections::BTreeMap<u32, Vec<(u64, u64)>>;

/// WAL coverage from object names under `wal/` (pure). Partial segments, history files
/// and backup labels do not count as coverage.
pub fn wal_coverage(names: &[String], seg_size: u64) -> Coverage {
    let mut segs: Vec<(u32, u64)> = names
        .iter()
        .filter_map(|n| n.rsplit('/').next())
        .filter_map(|file| SegmentId::parse(file, seg_size).ok())
        .map(|s| (s.tli, s.segno))
        .collect();
    segs.sort_unstable();
    segs.dedup();
    let mut out = Coverage::new();
    for (tli, segno) in segs {
        let runs = out.entry(tli).or_default();
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == segno => *last = segno,
            _ => runs.push((segno, segno)),
        }
    }
    out
}

/// The first segment missing between `first` and `last` on a timeline, if any (pure).
pub fn first_missing(cov: &Coverage, tli: u32, first: u64, last: u64) -> Option<u64> {
    let runs = cov.get(&tli).map(Vec::as_slice).unwrap_or(&[]);
    let mut want = first;
    for &(a, b) in runs {
        if b < want {
            continue;
        }
        if a > want {
            return Some(want);
        }
        want = b + 1;
        if want > last {
            return None;
        }
    }
    (want <= last).then_some(want)
}

/// Every segment from the backup's start to its end is archived (pure).
pub fn backup_wal_complete(b: &BackupInfo, cov: &Coverage, seg: u64) -> bool {
    match (SegmentId::parse(&b.start_wal, seg), SegmentId::parse(&b.end_wal, seg)) {
        (Ok(s), Ok(e)) if s.tli == e.tli => first_missing(cov, s.tli, s.segno, e.segno).is_none(),
        (Ok(s), Ok(e)) => {
            first_missing(cov, s.tli, s.segno, s.segno).is_none()
                && first_missing(cov, e.tli, e.segno, e.segno).is_none()
        }
        _ => false,
    }
}

/// What a restore aims at, as far as choosing a backup is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Latest,
    Time(SystemTime),
    Lsn(Lsn),
}

/// The newest backup that finished before the target (pure).
pub fn choose<'a>(backups: &'a [BackupInfo], target: &Target) -> Option<&'a BackupInfo> {
    backups.iter().rev().find(|b| match target {
        Target::Latest => true,
        Target::Time(t) => b.finished().is_some_and(|f| f <= *t),
        Target::Lsn(l) => b.end() <= *l,
    })
}

/// One timeline's stretch of the WAL that recovery reads: segments `first..=last` on `tli`
/// (`last` is `None` on the final, open-ended timeline).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leg {
    pub tli: u32,
    pub first: u64,
    pub last: Option<u64>,
}

/// The segments recovery reads from a backup's end to the newest WAL of `target_tli`, given
/// that timeline's history (pure). Recovery reads each segment from the newest timeline that
/// had begun by then, so a switch's own segment comes from the new timeline.
pub fn wal_route(
    end: SegmentId,
    end_lsn: Lsn,
    target_tli: u32,
    history: &[HistoryEntry],
    seg_size: u64,
) -> Result<Vec<Leg>, String> {
    if target_tli == end.tli {
        return Ok(vec![Leg { tli: end.tli, first: end.segno, last: None }]);
    }
    let start = history
        .iter()
        .position(|h| h.parent_tli == end.tli)
        .ok_or_else(|| format!("timeline {target_tli} does not descend from timeline {} of the backup", end.tli))?;
    if end_lsn > history[start].switchpoint {
        return Err(format!(
            "the backup ends at {end_lsn}, after timeline {target_tli}'s history left timeline {} at {}",
            end.tli, history[start].switchpoint
        ));
    }
    let mut legs = Vec::new();
    let mut first = end.segno;
    for h in &history[start..] {
        let switch_seg = h.switchpoint.0 / seg_size;
        if switch_seg > first {
            legs.push(Leg { tli: h.parent_tli, first, last: Some(switch_seg - 1) });
        }
        first = first.max(switch_seg);
    }
    legs.push(Leg { tli: target_tli, first, last: None });
    Ok(legs)
}

/// How far recovery can follow a route through the archived WAL (pure): the last segment
/// reachable without a gap, and the first one missing inside a closed leg, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reach {
    pub last: Option<SegmentId>,
    pub gap: Option<SegmentId>,
}

pub fn reach(route: &[Leg], cov: &Coverage) -> Reach {
    let mut last = None;
    for leg in route {
        let runs = cov.get(&leg.tli).map(Vec::as_slice).unwrap_or(&[]);
        match leg.last {
            Some(end) => match first_missing(cov, leg.tli, leg.first, end) {
                None => last = Some(SegmentId { tli: leg.tli, segno: end }),
                Some(m) => {
                    if m > leg.first {
                        last = Some(SegmentId { tli: leg.tli, segno: m - 1 });
                    }
                    return Reach { last, gap: Some(SegmentId { tli: leg.tli, segno: m }) };
                }
            },
            None => {
                if let Some(&(_, z)) = runs.iter().find(|(a, z)| *a <= leg.first && leg.first <= *z) {
                    last = Some(SegmentId { tli: leg.tli, segno: z });
                }
            }
        }
    }
    Reach { last, gap: None }
}

/// The timeline recovery follows for `recovery_target_timeline` (pure): `latest` probes
/// history files upward from the backup's timeline as PostgreSQL does.
pub fn target_timeline(spec: Option<&str>, backup_tli: u32, histories: &[u32]) -> Result<u32, String> {
    match spec.unwrap_or("latest") {
        "current" => Ok(backup_tli),
        "latest" => {
            let mut tli = backup_tli;
            while histories.contains(&(tli + 1)) {
                tli += 1;
            }
            Ok(tli)
        }
        n => n.parse().map_err(|_| format!("--target-timeline {n:?}: give latest, current or a timeline number")),
    }
}

/// Timelines with a history file among object names under `wal/` (pure).
pub fn history_timelines(names: &[String]) -> Vec<u32> {
    names
        .iter()
        .filter_map(|n| n.rsplit('/').next())
        .filter_map(|f| match WalFile::parse(f, 16 << 20) {
            Ok(WalFile::History(t)) => Some(t),
            _ => None,
        })
        .collect()
}

/// Where the repository's WAL on a server's line of history ends (pure): the furthest end
/// of a stored segment (or the start of a segment stored only in part) on the server's
/// timeline or one it descends from, counted only up to where the server left it.
pub fn wal_end_on_history(names: &[String], seg: u64, server_tli: u32, history: &[HistoryEntry]) -> Option<Lsn> {
    names
        .iter()
        .filter_map(|n| WalFile::parse_stored(n.rsplit('/').next()?, seg).ok())
        .filter_map(|f| match f {
            WalFile::Segment(s) => Some((s.tli, s.segno, Lsn((s.segno + 1) * seg))),
            WalFile::Partial(s) | WalFile::Streamed(s) => Some((s.tli, s.segno, Lsn(s.segno * seg))),
            _ => None,
        })
        .filter_map(|(tli, segno, end)| {
            // Segments a timeline has beyond the server's switch away from it are off the line.
            let upto = crate::pg::history::resume_point(tli, end, server_tli, history)?;
            (segno * seg <= upto.0).then_some(upto)
        })
        .max()
}

/// A backup without `backup.json` whose objects are this old was interrupted, not running.
pub const ABANDONED_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Backups without `backup.json` (running, or interrupted), by id, with their objects (pure).
/// Only names under `backups/<id>/` with a backup id count: anything else there is not a
/// backup's. The listing may include staging leftovers (`base.tar#1`), so a backup killed
/// before its first object completed is seen too.
pub fn incomplete_backups(listing: &[ObjectInfo]) -> Vec<(&str, Vec<&ObjectInfo>)> {
    let mut by_id: std::collections::BTreeMap<&str, Vec<&ObjectInfo>> = Default::default();
    for o in listing {
        let id = o.name.strip_prefix("backups/").and_then(|r| r.split_once('/')).map(|(id, _)| id);
        if let Some(id) = id.filter(|id| super::layout::parse_backup_id(id).is_some()) {
            by_id.entry(id).or_default().push(o);
        }
    }
    by_id.into_iter().filter(|(_, objs)| !objs.iter().any(|o| o.name.ends_with("/backup.json"))).collect()
}

/// The newest object of a group was written then.
pub fn newest(objs: &[&ObjectInfo]) -> Option<SystemTime> {
    objs.iter().map(|o| o.modified).max()
}

/// Backups that never completed (no `backup.json`) and whose newest object is older than
/// `age` at `now`: left by an interrupted run, since a running backup keeps writing (pure).
/// Each with the names of its objects.
pub fn abandoned_backups(
    listing: &[ObjectInfo],
    now: SystemTime,
    age: std::time::Duration,
) -> Vec<(String, Vec<String>)> {
    incomplete_backups(listing)
        .into_iter()
        .filter(|(_, objs)| newest(objs).is_some_and(|m| m + age < now))
        .map(|(id, objs)| (id.to_string(), objs.iter().map(|o| o.name.clone()).collect()))
        .collect()
}

/// Where recovery from a backup can get to along the WAL in the repository.
#[derive(Clone, Debug)]
pub struct Followed {
    pub tli: u32,
    /// The last segment reachable without a gap.
    pub last: SegmentId,
    /// When the newest reachable WAL was stored: no WAL record in it is newer. That is the
    /// streamed copy of `missing` when there is one.
    pub last_written: SystemTime,
    /// The first segment recovery would need next (a gap, or the end of the archive).
    pub missing: SegmentId,
    /// `missing` is there as the receiver's streamed copy (`.stream`): recovery replays it
    /// up to where streaming got.
    pub streamed: bool,
}

/// Follow the WAL from a backup's end onto the timeline `recovery_target_timeline` picks.
pub async fn follow(
    repo: &Repo,
    info: &BackupInfo,
    listing: &[ObjectInfo],
    tli_spec: Option<&str>,
) -> Result<Followed> {
    let seg = repo.identity.wal_segment_size;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let cov = wal_coverage(&names, seg);
    let bad = |m: String| Fail::new(Code::NotFound, m);
    let end = SegmentId::parse(&info.end_wal, seg)
        .map_err(|e| Fail::new(Code::Integrity, format!("backup {}: end segment: {e}", info.id)))?;
    let tli = target_timeline(tli_spec, end.tli, &history_timelines(&names)).map_err(|e| Fail::new(Code::Usage, e))?;
    let history = load_history(repo, tli).await?;
    let route = wal_route(end, info.end(), tli, &history, seg)
        .map_err(|e| bad(format!("backup {} cannot be recovered onto timeline {tli}: {e}", info.id)))?;
    let r = reach(&route, &cov);
    let last = r.last.ok_or_else(|| bad(format!("no WAL follows backup {} on timeline {tli}", info.id)))?;
    let stored = super::layout::wal_object(&WalFile::Segment(last), seg);
    let written = |obj: &str| listing.iter().find(|o| o.name == obj).map(|o| o.modified);
    let missing = r.gap.unwrap_or(SegmentId { tli: route.last().map_or(tli, |l| l.tli), segno: last.segno + 1 });
    let streamed = written(&super::layout::wal_object(&WalFile::Streamed(missing), seg));
    let last_written = streamed.or(written(&stored)).unwrap_or(SystemTime::UNIX_EPOCH);
    Ok(Followed { tli, last, last_written, missing, streamed: streamed.is_some() })
}

/// A timeline's history from the repository (timeline 1 has none).
pub async fn load_history(repo: &Repo, tli: u32) -> Result<Vec<HistoryEntry>> {
    if tli <= 1 {
        return Ok(Vec::new());
    }
    let name = super::layout::wal_object(&WalFile::History(tli), repo.identity.wal_segment_size);
    let plain = repo.open_bytes(&name).await.map_err(|e| match e.code {
        Code::NotFound => {
            Fail::new(Code::NotFound, format!("timeline {tli} has no history file ({name}) in the repository"))
        }
        _ => e,
    })?;
    parse_history(&String::from_utf8_lossy(&plain))
        .map_err(|e| Fail::new(Code::Integrity, format!("object {name}: not a timeline history: {e}")))
}

#[cfg(test)]
#[path = "catalog_tests.rs"]
mod tests;
