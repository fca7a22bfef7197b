//! `tidewal backup` streams BASE_BACKUP into the repository; `tidewal restore` brings it
//! back (checked against the manifest, and independently by pg_verifybackup) and recovery
//! replays WAL from the repository, to the end or to a point in time.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

#[test]
fn backup_and_restore_to_the_end_and_to_a_time() {
    let a = Archiving::start("backup", RepoKind::File);
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "3", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");

    let out = a.env.tidewal(&["backup", "--label", "nightly"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
    let id = stdout(&out).split_whitespace().nth(1).unwrap().to_string();

    c.psql("INSERT INTO marks SELECT 'early', g FROM generate_series(1, 400) g");
    std::thread::sleep(Duration::from_millis(1100));
    let mark = c.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    std::thread::sleep(Duration::from_millis(1100));
    c.psql("INSERT INTO marks SELECT 'late', g FROM generate_series(1, 500) g");
    let late_lsn = c.psql("SELECT pg_current_wal_insert_lsn()");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let balance = c.psql("SELECT sum(abalance) FROM pgbench_accounts");
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    // To the end of the archive.
    let r = restore_and_start(&a, "restored", &[]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "500");
    assert_eq!(r.psql("SELECT sum(abalance) FROM pgbench_accounts"), balance);
    drop(r);

    // To a point in time between the two batches.
    let r = restore_and_start(&a, "pitr", &["--target-time", &mark, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "0");
    drop(r);

    // A fork to the same moment: promoted to a new timeline, on its own port, writable,
    // and it leaves the repository alone.
    let fork_dir = a.env.pg_dir("fork");
    let fork_data = fork_dir.join("pgdata");
    let port = free_port();
    let out = a.env.tidewal(&[
        "fork",
        "--to",
        fork_data.to_str().unwrap(),
        "--port",
        &port.to_string(),
        "--target-time",
        &mark,
        "--start",
        "--pg-bin",
        a.cluster.bin.to_str().unwrap(),
    ]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("fork running on port {port}")), "{}", stdout(&out));
    let f = Cluster::attach(&fork_data, &a.cluster.sock, port, &fork_data.join("fork.log"));
    wait_promoted(&f);
    assert_eq!(f.psql("SELECT count(*) FROM marks WHERE batch = 'early'"), "400");
    assert_eq!(f.psql("SELECT count(*) FROM marks WHERE batch = 'late'"), "0");
    f.psql("INSERT INTO marks VALUES ('fork', 1)");
    assert_eq!(f.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000002");
    f.switch_wal();
    assert!(
        !a.repo_dir.as_ref().unwrap().join("wal/00000002").exists(),
        "the fork archived into the source repository"
    );
    drop(f);

    // Refusals: a non-empty directory, and a target before the first backup.
    let busy = a.env.pg_dir("busy");
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    expect_exit(&a.env.tidewal(&["restore", "--to", busy.to_str().unwrap()]), 4, &["is not empty"]);
    assert!(Path::new(&busy.join("keep.txt")).exists());
    let empty = a.env.pg_dir("early");
    expect_exit(
        &a.env.tidewal(&["restore", "--to", empty.to_str().unwrap(), "--target-time", "2001-01-01T00:00:00Z"]),
        1,
        &["no backup finished before the target"],
    );

    // The catalog: human and JSON.
    let out = a.env.tidewal(&["list"]);
    expect_exit(&out, 0, &[]);
    for needle in [id.as_str(), "timeline 1:", "restorable from"] {
        assert!(stdout(&out).contains(needle), "list lacks {needle:?}:\n{}", stdout(&out));
    }
    let out = a.env.tidewal(&["info", "--json"]);
    expect_exit(&out, 0, &[]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["backups"][0]["id"], id.as_str());
    assert_eq!(v["backups"][0]["label"], "nightly");
    assert_eq!(v["restorable_to_wal"], last.as_str());

    // A missing segment makes later targets unreachable, and restore says so before writing.
    std::fs::remove_file(a.repo_dir.as_ref().unwrap().join(format!("wal/00000001/{last}"))).unwrap();
    let dir = a.env.pg_dir("gap");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap(), "--target-lsn", &late_lsn]);
    expect_exit(&out, 1, &["cannot be reached", &last]);
    assert!(!dir.join("pgdata").exists(), "a refused restore must not write anything");
}

#[test]
fn restore_targets_and_damaged_backups() {
    let a = Archiving::start("targets", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'base', g FROM generate_series(1, 10) g");
    let out = a.env.tidewal(&["backup"]);
    expect_exit(&out, 0, &[]);
    let id = stdout(&out).split_whitespace().nth(1).unwrap().to_string();
    c.psql("INSERT INTO marks SELECT 'a', g FROM generate_series(1, 20) g");
    c.psql("SELECT pg_create_restore_point('before-b')");
    c.psql("INSERT INTO marks SELECT 'b', g FROM generate_series(1, 30) g");
    let xid =
        c.psql("BEGIN; INSERT INTO marks SELECT 'c', g FROM generate_series(1, 40) g; SELECT txid_current(); COMMIT;");
    let xid = xid.lines().find(|l| l.chars().all(|ch| ch.is_ascii_digit()) && !l.is_empty()).unwrap().to_string();
    c.psql("INSERT INTO marks SELECT 'd', g FROM generate_series(1, 50) g");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    let counts = |r: &Cluster| {
        r.psql("SELECT string_agg(batch || '=' || n, ',' ORDER BY batch) FROM (SELECT batch, count(*) n FROM marks GROUP BY batch) s")
    };
    let r = restore_and_start(&a, "by-name", &["--target-name", "before-b", "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(counts(&r), "a=20,base=10");
    drop(r);
    let r = restore_and_start(&a, "by-xid", &["--target-xid", &xid, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(counts(&r), "a=20,b=30,base=10,c=40");
    drop(r);
    let r = restore_and_start(&a, "immediate", &["--immediate", "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(counts(&r), "base=10");
    drop(r);

    // A damaged archive is named, and nothing is declared restored.
    let obj = format!("backups/{id}/base.tar");
    let path = a.repo_dir.as_ref().unwrap().join(&obj);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let dir = a.env.pg_dir("damaged");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap()]);
    expect_exit(&out, 5, &[&obj, "failed authentication"]);
    assert!(!dir.join("pgdata/recovery.signal").exists());
}

/// The data a mark stands for: every account balance, and the history's size and sum.
const CHECKSUM: &str = "md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) || '/' || \
     (SELECT count(*) FROM pgbench_history) || '/' || (SELECT coalesce(sum(delta), 0) FROM pgbench_history)";

#[test]
fn point_in_time_recovery_under_load() {
    let a = Archiving::start("pitr", RepoKind::File);
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.psql("CREATE TABLE marks (at text, sum text)");
    let first = backup_id(&a.env.tidewal(&["backup", "--label", "before-load"]));

    let script = a.env.path().join("load.sql");
    std::fs::write(
        &script,
        "\\set aid random(1, 200000)\n\\set delta random(-5000, 5000)\nBEGIN;\n\
         UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;\n\
         INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 1, :aid, :delta, CURRENT_TIMESTAMP);\nEND;\n",
    )
    .unwrap();
    chown_pg(&script);
    let mut load = c
        .client("pgbench")
        .args(["-n", "-c", "2", "-R", "300", "-T", "14", "-f", script.to_str().unwrap(), "postgres"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // A mark is taken with writers locked out, so the moment just before its commit has
    // exactly the data its checksum describes.
    let mark = || {
        c.psql(&format!(
            "BEGIN; LOCK TABLE pgbench_accounts, pgbench_history IN SHARE MODE; \
             INSERT INTO marks SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             {CHECKSUM} FROM pgbench_accounts; COMMIT;"
        ))
    };
    let second = std::thread::scope(|s| {
        let started = std::time::Instant::now();
        let mut backup: Option<std::thread::ScopedJoinHandle<_>> = None;
        // Marks go on until the load is over and two follow the backup's end, however long
        // the backup takes on a busy machine.
        let mut marks_after = 0;
        loop {
            let done = backup.as_ref().is_some_and(|b| b.is_finished());
            mark();
            marks_after += usize::from(done);
            let loaded = load.try_wait().unwrap().is_none();
            if backup.is_none() && (started.elapsed() > Duration::from_secs(4) || !loaded) {
                backup = Some(s.spawn(|| a.env.tidewal(&["backup", "--label", "under-load"])));
            }
            if !loaded && marks_after >= 2 {
                break;
            }
            std::thread::sleep(Duration::from_millis(700));
        }
        backup_id(&backup.unwrap().join().unwrap())
    });
    assert!(load.wait().unwrap().success());
    let last = c.switch_wal();
    c.wait_archived(&last);

    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let finished = listing["backups"][1]["finished_at"].as_str().unwrap().to_string();
    assert_eq!(listing["backups"][1]["id"], second.as_str());
    let marks: Vec<(String, String)> = c
        .psql("SELECT at || ' ' || sum FROM marks ORDER BY at")
        .lines()
        .map(|l| l.split_once(' ').map(|(a, b)| (a.to_string(), b.to_string())).unwrap())
        .collect();
    let at = |m: &(String, String)| humantime::parse_rfc3339(&m.0).unwrap();
    let finished = humantime::parse_rfc3339(&finished).unwrap();
    let before: Vec<_> = marks.iter().filter(|m| at(m) < finished).collect();
    let after: Vec<_> = marks.iter().filter(|m| at(m) > finished).collect();
    assert!(
        before.len() >= 2 && after.len() >= 2,
        "marks around the backup: {} before, {} after",
        before.len(),
        after.len()
    );
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    // One mark while the second backup was still running, one just after it, and the last.
    let picks = [(before[before.len() - 1], &first), (after[0], &second), (after[after.len() - 1], &second)];
    for (i, ((when, sum), from)) in picks.into_iter().enumerate() {
        let dir = a.env.pg_dir(&format!("mark{i}"));
        let out = a.env.tidewal(&[
            "restore",
            "--to",
            dir.join("pgdata").to_str().unwrap(),
            "--target-time",
            when,
            "--target-action",
            "promote",
        ]);
        expect_exit(&out, 0, &[]);
        assert!(stdout(&out).contains(&format!("restored backup {from} ")), "mark {when}: {}", stdout(&out));
        let mut r = Cluster::adopt(&dir, &dir.join("pgdata"));
        r.configure("archive_mode = off\n");
        r.start();
        wait_promoted(&r);
        assert_eq!(&r.psql(&format!("SELECT {CHECKSUM} FROM pgbench_accounts")), sum, "data at mark {when}");
    }

    // A moment the archive does not reach yet is refused with the reachable window.
    let dir = a.env.pg_dir("future");
    let tomorrow = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(86400));
    let out = a.env.tidewal(&[
        "restore",
        "--to",
        dir.join("pgdata").to_str().unwrap(),
        "--target-time",
        &tomorrow.to_string(),
    ]);
    expect_exit(&out, 1, &["cannot be reached", "reaches", &last]);
    assert!(!dir.join("pgdata").exists());

    // The wrong key opens nothing, and says which object it could not open.
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    let key_line = config.lines().find(|l| l.starts_with("key_file")).unwrap().to_string();
    let wrong = a.env.keygen("wrong.key");
    a.env.write_config(&config.replace(&key_line, &format!("key_file = \"{}\"", wrong.display())));
    let dir = a.env.pg_dir("wrong-key");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap()]);
    expect_exit(&out, 5, &["tidewal.json", "sealed with key"]);
    assert!(!dir.join("pgdata").exists());
}

#[test]
fn tablespaces_are_restored_where_asked() {
    let a = Archiving::start("tblspc", RepoKind::File);
    let c = &a.cluster;
    let space = a.env.pg_dir("space");
    c.psql(&format!("CREATE TABLESPACE outside LOCATION '{}'", space.display()));
    c.psql("CREATE TABLE far (n int) TABLESPACE outside");
    c.psql("INSERT INTO far SELECT generate_series(1, 1000)");
    let oid = c.psql("SELECT oid FROM pg_tablespace WHERE spcname = 'outside'");
    // Leftovers of interrupted backups (ids of the old form, without a random suffix): one from
    // two days ago is removed, a recent one is not.
    let repo = a.repo_dir.clone().unwrap();
    for (id, age) in [("20200101T000000Z", 2 * 86400), ("20200102T000000Z", 3600)] {
        let obj = repo.join("backups").join(id).join("base.tar");
        std::fs::create_dir_all(obj.parent().unwrap()).unwrap();
        let f = std::fs::File::create(&obj).unwrap();
        f.set_modified(std::time::SystemTime::now() - Duration::from_secs(age)).unwrap();
    }
    chown_pg(&repo.join("backups"));
    // tidewal list shows both, and which one is interrupted.
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let incomplete = listing["incomplete_backups"].as_array().unwrap();
    assert_eq!(incomplete.len(), 2, "{listing}");
    assert_eq!(incomplete[0]["id"], "20200101T000000Z");
    assert_eq!(incomplete[0]["interrupted"], true);
    assert_eq!(incomplete[1]["interrupted"], false);
    assert!(stdout(&a.env.tidewal(&["list"])).contains("20200101T000000Z  incomplete: 1 object(s)"));
    let out = a.env.tidewal(&["backup"]);
    backup_id(&out);
    // Ids of the old form come from versions that take no backup lease (one may be writing
    // now), so the recent one stays until it is a day old.
    assert!(stderr(&out).contains("removed interrupted backup 20200101T000000Z"), "{}", stderr(&out));
    assert!(!repo.join("backups/20200101T000000Z/base.tar").exists());
    assert!(repo.join("backups/20200102T000000Z/base.tar").exists());
    c.psql("INSERT INTO far SELECT generate_series(1001, 1500)");
    let last = c.switch_wal();
    c.wait_archived(&last);

    // The original location is in use: refused, and the message says how to map it.
    let dir = a.env.pg_dir("unmapped");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap()]);
    expect_exit(&out, 4, &[&format!("tablespace {oid}"), "--tablespace-map"]);
    // --force does not make it ours: the running cluster's tablespace stays as it is.
    let live: Vec<_> = std::fs::read_dir(&space).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap(), "--force"]);
    expect_exit(&out, 4, &[&format!("tablespace {oid}"), "may be a running cluster's"]);
    assert_eq!(std::fs::read_dir(&space).unwrap().map(|e| e.unwrap().file_name()).collect::<Vec<_>>(), live);
    assert_eq!(c.psql("SELECT count(*) FROM far"), "1500");
    let out =
        a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap(), "--tablespace-map", "999=/nowhere"]);
    expect_exit(&out, 2, &["no tablespace 999", &oid]);

    let moved = a.env.pg_dir("moved");
    let map = format!("{oid}={}", moved.display());
    let r = restore_and_start(&a, "mapped", &["--tablespace-map", &map, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM far"), "1500");
    assert_eq!(std::fs::read_link(r.data.join("pg_tblspc").join(&oid)).unwrap(), moved);
    assert_eq!(
        r.psql("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = 'outside'"),
        moved.display().to_string()
    );
}

#[test]
fn restore_follows_a_promotion_to_the_new_timeline() {
    let a = Archiving::start("timeline", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE t (tli int, n int)");
    c.psql("INSERT INTO t SELECT 1, generate_series(1, 100)");
    let id = backup_id(&a.env.tidewal(&["backup"]));
    c.psql("INSERT INTO t SELECT 1, generate_series(101, 200)");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    // A failover: restored as the new primary, promoted to timeline 2, it archives into the same repository.
    let dir = a.env.pg_dir("promoted");
    let data = dir.join("pgdata");
    let out = a.env.tidewal(&["restore", "--to", data.to_str().unwrap(), "--as-primary", "--target-action", "promote"]);
    expect_exit(&out, 0, &[]);
    let mut p = Cluster::adopt(&dir, &dir.join("pgdata"));
    p.configure("");
    p.start();
    wait_promoted(&p);
    p.psql("INSERT INTO t SELECT 2, generate_series(1, 50)");
    let on_two = p.switch_wal();
    assert!(on_two.starts_with("00000002"), "{on_two}");
    p.wait_archived(&on_two);
    let repo = a.repo_dir.clone().unwrap();
    assert!(repo.join("wal/00000002.history").exists());
    // Timeline 1's segments are all still there, next to timeline 2's.
    assert!(repo.join(format!("wal/00000001/{last}")).exists());
    p.stop_immediate();

    let out = a.env.tidewal(&["list"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&on_two) && stdout(&out).contains("timeline 2)"), "{}", stdout(&out));

    // A restore of the timeline-1 backup follows the promotion by default...
    let r = restore_and_start(&a, "latest", &["--backup", &id, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(
        r.psql(
            "SELECT string_agg(tli || ':' || c, ',') FROM (SELECT tli, count(*) c FROM t GROUP BY tli ORDER BY tli) s"
        ),
        "1:200,2:50"
    );
    assert_eq!(r.psql("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"), "00000003");
    drop(r);
    // ...and stays on timeline 1 when asked.
    let r = restore_and_start(&a, "current", &["--target-timeline", "current", "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM t WHERE tli = 2"), "0");
    assert_eq!(r.psql("SELECT count(*) FROM t"), "200");
}

#[test]
fn backup_from_a_standby() {
    let a = Archiving::start("standby", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 100)");
    let standby = c.standby(&a.env.pg_dir("standby"), "");
    c.psql("INSERT INTO t SELECT generate_series(101, 200)");
    wait_for("the standby to catch up", Duration::from_secs(60), || standby.psql("SELECT count(*) FROM t") == "200");
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()"), "t");

    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(
        &config.replace("[postgres]\n", &format!("[postgres]\nstandby_conninfo = \"{}\"\n", standby.conninfo())),
    );
    let out = a.env.tidewal(&["backup", "--wal-timeout", "120s"]);
    let id = backup_id(&out);
    assert!(stderr(&out).contains("the primary switched away from WAL segment"), "{}", stderr(&out));
    c.psql("INSERT INTO t SELECT generate_series(201, 300)");
    let last = c.switch_wal();
    c.wait_archived(&last);
    drop(standby);
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    let r = restore_and_start(&a, "from-standby", &["--backup", &id, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM t"), "300");
}

#[test]
fn prune_keeps_the_window_restorable() {
    let a = Archiving::start("prune", RepoKind::File);
    let c = &a.cluster;
    // Only the test's own switches archive: the counts below compare repository states.
    c.set("archive_timeout", "0");
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 100)");
    let old = backup_id(&a.env.tidewal(&["backup"]));
    for _ in 0..3 {
        c.psql("INSERT INTO t SELECT generate_series(1, 100)");
        c.switch_wal();
    }
    let new = backup_id(&a.env.tidewal(&["backup"]));
    c.psql("INSERT INTO t SELECT generate_series(1, 100)");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let finished = humantime::parse_rfc3339(listing["backups"][1]["finished_at"].as_str().unwrap()).unwrap();
    let new_start = listing["backups"][1]["start_wal"].as_str().unwrap().to_string();
    let repo = a.repo_dir.clone().unwrap();
    let wal_before = std::fs::read_dir(repo.join("wal/00000001")).unwrap().count();

    // A host clock a window ahead of the store's (a clock jump) would make the second backup
    // the anchor: nothing is deleted, and prune says why with both times.
    let ahead = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + Duration::from_secs(7200)).to_string();
    for dry in [true, false] {
        let mut args = vec!["prune", "--window", "1h", "--now", &ahead];
        if dry {
            args.push("--dry-run");
        }
        let out = a.env.tidewal(&args);
        expect_exit(&out, 4, &["ahead of the repository store's clock", &ahead, "nothing was deleted"]);
        assert!(repo.join("backups").join(&old).join("backup.json").exists(), "a skewed prune deleted a backup");
        assert_eq!(std::fs::read_dir(repo.join("wal/00000001")).unwrap().count(), wal_before);
    }

    // Real clocks and a window shorter than the time since the second backup: it is the anchor.
    wait_for("a second to pass", Duration::from_secs(5), || {
        std::time::SystemTime::now() > finished + Duration::from_millis(1500)
    });
    let out = a.env.tidewal(&["prune", "--dry-run", "--window", "1s"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("anchor backup {new}")), "{}", stdout(&out));
    assert!(stdout(&out).contains(&format!("would delete 1 backup(s): {old}")), "{}", stdout(&out));
    assert!(repo.join("backups").join(&old).exists(), "a dry run deleted something");
    assert_eq!(std::fs::read_dir(repo.join("wal/00000001")).unwrap().count(), wal_before);

    let out = a.env.tidewal(&["prune", "--window", "1s"]);
    expect_exit(&out, 0, &[]);
    assert!(!repo.join("backups").join(&old).exists());
    assert!(repo.join("backups").join(&new).join("backup.json").exists());
    // Only WAL from the anchor's start on is left.
    for e in std::fs::read_dir(repo.join("wal/00000001")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        assert!(name.as_str() >= new_start.as_str(), "{name} is older than the anchor's start {new_start}");
    }
    // Inside the window nothing more goes, and the anchor still restores everything.
    let out = a.env.tidewal(&["prune", "--window", "1s"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("0 object(s) deleted"), "{}", stdout(&out));
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };
    let r = restore_and_start(&a, "after-prune", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM t"), "500");
}

/// A repository made with `init --cipher aes-256-gcm` seals every object but `tidewal.json`
/// with AES-256-GCM (header version 2, cipher byte 1), and backs up, verifies and restores
/// like any other, with no setting but the key.
#[test]
fn an_aes_256_gcm_repository_backs_up_and_restores() {
    let a = Archiving::start_init("aes", RepoKind::File, &[], &["--cipher", "aes-256-gcm"]);
    let c = &a.cluster;
    c.psql("CREATE TABLE marks (n int)");
    c.psql("INSERT INTO marks SELECT g FROM generate_series(1, 300) g");
    expect_exit(&a.env.tidewal(&["backup"]), 0, &[]);
    c.psql("INSERT INTO marks SELECT g FROM generate_series(1, 200) g");
    let last = c.switch_wal();
    c.wait_archived(&last);
    expect_exit(&a.env.tidewal(&["verify"]), 0, &[]);

    let repo = a.repo_dir.clone().unwrap();
    let mut seen = 0;
    for rel in files_under(&repo) {
        let head = std::fs::read(repo.join(&rel)).unwrap();
        let name = rel.display().to_string();
        if name == "tidewal.json" {
            assert_eq!((head[4], head[7]), (1, 0), "tidewal.json stays readable by older versions");
        } else if name.starts_with("backups/") && !name.ends_with("backup.json") {
            // Archives and manifests: version 3, their digest from the chunks' tags.
            assert_eq!((head[4], head[7]), (3, 1), "{name} is not a chained AES-256-GCM object");
            seen += 1;
        } else if name.starts_with("wal/") || name.starts_with("backups/") {
            assert_eq!((head[4], head[7]), (2, 1), "{name} is not sealed with AES-256-GCM");
            seen += 1;
        }
    }
    assert!(seen >= 5, "only {seen} objects looked at");

    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };
    let r = restore_and_start(&a, "restored", &[]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks"), "500");
}
