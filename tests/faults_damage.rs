//! Fault suite, damage: one archived file:// repository is built once, and each kind of
//! damage is done to a copy of it. `tidewal verify` must name the damaged object (exit 5),
//! and `tidewal restore` must refuse, naming it, without leaving anything that passes for a
//! restored cluster. A cluster whose system identifier differs can neither push into the
//! repository nor be overwritten by a restore from it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use tidewal::codec::{open_to_vec, seal_to_vec, Key, Keyring, SealOptions};

/// A copy of the repository with its own configuration file.
struct Copy {
    name: String,
    repo: PathBuf,
    config: PathBuf,
}

struct Fixture {
    a: Archiving,
    key: Key,
    id: String,
    /// The backup's first WAL segment, and segments archived after the backup.
    start_wal: String,
    later: Vec<String>,
}

impl Fixture {
    fn copy(&self, name: &str) -> Copy {
        let repo = self.a.env.path().join(format!("repo-{name}"));
        run_ok(std::process::Command::new("cp").arg("-a").arg(self.a.repo_dir.as_ref().unwrap()).arg(&repo));
        let original = std::fs::read_to_string(&self.a.env.config).unwrap();
        let text = original.replace(
            &format!("file://{}\"", self.a.repo_dir.as_ref().unwrap().display()),
            &format!("file://{}\"", repo.display()),
        );
        assert_ne!(text, original);
        let config = self.a.env.path().join(format!("{name}.toml"));
        std::fs::write(&config, text).unwrap();
        chown_pg(&config);
        Copy { name: name.to_string(), repo, config }
    }

    fn tidewal(&self, c: &Copy, args: &[&str]) -> Output {
        as_pg(&self.a.env.bin)
            .arg("--config")
            .arg(&c.config)
            .args(args)
            .current_dir(self.a.env.path())
            .output()
            .unwrap()
    }

    /// `verify --json`: its exit code and the (object, problem) pairs it reports.
    fn verify(&self, c: &Copy) -> (i32, Vec<(String, String)>) {
        let out = self.tidewal(c, &["verify", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&stdout(&out))
            .unwrap_or_else(|e| panic!("{}: {e}: {}\n{}", c.name, stdout(&out), stderr(&out)));
        let problems = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["object"].as_str().unwrap().to_string(), p["problem"].as_str().unwrap().to_string()))
            .collect();
        (code(&out), problems)
    }

    /// verify exits 5 and names `object` with a problem containing `what`.
    fn verify_names(&self, c: &Copy, object: &str, what: &str) {
        let (rc, problems) = self.verify(c);
        assert_eq!(rc, 5, "{}: {problems:?}", c.name);
        assert!(
            problems.iter().any(|(o, p)| o == object && p.contains(what)),
            "{}: verify does not name {object} ({what}): {problems:?}",
            c.name
        );
    }

    /// restore exits `want`, names every needle, and leaves nothing that could be started.
    fn restore_refused(&self, c: &Copy, want: i32, needles: &[&str]) -> PathBuf {
        let data = self.a.env.pg_dir(&format!("restore-{}", c.name)).join("pgdata");
        let out = self.tidewal(c, &["restore", "--to", data.to_str().unwrap()]);
        expect_exit(&out, want, needles);
        refused_leaves_nothing(&data, &out);
        data
    }

    fn wal_obj(seg: &str) -> String {
        format!("wal/{}/{seg}", &seg[..8])
    }

    /// Rewrite `obj` in the copy: opened, changed and sealed again with the repository's key
    /// under its own name, so that only its content is wrong.
    fn reseal(&self, c: &Copy, obj: &str, change: impl FnOnce(Vec<u8>) -> Vec<u8>) {
        let path = c.repo.join(obj);
        let ring = Keyring::new(self.key.clone(), vec![]);
        let plain = open_to_vec(&std::fs::read(&path).unwrap(), &ring, obj).unwrap();
        let sealed =
            seal_to_vec(&change(plain), Some(&self.key), obj, SealOptions { lz4: false, digest: None, chain: false })
                .unwrap();
        std::fs::write(&path, sealed.out).unwrap();
    }
}

fn refused_leaves_nothing(data: &Path, out: &Output) {
    assert!(!stdout(out).contains("restored backup"), "{}", stdout(out));
    assert!(!data.join("recovery.signal").exists(), "a refused restore left recovery.signal");
    assert!(!data.join("tidewal-restore.toml").exists(), "a refused restore configured recovery");
}

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

