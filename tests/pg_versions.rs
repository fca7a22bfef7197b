//! The cross-version subset, once per PostgreSQL major from 16 to 18 (15, Debian's, runs the
//! whole suite): archive mode under pgbench, `tidewal backup` under load, point-in-time
//! recovery to a marked time, streaming mode through a kill -9 of the primary, and
//! `tidewal verify`. The servers come from scripts/install-pg-servers.sh (see
//! tests/common/pgver.rs); a missing one fails the test rather than skipping it.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::pgver::{major_bin, restore_with_same_server};
use common::*;

/// kill -9 of the postmaster and all its children at once, as a crash would.
fn kill_primary(c: &Cluster) {
    let pm: i32 =
        std::fs::read_to_string(c.data.join("postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pm}/task/{pm}/children")).unwrap_or_default();
    run_ok(std::process::Command::new("kill").arg("-9").arg(pm.to_string()).args(children.split_whitespace()));
}

fn verify_passes(a: &Archiving, when: &str) {
    let out = a.env.tidewal(&["verify"]);
    assert_eq!(code(&out), 0, "verify {when}:\n{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("no problems"), "verify {when}:\n{}", stdout(&out));
}

fn cross_version(major: u32) {
    let a = Archiving::start_from(&format!("pg{major}"), &major_bin(major));
    let c = &a.cluster;
    let version: u32 = c.psql("SHOW server_version_num").parse().unwrap();
    assert_eq!(version / 10000, major, "the server run is not PostgreSQL {major}");

    // Archive mode under pgbench, and a base backup taken while it writes.
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");
    let mut load =
        c.client("pgbench").args(["-T", "6", "-c", "2", "-n", "postgres"]).stdout(Stdio::null()).spawn().unwrap();
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
    std::thread::sleep(Duration::from_secs(3));
    let mark_rows: i64 = c.psql("SELECT count(*) FROM t").parse().unwrap();
    // Well past the 1 s flush interval: every row counted above must be in the repository.
    std::thread::sleep(Duration::from_secs(3));
    kill_primary(c);
    let _ = writer.wait();
    std::thread::sleep(Duration::from_secs(2));
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
    let r = restore_with_same_server(&a, "to-end", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert!(r.log().contains(".stream"), "the streamed copy was not used:\n{}", r.log());
    assert_eq!(r.psql("SELECT count(*) FROM marks"), "1200");
    assert_eq!(r.psql("SELECT sum(abalance) FROM pgbench_accounts"), balance);
    let (rows, max): (i64, i64) = {
        let s = r.psql("SELECT count(*) || ' ' || coalesce(max(n), 0) FROM t");
        let (a, b) = s.split_once(' ').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    assert!(rows >= mark_rows && mark_rows > 0, "{rows} rows restored, {mark_rows} committed 3 s before the crash");
    assert_eq!(rows, max, "rows are missing below the last one restored");
    assert!(r.psql("SELECT version()").contains(&format!("PostgreSQL {major}.")));
    drop(r);

    // To the marked time: the early batch, not the late one.
    let r = restore_with_same_server(&a, "pitr", &["--target-time", &mark, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "0");
    assert_eq!(r.psql("SELECT to_regclass('t') IS NULL"), "t");
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
