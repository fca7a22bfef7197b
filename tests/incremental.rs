//! Incremental backups, from the protocol up: a PostgreSQL 17 server with `summarize_wal`
//! sends only changed blocks once it has the parent's manifest, as files that
//! `pg/incremental.rs` reads and rebuilds; a server without summaries refuses clearly.

mod common;

use std::collections::BTreeMap;
use std::io::Read;

use common::pgver::major_bin;
use common::*;
use tidewal::pg::incremental::{self, Geometry, Older, Source};
use tidewal::pg::replication::{BackupEvent, ReplConn};

/// One BASE_BACKUP's `base.tar` as name → bytes, and its manifest.
async fn base_backup(c: &Cluster, manifest: Option<&[u8]>) -> Result<(BTreeMap<String, Vec<u8>>, Vec<u8>), String> {
    let info = format!("host={} port={} user={PG_USER}", c.sock.display(), c.port);
    let mut conn = ReplConn::connect(&tidewal::pg::sql::resolve_config(Some(&info), true).unwrap()).await.unwrap();
    if let Some(m) = manifest {
        conn.upload_manifest(m).await?;
    }
    conn.start_base_backup("incremental test", true, "CRC32C", manifest.is_some()).await?;
    let (mut tar, mut out_manifest, mut in_manifest, mut archive) = (Vec::new(), Vec::new(), false, String::new());
    while let Some(ev) = conn.next_backup_event().await? {
        match ev {
            BackupEvent::Archive { name, .. } => archive = name,
            BackupEvent::Manifest => in_manifest = true,
            BackupEvent::Data(d) if in_manifest => out_manifest.extend_from_slice(&d),
            BackupEvent::Data(d) if archive == "base.tar" => tar.extend_from_slice(&d),
            _ => {}
        }
    }
    conn.finish_base_backup().await?;
    let mut files = BTreeMap::new();
    let mut a = tar::Archive::new(&tar[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.header().entry_type().is_file() {
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut bytes = Vec::new();
            e.read_to_end(&mut bytes).unwrap();
            files.insert(name, bytes);
        }
    }
    Ok((files, out_manifest))
}

/// `path` rebuilt from the newest backup's incremental copy and the full one before it.
fn rebuild(path: &str, newest: &[u8], full: &[u8]) -> Vec<u8> {
    let g = Geometry::default();
    let h = incremental::parse_header(path, newest, newest.len() as u64, g).unwrap();
    let runs = incremental::plan(path, &h, &[Older::Full { size: full.len() as u64 }], g).unwrap();
    let mut out = Vec::new();
    for r in runs {
        let n = (r.blocks.end - r.blocks.start) as usize * g.block_size as usize;
        match r.from {
            Source::Zeros => out.resize(out.len() + n, 0),
            Source::Copy { copy, offset } => {
                let src = if copy == 0 { newest } else { full };
                out.extend_from_slice(&src[offset as usize..offset as usize + n]);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_wal_summaries_sends_changed_blocks_that_rebuild_the_files() {
    let env = TestEnv::new("incr17");
    let mut c =
        Cluster::init_from(&major_bin(17), &env.pg_dir("primary"), &[], "summarize_wal = on\nautovacuum = off\n");
    c.start();
    c.psql("CREATE TABLE cold AS SELECT g AS id, repeat('x', 200) AS pad FROM generate_series(1, 40000) g");
    c.psql("CREATE TABLE hot AS SELECT g AS id, 0 AS n FROM generate_series(1, 40000) g");
    c.psql("CHECKPOINT");
    let (full, manifest) = base_backup(&c, None).await.unwrap();
    assert!(!full.keys().any(|n| n.contains("INCREMENTAL.")), "a full backup has no incremental files");

    c.psql("UPDATE hot SET n = 1 WHERE id % 1000 = 0");
    c.psql("CREATE TABLE fresh AS SELECT g FROM generate_series(1, 1000) g");
    c.psql("CHECKPOINT");
    let hot = c.psql("SELECT pg_relation_filepath('hot')");
    let cold = c.psql("SELECT pg_relation_filepath('cold')");
    let fresh = c.psql("SELECT pg_relation_filepath('fresh')");
    let (incr, incr_manifest) = base_backup(&c, Some(&manifest)).await.unwrap();
    assert!(String::from_utf8_lossy(&incr_manifest).contains("INCREMENTAL."), "the manifest names incremental files");

    let name = |p: &str| {
        let (dir, file) = p.rsplit_once('/').unwrap();
        format!("{dir}/{}{file}", incremental::PREFIX)
    };
    // A table created since the parent comes whole; the others as incremental files.
    assert!(incr.contains_key(&fresh), "{fresh} in full");
    assert!(!incr.contains_key(&hot) && !incr.contains_key(&cold));
    let g = Geometry::default();
    let cold_h = incremental::parse_header(&cold, &incr[&name(&cold)], incr[&name(&cold)].len() as u64, g).unwrap();
    assert!(cold_h.blocks.is_empty(), "no block of the cold table changed: {:?}", cold_h.blocks);
    let hot_h = incremental::parse_header(&hot, &incr[&name(&hot)], incr[&name(&hot)].len() as u64, g).unwrap();
    // Every incremental file in the archive is well formed, and the archive is small.
    for (n, bytes) in incr.iter().filter(|(n, _)| n.contains(incremental::PREFIX)) {
        incremental::parse_header(n, bytes, bytes.len() as u64, g).unwrap();
    }
    let size = |m: &BTreeMap<String, Vec<u8>>| m.values().map(Vec::len).sum::<usize>();
    assert!(size(&incr) * 4 < size(&full), "incremental {} bytes, full {}", size(&incr), size(&full));

    // The files the server has now, rebuilt from the chain: the changed blocks are the new
    // ones (hint bits aside, the server's copy of an unchanged block is the full backup's).
    let rebuilt_cold = rebuild(&cold, &incr[&name(&cold)], &full[&cold]);
    assert_eq!(rebuilt_cold, full[&cold], "an unchanged table rebuilds as it was");
    let rebuilt_hot = rebuild(&hot, &incr[&name(&hot)], &full[&hot]);
    assert_eq!(rebuilt_hot.len(), full[&hot].len());
    let on_disk = std::fs::read(c.data.join(&hot)).unwrap();
    for &b in &hot_h.blocks {
        let r = b as usize * 8192..(b as usize + 1) * 8192;
        assert_eq!(rebuilt_hot[r.clone()], on_disk[r], "block {b} of {hot} is the server's");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wal_summaries_the_server_refuses_an_incremental_backup() {
    let env = TestEnv::new("incr17off");
    let mut c = Cluster::init_from(&major_bin(17), &env.pg_dir("primary"), &[], "");
    c.start();
    let (_, manifest) = base_backup(&c, None).await.unwrap();
    let e = base_backup(&c, Some(&manifest)).await.unwrap_err();
    assert!(e.contains("WAL summarization"), "{e}");
}

/// `tidewal restore` of a chain into a new directory, started on its own port with
/// archiving off. (A chain's restore has no `backup_manifest` to check with
/// pg_verifybackup: the full backup's no longer describes the directory.)
fn restore_chain_and_start(a: &Archiving, name: &str, extra: &[&str]) -> Cluster {
    restore_and_start(a, name, extra, true)
}

/// `chain`: the backup restored is incremental.
fn restore_and_start(a: &Archiving, name: &str, extra: &[&str], chain: bool) -> Cluster {
    let dir = a.env.pg_dir(name);
    let data = dir.join("pgdata");
    let mut args = vec!["restore", "--to", data.to_str().unwrap(), "--target-action", "promote"];
    args.extend_from_slice(extra);
    let out = a.env.tidewal(&args);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("verified against the manifest"), "{}", stdout(&out));
    assert_eq!(data.join("backup_manifest").exists(), !chain);
    let label = std::fs::read_to_string(data.join("backup_label")).unwrap();
    assert!(!label.contains("INCREMENTAL FROM"), "{label}");
    let mut r = Cluster::adopt(&dir, &data);
    r.bin = a.cluster.bin.clone();
    r.configure("archive_mode = off\n");
    r.start();
    wait_promoted(&r);
    r
}

/// A recovery target (UTC, whole seconds) with no commit in the second before or after it.
fn quiet_moment(c: &Cluster) -> String {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let at = c.psql("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    at
}

fn stored(listing: &serde_json::Value, id: &str) -> u64 {
    let b = listing["backups"].as_array().unwrap().iter().find(|b| b["id"] == id).unwrap();
    b["objects"].as_array().unwrap().iter().map(|o| o["stored_bytes"].as_u64().unwrap()).sum()
}

/// A database that is mostly cold partitions, as TimescaleDB keeps old chunks, with a hot
/// one under updates: a full backup, two incremental ones (a partition dropped between
/// them), and restores of the chain to a moment after each; `verify` passes, and a prune
/// whose window holds only the newest backup keeps its chain.
fn a_chain_restores_to_a_moment_after_each(a: Archiving, server_side: bool) {
    let c = &a.cluster;
    if server_side {
        c.set("summarize_wal", "on");
    }
    c.psql("CREATE TABLE metrics (day date, v int, pad text) PARTITION BY RANGE (day)");
    for m in 1..=10 {
        c.psql(&format!(
            "CREATE TABLE metrics_{m:02} PARTITION OF metrics FOR VALUES FROM ('2026-{m:02}-01') TO ('{}')",
            if m == 12 { "2027-01-01".to_string() } else { format!("2026-{:02}-01", m + 1) }
        ));
        c.psql(&format!(
            "INSERT INTO metrics SELECT '2026-{m:02}-01'::date + (g % 28), g, repeat(md5(g::text), 4) FROM generate_series(1, 20000) g"
        ));
    }
    c.psql("CREATE TABLE marks (batch text)");
    c.psql("VACUUM FREEZE");
    c.psql("CHECKPOINT");
    let full = backup_id(&a.env.tidewal(&["backup"]));
    let mark0 = quiet_moment(c);
    let sum0 = c.psql("SELECT sum(v) FROM metrics");

    // Changes to the hot partition only, then the first incremental backup, taken while
    // pgbench updates the hot partition.
    c.psql("UPDATE metrics SET v = v + 1 WHERE day >= '2026-10-01' AND v % 10 = 0");
    c.psql("INSERT INTO marks VALUES ('one')");
    let hot = "\\set v random(1, 20000)\nUPDATE metrics SET v = v + 1 WHERE day = '2026-10-15' AND v = :v;\n";
    let load = faults::InsertLoad::script(c, &a.env.pg_dir("load"), 50, hot);
    let out = a.env.tidewal(&["backup", "--incremental"]);
    load.stop();
    let incr1 = backup_id(&out);
    let mark1 = quiet_moment(c);
    let sum1 = c.psql("SELECT sum(v) FROM metrics");

    // A cold partition dropped, more hot changes, the second incremental backup, then more.
    c.psql("DROP TABLE metrics_01");
    c.psql("UPDATE metrics SET v = v + 1 WHERE day >= '2026-10-01' AND v % 7 = 0");
    c.psql("INSERT INTO marks VALUES ('two')");
    let incr2 = backup_id(&a.env.tidewal(&["backup", "--incremental"]));
    c.psql("INSERT INTO marks VALUES ('three')");
    let sum3 = c.psql("SELECT sum(v) FROM metrics");
    let last = c.switch_wal();
    c.wait_archived(&last);

    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let (full_b, incr1_b, incr2_b) = (stored(&listing, &full), stored(&listing, &incr1), stored(&listing, &incr2));
    assert!(incr1_b * 5 < full_b && incr2_b * 5 < full_b, "stored: full {full_b}, incremental {incr1_b} and {incr2_b}");
    let parent_of = |id: &str| {
        let b = listing["backups"].as_array().unwrap().iter().find(|b| b["id"] == id).unwrap().clone();
        b["parent"].as_str().map(str::to_string)
    };
    assert_eq!(
        (parent_of(&full), parent_of(&incr1), parent_of(&incr2)),
        (None, Some(full.clone()), Some(incr1.clone()))
    );
    let how = listing["backups"].as_array().unwrap().iter().find(|b| b["id"] == incr2).unwrap()["increment"].clone();
    assert_eq!(how, if server_side { "server" } else { "client" });
    let out = a.env.tidewal(&["verify"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));

    // A window that holds only the newest backup: its whole chain stays.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    expect_exit(&a.env.tidewal(&["prune", "--window", "1s"]), 0, &[]);
    let after: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let ids: Vec<&str> = after["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [full.as_str(), incr1.as_str(), incr2.as_str()], "{after}");

    // The restore test of the newest backup, its chain rebuilt: recovered, every index and
    // table checked with amcheck, and the marks all there.
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!(
        "{config}\n[verify]\npg_bin = \"{}\"\nsql = [\"SELECT string_agg(batch, ',' ORDER BY batch) = 'one,three,two' FROM marks\"]\n",
        c.bin.display()
    ));
    let out = a.env.tidewal(&["verify", "--restore-test", "--json"]);
    assert_eq!(code(&out), 0, "restore test:\n{}\n{}", stdout(&out), stderr(&out));
    let report: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!((&report["success"], &report["heap_checked"]), (&true.into(), &true.into()), "{report}");
    assert_eq!(report["backup"], incr2.as_str(), "{report}");
    assert_eq!(report["sql_checks"][0]["passed"], true, "{report}");

    // The newest chain to the end of the WAL: every change, the dropped partition gone.
    let r = restore_chain_and_start(&a, "to-end", &[]);
    assert_eq!(r.psql("SELECT string_agg(batch, ',' ORDER BY batch) FROM marks"), "one,three,two");
    assert_eq!(r.psql("SELECT sum(v) FROM metrics"), sum3);
    // An index-only scan trusts the visibility map: a stale one would count the dropped
    // partition's catalog row (PostgreSQL's WAL summaries miss cleared bits).
    assert_eq!(r.psql("SELECT count(*) FROM pg_class WHERE relname = 'metrics_01'"), "0");
    r.psql("SELECT count(*) FROM metrics_02");
    drop(r);

    // To the moment after the first incremental: full + first incremental, then WAL.
    let r = restore_chain_and_start(&a, "to-mark1", &["--target-time", &mark1]);
    assert_eq!(r.psql("SELECT string_agg(batch, ',') FROM marks"), "one");
    assert_eq!(r.psql("SELECT sum(v) FROM metrics"), sum1);
    assert_eq!(r.psql("SELECT count(*) FROM metrics_01"), "20000");
    drop(r);

    // To the moment after the full backup: the full backup alone.
    let r = restore_and_start(&a, "to-mark0", &["--target-time", &mark0], false);
    assert_eq!(r.psql("SELECT count(*) FROM marks"), "0");
    assert_eq!(r.psql("SELECT sum(v) FROM metrics"), sum0);
}

#[test]
fn server_side_incremental_backups_on_postgresql_17_restore_to_a_moment_after_each() {
    a_chain_restores_to_a_moment_after_each(Archiving::start_from("incr-chain", &major_bin(17), &[]), true);
}

#[test]
fn server_side_incremental_backups_on_postgresql_18_restore_to_a_moment_after_each() {
    a_chain_restores_to_a_moment_after_each(Archiving::start_from("incr-chain-18", &major_bin(18), &[]), true);
}

#[test]
fn client_side_incremental_backups_on_postgresql_16_restore_to_a_moment_after_each() {
    a_chain_restores_to_a_moment_after_each(Archiving::start_from("incr-chain-16", &major_bin(16), &[]), false);
}

/// PostgreSQL 15 has no WAL summaries: tidewal compares what the server sends with the
/// parent's file index and stores only what changed.
#[test]
fn client_side_incremental_backups_on_postgresql_15_restore_to_a_moment_after_each() {
    a_chain_restores_to_a_moment_after_each(Archiving::start("incr-chain-15", RepoKind::File), false);
}

/// kill -9 of an incremental backup after it stored its data, while it waits for its WAL:
/// it never counts, the next incremental backup builds on the last complete one, and the
/// chain restores.
fn an_incremental_backup_killed_before_it_completes_leaves_the_chain_whole(a: Archiving, server_side: bool) {
    let c = &a.cluster;
    if server_side {
        c.set("summarize_wal", "on");
    }
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100000) g");
    let full = backup_id(&a.env.tidewal(&["backup"]));
    c.psql("UPDATE t SET g = -g WHERE g % 10 = 0");

    // Its WAL cannot be archived: the backup stores its data, then waits, and is killed.
    c.set("archive_command", "/bin/false");
    let pidfile = a.env.path().join("backup.pid");
    let script = format!("echo $$ > {}; exec {} backup --incremental", pidfile.display(), a.env.command_line());
    let mut child = as_pg("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let backups = a.repo_dir.as_ref().unwrap().join("backups");
    wait_for("the incremental backup's archive", std::time::Duration::from_secs(60), || {
        std::fs::read_dir(&backups).unwrap().flatten().any(|d| {
            d.file_name().to_string_lossy() != full.as_str() && std::fs::read_dir(d.path()).unwrap().count() > 0
        })
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(child.try_wait().unwrap().is_none(), "the backup ended before it could be killed");
    let pid: i32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let _ = child.wait();
    c.set("archive_command", &format!("{} wal-push %p", a.env.command_line()));

    let incr = backup_id(&a.env.tidewal(&["backup", "--incremental"]));
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let ids: Vec<&str> = listing["backups"].as_array().unwrap().iter().map(|b| b["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [full.as_str(), incr.as_str()], "{listing}");
    assert_eq!(listing["backups"][1]["parent"], full.as_str(), "{listing}");
    let how = if server_side { "server" } else { "client" };
    assert_eq!(listing["backups"][1]["increment"], how, "{listing}");
    let out = a.env.tidewal(&["verify"]);
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));

    c.psql("CREATE TABLE marks AS SELECT 'after' AS batch");
    let sum = c.psql("SELECT sum(g) FROM t");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let r = restore_chain_and_start(&a, "restored", &[]);
    assert_eq!(r.psql("SELECT sum(g) FROM t"), sum);
    assert_eq!(r.psql("SELECT batch FROM marks"), "after");
}

#[test]
fn a_server_side_incremental_backup_killed_before_it_completes_leaves_the_chain_whole() {
    let a = Archiving::start_from("incr-kill-17", &major_bin(17), &[]);
    an_incremental_backup_killed_before_it_completes_leaves_the_chain_whole(a, true);
}

#[test]
fn a_client_side_incremental_backup_killed_before_it_completes_leaves_the_chain_whole() {
    let a = Archiving::start("incr-kill-15", RepoKind::File);
    an_incremental_backup_killed_before_it_completes_leaves_the_chain_whole(a, false);
}

/// `daemon.full_every`: the daemon's backups (scheduled, or asked for with `--via-daemon`
/// as here) build on the chain's full backup until it is that old: client-side without WAL
/// summaries, server-side with them.
#[test]
fn the_daemon_takes_incremental_backups_between_full_ones() {
    let a = Archiving::start_from("incr-daemon", &major_bin(17), &[]);
    let c = &a.cluster;
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 50000) g");
    let socket = a.env.path().join("daemon.sock");
    let (port, log) = daemon_config(&a, &format!("socket = \"{}\"\nfull_every = \"1h\"", socket.display()));
    let backups = || -> Vec<serde_json::Value> {
        let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
        listing["backups"].as_array().unwrap().clone()
    };
    let via_daemon = || {
        let out = a.env.tidewal(&["backup", "--via-daemon"]);
        expect_exit(&out, 0, &[]);
    };
    let d = Daemon::start(&a.env, port, &log);
    wait_for("the daemon's socket", std::time::Duration::from_secs(30), || socket.exists());
    // Without WAL summaries: a full backup, then a client-side incremental one on it.
    via_daemon();
    c.psql("UPDATE t SET g = -g WHERE g % 100 = 2");
    via_daemon();
    let first = backups();
    assert!(first[0]["parent"].is_null(), "{first:?}");
    assert_eq!((&first[1]["parent"], &first[1]["increment"]), (&first[0]["id"], &"client".into()), "{first:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("client-side incremental on"), "{text}");

    // Summaries on, but none reach back to the newest backup (they start at the newest
    // checkpoint): the server refuses, and the daemon compares client-side instead, on the
    // newest backup with a file index.
    c.psql("UPDATE t SET g = -g WHERE g % 100 = 4");
    c.psql("CHECKPOINT");
    c.set("summarize_wal", "on");
    let newest = backups().pop().unwrap();
    via_daemon();
    let fell_back = backups().pop().unwrap();
    assert_eq!((&fell_back["parent"], &fell_back["increment"]), (&newest["id"], &"client".into()), "{fell_back}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("server-side incremental backup not possible"), "{text}");

    // With them, from a full backup taken while they are on, two server-side ones.
    let full = backup_id(&a.env.tidewal(&["backup"]));
    c.psql("UPDATE t SET g = -g WHERE g % 100 = 0");
    via_daemon();
    c.psql("UPDATE t SET g = -g WHERE g % 100 = 1");
    via_daemon();
    d.stop();
    let all = backups();
    let n = all.len();
    assert_eq!(all[n - 1]["parent"], all[n - 2]["id"], "{all:?}");
    assert_eq!(all[n - 2]["parent"], full.as_str(), "{all:?}");
    assert_eq!(all[n - 1]["increment"], "server", "{all:?}");

    // Client-side on request, summaries or not: on the newest backup with a file index (a
    // server-side increment has none).
    c.psql("UPDATE t SET g = -g WHERE g % 100 = 3");
    let forced = backup_id(&a.env.tidewal(&["backup", "--incremental", "--client-side"]));
    let last = backups().pop().unwrap();
    assert_eq!((&last["id"], &last["parent"], &last["increment"]), (&forced.into(), &full.into(), &"client".into()));
}

/// Client-side increments inside a tablespace, and a tablespace dropped between the full
/// backup and the incremental one: the chain restores, the kept tablespace where mapped
/// (its files rebuilt from both backups and checked), nothing of the dropped one.
#[test]
fn a_chain_restores_across_tablespaces_kept_and_dropped() {
    let a = Archiving::start("incr-tblspc", RepoKind::File);
    let c = &a.cluster;
    let (keep, gone) = (a.env.pg_dir("keep"), a.env.pg_dir("gone"));
    c.psql(&format!("CREATE TABLESPACE keep LOCATION '{}'", keep.display()));
    c.psql(&format!("CREATE TABLESPACE gone LOCATION '{}'", gone.display()));
    c.psql("CREATE TABLE kept (n int, pad text) TABLESPACE keep");
    c.psql("INSERT INTO kept SELECT g, repeat('k', 200) FROM generate_series(1, 40000) g");
    c.psql("CREATE TABLE dropped (n int) TABLESPACE gone");
    c.psql("INSERT INTO dropped SELECT generate_series(1, 1000)");
    c.psql("CHECKPOINT");
    let full = backup_id(&a.env.tidewal(&["backup"]));
    c.psql("DROP TABLE dropped");
    c.psql("DROP TABLESPACE gone");
    c.psql("UPDATE kept SET n = -n WHERE n > 39000");
    let incr = backup_id(&a.env.tidewal(&["backup", "--incremental"]));
    let sum = c.psql("SELECT sum(n) FROM kept");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["backups"][1]["parent"], full.as_str(), "{listing}");
    assert_eq!(listing["backups"][1]["id"], incr.as_str(), "{listing}");

    let oid = listing["backups"][1]["tablespaces"][0][0].as_u64().unwrap();
    let mapped = a.env.pg_dir("keep-restored");
    let map = format!("{oid}={}", mapped.display());
    let r = restore_chain_and_start(&a, "restored", &["--tablespace-map", &map]);
    assert_eq!(r.psql("SELECT sum(n) FROM kept"), sum);
    assert_eq!(r.psql("SELECT count(*) FROM pg_tablespace WHERE spcname = 'gone'"), "0");
    assert!(std::fs::read_dir(&mapped).unwrap().next().is_some(), "the kept tablespace is where it was mapped");
}
