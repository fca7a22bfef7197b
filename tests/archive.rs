//! End to end: PostgreSQL archives through `tidewal wal-push`, every archived segment comes
//! back byte-identical through `tidewal wal-fetch`, and a base backup restored with
//! restore_command = 'tidewal wal-fetch %f %p' recovers exactly the archived commits.

mod common;

use std::time::Duration;

use common::*;

fn archive_and_restore(label: &str, kind: RepoKind) {
    let a = Archiving::start(label, kind);
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before-backup', g FROM generate_series(1, 500) g");
    let mut last = String::new();
    for _ in 0..3 {
        c.pgbench(&["-t", "200", "-c", "2", "-n"]);
        last = c.switch_wal();
    }
    c.wait_archived(&last);
    let mut compared = std::collections::BTreeSet::new();
    compare_archived(&a, &mut compared);

    // Base backup without WAL: recovery must get all of it from the repository.
    let base = a.env.pg_dir("base");
    std::fs::remove_dir(&base).unwrap();
    run_ok(c.client("pg_basebackup").args(["-D", base.to_str().unwrap(), "-X", "none", "-c", "fast"]));
    c.psql("INSERT INTO marks SELECT 'archived', g FROM generate_series(1, 700) g");
    c.pgbench(&["-t", "300", "-c", "2", "-n"]);
    let last = c.switch_wal();
    c.wait_archived(&last);
    let expected_accounts = c.psql("SELECT sum(abalance) FROM pgbench_accounts");

    compare_archived(&a, &mut compared);
    assert!(compared.len() >= 5, "only {} archived segments were compared", compared.len());
    check_prefetch(&a, compared.iter().next().unwrap());
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "archiver failures:\n{}", c.log());

    // A file PostgreSQL asks for that was never archived: exit 1, quietly.
    let missing = a.env.tidewal(&["wal-fetch", "0000000100000000000000FE", "/tmp/never"]);
    assert_eq!(code(&missing), 1, "{}", stderr(&missing));

    // Committed, but its segment is never archived (archive_timeout cannot pass before the
    // stop): it must not appear after restore.
    c.psql("INSERT INTO marks SELECT 'unarchived', g FROM generate_series(1, 900) g");
    let mut primary = a.cluster;
    primary.stop_immediate();

    // Restore the base backup and recover from the repository alone.
    let restored_dir = a.env.pg_dir("restored");
    let data = restored_dir.join("pgdata");
    run_ok(std::process::Command::new("cp").arg("-a").arg(&base).arg(&data));
    let mut r = restored_cluster(&restored_dir, &data);
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    std::fs::write(
        data.join("postgresql.auto.conf"),
        format!("restore_command = '{} wal-fetch %f %p'\narchive_mode = off\n", a.env.command_line()),
    )
    .unwrap();
    chown_pg(&data);
    r.start();
    wait_for("recovery to finish", Duration::from_secs(120), || r.psql("SELECT pg_is_in_recovery()") == "f");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before-backup'"), "500");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'archived'"), "700");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'unarchived'"), "0");
    assert_eq!(r.psql("SELECT sum(abalance) FROM pgbench_accounts"), expected_accounts);
    let log = r.log();
    assert!(log.contains("restored log file"), "recovery did not use restore_command:\n{log}");
    drop(r);
}

/// Every archived segment still in pg_wal opens to PostgreSQL's own bytes.
fn compare_archived(a: &Archiving, compared: &mut std::collections::BTreeSet<String>) {
    let c = &a.cluster;
    for entry in std::fs::read_dir(c.data.join("pg_wal/archive_status")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(seg) = name.strip_suffix(".done") else { continue };
        let original = c.data.join("pg_wal").join(seg);
        if !original.exists() || seg.ends_with(".history") || compared.contains(seg) {
            continue;
        }
        assert_fetches_identical(&a.env, seg, &original);
        compared.insert(seg.to_string());
    }
}

