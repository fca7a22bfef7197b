//! az:// and gs:// repositories through object_store's own backends, against the emulators
//! `.ci/run` installs: Azurite for Azure, fake-gcs-server for GCS. The conditional-write
//! probe decides what each emulator honours; the tests pass either way and never lose a
//! segment: every archived segment comes back byte-identical, and a restore recovers the rows.

mod common;

use common::cloud::{archiving_on, gcs_repo_config, Azurite, FakeGcs};
use common::gcs_xml::XmlProxy;
use common::*;

/// What a restore must bring back: the marks, the pgbench balances and the noise.
const ROWS: &str = "SELECT (SELECT count(*) FROM marks) || '/' || (SELECT sum(abalance) FROM pgbench_accounts) \
                    || '/' || (SELECT md5(string_agg(t, '' ORDER BY g)) FROM noise)";

/// Load, a base backup (large enough for a multipart upload), more WAL; returns the rows
/// the restore must show.
fn load_and_backup(a: &Archiving) -> String {
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "2", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before-backup', g FROM generate_series(1, 500) g");
    // About 14 MB that lz4 cannot shrink, so the base backup is uploaded in several parts.
    c.psql(
        "CREATE TABLE noise AS SELECT g, (SELECT string_agg(md5(random()::text || g || i), '') \
         FROM generate_series(1, 30) i) AS t FROM generate_series(1, 14000) g",
    );
    let id = backup_id(&a.env.tidewal(&["backup"]));
    c.psql("INSERT INTO marks SELECT 'after-backup', g FROM generate_series(1, 700) g");
    c.pgbench(&["-t", "200", "-c", "2", "-n"]);
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "archiver failures:\n{}", c.log());
    let list = a.env.tidewal(&["list"]);
    expect_exit(&list, 0, &[]);
    assert!(stdout(&list).contains(&id), "{}", stdout(&list));
    c.psql(ROWS)
}

/// Every archived segment still in pg_wal comes back from the repository byte-identical.
fn compare_archived(a: &Archiving) -> usize {
    let c = &a.cluster;
    let mut n = 0;
    for entry in std::fs::read_dir(c.data.join("pg_wal/archive_status")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let Some(seg) = name.strip_suffix(".done") else { continue };
        let original = c.data.join("pg_wal").join(seg);
        if original.exists() && !seg.ends_with(".history") {
            assert_fetches_identical(&a.env, seg, &original);
            n += 1;
        }
    }
    n
}

/// verify, then restore to the end of the archive and check the rows.
fn verify_and_restore(a: &Archiving, expected: &str) {
    let out = a.env.tidewal(&["verify"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("verified 1 backups") && stdout(&out).contains("no problems"), "{}", stdout(&out));
    let r = restore_and_start(a, "restored", &[]);
    wait_promoted(&r);
    assert_eq!(r.psql(ROWS), expected);
    assert!(r.log().contains("restored log file"), "recovery did not use the repository:\n{}", r.log());
}

#[test]
fn azure_repository_on_azurite() {
    let env = TestEnv::new("azure");
    let az = Azurite::start(&env);
    let (mut a, honoured) = archiving_on(env, &az.repo_config("cluster1"));
    // The probe's verdict, as `check` reports it.
    let check = stdout(&a.env.tidewal(&["check"]));
    let verdict = if honoured { "conditional writes honoured" } else { "ignores conditional writes (accepted" };
    assert!(check.contains(verdict), "{check}");
    eprintln!("Azurite: conditional writes {}", if honoured { "honoured" } else { "ignored" });
    let expected = load_and_backup(&a);
    assert!(compare_archived(&a) >= 2);
    a.cluster.stop_immediate();
    verify_and_restore(&a, &expected);
}

/// fake-gcs-server serves object_store's reads and listings, but not its writes: it has no
/// XML API upload (a PUT of an object, or an XML multipart upload), which object_store's
/// GCS backend uses. So the repository is written to file:// and copied object for object
/// into the emulator through its JSON API; list, verify, wal-fetch and restore then read it
/// through gs://, and `check` reports that the emulator refuses the write probe.
#[test]
fn gcs_repository_on_fake_gcs_server() {
    let mut a = Archiving::start("gcs", RepoKind::File);
    let expected = load_and_backup(&a);
    let gcs = FakeGcs::start(&a.env);
    a.cluster.stop_immediate();
    let repo = a.repo_dir.clone().unwrap();
    let mut copied = 0;
    for rel in files_under(&repo) {
        gcs.upload(&format!("cluster1/{}", rel.display()), &std::fs::read(repo.join(&rel)).unwrap());
        copied += 1;
    }
    assert!(copied >= 5, "only {copied} objects");
    // From here on the repository is the emulator's copy alone.
    std::fs::rename(&repo, a.env.path().join("repo-moved")).unwrap();
    let key = a.env.path().join("repo.key");
    a.env.write_config(&format!(
        "[repository]\nkey_file = \"{}\"\n{}\n[postgres]\nconninfo = \"{}\"\n",
        key.display(),
        gcs.repo_config("cluster1"),
        a.cluster.conninfo()
    ));
    let check = stdout(&a.env.tidewal(&["check"]));
    let verdict = check.lines().find(|l| l.contains("store is not usable")).unwrap_or_else(|| panic!("{check}"));
    assert!(verdict.contains("invalid uploadType"), "{verdict}");
    eprintln!("fake-gcs-server: {verdict}");
    assert!(compare_archived(&a) >= 2);
    verify_and_restore(&a, &expected);
}

/// The write path too, through a proxy that turns object_store's XML API writes into the
/// emulator's JSON API (tests/common/gcs_xml.rs): the emulator decides on create-only writes
/// (`ifGenerationMatch=0`); multipart parts are joined by the proxy into one upload.
#[test]
fn gcs_repository_on_fake_gcs_server_through_an_xml_proxy() {
    let env = TestEnv::new("gcs-xml");
    let (listener, proxy_port) = XmlProxy::listen();
    let gcs = FakeGcs::start_for(&env, Some(proxy_port));
    let proxy = XmlProxy::start(listener, gcs.port);
    let (mut a, honoured) = archiving_on(env, &gcs_repo_config(proxy_port, "cluster1"));
    let check = stdout(&a.env.tidewal(&["check"]));
    let verdict = if honoured { "conditional writes honoured" } else { "ignores conditional writes (accepted" };
    assert!(check.contains(verdict), "{check}");
    eprintln!("fake-gcs-server (JSON API): conditional writes {}", if honoured { "honoured" } else { "ignored" });
    let expected = load_and_backup(&a);
    // The base backup went through XML multipart uploads of more than one part.
    let (uploads, parts) = *proxy.completed.lock().unwrap();
    assert!(uploads >= 1 && parts > uploads, "{uploads} multipart uploads of {parts} parts");
    assert!(compare_archived(&a) >= 2);
    a.cluster.stop_immediate();
    verify_and_restore(&a, &expected);
}
