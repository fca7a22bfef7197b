//! Fault suite, kill -9: the daemon, `wal-push`, `tidewal backup`, `tidewal restore` and
//! `wal-fetch` during recovery, each killed at random moments (34 kills that land) under a
//! steady insert load on a file:// repository; the daemon keeps a `[[repository.copy]]`,
//! which must come through its kills as whole as the repository. After each kind: the next run recovers by
//! itself, every visible object opens whole, the next prune leaves no staging debris and
//! no interrupted backup, and `tidewal verify` passes; at the end a restore through killed
//! `wal-fetch` calls shows exactly the rows that were committed. The moments come from a
//! seeded random source: the seed is printed, and `TIDEWAL_FAULT_SEED` replays it.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::faults::*;
use common::*;
use rand::Rng;

const DAEMON_KILLS: usize = 8;
const BACKUP_KILLS: usize = 8;
const PUSH_KILLS: usize = 8;
const RESTORE_KILLS: usize = 5;
const FETCH_KILLS: usize = 5;

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// After a kind of kill: every visible object is whole, `verify` passes, and one prune
/// leaves neither staging files nor interrupted backups.
fn assert_clean_after_prune(a: &Archiving, whole: &mut WholeObjects, what: &str, began: Instant) {
    let repo = a.repo_dir.clone().unwrap();
    whole.check_new();
    let out = a.env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    assert_eq!(staging_debris(&repo), Vec::<std::path::PathBuf>::new(), "staging debris after {what} and a prune");
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["incomplete_backups"], serde_json::json!([]), "after {what} and a prune: {listing}");
    let out = a.env.tidewal(&["verify"]);
    expect_exit(&out, 0, &[]);
    println!(
        "after {what}: {} objects opened whole, no debris after prune, verify passes ({} s in)",
        whole.opened(),
        began.elapsed().as_secs()
    );
}

/// The newest pid a wrapper recorded that is not `last`, waiting up to 30 s.
fn next_pid(pidfile: &Path, last: i32) -> Option<i32> {
    let mut pid = None;
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        pid = recorded_pid(pidfile).filter(|p| *p != last);
        if pid.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    pid
}

/// psql that may fail (the server is starting up or gone): the output when it worked.
fn try_psql(c: &Cluster, sql: &str) -> Option<String> {
    let out = c.client("psql").args(["-X", "-At", "-d", "postgres", "-c", sql]).output().ok()?;
    out.status.success().then(|| stdout(&out).trim().to_string())
}

