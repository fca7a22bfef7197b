//! Which timelines in a repository are live, and whether two clusters archive into it (pure).
//!
//! Every history file records a branch point: timeline `child` left `parent` at `switchpoint`.
//! After a normal failover the parent stops: the old primary's last WAL (a `.partial` of the
//! switch segment, perhaps a few segments it wrote before it went down or was fenced) arrives
//! shortly after the child's first upload. When the parent keeps receiving WAL well past the
//! switch, or long after the child appeared, two clusters write into one repository (say a
//! restored copy that promoted and kept archiving while production went on): a *split*. Then
//! "the newest timeline" is no longer the cluster that is running, and whoever restores must
//! say which line they mean.
//!
//! The input is the listing of `wal/` with the store's upload times (`Store::list_meta`) and
//! the parsed history files (`catalog::load_history`); nothing here reads or writes.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use crate::pg::history::HistoryEntry;
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::walfile::WalFile;
use crate::store::ObjectInfo;

/// A normal failover's old timeline may hold this many segments past the switch segment: WAL
/// the old primary wrote (and archived) that the new one never received.
pub const TAIL_SEGMENTS: u64 = 4;

/// ... and upload WAL at or past the switch segment up to this long after the new timeline's
/// first object (its history file, usually): archiving what was pending when it stopped.
/// Measured between upload times in the same store, so host clocks do not enter.
pub const TAIL_GRACE: Duration = Duration::from_secs(5 * 60);

/// The objects one timeline has in a stretch of segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub first: SegmentId,
    pub last: SegmentId,
    /// The newest upload among them.
    pub last_upload: SystemTime,
}

/// One branch point, from a history file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Branch {
    pub parent_tli: u32,
    pub child_tli: u32,
    /// The first position that belongs to the child.
    pub switchpoint: Lsn,
    /// The parent's objects from the switch segment on (what it received after the branch).
    pub parent_after: Option<Range>,
    /// The child's own objects.
    pub child: Option<Range>,
    /// The child's first upload: its history file or its first WAL, whichever came first.
    pub child_since: Option<SystemTime>,
    /// The parent went on beyond `TAIL_SEGMENTS` or `TAIL_GRACE`: a second writer.
    pub split: bool,
}

/// Two clusters archived into one repository: `parent` kept receiving WAL after `child`
/// branched off it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Split {
    pub parent_tli: u32,
    pub child_tli: u32,
    pub switchpoint: Lsn,
    /// The parent's objects from the switch segment on.
    pub parent: Range,
    /// The child's own objects (`None` while it has stored only its history file).
    pub child: Option<Range>,
}

/// A timeline that ends a line of history: no failover left it. Whether it still receives
/// WAL now is the caller's judgement from `objects.last_upload` and the clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Live {
    pub tli: u32,
    /// Its own WAL objects (`None` while it has stored only its history file).
    pub objects: Option<Range>,
}

/// The repository's timelines: every branch point and the live ends of its lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Timelines {
    /// By child timeline.
    pub branches: Vec<Branch>,
    /// By timeline.
    pub live: Vec<Live>,
}

impl Timelines {
    /// The branch points where two clusters went on writing.
    pub fn splits(&self) -> Vec<Split> {
        self.branches
            .iter()
            .filter(|b| b.split)
            .filter_map(|b| {
                Some(Split {
                    parent_tli: b.parent_tli,
                    child_tli: b.child_tli,
                    switchpoint: b.switchpoint,
                    parent: b.parent_after?,
                    child: b.child,
                })
            })
            .collect()
    }
}

fn widen(r: &mut Option<Range>, s: SegmentId, at: SystemTime) {
    match r {
        None => *r = Some(Range { first: s, last: s, last_upload: at }),
        Some(r) => {
            r.first = r.first.min(s);
            r.last = r.last.max(s);
            r.last_upload = r.last_upload.max(at);
        }
    }
}

