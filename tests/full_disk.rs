//! A full disk, on the repository side and on the restore side: a clear error, nothing
//! half-written visible, and PostgreSQL keeps its WAL until there is room again.
//! Needs root to mount small tmpfs file systems (CI runs as root).

mod common;

use std::path::Path;
use std::process::Command;

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
        assert!(name.len() == 24, "unexpected file {name} in the repository");
        expect_exit(&env.tidewal(&["wal-fetch", &name, dest.to_str().unwrap()]), 0, &[]);
    }

    // Room again: the archiver catches up with everything it kept.
    run_ok(Command::new("mount").args(["-o", "remount,size=256m"]).arg(&repo));
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert!(last.as_str() >= stuck.as_str());
    expect_exit(&env.tidewal(&["wal-fetch", &failed, dest.to_str().unwrap()]), 0, &[]);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(c.data.join("pg_wal").join(&failed)).unwrap());

    // Restoring into a full disk: exit above 125 so recovery stops, and no partial file left.
    mount_tmpfs(&spool, "1m");
    let target = spool.join("RECOVERYXLOG");
    let out = env.tidewal(&["wal-fetch", &failed, target.to_str().unwrap()]);
    expect_exit(&out, 128 + 6, &["No space left on device"]);
    assert_eq!(std::fs::read_dir(&spool).unwrap().count(), 0, "a partial file was left behind");
}
