//! The restored copy's server: PostgreSQL binaries of the backup's major, a scratch
//! directory that is always removed, and a postmaster that listens only on a socket inside
//! it, run as the configured OS user when tidewal runs as root (PostgreSQL refuses root).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Code, Fail, Result};

/// A directory holding `postgres` of one major version.
#[derive(Clone, Debug)]
pub struct PgBin {
    pub dir: PathBuf,
    pub major: u32,
}

/// The major version in `postgres --version` or `pg_config --version` output
/// ("postgres (PostgreSQL) 15.4 (Debian 15.4-1)", "PostgreSQL 18beta1").
pub fn parse_major(version: &str) -> Option<u32> {
    let rest = &version[version.find("PostgreSQL")? + "PostgreSQL".len()..];
    let rest = rest.trim_start_matches([')', ' ']);
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    digits.parse().ok()
}

/// Where the server binaries of `major` usually are, in the order they are tried.
pub fn candidates(major: u32, pg_config_bindir: Option<PathBuf>) -> Vec<PathBuf> {
    let mut out = vec![
        PathBuf::from(format!("/usr/lib/postgresql/{major}/bin")),
        PathBuf::from(format!("/usr/pgsql-{major}/bin")),
    ];
    out.extend(pg_config_bindir);
    out
}

fn version_of(program: &Path) -> Option<String> {
    let out = Command::new(program).arg("--version").stdin(Stdio::null()).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// `pg_config --bindir` on PATH, when that pg_config is of `major`.
fn pg_config_bindir(major: u32) -> Option<PathBuf> {
    let version = version_of(Path::new("pg_config"))?;
    if parse_major(&version) != Some(major) {
        return None;
    }
    let out = Command::new("pg_config").arg("--bindir").stdin(Stdio::null()).output().ok()?;
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !dir.is_empty()).then(|| PathBuf::from(dir))
}

/// The server binaries of `major`: the configured directory (which must hold that major),
/// else the first usual place that does.
pub fn find_bin(major: u32, configured: Option<&Path>) -> Result<PgBin> {
    let holds = |dir: &Path| version_of(&dir.join("postgres")).map(|v| (parse_major(&v), v));
    if let Some(dir) = configured {
        return match holds(dir) {
            Some((Some(m), _)) if m == major => Ok(PgBin { dir: dir.to_path_buf(), major }),
            Some((_, v)) => Err(Fail::new(
                Code::Usage,
                format!("verify.pg_bin = {}: it holds {v}, the backup needs PostgreSQL {major}", dir.display()),
            )),
            None => Err(Fail::new(
                Code::Usage,
                format!("verify.pg_bin = {}: no runnable postgres there (it needs pg_ctl and postgres)", dir.display()),
            )),
        };
    }
    let tried = candidates(major, pg_config_bindir(major));
    for dir in &tried {
        if matches!(holds(dir), Some((Some(m), _)) if m == major) {
            return Ok(PgBin { dir: dir.clone(), major });
        }
    }
    let tried: Vec<String> = tried.iter().map(|d| d.display().to_string()).collect();
    Err(Fail::new(
        Code::Usage,
        format!(
            "no PostgreSQL {major} server binaries found (looked in {} and pg_config on PATH): install them \
             or set [verify] pg_bin to the directory that holds postgres",
            tried.join(", ")
        ),
    ))
}

/// A client program (`pg_dump`, `pg_restore`) and its major version.
#[derive(Clone, Debug)]
pub struct Client {
    pub path: PathBuf,
    pub major: u32,
    pub version: String,
}

/// The newest PostgreSQL major searched for client programs.
const NEWEST_MAJOR: u32 = 18;