/// Classify every branch point and find the live timelines. `wal` is the listing of `wal/`
/// (names as stored, `wal/<tli>/<file>`); `histories` holds the parsed history of each
/// timeline that has one. An unparsable name or an empty history is an error: nothing is
/// skipped silently.
pub fn analyze(
    wal: &[ObjectInfo],
    histories: &BTreeMap<u32, Vec<HistoryEntry>>,
    seg_size: u64,
) -> Result<Timelines, String> {
    // Per timeline: its segment-bearing objects, and when its history file was stored.
    let mut objects: BTreeMap<u32, Vec<(SegmentId, SystemTime)>> = BTreeMap::new();
    let mut history_upload: BTreeMap<u32, SystemTime> = BTreeMap::new();
    for o in wal {
        let file = o.name.rsplit('/').next().unwrap_or_default();
        match WalFile::parse_stored(file, seg_size).map_err(|e| format!("{}: {e}", o.name))? {
            WalFile::History(t) => {
                history_upload.insert(t, o.modified);
            }
            other => {
                if let Some(s) = other.segment() {
                    objects.entry(s.tli).or_default().push((s, o.modified));
                }
            }
        }
    }
    let mut out = Timelines::default();
    for (&child, history) in histories {
        let last = history.last().ok_or_else(|| format!("timeline {child}'s history is empty"))?;
        let (parent, switchpoint) = (last.parent_tli, last.switchpoint);
        let switch_seg = switchpoint.0 / seg_size;
        let mut child_range = None;
        let mut child_since = history_upload.get(&child).copied();
        for &(s, at) in objects.get(&child).map(Vec::as_slice).unwrap_or(&[]) {
            widen(&mut child_range, s, at);
            child_since = Some(child_since.map_or(at, |c| c.min(at)));
        }
        let mut parent_after = None;
        let mut split = false;
        for &(s, at) in objects.get(&parent).map(Vec::as_slice).unwrap_or(&[]) {
            if s.segno < switch_seg {
                continue;
            }
            widen(&mut parent_after, s, at);
            let too_far = s.segno > switch_seg + TAIL_SEGMENTS;
            let too_late = child_since.is_some_and(|c| at > c + TAIL_GRACE);
            split |= too_far || too_late;
        }
        out.branches.push(Branch {
            parent_tli: parent,
            child_tli: child,
            switchpoint,
            parent_after,
            child: child_range,
            child_since,
            split,
        });
    }
    // A timeline a normal failover left is over; every other one that has anything stored
    // ends a line, including a split's parent, which went on.
    let ended: Vec<u32> = out.branches.iter().filter(|b| !b.split).map(|b| b.parent_tli).collect();
    let known = objects.keys().chain(history_upload.keys()).chain(histories.keys());
    let mut tlis: Vec<u32> = known.copied().filter(|t| !ended.contains(t)).collect();
    tlis.sort_unstable();
    tlis.dedup();
    for tli in tlis {
        let mut range = None;
        for &(s, at) in objects.get(&tli).map(Vec::as_slice).unwrap_or(&[]) {
            widen(&mut range, s, at);
        }
        out.live.push(Live { tli, objects: range });
    }
    Ok(out)
}

/// The split branch points alone (see `analyze`).
pub fn splits(
    wal: &[ObjectInfo],
    histories: &BTreeMap<u32, Vec<HistoryEntry>>,
    seg_size: u64,
) -> Result<Vec<Split>, String> {
    Ok(analyze(wal, histories, seg_size)?.splits())
}

/// The live ends of the repository's lines of history (see `analyze`): one after ordinary
/// failovers, several when two clusters write into it.
pub fn live_timelines(
    wal: &[ObjectInfo],
    histories: &BTreeMap<u32, Vec<HistoryEntry>>,
    seg_size: u64,
) -> Result<Vec<Live>, String> {
    Ok(analyze(wal, histories, seg_size)?.live)
}

fn describe(tli: u32, r: &Option<Range>, seg_size: u64) -> String {
    match r {
        Some(r) => format!(
            "timeline {tli} ({} .. {}, last upload {})",
            r.first.file_name(seg_size),
            r.last.file_name(seg_size),
            humantime::format_rfc3339_seconds(r.last_upload)
        ),
        None => format!("timeline {tli} (its history file only)"),
    }
}

