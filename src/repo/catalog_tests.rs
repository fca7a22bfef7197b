use super::*;

#[test]
fn where_the_wal_on_a_line_of_history_ends() {
    let seg = 16u64 << 20;
    let names: Vec<String> = [
        "wal/00000001/000000010000000000000003",
        "wal/00000001/000000010000000000000004",
        "wal/00000001/000000010000000000000009", // old timeline beyond the switch
        "wal/00000002/000000020000000000000005.stream",
        "wal/00000003/000000030000000000000007", // a fork the server does not descend from
        "wal/00000002.history",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let h2 = parse_history("1\t0/5800000\tx\n").unwrap();
    // Timeline 1 beyond the switch does not count; timeline 2's partial copy counts from
    // its start.
    assert_eq!(wal_end_on_history(&names, seg, 2, &h2), Some(Lsn(5 * seg)));
    // The segment holding the switch counts up to the switch.
    let mut more = names.clone();
    more.push("wal/00000001/000000010000000000000005".into());
    assert_eq!(wal_end_on_history(&more, seg, 2, &h2), Some(Lsn(0x5800000)));
    assert_eq!(wal_end_on_history(&names, seg, 1, &[]), Some(Lsn(10 * seg)));
    assert_eq!(wal_end_on_history(&names[5..], seg, 1, &[]), None);
}

fn info(id: &str, finished: &str, end: &str) -> BackupInfo {
    BackupInfo {
        id: id.into(),
        label: String::new(),
        system_identifier: "1".into(),
        pg_version: "15".into(),
        timescaledb_version: None,
        timeline: 1,
        start_lsn: "0/1000000".into(),
        end_lsn: end.into(),
        start_wal: String::new(),
        end_wal: String::new(),
        started_at: finished.into(),
        finished_at: finished.into(),
        duration_seconds: 1.0,
        tablespaces: vec![],
        objects: vec![],
        parent: None,
        increment: None,
    }
}

#[test]
fn coverage_and_gaps() {
    let seg = 16 << 20;
    let names: Vec<String> = [
        "wal/00000001/000000010000000000000002",
        "wal/00000001/000000010000000000000003",
        "wal/00000001/000000010000000000000005",
        "wal/00000002.history",
        "wal/00000002/000000020000000000000005",
        "wal/00000001/000000010000000000000005.partial",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cov = wal_coverage(&names, seg);
    assert_eq!(cov[&1], vec![(2, 3), (5, 5)]);
    assert_eq!(cov[&2], vec![(5, 5)]);
    assert_eq!(first_missing(&cov, 1, 2, 3), None);
    assert_eq!(first_missing(&cov, 1, 2, 5), Some(4));
    assert_eq!(first_missing(&cov, 1, 5, 6), Some(6));
    assert_eq!(first_missing(&cov, 1, 1, 2), Some(1));
    assert_eq!(first_missing(&cov, 3, 1, 1), Some(1));
}

#[test]
fn chooses_newest_before_target() {
    let b = vec![info("a", "2026-11-20T00:00:00Z", "0/3000000"), info("b", "2026-11-22T00:00:00Z", "0/9000000")];
    assert_eq!(choose(&b, &Target::Latest).unwrap().id, "b");
    let t = |s: &str| Target::Time(humantime::parse_rfc3339(s).unwrap());
    assert_eq!(choose(&b, &t("2026-11-21T00:00:00Z")).unwrap().id, "a");
    assert_eq!(choose(&b, &t("2026-11-22T00:00:00.5Z")).unwrap().id, "b");
    assert_eq!(choose(&b, &t("2026-11-21T23:59:59.999Z")).unwrap().id, "a");
    assert!(choose(&b, &t("2026-11-19T00:00:00Z")).is_none());
    assert_eq!(choose(&b, &Target::Lsn("0/5000000".parse().unwrap())).unwrap().id, "a");
}

fn hist(entries: &[(u32, u64)]) -> Vec<HistoryEntry> {
    entries.iter().map(|&(t, l)| HistoryEntry { parent_tli: t, switchpoint: Lsn(l), reason: String::new() }).collect()
}

#[test]
fn routes_across_promotions() {
    let seg = 16u64 << 20;
    let end = SegmentId { tli: 1, segno: 3 };
    // Same timeline: open-ended from the backup's end.
    assert_eq!(wal_route(end, Lsn(3 * seg + 100), 1, &[], seg).unwrap(), vec![Leg { tli: 1, first: 3, last: None }]);
    // Timeline 3 = 1 until segment 6 (mid-segment), 2 until segment 9, then 3.
    let h = hist(&[(1, 6 * seg + 0x28), (2, 9 * seg)]);
    assert_eq!(
        wal_route(end, Lsn(3 * seg + 100), 3, &h, seg).unwrap(),
        vec![
            Leg { tli: 1, first: 3, last: Some(5) },
            Leg { tli: 2, first: 6, last: Some(8) },
            Leg { tli: 3, first: 9, last: None }
        ]
    );
    // A switch inside the backup's last segment: everything after comes from the new timeline.
    let h = hist(&[(1, 3 * seg + 200)]);
    assert_eq!(wal_route(end, Lsn(3 * seg + 100), 2, &h, seg).unwrap(), vec![Leg { tli: 2, first: 3, last: None }]);
    // The backup ran past the branch point, or on a timeline outside the history.
    assert!(wal_route(end, Lsn(3 * seg + 300), 2, &h, seg).unwrap_err().contains("after timeline 2"));
    assert!(wal_route(SegmentId { tli: 5, segno: 3 }, Lsn(0), 2, &h, seg).is_err());
}

#[test]
fn reach_follows_the_route() {
    let seg = 16u64 << 20;
    let names = |v: &[(u32, u64)]| -> Vec<String> {
        v.iter().map(|&(t, n)| format!("wal/{t:08X}/{}", SegmentId { tli: t, segno: n }.file_name(seg))).collect()
    };
    let route = vec![Leg { tli: 1, first: 3, last: Some(5) }, Leg { tli: 2, first: 6, last: None }];
    let full = wal_coverage(&names(&[(1, 3), (1, 4), (1, 5), (1, 6), (2, 6), (2, 7)]), seg);
    assert_eq!(reach(&route, &full), Reach { last: Some(SegmentId { tli: 2, segno: 7 }), gap: None });
    let gap = wal_coverage(&names(&[(1, 3), (1, 5), (2, 6)]), seg);
    assert_eq!(
        reach(&route, &gap),
        Reach { last: Some(SegmentId { tli: 1, segno: 3 }), gap: Some(SegmentId { tli: 1, segno: 4 }) }
    );
    let none_after = wal_coverage(&names(&[(1, 3), (1, 4), (1, 5)]), seg);
    assert_eq!(reach(&route, &none_after), Reach { last: Some(SegmentId { tli: 1, segno: 5 }), gap: None });
}

#[test]
fn target_timelines() {
    assert_eq!(target_timeline(None, 1, &[2, 3, 5]), Ok(3));
    assert_eq!(target_timeline(Some("current"), 2, &[2, 3]), Ok(2));
    assert_eq!(target_timeline(Some("5"), 1, &[]), Ok(5));
    assert!(target_timeline(Some("newest"), 1, &[]).is_err());
    let names = vec!["wal/00000002.history".to_string(), "wal/00000001/000000010000000000000001".into()];
    assert_eq!(history_timelines(&names), vec![2]);
}

proptest::proptest! {
    /// Legs follow each other without overlap or hole, in segment order, ending open.
    #[test]
    fn routes_are_contiguous(end_seg in 0u64..50, switches in proptest::collection::vec(0u64..4000, 1..5)) {
        let seg = 1u64 << 24;
        let mut at = end_seg * seg + 10;
        let mut entries = Vec::new();
        for (i, step) in switches.iter().enumerate() {
            at += step * (seg / 16);
            entries.push((i as u32 + 1, at));
        }
        let target = entries.len() as u32 + 1;
        let route = wal_route(SegmentId { tli: 1, segno: end_seg }, Lsn(end_seg * seg + 10), target, &hist(&entries), seg).unwrap();
        proptest::prop_assert_eq!(route.first().unwrap().first, end_seg);
        proptest::prop_assert_eq!(route.last().unwrap().tli, target);
        proptest::prop_assert!(route.last().unwrap().last.is_none());
        for w in route.windows(2) {
            proptest::prop_assert!(w[0].tli < w[1].tli);
            proptest::prop_assert_eq!(w[0].last.unwrap() + 1, w[1].first);
        }
    }
}

#[test]
fn abandoned_backups_are_old_and_incomplete() {
    let t0 = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let day = std::time::Duration::from_secs(86400);
    let o = |name: &str, at: SystemTime| ObjectInfo { name: name.into(), size: 1, modified: at };
    let (a, b, c, d) = (
        "20200101T000000Z",
        "20200101T000001.000001Z-0a0b0c",
        "20200101T000001.000002Z-0a0b0c",
        "20200101T000002.000000Z-ffffff",
    );
    let listing = vec![
        o(&format!("backups/{a}/base.tar"), t0),
        o(&format!("backups/{a}/backup.json"), t0),
        o(&format!("backups/{b}/base.tar"), t0),
        o(&format!("backups/{b}/backup_manifest"), t0 + day),
        o(&format!("backups/{c}/base.tar"), t0),
        o(&format!("backups/{c}/16384.tar"), t0),
        // Only a staging leftover remains of this one.
        o(&format!("backups/{d}/base.tar#1"), t0),
        // Not a backup: never touched.
        o("backups/lease", t0),
        o("backups/notanid/base.tar", t0),
    ];
    let now = t0 + day + day / 2;
    let gone = abandoned_backups(&listing, now, day);
    assert_eq!(
        gone,
        vec![
            (c.to_string(), vec![format!("backups/{c}/base.tar"), format!("backups/{c}/16384.tar")]),
            (d.to_string(), vec![format!("backups/{d}/base.tar#1")]),
        ]
    );
    assert!(abandoned_backups(&listing, t0 + day / 2, day).is_empty());
}

#[test]
fn the_daemon_takes_incremental_backups_until_the_full_one_is_old_enough() {
    let day = std::time::Duration::from_secs(86_400);
    let now = humantime::parse_rfc3339("2026-11-20T00:00:00Z").unwrap();
    let full = info("f", "2026-11-15T00:00:00Z", "0/3000000");
    let mut i1 = info("i1", "2026-11-16T00:00:00Z", "0/5000000");
    i1.parent = Some("f".into());
    assert!(!incremental_due(&[], now, 7 * day), "nothing to build on");
    assert!(incremental_due(std::slice::from_ref(&full), now, 7 * day));
    assert!(incremental_due(&[full.clone(), i1.clone()], now, 7 * day), "the chain's full backup is 5 days old");
    assert!(!incremental_due(&[full.clone(), i1.clone()], now, 5 * day), "it is due again");
    assert!(!incremental_due(&[i1], now, 7 * day), "a chain whose full backup is gone starts anew");
}
