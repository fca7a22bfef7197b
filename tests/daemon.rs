//! `tidewal daemon` against a real cluster: it takes the first base backup at start, uploads
//! `.ready` files ahead of PostgreSQL's archiver under a write burst without losing any,
//! reports lag and repository figures on /metrics and /healthz, survives kill -9 without
//! leaving gaps or partial objects, and stops cleanly on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::pgver::major_bin;
use common::*;

fn ready_count(c: &Cluster) -> usize {
    std::fs::read_dir(c.data.join("pg_wal/archive_status"))
        .map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready"))).count())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[test]
fn daemon_archives_ahead_backs_up_and_reports() {
    let a = Archiving::start("daemon", RepoKind::File);
    let c = &a.cluster;
    // Background writers would keep the lag above 0 where the test expects an idle cluster.
    c.set("autovacuum", "off");
    let (port, log) = daemon_config(
        &a,
        &format!(
            "pgdata = \"{}\"\narchive_parallel = 4\nsocket = \"{}\"",
            c.data.display(),
            a.env.path().join("tidewal.sock").display()
        ),
    );
    let d = Daemon::start(&a.env, port, &log);

    // No backup yet: the scheduler takes one at start.
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["backups"][0]["label"], "tidewal daemon");

    // A write burst: nothing lost, and .ready files do not pile up.
    let burst = std::thread::scope(|s| {
        let load = s.spawn(|| c.pgbench(&["-i", "-s", "8", "-q"]));
        let mut most = 0;
        while !load.is_finished() {
            most = most.max(ready_count(c));
            std::thread::sleep(Duration::from_millis(50));
        }
        load.join().unwrap();
        most
    });
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", c.log());
    let archived: u64 = c.psql("SELECT archived_count FROM pg_stat_archiver").parse().unwrap();
    assert!(archived >= 8, "only {archived} files archived");
    let stored = d.metric("tidewal_wal_segments_archived_total").unwrap_or(0.0);
    // Who stores a file first is a race; the daemon must have won some of it.
    assert!(stored >= 1.0, "the daemon stored none of {archived} files ahead of the archiver");
    println!("the daemon stored {stored} of {archived} files before PostgreSQL's archiver");
    // Every segment PostgreSQL archived is in the repository, byte for byte.
    let mut checked = 0;
    for e in std::fs::read_dir(c.data.join("pg_wal/archive_status")).unwrap() {
        let name = e.unwrap().file_name().into_string().unwrap();
        let Some(seg) = name.strip_suffix(".done") else { continue };
        let original = c.data.join("pg_wal").join(seg);
        if seg.len() == 24 && original.exists() {
            assert_fetches_identical(&a.env, seg, &original);
            checked += 1;
        }
    }
    assert!(checked >= 3, "only {checked} segments compared");
    let listing = stdout(&a.env.tidewal(&["list"]));
    assert!(!listing.contains("gap:"), "{listing}");
    // wal-push latency as PostgreSQL saw it (the daemon usually got there first).
    let mut ms: Vec<u64> = c
        .log()
        .lines()
        .filter(|l| l.contains("archived"))
        .filter_map(|l| {
            l.rsplit_once(" ms").and_then(|(h, _)| h.rsplit(|ch: char| !ch.is_ascii_digit()).next()?.parse().ok())
        })
        .collect();
    ms.sort_unstable();
    assert!(!ms.is_empty(), "no wal-push timings in the server log");
    println!(
        "burst: {archived} files archived, at most {burst} .ready at once; wal-push p50 {} ms, p99 {} ms over {} calls",
        percentile(&ms, 0.5),
        percentile(&ms, 0.99),
        ms.len()
    );
    assert!(burst <= 12, "{burst} .ready files piled up");
    // wal-push asked the daemon rather than uploading by itself.
    assert!(c.log().contains("via the daemon"), "wal-push never went through the daemon:\n{}", c.log());

    // Lag: WAL written but not yet in a complete segment ages; once archived it is 0.
    let lag_zero = |what: &str| {
        wait_for(what, Duration::from_secs(30), || d.metric("tidewal_wal_archive_lag_seconds") == Some(0.0))
    };
    c.psql("CHECKPOINT");
    let last = c.switch_wal();
    c.wait_archived(&last);
    lag_zero("lag 0 after the burst");
    c.psql("CREATE TABLE lag (n int); INSERT INTO lag VALUES (1)");
    // It grows while the WAL waits in an open segment (however busy the machine is).
    wait_for("the lag to grow past 2 s", Duration::from_secs(30), || {
        d.metric("tidewal_wal_archive_lag_seconds").is_some_and(|l| l >= 2.0)
    });
    assert!(d.metric("tidewal_wal_archive_lag_bytes").unwrap() > 0.0);
    let last = c.switch_wal();
    c.wait_archived(&last);
    lag_zero("lag back to 0");

    // Metric names and types, and health.
    let (_, body) = d.get("/metrics").unwrap();
    for (name, kind) in [
        ("tidewal_wal_archive_lag_seconds", "gauge"),
        ("tidewal_wal_archive_lag_bytes", "gauge"),
        ("tidewal_last_base_backup_timestamp_seconds", "gauge"),
        ("tidewal_repo_backups", "gauge"),
        ("tidewal_wal_segments_archived_total", "counter"),
        ("tidewal_uploaded_bytes_total", "counter"),
        ("tidewal_wal_upload_seconds", "histogram"),
    ] {
        assert!(body.contains(&format!("# TYPE {name} {kind}")), "{name} is not a {kind}:\n{body}");
    }
    let (status, health) = d.get("/healthz").unwrap();
    assert!(status.contains("200"), "{status} {health}");
    let h: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(h["status"], "ok", "{health}");

    // SIGHUP: the configuration is read again and the tasks start over with it.
    d.signal(1);
    wait_for("the reload", Duration::from_secs(30), || {
        std::fs::read_to_string(&log).unwrap().contains("configuration reloaded")
            && d.get("/healthz").is_some()
            && a.env.path().join("tidewal.sock").exists()
    });

    // A backup on demand, taken by the daemon.
    let out = a.env.tidewal(&["backup", "--via-daemon"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("taken by the daemon"), "{}", stdout(&out));
    assert_eq!(d.metric("tidewal_repo_backups"), Some(2.0));
    // One taken beside the daemon counts at once too (it tells the daemon on its socket).
    expect_exit(&a.env.tidewal(&["backup"]), 0, &[]);
    assert_eq!(d.metric("tidewal_repo_backups"), Some(3.0));

    // kill -9 in the middle of a burst, then a restart: no gap, nothing half-written.
    let load = std::thread::scope(|s| {
        let load = s.spawn(|| c.pgbench(&["-i", "-s", "4", "-q"]));
        std::thread::sleep(Duration::from_millis(1500));
        d.signal(9);
        load.join()
    });
    load.unwrap();
    drop(d);
    let d = Daemon::start(&a.env, port, &log);
    let last = c.switch_wal();
    c.wait_archived(&last);
    let out = a.env.tidewal(&["list", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let runs = v["wal"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "WAL has gaps after kill -9: {runs:?}");
    for e in walk(&a.repo_dir.clone().unwrap()) {
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.contains('#') && !name.starts_with('.'), "a partial object is visible: {}", e.display());
    }

    // SIGTERM: a clean stop.
    let began = Instant::now();
    let status = d.stop();
    assert!(status.success(), "exit status {status:?}");
    assert!(began.elapsed() < Duration::from_secs(60));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("tidewal daemon stopped"), "{text}");
    // Without the daemon, --via-daemon says so, and wal-push uploads by itself.
    expect_exit(&a.env.tidewal(&["backup", "--via-daemon"]), 9, &["did not answer", "is it running"]);
    c.psql("INSERT INTO lag VALUES (2)");
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", c.log());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Streaming mode with a 1 s flush interval: kill -9 the primary, destroy its pg_wal, and
/// restore from the repository. Only the last interval's commits may be missing.
#[test]
fn streaming_loses_at_most_the_last_flush_interval() {
    let a = Archiving::start("stream", RepoKind::File);
    let c = &a.cluster;
    // Only the receiver stores WAL here: the archiver's command does nothing.
    c.set("archive_command", "/bin/true");
    let (port, log) =
        daemon_config(&a, "archive = false\nstream = true\nslot = \"tidewal_test\"\nflush_interval = \"1s\"");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    assert_eq!(c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tidewal_test'"), "1");
    wait_for("the slot's retained WAL in the metrics", Duration::from_secs(30), || {
        d.metric("tidewal_slot_retained_wal_bytes").is_some()
    });
    c.psql("CREATE TABLE t (n int PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())");

    // A steady stream of small commits, then the primary dies mid-stream.
    let writer = c
        .client("psql")
        .args(["-X", "-q", "-d", "postgres", "-c"])
        .arg("DO $$ BEGIN FOR i IN 1..1000000 LOOP INSERT INTO t (n) VALUES (i); COMMIT; PERFORM pg_sleep(0.005); END LOOP; END $$")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // The daemon dies mid-stream and comes back: the slot resumes where the repository ends.
    let mut d = d;
    d.signal(9);
    let _ = d.child.wait();
    drop(d);
    let d = Daemon::start(&a.env, port, &log);
    // A mark inside the segment being streamed: only its .stream copy holds it.
    let mark = c.psql("SELECT count(*) || ' ' || pg_current_wal_lsn() FROM t");
    let (mark_rows, mark_lsn) = mark.split_once(' ').unwrap();
    let mark_rows: i64 = mark_rows.parse().unwrap();
    // The restarted daemon has stored the mark.
    c.wait_slot_past("tidewal_test", mark_lsn);
    // The newest commit just before the kill: what is lost is measured from it, not from
    // the kill, so a writer held up on a busy machine does not count as loss.
    let newest = c.psql("SELECT to_char(max(at) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM t");
    let killed_at = std::time::SystemTime::now();
    c.kill_hard();
    let mut writer = writer;
    let _ = writer.wait();
    for e in std::fs::read_dir(c.data.join("pg_wal")).unwrap().flatten() {
        if e.path().is_file() {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    d.stop();
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };

    // tidewal list and restore know the streamed copy reaches further than whole segments.
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["restorable_to_streamed"], true, "{listing}");
    let r = restore_and_start(&a, "to-mark", &["--target-lsn", mark_lsn, "--target-action", "promote"]);
    wait_promoted(&r);
    let at_mark: i64 = r.psql("SELECT count(*) FROM t").parse().unwrap();
    assert!(at_mark >= mark_rows, "{at_mark} rows at the mark, {mark_rows} before it");
    drop(r);
    let r = restore_and_start(&a, "restored", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert!(r.log().contains(".stream"), "the streamed copy was not used:\n{}", r.log());
    let last: i64 = r.psql("SELECT coalesce(max(n), 0) FROM t").parse().unwrap();
    assert!(last > 100, "only {last} rows came back");
    // Nothing earlier is missing...
    assert_eq!(r.psql("SELECT count(*) FROM t").parse::<i64>().unwrap(), last);
    // ... and what is missing was committed within the last flush interval (plus the upload).
    let last_at = r.psql(&format!(
        "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM t WHERE n = {last}"
    ));
    let last_at = humantime::parse_rfc3339(&last_at).unwrap();
    let rpo = killed_at.duration_since(last_at).unwrap_or_default();
    println!("streaming RPO: the last restored commit was {:.2}s before the kill ({last} rows)", rpo.as_secs_f64());
    let lost = humantime::parse_rfc3339(&newest).unwrap().duration_since(last_at).unwrap_or_default();
    assert!(lost < Duration::from_secs(3), "lost {lost:?} of commits with a 1 s flush interval");
}

/// The failover tests' table: rows 1 to 100 on timeline 1, and a base backup.
fn rows_and_a_backup(a: &Archiving) {
    a.cluster.psql("CREATE TABLE t (n int PRIMARY KEY, tli int)");
    a.cluster.psql("INSERT INTO t SELECT i, 1 FROM generate_series(1, 100) i");
    expect_exit(&a.env.tidewal(&["backup"]), 0, &[]);
}

/// The daemon stops and every server is gone: the repository alone brings back rows 1 to
/// 300 of timeline 1 and 301 to 500 of timeline 2.
fn restored_rows(d: Daemon, standby: Cluster, a: Archiving) {
    d.stop();
    drop(standby);
    let r = restore_and_start(&a, "after-failover", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) || ':' || sum(tli) FROM t"), "500:700");
}

/// Streaming from a standby that is promoted: the receiver follows the switch onto the new
/// timeline without a gap, its own copy of the switch segment does not collide with the
/// `.partial` the promoted server archives, and the repository restores every row written
/// on either timeline.
#[test]
fn streaming_follows_a_promotion() {
    let a = Archiving::start("failover", RepoKind::File);
    let c = &a.cluster;
    rows_and_a_backup(&a);
    let standby = c.standby(&a.env.pg_dir("standby"), "");
    c.psql("INSERT INTO t SELECT i, 1 FROM generate_series(101, 200) i");
    let last = c.switch_wal();
    c.wait_archived(&last);

    // The daemon streams from the standby (as a backup host offloading the primary would).
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&config.replace(&c.conninfo(), &standby.conninfo()));
    let (port, log) =
        daemon_config(&a, "archive = false\nstream = true\nslot = \"tidewal_ha\"\nflush_interval = \"1s\"");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the slot on the standby", Duration::from_secs(30), || {
        standby.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tidewal_ha' AND active") == "1"
    });
    c.psql("INSERT INTO t SELECT i, 1 FROM generate_series(201, 300) i");
    wait_for("the standby to catch up", Duration::from_secs(60), || standby.psql("SELECT count(*) FROM t") == "300");
    d.wait_durable();

    // Failover: the primary dies, the standby is promoted and takes writes on timeline 2.
    let mut primary = a.cluster;
    primary.stop_immediate();
    standby.promote();
    standby.psql("INSERT INTO t SELECT i, 2 FROM generate_series(301, 400) i");
    let switched = standby.switch_wal();
    assert!(switched.starts_with("00000002"), "{switched}");
    standby.wait_archived(&switched);
    standby.psql("INSERT INTO t SELECT i, 2 FROM generate_series(401, 500) i");
    d.wait_durable();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("timeline 1 ended; timeline 2 starts at"), "{text}");
    // The promoted server archived its own .partial of the switch segment beside the
    // receiver's copy, without a conflict.
    assert_eq!(standby.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", standby.log());
    let repo = a.repo_dir.clone().unwrap();
    let old_tli: Vec<String> = std::fs::read_dir(repo.join("wal/00000001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(old_tli.iter().any(|n| n.ends_with(".partial")), "{old_tli:?}");
    let stream = old_tli.iter().find(|n| n.ends_with(".stream")).expect("the receiver's copy of the switch segment");
    // Recovery never gets it: past the switch it may hold WAL the new timeline does not have.
    let fetched = a.env.path().join("fetched");
    let out = a.env.tidewal(&["wal-fetch", stream.trim_end_matches(".stream"), fetched.to_str().unwrap()]);
    expect_exit(&out, 1, &[]);
    assert!(!fetched.exists());
    assert!(repo.join("wal/00000002.history").exists());
    // Both the archiver and the receiver stored the completed timeline-2 segment: one object.
    assert!(repo.join("wal/00000002").join(&switched).exists());
    assert_eq!(standby.psql("SELECT archived_count > 0 FROM pg_stat_archiver"), "t");

    // The new primary dies too; the repository alone brings back all 500 rows.
    restored_rows(d, standby, Archiving { cluster: primary, ..a });
}

/// A failover to a standby that has no slot: the daemon streamed from the primary, which
/// dies; the standby is promoted and takes writes before the daemon is pointed at it
/// (SIGHUP). The receiver resumes where the repository's streamed WAL ends, not at the new
/// slot's position, so the WAL written between the promotion and the reconnect is not lost.
#[test]
fn streaming_resumes_after_a_failover_to_a_server_without_the_slot() {
    let a = Archiving::start("noslot", RepoKind::File);
    let c = &a.cluster;
    rows_and_a_backup(&a);
    // From here on only the receiver stores WAL (the standby inherits this too).
    c.set("archive_command", "/bin/true");
    let standby = c.standby(&a.env.pg_dir("standby"), "wal_keep_size = '1GB'\n");
    let (port, log) =
        daemon_config(&a, "archive = false\nstream = true\nslot = \"tidewal_ha\"\nflush_interval = \"1s\"");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("streaming", Duration::from_secs(30), || {
        c.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tidewal_ha' AND active") == "1"
    });
    c.psql("INSERT INTO t SELECT i, 1 FROM generate_series(101, 200) i");
    c.switch_wal();
    c.psql("INSERT INTO t SELECT i, 1 FROM generate_series(201, 300) i");
    wait_for("the standby to catch up", Duration::from_secs(60), || standby.psql("SELECT count(*) FROM t") == "300");
    d.wait_durable();

    let mut primary = a.cluster;
    primary.stop_immediate();
    standby.promote();
    // Writes on timeline 2, over more than one segment, before the daemon gets there.
    standby.psql("INSERT INTO t SELECT i, 2 FROM generate_series(301, 400) i");
    standby.switch_wal();
    standby.psql("INSERT INTO t SELECT i, 2 FROM generate_series(401, 450) i");
    standby.switch_wal();
    // A new slot reserves WAL from the last checkpoint on: after this one, the timeline-2
    // WAL above is older than anything the new slot holds.
    standby.psql("CHECKPOINT");
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&config.replace(&primary.conninfo(), &standby.conninfo()));
    d.signal(1);
    wait_for("the new slot", Duration::from_secs(60), || {
        standby.psql("SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'tidewal_ha' AND active") == "1"
    });
    standby.psql("INSERT INTO t SELECT i, 2 FROM generate_series(451, 500) i");
    d.wait_durable();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("(it was created anew: a failover?): resuming from"), "{text}");
    assert!(text.contains("timeline 1 ended; timeline 2 starts at"), "{text}");

    restored_rows(d, standby, Archiving { cluster: primary, ..a });
}

/// The slot is dropped while the daemon is down and the server recycles the WAL nobody kept:
/// the restarted daemon looks for where the repository's WAL ends, finds the server no
/// longer has what follows, reports the gap (health failing), takes a base backup at once so
/// that restores reach the present again, and streams on.
#[test]
fn streaming_reports_a_gap_and_takes_a_base_backup() {
    let a = Archiving::start("gap", RepoKind::File);
    let c = &a.cluster;
    c.set("archive_command", "/bin/true");
    let (port, log) =
        daemon_config(&a, "archive = false\nstream = true\nslot = \"tidewal_gap\"\nflush_interval = \"1s\"");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t VALUES (1)");
    d.wait_durable();
    d.stop();

    // The slot is replaced by one that holds no WAL (as one invalidated by
    // max_slot_wal_keep_size does): the daemon makes it anew.
    c.psql("SELECT pg_drop_replication_slot('tidewal_gap')");
    c.psql("SELECT pg_create_physical_replication_slot('tidewal_gap', false)");
    for i in 2..5 {
        c.psql(&format!("INSERT INTO t VALUES ({i})"));
        c.switch_wal();
        c.psql("CHECKPOINT");
    }
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the gap to be reported", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap().contains("the server no longer has WAL from")
    });
    wait_for("a base backup after the gap", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(2.0));
    c.psql("INSERT INTO t VALUES (5)");
    d.wait_durable();
    let (status, body) = d.get("/healthz").unwrap();
    assert!(!body.contains("no longer has WAL"), "{status}\n{body}");

    d.stop();
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };
    // The new backup restores everything, the gap notwithstanding.
    let r = restore_and_start(&a, "after-gap", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT string_agg(n::text, ',' ORDER BY n) FROM t"), "1,2,3,4,5");
}

