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
