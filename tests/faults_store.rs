//! Fault suite, the object store: stopped for 60 seconds under load (s3s-fs), and a real S3
//! server that ignores conditional writes (moto 4.2.14, which predates If-None-Match).

mod common;

use std::time::{Duration, Instant};

use common::faults::*;
use common::*;

fn ready_count(c: &Cluster) -> usize {
    std::fs::read_dir(c.data.join("pg_wal/archive_status"))
        .map(|d| d.filter(|e| e.as_ref().is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".ready"))).count())
        .unwrap_or(0)
}

fn last_archived(c: &Cluster) -> String {
    c.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
}

fn failed_count(c: &Cluster) -> u64 {
    c.psql("SELECT failed_count FROM pg_stat_archiver").parse().unwrap()
}

/// The store is down for 60 s while the daemon archives an insert load: wal-push fails (it
/// never reports a segment it could not store), PostgreSQL keeps its `.ready` files, the
/// daemon's lag metric rises, and after the store returns the archive catches up: the lag
/// falls, verify passes, and a restore shows every committed row.
#[test]
fn store_down_for_a_minute_under_load() {
    const OUTAGE: Duration = Duration::from_secs(60);
    let began = Instant::now();
    let mut a = Archiving::start("faults-outage", RepoKind::S3);
    let c = &a.cluster;
    let (port, log) = daemon_config(
        &a,
        &format!(
            "pgdata = \"{}\"\nspool = \"{}\"\nsocket = \"{}\"",
            c.data.display(),
            a.env.pg_dir("spool").display(),
            a.env.path().join("tidewal.sock").display()
        ),
    );
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    let pids = a.env.pg_dir("pids");
    let load = InsertLoad::start(c, &pids, 50);
    std::thread::sleep(Duration::from_secs(2));
    let before = c.switch_wal();
    c.wait_archived(&before);

    // Down. Whatever was in flight settles within the client's retry timeout (3 s).
    a.s3.as_mut().unwrap().stop();
    let down = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let settled = last_archived(c);
    let failed_before = failed_count(c);
    let lag_early = d.metric("tidewal_wal_archive_lag_bytes").expect("the daemon answers while the store is down");
    // A new segment every few seconds, as a busier server would fill them.
    let mut pushed_by_hand = None;
    while down.elapsed() < OUTAGE - Duration::from_secs(5) {
        let seg = c.switch_wal();
        if pushed_by_hand.is_none() {
            // wal-push itself, as PostgreSQL runs it: a failure, never a false success.
            let out = a.env.tidewal(&["wal-push", c.data.join("pg_wal").join(&seg).to_str().unwrap()]);
            assert_ne!(code(&out), 0, "wal-push reported success with the store down:\n{}", stderr(&out));
            pushed_by_hand = Some(seg);
        }
        std::thread::sleep(Duration::from_secs(5));
    }
    let lag_late = d.metric("tidewal_wal_archive_lag_bytes").expect("the daemon answers while the store is down");
    assert_eq!(last_archived(c), settled, "PostgreSQL saw a segment archived while the store was down");
    assert!(failed_count(c) > failed_before, "no archive_command failed while the store was down");
    let waiting = ready_count(c);
    assert!(waiting >= 5, "PostgreSQL kept only {waiting} .ready files");
    assert!(lag_late > lag_early, "the archive lag did not rise while the store was down: {lag_early} then {lag_late}");
    println!(
        "store down {} s: {waiting} .ready files kept, lag {lag_early} -> {lag_late} bytes",
        down.elapsed().as_secs()
    );
    while down.elapsed() < OUTAGE {
        std::thread::sleep(Duration::from_millis(200));
    }

    // Back: the daemon catches up by itself; the lag falls and the .ready files go.
    a.s3.as_mut().unwrap().restart();
    wait_for("the archive to catch up", Duration::from_secs(180), || ready_count(c) == 0);
    wait_for("the lag to fall", Duration::from_secs(60), || {
        d.metric("tidewal_wal_archive_lag_bytes").is_some_and(|l| l < lag_late)
    });
    println!("caught up {} s after the store returned", down.elapsed().as_secs() - OUTAGE.as_secs());
    load.stop();
    let want = committed(c);
    let last = c.switch_wal();
    c.wait_archived(&last);
    d.wait_durable();
    let hand = pushed_by_hand.unwrap();
    assert_fetches_identical(&a.env, &hand, &c.data.join("pg_wal").join(&hand));
    expect_exit(&a.env.tidewal(&["verify"]), 0, &[]);
    drop(d);
    let r = restore_and_start(&a, "restored", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(committed(&r), want, "the restore differs from what was committed");
    println!("store outage case: {want} restored ({} s)", began.elapsed().as_secs());
}

/// moto 4.2.14 ignores If-None-Match and overwrites silently. check and init report it, and
/// tidewal refuses to write there unless told that only one writer ever writes: two racing
/// pushes of different content under one name never both succeed.
#[test]
fn a_store_that_ignores_conditional_writes_is_refused() {
    let began = Instant::now();
    let env = TestEnv::new("faults-lax");
    let moto = MotoServer::start(&env.path().join("moto.log"));
    let key = env.keygen("repo.key");
    let mut c = Cluster::init(&env.pg_dir("primary"), "");
    c.start();
    let config = |extra: &str| {
        let repo = moto.strict_repo_config("lax");
        let repo = repo.replacen("[repository.s3]", &format!("{extra}[repository.s3]"), 1);
        format!("[repository]\nkey_file = \"{}\"\n{repo}\n[postgres]\nconninfo = \"{}\"\n", key.display(), c.conninfo())
    };
    env.write_config(&config(""));

    // The probe reports it.
    let out = env.tidewal(&["check"]);
    assert!(
        stdout(&out).contains("ignores conditional writes"),
        "this test needs moto 4.2.14 (TIDEWAL_MOTO_SERVER), which ignores If-None-Match:\n{}",
        stdout(&out)
    );
    expect_exit(&out, 8, &[]);
    // init refuses, storing nothing.
    expect_exit(&env.tidewal(&["init"]), 2, &["ignores conditional writes", "require_conditional_writes"]);
    let listed = moto.http("GET", &format!("/{S3_BUCKET}?prefix=lax/"), b"").1;
    assert!(!listed.contains("tidewal.json"), "init stored its identity on a store it refused: {listed}");

    // Accepted on purpose (one writer only), init works and says what it means.
    env.write_config(&config("require_conditional_writes = false\n"));
    let out = env.tidewal(&["init"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("ignores conditional writes"), "{}", stdout(&out));

    // Without that setting, two racing pushes of different content under one name: neither
    // is stored (on such a store both could "succeed", one copy lost).
    env.write_config(&config(""));
    let seg = c.switch_wal();
    let original = c.data.join("pg_wal").join(&seg);
    let dirs = [env.pg_dir("one"), env.pg_dir("two")];
    for (i, dir) in dirs.iter().enumerate() {
        let mut bytes = std::fs::read(&original).unwrap();
        // Past the first page's header: the segment still checks out, with other content.
        bytes[1 << 20] ^= 1 + i as u8;
        std::fs::write(dir.join(&seg), bytes).unwrap();
        chown_pg(&dir.join(&seg));
    }
    let outs = std::thread::scope(|s| {
        let runs: Vec<_> = dirs
            .iter()
            .map(|dir| {
                let path = dir.join(&seg);
                let env = &env;
                s.spawn(move || env.tidewal(&["wal-push", path.to_str().unwrap()]))
            })
            .collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect::<Vec<_>>()
    });
    for out in &outs {
        expect_exit(out, 2, &["ignores conditional writes"]);
    }
    let stored = moto.http("GET", &format!("/{S3_BUCKET}?prefix=lax/wal/"), b"").1;
    assert!(!stored.contains(&seg), "a refused push stored {seg}: {stored}");

    // Nor does a daemon start on it.
    let port = free_port();
    let text = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&format!("{text}\n[daemon]\npgdata = \"{}\"\nlisten = \"127.0.0.1:{port}\"\n", c.data.display()));
    let mut daemon = Tracked::tidewal(&env, "daemon", "daemon", Some(&env.path().join("daemon.log")));
    let mut ended = None;
    wait_for("the daemon to refuse", Duration::from_secs(60), || {
        ended = daemon.child.try_wait().unwrap();
        ended.is_some()
    });
    assert_eq!(ended.unwrap().code(), Some(2));
    let text = std::fs::read_to_string(env.path().join("daemon.log")).unwrap();
    assert!(text.contains("ignores conditional writes"), "{text}");
    println!("lax store case: {} s", began.elapsed().as_secs());
}