/// After a segment switch the server logs running-transactions records into the next
/// segment, which `archive_timeout` never switches away: on an idle server they stay
/// unarchived, hold no commit, and are no lag. A commit after them is.
#[test]
fn an_idle_servers_own_snapshots_are_no_lag() {
    let a = Archiving::start_from("daemon-idle-lag", &major_bin(17), &[]);
    let c = &a.cluster;
    c.set("autovacuum", "off");
    let (port, log) = daemon_config(&a, &format!("pgdata = \"{}\"", c.data.display()));
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    let last = c.switch_wal();
    c.wait_archived(&last);
    wait_for("lag 0", Duration::from_secs(30), || d.metric("tidewal_wal_archive_lag_seconds") == Some(0.0));

    // What the background writer logs within 15 s of the switch, asked for at once.
    let start = c.psql("SELECT pg_current_wal_lsn()");
    c.psql("SELECT pg_log_standby_snapshot()");
    c.psql("SELECT pg_log_standby_snapshot()");
    wait_for("the snapshots to be written", Duration::from_secs(10), || c.psql("SELECT pg_current_wal_lsn()") != start);
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(1000));
        assert_eq!(d.metric("tidewal_wal_archive_lag_seconds"), Some(0.0));
        assert_eq!(d.metric("tidewal_wal_archive_lag_bytes"), Some(0.0));
    }

    c.psql("CREATE TABLE t AS SELECT 1 AS n");
    wait_for("the commit's lag to grow past 2 s", Duration::from_secs(30), || {
        d.metric("tidewal_wal_archive_lag_seconds").is_some_and(|l| l >= 2.0)
    });
    d.stop();
}

