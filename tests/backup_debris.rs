//! What interrupted and concurrent backups leave in a file:// repository: two backups
//! started at once never mix their objects, and a `tidewal backup` killed mid-upload
//! leaves staging files (`base.tar#1`) that the next prune removes (it holds the backup
//! lease, so no backup is running).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

/// Every file under `dir` whose name is a multipart staging file (`<name>#<digits>`).
fn staging_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn concurrent_and_killed_backups_leave_nothing_behind() {
    let a = Archiving::start("debris", RepoKind::File);
    let c = &a.cluster;
    let repo = a.repo_dir.clone().unwrap();
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 1000)");

    // Two backups started at once (cron beside the scheduler): both complete under distinct
    // ids, or one is refused by the other's lease; never one record over mixed objects.
    let outs = std::thread::scope(|s| {
        let one = s.spawn(|| a.env.tidewal(&["backup"]));
        let two = s.spawn(|| a.env.tidewal(&["backup"]));
        [one.join().unwrap(), two.join().unwrap()]
    });
    let mut ids = Vec::new();
    for out in &outs {
        if code(out) == 0 {
            ids.push(stdout(out).split_whitespace().nth(1).unwrap().to_string());
        } else {
            // Only a lease refusal is fine: a collision on the same object names is not.
            expect_exit(out, 4, &[]);
            assert!(!stderr(out).contains("already exists"), "the backups collided:\n{}", stderr(out));
        }
    }
    assert!(!ids.is_empty(), "neither backup completed");
    if ids.len() == 2 {
        assert_ne!(ids[0], ids[1], "two backups share an id");
    }
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let listed = listing["backups"].as_array().unwrap();
    assert_eq!(listed.len(), ids.len(), "{listing}");
    for b in listed {
        assert!(ids.iter().any(|id| b["id"] == id.as_str()), "{listing}");
        assert_eq!(b["objects_ok"], true, "{listing}");
    }

    // A backup killed with SIGKILL while it uploads its archive.
    c.pgbench(&["-i", "-s", "20", "-q"]);
    let pidfile = a.env.path().join("backup.pid");
    let script = format!(
        "echo $$ > {}; exec {} --config {} backup",
        pidfile.display(),
        a.env.bin.display(),
        a.env.config.display()
    );
    let mut child = as_pg("sh")
        .args(["-c", &script])
        .current_dir(a.env.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let backups = repo.join("backups");
    wait_for("an upload to be staged", Duration::from_secs(120), || {
        !staging_files(&backups).is_empty() || child.try_wait().unwrap().is_some()
    });
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "the backup ended before it could be killed");
    child.wait().unwrap();
    let debris = staging_files(&backups);
    assert!(!debris.is_empty(), "the killed backup left no staging file");
    let killed_dir = debris[0].parent().unwrap().to_path_buf();
    let killed = killed_dir.file_name().unwrap().to_str().unwrap().to_string();
    assert!(!ids.contains(&killed));
    assert!(!killed_dir.join("backup.json").exists());
    // list shows it as incomplete, though only staging files are left of it.
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let incomplete = listing["incomplete_backups"].as_array().unwrap();
    assert!(incomplete.iter().any(|b| b["id"] == killed.as_str() && b["interrupted"] == false), "{listing}");

    // No backup runs now (prune takes the backup lease to know it): the next prune removes
    // all of it at once, although it is minutes old.
    let out = a.env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("interrupted backups: deleted {killed}")), "{}", stdout(&out));
    // (Under backups/: the archiver may be writing a WAL object through its own staging file.)
    assert_eq!(staging_files(&backups), Vec::<PathBuf>::new(), "staging files left after prune");
    assert!(!killed_dir.exists(), "objects of the killed backup are left");
    // The complete backups are untouched and still check out.
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["backups"].as_array().unwrap().len(), ids.len(), "{listing}");
    assert!(listing["backups"].as_array().unwrap().iter().all(|b| b["objects_ok"] == true), "{listing}");

    // An object backup.json lists goes missing: list marks the backup, and a restore of it
    // fails naming the object before writing anything.
    let newest = backup_id(&a.env.tidewal(&["backup"]));
    let obj = format!("backups/{newest}/base.tar");
    std::fs::remove_file(repo.join(&obj)).unwrap();
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let bad = listing["backups"].as_array().unwrap().iter().find(|b| b["id"] == newest.as_str()).unwrap().clone();
    assert_eq!(bad["objects_ok"], false, "{listing}");
    assert!(bad["objects_problem"].as_str().unwrap().contains(&obj), "{listing}");
    assert!(stdout(&a.env.tidewal(&["list"])).contains(&format!("not restorable: backup {newest}")));
    let dir = a.env.pg_dir("bad");
    let out = a.env.tidewal(&["restore", "--to", dir.join("pgdata").to_str().unwrap(), "--backup", &newest]);
    expect_exit(&out, 5, &[&obj, "is missing"]);
    assert!(!dir.join("pgdata").exists(), "a refused restore wrote something");

    // Nor may it anchor retention: with a one-second window the newest good backup is the
    // anchor, so it and its WAL stay.
    let good = listing["backups"].as_array().unwrap().iter().rev().find(|b| b["objects_ok"] == true).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(Duration::from_secs(2));
    let out = a.env.tidewal(&["prune", "--window", "1s"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("anchor backup {good}")), "{}", stdout(&out));
    assert!(repo.join(format!("backups/{good}/backup.json")).exists());
    let r = restore_and_start(&a, "good", &["--backup", &good, "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM t"), "1000");
}
