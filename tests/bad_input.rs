//! Bad input gets a documented exit code and a clear message, and never damages the repository.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::*;

/// Every file in a directory tree with its BLAKE3, to prove nothing changed.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), blake3::hash(&std::fs::read(&p).unwrap()).to_hex().to_string());
            }
        }
    }
    out
}

fn write_as(env: &TestEnv, name: &str, data: &[u8]) -> PathBuf {
    let dir = env.path().join("input");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    chown_pg(&dir);
    p
}

#[test]
fn wal_push_refuses_bad_files_and_keeps_the_repository_intact() {
    let a = Archiving::start("badpush", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    let seg = c.switch_wal();
    c.wait_archived(&seg);
    let original = std::fs::read(c.data.join("pg_wal").join(&seg)).unwrap();
    let repo = a.repo_dir.clone().unwrap();
    let before = snapshot(&repo);
    let push = |p: &Path| a.env.tidewal(&["wal-push", p.to_str().unwrap()]);

    // Not WAL at all.
    expect_exit(&push(&c.data.join("postgresql.conf")), 3, &["not a WAL segment name"]);
    expect_exit(&push(&a.env.path().join("input/000000010000000000000077")), 3, &["cannot read"]);
    // Truncated segment.
    let p = write_as(&a.env, "0000000100000000000000F0", &original[..original.len() / 2]);
    expect_exit(&push(&p), 3, &["truncated"]);
    // A real segment under another segment's name.
    let p = write_as(&a.env, "0000000100000000000000F1", &original);
    expect_exit(&push(&p), 3, &["renamed"]);
    // Right size, wrong content.
    let p = write_as(&a.env, "0000000100000000000000F2", &vec![0x5a; original.len()]);
    expect_exit(&push(&p), 3, &["not a WAL segment"]);
    // A segment from another cluster.
    let other = Cluster::init(&a.env.pg_dir("other"), "");
    let foreign = std::fs::read(other.data.join("pg_wal/000000010000000000000001")).unwrap();
    let p = write_as(&a.env, "000000010000000000000001", &foreign);
    expect_exit(&push(&p), 3, &["another cluster"]);
    // A history file that does not parse.
    let p = write_as(&a.env, "00000002.history", b"this is not a history file\n");
    expect_exit(&push(&p), 3, &["not a valid timeline history file"]);

    // The same segment again: fine, and said so.
    expect_exit(&push(&c.data.join("pg_wal").join(&seg)), 0, &["already archived with identical content"]);
    // Same name, different content: refused, naming both digests.
    let mut changed = original.clone();
    changed[original.len() / 2] ^= 0xff;
    let p = write_as(&a.env, &seg, &changed);
    let out = push(&p);
    expect_exit(&out, 4, &["different content", &blake3::hash(&original).to_hex(), &blake3::hash(&changed).to_hex()]);

    assert_eq!(before, snapshot(&repo), "a refused push changed the repository");
    let dest = a.env.path().join("fetched");
    expect_exit(&a.env.tidewal(&["wal-fetch", &seg, dest.to_str().unwrap()]), 0, &[]);
    assert!(std::fs::read(&dest).unwrap() == original, "the archived copy changed");
    for name in ["0000000100000000000000F0", "0000000100000000000000F1", "0000000100000000000000F2"] {
        assert_eq!(code(&a.env.tidewal(&["wal-fetch", name, dest.to_str().unwrap()])), 1, "{name} must not be stored");
    }
}

#[test]
fn wal_fetch_stops_recovery_on_corruption_and_key_problems() {
    let a = Archiving::start("badfetch", RepoKind::File);
    let c = &a.cluster;
    c.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 10000) g");
    let first = c.switch_wal();
    c.psql("INSERT INTO t SELECT g FROM generate_series(1, 10000) g");
    let second = c.switch_wal();
    c.wait_archived(&second);
    let repo = a.repo_dir.clone().unwrap();
    let dest = a.env.path().join("restored-segment");
    let fetch = |env: &TestEnv, seg: &str| env.tidewal(&["wal-fetch", seg, dest.to_str().unwrap()]);

    // A flipped byte names the object and exits above 125, so PostgreSQL stops recovery.
    let obj = format!("wal/00000001/{first}");
    let path = repo.join(&obj);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&path, &bytes).unwrap();
    expect_exit(&fetch(&a.env, &first), 128 + 5, &[&obj, "failed authentication"]);
    assert!(!dest.exists(), "a corrupt segment must not reach the destination");
    // A truncated object.
    let obj2 = format!("wal/00000001/{second}");
    let path2 = repo.join(&obj2);
    let len = std::fs::metadata(&path2).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&path2).unwrap().set_len(len - 1000).unwrap();
    expect_exit(&fetch(&a.env, &second), 128 + 5, &[&obj2, "truncated"]);
    assert!(!dest.exists());

    // The wrong key, and no key at all.
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    let key_line = config.lines().find(|l| l.starts_with("key_file")).unwrap().to_string();
    let wrong = a.env.keygen("wrong.key");
    a.env.write_config(&config.replace(&key_line, &format!("key_file = \"{}\"", wrong.display())));
    expect_exit(&fetch(&a.env, &second), 128 + 5, &["tidewal.json", "sealed with key"]);
    expect_exit(
        &a.env.tidewal(&["wal-push", c.data.join("pg_wal").join(&second).to_str().unwrap()]),
        5,
        &["sealed with key"],
    );
    a.env.write_config(&config.replace(&key_line, ""));
    expect_exit(&fetch(&a.env, &second), 128 + 5, &["no key is configured"]);
    // A key file others can read is refused before anything else happens.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrong, std::fs::Permissions::from_mode(0o644)).unwrap();
    a.env.write_config(&config.replace(&key_line, &format!("key_file = \"{}\"", wrong.display())));
    expect_exit(&a.env.tidewal(&["wal-push", "x"]), 2, &["chmod 600"]);
    // Bad configuration names the key; for wal-fetch it is also fatal to recovery.
    a.env.write_config(&format!("{config}\n[bogus]\nx = 1\n"));
    expect_exit(&a.env.tidewal(&["wal-push", "x"]), 2, &["bogus"]);
    expect_exit(&fetch(&a.env, &second), 128 + 2, &["bogus"]);
    a.env.write_config(&config);
    // A name PostgreSQL would never ask for.
    expect_exit(&fetch(&a.env, "RECOVERYXLOG"), 128 + 3, &["not a WAL segment name"]);
}

