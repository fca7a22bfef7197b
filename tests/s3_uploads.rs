//! Incomplete S3 multipart uploads under the repository prefix: a `tidewal backup` stopped
//! mid-upload holds the backup lease, so prune aborts only uploads idle for a day; once it
//! is killed, prune aborts every upload under `backups/` at once. A recent WAL upload and
//! anything outside the repository prefix stay. On moto's S3 server (s3s-fs cannot list
//! uploads; there prune warns and goes on).

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;

const OLD_ID: &str = "20200101T000000.000000Z-0a0b0c";
const RECENT_ID: &str = "20261101T000000.000000Z-0d0e0f";

#[test]
fn prune_aborts_interrupted_multipart_uploads() {
    let (a, moto) = Archiving::start_on_moto("s3-uploads");
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "10", "-q"]);

    // A backup stopped (SIGSTOP) once its archive upload has a part: alive, holding the lease.
    let pidfile = a.env.path().join("backup.pid");
    let script = format!("echo $$ > {}; exec {} backup", pidfile.display(), a.env.command_line());
    let mut child = as_pg("sh")
        .args(["-c", &script])
        .current_dir(a.env.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = None;
    wait_for("the backup to upload a part", Duration::from_secs(120), || {
        assert!(child.try_wait().unwrap().is_none(), "the backup ended before it could be stopped");
        running = moto.uploads().into_iter().find(|(k, id)| k.starts_with("cluster1/backups/") && moto.has_part(k, id));
        running.is_some()
    });
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let running = running.unwrap().0;

    // Debris of earlier runs. moto dates every upload's start in 2010; a part dates its
    // activity now.
    let old_backup = format!("cluster1/backups/{OLD_ID}/base.tar");
    let recent_backup = format!("cluster1/backups/{RECENT_ID}/base.tar");
    // Segments far past what the load writes: moto refuses an unsigned request on a key
    // that exists, and the archiver stores the first segments while the test runs.
    let old_wal = "cluster1/wal/00000001/000000010000004200000009".to_string();
    let recent_wal = "cluster1/wal/00000001/00000001000000420000000A".to_string();
    let elsewhere = format!("cluster2/backups/{OLD_ID}/base.tar");
    moto.start_upload(&old_backup, false);
    moto.start_upload(&recent_backup, true);
    moto.start_upload(&old_wal, false);
    moto.start_upload(&recent_wal, true);
    moto.start_upload(&elsewhere, false);
    let keys = || moto.uploads().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
    let before = keys();
    assert_eq!(before.len(), 6, "{before:?}");

    // A dry run reports and aborts nothing.
    let out = a.env.tidewal(&["prune", "--dry-run"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(&format!("interrupted backups: would delete {OLD_ID}")), "{}", stdout(&out));
    assert!(stdout(&out).contains("staging files of interrupted uploads: would delete 1"), "{}", stdout(&out));
    assert_eq!(keys(), before);

    // The stopped backup holds the lease: only what was idle for a day goes.
    let out = a.env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    let mut want = vec![recent_backup.clone(), recent_wal.clone(), elsewhere.clone(), running.clone()];
    want.sort();
    assert_eq!(keys(), want, "{}", stderr(&out));

    // Killed, it holds nothing: every upload under backups/ was interrupted, however recent.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // runuser stopped itself when its child stopped: it must go on to reap it.
    unsafe { libc::kill(child.id() as i32, libc::SIGCONT) };
    child.wait().unwrap();
    // S3 times have whole seconds: an upload whose part is as new as the store's clock is
    // not older than it yet.
    std::thread::sleep(Duration::from_secs(2));
    let out = a.env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    assert!(
        stdout(&out).contains(&format!("interrupted backups: deleted {RECENT_ID}")),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let mut want = vec![recent_wal, elsewhere];
    want.sort();
    assert_eq!(keys(), want, "{}", stderr(&out));
}

/// A server that cannot list uploads (s3s-fs): prune and backup still work, and say that the
/// bucket's lifecycle rule has to do that clean-up.
#[test]
fn a_server_without_the_listing_is_left_to_the_lifecycle_rule() {
    let a = Archiving::start("s3-no-uploads", RepoKind::S3);
    expect_exit(&a.env.tidewal(&["backup"]), 0, &[]);
    let out = a.env.tidewal(&["prune"]);
    expect_exit(&out, 0, &["left to the bucket's lifecycle rule"]);
}
