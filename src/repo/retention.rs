//! Retention, DESIGN.md §5 rule 4, as a pure function from the catalog, `now` and the window
//! to a delete plan. Keep every backup that finished inside the window, plus the newest one
//! that finished at or before its start (the anchor, which makes the window's first moment
//! restorable), and for every timeline that received WAL inside the window the newest backup
//! on its line of history that finished by then (a line anchor: the same rule, per line).
//! An incremental backup keeps every backup it builds on: a chain is kept or deleted whole.
//! WAL is deleted only where it ends at or before the earliest start of a kept backup: no
//! recovery from a kept backup reads it, whatever timeline it is on. History files stay.
//!
//! The rule is by position, not by route, on purpose: two clusters may archive into one
//! repository (a restored copy that promoted and kept archiving), and a route onto "the"
//! present timeline would call the other cluster's live WAL dead.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime};

use super::catalog::{wal_route, BackupInfo};
use crate::pg::history::HistoryEntry;
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::walfile::WalFile;
use crate::store::ObjectInfo;

/// What the planner looks at: every complete backup and every object under `wal/`.
pub struct Catalog<'a> {
    pub backups: &'a [BackupInfo],
    /// Every object under `wal/`, with its upload time (the store's modification time).
    pub wal: &'a [ObjectInfo],
    /// The history of each timeline that has a history file.
    pub histories: &'a BTreeMap<u32, Vec<HistoryEntry>>,
    pub seg_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The newest backup that finished at or before the window's start, if any.
    pub anchor: Option<String>,
    /// For each timeline that received WAL inside the window, the newest backup on its line
    /// of history that finished at or before the window's start (kept like the anchor).
    pub line_anchors: BTreeMap<u32, String>,
    pub keep_backups: Vec<String>,
    pub delete_backups: Vec<String>,
    pub keep_wal: usize,
    /// Object names under `wal/`, in listing order.
    pub delete_wal: Vec<String>,
    /// WAL that ends at or before this position goes: the earliest start of a kept backup.
    /// `None` without any backup (then nothing goes).
    pub keep_from: Option<Lsn>,
}

/// A backup as the planner needs it, every field checked.
struct Parsed<'a> {
    info: &'a BackupInfo,
    done: SystemTime,
    start: SegmentId,
    start_lsn: Lsn,
    end_lsn: Lsn,
}

fn parse_backup(b: &BackupInfo, seg: u64) -> Result<Parsed<'_>, String> {
    let bad = |what: &str, e: String| format!("backup {}: {what}: {e}", b.id);
    let done = b.finished().ok_or_else(|| bad("finish time", format!("{:?} is not RFC 3339", b.finished_at)))?;
    let start = SegmentId::parse(&b.start_wal, seg).map_err(|e| bad("start segment", e))?;
    SegmentId::parse(&b.end_wal, seg).map_err(|e| bad("end segment", e))?;
    let start_lsn: Lsn = b.start_lsn.parse().map_err(|e| bad("start position", e))?;
    let end_lsn: Lsn = b.end_lsn.parse().map_err(|e| bad("end position", e))?;
    // Deletion is decided by start_lsn: it must agree with the rest of the record.
    if start != SegmentId::containing(b.timeline, start_lsn, seg) || end_lsn < start_lsn {
        return Err(format!(
            "backup {}: start {start_lsn} on timeline {}, segment {}, end {end_lsn} do not agree",
            b.id, b.timeline, b.start_wal
        ));
    }
    Ok(Parsed { info: b, done, start, start_lsn, end_lsn })
}

