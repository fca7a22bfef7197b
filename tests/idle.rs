//! An idle daemon stays quiet: once its first base backup is done, on a cluster with nothing
//! to archive, it uses well under a core, in archive mode and in streaming mode (the real
//! figure, under 1%, comes from scripts/bench-idle.sh; the bound here is generous).

mod common;

use std::process::{Child, Stdio};
use std::time::Duration;

use common::*;

/// How long the CPU time is measured, and the most the daemon may use in that time.
const WINDOW: Duration = Duration::from_secs(10);
const MOST_CPU: Duration = Duration::from_millis(1500);

struct Daemon {
    child: Child,
    /// The tidewal process itself (the child may be runuser, which waits for it).
    pid: u32,
}

impl Daemon {
    fn start(env: &TestEnv, log: &std::path::Path) -> Daemon {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        let child = as_pg(&env.bin)
            .arg("--config")
            .arg(&env.config)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut pid = None;
        wait_for("the daemon process", Duration::from_secs(30), || {
            pid = tidewal_process(child.id());
            pid.is_some()
        });
        Daemon { child, pid: pid.unwrap() }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory preconditions; the pid is our daemon's.
        unsafe { libc::kill(self.pid as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// `pid` when it runs tidewal, else its child that does (runuser forks).
fn tidewal_process(pid: u32) -> Option<u32> {
    let comm = |p: u32| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
    if comm(pid).trim() == "tidewal" {
        return Some(pid);
    }
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    children.split_whitespace().filter_map(|c| c.parse().ok()).find(|&c| comm(c).trim() == "tidewal")
}

/// User plus system CPU time the process used so far (/proc/<pid>/stat).
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: state is the first, utime the
    // 12th and stime the 13th.
    let rest: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split_whitespace().collect();
    let ticks: u64 = rest[11].parse::<u64>().unwrap() + rest[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}

/// A cluster with a daemon configured by `section`, settled: its first base backup is done.
/// Then its CPU time over [`WINDOW`] must stay under [`MOST_CPU`].
fn idle_daemon_is_quiet(label: &str, section: &str) {
    let a = Archiving::start(label, RepoKind::File);
    let c = &a.cluster;
    let config = std::fs::read_to_string(&a.env.config).unwrap();
    a.env.write_config(&format!(
        "{config}\n[daemon]\npgdata = \"{}\"\nlisten = \"127.0.0.1:{}\"\nspool = \"{}\"\n{section}\n",
        c.data.display(),
        free_port(),
        a.env.pg_dir("spool").display()
    ));
    let log = a.env.path().join("daemon.log");
    let d = Daemon::start(&a.env, &log);
    wait_for("the first base backup", Duration::from_secs(120), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.lines().any(|l| l.contains("base backup") && l.contains("complete in"))
    });
    // The backup's own WAL reaches the repository, then nothing is left to do.
    std::thread::sleep(Duration::from_secs(3));
    let before = cpu_time(d.pid);
    std::thread::sleep(WINDOW);
    let used = cpu_time(d.pid) - before;
    println!("{label}: the idle daemon used {:.3}s of CPU in {}s", used.as_secs_f64(), WINDOW.as_secs());
    assert!(
        used < MOST_CPU,
        "an idle daemon used {:.2}s of CPU in {}s\n{}",
        used.as_secs_f64(),
        WINDOW.as_secs(),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn an_idle_daemon_in_archive_mode_is_quiet() {
    idle_daemon_is_quiet("idle-archive", "");
}

/// Streaming with the archiver on as well (its default), and a short flush interval.
#[test]
fn an_idle_daemon_in_streaming_mode_is_quiet() {
    idle_daemon_is_quiet("idle-stream", "stream = true\nslot = \"tidewal_idle\"\nflush_interval = \"1s\"");
}
