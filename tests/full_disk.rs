//! A full disk, on the repository side, in the daemon's spool and on the restore side: a
//! clear error, nothing half-written visible or acknowledged, PostgreSQL keeps its WAL until
//! there is room again, and a retry then succeeds.
//! Needs root to mount small tmpfs file systems (CI runs as root).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn mount_tmpfs(dir: &Path, size: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let owner = String::from_utf8(run_ok(Command::new("id").args(["-u", PG_USER])).stdout).unwrap();
    let group = String::from_utf8(run_ok(Command::new("id").args(["-g", PG_USER])).stdout).unwrap();
    run_ok(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={size},mode=0755,uid={},gid={}", owner.trim(), group.trim()))
            .arg("tmpfs")
            .arg(dir),
    );
}

struct Unmount(Vec<std::path::PathBuf>);
impl Drop for Unmount {
    fn drop(&mut self) {
        for d in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(d).status();
        }
    }
}

#[test]
fn full_disk_loses_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("full_disk_loses_nothing needs root to mount tmpfs; not run");
        return;
    }
    let env = TestEnv::new("fulldisk");
    let repo = env.path().join("repo");
    let spool = env.path().join("small");
    mount_tmpfs(&repo, "3m");
    let _guard = Unmount(vec![repo.clone(), spool.clone()]);
    let key = env.keygen("repo.key");
    let mut c = Cluster::init(&env.pg_dir("primary"), "archive_timeout = 60\n");
    env.write_config(&format!(
        "[repository]\nurl = \"file://{}\"\nkey_file = \"{}\"\n[postgres]\nconninfo = \"{}\"\n",
        repo.display(),
        key.display(),
        c.conninfo()
    ));
    c.start();
    expect_exit(&env.tidewal(&["init"]), 0, &[]);
    c.psql(&format!("ALTER SYSTEM SET archive_command = '{} wal-push %p'", env.command_line()));
    c.psql("SELECT pg_reload_conf()");

    // Poorly compressible WAL fills 3 MiB quickly.
    c.psql(
        "CREATE TABLE junk AS SELECT md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 150000)",
    );
    let stuck = c.switch_wal();
    wait_for("the archiver to fail on a full disk", std::time::Duration::from_secs(60), || {
        c.psql("SELECT failed_count FROM pg_stat_archiver") != "0"
    });
    let failed = c.psql("SELECT last_failed_wal FROM pg_stat_archiver");
    let out = env.tidewal(&["wal-push", c.data.join("pg_wal").join(&failed).to_str().unwrap()]);
    expect_exit(&out, 6, &["No space left on device"]);
    assert!(
        c.data.join("pg_wal/archive_status").join(format!("{failed}.ready")).exists(),
        "PostgreSQL must keep {failed}"
    );

    // Whatever the repository shows opens cleanly: no half-written objects.
    let dest = env.path().join("check-segment");
    for entry in std::fs::read_dir(repo.join("wal/00000001")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        // PostgreSQL's archiver may be retrying: its upload's staging file is not an object.
        if name.contains('#') {
            continue;
        }
        assert!(name.len() == 24, "unexpected file {name} in the repository");
        expect_exit(&env.tidewal(&["wal-fetch", &name, dest.to_str().unwrap()]), 0, &[]);
    }

    // A base backup into the full repository: refused, and no backup.json, so nothing
    // claims a backup exists.
    let out = env.tidewal(&["backup"]);
    expect_exit(&out, 6, &["No space left on device"]);
    let records: Vec<_> = std::fs::read_dir(repo.join("backups"))
        .map(|d| d.flatten().filter(|b| b.path().join("backup.json").exists()).collect())
        .unwrap_or_default();
    assert!(records.is_empty(), "a failed backup left a backup.json");

    // Room again: the archiver catches up with everything it kept.
    run_ok(Command::new("mount").args(["-o", "remount,size=256m"]).arg(&repo));
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert!(last.as_str() >= stuck.as_str());
    expect_exit(&env.tidewal(&["wal-fetch", &failed, dest.to_str().unwrap()]), 0, &[]);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(c.data.join("pg_wal").join(&failed)).unwrap());

    // The backup again, now that there is room; restoring it into a full disk fails, says
    // the directory is incomplete, and --force restores it once there is room.
    let id = backup_id(&env.tidewal(&["backup"]));
    let small = env.path().join("small-target");
    mount_tmpfs(&small, "8m");
    let _guard2 = Unmount(vec![small.clone()]);
    let data = small.join("pgdata");
    let out = env.tidewal(&["restore", "--to", data.to_str().unwrap()]);
    expect_exit(&out, 6, &["No space left on device", "incomplete restore"]);
    assert!(!data.join("recovery.signal").exists());
    run_ok(Command::new("mount").args(["-o", "remount,size=256m"]).arg(&small));
    let out = env.tidewal(&["restore", "--force", "--to", data.to_str().unwrap()]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("restored backup {id}")), "{}", stdout(&out));
    run_ok(
        as_pg(pg_bin("pg_verifybackup"))
            .args(["--no-parse-wal", "-i", "recovery.signal", "-i", "postgresql.auto.conf"])
            .args(["-i", "tidewal-restore.toml"])
            .arg(&data),
    );
    let out = env.tidewal(&["verify"]);
    expect_exit(&out, 0, &[]);

    // Restoring into a full disk: exit above 125 so recovery stops, and no partial file left.
    mount_tmpfs(&spool, "1m");
    let target = spool.join("RECOVERYXLOG");
    let out = env.tidewal(&["wal-fetch", &failed, target.to_str().unwrap()]);
    expect_exit(&out, 128 + 6, &["No space left on device"]);
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "a partial file was left behind");

    // Room for the segment asked for, not for the prefetch spool beside it: the detached
    // worker stops without leaving a partial file, and the next segment comes directly.
    run_ok(Command::new("mount").args(["-o", "remount,size=20m"]).arg(&spool));
    expect_exit(&env.tidewal(&["wal-fetch", &failed, target.to_str().unwrap()]), 0, &[]);
    let worker = format!("--config {} wal-fetch .*--prefetch-worker", env.config.display());
    let prefetched = spool.join(".tidewal-prefetch");
    wait_for("the prefetch worker to start", Duration::from_secs(60), || prefetched.join(".lock").exists());
    wait_for("the prefetch worker to stop", Duration::from_secs(60), || {
        Command::new("pgrep").args(["-f", "--", &worker]).status().unwrap().code() == Some(1)
    });
    let left: Vec<String> = std::fs::read_dir(&prefetched)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n != ".lock" && n != ".identity")
        .collect();
    assert!(left.is_empty(), "the prefetch spool holds {left:?}");
    std::fs::remove_file(&target).unwrap();
    let next = format!("{}{:08X}", &failed[..16], u32::from_str_radix(&failed[16..], 16).unwrap() + 1);
    assert!(next.as_str() <= last.as_str());
    expect_exit(&env.tidewal(&["wal-fetch", &next, target.to_str().unwrap()]), 0, &[]);
    assert_eq!(std::fs::metadata(&target).unwrap().len(), 16 << 20);
}