/// SIGHUP while a base backup runs: the backup goes on and completes, and the configuration
/// read takes effect once it has (restarting the tasks at once would abandon it).
#[test]
fn a_reload_waits_for_the_running_base_backup() {
    let a = Archiving::start("daemon-reload-backup", RepoKind::File);
    let c = &a.cluster;
    let (port, log) = daemon_config(&a, "archive = false");
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    let first = std::fs::read_dir(a.repo_dir.as_ref().unwrap().join("backups")).unwrap().count();
    assert_eq!(first, 1);

    // Its WAL cannot be archived: the next backup stores its data, then waits for it.
    c.set("archive_command", "/bin/false");
    d.signal(10);
    let backups = a.repo_dir.as_ref().unwrap().join("backups");
    wait_for("the second backup's archive", Duration::from_secs(60), || {
        std::fs::read_dir(&backups).unwrap().flatten().any(|b| {
            std::fs::read_dir(b.path()).unwrap().flatten().any(|o| o.file_name() == "base.tar")
                && !b.path().join("backup.json").exists()
        })
    });
    let text = || std::fs::read_to_string(&log).unwrap();
    d.signal(1);
    wait_for("the reload to be put off", Duration::from_secs(30), || {
        text().contains("it takes effect when the running base backup")
    });
    std::thread::sleep(Duration::from_secs(2));
    assert!(!text().contains("abandoned"), "{}", text());
    assert!(!text().contains("configuration reloaded"), "{}", text());

    // Archiving again: the backup completes, then the configuration is reloaded.
    c.set("archive_command", &format!("{} wal-push %p", a.env.command_line()));
    wait_for("the reload", Duration::from_secs(180), || text().contains("configuration reloaded"));
    let t = text();
    let done = t.rfind("complete in").expect("the backup completed");
    assert!(done < t.find("configuration reloaded").unwrap(), "{t}");
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["backups"].as_array().unwrap().len(), 2, "{listing}");
    wait_for("the new generation", Duration::from_secs(30), || d.get("/healthz").is_some());
    d.stop();
}
