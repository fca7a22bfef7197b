//! A restore never writes into the repository it came from unless told to (`--as-primary`),
//! inherits nothing from an earlier restore, recovers from exactly the repository it
//! checked, and with `--force` serves nothing that an earlier attempt left behind.

mod common;

use std::path::{Path, PathBuf};

use common::*;

/// A table, a base backup, then `after` rows that only the archive holds; returns the
/// backup's first WAL segment and the last segment archived.
fn backup_then_rows(a: &Archiving, after: u32) -> (String, String) {
    let c = &a.cluster;
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 100) g");
    let out = a.env.tidewal(&["backup"]);
    expect_exit(&out, 0, &[]);
    let id = stdout(&out).split_whitespace().nth(1).unwrap().to_string();
    let out = a.env.tidewal(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let backup = v["backups"].as_array().unwrap().iter().find(|b| b["id"] == id.as_str()).unwrap().clone();
    let start = backup["start_wal"].as_str().unwrap_or_else(|| panic!("no start_wal in {backup}")).to_string();
    c.psql(&format!("INSERT INTO marks SELECT 'after', g FROM generate_series(1, {after}) g"));
    let last = c.switch_wal();
    c.wait_archived(&last);
    (start, last)
}

fn count(c: &Cluster, batch: &str) -> String {
    c.psql(&format!("SELECT count(*) FROM marks WHERE batch = '{batch}'"))
}

