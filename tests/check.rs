//! `tidewal check` and `tidewal init` against a real server.

mod common;

use common::*;

#[test]
fn check_names_what_to_fix_and_passes_once_fixed() {
    let env = TestEnv::new("check");
    let key = env.keygen("repo.key");
    let repo = env.pg_dir("repo");
    let mut c = Cluster::init(&env.pg_dir("primary"), "");
    c.start();
    env.write_config(&format!(
        "[repository]\nurl = \"file://{}\"\nkey_file = \"{}\"\n[postgres]\nconninfo = \"{}\"\n",
        repo.display(),
        key.display(),
        c.conninfo()
    ));

    let out = env.tidewal(&["check"]);
    assert_eq!(code(&out), 8, "{}{}", stdout(&out), stderr(&out));
    let text = stdout(&out);
    for needle in [
        "is not initialised: run `tidewal init`",
        "FAIL  archive_timeout = 0",
        "FAIL  archive_command = ''",
        "Put these lines into postgresql.conf",
        "  archive_timeout = 60",
        &format!("  archive_command = '{} wal-push %p'", env.command_line()),
        "refuses overwrites",
        "replication connection works (timeline 1",
    ] {
        assert!(text.contains(needle), "check output lacks {needle:?}:\n{text}");
    }

    // Reading verbs never make a repository directory (as root it would be one the daemon's
    // user cannot write); they say there is none. init makes it.
    let absent = env.path().join("absent/repo");
    let absent_url = format!("file://{}", absent.display());
    for verb in [&["list"][..], &["verify"], &["restore", "--to", "/nonexistent/x"]] {
        let mut args = vec!["--repo", absent_url.as_str()];
        args.extend_from_slice(verb);
        expect_exit(&env.tidewal(&args), 4, &["there is no repository at", "tidewal init"]);
        assert!(!absent.exists(), "{verb:?} made {}", absent.display());
    }

    expect_exit(&env.tidewal(&["init"]), 0, &[]);
    let again = env.tidewal(&["init"]);
    expect_exit(&again, 0, &[]);
    assert!(stdout(&again).contains("already initialised"), "{}", stdout(&again));
    c.psql(&format!("ALTER SYSTEM SET archive_command = '{} wal-push %p'", env.command_line()));
    c.psql("ALTER SYSTEM SET archive_timeout = 60");
    c.psql("SELECT pg_reload_conf()");
    let out = env.tidewal(&["check"]);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert!(!stdout(&out).contains("FAIL"), "{}", stdout(&out));

    // A second cluster cannot take over the repository.
    let mut other = Cluster::init(&env.pg_dir("other"), "");
    other.start();
    let config = std::fs::read_to_string(&env.config).unwrap();
    env.write_config(&config.replace(&c.conninfo(), &other.conninfo()));
    let sysid = other.psql("SELECT system_identifier FROM pg_control_system()");
    let mine = c.psql("SELECT system_identifier FROM pg_control_system()");
    expect_exit(&env.tidewal(&["init"]), 4, &[&sysid, &mine]);
    let out = env.tidewal(&["check"]);
    assert_eq!(code(&out), 8);
    assert!(stdout(&out).contains(&format!("belongs to database system {mine}")), "{}", stdout(&out));

    // Without a key, init refuses unless told to go unencrypted.
    env.write_config("[repository]\nurl = \"file:///nonexistent-never-created\"\n");
    expect_exit(&env.tidewal(&["init"]), 2, &["tidewal keygen", "--no-encryption"]);
}