#[test]
fn kill_nine_at_random_moments_under_load() {
    let began = Instant::now();
    let mut rng = seeded_rng("faults_kill");
    let a = Archiving::start("faults-kill", RepoKind::File);
    let c = &a.cluster;
    let pids = a.env.pg_dir("pids");
    // wal-push runs through a wrapper that records its pid, so the test can kill it.
    let push_pidfile = pids.join("wal-push.pid");
    let wrapper = pid_recording_wrapper(&pids, "wal-push.sh", &a.env.bin.display().to_string(), &push_pidfile, true);
    c.set("archive_command", &format!("{} --config {} wal-push %p", wrapper.display(), a.env.config.display()));
    // Enough data that a base backup takes a moment to upload.
    c.pgbench(&["-i", "-s", "4", "-q"]);
    let load = InsertLoad::start(c, &pids, 50);
    // After every kill: no partial object under its final name.
    let mut whole = WholeObjects::new(a.repo_dir.as_ref().unwrap(), &a.env.path().join("repo.key"));
    let (port, log) = daemon_config(
        &a,
        &format!(
            "pgdata = \"{}\"\nspool = \"{}\"\nsocket = \"{}\"",
            c.data.display(),
            a.env.pg_dir("spool").display(),
            a.env.path().join("tidewal.sock").display()
        ),
    );

    // The daemon also keeps a copy, with a round every second: its kills land in copying too.
    let copy = a.env.pg_dir("copy");
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!(
        "{config}\n[[repository.copy]]\nurl = \"file://{}\"\ninterval = \"1s\"\n",
        copy.display()
    ));
    let mut whole_copy = WholeObjects::new(&copy, &a.env.path().join("repo.key"));

    // 1. The daemon, while it archives, copies and (asked with SIGUSR1, or at its first
    // start) takes a base backup.
    for i in 0..DAEMON_KILLS {
        let mut d = Tracked::tidewal(&a.env, "daemon", "daemon", Some(&log));
        wait_for("the daemon's HTTP endpoint", Duration::from_secs(60), || http_get(port, "/healthz").is_some());
        if i % 2 == 1 {
            d.signal(libc::SIGUSR1);
        }
        let ms = rng.random_range(100..3000);
        sleep_ms(ms);
        assert!(d.kill9(), "the daemon ended by itself");
        whole.check_new();
        whole_copy.check_new();
        println!("daemon kill {}: after {ms} ms", i + 1);
    }
    // The next run recovers by itself: it archives what is ready and has a backup.
    let d = Daemon::start(&a.env, port, &log);
    wait_for("a complete base backup", Duration::from_secs(120), || {
        d.metric("tidewal_repo_backups").unwrap_or(0.0) >= 1.0
    });
    let last = c.switch_wal();
    c.wait_archived(&last);
    // The copy catches up by itself, whole: what the kills left there opens whole or is
    // staging debris that the copy's prune removes, and the copy verifies.
    let in_copy = copy.join("wal/00000001").join(&last);
    wait_for("the copy to catch up", Duration::from_secs(120), || {
        in_copy.exists()
            && serde_json::from_str::<serde_json::Value>(&stdout(&a.env.tidewal(&[
                "list",
                "--from-repo",
                "2",
                "--json",
            ])))
            .is_ok_and(|v| v["backups"].as_array().is_some_and(|b| !b.is_empty()))
    });
    assert!(d.stop().success());
    whole_copy.check_new();
    expect_exit(&a.env.tidewal(&["prune", "--from-repo", "2"]), 0, &[]);
    assert_eq!(staging_debris(&copy), Vec::<std::path::PathBuf>::new(), "staging debris in the copy after a prune");
    expect_exit(&a.env.tidewal(&["verify", "--from-repo", "2"]), 0, &[]);
    println!("the copy: {} objects opened whole, no debris after prune, verify passes", whole_copy.opened());
    assert_clean_after_prune(&a, &mut whole, "the daemon's kills", began);

    // 2. `tidewal backup`, while it streams its archives. One whole run first: how long a
    // backup takes here bounds the kill moments, so they land however fast the machine is.
    let timed = Instant::now();
    backup_id(&a.env.tidewal(&["backup"]));
    let backup_ms = (timed.elapsed().as_millis() as u64).max(100);
    let mut landed = 0;
    for _ in 0..BACKUP_KILLS * 3 {
        let mut b = Tracked::tidewal(&a.env, "backup", "backup", None);
        let ms = rng.random_range(20..backup_ms * 9 / 10);
        sleep_ms(ms);
        if b.kill9() {
            whole.check_new();
            landed += 1;
            println!("backup kill {landed}: after {ms} ms of a {backup_ms} ms backup");
        }
        if landed == BACKUP_KILLS {
            break;
        }
    }
    assert_eq!(landed, BACKUP_KILLS, "too few backup kills landed");
    let first_after = backup_id(&a.env.tidewal(&["backup"]));
    println!("the next backup, {first_after}, completed");
    assert_clean_after_prune(&a, &mut whole, "the backups' kills", began);

    // 3. wal-push, as PostgreSQL's archiver runs it: a new segment, then a kill a few
    // milliseconds into its upload. PostgreSQL retries the segment.
    let mut landed = 0;
    let mut last_pid = recorded_pid(&push_pidfile).unwrap_or(0);
    for _ in 0..PUSH_KILLS * 8 {
        c.switch_wal();
        let Some(pid) = next_pid(&push_pidfile, last_pid) else { continue };
        last_pid = pid;
        let ms = rng.random_range(0..60);
        sleep_ms(ms);
        if kill9(pid) {
            whole.check_new();
            landed += 1;
            println!("wal-push kill {landed}: after {ms} ms ({} s in)", began.elapsed().as_secs());
        }
        if landed == PUSH_KILLS {
            break;
        }
    }
    assert_eq!(landed, PUSH_KILLS, "too few wal-push kills landed");
    load.stop();
    let want = committed(c);
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert_clean_after_prune(&a, &mut whole, "wal-push's kills", began);

    // 4. `tidewal restore` of the oldest backup (the longest replay), killed while it
    // writes; the next run (--force over what the killed one left) completes.
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let oldest = listing["backups"][0]["id"].as_str().unwrap().to_string();
    let dir = a.env.pg_dir("restored");
    let data = dir.join("pgdata");
    let restore = format!("restore --to {} --force --backup {oldest} --target-action promote", data.display());
    // One whole run first: how long a restore takes here bounds the kill moments, so they
    // land while it writes however fast the machine is.
    let args: Vec<&str> = restore.split(' ').collect();
    let whole = std::time::Instant::now();
    expect_exit(&a.env.tidewal(&args), 0, &[]);
    let whole_ms = (whole.elapsed().as_millis() as u64).max(60);
    let runs_log = a.env.path().join("restore-runs.log");
    let mut landed = 0;
    for _ in 0..RESTORE_KILLS * 4 {
        let mut r = Tracked::tidewal(&a.env, "restore", &restore, Some(&runs_log));
        let ms = rng.random_range(10..whole_ms * 9 / 10);
        sleep_ms(ms);
        if r.kill9() {
            landed += 1;
            println!("restore kill {landed}: after {ms} ms of a {whole_ms} ms restore");
        }
        if landed == RESTORE_KILLS {
            break;
        }
    }
    let runs = std::fs::read_to_string(&runs_log).unwrap_or_default();
    assert_eq!(landed, RESTORE_KILLS, "too few restore kills landed; the runs said:\n{runs}");
    expect_exit(&a.env.tidewal(&args), 0, &[]);
    println!("the next restore completed ({} s in)", began.elapsed().as_secs());

    // 5. wal-fetch during recovery: each kill ends recovery (PostgreSQL stops when its
    // restore_command dies of a signal); starting the server again resumes it.
    let fetch_pidfile = pids.join("wal-fetch.pid");
    let fetch_wrapper = pid_recording_wrapper(&pids, "wal-fetch.sh", "", &fetch_pidfile, false);
    let auto = data.join("postgresql.auto.conf");
    // The restored copy's recovery, with every wal-fetch call going through the wrapper.
    let wrap = || {
        let conf = std::fs::read_to_string(&auto).unwrap();
        assert!(conf.contains("restore_command = '"), "{conf}");
        let conf = conf.replace("restore_command = '", &format!("restore_command = '{} ", fetch_wrapper.display()));
        std::fs::write(&auto, conf).unwrap();
        let adopted = Cluster::adopt(&dir, &data);
        adopted.configure("archive_mode = off\n");
        adopted
    };
    let adopted = wrap();
    let pg_log = dir.join("postgres.log");
    // Stopped on drop from here on, whatever happens.
    let r = Cluster::attach(&data, &adopted.sock, adopted.port, &pg_log);
    let mut postmaster = start_nowait(&r, &pg_log);
    let mut last_pid = 0;
    let mut landed = 0;
    let mut restored_again = 0;
    for _ in 0..FETCH_KILLS * 4 {
        // Let a few calls pass, then kill the next one a moment into its work.
        let skip = rng.random_range(0..3);
        let mut pid = 0;
        for _ in 0..=skip {
            // None: recovery asked for nothing more.
            pid = next_pid(&fetch_pidfile, last_pid).unwrap_or(0);
            last_pid = pid;
        }
        if pid == 0 {
            // Recovery got to the end before enough kills landed (the restartpoints of
            // earlier runs carried it on, and calls skipped ran out): restore again and
            // go on killing in the new recovery.
            if restored_again == 2 {
                break;
            }
            restored_again += 1;
            let _ =
                as_pg(pg_bin("pg_ctl")).args(["-D", data.to_str().unwrap(), "-m", "immediate", "-w", "stop"]).output();
            expect_exit(&a.env.tidewal(&args), 0, &[]);
            wrap();
            println!("recovery ended after {landed} wal-fetch kills: restored again");
            postmaster = start_nowait(&r, &pg_log);
            continue;
        }
        let ms = rng.random_range(0..20);
        sleep_ms(ms);
        if !kill9(pid) {
            continue;
        }
        // A call served from the prefetch spool takes a few ms: it may have ended just before
        // the signal (a zombie still takes it). Then recovery goes on and the kill missed.
        let stopping = Instant::now();
        // A miss shows as recovery's next call (a new pid) while the server runs on.
        while alive(postmaster)
            && recorded_pid(&fetch_pidfile) == Some(pid)
            && stopping.elapsed() < Duration::from_secs(20)
        {
            sleep_ms(50);
        }
        if alive(postmaster) {
            println!("wal-fetch call {} had ended before the kill after {ms} ms", skip + 1);
            continue;
        }
        landed += 1;
        println!("wal-fetch kill {landed}: call {} after {ms} ms", skip + 1);
        postmaster = start_nowait(&r, &pg_log);
        if landed == FETCH_KILLS {
            break;
        }
    }
    let log = std::fs::read_to_string(&pg_log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    assert_eq!(landed, FETCH_KILLS, "too few wal-fetch kills landed; the server's log ends:\n{}", tail.join("\n"));
    wait_for("recovery to finish", Duration::from_secs(180), || {
        assert!(alive(postmaster), "the server stopped:\n{}", std::fs::read_to_string(&pg_log).unwrap_or_default());
        try_psql(&r, "SELECT pg_is_in_recovery()").as_deref() == Some("f")
    });
    assert_eq!(committed(&r), want, "the restore differs from what was committed");
    expect_exit(&a.env.tidewal(&["verify"]), 0, &[]);
    println!("restored through killed wal-fetch calls: {want} ({} s in)", began.elapsed().as_secs());
}