/// `tool` of major `min_major` or newer (a dump or restore needs a client at least as new as
/// the server or the archive): in `configured` when given, else in the usual places of
/// `min_major`, then of each newer major.
pub fn find_client(tool: &str, min_major: u32, configured: Option<&Path>, key: &str) -> Result<Client> {
    let found = |dir: &Path| {
        let path = dir.join(tool);
        let version = version_of(&path)?;
        let major = parse_major(&version)?;
        Some(Client { path, major, version })
    };
    if let Some(dir) = configured {
        return match found(dir) {
            Some(c) if c.major >= min_major => Ok(c),
            Some(c) => Err(Fail::new(
                Code::Usage,
                format!("{key} = {}: it holds {}, older than PostgreSQL {min_major}", dir.display(), c.version),
            )),
            None => Err(Fail::new(Code::Usage, format!("{key} = {}: no runnable {tool} there", dir.display()))),
        };
    }
    let mut tried = Vec::new();
    for major in min_major..=NEWEST_MAJOR.max(min_major) {
        for dir in candidates(major, pg_config_bindir(major)) {
            if let Some(c) = found(&dir).filter(|c| c.major >= min_major) {
                return Ok(c);
            }
            tried.push(dir.display().to_string());
        }
    }
    Err(Fail::new(
        Code::Usage,
        format!(
            "no {tool} of PostgreSQL {min_major} or newer found (looked in {} ... and pg_config on PATH): install \
             the client programs of PostgreSQL {min_major} or set {key} to the directory that holds {tool}",
            tried.iter().take(2).cloned().collect::<Vec<_>>().join(", ")
        ),
    ))
}

/// The OS user the server runs as: the given user when this process runs as root.
#[derive(Clone, Debug)]
pub struct Owner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// None unless running as root; then `name`'s account (which must exist and not be root).
pub fn owner(name: &str) -> Result<Option<Owner>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let bad = |why: &str| Fail::new(Code::Usage, format!("verify.os_user = {name:?}: {why}"));
    let c = std::ffi::CString::new(name).map_err(|_| bad("not a user name"))?;
    let mut buf = vec![0u8; 16384];
    // SAFETY: getpwnam_r writes into `pw` and `buf`, both owned here and large enough.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr().cast(), buf.len(), &mut found) };
    if rc != 0 || found.is_null() {
        return Err(bad("no such user (PostgreSQL refuses root: tidewal runs the server as this user)"));
    }
    if pw.pw_uid == 0 {
        return Err(bad("PostgreSQL refuses to run as root: name an unprivileged user"));
    }
    // SAFETY: pw_dir points into `buf`, NUL-terminated by getpwnam_r.
    let home = unsafe { std::ffi::CStr::from_ptr(pw.pw_dir) }.to_string_lossy().into_owned();
    Ok(Some(Owner { name: name.to_string(), uid: pw.pw_uid, gid: pw.pw_gid, home: home.into() }))
}

/// Give a tree to `owner`, links themselves rather than what they point to.
fn chown_tree(path: &Path, o: &Owner) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(o.uid), Some(o.gid))?;
    if std::fs::symlink_metadata(path)?.is_dir() {
        for e in std::fs::read_dir(path)? {
            chown_tree(&e?.path(), o)?;
        }
    }
    Ok(())
}

/// Settings the restore test gives the server itself; the configuration may not set them.
pub const FORCED_SETTINGS: &[&str] = &[
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "unix_socket_permissions",
    "hba_file",
    "ident_file",
    "archive_mode",
    "ssl",
    "logging_collector",
    "log_destination",
    "external_pid_file",
    "synchronous_standby_names",
    "config_file",
    "data_directory",
];

/// The server's command-line settings: the configured extras, then ours, which win. Only a
/// socket in the private directory, trust there (the directory is the access control), and
/// nothing that reaches outside the copy: no archiving, no external pid file, no log
/// collector writing into the source's log directory, no wait for a synchronous standby.
pub fn server_args(port: u16, scratch: &Path, extra: &[(String, String)]) -> Vec<String> {
    let mut out = Vec::new();
    let mut set = |k: &str, v: &str| {
        out.push("-c".to_string());
        out.push(format!("{k}={v}"));
    };
    // JIT buys a check nothing and fails where W^X memory is enforced (systemd's
    // MemoryDenyWriteExecute); the configuration may turn it back on.
    set("jit", "off");
    for (k, v) in extra {
        set(k, v);
    }
    let path = |p: &str| scratch.join(p).display().to_string();
    for (k, v) in [
        ("port", port.to_string()),
        ("listen_addresses", String::new()),
        ("unix_socket_directories", path("sock")),
        ("unix_socket_permissions", "0700".into()),
        ("hba_file", path("pg_hba.conf")),
        ("ident_file", path("pg_ident.conf")),
        ("archive_mode", "off".into()),
        ("ssl", "off".into()),
        ("logging_collector", "off".into()),
        ("log_destination", "stderr".into()),
        ("external_pid_file", String::new()),
        ("synchronous_standby_names", String::new()),
    ] {
        set(k, &v);
    }
    out
}

