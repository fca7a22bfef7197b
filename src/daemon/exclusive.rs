//! One daemon per cluster and repository. On this host: an exclusive flock on
//! `<daemon.spool>/daemon-<hash>.lock`, named by the repository and the system identifier,
//! holding its holder's pid. Across hosts (or spool directories): the lease
//! `locks/daemon.json` in the repository (`repo::lease`), renewed while the daemon runs and
//! removed when it stops.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::repo::lease::{self, Held};
use crate::repo::Repo;

/// Held for the daemon's whole life: the lock file (closing it unlocks) and the lease.
pub struct Exclusive {
    _file: std::fs::File,
    pub lease: Held,
}

impl Exclusive {
    /// Remove the lease; the flock goes with the process.
    pub async fn release(self) {
        self.lease.release().await;
    }
}

/// Lock this host's lock file, then take the repository's lease; a conflict names the
/// other daemon's pid (and host).
pub async fn take(settings: &Settings, repo: &Repo) -> Result<Exclusive> {
    let identity = super::socket::RepoIdentity::of(settings).url;
    let system = &repo.identity.system_identifier;
    let file = lock_file(&settings.daemon.spool, &identity, system)?;
    let lease = lease::acquire(repo, lease::DAEMON, "tidewal daemon", lease::configured_timeout())
        .await
        .map_err(|f| f.context(format!("another tidewal daemon serves the repository {identity}")))?;
    tracing::info!(
        "holding {} and the lease {}",
        lock_path(&settings.daemon.spool, &identity, system).display(),
        lease::DAEMON
    );
    Ok(Exclusive { _file: file, lease })
}

/// `daemon-<hash>.lock` in `dir` (pure).
pub fn lock_path(dir: &Path, identity: &str, system: &str) -> PathBuf {
    let h = blake3::hash(format!("{identity}\n{system}").as_bytes());
    dir.join(format!("daemon-{}.lock", &h.to_hex()[..16]))
}

fn lock_file(dir: &Path, identity: &str, system: &str) -> Result<std::fs::File> {
    let local = |p: &Path, e: std::io::Error| {
        Fail::new(
            Code::Storage,
            format!("daemon lock {}: {e} (daemon.spool must be a directory of this user's)", p.display()),
        )
    };
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| local(dir, e))?;
    // Someone else's directory could hold a lock file that is not ours to trust.
    let m = std::fs::symlink_metadata(dir).map_err(|e| local(dir, e))?;
    // SAFETY: geteuid has no preconditions.
    if !m.is_dir() || m.uid() != unsafe { libc::geteuid() } || m.mode() & 0o022 != 0 {
        return Err(local(dir, std::io::Error::other("not a directory of this user's that only it can write to")));
    }
    let path = lock_path(dir, identity, system);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| local(&path, e))?;
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for as long as `file` lives.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
            return Err(local(&path, e));
        }
        return Err(Fail::new(
            Code::Conflict,
            format!(
                "another tidewal daemon (pid {}) is running for the repository {identity} (system {system}): it holds {}",
                holder_pid(&file),
                path.display()
            ),
        ));
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0).and_then(|_| file.write_all_at(pid.as_bytes(), 0)).map_err(|e| local(&path, e))?;
    Ok(file)
}

/// The pid its holder wrote, once it has (it writes right after locking).
fn holder_pid(mut file: &std::fs::File) -> String {
    for _ in 0..20 {
        let mut s = String::new();
        if file.read_to_string(&mut s).is_ok() && !s.trim().is_empty() {
            return s.trim().to_string();
        }
        std::thread::sleep(Duration::from_millis(50));
        let _ = std::io::Seek::rewind(&mut file);
    }
    "unknown".into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_repository_and_system() {
        let dir = tempfile::tempdir().unwrap();
        let spool = dir.path().join("spool");
        let first = lock_file(&spool, "file:///r", "7").unwrap();
        let e = lock_file(&spool, "file:///r", "7").unwrap_err();
        assert_eq!(e.code, Code::Conflict);
        assert!(e.message.contains(&format!("pid {}", std::process::id())), "{e}");
        // Another repository, or another cluster, has a lock of its own.
        let _other = lock_file(&spool, "file:///r2", "7").unwrap();
        let _another = lock_file(&spool, "file:///r", "8").unwrap();
        drop(first);
        let _again = lock_file(&spool, "file:///r", "7").unwrap();
        assert_ne!(lock_path(&spool, "file:///r", "7"), lock_path(&spool, "file:///r", "8"));
    }
}