fn cut_short(path: &Path, by: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(len - by).unwrap();
}

fn swap(a: &Path, b: &Path) {
    let tmp = a.with_extension("swap");
    std::fs::rename(a, &tmp).unwrap();
    std::fs::rename(b, a).unwrap();
    std::fs::rename(&tmp, b).unwrap();
}

fn build() -> Fixture {
    let a = Archiving::start("damage", RepoKind::File);
    let c = &a.cluster;
    // No segment is archived but those the test switches: the repository is copied live.
    c.set("archive_timeout", "0");
    c.psql("CREATE TABLE t (n int)");
    c.psql("INSERT INTO t SELECT generate_series(1, 20000)");
    let id = backup_id(&a.env.tidewal(&["backup"]));
    let list: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    let start_wal = list["backups"][0]["start_wal"].as_str().unwrap().to_string();
    let mut later = Vec::new();
    for i in 0..4 {
        c.psql(&format!("INSERT INTO t SELECT generate_series(1, {})", 1000 * (i + 1)));
        later.push(c.switch_wal());
    }
    c.wait_archived(later.last().unwrap());
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    let key_file = config.lines().find_map(|l| l.strip_prefix("key_file = ")).unwrap().trim_matches('"').to_string();
    let key = Key::from_text(&std::fs::read_to_string(key_file).unwrap(), "test").unwrap();
    Fixture { a, key, id, start_wal, later }
}

