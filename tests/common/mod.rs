//! Test harness: real PostgreSQL clusters (15, or the server binaries `TIDEWAL_PG_BIN` names;
//! other majors through `pgver`), run as the `postgres` OS user when the tests run as root,
//! a real S3-compatible server on 127.0.0.1, and the tidewal binary copied where `postgres`
//! can execute it. Everything lives in a per-test temporary directory and is stopped on
//! drop, also when a test fails.
#![allow(dead_code)]

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub mod cloud;
pub mod faults;
pub mod gcs_xml;
pub mod k8s;
mod moto;
pub mod pgver;
pub use moto::MotoServer;
pub use pgver::{pg_bin, server_bin_dir};

pub const PG_USER: &str = "postgres";

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs as the postgres user (via runuser when we are root).
pub fn as_pg(program: impl AsRef<std::ffi::OsStr>) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", PG_USER, "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Give a path to the postgres user (no-op when not root).
pub fn chown_pg(path: &Path) {
    if is_root() {
        run_ok(Command::new("chown").arg("-R").arg(format!("{PG_USER}:{PG_USER}")).arg(path));
    }
}

pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A child forked by another test thread while the binary was being copied holds the copy
/// open for writing until it execs, and executing it meanwhile fails with ETXTBSY. Once
/// one run succeeds, no such descriptor is left.
fn wait_executable(bin: &Path) {
    for _ in 0..100 {
        match Command::new(bin).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => std::thread::sleep(Duration::from_millis(20)),
            _ => return,
        }
    }
}

/// A test's private directory, with the tidewal binary, a key and a config file.
pub struct TestEnv {
    tmp: tempfile::TempDir,
    pub bin: PathBuf,
    pub config: PathBuf,
}

/// Fetch `seg` with `tidewal wal-fetch` and check it is byte-identical to `original`.
pub fn assert_fetches_identical(env: &TestEnv, seg: &str, original: &Path) {
    let dest = env.path().join(format!("fetched-{seg}"));
    expect_exit(&env.tidewal(&["wal-fetch", seg, dest.to_str().unwrap()]), 0, &[]);
    assert!(std::fs::read(original).unwrap() == std::fs::read(&dest).unwrap(), "{seg} differs after a round trip");
}

impl TestEnv {
    pub fn new(label: &str) -> TestEnv {
        let mut tmp = tempfile::Builder::new().prefix(&format!("tidewal-{label}-")).tempdir().unwrap();
        // TIDEWAL_KEEP_TMP=1 leaves the directory (logs, repository, data) for a post-mortem.
        tmp.disable_cleanup(std::env::var_os("TIDEWAL_KEEP_TMP").is_some());
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = tmp.path().join("tidewal");
        // A hard link costs no disk (a copy per test filled a small CI disk); a copy where
        // the temp dir is on another file system.
        if std::fs::hard_link(env!("CARGO_BIN_EXE_tidewal"), &bin).is_err() {
            std::fs::copy(env!("CARGO_BIN_EXE_tidewal"), &bin).unwrap();
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
            wait_executable(&bin);
        }
        let config = tmp.path().join("tidewal.toml");
        chown_pg(tmp.path());
        TestEnv { tmp, bin, config }
    }

    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// A directory owned by postgres.
    pub fn pg_dir(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        chown_pg(&p);
        p
    }

    /// Make a key file readable by postgres only, with `tidewal keygen` itself.
    pub fn keygen(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        let out = self.tidewal_raw(&["keygen", "--output", p.to_str().unwrap()]);
        assert!(out.status.success(), "keygen failed: {}", String::from_utf8_lossy(&out.stderr));
        p
    }

    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config, text).unwrap();
        chown_pg(&self.config);
    }

    /// Run tidewal as postgres with this env's config.
    pub fn tidewal(&self, args: &[&str]) -> Output {
        let mut c = as_pg(&self.bin);
        c.arg("--config").arg(&self.config).args(args).current_dir(self.path());
        c.output().unwrap()
    }

    fn tidewal_raw(&self, args: &[&str]) -> Output {
        as_pg(&self.bin).args(args).current_dir(self.path()).output().unwrap()
    }

    /// The archive_command / restore_command prefix for this env.
    pub fn command_line(&self) -> String {
        format!("{} --config {}", self.bin.display(), self.config.display())
    }
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exited by signal")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The id `tidewal backup` printed ("backup <id> complete: …").
pub fn backup_id(out: &Output) -> String {
    expect_exit(out, 0, &[]);
    stdout(out).split_whitespace().nth(1).unwrap().to_string()
}