/// A private directory for one restore test, and the server running from it; stopped and
/// removed on `remove`, or on drop (a cancelled test) as far as that can be done.
pub struct Scratch {
    pub dir: PathBuf,
    owner: Option<Owner>,
    server: Option<Child>,
    pub port: u16,
    removed: bool,
}

fn local(p: &Path, e: std::io::Error) -> Fail {
    Fail::new(Code::Storage, format!("{}: {e}", p.display()))
}

impl Scratch {
    /// A new directory under `parent` (made if missing), given to the owner.
    pub fn create(parent: &Path, owner: Option<Owner>) -> Result<Scratch> {
        std::fs::create_dir_all(parent).map_err(|e| local(parent, e))?;
        let dir = tempfile::Builder::new()
            .prefix("tidewal-restore-test-")
            .tempdir_in(parent)
            .map_err(|e| local(parent, e))?
            .keep();
        let s = Scratch { dir, owner, server: None, port: 0, removed: false };
        std::fs::create_dir(s.dir.join("sock")).map_err(|e| local(&s.dir, e))?;
        Ok(s)
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn tablespaces(&self) -> PathBuf {
        self.dir.join("tablespaces")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Start the restored data directory's server on a free port (only its socket number:
    /// nothing listens on TCP), as the owner.
    pub fn start(&mut self, bin: &PgBin, extra: &[(String, String)]) -> Result<()> {
        let write = |name: &str, text: &str| {
            let p = self.dir.join(name);
            std::fs::write(&p, text).map_err(|e| local(&p, e))
        };
        write("pg_hba.conf", "local all all trust\n")?;
        write("pg_ident.conf", "")?;
        // A Debian cluster keeps postgresql.conf outside its data directory.
        let conf = self.data().join("postgresql.conf");
        if !conf.exists() {
            std::fs::write(&conf, "").map_err(|e| local(&conf, e))?;
        }
        let log = std::fs::File::create(self.log()).map_err(|e| local(&self.log(), e))?;
        if let Some(o) = &self.owner {
            chown_tree(&self.dir, o).map_err(|e| local(&self.dir, e))?;
        }
        self.port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| Fail::new(Code::Internal, format!("no free port: {e}")))?;
        let postgres = bin.dir.join("postgres");
        let mut cmd = Command::new(&postgres);
        cmd.arg("-D")
            .arg(self.data())
            .args(server_args(self.port, &self.dir, extra))
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| local(&self.log(), e))?)
            .stderr(log)
            .current_dir(&self.dir)
            // Its own process group: a Ctrl-C meant for tidewal reaches tidewal, which then
            // stops the server itself.
            .process_group(0);
        if let Some(o) = &self.owner {
            cmd.uid(o.uid).gid(o.gid).env("HOME", &o.home).env("USER", &o.name).env("LOGNAME", &o.name);
        }
        let child =
            cmd.spawn().map_err(|e| Fail::new(Code::Postgres, format!("cannot start {}: {e}", postgres.display())))?;
        self.server = Some(child);
        Ok(())
    }

    /// How the server ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        let status = self.server.as_mut()?.try_wait().ok()??;
        Some(status.to_string())
    }

    /// A conninfo for `user` and `db` over the scratch socket.
    pub fn conninfo(&self, user: &str, db: &str) -> String {
        let q = |v: &str| format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"));
        format!(
            "host={} port={} user={} dbname={} sslmode=disable connect_timeout=10 application_name=tidewal-restore-test",
            q(&self.dir.join("sock").display().to_string()),
            self.port,
            q(user),
            q(db)
        )
    }

    /// The last lines of the server's log (why it stopped).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stop the server: fast shutdown, then immediate, then SIGKILL to its process group.
    fn stop(&mut self) -> std::result::Result<(), String> {
        let Some(mut child) = self.server.take() else { return Ok(()) };
        let pid = child.id() as i32;
        let steps = [(libc::SIGINT, 60), (libc::SIGQUIT, 10), (libc::SIGKILL, 10)];
        for (sig, wait) in steps {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return Ok(());
            }
            // SAFETY: signalling our own child (the postmaster), or its group (own pgid).
            unsafe { libc::kill(if sig == libc::SIGKILL { -pid } else { pid }, sig) };
            let until = Instant::now() + Duration::from_secs(wait);
            while Instant::now() < until {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Err(format!("the server (pid {pid}) did not stop"))
    }

    /// Stop the server and remove the directory. Blocking.
    pub fn remove(mut self) -> std::result::Result<(), String> {
        self.cleanup()
    }

    fn cleanup(&mut self) -> std::result::Result<(), String> {
        if self.removed {
            return Ok(());
        }
        self.removed = true;
        let stopped = self.stop();
        // A prefetch worker that wal-fetch left may still be writing into pg_wal: wait for
        // its lock, so that nothing recreates a directory being removed.
        let lock = self.data().join("pg_wal/.tidewal-prefetch/.lock");
        if let Ok(f) = std::fs::File::open(&lock) {
            let until = Instant::now() + Duration::from_secs(30);
            // SAFETY: flock on a descriptor owned by `f`.
            while unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX | libc::LOCK_NB) } != 0
                && Instant::now() < until
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let mut last = None;
        for _ in 0..20 {
            match std::fs::remove_dir_all(&self.dir) {
                Ok(()) => {
                    last = None;
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    last = None;
                    break;
                }
                Err(e) => last = Some(e),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        stopped?;
        match last {
            None => Ok(()),
            Some(e) => Err(format!("cannot remove {}: {e}", self.dir.display())),
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            tracing::warn!("restore test: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn majors_from_version_lines() {
        assert_eq!(parse_major("postgres (PostgreSQL) 15.4 (Debian 15.4-1.pgdg120+1)"), Some(15));
        assert_eq!(parse_major("PostgreSQL 18beta1"), Some(18));
        assert_eq!(parse_major("postgres (PostgreSQL) 17.2"), Some(17));
        assert_eq!(parse_major("something else 15"), None);
    }

    #[test]
    fn usual_places_in_order() {
        let c = candidates(16, Some("/opt/pg/bin".into()));
        let c: Vec<String> = c.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(c, ["/usr/lib/postgresql/16/bin", "/usr/pgsql-16/bin", "/opt/pg/bin"]);
    }

    #[test]
    fn our_settings_come_last_and_cover_the_forced_list() {
        let extra = [("shared_buffers".to_string(), "64MB".to_string())];
        let args = server_args(5999, Path::new("/s"), &extra);
        assert_eq!(&args[..4], ["-c", "jit=off", "-c", "shared_buffers=64MB"]);
        assert!(args.contains(&"listen_addresses=".to_string()));
        assert!(args.contains(&"unix_socket_directories=/s/sock".to_string()));
        assert!(args.contains(&"archive_mode=off".to_string()));
        let set: Vec<&str> = args.iter().skip(5).step_by(2).map(|a| a.split('=').next().unwrap()).collect();
        for name in &set {
            assert!(FORCED_SETTINGS.contains(name), "{name} is forced but not refused in the configuration");
        }
    }

    #[test]
    fn scratch_is_removed_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let s = Scratch::create(parent.path(), None).unwrap();
        let dir = s.dir.clone();
        std::fs::create_dir_all(s.data().join("pg_wal")).unwrap();
        assert!(dir.starts_with(parent.path()) && dir.exists());
        drop(s);
        assert!(!dir.exists());
        assert_eq!(std::fs::read_dir(parent.path()).unwrap().count(), 0);
    }
}