/// After serving one segment, wal-fetch has the next ones downloaded ahead into a spool
/// beside %p; the next call hands over the spooled copy, identical to a direct download.
fn check_prefetch(a: &Archiving, first: &str) {
    let seg = tidewal::pg::lsn::SegmentId::parse(first, 16 << 20).unwrap();
    let next = tidewal::pg::lsn::SegmentId { tli: seg.tli, segno: seg.segno + 1 }.file_name(16 << 20);
    let wal = a.env.pg_dir("prefetch").join("pg_wal");
    std::fs::create_dir_all(&wal).unwrap();
    chown_pg(&wal);
    let target = wal.join("RECOVERYXLOG");
    expect_exit(&a.env.tidewal(&["wal-fetch", first, target.to_str().unwrap()]), 0, &[]);
    let spooled = wal.join(".tidewal-prefetch").join(&next);
    wait_for("the next segment to be prefetched", Duration::from_secs(60), || spooled.exists());
    expect_exit(&a.env.tidewal(&["wal-fetch", &next, target.to_str().unwrap()]), 0, &["prefetched"]);
    assert!(!spooled.exists(), "the spooled copy is handed over, not copied");
    let direct = a.env.pg_dir("direct").join("RECOVERYXLOG");
    expect_exit(&a.env.tidewal(&["wal-fetch", &next, direct.to_str().unwrap()]), 0, &[]);
    assert!(std::fs::read(&target).unwrap() == std::fs::read(&direct).unwrap(), "prefetched copy differs");
}

fn restored_cluster(dir: &std::path::Path, data: &std::path::Path) -> Cluster {
    let c = Cluster::adopt(dir, data);
    c.configure("");
    c
}

#[test]
fn archive_and_restore_file_repository() {
    archive_and_restore("file", RepoKind::File);
}

#[test]
fn archive_and_restore_s3_repository() {
    archive_and_restore("s3", RepoKind::S3);
}

/// `wal-push` and `wal-fetch` (one process per file) keep a remote repository's identity
/// for a minute instead of reading it from the store on every call: with `tidewal.json`
/// gone from the store, a push still succeeds on the fresh cached copy; with the cache
/// turned off, or the copy older than a minute, the store is read and the push fails.
#[test]
fn wal_push_keeps_a_remote_repository_identity_for_a_minute() {
    let a = Archiving::start("identity-cache", RepoKind::S3);
    let seg = a.cluster.switch_wal();
    a.cluster.wait_archived(&seg);
    let file = a.cluster.data.join("pg_wal").join(&seg);
    let cache = a.env.pg_dir("cache");
    let push = |cache_dir: &std::path::Path| {
        let out = as_pg(&a.env.bin)
            .env("TIDEWAL_CACHE_DIR", cache_dir)
            .arg("--config")
            .arg(&a.env.config)
            .args(["wal-push", file.to_str().unwrap()])
            .output()
            .unwrap();
        (code(&out), stderr(&out))
    };
    let (rc, err) = push(&cache);
    assert_eq!(rc, 0, "{err}");
    let copies: Vec<_> = std::fs::read_dir(&cache).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(copies.len(), 1, "{copies:?}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&copies[0]).unwrap().permissions().mode() & 0o777, 0o600);

    let s3 = a.s3.as_ref().unwrap();
    std::fs::remove_file(s3.root.join(S3_BUCKET).join("cluster1/tidewal.json")).unwrap();
    let (rc, err) = push(&cache);
    assert_eq!(rc, 0, "the cached identity was not used:\n{err}");
    assert!(err.contains("already archived with identical content"), "{err}");

    let (rc, err) = push(std::path::Path::new(""));
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("is not initialised"), "{err}");
    // A copy older than a minute is not trusted.
    let old = std::time::SystemTime::now() - Duration::from_secs(120);
    std::fs::File::options().write(true).open(&copies[0]).unwrap().set_modified(old).unwrap();
    let (rc, err) = push(&cache);
    assert_eq!(rc, 4, "{err}");
    assert!(err.contains("is not initialised"), "{err}");
}