/// Assert an exit code and that stderr mentions each of `needles`.
pub fn expect_exit(out: &Output, want: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(code(out), want, "exit code; stdout:\n{}\nstderr:\n{err}", stdout(out));
    for n in needles {
        assert!(err.contains(n), "stderr should mention {n:?}:\n{err}");
    }
}

/// A PostgreSQL cluster in its own directory, port and socket directory.
pub struct Cluster {
    /// Where its server binaries are (initdb, pg_ctl, postgres).
    pub bin: PathBuf,
    pub data: PathBuf,
    pub sock: PathBuf,
    pub port: u16,
    log: PathBuf,
    running: bool,
}

impl Cluster {
    /// initdb a new cluster under `dir` with archiving ready but no archive_command yet.
    pub fn init(dir: &Path, extra_conf: &str) -> Cluster {
        Self::init_with(dir, &[], extra_conf)
    }

    /// Like `init`, with extra initdb arguments (e.g. `--wal-segsize=64`).
    pub fn init_with(dir: &Path, initdb_args: &[&str], extra_conf: &str) -> Cluster {
        Self::init_from(&server_bin_dir(), dir, initdb_args, extra_conf)
    }

    /// Like `init_with`, with the server binaries in `bin`.
    pub fn init_from(bin: &Path, dir: &Path, initdb_args: &[&str], extra_conf: &str) -> Cluster {
        let data = dir.join("pgdata");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        chown_pg(dir);
        let base = ["-D", data.to_str().unwrap(), "-U", PG_USER, "--auth=trust", "-E", "UTF8", "--no-sync"];
        run_ok(as_pg(bin.join("initdb")).args(base).args(initdb_args));
        let c = Cluster {
            bin: bin.to_path_buf(),
            data,
            sock,
            port: free_port(),
            log: dir.join("postgres.log"),
            running: false,
        };
        c.configure(extra_conf);
        c
    }

    /// Take over a data directory made elsewhere (a restored backup), with a new port.
    pub fn adopt(dir: &Path, data: &Path) -> Cluster {
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        chown_pg(dir);
        Cluster {
            bin: server_bin_dir(),
            data: data.to_path_buf(),
            sock,
            port: free_port(),
            log: dir.join("postgres.log"),
            running: false,
        }
    }

    /// A streaming standby of this (running) cluster under `dir`, started with hot_standby
    /// and `extra_conf`; it inherits this cluster's settings, archive_command included.
    pub fn standby(&self, dir: &Path, extra_conf: &str) -> Cluster {
        let data = dir.join("pgdata");
        run_ok(self.client("pg_basebackup").args(["-D", data.to_str().unwrap(), "-R", "-X", "stream", "-c", "fast"]));
        let mut standby = Cluster::adopt(dir, &data);
        standby.bin = self.bin.clone();
        standby.configure(&format!("hot_standby = on\n{extra_conf}"));
        standby.start();
        standby
    }

    /// Promote a standby and wait until it takes writes.
    pub fn promote(&self) {
        run_ok(as_pg(self.bin.join("pg_ctl")).args(["-D", self.data.to_str().unwrap(), "-w", "promote"]));
        wait_for("the promotion", Duration::from_secs(60), || self.psql("SELECT pg_is_in_recovery()") == "f");
    }

    /// Take charge of a cluster something else started (so it is stopped on drop).
    pub fn attach(data: &Path, sock: &Path, port: u16, log: &Path) -> Cluster {
        Cluster {
            bin: server_bin_dir(),
            data: data.to_path_buf(),
            sock: sock.to_path_buf(),
            port,
            log: log.to_path_buf(),
            running: true,
        }
    }

    /// Append settings to postgresql.conf (port and sockets always set).
    pub fn configure(&self, extra: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(self.data.join("postgresql.conf")).unwrap();
        writeln!(
            f,
            "\nport = {}\nlisten_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\n\
             wal_level = replica\narchive_mode = on\nmax_wal_senders = 4\n{extra}",
            self.port,
            self.sock.display()
        )
        .unwrap();
    }

