//! `tidewal verify --restore-test` against a real PostgreSQL 15 and a file:// repository:
//! the newest backup restores, recovers past rows committed after it and passes amcheck and
//! the configured SQL checks; a target stops earlier, so a check that wants the later rows
//! is false (exit 5, named); an index damaged before a backup is named by amcheck; a
//! flipped byte in a backup fails the restore. Every run removes its scratch directory and
//! leaves the repository's objects as they were.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Every file under the repository: path, size and modification time.
fn listing(repo: &Path) -> Vec<(String, u64, std::time::SystemTime)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64, std::time::SystemTime)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                walk(root, &e.path(), out);
            } else {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                out.push((rel, m.len(), m.modified().unwrap()));
            }
        }
    }
    let mut out = Vec::new();
    walk(repo, repo, &mut out);
    out.sort();
    out
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap_or_else(|| panic!("not an LSN: {text:?}"));
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

/// `tidewal verify --restore-test ARGS` as the invoking user (root in CI).
fn as_invoker(env: &TestEnv, args: &[&str]) -> Output {
    let mut c = Command::new(&env.bin);
    c.arg("--config").arg(&env.config).args(["verify", "--restore-test"]).args(args).current_dir(env.path());
    c.output().unwrap()
}

/// `tidewal verify --restore-test --json ARGS` as postgres: exit code and report.
fn run_json(env: &TestEnv, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec!["verify", "--restore-test", "--json"];
    all.extend_from_slice(args);
    let out = env.tidewal(&all);
    let v = serde_json::from_str(&stdout(&out)).unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    (code(&out), v, stderr(&out))
}

fn stop_fast(c: &Cluster) {
    run_ok(as_pg(pg_bin("pg_ctl")).args(["-D", c.data.to_str().unwrap(), "-m", "fast", "-w", "stop"]));
}

fn assert_scratch_empty(scratch: &Path) {
    let left: Vec<_> = std::fs::read_dir(scratch).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "scratch directories left behind: {left:?}");
}

fn failures(v: &serde_json::Value) -> Vec<(String, String, String)> {
    let f = v["failures"].as_array().unwrap_or_else(|| panic!("no failures list: {v}"));
    f.iter()
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("stage"), s("what"), s("problem"))
        })
        .collect()
}

