//! `tidewal backup` streams BASE_BACKUP into the repository; the stored backup passes
//! pg_verifybackup against its own manifest and restores, with WAL from the repository,
//! to a cluster holding every archived commit.

mod common;

use std::time::Duration;

use common::*;
use tidewal::config::{Flags, Settings};
use tidewal::repo::Repo;
use tidewal::store::Store;

#[test]
fn backup_streams_into_the_repository_and_restores() {
    let a = Archiving::start("backup", RepoKind::File);
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "3", "-q"]);
    c.psql("CREATE TABLE marks (batch text, n int)");
    c.psql("INSERT INTO marks SELECT 'before', g FROM generate_series(1, 300) g");

    let out = a.env.tidewal(&["backup"]);
    expect_exit(&out, 0, &[]);
    let text = stdout(&out);
    assert!(text.contains("complete"), "{text}");
    let id = text.split_whitespace().nth(1).unwrap().to_string();

    c.psql("INSERT INTO marks SELECT 'after', g FROM generate_series(1, 400) g");
    let last = c.switch_wal();
    c.wait_archived(&last);
    let balance = c.psql("SELECT sum(abalance) FROM pgbench_accounts");
    let mut primary = a.cluster;
    primary.stop_immediate();

    // Take the backup out of the repository with the library, as `restore` will.
    let settings =
        Settings::load(&Flags { config: Some(a.env.config.clone()), ..Default::default() }, &|_| None).unwrap();
    let restore = a.env.pg_dir("restored");
    let data = restore.join("pgdata");
    std::fs::create_dir_all(&data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = Store::open(&settings.repo_url, &settings.store).unwrap();
        let repo = Repo::open(store, settings.keys.clone(), settings.lz4).await.unwrap();
        let info = repo.store.list(&format!("backups/{id}")).await.unwrap();
        assert!(info.iter().any(|n| n.ends_with("/backup.json")), "{info:?}");
        repo.fetch_to_path(&format!("backups/{id}/base.tar"), &restore.join("base.tar")).await.unwrap();
        repo.fetch_to_path(&format!("backups/{id}/backup_manifest"), &data.join("backup_manifest")).await.unwrap();
    });
    run_ok(std::process::Command::new("tar").arg("-xf").arg(restore.join("base.tar")).arg("-C").arg(&data));
    std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    chown_pg(&restore);
    run_ok(as_pg(pg_bin("pg_verifybackup")).args(["--no-parse-wal", data.to_str().unwrap()]));

    std::fs::remove_file(data.join("backup_manifest")).unwrap();
    std::fs::write(data.join("recovery.signal"), "").unwrap();
    std::fs::write(
        data.join("postgresql.auto.conf"),
        format!("restore_command = '{} wal-fetch %f %p'\narchive_mode = off\n", a.env.command_line()),
    )
    .unwrap();
    chown_pg(&data);
    let mut r = Cluster::adopt(&restore, &data);
    r.configure("");
    r.start();
    wait_for("recovery to finish", Duration::from_secs(120), || r.psql("SELECT pg_is_in_recovery()") == "f");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'before'"), "300");
    assert_eq!(r.psql("SELECT count(*) FROM marks WHERE batch = 'after'"), "400");
    assert_eq!(r.psql("SELECT sum(abalance) FROM pgbench_accounts"), balance);
}
