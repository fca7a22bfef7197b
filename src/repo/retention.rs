//! Retention, DESIGN.md §5 rule 4, as a pure function from the catalog, `now` and the window
//! to a delete plan. Keep every backup that finished inside the window, plus the newest one
//! that finished at or before its start (the anchor, which makes the window's first moment
//! restorable); keep the WAL each kept backup needs to reach the present along the timelines
//! that lead there, and its own WAL in any case. Everything else may go.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::catalog::{wal_route, BackupInfo, Leg};
use crate::pg::history::HistoryEntry;
use crate::pg::lsn::SegmentId;
use crate::pg::walfile::WalFile;

/// What the planner looks at: every complete backup and every object under `wal/`.
pub struct Catalog<'a> {
    pub backups: &'a [BackupInfo],
    pub wal: &'a [String],
    /// The history of each timeline that has a history file.
    pub histories: &'a BTreeMap<u32, Vec<HistoryEntry>>,
    pub seg_size: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The newest backup that finished at or before the window's start, if any.
    pub anchor: Option<String>,
    pub keep_backups: Vec<String>,
    pub delete_backups: Vec<String>,
    pub keep_wal: usize,
    /// Object names under `wal/`, oldest first.
    pub delete_wal: Vec<String>,
    /// The timeline that leads to the present.
    pub present: u32,
}