/// Streaming mode with the spool's file system full: a segment that arrives in order is
/// held in memory and sealed from there, so the receiver never needs the spool for it and
/// goes on storing every segment, identical to the server's, and confirming them.
#[test]
fn a_full_spool_does_not_hold_streaming_back() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("a_full_spool_does_not_hold_streaming_back needs root to mount tmpfs; not run");
        return;
    }
    let a = Archiving::start("fullspool", RepoKind::File);
    let c = &a.cluster;
    c.set("archive_command", "/bin/true");
    let spool = a.env.path().join("spool");
    mount_tmpfs(&spool, "64m");
    let _guard = Unmount(vec![spool.clone()]);
    let section = format!(
        "archive = false\nstream = true\nslot = \"tidewal_spool\"\nflush_interval = \"1s\"\nspool = \"{}\"",
        spool.display()
    );
    let (port, log) = daemon_config(&a, &section);
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    d.wait_durable();
    // The spool's file system fills up (something else took the room).
    fill(&spool.join("filler"));
    let first = c.psql("SELECT pg_walfile_name(pg_current_wal_lsn())");
    // About 8 MiB of poorly compressible WAL, more than the spool has room for, over
    // several segments.
    for _ in 0..3 {
        c.psql("CREATE TABLE junk AS SELECT md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 60000)");
        c.psql("DROP TABLE junk");
        c.switch_wal();
    }
    let last = c.switch_wal();
    let stored = |seg: &str| a.repo_dir.as_ref().unwrap().join("wal/00000001").join(seg).exists();
    wait_for("the streamed segments to reach the repository", Duration::from_secs(60), || stored(&last));
    let names: Vec<String> = std::fs::read_dir(c.data.join("pg_wal"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| n.len() == 24 && n.as_str() >= first.as_str() && n.as_str() <= last.as_str())
        .collect();
    assert!(names.len() >= 3, "{names:?}");
    for seg in &names {
        assert_fetches_identical(&a.env, seg, &c.data.join("pg_wal").join(seg));
    }
    // And the server was told: the slot moved on with them.
    let lsn = c.psql("SELECT pg_current_wal_lsn()");
    let segment_start = format!("'{lsn}'::pg_lsn - (('{lsn}'::pg_lsn - '0/0'::pg_lsn) % 16777216)");
    wait_for("the slot to be confirmed", Duration::from_secs(30), || {
        c.psql(&format!(
            "SELECT restart_lsn >= {segment_start} FROM pg_replication_slots WHERE slot_name = 'tidewal_spool'"
        )) == "t"
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("daemon.spool must be a writable directory"), "{text}");
    d.stop();
    let out = a.env.tidewal(&["verify"]);
    expect_exit(&out, 0, &[]);
}

/// Write zeros to `path` until its file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).and_then(|()| f.sync_data()).is_ok() {}
}
