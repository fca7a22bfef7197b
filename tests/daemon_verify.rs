//! The daemon exports the outcome of the last `tidewal verify`, whoever ran it (here a
//! one-shot run, as the systemd verify timer does): nothing before the first run, then the
//! time, the duration and the number of problems, which rises when an object is damaged.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn the_daemon_exports_the_last_verify() {
    let a = Archiving::start("daemon-verify", RepoKind::File);
    let c = &a.cluster;
    let spool = a.env.pg_dir("spool");
    let (port, log) = daemon_config(&a, &format!("spool = \"{}\"", spool.display()));
    let d = Daemon::start(&a.env, port, &log);
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n");
    // With no backup in the repository, the daemon takes one at once.
    wait_for("the daemon's first backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    let seg = c.switch_wal();
    c.wait_archived(&seg);
    assert_eq!(d.metric("tidewal_last_verify_timestamp_seconds"), None, "no verify has run yet");

    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    expect_exit(&a.env.tidewal(&["verify"]), 0, &[]);
    assert_eq!(d.metric("tidewal_last_verify_problems"), Some(0.0));
    let first = d.metric("tidewal_last_verify_timestamp_seconds").expect("timestamp after a verify");
    assert!(first >= before - 1.0, "{first} < {before}");
    assert!(d.metric("tidewal_last_verify_duration_seconds").is_some_and(|s| s >= 0.0));

    // A flipped byte in the archived segment: verify fails, and the daemon says so.
    let obj = a.repo_dir.as_ref().unwrap().join(format!("wal/{}/{seg}", &seg[..8]));
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&obj, bytes).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    expect_exit(&a.env.tidewal(&["verify"]), 5, &[]);
    assert!(
        d.metric("tidewal_last_verify_problems").is_some_and(|n| n >= 1.0),
        "{:?}",
        d.metric("tidewal_last_verify_problems")
    );
    assert!(d.metric("tidewal_last_verify_timestamp_seconds").unwrap() > first);
    let (_, body) = d.get("/metrics").unwrap();
    assert!(body.contains("# HELP tidewal_last_verify_problems"), "{body}");
}

/// The daemon's own restore tests: the first one `restore_test_interval` after the start (a
/// short interval here), its outcome in the metrics and, when it fails, in `/healthz`; once
/// the data makes the configured check true, the next one passes.
#[test]
fn the_daemon_runs_restore_tests_on_schedule() {
    let a = Archiving::start("daemon-restore-test", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE t AS SELECT generate_series(1, 5000) AS n");
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    let scratch = a.env.pg_dir("scratch");
    a.env.write_config(&format!(
        "{config}\n[verify]\nsql = [\"SELECT count(*) = 5001 FROM t\"]\nscratch_dir = \"{}\"\n",
        scratch.display()
    ));
    let spool = a.env.pg_dir("spool");
    let (port, log) = daemon_config(&a, &format!("spool = \"{}\"\nrestore_test_interval = \"15s\"", spool.display()));
    let d = Daemon::start(&a.env, port, &log);
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();

    // The check is false (5000 rows): the test fails, and says which check.
    wait_for("the first restore test", Duration::from_secs(180), || {
        d.metric("tidewal_last_restore_test_success").is_some()
    });
    assert_eq!(d.metric("tidewal_last_restore_test_success"), Some(0.0), "{}", daemon_log());
    assert_eq!(d.metric("tidewal_last_successful_restore_test_timestamp_seconds"), None);
    let (status, body) = d.get("/healthz").unwrap();
    assert!(status.contains("200") && body.contains("the last restore test failed: sql"), "{status} {body}");
    assert!(body.contains("5001"), "{body}");
    let failed_at = d.metric("tidewal_last_restore_test_timestamp_seconds").unwrap();

    // One more row, archived; the next test passes and is the newest success.
    c.psql("INSERT INTO t VALUES (5001)");
    let seg = c.switch_wal();
    c.wait_archived(&seg);
    wait_for("a passing restore test", Duration::from_secs(240), || {
        d.metric("tidewal_last_restore_test_success") == Some(1.0)
    });
    let ok_at = d.metric("tidewal_last_successful_restore_test_timestamp_seconds").unwrap();
    assert!(ok_at > failed_at);
    assert!(d.metric("tidewal_last_restore_test_duration_seconds").is_some_and(|s| s > 0.0));
    assert!(!d.get("/healthz").unwrap().1.contains("restore test"));
    assert!(daemon_log().contains("restore test of backup"), "{}", daemon_log());
    // Nothing of the copies is left.
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}
