//! `tidewal copy --to URL`: a second copy of a real repository, usable on its own.

mod common;

use common::*;

/// Copy, copy again (nothing new), refuse a differing object and another repository, then
/// verify and restore from the copy alone.
#[test]
fn copy_to_a_second_store_and_restore_from_it() {
    let a = Archiving::start("copy", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");
    backup_id(&a.env.tidewal(&["backup"]));
    c.psql("INSERT INTO marks SELECT 'after', g FROM generate_series(1, 200) g");
    let last = c.switch_wal();
    c.wait_archived(&last);

    let second = a.env.pg_dir("second");
    let url = format!("file://{}", second.display());
    let out = a.env.tidewal(&["copy", "--to", &url]);
    expect_exit(&out, 0, &[]);
    let text = stdout(&out);
    assert!(text.contains("copy complete") && text.contains("1 backups"), "{text}");
    assert!(!text.contains(" 0 objects copied"), "{text}");
    assert!(second.join("tidewal.json").exists());
    assert!(second.join("wal/00000001").join(&last).exists(), "{last} was not copied");
    expect_exit(&a.env.tidewal(&["--repo", &url, "verify"]), 0, &[]);

    // Again: everything is already there.
    let out = a.env.tidewal(&["copy", "--to", &url]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains(": 0 objects copied"), "{}", stdout(&out));

    // An object of the same name and size but other content is refused, not overwritten.
    let seg = second.join("wal/00000001").join(&last);
    let original = std::fs::read(&seg).unwrap();
    let mut changed = original.clone();
    *changed.last_mut().unwrap() ^= 0xff;
    std::fs::write(&seg, &changed).unwrap();
    expect_exit(&a.env.tidewal(&["copy", "--to", &url]), 4, &[&format!("wal/00000001/{last}"), "different content"]);
    assert_eq!(std::fs::read(&seg).unwrap(), changed, "the differing object was overwritten");
    std::fs::write(&seg, &original).unwrap();

    // A location holding another repository is refused.
    let other = a.env.pg_dir("other");
    std::fs::write(other.join("tidewal.json"), b"another repository").unwrap();
    chown_pg(&other.join("tidewal.json"));
    let other_url = format!("file://{}", other.display());
    expect_exit(&a.env.tidewal(&["copy", "--to", &other_url]), 4, &["holds another repository"]);
    assert!(!other.join("wal").exists(), "objects were copied next to another repository");

    // The copy alone restores: the source repository is gone.
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };
    let repo = a.repo_dir.clone().unwrap();
    std::fs::rename(&repo, repo.with_file_name("repo-gone")).unwrap();
    let r = restore_and_start(&a, "restored", &["--repo", &url]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'after'"), "200");
}

/// From an S3 repository to another prefix on the same server (the same store settings).
#[test]
fn copy_between_s3_prefixes() {
    let a = Archiving::start("copy-s3", RepoKind::S3);
    let c = &a.cluster;
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g");
    backup_id(&a.env.tidewal(&["backup"]));
    let last = c.switch_wal();
    c.wait_archived(&last);
    let url = format!("s3://{S3_BUCKET}/second");
    let endpoint = format!("http://127.0.0.1:{}", a.s3.as_ref().unwrap().port);
    expect_exit(&a.env.tidewal(&["copy", "--to", "file:///nonexistent/x", "--to-region", "r"]), 2, &["s3://"]);
    let out = a.env.tidewal(&["copy", "--to", &url, "--to-region", "us-east-1", "--to-endpoint", &endpoint]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("1 backups"), "{}", stdout(&out));
    expect_exit(&a.env.tidewal(&["--repo", &url, "verify"]), 0, &[]);
    let out = a.env.tidewal(&["--repo", &url, "list"]);
    expect_exit(&out, 0, &[]);
    let again = a.env.tidewal(&["copy", "--to", &url]);
    expect_exit(&again, 0, &[]);
    assert!(stdout(&again).contains(": 0 objects copied"), "{}", stdout(&again));
}
