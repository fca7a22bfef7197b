use super::*;
use std::collections::HashMap;

/// Settings from `text` written as the config file in `dir`, without the environment (the
/// sections' own tests use it too).
pub(super) fn load_file(dir: &std::path::Path, text: &str) -> Result<Settings> {
    let path = dir.join("tidewal.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load(&Flags { config: Some(path), ..Flags::default() }, &|_| None)
}

fn load_with(toml: Option<&str>, env: &[(&str, &str)], flags: Flags) -> Result<Settings> {
    let dir = tempfile::tempdir().unwrap();
    let mut flags = flags;
    if let Some(t) = toml {
        let p = dir.path().join("tidewal.toml");
        std::fs::write(&p, t).unwrap();
        flags.config = Some(p);
    }
    let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Settings::load(&flags, &|k| map.get(k).cloned())
}

#[test]
fn precedence_flags_env_file() {
    let t = "[repository]\nurl = \"file:///from/file\"\ncompression = \"none\"\n";
    let s = load_with(Some(t), &[], Flags::default()).unwrap();
    assert_eq!(s.repo_url, "file:///from/file");
    assert!(!s.lz4);
    let s = load_with(Some(t), &[("TIDEWAL_REPO", "s3://env/x")], Flags::default()).unwrap();
    assert_eq!(s.repo_url, "s3://env/x");
    let flags = Flags { repo: Some("file:///flag".into()), ..Default::default() };
    let s = load_with(Some(t), &[("TIDEWAL_REPO", "s3://env/x")], flags).unwrap();
    assert_eq!(s.repo_url, "file:///flag");
}

#[test]
fn spool_follows_systemd_state_directory() {
    let s = load_with(None, &[("STATE_DIRECTORY", "/var/lib/tidewal:/other")], Flags::default()).unwrap();
    assert_eq!(s.daemon.spool, Path::new("/var/lib/tidewal/spool"));
    let t = "[daemon]\nspool = \"/srv/spool\"\n";
    let s = load_with(Some(t), &[("STATE_DIRECTORY", "/var/lib/tidewal")], Flags::default()).unwrap();
    assert_eq!(s.daemon.spool, Path::new("/srv/spool"));
    let s = load_with(Some(t), &[("TIDEWAL_SPOOL", "/env/spool")], Flags::default()).unwrap();
    assert_eq!(s.daemon.spool, Path::new("/env/spool"));
}

#[test]
fn fetch_config_names_the_repository_restore_used() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (key, old) = (dir.path().join("k"), dir.path().join("old"));
    let text = Key::generate();
    for (p, t) in [(&key, text.clone()), (&old, Key::generate())] {
        std::fs::write(p, t).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let t = format!(
        "[repository]\nurl = \"file:///from/file\"\nread_key_files = [{old:?}]\nretry_timeout = \"7s\"\n\
         [repository.s3]\nregion = \"eu\"\n[restore]\nprefetch = 3\n"
    );
    let env = [("TIDEWAL_REPO", "file:///from/env"), ("TIDEWAL_S3_ENDPOINT", "http://e")];
    let flags = Flags { key_file: Some(key.clone()), ..Default::default() };
    let s = load_with(Some(&t), &env, flags).unwrap();
    let written = s.fetch_config().unwrap();
    assert!(!written.contains(&text), "no key material: {written}");
    // Read back as wal-fetch reads it, in an environment that points elsewhere.
    let hostile = [("TIDEWAL_REPO", "file:///elsewhere"), ("TIDEWAL_KEY", "short"), ("TIDEWAL_PREFETCH", "9")];
    let r = load_with(Some(&written), &hostile, Flags::default()).unwrap();
    assert_eq!(r.repo_url, "file:///from/env");
    assert_eq!(r.key_source.key_file.as_deref(), Some(key.as_path()));
    assert_eq!(r.key_source.read_key_files, [old]);
    assert_eq!(r.keys.write_key().map(|k| k.id()), s.keys.write_key().map(|k| k.id()));
    assert_eq!(r.store.retry_timeout, Duration::from_secs(7));
    assert_eq!(r.store.s3.endpoint.as_deref(), Some("http://e"));
    assert_eq!(r.store.s3.region.as_deref(), Some("eu"));
    assert_eq!(r.prefetch, 3);
    // Without the marker the environment would win, as everywhere else.
    let plain = written.replace("ignore_env = true", "");
    assert_eq!(load_with(Some(&plain), &hostile[..1], Flags::default()).unwrap().repo_url, "file:///elsewhere");
}

#[test]
fn fetch_config_refuses_a_key_only_in_the_environment() {
    let key = Key::generate();
    let s = load_with(None, &[("TIDEWAL_KEY", &key)], Flags::default()).unwrap();
    let e = s.fetch_config().unwrap_err();
    assert!(e.message.contains("--key-file") && !e.message.contains(&key), "{e}");
    // Unencrypted: nothing to name.
    let s = load_with(None, &[], Flags::default()).unwrap();
    assert!(!s.fetch_config().unwrap().contains("key_file"));
}

#[test]
fn defaults_without_file() {
    let s = load_with(None, &[], Flags::default()).unwrap();
    assert_eq!(s.repo_url, DEFAULT_REPO);
    assert!(s.lz4);
    assert!(s.keys.write_key().is_none());
}

#[test]
fn conditional_writes_are_required_unless_configured() {
    assert!(load_with(None, &[], Flags::default()).unwrap().store.require_conditional_writes);
    let t = "[repository]\nrequire_conditional_writes = false\n";
    assert!(!load_with(Some(t), &[], Flags::default()).unwrap().store.require_conditional_writes);
    let env = [("TIDEWAL_REQUIRE_CONDITIONAL_WRITES", "true")];
    assert!(load_with(Some(t), &env, Flags::default()).unwrap().store.require_conditional_writes);
}

#[test]
fn bad_values_name_the_key() {
    let e = load_with(Some("[repository]\ncompression = \"zstd\"\n"), &[], Flags::default()).unwrap_err();
    assert!(e.message.contains("compression") && e.message.contains("lz4"), "{e}");
    let e = load_with(Some("[repository]\nurll = \"x\"\n"), &[], Flags::default()).unwrap_err();
    assert!(e.message.contains("urll"), "{e}");
    let e = load_with(Some("[repository]\nretry_timeout = \"soon\"\n"), &[], Flags::default()).unwrap_err();
    assert!(e.message.contains("repository.retry_timeout"), "{e}");
    let e = load_with(None, &[("TIDEWAL_S3_ALLOW_HTTP", "maybe")], Flags::default()).unwrap_err();
    assert!(e.message.contains("TIDEWAL_S3_ALLOW_HTTP"), "{e}");
    let e = load_with(None, &[("TIDEWAL_KEY", "short")], Flags::default()).unwrap_err();
    assert!(e.message.contains("TIDEWAL_KEY"), "{e}");
    let e = load_with(Some("[daemon]\narchive_parallel = \"x\"\n"), &[], Flags::default()).unwrap_err();
    assert!(e.message.contains("line 2, column 20, at daemon.archive_parallel: invalid type"), "{e}");
    let flags = Flags { config: Some("/nonexistent/tidewal.toml".into()), ..Default::default() };
    assert!(load_with(None, &[], flags).unwrap_err().message.contains("/nonexistent/tidewal.toml"));
}

#[test]
fn errors_never_echo_secrets() {
    // A syntax error on the line of a conninfo: toml would quote the line.
    let t = "[repository]\nurl = \"file:///r\"\n[postgres]\nconninfo = \"host=db password=hunter2\n";
    let e = load_with(Some(t), &[], Flags::default()).unwrap_err();
    assert!(!e.message.contains("hunter2"), "{e}");
    assert!(e.message.contains("line 4, column 37, at postgres.conninfo: invalid basic string"), "{e}");
    // A wrong type: serde would quote the value.
    let t = "[repository.s3]\nsecret_access_key = 12345678\n";
    let e = load_with(Some(t), &[], Flags::default()).unwrap_err();
    assert!(!e.message.contains("12345678"), "{e}");
    assert!(e.message.contains("at repository.s3.secret_access_key: invalid type: integer `***`"), "{e}");
    // A value that breaks the syntax further on names no key made of its pieces.
    let t = "[postgres]\nconninfo = \"\"\"host=db\nhunter2 = \\q\"\"\"\n";
    let e = load_with(Some(t), &[], Flags::default()).unwrap_err();
    assert!(!e.message.contains("hunter2"), "{e}");
    let t = "[repository.s3]\nsecret_access_key = [\"hunter2\"]\n";
    let e = load_with(Some(t), &[], Flags::default()).unwrap_err();
    assert!(!e.message.contains("hunter2") && e.message.contains("invalid type"), "{e}");
    // Syntax errors still say what was expected; values of other keys are still quoted.
    let t = "[postgres]\nconninfo = \"host=db\" password=hunter2\n";
    let e = load_with(Some(t), &[], Flags::default()).unwrap_err();
    assert!(!e.message.contains("hunter2") && e.message.contains("expected newline, `#`"), "{e}");
    let e = load_with(Some("[repository]\ncompression = \"zstd\"\n"), &[], Flags::default()).unwrap_err();
    assert!(e.message.contains("zstd"), "{e}");
}

#[test]
fn known_keys_cover_every_section() {
    // serde lists a section's fields when it meets an unknown one.
    let sections = ["", "[repository]", "[repository.s3]", "[postgres]", "[restore]", "[retention]", "[daemon]"];
    for section in sections.into_iter().chain(["[verify]", "[dump]", "[repository.azure]", "[repository.gcs]"]) {
        let e = load_with(Some(&format!("{section}\nzz = 1\n")), &[], Flags::default()).unwrap_err();
        let (_, expected) = e.message.split_once("expected").unwrap();
        for field in expected.split('`').skip(1).step_by(2) {
            assert!(KNOWN_KEYS.split_whitespace().any(|k| k == field), "{field} is missing from KNOWN_KEYS");
        }
    }
}

#[test]
fn identity_cache_follows_xdg_and_can_be_turned_off() {
    let dir = |env: &[(&str, &str)]| load_with(None, env, Flags::default()).unwrap().identity_cache.map(|c| c.dir);
    assert_eq!(dir(&[]), None);
    assert_eq!(dir(&[("HOME", "/home/pg")]), Some(PathBuf::from("/home/pg/.cache/tidewal")));
    assert_eq!(dir(&[("HOME", "/home/pg"), ("XDG_CACHE_HOME", "/xdg")]), Some(PathBuf::from("/xdg/tidewal")));
    assert_eq!(dir(&[("HOME", "/home/pg"), ("TIDEWAL_CACHE_DIR", "/c")]), Some(PathBuf::from("/c")));
    assert_eq!(dir(&[("HOME", "/home/pg"), ("TIDEWAL_CACHE_DIR", "")]), None);
}

#[test]
fn remote_repositories_upload_more_at_once() {
    let parallel =
        |url: &str| load_with(None, &[("TIDEWAL_REPO", url)], Flags::default()).unwrap().daemon.archive_parallel;
    assert_eq!(parallel("file:///srv/backups"), 4);
    assert_eq!(parallel("/srv/backups"), 4);
    assert_eq!(parallel("s3://bucket/cluster"), 8);
    let t = "[repository]\nurl = \"s3://bucket/c\"\n[daemon]\narchive_parallel = 2\n";
    assert_eq!(load_with(Some(t), &[], Flags::default()).unwrap().daemon.archive_parallel, 2);
}