/// Plan what to delete. An error means the catalog is inconsistent and nothing may go.
pub fn plan(cat: &Catalog, now: SystemTime, window: Duration) -> Result<Plan, String> {
    let seg = cat.seg_size;
    let mut backups = cat.backups.iter().map(|b| parse_backup(b, seg)).collect::<Result<Vec<_>, _>>()?;
    backups.sort_by(|a, b| (a.done, &a.info.id).cmp(&(b.done, &b.info.id)));
    let mut wal = Vec::new();
    for o in cat.wal {
        let file = o.name.rsplit('/').next().unwrap_or_default();
        let kind = WalFile::parse_stored(file, seg).map_err(|e| format!("{}: {e}", o.name))?;
        wal.push((o, kind));
    }
    let cutoff = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    // Every timeline with WAL needs its history to tell which backups lead onto it.
    let mut newest_upload: BTreeMap<u32, SystemTime> = BTreeMap::new();
    for (o, kind) in &wal {
        if let Some(s) = kind.segment() {
            let t = newest_upload.entry(s.tli).or_insert(o.modified);
            *t = (*t).max(o.modified);
        }
    }
    let history = |tli: u32| -> Result<&[HistoryEntry], String> {
        match cat.histories.get(&tli) {
            Some(h) => Ok(h.as_slice()),
            None if tli == 1 => Ok(&[]),
            None => Err(format!("timeline {tli} has WAL but no history file: cannot tell which backups lead to it")),
        }
    };
    for tli in newest_upload.keys() {
        history(*tli)?;
    }
    let mut out = Plan::default();
    if backups.is_empty() {
        // WAL without a backup restores nothing, but deleting it helps nobody either.
        out.keep_wal = wal.len();
        return Ok(out);
    }
    let by_cutoff = |b: &&Parsed| b.done <= cutoff;
    out.anchor = backups.iter().rev().find(by_cutoff).map(|b| b.info.id.clone());
    for (&tli, &last) in &newest_upload {
        if last < cutoff {
            continue; // no moment of this timeline lies inside the window
        }
        let h = history(tli)?;
        // A backup leads onto the line when recovery from it can follow the history there.
        let on_line = |b: &&Parsed| wal_route(b.start, b.end_lsn, tli, h, seg).is_ok();
        if let Some(b) = backups.iter().rev().filter(by_cutoff).find(on_line) {
            out.line_anchors.insert(tli, b.info.id.clone());
        }
    }
    let mut keep: HashSet<&str> = backups
        .iter()
        .map(|b| (b.info.id.as_str(), b.done))
        .filter(|&(id, done)| {
            done > cutoff || out.anchor.as_deref() == Some(id) || out.line_anchors.values().any(|a| a == id)
        })
        .map(|(id, _)| id)
        .collect();
    keep_chains(&backups, &mut keep)?;
    let mut keep_from: Option<Lsn> = None;
    for b in &backups {
        let id = &b.info.id;
        if keep.contains(id.as_str()) {
            out.keep_backups.push(id.clone());
            keep_from = Some(keep_from.map_or(b.start_lsn, |k| k.min(b.start_lsn)));
        } else {
            out.delete_backups.push(id.clone());
        }
    }
    // Never `None`: the newest backup finished after the cutoff or is the anchor.
    let keep_from = keep_from.ok_or("no backup kept")?;
    out.keep_from = Some(keep_from);
    for (o, kind) in wal {
        // A segment's end bounds every record in it, whatever kind of copy it is.
        let deletable = kind.segment().is_some_and(|s| Lsn((s.segno + 1) * seg) <= keep_from);
        if deletable {
            out.delete_wal.push(o.name.clone());
        } else {
            out.keep_wal += 1;
        }
    }
    Ok(out)
}