#[test]
fn damage_is_named_by_verify_and_refused_by_restore() {
    let f = build();
    let base = format!("backups/{}/base.tar", f.id);
    let manifest = format!("backups/{}/backup_manifest", f.id);
    let start = Fixture::wal_obj(&f.start_wal);

    // The undamaged copy passes both, so each refusal below is the damage's doing.
    let clean = f.copy("clean");
    assert_eq!(f.verify(&clean), (0, vec![]));
    let data = f.a.env.pg_dir("restore-clean").join("pgdata");
    expect_exit(&f.tidewal(&clean, &["restore", "--to", data.to_str().unwrap()]), 0, &[]);

    // A flipped byte in the middle of the base archive: only reading it finds the damage,
    // after part of it was unpacked; the restore says the directory is incomplete.
    let c = f.copy("flipped-archive");
    flip_middle_byte(&c.repo.join(&base));
    f.verify_names(&c, &base, "");
    f.restore_refused(&c, 5, &[&base, "incomplete restore", "do not start it"]);

    // A flipped byte in the backup's own WAL: refused before anything is written.
    let c = f.copy("flipped-wal");
    flip_middle_byte(&c.repo.join(&start));
    f.verify_names(&c, &start, "");
    let data = f.restore_refused(&c, 5, &[&start, "cannot be used"]);
    assert!(!data.join("backup_manifest").exists(), "the restore wrote before refusing");

    // Truncated objects.
    let c = f.copy("truncated-archive");
    cut_short(&c.repo.join(&base), 100);
    f.verify_names(&c, &base, "");
    f.restore_refused(&c, 5, &[&base, "backup.json recorded"]);
    let c = f.copy("truncated-wal");
    cut_short(&c.repo.join(&start), 100);
    f.verify_names(&c, &start, "truncated");
    f.restore_refused(&c, 5, &[&start, "truncated"]);

    // A segment deleted from the middle of the chain: restoring to the end would stop at the
    // gap and silently leave out the WAL archived after it.
    let c = f.copy("gap");
    let gone = Fixture::wal_obj(&f.later[1]);
    std::fs::remove_file(c.repo.join(&gone)).unwrap();
    f.verify_names(&c, &gone, "missing");
    f.restore_refused(&c, 1, &[&f.later[1], "is missing but WAL after it is archived"]);
    // A target before the gap is still served.
    let data = f.a.env.pg_dir("restore-gap-immediate").join("pgdata");
    expect_exit(&f.tidewal(&c, &["restore", "--immediate", "--to", data.to_str().unwrap()]), 0, &[]);

    // Two objects' names exchanged: each is bound to its own name.
    let c = f.copy("swapped-wal");
    let other = Fixture::wal_obj(&f.later[2]);
    swap(&c.repo.join(&start), &c.repo.join(&other));
    f.verify_names(&c, &start, "another name");
    f.verify_names(&c, &other, "another name");
    f.restore_refused(&c, 5, &[&start, "another name"]);
    let c = f.copy("swapped-backup");
    swap(&c.repo.join(&base), &c.repo.join(&manifest));
    f.verify_names(&c, &base, "");
    f.restore_refused(&c, 5, &["backup.json recorded"]);

    // backup.json's object list no longer matches the objects: a digest changed, an object
    // dropped from the list.
    let record = format!("backups/{}/backup.json", f.id);
    let c = f.copy("record-digest");
    f.reseal(&c, &record, |plain| {
        let mut v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        let objs = v["objects"].as_array_mut().unwrap();
        let o = objs.iter_mut().find(|o| o["name"] == base.as_str()).unwrap();
        o["digest"] = serde_json::Value::String("00".repeat(32));
        serde_json::to_vec(&v).unwrap()
    });
    f.verify_names(&c, &base, "backup.json recorded");
    f.restore_refused(&c, 5, &[&base, "backup.json recorded"]);
    let c = f.copy("record-dropped");
    f.reseal(&c, &record, |plain| {
        let mut v: serde_json::Value = serde_json::from_slice(&plain).unwrap();
        v["objects"].as_array_mut().unwrap().retain(|o| o["name"] != base.as_str());
        serde_json::to_vec(&v).unwrap()
    });
    f.verify_names(&c, &record, &format!("does not list {base}"));
    f.verify_names(&c, &manifest, "do not match the manifest");
    let data = f.restore_refused(&c, 5, &["its backup.json does not list", &base]);
    assert!(!data.join("backup_manifest").exists(), "the restore wrote before refusing");

    // A flipped byte in backup.json itself: the record does not open.
    let c = f.copy("record-flipped");
    flip_middle_byte(&c.repo.join(&record));
    expect_exit(&f.tidewal(&c, &["verify"]), 5, &[&record]);
    f.restore_refused(&c, 5, &[&record]);

    // The wrong key: nothing opens, and the repository's identity says why.
    let c = f.copy("wrong-key");
    let wrong = f.a.env.keygen("wrong.key");
    let text = std::fs::read_to_string(&c.config).unwrap();
    let key_line = text.lines().find(|l| l.starts_with("key_file")).unwrap().to_string();
    std::fs::write(&c.config, text.replace(&key_line, &format!("key_file = \"{}\"", wrong.display()))).unwrap();
    expect_exit(&f.tidewal(&c, &["verify"]), 5, &["tidewal.json", "sealed with key"]);
    f.restore_refused(&c, 5, &["tidewal.json", "sealed with key"]);

    // Another cluster's WAL under the backup's own segment name, sealed with the right key
    // and name: only its page header tells.
    let c = f.copy("foreign-wal");
    f.reseal(&c, &start, |mut plain| {
        plain[24] ^= 0xff; // xlp_sysid of the long page header
        plain
    });
    f.verify_names(&c, &start, "another cluster's WAL");
    f.restore_refused(&c, 5, &[&start, "another cluster's WAL"]);

    // A cluster of another system: it cannot push into the repository, and a restore from
    // the repository does not overwrite it, even with --force.
    let mut other = Cluster::init(&f.a.env.pg_dir("other"), "");
    other.start();
    let c = f.copy("other-cluster");
    let text = std::fs::read_to_string(&c.config).unwrap();
    std::fs::write(&c.config, text.replace(&f.a.cluster.conninfo(), &other.conninfo())).unwrap();
    expect_exit(&f.tidewal(&c, &["backup"]), 4, &["belongs to database system"]);
    let seg = other.data.join("pg_wal/000000010000000000000001");
    expect_exit(&f.tidewal(&c, &["wal-push", seg.to_str().unwrap()]), 3, &["another cluster"]);
    other.stop_immediate();
    let out = f.tidewal(&c, &["restore", "--force", "--to", other.data.to_str().unwrap()]);
    expect_exit(&out, 4, &["holds database system", "only replaces its own cluster"]);
    assert!(other.data.join("PG_VERSION").exists(), "the other cluster's data directory was touched");
    refused_leaves_nothing(&other.data, &out);
    other.start();
    assert_eq!(other.psql("SELECT 1"), "1");
    // Nothing of this reached the original repository.
    let out = f.a.env.tidewal(&["verify"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("no problems"), "{}", stdout(&out));
}
