//! Two clusters archiving into one repository: a restored copy that promotes and archives
//! timeline 2 while production keeps writing timeline 1. Retention must keep production's
//! WAL, `check` must fail naming both lines, `list` must show the split, and a restore must
//! follow the server's line (or refuse to guess when the server cannot say).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn a_copy_that_archives_is_a_split_and_production_keeps_its_wal() {
    let a = Archiving::start("split", RepoKind::File);
    let c = &a.cluster;
    // Production archives past the branch only when the test says so, however slow the
    // copy's restore is.
    c.set("archive_timeout", "0");
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 100)");
    backup_id(&a.env.tidewal(&["backup"]));
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let start_wal = listing["backups"][0]["start_wal"].as_str().unwrap().to_string();
    c.psql("INSERT INTO t SELECT generate_series(1, 100)");
    c.wait_archived(&c.switch_wal());

    // A copy restored as if it were the new primary (--as-primary keeps archiving on) while
    // production goes on: it promotes and archives timeline 2 into the repository.
    let dir = a.env.pg_dir("copy");
    let data = dir.join("pgdata");
    let out = a.env.tidewal(&["restore", "--to", data.to_str().unwrap(), "--target-action", "promote", "--as-primary"]);
    expect_exit(&out, 0, &[]);
    let mut copy = Cluster::adopt(&dir, &data);
    copy.configure("");
    copy.start();
    wait_promoted(&copy);
    copy.psql("INSERT INTO t SELECT generate_series(1, 7)");
    copy.wait_archived(&copy.switch_wal());
    let repo = a.repo_dir.clone().unwrap();
    assert!(repo.join("wal/00000002.history").exists(), "the copy did not archive its timeline");

    // Before production has written past the branch this is no split yet, but the server
    // says which line it is on: the window is production's, not the copy's newer timeline.
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["restorable_timeline"], 1, "{listing}");
    assert_eq!(listing["splits"].as_array().map(Vec::len), Some(0), "{listing}");

    // Production goes on well past the branch point.
    for _ in 0..6 {
        c.psql("INSERT INTO t SELECT generate_series(1, 100)");
        c.switch_wal();
    }
    c.psql("INSERT INTO t SELECT generate_series(1, 100)");
    c.wait_archived(&c.switch_wal());
    let rows = c.psql("SELECT count(*) FROM t");
    assert_eq!(rows, "900");
    // Production's WAL from the backup's start on: what restoring its window needs.
    let tl1_before: Vec<String> = std::fs::read_dir(repo.join("wal/00000001"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.as_str() >= start_wal.as_str())
        .collect();
    assert!(tl1_before.len() >= 8, "{tl1_before:?}");

    let out = a.env.tidewal(&["check"]);
    expect_exit(&out, 8, &[]);
    assert!(stdout(&out).contains("two clusters archive into this repository"), "{}", stdout(&out));
    assert!(stdout(&out).contains("timeline 2 branched off timeline 1"), "{}", stdout(&out));

    // The server is reachable: list's window follows its line, and shows the split.
    let out = a.env.tidewal(&["list", "--json"]);
    expect_exit(&out, 0, &[]);
    let listing: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listing["splits"][0]["parent_timeline"], 1, "{listing}");
    assert_eq!(listing["splits"][0]["child_timeline"], 2, "{listing}");
    assert_eq!(listing["restorable_timeline"], 1, "{listing}");

    // The daemon reports it: /healthz fails naming both lines, and the metric counts it.
    let (port, log) = daemon_config(&a, &format!("pgdata = \"{}\"", c.data.display()));
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the split on /metrics", Duration::from_secs(60), || d.metric("tidewal_timeline_splits") == Some(1.0));
    let (status, body) = d.get("/healthz").unwrap();
    assert!(status.contains("503"), "{status} {body}");
    assert!(body.contains("two clusters archive into this repository"), "{body}");
    assert!(body.contains("server is on timeline 1"), "{body}");
    drop(d);

    // Retention with the default window deletes none of production's WAL.
    let out = a.env.tidewal(&["prune"]);
    expect_exit(&out, 0, &[]);
    for name in &tl1_before {
        assert!(repo.join("wal/00000001").join(name).exists(), "prune deleted production's {name:?}");
    }

    // A restore without --target-timeline follows the server's line: every production row.
    let r = restore_and_start(&a, "production-line", &["--target-action", "promote"]);
    wait_promoted(&r);
    // The restore's own config (it may name store credentials) is gone once recovery ended.
    assert!(!r.data.join("tidewal-restore.toml").exists());
    assert_eq!(r.psql("SELECT count(*) FROM t"), rows);
    drop(r);

    // With the server down nobody can say which line is production: refuse to guess.
    let mut primary = a.cluster;
    primary.stop_immediate();
    let a = Archiving { cluster: primary, ..a };
    let target = a.env.pg_dir("guess").join("pgdata");
    let out = a.env.tidewal(&["restore", "--to", target.to_str().unwrap()]);
    expect_exit(&out, 4, &["refuses to guess", "--target-timeline"]);
    assert!(!target.join("PG_VERSION").exists(), "a refused restore wrote files");
    let r = restore_and_start(&a, "named-line", &["--target-timeline", "1", "--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM t"), rows);
    drop(copy);
}
