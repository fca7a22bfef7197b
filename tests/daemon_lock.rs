//! One daemon per cluster and repository, one base backup at a time, wal-push through the
//! daemon only for the daemon's repository, and a slot the daemon did not advance checked
//! against the repository's WAL: against real PostgreSQL 15 clusters.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Hidden setting (read by `repo::lease::configured_timeout`): leases go stale after this,
/// so a test sees a takeover in seconds instead of minutes.
const LEASE_TIMEOUT: &str = "8s";

/// A `tidewal daemon` process, signalled by its own pid (not runuser's).
struct Daemon {
    child: Child,
    pid: i32,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Start it and return at once, whether or not it keeps running.
    fn spawn(env: &TestEnv, config: &Path, port: u16, log: &Path) -> Daemon {
        let err = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let mut child = as_pg(&env.bin)
            .arg("--config")
            .arg(config)
            .arg("daemon")
            .env("TIDEWAL_TEST_LEASE_TIMEOUT", LEASE_TIMEOUT)
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let mut pid = None;
        wait_for("the daemon's pid", Duration::from_secs(10), || {
            pid = own_pid(&mut child);
            pid.is_some()
        });
        Daemon { child, pid: pid.unwrap(), port, log: log.to_path_buf() }
    }

    /// Start it and wait until it serves HTTP.
    fn start(env: &TestEnv, config: &Path, port: u16, log: &Path) -> Daemon {
        let mut d = Daemon::spawn(env, config, port, log);
        wait_for("the daemon's HTTP endpoint", Duration::from_secs(60), || {
            assert!(d.child.try_wait().unwrap().is_none(), "the daemon exited:\n{}", d.log_text());
            d.get("/healthz").is_some()
        });
        d
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Option<(String, String)> {
        http_get(self.port, path)
    }

    fn metric(&self, name: &str) -> Option<f64> {
        metric_at(self.port, name)
    }

    fn signal(&self, sig: &str) {
        assert!(self.pid > 0, "the daemon had exited:\n{}", self.log_text());
        run_ok(std::process::Command::new("kill").arg(format!("-{sig}")).arg(self.pid.to_string()));
        if sig == "CONT" {
            // runuser stops itself when its child stops: wake it too, or it never reaps.
            run_ok(std::process::Command::new("kill").arg("-CONT").arg(self.child.id().to_string()));
        }
    }

    /// Its exit status, once it has exited (at most `timeout`).
    fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut status = None;
        wait_for("the daemon to exit", timeout, || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    fn stop(mut self) -> ExitStatus {
        self.signal("TERM");
        self.wait_exit(Duration::from_secs(60))
    }

    /// Wait until all the WAL the server has written is durable in the repository.
    fn wait_durable(&self) {
        std::thread::sleep(Duration::from_millis(1500));
        wait_for("the WAL to be durable", Duration::from_secs(30), || {
            self.metric("tidewal_wal_archive_lag_bytes") == Some(0.0)
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.pid > 0 {
            for sig in ["-CONT", "-9"] {
                let mut kill = std::process::Command::new("kill");
                let _ = kill.args([sig, &self.pid.to_string()]).stderr(Stdio::null()).status();
            }
        }
        let mut kill = std::process::Command::new("kill");
        let _ = kill.args(["-CONT", &self.child.id().to_string()]).stderr(Stdio::null()).status();
        let _ = self.child.wait();
    }
}

/// A process that had exited before its pid was read.
const NO_PID: i32 = -1;

/// The tidewal process: runuser's child when we run as root, else the child itself.
fn own_pid(child: &mut Child) -> Option<i32> {
    if unsafe { libc::geteuid() } != 0 {
        return Some(child.id() as i32);
    }
    let id = child.id();
    let children = std::fs::read_to_string(format!("/proc/{id}/task/{id}/children")).unwrap_or_default();
    if let Some(pid) = children.split_whitespace().next() {
        return pid.parse().ok();
    }
    // It may have exited already (a refusal is quick): then there is nothing to signal.
    child.try_wait().ok().flatten().map(|_| NO_PID)
}

/// The test's config with a [daemon] section (its own listen port) written to `name`.
fn daemon_config(a: &Archiving, name: &str, section: &str) -> (PathBuf, u16, PathBuf) {
    let port = free_port();
    let base = std::fs::read_to_string(&a.env.config).unwrap();
    let path = a.env.path().join(name);
    std::fs::write(&path, format!("{base}\n[daemon]\n{section}\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    chown_pg(&path);
    (path, port, a.env.path().join(format!("{name}.log")))
}

fn exit_code(s: ExitStatus) -> i32 {
    s.code().expect("exited by signal")
}

/// Two daemons with the same configuration: the second stops at once with a conflict that
/// names the first's pid; the first goes on archiving.
#[test]
fn a_second_daemon_for_the_same_cluster_refuses_to_start() {
    let a = Archiving::start("lock-same", RepoKind::File);
    let c = &a.cluster;
    let section = format!(
        "pgdata = \"{}\"\nsocket = \"{}\"\nspool = \"{}\"",
        c.data.display(),
        a.env.path().join("tidewal.sock").display(),
        a.env.path().join("spool").display()
    );
    let (config, port, log) = daemon_config(&a, "tidewal.toml", &section);
    let first = Daemon::start(&a.env, &config, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || first.metric("tidewal_repo_backups") == Some(1.0));

    let mut second = Daemon::spawn(&a.env, &config, port, &a.env.path().join("second.log"));
    let status = second.wait_exit(Duration::from_secs(30));
    let text = second.log_text();
    assert_eq!(exit_code(status), 4, "{text}");
    assert!(text.contains(&format!("another tidewal daemon (pid {}) is running", first.pid)), "{text}");

    // The first is untouched: it answers, and WAL still reaches the repository through it.
    let mut first = first;
    assert!(first.child.try_wait().unwrap().is_none(), "the first daemon stopped:\n{}", first.log_text());
    let (status, _) = first.get("/healthz").unwrap();
    assert!(!status.is_empty());
    c.psql("CREATE TABLE after_refusal (n int); INSERT INTO after_refusal VALUES (1)");
    let last = c.switch_wal();
    c.wait_archived(&last);
    assert_eq!(c.psql("SELECT failed_count FROM pg_stat_archiver"), "0", "{}", c.log());
    assert!(a.repo_dir.as_ref().unwrap().join("wal/00000001").join(&last).exists());
    assert!(c.log().contains("via the daemon"), "wal-push did not go through the daemon:\n{}", c.log());
    assert!(exit_code(first.stop()) == 0);
}

/// A daemon with its own spool directory (as on another host) is refused by the live lease
/// in the repository. Once the first stops renewing (frozen) for longer than the lease
/// timeout, it takes over with a warning, and the first stops when it wakes. After a
/// kill -9, a daemon on the same machine takes over at once: that process is gone.
#[test]
fn a_daemon_elsewhere_is_refused_until_the_lease_is_stale() {
    let a = Archiving::start("lock-lease", RepoKind::File);
    let lease = a.repo_dir.clone().unwrap().join("locks/daemon.json");
    let section = |spool: &str| format!("archive = false\nspool = \"{}\"", a.env.path().join(spool).display());
    let (config_a, port_a, log_a) = daemon_config(&a, "host-a.toml", &section("spool-a"));
    let (config_b, port_b, log_b) = daemon_config(&a, "host-b.toml", &section("spool-b"));
    let first = Daemon::start(&a.env, &config_a, port_a, &log_a);
    wait_for("the first base backup", Duration::from_secs(120), || first.metric("tidewal_repo_backups") == Some(1.0));
    assert!(lease.exists());

    let mut refused = Daemon::spawn(&a.env, &config_b, port_b, &log_b);
    let status = refused.wait_exit(Duration::from_secs(30));
    let text = refused.log_text();
    assert_eq!(exit_code(status), 4, "{text}");
    assert!(text.contains(&format!("(pid {}) holds the lease locks/daemon.json", first.pid)), "{text}");
    drop(refused);

    // Frozen, the first cannot renew; after the lease timeout the second takes over.
    first.signal("STOP");
    std::thread::sleep(humantime::parse_duration(LEASE_TIMEOUT).unwrap() + Duration::from_secs(3));
    let second = Daemon::start(&a.env, &config_b, port_b, &log_b);
    let text = second.log_text();
    assert!(text.contains("taking over the lease locks/daemon.json from tidewal daemon on host"), "{text}");
    assert!(text.contains(&format!("(pid {}): not renewed for", first.pid)), "{text}");

    // Woken, the first finds the lease taken over and stops; one of the two keeps it.
    first.signal("CONT");
    let mut daemons = [first, second];
    let mut stopped = None;
    wait_for("one of the two daemons to stop", Duration::from_secs(60), || {
        stopped = daemons.iter_mut().position(|d| d.child.try_wait().unwrap().is_some());
        stopped.is_some()
    });
    let [first, second] = daemons;
    let (loser, winner) = if stopped == Some(0) { (first, second) } else { (second, first) };
    let mut loser = loser;
    let text = loser.log_text();
    assert_eq!(exit_code(loser.wait_exit(Duration::from_secs(5))), 4, "{text}");
    assert!(text.contains("was taken over by tidewal daemon on host"), "{text}");
    assert!(text.contains(&format!("(pid {})", winner.pid)), "{text}");
    let (loser_config, loser_port, loser_log) =
        if loser.port == port_a { (&config_a, port_a, &log_a) } else { (&config_b, port_b, &log_b) };
    drop(loser);

    // kill -9 leaves the lease behind, but its process is provably gone on this machine.
    let killed = winner.pid;
    winner.signal("KILL");
    drop(winner);
    let began = Instant::now();
    let again = Daemon::start(&a.env, loser_config, loser_port, loser_log);
    let text = again.log_text();
    assert!(text.contains(&format!("(pid {killed}): that process is gone")), "{text}");
    println!("took over from a killed daemon in {:.1}s", began.elapsed().as_secs_f64());

    // A clean stop removes the lease.
    assert_eq!(exit_code(again.stop()), 0);
    assert!(!lease.exists(), "the lease stayed after a clean stop");
}

/// Two `tidewal backup` started at once: one takes the backup, the other is refused by the
/// backup lease, and the repository holds one backup that restores.
#[test]
fn two_backups_at_once_one_is_refused() {
    let a = Archiving::start("lock-backup", RepoKind::File);
    let c = &a.cluster;
    c.pgbench(&["-i", "-s", "5", "-q"]);
    let spawn = || {
        let mut cmd = as_pg(&a.env.bin);
        cmd.arg("--config").arg(&a.env.config).arg("backup").current_dir(a.env.path());
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (one, two) = (spawn(), spawn());
    let outs = [one.wait_with_output().unwrap(), two.wait_with_output().unwrap()];
    let ok: Vec<_> = outs.iter().filter(|o| o.status.success()).collect();
    let refused: Vec<_> = outs.iter().filter(|o| !o.status.success()).collect();
    assert_eq!(ok.len(), 1, "{}\n---\n{}", stderr(&outs[0]), stderr(&outs[1]));
    expect_exit(refused[0], 4, &["holds the lease locks/backup.json", "base backup on host", "(pid "]);
    assert!(!a.repo_dir.as_ref().unwrap().join("locks/backup.json").exists(), "the backup lease stayed");

    let listing: serde_json::Value = serde_json::from_str(&stdout(&a.env.tidewal(&["list", "--json"]))).unwrap();
    assert_eq!(listing["backups"].as_array().unwrap().len(), 1, "{listing}");
    assert!(stdout(ok[0]).contains(listing["backups"][0]["id"].as_str().unwrap()), "{}", stdout(ok[0]));
    let r = restore_and_start(&a, "restored", &["--target-action", "promote"]);
    wait_promoted(&r);
    assert_eq!(r.psql("SELECT count(*) FROM pgbench_accounts"), "500000");
}

/// `wal-push --repo <another repository>` with a daemon listening on daemon.socket: the
/// daemon answers that it serves another repository, and wal-push stores the file in the
/// one it was given.
#[test]
fn wal_push_for_another_repository_does_not_go_to_the_daemon() {
    let a = Archiving::start("lock-push", RepoKind::File);
    let c = &a.cluster;
    expect_exit(&a.env.tidewal(&["backup"]), 0, &[]);
    // Only the wal-push calls below store WAL.
    c.set("archive_command", "/bin/true");
    let section = format!("archive = false\nsocket = \"{}\"", a.env.path().join("tidewal.sock").display());
    let (config, port, log) = daemon_config(&a, "tidewal.toml", &section);
    let d = Daemon::start(&a.env, &config, port, &log);
    wait_for("the socket", Duration::from_secs(30), || a.env.path().join("tidewal.sock").exists());

    let other = a.env.pg_dir("other-repo");
    let other_url = format!("file://{}", other.display());
    expect_exit(&a.env.tidewal(&["--repo", &other_url, "init"]), 0, &[]);
    let seg = c.switch_wal();
    let copy = a.env.pg_dir("push").join(&seg);
    std::fs::copy(c.data.join("pg_wal").join(&seg), &copy).unwrap();
    chown_pg(&copy);

    let out = a.env.tidewal(&["--repo", &other_url, "wal-push", copy.to_str().unwrap()]);
    expect_exit(&out, 0, &[]);
    assert!(!stderr(&out).contains("via the daemon"), "{}", stderr(&out));
    assert!(other.join("wal/00000001").join(&seg).exists(), "{seg} is not in the repository wal-push was given");
    let own = a.repo_dir.clone().unwrap().join("wal/00000001").join(&seg);
    assert!(!own.exists(), "{seg} went to the daemon's repository");

    // Its own repository still goes through the daemon.
    let out = a.env.tidewal(&["wal-push", copy.to_str().unwrap()]);
    expect_exit(&out, 0, &["via the daemon"]);
    assert!(own.exists());
    assert_eq!(exit_code(d.stop()), 0);
}

/// While the daemon is down the slot is dropped, WAL is written, archived elsewhere and
/// recycled, and the slot is made again reserving WAL (as failover tooling does): it starts
/// after the repository's WAL ends. The restarted daemon does not trust it: it reports the
/// gap and takes a base backup at once.
#[test]
fn a_slot_made_anew_while_the_daemon_was_down_is_a_gap() {
    let a = Archiving::start("lock-slot", RepoKind::File);
    let c = &a.cluster;
    c.set("archive_command", "/bin/true");
    let section = "archive = false\nstream = true\nslot = \"tidewal_anew\"\nflush_interval = \"1s\"";
    let (config, port, log) = daemon_config(&a, "tidewal.toml", section);
    let d = Daemon::start(&a.env, &config, port, &log);
    wait_for("the first base backup", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(1.0));
    c.psql("CREATE TABLE t (n int); INSERT INTO t VALUES (1)");
    d.wait_durable();
    assert_eq!(exit_code(d.stop()), 0);

    c.psql("SELECT pg_drop_replication_slot('tidewal_anew')");
    for i in 2..6 {
        c.psql(&format!("INSERT INTO t VALUES ({i})"));
        let seg = c.switch_wal();
        c.wait_archived(&seg);
        c.psql("CHECKPOINT");
    }
    c.psql("SELECT pg_create_physical_replication_slot('tidewal_anew', true)");
    assert_ne!(c.psql("SELECT restart_lsn FROM pg_replication_slots WHERE slot_name = 'tidewal_anew'"), "");

    let d = Daemon::start(&a.env, &config, port, &log);
    wait_for("the gap to be reported", Duration::from_secs(60), || {
        std::fs::read_to_string(&log).unwrap().contains("the server no longer has WAL from")
    });
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("this daemon did not advance it"), "{text}");
    assert!(d.metric("tidewal_wal_gaps_total").unwrap_or(0.0) >= 1.0);
    wait_for("a base backup after the gap", Duration::from_secs(120), || d.metric("tidewal_repo_backups") == Some(2.0));
    c.psql("INSERT INTO t VALUES (6)");
    d.wait_durable();
    let (status, body) = d.get("/healthz").unwrap();
    assert!(!body.contains("no longer has WAL"), "{status}\n{body}");
    assert_eq!(exit_code(d.stop()), 0);
}