    pub fn start(&mut self) {
        let out = as_pg(self.bin.join("pg_ctl"))
            .args(["-D", self.data.to_str().unwrap(), "-l", self.log.to_str().unwrap(), "-w", "-t", "120", "start"])
            .stdout(Stdio::piped())
            .output()
            .unwrap();
        if !out.status.success() {
            panic!(
                "pg_ctl start failed:\n{}\n{}",
                stderr(&out),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
        self.running = true;
    }

    /// Wait until replication slot `slot` has moved past `lsn`: a tidewal receiver confirms
    /// a position only once the repository has the WAL up to it.
    pub fn wait_slot_past(&self, slot: &str, lsn: &str) {
        wait_for(&format!("slot {slot} to pass {lsn}"), Duration::from_secs(60), || {
            self.psql(&format!("SELECT restart_lsn >= '{lsn}' FROM pg_replication_slots WHERE slot_name = '{slot}'"))
                == "t"
        });
    }

    /// kill -9 of the postmaster and its children at once, as a crash of the host would
    /// leave them (a backend that exited since the list was read is skipped).
    pub fn kill_hard(&self) {
        let pm: i32 =
            std::fs::read_to_string(self.data.join("postmaster.pid")).unwrap().lines().next().unwrap().parse().unwrap();
        let children = std::fs::read_to_string(format!("/proc/{pm}/task/{pm}/children")).unwrap_or_default();
        for pid in std::iter::once(pm).chain(children.split_whitespace().map(|p| p.parse().unwrap())) {
            // SAFETY: kill has no memory preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    pub fn stop_immediate(&mut self) {
        if self.running {
            let _ = as_pg(self.bin.join("pg_ctl"))
                .args(["-D", self.data.to_str().unwrap(), "-m", "immediate", "-w", "stop"])
                .output();
            self.running = false;
        }
    }

    pub fn conninfo(&self) -> String {
        format!("host={} port={} user={PG_USER} dbname=postgres", self.sock.display(), self.port)
    }

    /// Run SQL through psql; returns trimmed unaligned output.
    pub fn psql(&self, sql: &str) -> String {
        let out = run_ok(self.client("psql").args(["-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", "postgres", "-c", sql]));
        stdout(&out).trim().to_string()
    }

    pub fn pgbench(&self, args: &[&str]) {
        run_ok(self.client("pgbench").args(args).arg("postgres"));
    }

    /// A PostgreSQL client tool, run as postgres, pointed at this cluster.
    pub fn client(&self, tool: &str) -> Command {
        let mut c = as_pg(pg_bin(tool));
        c.args(["-h", self.sock.to_str().unwrap(), "-p", &self.port.to_string(), "-U", PG_USER]);
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// ALTER SYSTEM SET and reload.
    pub fn set(&self, name: &str, value: &str) {
        self.psql(&format!("ALTER SYSTEM SET {name} = '{}'", value.replace('\'', "''")));
        self.psql("SELECT pg_reload_conf()");
    }

    /// Switch to a new segment and return the name of the one just completed.
    pub fn switch_wal(&self) -> String {
        // Make sure there is something to switch away from.
        self.psql("SELECT txid_current()");
        self.psql("SELECT pg_walfile_name(pg_switch_wal())")
    }

    /// Wait until the archiver has archived `segment` (or a later one).
    pub fn wait_archived(&self, segment: &str) {
        wait_for(&format!("{segment} to be archived"), Duration::from_secs(90), || {
            let last = self.psql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
            last.len() == 24 && last.as_str() >= segment
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_immediate();
    }
}

/// A real S3-compatible server (s3s-fs) on 127.0.0.1, with one bucket.
pub struct S3Server {
    child: Child,
    pub port: u16,
    pub root: PathBuf,
}

pub const S3_ACCESS_KEY: &str = "tidewaltest";
pub const S3_SECRET_KEY: &str = "tidewaltestsecret";
pub const S3_BUCKET: &str = "backups";

fn s3s_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TIDEWAL_S3S_FS") {
        return p.into();
    }
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("s3s-fs")).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(Path::new(&home).join(".cargo/bin/s3s-fs"));
    }
    candidates.into_iter().find(|p| p.exists()).unwrap_or_else(|| {
        panic!("s3s-fs not found: cargo install s3s-fs --version 0.14.1 --features binary --locked (or set TIDEWAL_S3S_FS)")
    })
}

impl S3Server {
    pub fn start(root: &Path) -> S3Server {
        std::fs::create_dir_all(root.join(S3_BUCKET)).unwrap();
        // Another process may take the free port first: then the server exits, and another
        // port is tried.
        for _ in 0..5 {
            let port = free_port();
            let mut s = S3Server { child: Self::spawn(root, port), port, root: root.to_path_buf() };
            if s.wait_ready() {
                return s;
            }
        }
        panic!("s3s-fs exited five times at start")
    }

    fn spawn(root: &Path, port: u16) -> Child {
        Command::new(s3s_binary())
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_ACCESS_KEY, "--secret-key", S3_SECRET_KEY])
            .arg(root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start s3s-fs")
    }

    /// Listening (true), or exited (false): what answers on the port is then not this server.
    fn wait_ready(&mut self) -> bool {
        let port = self.port;
        let mut exited = false;
        wait_for("the S3 server to listen", Duration::from_secs(30), || {
            exited = self.child.try_wait().unwrap().is_some();
            exited || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        !exited
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.stop();
        self.child = Self::spawn(&self.root, self.port);
        assert!(self.wait_ready(), "s3s-fs exited at restart: port {} was taken meanwhile", self.port);
    }

    /// The `[repository]` settings for this server.
    pub fn repo_config(&self, prefix: &str) -> String {
        format!(
            "url = \"s3://{S3_BUCKET}/{prefix}\"\nretry_timeout = \"3s\"\n[repository.s3]\nendpoint = \"http://127.0.0.1:{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\nsecret_access_key = \"{S3_SECRET_KEY}\"\nallow_http = true\n",
            self.port
        )
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every file under `dir`, as paths relative to it (a file:// repository's objects).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_path_buf());
            }
        }
    }
    out
}

/// Where a test keeps its repository.
pub enum RepoKind {
    File,
    S3,
}

/// A running cluster wired to an initialised tidewal repository, archiving through wal-push.
pub struct Archiving {
    pub cluster: Cluster,
    pub s3: Option<S3Server>,
    pub repo_dir: Option<PathBuf>,
    pub env: TestEnv,
}

impl Archiving {
    pub fn start(label: &str, kind: RepoKind) -> Archiving {
        Self::start_with(label, kind, &[])
    }

    pub fn start_with(label: &str, kind: RepoKind, initdb_args: &[&str]) -> Archiving {
        Self::start_init(label, kind, initdb_args, &[])
    }

    /// With arguments for `tidewal init` (`--cipher`).
    pub fn start_init(label: &str, kind: RepoKind, initdb_args: &[&str], init_args: &[&str]) -> Archiving {
        let env = TestEnv::new(label);
        let (repo_section, s3, repo_dir) = match kind {
            RepoKind::File => {
                let dir = env.pg_dir("repo");
                (format!("url = \"file://{}\"\n", dir.display()), None, Some(dir))
            }
            RepoKind::S3 => {
                let s3 = S3Server::start(&env.path().join("s3"));
                (s3.repo_config("cluster1"), Some(s3), None)
            }
        };
        Self::start_in(env, &repo_section, s3, repo_dir, &server_bin_dir(), initdb_args, init_args)
    }

    /// On moto's S3 server (for incomplete uploads), under the prefix `cluster1`.
    pub fn start_on_moto(label: &str) -> (Archiving, MotoServer) {
        let env = TestEnv::new(label);
        let moto = MotoServer::start(&env.path().join("moto.log"));
        (Self::start_in(env, &moto.repo_config("cluster1"), None, None, &server_bin_dir(), &[], &[]), moto)
    }

    fn start_in(
        env: TestEnv,
        repo_section: &str,
        s3: Option<S3Server>,
        repo_dir: Option<PathBuf>,
        bin: &Path,
        initdb_args: &[&str],
        init_args: &[&str],
    ) -> Archiving {
        let key = env.keygen("repo.key");
        let mut cluster = Cluster::init_from(bin, &env.pg_dir("primary"), initdb_args, "archive_timeout = 60\n");
        env.write_config(&format!(
            "[repository]\nkey_file = \"{}\"\n{repo_section}\n[postgres]\nconninfo = \"{}\"\n",
            key.display(),
            cluster.conninfo()
        ));
        cluster.start();
        run_ok(as_pg(&env.bin).arg("--config").arg(&env.config).arg("init").args(init_args));
        cluster.psql(&format!("ALTER SYSTEM SET archive_command = '{} wal-push %p'", env.command_line()));
        cluster.psql("SELECT pg_reload_conf()");
        cluster.psql("SELECT pg_stat_reset_shared('archiver')");
        Archiving { cluster, s3, repo_dir, env }
    }
}

/// `tidewal restore` into a new directory (checked by pg_verifybackup too), started on
/// its own port with archiving off.
pub fn restore_and_start(a: &Archiving, name: &str, extra: &[&str]) -> Cluster {
    let dir = a.env.pg_dir(name);
    let data = dir.join("pgdata");
    let mut args = vec!["restore", "--to", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = a.env.tidewal(&args);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("verified against the manifest"), "{}", stdout(&out));
    // An independent check of what was restored, where Debian 15's pg_verifybackup can read
    // the manifest (PostgreSQL 17 and later write version 2).
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("backup_manifest")).unwrap()).unwrap();
    if manifest["PostgreSQL-Backup-Manifest-Version"] == 1 {
        run_ok(as_pg(pg_bin("pg_verifybackup")).args([
            "--no-parse-wal",
            "-i",
            "recovery.signal",
            "-i",
            "postgresql.auto.conf",
            "-i",
            "standby.signal",
            "-i",
            "tidewal-restore.toml",
            data.to_str().unwrap(),
        ]));
    }
    let mut r = Cluster::adopt(&dir, &data);
    r.bin = a.cluster.bin.clone();
    r.configure("archive_mode = off\n");
    r.start();
    r
}

