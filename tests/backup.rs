//! `tidewal backup` streams BASE_BACKUP into the repository; `tidewal restore` brings it
//! back (checked against the manifest, and independently by pg_verifybackup) and recovery
//! replays WAL from the repository, to the end or to a point in time.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

fn restore_and_start(a: &Archiving, name: &str, extra: &[&str]) -> Cluster {
    let dir = a.env.pg_dir(name);
    let data = dir.join("pgdata");
    let mut args = vec!["restore", "--to", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = a.env.tidewal(&args);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("verified against the manifest"), "{}", stdout(&out));
    // An independent check of what was restored.
    run_ok(as_pg(pg_bin("pg_verifybackup")).args([
        "--no-parse-wal",
        "-i",
        "recovery.signal",
        "-i",
        "postgresql.auto.conf",
        data.to_str().unwrap(),
    ]));
    let mut r = Cluster::adopt(&dir, &data);
    r.configure("archive_mode = off\n");
    r.start();
    r
}

fn wait_promoted(r: &Cluster) {
    wait_for("recovery to finish", Duration::from_secs(120), || r.psql("SELECT pg_is_in_recovery()") == "f");
}

#[test]
fn backup_and_restore_to_the_end_and_to_a_time() {
    let a = Archiving::start("backup", RepoKind::File);
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "3", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");

    let out = a.env.tidewal(&["backup", "--label", "nightly"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
    let id = stdout(&out).split_whitespace().nth(1).unwrap().to_string();

    c.psql("INSERT INTO marks SELECT 'early', g FROM generate_series(1, 400) g");
    std::thread::sleep(Duration::from_millis(1100));
    let mark = c.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("INSERT INTO marks SELECT 'late', g FROM generate_series(1, 500) g");
    let late_lsn = c.psql("SELECT pg_current_wal_insert_lsn()");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let balance = c.psql("SELECT sum(abalance) FROM pgbench_accounts");
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    // To the end of the archive.
    let r = restore_and_start(&a, "restored", &[]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "500");
    assert_eq!(r.psql("SELECT sum(abalance) FROM pgbench_accounts"), balance);
    drop(r);

    // To a point in time between the two batches.
    let r = restore_and_start(&a, "pitr", &["--target-time", &mark, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "0");
    drop(r);

    // A fork to the same moment: promoted to a new timeline, on its own port, writable,
    // and it leaves the repository alone.
    let fork_dir = a.env.pg_dir("fork");
    let fork_data = fork_dir.join("pgdata");
    let port = free_port();
    let out = a.env.tidewal(&[
        "fork",
        "--to",
        fork_data.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--target-time",
        &mark,
        "--start",
    ]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("fork running on port {port}")), "{}", stdout(&out));
    let f = Cluster::attach(&fork_data, &a.cluster.sock, port, &fork_data.join("fork.log"));
    wait_promoted(&f);
    assert_eq!(f.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(f.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "0");
    f.psql("INSERT INTO marks VALUES ('fork', 1)");
    assert_eq!(f.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    f.switch_wal();
    assert!(
        !a.repo_dir.as_ref().unwrap().join("wal/00000002").exists(),
        "the fork archived into the source repository"
    );
    drop(f);

    // Refusals: a non-empty directory, and a target before the first backup.
    let busy = a.env.pg_dir("busy");
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    expect_exit(&a.env.tidewal(&["restore", "--to", busy.to_str().unwrap()]), 4, &["is not empty"]);
    assert!(Path::new(&busy.join("keep.txt")).exists());
    let empty = a.env.pg_dir("early");
    expect_exit(
        &a.env.tidewal(&["restore", "--to", empty.to_str().unwrap(), "--target-time", "2001-01-01T00:00:00Z"]),
        1,
        &["no backup finished before the target"],
    );

    // The catalog: human and JSON.
    let out = a.env.tidewal(&["list"]);
    expect_exit(&out, 0, &[]);
    for needle in [id.as_str(), "timeline 1:", "restorable from"] {
        assert!(stdout(&out).contains(needle), "list lacks {needle:?}:\n{}", stdout(&out));
    }
    let out = a.env.tidewal(&["info", "--json"]);
    expect_exit(&out, 0, &[]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["backups"][0]["id"], id.as_str());
    assert_eq!(v["backups"][0]["label"], "nightly");
    assert_eq!(v["restorable_to_wal"], last.as_str());

    // A missing segment makes later targets unreachable, and restore says so before writing.
    std::fs::remove_file(a.repo_dir.as_ref().unwrap().join(format!("wal/00000001/{last}"))).unwrap();
    let dir = a.env.pg_dir("gap");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap(), "--target-lsn", &late_lsn]);
    expect_exit(&out, 1, &["cannot be reached", &last]);
    assert!(!dir.join("pgdata").exists(), "a refused restore must not write anything");
}

#[test]
fn restore_targets_and_damaged_backups() {
    let a = Archiving::start("targets", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'base', g FROM generate_series(1, 10) g");
    let out = a.env.tidewal(&["backup"]);
    expect_exit(&out, 0, &[]);
    let id = stdout(&out).split_whitespace().nth(1).unwrap().to_string();
    c.psql("INSERT INTO marks SELECT 'a', g FROM generate_series(1, 20) g");
    c.psql("SELECT pg_create_restore_point('before-b')");
    c.psql("INSERT INTO marks SELECT 'b', g FROM generate_series(1, 30) g");
    let xid =
        c.psql("BEGIN; INSERT INTO marks SELECT 'c', g FROM generate_series(1, 40) g; SELECT txid_current(); COMMIT;");
    let xid = xid.lines().find(|l| l.chars().all(|ch| ch.is_ascii_digit()) && !l.is_empty()).unwrap().to_string();
    c.psql("INSERT INTO marks SELECT 'd', g FROM generate_series(1, 50) g");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    let counts = |r: &Cluster| {
        r.psql("SELECT string_agg(batch || '=' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM marks GROUP BY batch) s")
    };
    let r = restore_and_start(&a, "by-name", &["--target-name", "before-b", "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(counts(&r), "a=20,base=10");
    drop(r);
    let r = restore_and_start(&a, "by-xid", &["--target-xid", &xid, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(counts(&r), "a=20,b=30,base=10,c=40");
    drop(r);
    let r = restore_and_start(&a, "immediate", &["--immediate", "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(counts(&r), "base=10");
    drop(r);

    // A damaged archive is named, and nothing is declared restored.
    let obj = format!("backups/{id}/base.tar");
    let path = a.repo_dir.as_ref().unwrap().join(&obj);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let dir = a.env.pg_dir("damaged");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap()]);
    expect_exit(&out, 5, &[&obj, "failed authentication"]);
    assert!(!dir.join("pgdata/recovery.signal").exists());
}
