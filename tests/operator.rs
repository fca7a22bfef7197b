//! What an operator reads: `tidewal status` from a real daemon over its socket (and exit code 9
//! when none answers), `list` with the window and the lag first, `--json` on `check`, `list`,
//! `prune --dry-run` and `status`, and the man pages and shell completions generated from the
//! command line's definitions.

mod common;

use std::time::Duration;

use clap::CommandFactory;
use common::*;

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}{}", stdout(out), stderr(out)))
}

#[test]
fn status_list_check_and_prune_report_for_operators() {
    let a = Archiving::start("operator", RepoKind::File);
    let c = &a.cluster;
    let socket = a.env.path().join("tidewal.sock");
    let (port, log) = daemon_config(
        &a,
        &format!(
            "pgdata = \"{}\"\nsocket = \"{}\"\nspool = \"{}\"",
            c.data.display(),
            socket.display(),
            a.env.path().join("spool").display()
        ),
    );
    // WAL from before the first backup, for prune to plan away.
    for _ in 0..2 {
        let seg = c.switch_wal();
        c.wait_archived(&seg);
    }
    // No daemon yet: status says so, with its own exit code.
    expect_exit(&a.env.tidewal(&["status"]), 9, &["no tidewal daemon answers on", socket.to_str().unwrap()]);

    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    let last = c.switch_wal();
    c.wait_archived(&last);
    expect_exit(&a.env.tidewal(&["verify"]), 0, &[]);

    // status --json: the daemon's own view, once the monitor has reached the server.
    let mut st = serde_json::Value::Null;
    wait_for("the daemon to know its lag", Duration::from_secs(60), || {
        let out = a.env.tidewal(&["status", "--json"]);
        expect_exit(&out, 0, &[]);
        st = json(&out);
        !st["lag_seconds"].is_null()
    });
    let repo_dir = a.repo_dir.as_ref().unwrap();
    assert_eq!(st["repository"], format!("file://{}", repo_dir.display()), "{st:#}");
    assert_eq!(st["system_identifier"], c.psql("SELECT system_identifier FROM pg_control_system()"), "{st:#}");
    let pid = st["pid"].as_u64().unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(String::from_utf8_lossy(&cmdline).contains("daemon"), "pid {pid} is not the daemon");
    let tasks: Vec<&str> = st["tasks"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    for t in ["archiver", "socket", "scheduler", "monitor", "pruner", "http"] {
        assert!(tasks.contains(&t), "task {t} missing: {st:#}");
    }
    assert!(st["tasks"][0]["restarts"].as_u64() == Some(0), "{st:#}");
    assert!(st["last_backup"].as_str().is_some_and(|t| humantime::parse_rfc3339(t).is_ok()), "{st:#}");
    assert_eq!(st["last_verify"]["success"], true, "{st:#}");
    assert_eq!(st["last_verify"]["problems"], 0, "{st:#}");
    assert!(st["last_restore_test"].is_null(), "{st:#}");
    let health = st["health"]["status"].as_str().unwrap();
    assert!(["ok", "degraded", "failing"].contains(&health), "{st:#}");
    assert!(st["health"]["reasons"].is_array(), "{st:#}");

    let out = a.env.tidewal(&["status"]);
    expect_exit(&out, 0, &[]);
    let text = stdout(&out);
    for needle in
        ["tidewal daemon ", "health: ", "lag: ", "last base backup: 20", "last verify: 20", "passed", "tasks: "]
    {
        assert!(text.contains(needle), "status lacks {needle:?}:\n{text}");
    }
    assert!(text.contains("last restore test: never"), "{text}");

    // list: the window and the daemon's lag first, then the backups.
    let out = a.env.tidewal(&["list"]);
    expect_exit(&out, 0, &[]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].starts_with("restorable from "), "{text}");
    assert!(lines[2].starts_with("lag: ") && lines[2].ends_with("(from the running daemon)"), "{text}");
    assert!(text.find("\nbackups").unwrap() > text.find("lag: ").unwrap(), "{text}");
    let listing = json(&a.env.tidewal(&["list", "--json"]));
    assert_eq!(listing["lag"]["source"], "daemon", "{listing:#}");
    assert!(listing["lag"]["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{listing:#}");
    assert!(listing["lag"]["bytes"].is_u64(), "{listing:#}");
    let backup = listing["backups"][0]["id"].as_str().unwrap().to_string();

    // check --json: every line with its level; the same exit codes as the text form.
    let out = a.env.tidewal(&["check", "--json"]);
    expect_exit(&out, 0, &[]);
    let report = json(&out);
    assert_eq!(report["ok"], true, "{report:#}");
    assert_eq!(report["fixes"], serde_json::json!([]), "{report:#}");
    let checks = report["checks"].as_array().unwrap();
    assert!(checks.iter().any(|l| l["level"] == "ok" && l["text"] == "archive_timeout = 60s"), "{report:#}");
    c.set("archive_timeout", "0");
    wait_for("the reload", Duration::from_secs(30), || c.psql("SHOW archive_timeout") == "0");
    let out = a.env.tidewal(&["check", "--json"]);
    assert_eq!(code(&out), 8, "{}", stderr(&out));
    let report = json(&out);
    assert_eq!(report["ok"], false, "{report:#}");
    assert!(report["checks"].as_array().unwrap().iter().any(|l| l["level"] == "fail"), "{report:#}");
    assert_eq!(report["fixes"], serde_json::json!(["archive_timeout = 60"]), "{report:#}");
    assert_eq!(report["restart_needed"], false, "{report:#}");
    c.set("archive_timeout", "60");
    wait_for("the reload", Duration::from_secs(30), || c.psql("SHOW archive_timeout") == "1min");

    // prune --dry-run --json: the plan, nothing deleted. With a 1 s window the backup is
    // the anchor only once it finished more than a second ago, however fast the steps above.
    std::thread::sleep(Duration::from_millis(1500));
    let out = a.env.tidewal(&["prune", "--dry-run", "--json", "--window", "1s"]);
    expect_exit(&out, 0, &[]);
    let plan = json(&out);
    assert_eq!(plan["dry_run"], true, "{plan:#}");
    assert_eq!(plan["window_seconds"], 1, "{plan:#}");
    assert_eq!(plan["anchor"], backup.as_str(), "{plan:#}");
    assert_eq!(plan["keep_backups"], serde_json::json!([backup]), "{plan:#}");
    assert_eq!(plan["delete_backups"], serde_json::json!([]), "{plan:#}");
    assert_eq!(plan["deleted_objects"], 0, "{plan:#}");
    let doomed = plan["delete_wal"].as_array().unwrap();
    assert!(!doomed.is_empty(), "the WAL before the backup would go: {plan:#}");
    for name in doomed {
        assert!(repo_dir.join(name.as_str().unwrap()).exists(), "a dry run deleted {name}");
    }

    // Without the daemon: status exits 9, and list measures the lag from the repository.
    assert!(d.stop().success());
    expect_exit(&a.env.tidewal(&["status", "--json"]), 9, &["no tidewal daemon answers on"]);
    let listing = json(&a.env.tidewal(&["list", "--json"]));
    assert_eq!(listing["lag"]["source"], "repository", "{listing:#}");
    assert!(listing["lag"]["seconds"].as_f64().is_some_and(|s| s >= 0.0), "{listing:#}");
    assert!(listing["lag"]["bytes"].is_null(), "{listing:#}");
    let text = stdout(&a.env.tidewal(&["list"]));
    assert!(text.lines().nth(2).is_some_and(|l| l.contains("from the repository")), "{text}");
}

/// `tidewal man --dir` writes a page for the program and one per verb, `tidewal man` prints
/// the first, and the completions for each shell know every verb.
#[test]
fn man_pages_and_completions_name_every_verb() {
    let bin = env!("CARGO_BIN_EXE_tidewal");
    let verbs: Vec<String> = tidewal::cmd::Cli::command()
        .get_subcommands()
        .filter(|s| !s.is_hide_set())
        .map(|s| s.get_name().to_string())
        .collect();
    assert!(verbs.len() >= 15 && verbs.iter().any(|v| v == "status"), "{verbs:?}");
    let dir = tempfile::tempdir().unwrap();
    let out = run_ok(std::process::Command::new(bin).args(["man", "--dir"]).arg(dir.path()));
    assert!(stdout(&out).contains("wrote tidewal.1"), "{}", stdout(&out));
    let main = std::fs::read_to_string(dir.path().join("tidewal.1")).unwrap();
    assert!(main.contains(".TH tidewal 1 "), "{main}");
    for v in &verbs {
        let page = std::fs::read_to_string(dir.path().join(format!("tidewal-{v}.1")))
            .unwrap_or_else(|e| panic!("no page for {v}: {e}"));
        assert!(page.contains(&format!(".TH tidewal-{v}")), "tidewal-{v}.1:\n{page}");
        // roff escapes every '-'.
        let listed = format!("tidewal\\-{}(1)", v.replace('-', "\\-"));
        assert!(main.contains(&listed), "tidewal.1 lacks {listed}:\n{main}");
    }
    let printed = stdout(&run_ok(std::process::Command::new(bin).arg("man")));
    assert_eq!(printed, main, "tidewal man prints tidewal.1");
    for shell in ["bash", "zsh", "fish"] {
        let script = stdout(&run_ok(std::process::Command::new(bin).args(["completions", shell])));
        for v in &verbs {
            assert!(script.contains(v.as_str()), "the {shell} completions lack {v}");
        }
        assert!(script.contains("--target-time") || script.contains("target-time"), "{shell}: no restore flags");
    }
    let out = std::process::Command::new(bin).args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(code(&out), 2, "an unknown shell is a usage error");
}