#[test]
fn restore_test_recovers_checks_and_cleans_up() {
    let mut a = Archiving::start("restoretest", RepoKind::File);
    let repo = a.repo_dir.clone().unwrap();
    let scratch = a.env.pg_dir("scratch");
    let pg_bin_line = match std::env::var("TIDEWAL_PG_BIN") {
        Ok(dir) => format!("pg_bin = \"{dir}\"\n"),
        Err(_) => String::new(),
    };
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!(
        "{config}\n[verify]\nscratch_dir = \"{}\"\n{pg_bin_line}\
         sql = [\"SELECT count(*) = 100 FROM tt\", \"SELECT count(*) >= 1500 FROM t\", \"SELECT count(*) = 2000 FROM t\"]\n",
        scratch.display()
    ));
    let c = &a.cluster;
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 1000)");
    // For the damaged index later: no autovacuum may read it once it is garbage.
    c.psql("CREATE TABLE c (n int) WITH (autovacuum_enabled = off)");
    c.psql("INSERT INTO c SELECT generate_series(1, 20000)");
    c.psql("CREATE INDEX c_n ON c (n)");
    c.psql("VACUUM c");
    // A tablespace in use by the source: the copy's goes into the scratch directory.
    let ts = a.env.pg_dir("ts");
    c.psql(&format!("CREATE TABLESPACE ts LOCATION '{}'", ts.display()));
    c.psql("CREATE TABLE tt TABLESPACE ts AS SELECT generate_series(1, 100) AS n");
    let first = backup_id(&a.env.tidewal(&["backup"]));
    // Rows committed after the backup, with a restore point between them.
    c.psql("INSERT INTO t SELECT generate_series(1, 500)");
    c.psql("SELECT pg_create_restore_point('mid')");
    // One transaction (psql prints both results): its start is before its commit.
    let out = c.psql(
        "INSERT INTO t SELECT generate_series(1, 500); \
         SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    );
    let committed_at = out.lines().last().unwrap().to_string();
    let committed_lsn = lsn(&c.psql("SELECT pg_current_wal_insert_lsn()"));
    c.wait_archived(&c.switch_wal());
    // Nothing may reach the repository meanwhile but what a restore test would write.
    stop_fast(c);
    let before = listing(&repo);

    // The newest backup, to the end of the archive, run by root: the server runs as postgres.
    let out = as_invoker(&a.env, &["--json"]);
    let text = stdout(&out);
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}\n{}", stderr(&out)));
    assert_eq!(code(&out), 0, "{v:#}\n{}", stderr(&out));
    assert_eq!(v["success"], true, "{v:#}");
    assert_eq!(v["backup"], first.as_str(), "{v:#}");
    assert_eq!(v["target"], "the end of the archive", "{v:#}");
    let recovered = &v["recovered"];
    assert!(lsn(recovered["lsn"].as_str().unwrap()) >= committed_lsn, "{v:#}");
    assert!(recovered["last_transaction_time"].as_str().unwrap() >= committed_at.as_str(), "{committed_at}: {v:#}");
    assert!(recovered["timeline"].as_u64().unwrap() >= 2, "promoted onto a new timeline: {v:#}");
    let dbs: Vec<&str> = v["databases"].as_array().unwrap().iter().map(|d| d.as_str().unwrap()).collect();
    assert_eq!(dbs, ["postgres", "template1"], "{v:#}");
    assert!(v["indexes_checked"].as_u64().unwrap() > 100, "{v:#}");
    assert_eq!(v["heap_checked"], true, "{v:#}");
    assert!(v["relations_checked"].as_u64().unwrap() > 50, "{v:#}");
    let checks = v["sql_checks"].as_array().unwrap();
    assert_eq!(checks.len(), 3, "{v:#}");
    assert!(checks.iter().all(|c| c["passed"] == true && c["database"] == "postgres"), "{v:#}");
    assert!(v["restore_seconds"].as_f64().unwrap() > 0.0 && v["replay_seconds"].as_f64().unwrap() > 0.0, "{v:#}");
    assert!(!Path::new(v["scratch_dir"].as_str().unwrap()).exists(), "{v:#}");
    assert_scratch_empty(&scratch);
    assert_eq!(listing(&repo), before, "the restore test changed the repository");

    // To the restore point, as postgres, in words: the later rows are not there, so the
    // check that wants them is false, and named.
    let out = a.env.tidewal(&["verify", "--restore-test", "--target-name", "mid"]);
    expect_exit(&out, 5, &["restore test of backup", "1 failure"]);
    let text = stdout(&out);
    assert!(text.contains("to restore point \"mid\""), "{text}");
    assert!(text.contains("ok   sql database postgres, check \"SELECT count(*) >= 1500 FROM t\""), "{text}");
    assert!(
        text.contains("BAD  sql database postgres, check \"SELECT count(*) = 2000 FROM t\": returned false"),
        "{text}"
    );
    assert!(text.contains("restore test failed: 1 failures"), "{text}");
    assert_scratch_empty(&scratch);
    assert_eq!(listing(&repo), before, "the restore test changed the repository");
    // A target needs --restore-test; "all" is not one backup.
    expect_exit(&a.env.tidewal(&["verify", "--target-name", "mid"]), 2, &["--restore-test"]);
    expect_exit(&a.env.tidewal(&["verify", "--restore-test", "--backup", "all"]), 2, &["one backup"]);

    // An index damaged on disk before a backup: its line pointers overwritten in the first
    // leaf page, header intact (no data checksums), so only amcheck sees it.
    a.cluster.start();
    let c = &a.cluster;
    let file = c.data.join(c.psql("SELECT pg_relation_filepath('c_n')"));
    c.psql("CHECKPOINT");
    stop_fast(c);
    let mut bytes = std::fs::read(&file).unwrap();
    assert!(bytes.len() > 2 * 8192);
    bytes[8192 + 24..8192 + 24 + 64].fill(0x7f);
    std::fs::write(&file, bytes).unwrap();
    a.cluster.start();
    let c = &a.cluster;
    let second = backup_id(&a.env.tidewal(&["backup"]));
    c.wait_archived(&c.switch_wal());
    stop_fast(c);
    let before = listing(&repo);
    let (rc, v, err) = run_json(&a.env, &[]);
    assert_eq!(rc, 5, "{v:#}\n{err}");
    assert_eq!((v["success"].as_bool(), v["backup"].as_str()), (Some(false), Some(second.as_str())), "{v:#}");
    let f = failures(&v);
    assert_eq!(f.len(), 1, "only the damaged index: {v:#}");
    assert_eq!((f[0].0.as_str(), f[0].1.as_str()), ("amcheck", "database postgres, public.c_n"), "{v:#}");
    assert!(f[0].2.starts_with("bt_index_check: "), "{v:#}");
    assert_scratch_empty(&scratch);
    assert_eq!(listing(&repo), before, "the restore test changed the repository");

    // A flipped byte in the first backup's archive: the restore itself fails.
    let base = repo.join(format!("backups/{first}/base.tar"));
    let mut bytes = std::fs::read(&base).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&base, bytes).unwrap();
    let before = listing(&repo);
    let (rc, v, err) = run_json(&a.env, &["--backup", &first]);
    assert_eq!(rc, 5, "{v:#}\n{err}");
    let f = failures(&v);
    assert_eq!((f.len(), f[0].0.as_str()), (1, "restore"), "{v:#}");
    assert_eq!(v["backup"], first.as_str(), "{v:#}");
    assert!(v["recovered"].is_null() && v["sql_checks"].as_array().unwrap().is_empty(), "{v:#}");
    assert_scratch_empty(&scratch);
    assert_eq!(listing(&repo), before, "the restore test changed the repository");

    // Interrupted (Ctrl-C) while a check runs: the copy is stopped and removed, and the
    // signal ends tidewal as it would have.
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&config.replace("sql = [", "sql = [\"SELECT true FROM pg_sleep(600)\", "));
    let mut child = Command::new(&a.env.bin)
        .arg("--config")
        .arg(&a.env.config)
        .args(["verify", "--restore-test", "--backup", &second])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut pid_file = None;
    wait_for("the restored copy to start", std::time::Duration::from_secs(120), || {
        let dirs = std::fs::read_dir(&scratch).unwrap().map(|e| e.unwrap().path()).collect::<Vec<_>>();
        pid_file = dirs.iter().map(|d| d.join("data/postmaster.pid")).find(|p| p.exists());
        pid_file.is_some()
    });
    // postmaster.pid: the pid, then (lines 4 and 5) the port and the socket directory.
    let mut lines = Vec::new();
    wait_for("the postmaster's pid, port and socket", std::time::Duration::from_secs(30), || {
        let text = std::fs::read_to_string(pid_file.as_ref().unwrap()).unwrap_or_default();
        lines = text.lines().map(str::to_string).collect();
        lines.len() >= 5 && !lines[4].is_empty()
    });
    let postmaster: i32 = lines[0].trim().parse().unwrap();
    // Inside the sleeping check: recovery and amcheck are done.
    wait_for("the sleeping check to run", std::time::Duration::from_secs(120), || {
        let out = as_pg(pg_bin("psql"))
            .args(["-X", "-A", "-t", "-h", lines[4].trim(), "-p", lines[3].trim(), "-U", PG_USER, "-d", "postgres"])
            .args(["-c", "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%FROM pg_sleep(600)%' AND pid <> pg_backend_pid()"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim() == "1"
    });
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGINT), "{status}");
    assert!(unsafe { libc::kill(postmaster, 0) } != 0, "the copy's postmaster {postmaster} still runs");
    assert_scratch_empty(&scratch);
    assert_eq!(listing(&repo), before, "the restore test changed the repository");
}
