//! The fault suite's tools: a seeded random source (replayable), processes whose real pid
//! is known (so kill -9 reaches tidewal itself, not runuser), a steady insert load, and the
//! checks every case ends with (no staging debris, every visible object whole).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use rand::SeedableRng;

use super::{as_pg, wait_for, Cluster, TestEnv};

/// The random source of one fault test: `TIDEWAL_FAULT_SEED` replays a run; otherwise a new
/// seed is drawn. The seed is printed either way (a failure's output names it).
pub fn seeded_rng(test: &str) -> rand::rngs::StdRng {
    let seed = match std::env::var("TIDEWAL_FAULT_SEED") {
        Ok(s) => s.trim().parse().expect("TIDEWAL_FAULT_SEED must be an unsigned integer"),
        Err(_) => rand::random::<u64>(),
    };
    println!("{test}: seed {seed} (replay with TIDEWAL_FAULT_SEED={seed})");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// A process run as postgres through `sh -c 'echo $$ > pidfile; exec …'`: its pid is the
/// program's own once it has exec'd.
pub struct Tracked {
    pub child: Child,
    pub pid: i32,
}

impl Tracked {
    /// Run `command` (a shell command line) as postgres; `dir` (owned by postgres) holds the
    /// pid file. Output goes to `log` when given.
    pub fn spawn(dir: &Path, name: &str, command: &str, log: Option<&Path>) -> Tracked {
        let pidfile = dir.join(format!("{name}.pid"));
        let _ = std::fs::remove_file(&pidfile);
        let (out, err) = match log {
            Some(l) => {
                let f = std::fs::OpenOptions::new().create(true).append(true).open(l).unwrap();
                (Stdio::from(f.try_clone().unwrap()), Stdio::from(f))
            }
            None => (Stdio::null(), Stdio::null()),
        };
        let child = as_pg("sh")
            .args(["-c", &format!("echo $$ > {}; exec {command}", pidfile.display())])
            .current_dir(dir)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap();
        let mut pid = 0;
        wait_for(&format!("{name} to start"), Duration::from_secs(30), || {
            pid = std::fs::read_to_string(&pidfile).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
            pid > 0
        });
        Tracked { child, pid }
    }

    /// A tidewal verb of `env`, tracked.
    pub fn tidewal(env: &TestEnv, name: &str, args: &str, log: Option<&Path>) -> Tracked {
        let command = format!("{} --config {} {args}", env.bin.display(), env.config.display());
        Tracked::spawn(env.path(), name, &command, log)
    }

    /// kill -9; true when it reached the process before it ended by itself.
    pub fn kill9(&mut self) -> bool {
        let landed = kill9(self.pid);
        let _ = self.child.wait();
        landed
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid, sig) };
    }

    /// Wait for it to end by itself; whether it succeeded.
    pub fn wait(&mut self) -> bool {
        self.child.wait().unwrap().success()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill9(self.pid);
            let _ = self.child.wait();
        }
    }
}

/// SIGKILL `pid` if it runs (a zombie has ended already); whether it did.
pub fn kill9(pid: i32) -> bool {
    alive(pid) && unsafe { libc::kill(pid, libc::SIGKILL) } == 0
}

/// A shell script, executable by postgres, that runs `program` with the script's own
/// arguments and records that process's pid in `pidfile` (for archive_command and
/// restore_command). With `soften`, a death by signal is reported as exit status 1:
/// PostgreSQL's archiver then retries at once instead of exiting and being restarted only
/// every several seconds; what tidewal goes through is the same kill -9.
pub fn pid_recording_wrapper(dir: &Path, name: &str, program: &str, pidfile: &Path, soften: bool) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join(name);
    let body = if soften {
        format!(
            "{program} \"$@\" &\necho $! > {}\nwait $!\nrc=$?\n[ $rc -gt 125 ] && exit 1\nexit $rc\n",
            pidfile.display()
        )
    } else {
        format!("echo $$ > {}\nexec {program} \"$@\"\n", pidfile.display())
    };
    std::fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    super::chown_pg(&script);
    script
}

/// The pid a wrapper recorded last, if any.
pub fn recorded_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

/// A steady stream of small committed transactions into `ticks (v bigint)` (pgbench at a
/// fixed rate), until stopped.
pub struct InsertLoad {
    proc: Tracked,
}

