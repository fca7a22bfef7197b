use super::*;
use crate::pg::lsn::Lsn;

const SEG: u64 = 16 << 20;

fn backup(tli: u32, start: u64, end: u64) -> BackupInfo {
    let seg = |segno| SegmentId { tli, segno }.file_name(SEG);
    BackupInfo {
        id: format!("b{start}"),
        label: String::new(),
        system_identifier: "1".into(),
        pg_version: "15".into(),
        timescaledb_version: None,
        timeline: tli,
        start_lsn: Lsn(start * SEG + 40).to_string(),
        end_lsn: Lsn(end * SEG + 400).to_string(),
        start_wal: seg(start),
        end_wal: seg(end),
        started_at: "2026-11-26T00:00:00Z".into(),
        finished_at: "2026-11-26T00:01:00Z".into(),
        duration_seconds: 1.0,
        tablespaces: vec![],
        objects: vec![],
        parent: None,
        increment: None,
    }
}

fn cov(segs: &[(u32, u64)]) -> Coverage {
    let names: Vec<String> =
        segs.iter().map(|&(tli, segno)| layout::wal_object(&WalFile::Segment(SegmentId { tli, segno }), SEG)).collect();
    wal_coverage(&names, SEG)
}

fn entry(parent_tli: u32, at: u64) -> HistoryEntry {
    HistoryEntry { parent_tli, switchpoint: Lsn(at), reason: "no recovery target specified".into() }
}

#[test]
fn an_unbroken_chain_has_no_problems() {
    let c = cov(&[(1, 2), (1, 3), (1, 4), (1, 5)]);
    assert!(chain_problems(&[backup(1, 2, 3)], &[1], &BTreeMap::new(), &c, SEG).is_empty());
}

#[test]
fn a_gap_after_the_backup_is_named_once() {
    let c = cov(&[(1, 2), (1, 3), (1, 5), (1, 6)]);
    let p = chain_problems(&[backup(1, 2, 2), backup(1, 3, 3)], &[1], &BTreeMap::new(), &c, SEG);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].object, "wal/00000001/000000010000000000000004");
    assert!(p[0].problem.contains("gap") && p[0].problem.contains("b2"), "{p:?}");
}

#[test]
fn a_gap_inside_the_backup_makes_it_unrestorable() {
    let c = cov(&[(1, 2), (1, 4), (1, 5)]);
    let p = chain_problems(&[backup(1, 2, 4)], &[1], &BTreeMap::new(), &c, SEG);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].object.ends_with("000000010000000000000003"));
    assert!(p[0].problem.contains("cannot be restored"), "{p:?}");
}

#[test]
fn the_chain_follows_a_promotion_onto_the_new_timeline() {
    // Timeline 2 began in segment 4: recovery reads 1/2..1/3, then 2/4 onwards.
    let mut h = BTreeMap::new();
    h.insert(2, vec![entry(1, 4 * SEG + 100)]);
    let good = cov(&[(1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]);
    assert!(chain_problems(&[backup(1, 2, 2)], &[2], &h, &good, SEG).is_empty());
    let gap = cov(&[(1, 2), (2, 4), (2, 5)]);
    let p = chain_problems(&[backup(1, 2, 2)], &[2], &h, &gap, SEG);
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].object.ends_with("000000010000000000000003"), "{p:?}");
}

#[test]
fn histories_must_extend_their_parents() {
    let mut h = BTreeMap::new();
    h.insert(2, vec![entry(1, 100)]);
    h.insert(3, vec![entry(1, 100), entry(2, 200)]);
    assert!(history_problems(&h, SEG).is_empty());
    h.insert(4, vec![entry(1, 150), entry(3, 300)]);
    let p = history_problems(&h, SEG);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].object, "wal/00000004.history");
    assert!(p[0].problem.contains("parent timeline 3"), "{p:?}");
    let mut orphan = BTreeMap::new();
    orphan.insert(5, vec![entry(1, 100), entry(4, 400)]);
    assert!(history_problems(&orphan, SEG)[0].problem.contains("no history file"));
}