/// An incremental backup restores only with every backup it builds on: add each kept
/// backup's ancestors to `keep`, so a chain is kept whole. A parent that is not in the
/// catalog, or a loop, is an inconsistency: nothing may go.
fn keep_chains<'a>(backups: &[Parsed<'a>], keep: &mut HashSet<&'a str>) -> Result<(), String> {
    let by_id: BTreeMap<&str, &BackupInfo> = backups.iter().map(|b| (b.info.id.as_str(), b.info)).collect();
    let kept: Vec<&str> = keep.iter().copied().collect();
    for id in kept {
        let mut seen = HashSet::from([id]);
        let mut at = by_id[id];
        while let Some(parent) = at.parent.as_deref() {
            let p = *by_id
                .get(parent)
                .ok_or_else(|| format!("backup {} builds on backup {parent}, which is not in the repository", at.id))?;
            if !seen.insert(p.id.as_str()) {
                return Err(format!("backup {id}: its chain of parent backups loops at {parent}"));
            }
            keep.insert(p.id.as_str());
            at = p;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

    const SEG: u64 = 16 << 20;
    const HOUR: u64 = 3600;
    const DAY: u64 = 24;
    const T0: u64 = 1_800_000_000;

    fn at(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + hours * HOUR)
    }

    fn days(n: u64) -> Duration {
        Duration::from_secs(n * DAY * HOUR)
    }

    /// A backup of segment `segno` on `tli`, started at hour `segno`, finished at hour `segno` + 1.
    fn backup(tli: u32, segno: u64) -> BackupInfo {
        let s = SegmentId { tli, segno };
        BackupInfo {
            id: format!("b{segno:04}"),
            label: String::new(),
            system_identifier: "1".into(),
            pg_version: "15".into(),
            timescaledb_version: None,
            timeline: tli,
            start_lsn: Lsn(segno * SEG + 40).to_string(),
            end_lsn: Lsn(segno * SEG + 400).to_string(),
            start_wal: s.file_name(SEG),
            end_wal: s.file_name(SEG),
            started_at: humantime::format_rfc3339_seconds(at(segno)).to_string(),
            finished_at: humantime::format_rfc3339_seconds(at(segno + 1)).to_string(),
            duration_seconds: 1.0,
            tablespaces: vec![],
            objects: vec![],
            parent: None,
            increment: None,
        }
    }

    fn name(tli: u32, segno: u64) -> String {
        format!("wal/{tli:08X}/{}", SegmentId { tli, segno }.file_name(SEG))
    }

    /// A WAL object uploaded at hour `hour`.
    fn obj(name: String, hour: u64) -> ObjectInfo {
        ObjectInfo { name, size: 1, modified: at(hour) }
    }

    /// Segment `segno` is written during hour `segno` and uploaded at its end.
    fn seg(tli: u32, segno: u64) -> ObjectInfo {
        obj(name(tli, segno), segno + 1)
    }

    fn switch(parent_tli: u32, segno: u64) -> HistoryEntry {
        HistoryEntry { parent_tli, switchpoint: Lsn(segno * SEG + 4096), reason: String::new() }
    }

    type Histories = BTreeMap<u32, Vec<HistoryEntry>>;

    /// One segment per hour on timeline 1; with `switch`, timeline 2 branches off in the
    /// middle of that segment (the old timeline's copy of it is a `.partial`), and the old
    /// primary also wrote two more segments on timeline 1 that lead nowhere.
    fn world(hours: u64, switch_at: Option<u64>) -> (Vec<ObjectInfo>, Histories) {
        let mut wal = Vec::new();
        let mut hist = BTreeMap::new();
        match switch_at {
            None => wal.extend((0..hours).map(|s| seg(1, s))),
            Some(k) => {
                wal.extend((0..k).map(|s| seg(1, s)));
                wal.push(obj(format!("{}.partial", name(1, k)), k + 1));
                wal.extend((k + 1..k + 3).map(|s| seg(1, s)));
                wal.extend((k..hours).map(|s| seg(2, s)));
                wal.push(obj("wal/00000002.history".into(), k + 1));
                hist.insert(2, vec![switch(1, k)]);
            }
        }
        (wal, hist)
    }

    fn names(v: &[ObjectInfo]) -> Vec<String> {
        v.iter().map(|o| o.name.clone()).collect()
    }

    #[test]
    fn twelve_days_with_a_promotion() {
        // Daily backups at hours 0, 24, ..., 264; a promotion at hour 200; it is now hour 288
        // (day 12) and the window is 10 days (cutoff at hour 48).
        let (wal, hist) = world(288, Some(200));
        let backups: Vec<BackupInfo> =
            (0..12).map(|d| d * DAY).map(|s| backup(if s >= 200 { 2 } else { 1 }, s)).collect();
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(288), days(10)).unwrap();
        // Hour 48 is the cutoff: b0048 finished at 49, so the anchor is b0024 (finished 25).
        assert_eq!(p.anchor.as_deref(), Some("b0024"));
        assert_eq!(p.delete_backups, vec!["b0000"]);
        assert_eq!(p.keep_backups.len(), 11);
        // Only WAL that ends before the anchor's start goes. The old primary's tail on
        // timeline 1 after the branch point (its partial segment and two more) stays: it
        // was written inside the window, and by position alone retention cannot tell an
        // old primary's tail from a second cluster's live WAL. It goes once the anchor
        // has passed it (below). History files always stay.
        assert_eq!(p.delete_wal, (0..24).map(|s| name(1, s)).collect::<Vec<_>>());
        assert_eq!(p.keep_from, Some(Lsn(24 * SEG + 40)));
        assert_eq!(p.line_anchors, BTreeMap::from([(1, "b0024".to_string()), (2, "b0024".to_string())]));
        assert_eq!(p.keep_wal, wal.len() - 24);
    }

    /// `b` builds on `parent`.
    fn on(mut b: BackupInfo, parent: &BackupInfo) -> BackupInfo {
        b.parent = Some(parent.id.clone());
        b
    }

    #[test]
    fn a_kept_incremental_backup_keeps_its_whole_chain() {
        // A full backup at day 0, incrementals on it at days 1 and 5, a full one at day 9;
        // now is day 11 with a 3-day window (cutoff day 8): the anchor is the day-5
        // incremental, which needs the two before it; nothing older than the full goes.
        let (wal, hist) = world(11 * DAY, None);
        let full = backup(1, 0);
        let i1 = on(backup(1, DAY), &full);
        let i2 = on(backup(1, 5 * DAY), &i1);
        let next = backup(1, 9 * DAY);
        let backups = vec![full.clone(), i1.clone(), i2.clone(), next];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(11 * DAY), days(3)).unwrap();
        assert_eq!(p.anchor.as_deref(), Some(i2.id.as_str()));
        assert_eq!(p.keep_backups.len(), 4, "{p:?}");
        assert!(p.delete_backups.is_empty() && p.delete_wal.is_empty(), "{p:?}");
        assert_eq!(p.keep_from, Some(Lsn(40)), "WAL from the chain's full backup on stays");
        // Without the links the anchor alone would be kept.
        let unlinked = vec![full.clone(), backup(1, DAY), backup(1, 5 * DAY), backup(1, 9 * DAY)];
        let cat = Catalog { backups: &unlinked, wal: &wal, histories: &hist, seg_size: SEG };
        assert_eq!(plan(&cat, at(11 * DAY), days(3)).unwrap().delete_backups.len(), 2);
    }

    #[test]
    fn a_chain_with_a_missing_or_looping_parent_stops_the_plan() {
        let (wal, hist) = world(11 * DAY, None);
        let gone = backup(1, 0);
        let orphan = on(backup(1, 10 * DAY), &gone);
        let backups = vec![backup(1, DAY), orphan];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let e = plan(&cat, at(11 * DAY), days(3)).unwrap_err();
        assert!(e.contains("builds on backup b0000, which is not in the repository"), "{e}");
        let (a, b) = (backup(1, DAY), backup(1, 2 * DAY));
        let backups = vec![on(a.clone(), &b), on(b, &a)];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        assert!(plan(&cat, at(11 * DAY), days(3)).unwrap_err().contains("loops"));
    }

    #[test]
    fn an_old_primarys_tail_goes_once_the_anchor_has_passed_it() {
        let (wal, hist) = world(500, Some(200));
        let backups: Vec<BackupInfo> =
            (0..20).map(|d| d * DAY).map(|s| backup(if s >= 200 { 2 } else { 1 }, s)).collect();
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        // Cutoff at hour 260: the anchor is b0240 (finished 241), on timeline 2.
        let p = plan(&cat, at(500), days(10)).unwrap();
        assert_eq!(p.anchor.as_deref(), Some("b0240"));
        let tail = [format!("{}.partial", name(1, 200)), name(1, 201), name(1, 202)];
        assert!(tail.iter().all(|t| p.delete_wal.contains(t)), "{:?}", p.delete_wal);
        assert!(!p.delete_wal.contains(&name(2, 240)) && p.delete_wal.contains(&name(2, 239)));
        assert!(!p.delete_wal.iter().any(|n| n.ends_with(".history")));
    }

    /// The case: a restored copy promotes onto timeline 2 at segment 6 and archives
    /// into the production repository while production keeps writing timeline 1. Every
    /// backup is minutes old, the window 10 days: nothing after the oldest backup may go.
    #[test]
    fn a_copy_that_archives_into_the_repository_never_costs_production_its_wal() {
        let mut wal: Vec<ObjectInfo> = (0..20).map(|s| seg(1, s)).collect();
        wal.extend((6..10).map(|s| seg(2, s)));
        wal.push(obj("wal/00000002.history".into(), 7));
        wal.push(obj(format!("{}.stream", name(1, 20)), 21));
        let hist = BTreeMap::from([(2, vec![switch(1, 6)])]);
        let backups = vec![backup(1, 2), backup(1, 15)];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(21), days(10)).unwrap();
        assert_eq!(p.delete_wal, vec![name(1, 0), name(1, 1)]);
        assert!(p.delete_backups.is_empty());
        // Once both lines' early WAL is older than the window, the copy's line keeps its
        // own anchor: b0002 is the only backup whose route reaches timeline 2.
        wal.extend((10..40).map(|s| seg(2, s)));
        let backups = vec![backup(1, 2), backup(1, 15), backup(1, 25)];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(40), Duration::from_secs(10 * HOUR)).unwrap();
        assert_eq!(p.anchor.as_deref(), Some("b0025"));
        assert_eq!(p.line_anchors.get(&2).map(String::as_str), Some("b0002"));
        assert_eq!(p.delete_backups, vec!["b0015"]);
        assert_eq!(p.keep_from, Some(Lsn(2 * SEG + 40)));
    }

    #[test]
    fn a_copy_that_stopped_writing_does_not_hold_wal_forever() {
        let mut wal: Vec<ObjectInfo> = (0..300).map(|s| seg(1, s)).collect();
        wal.extend((6..10).map(|s| seg(2, s)));
        wal.push(obj("wal/00000002.history".into(), 7));
        let hist = BTreeMap::from([(2, vec![switch(1, 6)])]);
        let backups: Vec<BackupInfo> = (0..12).map(|d| backup(1, d * DAY + 1)).collect();
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        // Cutoff at hour 252: timeline 2 received nothing since hour 10.
        let p = plan(&cat, at(300), days(2)).unwrap();
        assert_eq!(p.anchor.as_deref(), Some("b0241"));
        assert!(!p.line_anchors.contains_key(&2));
        let copy: Vec<String> = (6..10).map(|s| name(2, s)).collect();
        assert!(copy.iter().all(|c| p.delete_wal.contains(c)));
        assert_eq!(p.keep_from, Some(Lsn(241 * SEG + 40)));
        assert!(!p.delete_wal.contains(&"wal/00000002.history".to_string()));
    }

    #[test]
    fn nothing_goes_while_everything_is_inside_the_window() {
        let (wal, hist) = world(48, None);
        let backups = vec![backup(1, 5), backup(1, 30)];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(48), days(10)).unwrap();
        assert_eq!(p.anchor, None);
        assert!(p.delete_backups.is_empty());
        // Only WAL older than the oldest backup.
        assert_eq!(p.delete_wal, (0..5).map(|s| name(1, s)).collect::<Vec<_>>());
    }

    #[test]
    fn inconsistencies_stop_the_plan() {
        let (wal, _) = world(30, Some(10));
        let backups = vec![backup(1, 5)];
        let empty = BTreeMap::new();
        let cat = Catalog { backups: &backups, wal: &wal, histories: &empty, seg_size: SEG };
        assert!(plan(&cat, at(300), Duration::from_secs(HOUR)).unwrap_err().contains("no history file"));
        let (wal, hist) = world(30, None);
        let broken: [fn(&mut BackupInfo); 5] = [
            |b| b.finished_at = "yesterday".into(),
            |b| b.start_lsn = "nowhere".into(),
            |b| b.start_lsn = Lsn(9 * SEG).to_string(), // not in start_wal
            |b| b.timeline = 2,
            |b| b.end_wal = "0000".into(),
        ];
        for (i, f) in broken.iter().enumerate() {
            let mut bad = backup(1, 5);
            f(&mut bad);
            let cat = Catalog { backups: std::slice::from_ref(&bad), wal: &wal, histories: &hist, seg_size: SEG };
            assert!(plan(&cat, at(300), Duration::from_secs(HOUR)).is_err(), "case {i}");
        }
        let mut odd = wal.clone();
        odd.push(obj("wal/00000001/notwal".into(), 3));
        let cat = Catalog { backups: &backups, wal: &odd, histories: &hist, seg_size: SEG };
        assert!(plan(&cat, at(300), Duration::from_secs(HOUR)).unwrap_err().contains("notwal"));
        let cat = Catalog { backups: &[], wal: &wal, histories: &hist, seg_size: SEG };
        assert!(plan(&cat, at(300), Duration::from_secs(HOUR)).unwrap().delete_wal.is_empty());
    }

    /// Whether recovery from one of `backups` reaches hour `h` on timeline `tli` (segment
    /// `h` - 1 replayed) through `segs`, following `wal_route` as restore does.
    fn restorable(backups: &[&BackupInfo], segs: &HashSet<(u32, u64)>, hist: &Histories, tli: u32, h: u64) -> bool {
        let history = hist.get(&tli).map(Vec::as_slice).unwrap_or(&[]);
        backups.iter().any(|b| {
            let start = SegmentId::parse(&b.start_wal, SEG).unwrap();
            let Ok(route) = wal_route(start, b.end_lsn.parse().unwrap(), tli, history, SEG) else {
                return false;
            };
            start.segno < h
                && (start.segno..h).all(|s| {
                    let leg = route.iter().find(|l| l.first <= s && l.last.is_none_or(|z| s <= z)).unwrap();
                    segs.contains(&(leg.tli, s))
                })
        })
    }

    /// A repository that two clusters archive into: timeline 1 from hour 0 to `hours`; a
    /// copy branches off at `copy_at` onto timeline 2 and keeps writing too; optionally one
    /// of the two fails over at a later hour onto timeline 3 (the old timeline leaves a
    /// `.partial` and a short tail). Returns the objects, histories and live timelines.
    fn split_world(
        hours: u64,
        copy_at: u64,
        failover: Option<(u64, u32, u64)>,
    ) -> (Vec<ObjectInfo>, Histories, Vec<u32>) {
        let mut hist: Histories = BTreeMap::from([(1, vec![]), (2, vec![switch(1, copy_at)])]);
        let mut wal = vec![obj("wal/00000002.history".into(), copy_at + 1)];
        let mut live = vec![1, 2];
        let mut ends = BTreeMap::from([(1u32, (0u64, hours)), (2, (copy_at, hours))]);
        if let Some((m, p, tail)) = failover {
            let first = ends[&p].0;
            ends.insert(p, (first, m));
            wal.push(obj(format!("{}.partial", name(p, m)), m + 1));
            wal.extend((m + 1..(m + 1 + tail).min(hours)).map(|s| seg(p, s)));
            let mut h3 = hist[&p].clone();
            h3.push(switch(p, m));
            hist.insert(3, h3);
            wal.push(obj("wal/00000003.history".into(), m + 1));
            ends.insert(3, (m, hours));
            live.retain(|t| *t != p);
            live.push(3);
        }
        for (&tli, &(first, end)) in &ends {
            wal.extend((first..end).map(|s| seg(tli, s)));
        }
        for &tli in &live {
            wal.push(obj(format!("{}.stream", name(tli, hours)), hours));
        }
        (wal, hist, live)
    }

    proptest! {
        /// For every hour inside the window, some kept backup that finished by then reaches
        /// it through kept WAL along the timeline that leads to the present; and the newest
        /// backup is always kept.
        #[test]
        fn every_moment_in_the_window_stays_restorable(
            hours in 20u64..200,
            switch_at in proptest::option::of(5u64..150),
            starts in proptest::collection::btree_set(0u64..200, 1..12),
            now_extra in 0u64..400,
            window_hours in 1u64..300,
        ) {
            let switch = switch_at.filter(|k| *k + 3 < hours);
            let (wal, hist) = world(hours, switch);
            let on = |s: u64| match switch { Some(k) if s >= k => 2, _ => 1 };
            let backups: Vec<BackupInfo> = starts.iter().copied().filter(|s| *s + 1 < hours).map(|s| backup(on(s), s)).collect();
            prop_assume!(!backups.is_empty());
            let now = hours + now_extra;
            let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
            let p = plan(&cat, at(now), Duration::from_secs(window_hours * HOUR)).unwrap();
            let newest = backups.iter().map(|b| b.id.clone()).max().unwrap();
            prop_assert!(p.keep_backups.contains(&newest));
            let kept_wal: HashSet<String> = names(&wal).into_iter().filter(|n| !p.delete_wal.contains(n)).collect();
            let has = |segno: u64| kept_wal.contains(&name(on(segno), segno));
            let cutoff = now.saturating_sub(window_hours);
            // Moments are hours; hour h is reached once segment h - 1 is replayed.
            for h in cutoff.max(1)..hours {
                let reachable = backups.iter().filter(|b| p.keep_backups.contains(&b.id)).any(|b| {
                    let s = SegmentId::parse(&b.start_wal, SEG).unwrap().segno;
                    s < h && (s..h).all(has)
                });
                let any_backup_by_then = backups.iter().any(|b| SegmentId::parse(&b.start_wal, SEG).unwrap().segno < h);
                prop_assert!(reachable || !any_backup_by_then, "hour {h} unreachable; plan {p:?}");
            }
        }

        /// Two clusters archive into one repository (a copy branched off and kept archiving
        /// while the origin kept writing), one of them perhaps failed over later, backups on
        /// every live line: every moment inside the window, on every timeline that has WAL,
        /// that a backup could restore before the plan, a kept backup restores after it
        /// through kept WAL. The newest backup stays, history files stay.
        #[test]
        fn every_moment_on_every_line_stays_restorable_with_two_writers(
            hours in 20u64..160,
            copy_frac in 0.05f64..0.9,
            failover in proptest::option::of((0.0f64..1.0, 1u32..3, 0u64..3)),
            picks in proptest::collection::btree_set((0usize..3, 0u64..160), 1..14),
            now_extra in 0u64..200,
            window_hours in 1u64..250,
        ) {
            let copy_at = ((hours as f64 * copy_frac) as u64).clamp(1, hours - 3);
            let failover = failover.map(|(f, p, tail)| {
                let lo = copy_at + 1;
                (lo + ((hours - 2 - lo) as f64 * f) as u64, p, tail)
            });
            let (wal, hist, live) = split_world(hours, copy_at, failover);
            let segs: HashSet<(u32, u64)> = wal
                .iter()
                .filter_map(|o| match WalFile::parse_stored(o.name.rsplit('/').next().unwrap(), SEG).unwrap() {
                    WalFile::Segment(s) => Some((s.tli, s.segno)),
                    _ => None,
                })
                .collect();
            // A backup at hour s on a live line is on the timeline that line had then.
            let mut backups: Vec<BackupInfo> = Vec::new();
            for &(line, s) in &picks {
                let leaf = live[line % live.len()];
                if s + 1 >= hours {
                    continue;
                }
                let tli = crate::pg::history::timeline_of(Lsn(s * SEG + 40), &hist[&leaf], leaf);
                let mut b = backup(tli, s);
                b.id = format!("b{s:04}-{tli}");
                if !backups.iter().any(|o| o.id == b.id) {
                    backups.push(b);
                }
            }
            prop_assume!(!backups.is_empty());
            let now = hours + now_extra;
            let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
            let p = plan(&cat, at(now), Duration::from_secs(window_hours * HOUR)).unwrap();
            let newest = backups.iter().max_by_key(|b| (b.finished(), b.id.clone())).unwrap();
            prop_assert!(p.keep_backups.contains(&newest.id));
            prop_assert!(!p.delete_wal.iter().any(|n| n.ends_with(".history")));
            let kept_segs: HashSet<(u32, u64)> = segs
                .iter()
                .copied()
                .filter(|&(t, s)| !p.delete_wal.contains(&name(t, s)))
                .collect();
            let all: Vec<&BackupInfo> = backups.iter().collect();
            let kept: Vec<&BackupInfo> = backups.iter().filter(|b| p.keep_backups.contains(&b.id)).collect();
            let cutoff = now.saturating_sub(window_hours);
            for &(tli, s) in &segs {
                let h = s + 1;
                if h < cutoff {
                    continue;
                }
                if restorable(&all, &segs, &hist, tli, h) {
                    prop_assert!(
                        restorable(&kept, &kept_segs, &hist, tli, h),
                        "hour {h} on timeline {tli} no longer restorable; plan {p:?}"
                    );
                }
            }
        }
    }
}