/// Plan what to delete. An error means the catalog is inconsistent and nothing may go.
pub fn plan(cat: &Catalog, now: SystemTime, window: Duration) -> Result<Plan, String> {
    let seg = cat.seg_size;
    let mut backups: Vec<(&BackupInfo, SystemTime)> = Vec::new();
    for b in cat.backups {
        let done =
            b.finished().ok_or_else(|| format!("backup {}: unreadable finish time {:?}", b.id, b.finished_at))?;
        backups.push((b, done));
    }
    backups.sort_by_key(|(b, done)| (*done, b.id.clone()));
    let mut wal = Vec::new();
    for name in cat.wal {
        let file = name.rsplit('/').next().unwrap_or_default();
        let kind = WalFile::parse_stored(file, seg).map_err(|e| format!("{name}: {e}"))?;
        wal.push((name, kind));
    }
    let present =
        wal.iter().map(|(_, k)| k.timeline()).chain(backups.iter().map(|(b, _)| b.timeline)).max().unwrap_or(1);
    let mut out = Plan { present, ..Plan::default() };
    if backups.is_empty() {
        // WAL without a backup restores nothing, but deleting it helps nobody either.
        out.keep_wal = wal.len();
        return Ok(out);
    }
    let cutoff = now.checked_sub(window).unwrap_or(SystemTime::UNIX_EPOCH);
    let anchor = backups.iter().rposition(|(_, done)| *done <= cutoff).unwrap_or(0);
    out.anchor = backups.get(anchor).filter(|(_, d)| *d <= cutoff).map(|(b, _)| b.id.clone());
    let history = match cat.histories.get(&present) {
        Some(h) => h.as_slice(),
        None if present == 1 => &[],
        None => return Err(format!("timeline {present} has no history file: cannot tell which WAL leads to it")),
    };
    let mut keep: Vec<Leg> = Vec::new();
    for (i, (b, _)) in backups.iter().enumerate() {
        if i < anchor {
            out.delete_backups.push(b.id.clone());
            continue;
        }
        out.keep_backups.push(b.id.clone());
        let start = SegmentId::parse(&b.start_wal, seg).map_err(|e| format!("backup {}: {e}", b.id))?;
        let end = SegmentId::parse(&b.end_wal, seg).map_err(|e| format!("backup {}: {e}", b.id))?;
        let start_lsn = b.start_lsn.parse().map_err(|e| format!("backup {}: {e}", b.id))?;
        // Its own WAL, whatever timeline it is on.
        keep.push(Leg { tli: start.tli, first: start.segno, last: Some(end.segno.max(start.segno)) });
        keep.push(Leg { tli: end.tli, first: end.segno, last: Some(end.segno) });
        // And on to the present, when its timeline leads there.
        if let Ok(route) = wal_route(start, start_lsn, present, history, seg) {
            keep.extend(route);
        }
    }
    let kept = |s: &SegmentId| {
        keep.iter().any(|l| l.tli == s.tli && s.segno >= l.first && l.last.is_none_or(|z| s.segno <= z))
    };
    for (name, kind) in wal {
        let needed = kind.segment().is_none_or(|s| kept(&s));
        if needed {
            out.keep_wal += 1;
        } else {
            out.delete_wal.push(name.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pg::lsn::Lsn;
    use proptest::prelude::*;

    const SEG: u64 = 16 << 20;
    const HOUR: u64 = 3600;
    const T0: u64 = 1_800_000_000;

    fn at(hours: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + hours * HOUR)
    }

    /// A backup of segment `segno` on `tli`, finished at hour `segno` + 1.
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
        }
    }

    fn name(tli: u32, segno: u64) -> String {
        format!("wal/{tli:08X}/{}", SegmentId { tli, segno }.file_name(SEG))
    }

    /// One segment per hour on timeline 1; with `switch`, timeline 2 branches off in the
    /// middle of that segment (the old timeline's copy of it is a `.partial`), and the old
    /// primary also wrote two more segments on timeline 1 that lead nowhere.
    fn world(hours: u64, switch: Option<u64>) -> (Vec<String>, BTreeMap<u32, Vec<HistoryEntry>>) {
        let mut wal = Vec::new();
        let mut hist = BTreeMap::new();
        match switch {
            None => wal.extend((0..hours).map(|s| name(1, s))),
            Some(k) => {
                wal.extend((0..k).map(|s| name(1, s)));
                wal.push(format!("{}.partial", name(1, k)));
                wal.extend((k + 1..k + 3).map(|s| name(1, s)));
                wal.extend((k..hours).map(|s| name(2, s)));
                wal.push("wal/00000002.history".into());
                hist.insert(
                    2,
                    vec![HistoryEntry { parent_tli: 1, switchpoint: Lsn(k * SEG + 4096), reason: String::new() }],
                );
            }
        }
        (wal, hist)
    }

    #[test]
    fn twelve_days_with_a_promotion() {
        // Daily backups at hours 0, 24, ..., 264; a promotion at hour 200; it is now hour 288
        // (day 12) and the window is 10 days (cutoff at hour 48).
        let (wal, hist) = world(288, Some(200));
        let backups: Vec<BackupInfo> =
            (0..12).map(|d| d * 24).map(|s| backup(if s >= 200 { 2 } else { 1 }, s)).collect();
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(288), Duration::from_secs(10 * 24 * HOUR)).unwrap();
        // Hour 48 is the cutoff: b0048 finished at 49, so the anchor is b0024 (finished 25).
        assert_eq!(p.anchor.as_deref(), Some("b0024"));
        assert_eq!(p.delete_backups, vec!["b0000"]);
        assert_eq!(p.keep_backups.len(), 11);
        // WAL before the anchor goes, and so does timeline 1 from the branch point on (its
        // partial segment and what the old primary wrote after it lead nowhere: recovery
        // reads segment 200 from timeline 2). History files always stay.
        let mut expect: Vec<String> = (0..24).map(|s| name(1, s)).collect();
        expect.extend([format!("{}.partial", name(1, 200)), name(1, 201), name(1, 202)]);
        assert_eq!(p.delete_wal, expect);
        assert!(!p.delete_wal.iter().any(|n| n.ends_with(".history")));
        assert_eq!(p.present, 2);
    }

    #[test]
    fn nothing_goes_while_everything_is_inside_the_window() {
        let (wal, hist) = world(48, None);
        let backups = vec![backup(1, 5), backup(1, 30)];
        let cat = Catalog { backups: &backups, wal: &wal, histories: &hist, seg_size: SEG };
        let p = plan(&cat, at(48), Duration::from_secs(10 * 24 * HOUR)).unwrap();
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
        let mut bad = backup(1, 5);
        bad.finished_at = "yesterday".into();
        let (wal, hist) = world(30, None);
        let cat = Catalog { backups: std::slice::from_ref(&bad), wal: &wal, histories: &hist, seg_size: SEG };
        assert!(plan(&cat, at(300), Duration::from_secs(HOUR)).is_err());
        let cat = Catalog { backups: &[], wal: &wal, histories: &hist, seg_size: SEG };
        assert!(plan(&cat, at(300), Duration::from_secs(HOUR)).unwrap().delete_wal.is_empty());
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
            let kept_wal: std::collections::HashSet<&String> = wal.iter().filter(|n| !p.delete_wal.contains(n)).collect();
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
    }
}
