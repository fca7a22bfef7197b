//! Logical dumps against a real PostgreSQL: `tidewal dump --all -j 2` of two databases and a
//! role, one table brought back with `dump-restore --table`, a damaged object refused by
//! name, retention by count, and a dump killed with -9 that never counts and that prune
//! clears.

mod common;

use std::path::Path;
use std::time::Duration;

use common::faults::{files_under, staging_debris, Tracked};
use common::*;

fn psql_in(c: &Cluster, db: &str, sql: &str) -> String {
    let out = run_ok(c.client("psql").args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", db, "-c", sql]));
    stdout(&out).trim().to_string()
}

/// The id `tidewal dump` printed ("dump <id> complete: …").
fn dump_id(out: &std::process::Output) -> String {
    expect_exit(out, 0, &[]);
    stdout(out).split_whitespace().nth(1).unwrap().to_string()
}

fn listed_dumps(env: &TestEnv) -> (Vec<String>, Vec<String>) {
    let out = env.tidewal(&["list", "--json"]);
    expect_exit(&out, 0, &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids = |k: &str| -> Vec<String> {
        v[k].as_array().unwrap().iter().map(|d| d.get("id").unwrap_or(d).as_str().unwrap().to_string()).collect()
    };
    (ids("dumps"), ids("incomplete_dumps"))
}

/// Files under `dumps/<id>/` of a file:// repository.
fn dump_files(repo: &Path, id: &str) -> Vec<std::path::PathBuf> {
    files_under(&repo.join("dumps").join(id))
}

#[test]
fn dump_restore_retention_and_interruption() {
    let a = Archiving::start("dump", RepoKind::File);
    let (c, env) = (&a.cluster, &a.env);
    let repo = a.repo_dir.clone().unwrap();
    let base_config = std::fs::read_to_string(&env.config).unwrap();
    c.psql("CREATE ROLE reporter LOGIN");
    c.psql("CREATE DATABASE app");
    psql_in(c, "app", "CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 20000) g");
    psql_in(c, "app", "CREATE TABLE other AS SELECT generate_series(1, 1000) AS g");
    c.psql("CREATE TABLE ledger AS SELECT generate_series(1, 500) AS n");

    // Every database and the globals, pg_dump with two jobs.
    let first = dump_id(&env.tidewal(&["dump", "--all", "-j", "2"]));
    let out = env.tidewal(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dumped = &v["dumps"][0];
    assert_eq!(dumped["id"], first.as_str());
    let names: Vec<&str> =
        dumped["databases"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["app", "postgres"]);
    assert_eq!(dumped["objects_ok"], true);
    assert!(dumped["server_version"].as_str().unwrap().starts_with("15"), "{dumped}");
    assert_eq!(dumped["jobs"], 2);
    // The role is in the globals.
    let out = env.tidewal(&["dump-restore", "--dump", &first, "--globals"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("CREATE ROLE reporter"), "{}", stdout(&out));

    // A table dropped by mistake comes back, alone, into a new database.
    psql_in(c, "app", "DROP TABLE t");
    let out =
        env.tidewal(&["dump-restore", "--dump", &first, "--db", "app", "--to-db", "newdb", "--table", "t", "--create"]);
    expect_exit(&out, 0, &[]);
    assert_eq!(psql_in(c, "newdb", "SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) = md5(string_agg(md5(id::text), ',' ORDER BY id)) FROM t"), "20000|200010000|t");
    assert_eq!(psql_in(c, "newdb", "SELECT count(*) FROM pg_class WHERE relname = 'other'"), "0");
    // Several databases and no --db: refused, naming them.
    let out = env.tidewal(&["dump-restore", "--dump", &first, "--to-db", "x", "--create"]);
    expect_exit(&out, 2, &["several databases (app, postgres)"]);

    // A second dump, custom format, of one database; retention keeps one: the older goes.
    let second = dump_id(&env.tidewal(&["dump", "--db", "app", "--format", "custom"]));
    let out = env.tidewal(&["verify", "--backup", "all"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("with 2 dumps ("), "{}", stdout(&out));
    env.write_config(&format!("{base_config}\n[dump]\nkeep = 1\n"));
    let out = env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("dumps: keeping 1, deleted 1: {first}")), "{}", stdout(&out));
    assert_eq!(listed_dumps(env), (vec![second.clone()], vec![]));
    assert!(dump_files(&repo, &first).is_empty(), "{:?}", dump_files(&repo, &first));
    assert!(!dump_files(&repo, &second).is_empty());

    // One byte changed inside the dump's archive: refused before the target is touched,
    // naming the object.
    let obj = repo.join("dumps").join(&second).join("db1.dump");
    let mut bytes = std::fs::read(&obj).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&obj, &bytes).unwrap();
    let out = env.tidewal(&["dump-restore", "--dump", &second, "--to-db", "broken", "--create"]);
    expect_exit(&out, 5, &[&format!("dumps/{second}/db1.dump")]);
    assert_eq!(c.psql("SELECT count(*) FROM pg_database WHERE datname = 'broken'"), "0");
    let out = env.tidewal(&["verify", "--backup", "all"]);
    expect_exit(&out, 5, &[]);
    assert!(stdout(&out).contains(&format!("BAD  dumps/{second}/db1.dump")), "{}", stdout(&out));

    // pg_dump older than the server: refused before anything is stored.
    let old = env.pg_dir("oldbin");
    std::fs::write(old.join("pg_dump"), "#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.9'\n").unwrap();
    std::fs::set_permissions(old.join("pg_dump"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    env.write_config(&format!("{base_config}\n[dump]\npg_bin = \"{}\"\n", old.display()));
    let out = env.tidewal(&["dump", "--db", "app"]);
    expect_exit(&out, 2, &["dump.pg_bin", "14.9, older than PostgreSQL 15"]);
    assert_eq!(std::fs::read_dir(repo.join("dumps")).unwrap().count(), 1);

    // A dump killed with -9 (pg_dump held back by a wrapper, once the globals are stored):
    // never listed as a dump, refused by dump-restore, and prune clears what it left.
    let slow = env.pg_dir("slowbin");
    for (tool, delay) in [("pg_dump", "sleep 60"), ("pg_dumpall", "")] {
        let real = pg_bin(tool);
        let script = format!(
            "#!/bin/sh\ncase \"$1\" in --version) exec {real} \"$@\";; esac\n{delay}\nexec {real} \"$@\"\n",
            real = real.display()
        );
        let path = slow.join(tool);
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    }
    let scratch = env.pg_dir("scratch");
    env.write_config(&format!(
        "{base_config}\n[dump]\nkeep = 1\npg_bin = \"{}\"\nscratch_dir = \"{}\"\n",
        slow.display(),
        scratch.display()
    ));
    let mut killed = Tracked::tidewal(env, "dump", "dump --db app", Some(&env.path().join("killed.log")));
    let mut third = String::new();
    wait_for("the killed dump's globals", Duration::from_secs(60), || {
        let found = std::fs::read_dir(repo.join("dumps")).into_iter().flatten().flatten().find(|e| {
            let id = e.file_name().to_string_lossy().into_owned();
            id != second && e.path().join("globals.sql").exists()
        });
        if let Some(e) = found {
            third = e.file_name().to_string_lossy().into_owned();
        }
        // The staging directory is made just after the globals are stored: under load the
        // kill could land in between.
        !third.is_empty() && std::fs::read_dir(&scratch).unwrap().count() == 1
    });
    assert!(killed.kill9(), "the dump ended before it was killed");
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 1, "the killed dump's staging directory");
    assert_eq!(listed_dumps(env), (vec![second.clone()], vec![third.clone()]));
    let out = env.tidewal(&["dump-restore", "--dump", &third, "--to-db", "x", "--create"]);
    expect_exit(&out, 1, &["no dump"]);
    let out = env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("interrupted dumps: deleted {third}")), "{}", stdout(&out));
    assert!(dump_files(&repo, &third).is_empty(), "{:?}", dump_files(&repo, &third));
    assert!(staging_debris(&repo.join("dumps")).is_empty());
    // Its staging directory on this host too (pg_dump died with it).
    assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    assert_eq!(listed_dumps(env), (vec![second], vec![]));
}

/// `[dump] interval`: the daemon takes a dump at once when there is none, never beside its
/// base backup (both hold the backup lock).
#[test]
fn daemon_takes_scheduled_dumps() {
    let a = Archiving::start("dumpd", RepoKind::File);
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!("{config}\n[dump]\ninterval = \"1h\"\n"));
    let (port, log) = daemon_config(&a, "");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("a scheduled dump", Duration::from_secs(120), || {
        d.metric("tidewal_last_dump_timestamp_seconds").is_some_and(|v| v > 0.0)
    });
    assert_eq!(d.metric("tidewal_last_dump_success"), Some(1.0));
    wait_for("the first base backup", Duration::from_secs(120), || {
        d.metric("tidewal_repo_backups").is_some_and(|v| v >= 1.0)
    });
    d.stop();
    let out = a.env.tidewal(&["list", "--json"]);
    expect_exit(&out, 0, &[]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let dumps = v["dumps"].as_array().unwrap();
    assert_eq!(dumps.len(), 1, "{v}");
    let names: Vec<&str> =
        dumps[0]["databases"].as_array().unwrap().iter().map(|d| d["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["postgres"]);
    // One after the other (a second of slack: a backup's start is recorded in whole seconds).
    let t = |s: &serde_json::Value| humantime::parse_rfc3339(s.as_str().unwrap()).unwrap();
    let backup = &v["backups"][0];
    let (b_start, b_end) = (t(&backup["started_at"]), t(&backup["finished_at"]));
    let (d_start, d_end) = (t(&dumps[0]["started_at"]), t(&dumps[0]["finished_at"]));
    assert!(
        d_start >= b_end || d_end <= b_start + Duration::from_secs(1),
        "dump {d_start:?}..{d_end:?} beside backup {b_start:?}..{b_end:?}"
    );
}