/// Timeline history files and WAL of timelines after the first in a file:// repository.
fn later_timelines(repo: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(repo.join("wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("00000001"))
        .collect();
    found.sort();
    found
}

#[test]
fn a_restore_is_a_copy_that_never_archives_unless_as_primary() {
    let a = Archiving::start("copy", RepoKind::File);
    backup_then_rows(&a, 50);
    let repo = a.repo_dir.clone().unwrap();

    // The default: a copy. Started, promoted, written to and switched: the repository sees nothing.
    let dir = a.env.pg_dir("copy");
    let data = dir.join("pgdata");
    let out = a.env.tidewal(&["restore", "--to", data.to_str().unwrap(), "--target-action", "promote"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("restored as a copy"), "{}", stdout(&out));
    let mut copy = Cluster::adopt(&dir, &data);
    // What the test harness appends to postgresql.conf includes archive_mode = on.
    copy.configure("");
    copy.start();
    wait_promoted(&copy);
    assert_eq!(count(&copy, "after"), "50");
    assert_eq!(copy.psql("SHOW archive_mode"), "off");
    copy.psql("INSERT INTO marks VALUES ('copy', 1)");
    let seg = copy.switch_wal();
    assert_eq!(&seg[..8], "00000002", "the copy is on a new timeline");
    copy.psql("CHECKPOINT");
    assert_eq!(copy.psql("SELECT archived_count FROM pg_stat_archiver"), "0");
    let status = std::fs::read_dir(data.join("pg_wal/archive_status")).unwrap().count();
    assert_eq!(status, 0, "a copy queues nothing for archiving");
    assert_eq!(later_timelines(&repo), Vec::<String>::new(), "the copy wrote into the source repository");
    drop(copy);

    // --as-primary: the deliberate disaster-recovery step keeps archiving on.
    let dir = a.env.pg_dir("primary2");
    let data = dir.join("pgdata");
    let out = a.env.tidewal(&["restore", "--to", data.to_str().unwrap(), "--as-primary", "--target-action", "promote"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("--as-primary"), "{}", stdout(&out));
    let mut dr = Cluster::adopt(&dir, &data);
    dr.configure("");
    dr.start();
    wait_promoted(&dr);
    assert_eq!(count(&dr, "after"), "50");
    dr.psql("INSERT INTO marks VALUES ('dr', 1)");
    let seg = dr.switch_wal();
    dr.wait_archived(&seg);
    let later = later_timelines(&repo);
    assert!(later.iter().any(|n| n.ends_with(".history")), "no history file archived: {later:?}");
    assert!(repo.join("wal").join(&seg[..8]).join(&seg).exists(), "{seg} not in the repository: {later:?}");
}

#[test]
fn a_backup_of_a_restored_cluster_restores_to_the_end() {
    let a = Archiving::start("rerestore", RepoKind::File);
    backup_then_rows(&a, 10);

    // B: restored to the end of the backup only, and promoted.
    let bdir = a.env.pg_dir("b");
    let bdata = bdir.join("pgdata");
    let out = a.env.tidewal(&["restore", "--to", bdata.to_str().unwrap(), "--immediate", "--target-action", "promote"]);
    expect_exit(&out, 0, &[]);
    let mut b = Cluster::adopt(&bdir, &bdata);
    b.configure("");
    b.start();
    wait_promoted(&b);
    assert_eq!(count(&b, "after"), "0");
    let mut origin = a.cluster;
    origin.stop_immediate();

    // B archives into a repository of its own (the same config file, now pointing there).
    let repo2 = a.env.pg_dir("repo2");
    let key = a.env.path().join("repo.key");
    a.env.write_config(&format!(
        "[repository]\nkey_file = \"{}\"\nurl = \"file://{}\"\n[postgres]\nconninfo = \"{}\"\n",
        key.display(),
        repo2.display(),
        b.conninfo()
    ));
    expect_exit(&a.env.tidewal(&["init"]), 0, &[]);
    b.psql("ALTER SYSTEM SET archive_mode = on");
    b.psql(&format!("ALTER SYSTEM SET archive_command = '{} wal-push %p'", a.env.command_line()));
    b.stop_immediate();
    b.start();
    for e in std::fs::read_dir(bdata.join("pg_wal")).unwrap().flatten() {
        if e.file_name().to_string_lossy().ends_with(".history") {
            expect_exit(&a.env.tidewal(&["wal-push", e.path().to_str().unwrap()]), 0, &[]);
        }
    }
    b.psql("INSERT INTO marks SELECT 'b-before', g FROM generate_series(1, 20) g");
    expect_exit(&a.env.tidewal(&["backup"]), 0, &[]);
    b.psql("INSERT INTO marks SELECT 'b-after', g FROM generate_series(1, 30) g");
    let last = b.switch_wal();
    b.wait_archived(&last);
    b.stop_immediate();

    // A restore of B's backup without a target replays all of B's archive: it does not
    // inherit B's recovery_target = 'immediate'.
    let b_repo = Archiving { cluster: b, s3: None, repo_dir: Some(repo2), env: a.env };
    let c = restore_and_start(&b_repo, "c", &[]);
    wait_promoted(&c);
    assert_eq!(count(&c, "b-before"), "20");
    assert_eq!(count(&c, "b-after"), "30");
    let auto = std::fs::read_to_string(c.data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("# removed by tidewal restore: recovery_target = 'immediate'"), "{auto}");
    // B's ALTER SYSTEM dropped the comments but kept the list of what B's restore added; the
    // archive_mode it changed since is B's own and stays.
    assert!(auto.contains("# removed by tidewal restore: tidewal.restore_added = 'archive_mode=off'"), "{auto}");
    assert!(auto.contains("\narchive_mode = 'on'\n"), "{auto}");
}

#[test]
fn recovery_reads_the_repository_named_on_the_command_line() {
    let a = Archiving::start("cmdline", RepoKind::File);
    backup_then_rows(&a, 40);
    let mut origin = a.cluster;
    origin.stop_immediate();
    assert!(
        !Path::new("/etc/tidewal/tidewal.toml").exists(),
        "this test needs a machine without /etc/tidewal/tidewal.toml"
    );
    let repo = a.repo_dir.as_ref().unwrap();
    let key = a.env.path().join("repo.key");
    let url = format!("file://{}", repo.display());
    let dir = a.env.pg_dir("r");
    let data = dir.join("pgdata");
    // No config file: the repository and key only on the command line.
    let restore = |key_args: &[&str]| {
        let mut cmd = as_pg(&a.env.bin);
        cmd.env_remove("TIDEWAL_CONFIG").env_remove("TIDEWAL_KEY").env_remove("TIDEWAL_KEY_FILE");
        cmd.args(["--repo", &url]).args(key_args).args(["restore", "--to", data.to_str().unwrap()]);
        cmd.current_dir(a.env.path()).output().unwrap()
    };
    // A key only in the environment would leave recovery unable to read the repository.
    let text = std::fs::read_to_string(&key).unwrap();
    let mut cmd = as_pg(&a.env.bin);
    cmd.env_remove("TIDEWAL_CONFIG").env("TIDEWAL_KEY", text.trim());
    let out = cmd.args(["--repo", &url, "restore", "--to", data.to_str().unwrap()]).output().unwrap();
    expect_exit(&out, 2, &["--key-file"]);
    assert!(!data.exists(), "a refused restore must not write anything");

    let out = restore(&["--key-file", key.to_str().unwrap()]);
    expect_exit(&out, 0, &[]);
    let fetch_config = data.join("tidewal-restore.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&fetch_config).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let written = std::fs::read_to_string(&fetch_config).unwrap();
    assert!(!written.contains(text.trim()), "key material in {written}");

    // PostgreSQL's environment points elsewhere; recovery still reads the repository restore used.
    let elsewhere = a.env.pg_dir("elsewhere");
    let mut r = Cluster::adopt(&dir, &data);
    r.configure("");
    let log = dir.join("started.log");
    let started = as_pg(pg_bin("pg_ctl"))
        .args(["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-t", "120", "start"])
        .env("TIDEWAL_REPO", format!("file://{}", elsewhere.display()))
        .env("TIDEWAL_PREFETCH", "not a number")
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", std::fs::read_to_string(&log).unwrap_or_default());
    let port = r.port;
    r.stop_immediate();
    let r = Cluster::attach(&data, &dir.join("sock"), port, &log);
    wait_promoted(&r);
    assert_eq!(count(&r, "after"), "40");
    assert_eq!(count(&r, "before"), "100");
}

/// A plausible WAL file of the right size holding nothing valid.
fn junk(path: &Path) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(16 * 1024 * 1024).unwrap();
}

#[test]
fn force_serves_nothing_an_earlier_attempt_left() {
    let a = Archiving::start("force", RepoKind::File);
    let (start, last) = backup_then_rows(&a, 60);
    let mut origin = a.cluster;
    origin.stop_immediate();
    let a = Archiving { cluster: origin, ..a };
    let dir = a.env.pg_dir("again");
    let data = dir.join("pgdata");

    // --force only ever replaces a data directory.
    let other = a.env.pg_dir("not-a-cluster");
    std::fs::write(other.join("keep.txt"), "mine").unwrap();
    expect_exit(
        &a.env.tidewal(&["restore", "--to", other.to_str().unwrap(), "--force"]),
        4,
        &["not a PostgreSQL data directory"],
    );
    assert!(other.join("keep.txt").exists());

    // An earlier attempt, with stale WAL and a history file of a timeline that never was in
    // pg_wal, and a spool of junk under the names recovery asks for.
    expect_exit(&a.env.tidewal(&["restore", "--to", data.to_str().unwrap()]), 0, &[]);
    let names: Vec<String> = std::fs::read_dir(a.repo_dir.as_ref().unwrap().join("wal/00000001"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.len() == 24 && n.as_str() >= start.as_str() && n.as_str() <= last.as_str())
        .collect();
    assert!(names.len() >= 2, "{names:?}");
    let plant = |data: &Path, identity: Option<&str>| {
        let spool = data.join("pg_wal/.tidewal-prefetch");
        std::fs::create_dir_all(&spool).unwrap();
        if let Some(id) = identity {
            std::fs::write(spool.join(".identity"), id).unwrap();
        }
        for n in &names {
            junk(&spool.join(n));
        }
        chown_pg(data);
    };
    std::fs::write(data.join("pg_wal/00000002.history"), "1\t0/1000000\tno recovery target specified\n").unwrap();
    for n in &names {
        junk(&data.join("pg_wal").join(n));
    }
    plant(&data, None);
    let stray: PathBuf = data.join("base/stray-file");
    std::fs::write(&stray, "left by the earlier attempt").unwrap();
    chown_pg(&data);

    let out = a.env.tidewal(&["restore", "--to", data.to_str().unwrap(), "--force"]);
    expect_exit(&out, 0, &[]);
    // A spool that another repository filled (and marked) is not served either.
    plant(&data, Some("repository file:///elsewhere\nsystem_identifier 1\ncreated_at x\nkey_id none\n"));
    let mut r = Cluster::adopt(&dir, &data);
    r.configure("");
    r.start();
    wait_promoted(&r);
    assert_eq!(count(&r, "before"), "100");
    assert_eq!(count(&r, "after"), "60");
    // Recovery stayed on the backup's line of history: promotion took timeline 2.
    assert_eq!(r.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    assert!(!stray.exists(), "--force leaves files the backup does not have");
    // The foreign spool was emptied, not served; any spool now is this repository's.
    let marker = std::fs::read_to_string(data.join("pg_wal/.tidewal-prefetch/.identity")).unwrap_or_default();
    assert!(!marker.contains("elsewhere"), "{marker}");
}