#[test]
fn a_sample_is_about_the_fraction_and_never_empty() {
    let names: Vec<String> = (0..1000).map(|i| format!("wal/00000001/{i:024X}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    assert!(sample(&refs, None, 1).iter().all(|p| *p));
    assert!(sample(&refs, Some(1.0), 1).iter().all(|p| *p));
    let half = sample(&refs, Some(0.5), 7).iter().filter(|p| **p).count();
    assert!((400..600).contains(&half), "{half}");
    // Another seed picks other objects, so repeated runs cover the repository.
    assert_ne!(sample(&refs, Some(0.5), 7), sample(&refs, Some(0.5), 8));
    for seed in 0..20 {
        assert_eq!(sample(&refs[..3], Some(0.000001), seed).iter().filter(|p| **p).count(), 1);
    }
    assert!(sample(&[], Some(0.5), 1).is_empty());
}

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_cksum();
        b.append_data(&mut h, path, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn tar_files_are_checked_against_the_manifest() {
    let crc = |d: &[u8]| hex::encode(crc32c::crc32c(d).to_le_bytes());
    let text = format!(
        r#"{{"Files": [
            {{"Path": "PG_VERSION", "Size": 3, "Checksum-Algorithm": "CRC32C", "Checksum": "{}"}},
            {{"Path": "pg_tblspc/16384/PG_15/x", "Size": 1, "Checksum-Algorithm": "CRC32C", "Checksum": "{}"}}]}}"#,
        crc(b"15\n"),
        crc(b"x")
    );
    let checker = Checker::new(manifest::parse(text.as_bytes()).unwrap()).unwrap();
    check_tar(&mut &tar_of(&[("PG_VERSION", b"15\n")])[..], "base.tar", "", &checker).unwrap();
    let bad = check_tar(&mut &tar_of(&[("PG_VERSION", b"16\n")])[..], "base.tar", "", &checker).unwrap_err();
    assert!(bad.contains("PG_VERSION") && bad.contains("does not match"), "{bad}");
    assert!(checker.complete().is_err());
    check_tar(&mut &tar_of(&[("PG_15/x", b"x")])[..], "16384.tar", "pg_tblspc/16384/", &checker).unwrap();
    assert_eq!(checker.complete().unwrap(), 2);
}

#[test]
fn damage_to_the_envelope_is_reported_before_the_content() {
    let keys = Keyring::plaintext();
    let plain = tar_of(&[("PG_VERSION", b"15\n")]);
    let sealed = crate::codec::seal_to_vec(&plain, None, "b.tar", Default::default()).unwrap();
    let mut bytes = sealed.out;
    let open = |b: Vec<u8>| {
        open_and_check(Box::new(io::Cursor::new(b)), &keys, "b.tar", |r, _| {
            tar::Archive::new(r).entries().map_err(|e| e.to_string())?.count();
            Ok(())
        })
    };
    let (stored, digest) = open(bytes.clone()).unwrap();
    assert_eq!((stored, digest), (bytes.len() as u64, sealed.digest));
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    match open(bytes.clone()) {
        Err(Bad::Damaged(e)) => assert!(e.contains("chunk") || e.contains("digest"), "{e}"),
        other => panic!("{other:?}"),
    }
    bytes.truncate(mid);
    assert!(matches!(open(bytes), Err(Bad::Damaged(_))));
}

#[test]
fn an_incremental_backup_whose_chain_is_broken_is_a_problem() {
    let full = backup(1, 0, 1);
    let mut i1 = backup(1, 2, 3);
    i1.parent = Some(full.id.clone());
    let mut i2 = backup(1, 4, 5);
    i2.parent = Some(i1.id.clone());
    let whole = vec![full.clone(), i1.clone(), i2.clone()];
    assert!(chain_gaps(&whole, &whole.iter().collect::<Vec<_>>()).is_empty());
    // The full backup gone: both incremental backups name it, each in its own record.
    let broken = vec![i1.clone(), i2.clone()];
    let p = chain_gaps(&broken, &broken.iter().collect::<Vec<_>>());
    assert_eq!(p.len(), 2, "{p:?}");
    assert_eq!(p[0].object, "backups/b2/backup.json");
    assert!(p[0].problem.contains("builds on backup b0, which is not in the repository"), "{p:?}");
    assert!(p[1].problem.contains("builds on backup b0"), "the break two links down: {p:?}");
    let mut looped = full;
    looped.parent = Some(i2.id.clone());
    let all = vec![looped, i1, i2];
    assert!(chain_gaps(&all, &[&all[2]])[0].problem.contains("loops"));
}
