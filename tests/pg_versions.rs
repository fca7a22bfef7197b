//! The cross-version subset, once per PostgreSQL major from 16 to 18 (15, Debian's, runs the
//! whole suite): archive mode under pgbench, `tidewal backup` under load, point-in-time
//! recovery to a marked time, streaming mode through a kill -9 of the primary, a promotion
//! followed by a restore, a backup refused for a page failing its checksum, `tidewal
//! verify` and `tidewal verify --restore-test` with that major's server and amcheck. The servers come from scripts/install-pg-servers.sh (see
//! tests/common/pgver.rs); a missing one fails the test rather than skipping it.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pgver::major_bin;
use common::*;

/// kill -9 of the postmaster and all its children at once, as a crash would.
fn verify_passes(a: &Archiving, when: &str) {
    let out = a.env.tidewal(&["verify"]);
    assert_eq!(code(&out), 0, "verify {when}:\n{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("no problems"), "verify {when}:\n{}", stdout(&out));
}

/// With data checksums on (initdb's default from PostgreSQL 18 on, asked for before),
/// BASE_BACKUP checks every page, warns of a bad one, and fails only after the whole backup
/// has been sent: the backup must not count, and the warning must reach the log as one.
/// The table is dropped afterwards, so later backups succeed.
fn a_damaged_page_fails_the_backup(a: &Archiving) {
    let c = &a.cluster;
    c.psql("CREATE TABLE damaged (n int) WITH (autovacuum_enabled = false)");
    c.psql("INSERT INTO damaged SELECT generate_series(1, 100)");
    // Hint bits set and the page on disk, so nothing writes it again.
    c.psql("VACUUM FREEZE damaged");
    c.psql("CHECKPOINT");
    let file = c.data.join(c.psql("SELECT pg_relation_filepath('damaged')"));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[8000] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let out = a.env.tidewal(&["backup"]);
    expect_exit(&out, 7, &["server warning: checksum verification failed in file", "checksum verification failure"]);
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["backups"].as_array().unwrap().len(), 0, "{listing}");
    c.psql("DROP TABLE damaged");
    c.psql("CHECKPOINT");
}