/// The timeline whose line to follow. The server's own timeline (from `IDENTIFY_SYSTEM`)
/// decides when known. Otherwise the single live timeline; `Ok(None)` when the repository
/// has none. Several live timelines (a split, or two failovers from one parent) are an
/// error that names the branches: restore without `--target-timeline` refuses to guess.
pub fn choose_timeline(t: &Timelines, server_tli: Option<u32>, seg_size: u64) -> Result<Option<u32>, String> {
    if let Some(tli) = server_tli {
        return Ok(Some(tli));
    }
    match t.live.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.tli)),
        several => {
            let mut what: Vec<String> = t
                .splits()
                .iter()
                .map(|s| {
                    format!(
                        "{} went on after {} branched off it at {}",
                        describe(s.parent_tli, &Some(s.parent), seg_size),
                        describe(s.child_tli, &s.child, seg_size),
                        s.switchpoint
                    )
                })
                .collect();
            if what.is_empty() {
                what = several.iter().map(|l| describe(l.tli, &l.objects, seg_size)).collect();
                what = vec![format!("live timelines: {}", what.join(", "))];
            }
            let tlis: Vec<String> = several.iter().map(|l| l.tli.to_string()).collect();
            Err(format!(
                "two clusters archive into this repository: {}; restore without --target-timeline refuses to guess \
                 (give --target-timeline {})",
                what.join("; "),
                tlis.join(" or ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEG: u64 = 16 << 20;
    const T0: u64 = 1_800_000_000;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(T0 + secs)
    }

    fn seg(tli: u32, segno: u64, secs: u64) -> ObjectInfo {
        let file = SegmentId { tli, segno }.file_name(SEG);
        ObjectInfo { name: format!("wal/{tli:08X}/{file}"), size: SEG, modified: at(secs) }
    }

    fn with(o: ObjectInfo, suffix: &str) -> ObjectInfo {
        ObjectInfo { name: format!("{}{suffix}", o.name), ..o }
    }

    fn history(tli: u32, secs: u64) -> ObjectInfo {
        ObjectInfo { name: format!("wal/{tli:08X}.history"), size: 40, modified: at(secs) }
    }

    /// `tli` branched off the line `(parent, segment)…` in the middle of each segment.
    fn hist(line: &[(u32, u64)]) -> Vec<HistoryEntry> {
        line.iter()
            .map(|&(p, s)| HistoryEntry { parent_tli: p, switchpoint: Lsn(s * SEG + 4096), reason: String::new() })
            .collect()
    }

    /// Timeline 1 writes one segment a minute up to segment 10, where timeline 2 branches
    /// off (history at minute 10); timeline 2 writes segments 10..20.
    fn failover() -> (Vec<ObjectInfo>, BTreeMap<u32, Vec<HistoryEntry>>) {
        let mut wal: Vec<ObjectInfo> = (0..10).map(|s| seg(1, s, s * 60)).collect();
        wal.push(history(2, 600));
        wal.extend((10..20).map(|s| seg(2, s, s * 60 + 30)));
        (wal, BTreeMap::from([(2, hist(&[(1, 10)]))]))
    }

    fn tlis(live: &[Live]) -> Vec<u32> {
        live.iter().map(|l| l.tli).collect()
    }

    #[test]
    fn a_failover_with_a_short_tail_is_no_split() {
        let (mut wal, h) = failover();
        // The old primary's last segment as `.partial`, and up to TAIL_SEGMENTS more, within
        // TAIL_GRACE of the new timeline's history file.
        wal.push(with(seg(1, 10, 601), ".partial"));
        wal.extend((11..=10 + TAIL_SEGMENTS).map(|s| seg(1, s, 600 + TAIL_GRACE.as_secs())));
        let t = analyze(&wal, &h, SEG).unwrap();
        assert_eq!(t.branches.len(), 1);
        let b = &t.branches[0];
        assert!(!b.split, "{b:?}");
        assert_eq!(b.parent_after.unwrap().last, SegmentId { tli: 1, segno: 14 });
        assert_eq!(b.child_since, Some(at(600)));
        assert_eq!(tlis(&t.live), vec![2]);
        assert_eq!(choose_timeline(&t, None, SEG), Ok(Some(2)));
        assert!(t.splits().is_empty());
    }

    #[test]
    fn a_copy_that_archives_while_production_writes_is_a_split() {
        // The case: a copy promoted onto timeline 2 at segment 10 and archived a few
        // segments; production went on writing timeline 1 for hours.
        let (mut wal, h) = failover();
        wal.extend((10..200).map(|s| seg(1, s, s * 60)));
        let t = analyze(&wal, &h, SEG).unwrap();
        let splits = t.splits();
        assert_eq!(splits.len(), 1);
        let s = &splits[0];
        assert_eq!((s.parent_tli, s.child_tli, s.switchpoint), (1, 2, Lsn(10 * SEG + 4096)));
        assert_eq!(s.parent.first, SegmentId { tli: 1, segno: 10 });
        assert_eq!(s.parent.last, SegmentId { tli: 1, segno: 199 });
        assert_eq!(s.parent.last_upload, at(199 * 60));
        let c = s.child.unwrap();
        assert_eq!((c.first.segno, c.last.segno, c.last_upload), (10, 19, at(19 * 60 + 30)));
        assert_eq!(tlis(&t.live), vec![1, 2]);
        let e = choose_timeline(&t, None, SEG).unwrap_err();
        assert!(e.contains("timeline 1 (00000001000000000000000A .. 0000000100000000000000C7"), "{e}");
        assert!(e.contains("timeline 2 (00000002000000000000000A .. 000000020000000000000013"), "{e}");
        assert!(e.contains("refuses to guess"), "{e}");
        // The server says which line it is on.
        assert_eq!(choose_timeline(&t, Some(1), SEG), Ok(Some(1)));
        assert_eq!(choose_timeline(&t, Some(2), SEG), Ok(Some(2)));
    }

    #[test]
    fn either_tolerance_exceeded_is_a_split() {
        // One segment too many, uploaded at once.
        let (mut wal, h) = failover();
        wal.extend((10..=11 + TAIL_SEGMENTS).map(|s| seg(1, s, 601)));
        assert_eq!(splits(&wal, &h, SEG).unwrap().len(), 1);
        // One segment, a second too late: a cluster that kept writing slowly.
        let (mut wal, h) = failover();
        wal.push(seg(1, 11, 601 + TAIL_GRACE.as_secs()));
        assert_eq!(splits(&wal, &h, SEG).unwrap().len(), 1);
        // Streaming into the switch segment itself, long after the branch.
        let (mut wal, h) = failover();
        wal.push(with(seg(1, 10, 3600), ".stream"));
        let t = analyze(&wal, &h, SEG).unwrap();
        assert_eq!(t.splits()[0].parent.last, SegmentId { tli: 1, segno: 10 });
        // Segments before the switch, uploaded late (a backlog), are no sign of anything.
        let (mut wal, h) = failover();
        wal.push(seg(1, 9, 7200));
        assert!(splits(&wal, &h, SEG).unwrap().is_empty());
    }

    #[test]
    fn lines_of_history() {
        // 1 -> 2 -> 3, normal failovers: one line, ending at 3.
        let (mut wal, mut h) = failover();
        wal.push(history(3, 20 * 60));
        wal.extend((20..25).map(|s| seg(3, s, s * 60 + 30)));
        h.insert(3, hist(&[(1, 10), (2, 20)]));
        let t = analyze(&wal, &h, SEG).unwrap();
        assert_eq!(tlis(&t.live), vec![3]);
        assert!(t.splits().is_empty());
        // Just promoted: only the history file so far.
        let (mut wal, h) = failover();
        wal.truncate(11);
        let t = analyze(&wal, &h, SEG).unwrap();
        assert_eq!(t.live, vec![Live { tli: 2, objects: None }]);
        // A split's parent that later failed over normally: its line goes on as timeline 3.
        let (mut wal, mut h) = failover();
        wal.extend((10..30).map(|s| seg(1, s, s * 60)));
        wal.push(history(3, 30 * 60));
        wal.extend((30..40).map(|s| seg(3, s, s * 60 + 30)));
        h.insert(3, hist(&[(1, 30)]));
        let t = analyze(&wal, &h, SEG).unwrap();
        assert_eq!(tlis(&t.live), vec![2, 3]);
        assert_eq!(t.splits().iter().map(|s| (s.parent_tli, s.child_tli)).collect::<Vec<_>>(), vec![(1, 2)]);
        // Two standbys promoted at the same point: no parent went on, but two lines live.
        let (mut wal, mut h) = failover();
        wal.push(history(3, 610));
        wal.extend((10..15).map(|s| seg(3, s, s * 60 + 40)));
        h.insert(3, hist(&[(1, 10)]));
        let t = analyze(&wal, &h, SEG).unwrap();
        assert!(t.splits().is_empty());
        assert_eq!(tlis(&t.live), vec![2, 3]);
        let e = choose_timeline(&t, None, SEG).unwrap_err();
        assert!(e.contains("live timelines: timeline 2") && e.contains("timeline 3 ("), "{e}");
        // Nothing stored at all.
        assert_eq!(choose_timeline(&Timelines::default(), None, SEG), Ok(None));
    }

    #[test]
    fn nothing_is_skipped() {
        let (mut wal, h) = failover();
        wal.push(ObjectInfo { name: "wal/00000001/junk".into(), size: 1, modified: at(0) });
        assert!(analyze(&wal, &h, SEG).unwrap_err().contains("wal/00000001/junk"));
        let (wal, _) = failover();
        let empty = BTreeMap::from([(2, vec![])]);
        assert!(analyze(&wal, &empty, SEG).unwrap_err().contains("history is empty"));
    }

    proptest! {
        /// A chain of failovers, each old timeline leaving a tail within both tolerances, is
        /// one line with no split; a parent that writes past either tolerance is a split.
        #[test]
        fn tails_within_the_tolerances_are_failovers_and_beyond_them_splits(
            steps in proptest::collection::vec((2u64..40, 0..=TAIL_SEGMENTS, 0..=TAIL_GRACE.as_secs()), 1..5),
            beyond in proptest::option::of((0usize..5, any::<bool>(), 1u64..50)),
        ) {
            // Timeline i + 1 branches off timeline i after steps[i].0 segments of its own.
            let mut wal = Vec::new();
            let mut histories = BTreeMap::new();
            let mut line: Vec<(u32, u64)> = Vec::new();
            let mut first = 0;
            let beyond = beyond.map(|(i, far, by)| (i % steps.len(), far, by));
            for (i, &(len, tail, delay)) in steps.iter().enumerate() {
                let (tli, switch) = (i as u32 + 1, first + len);
                let child_since = switch * 60;
                wal.extend((first..switch).map(|s| seg(tli, s, s * 60)));
                wal.push(with(seg(tli, switch, child_since + delay), ".partial"));
                wal.extend((switch + 1..=switch + tail).map(|s| seg(tli, s, child_since + delay)));
                match beyond {
                    Some((j, true, by)) if j == i => wal.push(seg(tli, switch + TAIL_SEGMENTS + by, child_since)),
                    Some((j, false, by)) if j == i => {
                        wal.push(seg(tli, switch + 1, child_since + TAIL_GRACE.as_secs() + by))
                    }
                    _ => {}
                }
                line.push((tli, switch));
                histories.insert(tli + 1, hist(&line));
                wal.push(history(tli + 1, child_since));
                first = switch;
            }
            let last = steps.len() as u32 + 1;
            wal.extend((first..first + 3).map(|s| seg(last, s, s * 60 + 1)));
            let t = analyze(&wal, &histories, SEG).unwrap();
            let split: Vec<(u32, u32)> = t.splits().iter().map(|s| (s.parent_tli, s.child_tli)).collect();
            match beyond {
                None => {
                    prop_assert!(split.is_empty(), "{t:?}");
                    prop_assert_eq!(tlis(&t.live), vec![last]);
                    prop_assert_eq!(choose_timeline(&t, None, SEG), Ok(Some(last)));
                }
                Some((j, _, _)) => {
                    let p = j as u32 + 1;
                    prop_assert_eq!(split, vec![(p, p + 1)]);
                    prop_assert_eq!(tlis(&t.live), vec![p, last]);
                    prop_assert!(choose_timeline(&t, None, SEG).is_err());
                    prop_assert_eq!(choose_timeline(&t, Some(p), SEG), Ok(Some(p)));
                }
            }
        }
    }
}
