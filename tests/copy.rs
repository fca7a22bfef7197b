//! `tidewal copy --to URL`: a second copy of a real repository, usable on its own.

mod common;

use std::time::Duration;

use common::*;

/// Copy, copy again (nothing new), refuse a differing object and another repository, then
/// verify and restore from the copy alone.
#[test]
fn copy_to_a_second_store_and_restore_from_it() {
    let a = Archiving::start("copy", RepoKind::File);
    let c = &a.cluster;
    // Only the test's own switches archive: a second copy must find nothing new.
    c.set("archive_timeout", "0");
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

/// `[[repository.copy]]`: the daemon keeps a second repository up to date (lag metric,
/// status, health), applies retention to it after each run on the repository, and the copy
/// alone restores with `--from-repo 2`. A third copy that cannot be reached degrades health
/// by name and stops nothing else.
#[test]
fn the_daemon_keeps_a_copy_that_restores_alone() {
    let a = Archiving::start("copy-daemon", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");
    let second = a.env.pg_dir("second");
    // Retention on the copy: what an interrupted backup left there goes once the repository's
    // own retention ran (the repository never had it).
    let leftover = second.join("backups/20200101T000000.000000Z-abcdef");
    std::fs::create_dir_all(&leftover).unwrap();
    std::fs::write(leftover.join("base.tar"), b"half a backup").unwrap();
    for p in [second.join("backups"), leftover.clone(), leftover.join("base.tar")] {
        chown_pg(&p);
    }
    // Short retries, so that the unreachable copy is reported soon.
    let config = std::fs::read_to_string(&a.env.config)
        .unwrap()
        .replace("[repository]\n", "[repository]\nretry_timeout = \"3s\"\n");
    a.env.write_config(&format!(
        "{config}\n[[repository.copy]]\nurl = \"file://{}\"\ninterval = \"1s\"\n\n\
         [[repository.copy]]\nurl = \"s3://nowhere/copy\"\nmax_lag = \"3s\"\n\
         [repository.copy.s3]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"r\"\nallow_http = true\n\
         access_key_id = \"k\"\nsecret_access_key = \"s\"\n",
        second.display(),
        free_port()
    ));
    // check looks at every copy: the empty one is fine, the unreachable one is named.
    let second_url = format!("file://{}", second.display());
    let out = a.env.tidewal(&["check"]);
    expect_exit(&out, 8, &[]);
    let text = stdout(&out);
    assert!(text.contains(&format!("copy 2 ({second_url}): reachable and empty")), "{text}");
    assert!(text.contains("FAIL") && text.contains("copy 3 (s3://nowhere/copy): "), "{text}");
    let sock = a.env.path().join("tidewal.sock");
    let (port, log) = daemon_config(
        &a,
        &format!("pgdata = \"{}\"\nprune_interval = \"2s\"\nsocket = \"{}\"", c.data.display(), sock.display()),
    );
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    c.psql("INSERT INTO marks SELECT 'after', g FROM generate_series(1, 200) g");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let copied = second.join("wal/00000001").join(&last);
    wait_for("the newest segment in the copy", Duration::from_secs(60), || copied.exists());
    wait_for("the copy's retention", Duration::from_secs(60), || !leftover.exists());
    let daemon_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let backups = |args: &[&str]| -> serde_json::Value {
        let out = a.env.tidewal(args);
        expect_exit(&out, 0, &[]);
        serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap()["backups"].clone()
    };
    wait_for("the backup in the copy", Duration::from_secs(60), || {
        backups(&["list", "--from-repo", "2", "--json"]).as_array().is_some_and(|b| b.len() == 1)
    });
    assert_eq!(backups(&["list", "--from-repo", "2", "--json"]), backups(&["list", "--json"]));

    let lag = d.metric("tidewal_copy_lag_seconds{repo=\"2\"}").expect("no lag metric for the copy");
    assert!(lag < 30.0, "copy 2 is {lag}s behind:\n{}", daemon_log());
    assert!(d.metric("tidewal_copied_objects_total{repo=\"2\"}").unwrap_or(0.0) >= 3.0);
    // The unreachable copy: behind, named in health (degraded, not failing) and in status.
    wait_for("copy 3 to count as behind", Duration::from_secs(30), || {
        d.get("/healthz").is_some_and(|(_, body)| body.contains("copy 3 (s3://nowhere/copy) is"))
    });
    let (head, body) = d.get("/healthz").unwrap();
    assert!(head.contains("200") && body.contains("\"degraded\""), "{head} {body}");
    assert!(!body.contains("copy 2"), "{body}");
    let out = a.env.tidewal(&["status", "--json"]);
    expect_exit(&out, 0, &[]);
    let status: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(status["copies"][0]["repo"], 2);
    assert!(status["copies"][0]["caught_up_to"].is_string(), "{status}");
    assert_eq!(status["copies"][1]["url"], "s3://nowhere/copy");
    // The repository itself was never touched by the copy's retention.
    assert_eq!(backups(&["list", "--json"]).as_array().unwrap().len(), 1);

    let text = stdout(&a.env.tidewal(&["check"]));
    assert!(text.contains(&format!("copy 2 ({second_url}): reachable, holds this repository")), "{text}");
    // Writers are not aimed at a copy; a copy that does not exist is named.
    expect_exit(&a.env.tidewal(&["--from-repo", "2", "backup"]), 2, &["--from-repo does not apply to backup"]);
    expect_exit(&a.env.tidewal(&["list", "--from-repo", "4"]), 2, &["repositories 1 to 3"]);

    // The copy alone restores: the daemon and the primary stop, the repository is gone.
    assert!(d.stop().success(), "{}", daemon_log());
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };
    let repo = a.repo_dir.clone().unwrap();
    std::fs::rename(&repo, repo.with_file_name("repo-gone")).unwrap();
    let r = restore_and_start(&a, "restored", &["--from-repo", "2"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'after'"), "200");
}