fn cross_version(major: u32) {
    // 18 gets initdb's defaults, checksums included.
    let initdb_args: &[&str] = if major < 18 { &["--data-checksums"] } else { &[] };
    let a = Archiving::start_from(&format!("pg{major}"), &major_bin(major), initdb_args);
    let c = &a.cluster;
    let version: u32 = c.psql("SHOW server_version_num").parse().unwrap();
    assert_eq!(version / 10000, major, "the server run is not PostgreSQL {major}");
    let check = a.env.tidewal(&["check"]);
    assert_eq!(code(&check), 0, "{}{}", stdout(&check), stderr(&check));
    assert_eq!(c.psql("SHOW data_checksums"), "on");
    a_damaged_page_fails_the_backup(&a);

    // Archive mode under pgbench, and a base backup taken while it writes.
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");
    let mut load =
        c.client("pgbench").args(["-T", "4", "-c", "2", "-n", "postgres"]).stdout(Stdio::null()).spawn().unwrap();
    let backup = a.env.tidewal(&["backup"]);
    assert!(load.wait().unwrap().success(), "pgbench failed");
    let id = backup_id(&backup);

    // A marked moment between two batches.
    c.psql("INSERT INTO marks SELECT 'early', g FROM generate_series(1, 400) g");
    std::thread::sleep(Duration::from_millis(1100));
    let mark = c.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("INSERT INTO marks SELECT 'late', g FROM generate_series(1, 500) g");
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "archiver failures:\n{}", c.log());
    let balance = c.psql("SELECT sum(abalance) FROM pgbench_accounts");
    let system = c.psql("SELECT system_identifier FROM pg_control_system()");
    verify_passes(&a, "after archiving");

    // Streaming mode: from here on only the daemon's receiver stores WAL.
    c.set("archive_command", "/bin/true");
    let (port, log) =
        daemon_config(&a, "archive = false\nstream = true\nslot = \"tidewal_pgver\"\nflush_interval = \"1s\"");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("streaming", Duration::from_secs(60), || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tidewal_pgver' AND active") == "1"
    });
    c.psql("CREATE TABLE t (n int PRIMARY KEY)");
    let mut writer = c
        .client("psql")
        .args(["-X", "-q", "-d", "postgres", "-c"])
        .arg("DO $$ BEGIN FOR i IN 1..1000000 LOOP INSERT INTO t VALUES (i); COMMIT; PERFORM pg_sleep(0.005); END LOOP; END $$")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let counted = c.psql("SELECT count(*) || ' ' || pg_current_wal_lsn() FROM t");
    let (mark_rows, mark_lsn) = counted.split_once(' ').unwrap();
    let mark_rows: i64 = mark_rows.parse().unwrap();
    // Every row counted above is in the repository.
    c.wait_slot_past("tidewal_pgver", mark_lsn);
    std::thread::sleep(Duration::from_secs(1));
    c.kill_hard();
    let _ = writer.wait();
    std::thread::sleep(Duration::from_secs(1));
    d.stop();
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    // The WAL is complete from the backup to the streamed end, and every object is sound.
    verify_passes(&a, "after the crash");
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["restorable_to_streamed"], true, "{listing}");
    assert_eq!(listing["backups"][0]["id"], id.as_str(), "{listing}");

    // To the end: everything archived, and the streamed rows up to the crash with no hole.
    let r = restore_and_start(&a, "to-end", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert!(r.log().contains(".stream"), "the streamed copy was not used:\n{}", r.log());
    assert_eq!(r.psql("SELECT count(*) FROM marks"), "1200");
    assert_eq!(r.psql("SELECT sum(abalance) FROM pgbench_accounts"), balance);
    let (rows, max): (i64, i64) = {
        let s = r.psql("SELECT count(*) || ' ' || coalesce(max(n), 0) FROM t");
        let (a, b) = s.split_once(' ').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    assert!(rows >= mark_rows && mark_rows > 0, "{rows} rows restored, {mark_rows} stored before the crash");
    assert_eq!(rows, max, "rows are missing below the last one restored");
    // From 17 on the manifest (version 2) names the system, and restore has checked it.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(r.data.join("backup_manifest")).unwrap()).unwrap();
    let manifest_version = if major >= 17 { 2 } else { 1 };
    assert_eq!(manifest["PostgreSQL-Backup-Manifest-Version"], manifest_version);
    if major >= 17 {
        assert_eq!(manifest["System-Identifier"].to_string(), system);
    }
    drop(r);

    // To the marked time, as the new primary: promoted to timeline 2, which it archives
    // (its history file too) into the same repository.
    let dir = a.env.pg_dir("pitr");
    let data = dir.join("pgdata");
    let pitr = ["restore", "--to", data.to_str().unwrap(), "--target-time", &mark, "--target-action", "promote"];
    expect_exit(&a.env.tidewal(&[&pitr[..], &["--as-primary"]].concat()), 0, &[]);
    let mut p = Cluster::adopt(&dir, &data);
    p.bin = a.cluster.bin.clone();
    p.configure("");
    p.start();
    wait_promoted(&p);
    assert_eq!(p.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(p.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(p.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "0");
    assert_eq!(p.psql("SELECT to_regclass('t') IS NULL"), "t");
    p.psql("INSERT INTO marks SELECT 'timeline 2', g FROM generate_series(1, 50) g");
    let on_two = p.switch_wal();
    assert!(on_two.starts_with("00000002"), "{on_two}");
    p.wait_archived(&on_two);
    drop(p);
    verify_passes(&a, "after the promotion");

    // The restore test, with this major's server binaries and amcheck: the newest backup
    // recovered along timeline 2, every index and table checked, the configured check true.
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!(
        "{config}\n[verify]\npg_bin = \"{}\"\nsql = [\"SELECT count(*) = 50 FROM marks WHERE batch = 'timeline 2'\"]\n",
        major_bin(major).display()
    ));
    let out = a.env.tidewal(&["verify", "--restore-test", "--json"]);
    assert_eq!(code(&out), 0, "restore test:\n{}\n{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["success"], true, "{report}");
    assert_eq!(report["recovered"]["timeline"], 3, "{report}");
    assert!(report["indexes_checked"].as_u64().unwrap() > 10, "{report}");
    assert_eq!(report["heap_checked"], true, "{report}");
    assert_eq!(report["sql_checks"][0]["passed"], true, "{report}");

    // The repository's history leads a restore to the end onto timeline 2.
    let r = restore_and_start(&a, "latest", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(
        r.psql("SELECT string_agg(batch || ':' || c, ',') FROM (SELECT batch, count(*) c FROM marks GROUP BY batch ORDER BY batch) s"),
        "before:300,early:400,timeline 2:50"
    );
    assert_eq!(r.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000003");
}

#[test]
fn postgresql_16() {
    cross_version(16);
}

#[test]
fn postgresql_17() {
    cross_version(17);
}

#[test]
fn postgresql_18() {
    cross_version(18);
}