impl InsertLoad {
    pub fn start(c: &Cluster, dir: &Path, rate: u32) -> InsertLoad {
        c.psql("CREATE TABLE IF NOT EXISTS ticks (v bigint NOT NULL)");
        Self::script(c, dir, rate, "\\set v random(1, 1000000)\nINSERT INTO ticks VALUES (:v);\n")
    }

    /// pgbench running the transaction `script` at `rate` per second.
    pub fn script(c: &Cluster, dir: &Path, rate: u32, text: &str) -> InsertLoad {
        let script = dir.join("tick.sql");
        std::fs::write(&script, text).unwrap();
        super::chown_pg(&script);
        let command = format!(
            "{} -h {} -p {} -U postgres -n -R {rate} -T 100000 -f {} postgres",
            super::pg_bin("pgbench").display(),
            c.sock.display(),
            c.port,
            script.display()
        );
        InsertLoad { proc: Tracked::spawn(dir, "load", &command, Some(&dir.join("load.log"))) }
    }

    /// Stop the load; the committed rows are what the server has from here on.
    pub fn stop(mut self) {
        unsafe { libc::kill(self.proc.pid, libc::SIGTERM) };
        let _ = self.proc.child.wait();
    }
}

/// Rows and sum of `ticks`: what was committed, compared with what a restore shows.
pub fn committed(c: &Cluster) -> String {
    c.psql("SELECT count(*) || ' rows, sum ' || coalesce(sum(v), 0) FROM ticks")
}

/// Every file under `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Multipart staging files (`<name>#<digits>`) under a file:// repository.
pub fn staging_debris(repo: &Path) -> Vec<PathBuf> {
    files_under(repo)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.rsplit_once('#'))
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        })
        .collect()
}

/// Opens the visible objects of a file:// repository in full (each chunk's tag, the
/// trailer): a partial object under its final name fails here. Objects never change once
/// visible, so each is opened once; staging files, leases and probes are skipped.
pub struct WholeObjects {
    repo: PathBuf,
    keys: tidewal::codec::Keyring,
    seen: std::collections::HashSet<PathBuf>,
}

impl WholeObjects {
    pub fn new(repo: &Path, key_file: &Path) -> WholeObjects {
        let keys = tidewal::codec::Keyring::new(tidewal::codec::Key::from_file(key_file).unwrap(), vec![]);
        WholeObjects { repo: repo.to_path_buf(), keys, seen: Default::default() }
    }

    /// How many objects were opened so far.
    pub fn opened(&self) -> usize {
        self.seen.len()
    }

    /// Open every object not opened before; how many there were.
    pub fn check_new(&mut self) -> usize {
        let mut opened = 0;
        for p in staging_free(&self.repo) {
            let name = p.strip_prefix(&self.repo).unwrap().to_string_lossy().into_owned();
            if !(name.starts_with("backups/") || name.starts_with("wal/")) || self.seen.contains(&p) {
                continue;
            }
            // Removed meanwhile (a prune): nothing to open.
            let Ok(f) = std::fs::File::open(&p) else { continue };
            let mut r = tidewal::codec::OpenReader::new(std::io::BufReader::new(f), &self.keys, &name)
                .unwrap_or_else(|e| panic!("visible object {name} does not open: {e}"));
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match r.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => panic!("visible object {name} is not whole: {e}"),
                }
            }
            self.seen.insert(p);
            opened += 1;
        }
        opened
    }
}

fn staging_free(repo: &Path) -> Vec<PathBuf> {
    let debris = staging_debris(repo);
    files_under(repo)
        .into_iter()
        .filter(|p| !debris.contains(p) && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect()
}

/// Start a cluster without waiting (recovery may end it before it accepts connections);
/// the postmaster's pid.
pub fn start_nowait(c: &Cluster, log: &Path) -> i32 {
    let _ = std::fs::remove_file(c.data.join("postmaster.pid"));
    super::run_ok(as_pg(super::pg_bin("pg_ctl")).args([
        "-D",
        c.data.to_str().unwrap(),
        "-l",
        log.to_str().unwrap(),
        "-W",
        "start",
    ]));
    let mut pid = 0;
    wait_for("the postmaster's pid file", Duration::from_secs(60), || {
        pid = std::fs::read_to_string(c.data.join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            .unwrap_or(0);
        pid > 0
    });
    pid
}

/// Does process `pid` run (not a zombie)?
pub fn alive(pid: i32) -> bool {
    let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    state.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z'))
}
