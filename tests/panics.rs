//! Panics and secrets: a panic is a hard failure PostgreSQL understands (wal-fetch exits
//! 128 + 70, every other command 70), a panicking daemon task is restarted like a failed one
//! while the daemon keeps serving, and neither a broken config file nor a broken connection
//! string puts a password on stderr or stdout. The panics come from a hidden test hook
//! (`TIDEWAL_TEST_PANIC`).

mod common;

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Run the binary (as whoever runs the tests) with a panic forced where `hook` says.
fn panicking(hook: &str, args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_tidewal"))
        .args(["--config", dir.path().join("none.toml").to_str().unwrap()])
        .args(args)
        .env("TIDEWAL_TEST_PANIC", hook)
        .output()
        .unwrap()
}

#[test]
fn a_panic_in_wal_fetch_stops_recovery() {
    // PostgreSQL ends recovery (and promotes) on restore_command codes up to 125: 101, the
    // default for a panic, would read as "not found".
    for hook in ["wal-fetch", "wal-fetch:worker"] {
        let out = panicking(hook, &["wal-fetch", "000000010000000000000001", "/nonexistent/x"]);
        expect_exit(&out, 198, &["internal error", "panicked at src/main.rs", "TIDEWAL_TEST_PANIC"]);
    }
}

#[test]
fn a_panic_elsewhere_is_an_internal_error() {
    // On the main thread, and in a runtime task whose JoinError the code would take for
    // "not found" (exit 1): the panic hook exits with 70 first.
    for (hook, verb) in [("list", "list"), ("list:worker", "list"), ("prune:worker", "prune")] {
        let out = panicking(hook, &[verb]);
        expect_exit(&out, 70, &["internal error", "panicked at src/main.rs", "TIDEWAL_TEST_PANIC"]);
    }
}

#[test]
fn config_errors_never_echo_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidewal.toml");
    // An unterminated string: toml would print the line it is on.
    std::fs::write(&config, "[repository]\nurl = \"file:///r\"\n[postgres]\nconninfo = \"host=db password=hunter2\n")
        .unwrap();
    for verb in [&["list"][..], &["wal-fetch", "000000010000000000000001", "/tmp/x"]] {
        let out = Command::new(env!("CARGO_BIN_EXE_tidewal")).arg("--config").arg(&config).args(verb).output().unwrap();
        let want = if verb[0] == "wal-fetch" { 130 } else { 2 };
        expect_exit(&out, want, &["line 4", "postgres.conninfo", "invalid basic string"]);
        assert!(!stderr(&out).contains("hunter2") && !stdout(&out).contains("hunter2"), "{}", stderr(&out));
    }
    // A number where the S3 secret belongs: serde would quote it.
    std::fs::write(&config, "[repository.s3]\nsecret_access_key = 73250917\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tidewal")).arg("--config").arg(&config).arg("list").output().unwrap();
    expect_exit(&out, 2, &["repository.s3.secret_access_key", "invalid type"]);
    assert!(!stderr(&out).contains("73250917"), "{}", stderr(&out));
}

#[test]
fn connection_string_errors_never_echo_a_password() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tidewal.toml");
    std::fs::write(&config, format!("[repository]\nurl = \"file://{}/repo\"\n", dir.path().display())).unwrap();
    let bad = [
        // ';' for '&': the sslmode value runs on into the password.
        ("postgresql://rep:hunter2@127.0.0.1:1/app?sslmode=verify;password=hunter2", "sslmode"),
        ("postgresql://rep:hunter2@127.0.0.1:1/app?sslrootcert=%ZZhunter2&password=hunter2", "sslrootcert"),
        // A space in an unquoted password.
        ("host=127.0.0.1 port=1 password=hun hunter2", "after the value of password"),
    ];
    for (conninfo, what) in bad {
        // init reports it on stderr, check on stdout.
        for verb in [&["init", "--no-encryption"][..], &["check"]] {
            let out = Command::new(env!("CARGO_BIN_EXE_tidewal"))
                .arg("--config")
                .arg(&config)
                .args(verb)
                .env("TIDEWAL_PG_CONNINFO", conninfo)
                .output()
                .unwrap();
            let said = format!("{}{}", stderr(&out), stdout(&out));
            assert!(code(&out) != 0, "{conninfo}: {verb:?} succeeded");
            assert!(said.contains(what), "{conninfo}: {verb:?} should name {what:?}:\n{said}");
            assert!(!said.contains("hunter2"), "{conninfo}: {verb:?}:\n{said}");
        }
    }
}

#[test]
fn a_panicking_daemon_task_is_restarted_and_the_daemon_keeps_serving() {
    let a = Archiving::start("panics", RepoKind::File);
    let port = free_port();
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!(
        "{config}\n[daemon]\npgdata = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n",
        a.cluster.data.display()
    ));
    let log_path = a.env.path().join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = as_pg(&a.env.bin)
        .arg("--config")
        .arg(&a.env.config)
        .arg("daemon")
        .env("TIDEWAL_TEST_PANIC", "daemon-monitor")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let pattern = format!("^[^ ]*/tidewal --config {} daemon", a.env.config.display());
    let kill = |sig: &str| Command::new("pkill").args([sig, "-f", &pattern]).status();
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let restarts = "tidewal_task_restarts_total{task=\"monitor\"}";
        wait_for("the monitor's restart on /metrics", Duration::from_secs(60), || {
            metric_at(port, restarts).is_some_and(|n| n >= 1.0)
        });
        // Restarted, it works: it samples the server and reports the lag.
        wait_for("the restarted monitor's lag figure", Duration::from_secs(60), || {
            metric_at(port, "tidewal_wal_archive_lag_bytes").is_some()
        });
        assert_eq!(metric_at(port, restarts), Some(1.0), "the monitor panics on its first run only");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the daemon exited:\n{}",
            std::fs::read_to_string(&log_path).unwrap()
        );
        let (_, health) = http_get(port, "/healthz").expect("/healthz still answers");
        assert!(health.contains("task monitor was restarted"), "{health}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        assert!(log.contains("task monitor panicked: TIDEWAL_TEST_PANIC: task monitor panics; restarting it"), "{log}");
        assert!(log.contains("panicked at src/daemon/supervisor.rs"), "{log}");
        // It still stops cleanly.
        kill("-15").unwrap();
        let mut status = None;
        wait_for("the daemon to stop", Duration::from_secs(60), || {
            status = child.try_wait().unwrap();
            status.is_some()
        });
        assert!(status.unwrap().success(), "{:?}\n{}", status, std::fs::read_to_string(&log_path).unwrap());
    }));
    let _ = kill("-9");
    let _ = child.wait();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e);
    }
}