#[test]
fn store_outage_fails_cleanly_and_postgres_catches_up() {
    let mut a = Archiving::start("outage", RepoKind::S3);
    a.cluster.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 1000) g");
    let seg = a.cluster.switch_wal();
    a.cluster.wait_archived(&seg);
    a.s3.as_mut().unwrap().stop();

    let wal = a.cluster.data.join("pg_wal").join(&seg);
    expect_exit(&a.env.tidewal(&["wal-push", wal.to_str().unwrap()]), 6, &["cannot reach the repository"]);
    let dest = a.env.path().join("x");
    expect_exit(
        &a.env.tidewal(&["wal-fetch", &seg, dest.to_str().unwrap()]),
        128 + 6,
        &["cannot reach the repository"],
    );

    // PostgreSQL keeps the segment while the store is down...
    a.cluster.psql("INSERT INTO t SELECT g FROM generate_series(1, 1000) g");
    let pending = a.cluster.switch_wal();
    wait_for("a failed archive attempt", std::time::Duration::from_secs(60), || {
        a.cluster.psql("SELECT failed_count FROM pg_stat_archiver") != "0"
    });
    assert!(a.cluster.data.join("pg_wal/archive_status").join(format!("{pending}.ready")).exists());
    // ...and archives it once the store is back.
    a.s3.as_mut().unwrap().restart();
    let next = a.cluster.switch_wal();
    a.cluster.wait_archived(&next);
    let out = a.env.tidewal(&["wal-fetch", &pending, dest.to_str().unwrap()]);
    expect_exit(&out, 0, &[]);
    assert!(std::fs::read(&dest).unwrap() == std::fs::read(a.cluster.data.join("pg_wal").join(&pending)).unwrap());
}