pub fn wait_promoted(r: &Cluster) {
    wait_for("recovery to finish", Duration::from_secs(120), || r.psql("SELECT pg_is_in_recovery()") == "f");
}

/// `tidewal daemon` run as postgres with a test's config; killed on drop.
pub struct Daemon {
    pub child: std::process::Child,
    pub port: u16,
    /// Matches the daemon's own command line (not runuser's, which would escalate to SIGKILL).
    pub pattern: String,
}

impl Daemon {
    pub fn start(env: &TestEnv, port: u16, log: &std::path::Path) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = as_pg(&env.bin)
            .arg("--config")
            .arg(&env.config)
            .arg("daemon")
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let pattern = format!("^[^ ]*/tidewal --config {} daemon", env.config.display());
        let d = Daemon { child, port, pattern };
        wait_for("the daemon's HTTP endpoint", Duration::from_secs(30), || d.get("/healthz").is_some());
        d
    }

    /// Status line and body of a GET, or None when nothing listens.
    pub fn get(&self, path: &str) -> Option<(String, String)> {
        http_get(self.port, path)
    }

    pub fn metric(&self, name: &str) -> Option<f64> {
        metric_at(self.port, name)
    }

    pub fn signal(&self, sig: i32) {
        run_ok(std::process::Command::new("pkill").args([&format!("-{sig}"), "-f", &self.pattern]));
    }

    /// SIGTERM, and wait until it has exited; its exit status.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(15);
        let mut status = None;
        wait_for("the daemon to stop", Duration::from_secs(60), || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap()
    }

    /// Wait until all the WAL the server has written is durable in the repository (the
    /// monitor samples the server every second, so first let it see the newest writes).
    pub fn wait_durable(&self) {
        std::thread::sleep(Duration::from_millis(1500));
        wait_for("the WAL to be durable", Duration::from_secs(30), || {
            self.metric("tidewal_wal_archive_lag_bytes") == Some(0.0)
        });
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = std::process::Command::new("pkill").args(["-9", "-f", &self.pattern]).status();
        let _ = self.child.wait();
    }
}

/// Add a [daemon] section (with a free listen port) to the test's config; the port and the
/// daemon's log file.
pub fn daemon_config(a: &Archiving, section: &str) -> (u16, std::path::PathBuf) {
    let port = free_port();
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!("{config}\n[daemon]\n{section}\nlisten = \"127.0.0.1:{port}\"\n"));
    (port, a.env.path().join("daemon.log"))
}

/// Status line and body of a GET to a daemon's listener on 127.0.0.1, or None when nothing
/// listens.
pub fn http_get(port: u16, path: &str) -> Option<(String, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_string(), body.to_string()))
}

/// The value of metric `name` (without labels, or the first series whose line starts with
/// `name{...}` when labels are given in `name`).
pub fn metric_at(port: u16, name: &str) -> Option<f64> {
    let (_, body) = http_get(port, "/metrics")?;
    body.lines()
        .find(|l| l.starts_with(name) && (name.ends_with('}') || l[name.len()..].starts_with(' ')))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}
