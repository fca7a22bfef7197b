//! `tidewal verify` against a real PostgreSQL 15 and a file:// repository: a clean
//! repository passes with its counts, and a flipped byte in a WAL object and in a backup's
//! archive, and a segment removed from the middle of the WAL, are each named, exit 5.

mod common;

use common::*;

fn verify_json(a: &Archiving, args: &[&str]) -> (i32, serde_json::Value) {
    let mut all = vec!["verify", "--json"];
    all.extend_from_slice(args);
    let out = a.env.tidewal(&all);
    let v = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    (code(&out), v)
}

fn flip_middle_byte(path: &std::path::Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn verify_finds_damage_and_gaps() {
    let a = Archiving::start("verify", RepoKind::File);
    let c = &a.cluster;
    // Only the test's own switches archive: the counts below compare repository states.
    c.set("archive_timeout", "0");
    let repo = a.repo_dir.clone().unwrap();
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 10000)");
    let id = backup_id(&a.env.tidewal(&["backup"]));
    let mut segs = Vec::new();
    for i in 0..4 {
        c.psql(&format!("INSERT INTO t SELECT generate_series(1, {})", 1000 * (i + 1)));
        segs.push(c.switch_wal());
    }
    c.wait_archived(segs.last().unwrap());

    // Clean: every object opens, the counts add up.
    let out = a.env.tidewal(&["verify"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("verified 1 backups") && stdout(&out).contains("no problems"), "{}", stdout(&out));
    let (rc, v) = verify_json(&a, &[]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["backups"], 1, "{v}");
    assert!(v["backup_objects"].as_u64().unwrap() >= 2, "{v}");
    assert!(v["backup_bytes"].as_u64().unwrap() > 0, "{v}");
    let wal_files = v["wal_files"].as_u64().unwrap();
    assert!(wal_files >= 5, "{v}");
    assert_eq!(v["problems"].as_array().unwrap().len(), 0, "{v}");
    // One backup alone leaves the WAL out; the WAL alone leaves the backups out.
    let (rc, v) = verify_json(&a, &["--backup", &id]);
    assert_eq!((rc, v["backups"].as_u64(), v["wal_files"].as_u64()), (0, Some(1), Some(0)), "{v}");
    let (rc, v) = verify_json(&a, &["--wal"]);
    assert_eq!((rc, v["backups"].as_u64(), v["wal_files"].as_u64()), (0, Some(0), Some(wal_files)), "{v}");
    expect_exit(&a.env.tidewal(&["verify", "--backup", "20001231T000000Z"]), 1, &["no complete backup"]);
    // A sample checks part of the objects, never none.
    let (rc, v) = verify_json(&a, &["--sample", "0.5"]);
    assert_eq!(rc, 0, "{v}");
    assert_eq!(v["sample"], 0.5, "{v}");
    assert!((1..=wal_files).contains(&v["wal_files"].as_u64().unwrap()), "{v}");
    assert!(v["backup_objects"].as_u64().unwrap() >= 1, "{v}");
    expect_exit(&a.env.tidewal(&["verify", "--sample", "0"]), 2, &["fraction"]);

    // A flipped byte inside a WAL object and inside the backup's base.tar: the sizes and the
    // recorded digests still match, only opening the objects in full finds the damage.
    let wal_obj = |seg: &str| format!("wal/{}/{seg}", &seg[..8]);
    let damaged_wal = wal_obj(&segs[1]);
    let base = format!("backups/{id}/base.tar");
    flip_middle_byte(&repo.join(&damaged_wal));
    flip_middle_byte(&repo.join(&base));
    let out = a.env.tidewal(&["verify"]);
    expect_exit(&out, 5, &["problem"]);
    let text = stdout(&out);
    assert!(text.contains(&format!("BAD  {damaged_wal}: ")), "{text}");
    assert!(text.contains(&format!("BAD  {base}: ")), "{text}");
    assert!(text.contains("2 problems"), "{text}");
    let (rc, v) = verify_json(&a, &[]);
    assert_eq!(rc, 5, "{v}");
    let named: Vec<&str> = v["problems"].as_array().unwrap().iter().map(|p| p["object"].as_str().unwrap()).collect();
    assert_eq!(named, [base.as_str(), damaged_wal.as_str()], "{v}");

    // A segment gone from the middle of the WAL: the chain from the backup breaks there.
    let gone = wal_obj(&segs[2]);
    std::fs::remove_file(repo.join(&gone)).unwrap();
    // And the newest segment cut short.
    let cut = wal_obj(&segs[3]);
    let len = std::fs::metadata(repo.join(&cut)).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(repo.join(&cut)).unwrap().set_len(len - 100).unwrap();
    let out = a.env.tidewal(&["verify", "--wal"]);
    expect_exit(&out, 5, &[]);
    let text = stdout(&out);
    assert!(text.contains(&format!("BAD  {gone}: missing: a gap in the WAL from backup {id}")), "{text}");
    assert!(text.contains(&format!("BAD  {damaged_wal}: ")), "{text}");
    assert!(text.contains(&format!("BAD  {cut}: truncated")), "{text}");
    assert!(text.contains("verified 0 backups") && text.contains("3 problems"), "{text}");
}
