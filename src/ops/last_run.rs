//! The outcome of the last `verify` and the last restore test, kept on this host (in
//! `daemon.spool`, one file per repository and cluster) so that the daemon exports them as
//! metrics whoever ran them: the daemon itself, a systemd timer or a person. Never in the
//! repository: verifying reads it and writes nothing there.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Verify,
    RestoreTest,
}

impl Kind {
    fn stem(self) -> &'static str {
        match self {
            Kind::Verify => "last-verify",
            Kind::RestoreTest => "last-restore-test",
        }
    }
}

/// One finished run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LastRun {
    /// Unix time the run finished.
    pub finished: f64,
    pub success: bool,
    /// Problems found (0 on success; a run that could not finish counts 1).
    pub problems: u64,
    pub duration_seconds: f64,
    /// Unix time of the newest successful run, carried over from earlier runs.
    pub last_success: Option<f64>,
    /// One line for a person: what was checked or what failed.
    pub summary: String,
}

impl LastRun {
    pub fn new(finished: SystemTime, duration: Duration, problems: u64, summary: String) -> LastRun {
        let finished = unix(finished);
        LastRun {
            finished,
            success: problems == 0,
            problems,
            duration_seconds: duration.as_secs_f64(),
            last_success: (problems == 0).then_some(finished),
            summary,
        }
    }

    /// This run, remembering the newest success of `earlier` when this one failed (pure).
    pub fn after(mut self, earlier: Option<&LastRun>) -> LastRun {
        if self.last_success.is_none() {
            self.last_success = earlier.and_then(|e| e.last_success);
        }
        self
    }
}

/// `<dir>/<kind>-<hash>.json`, named by the repository URL and the system identifier (pure).
pub fn path(dir: &Path, kind: Kind, repo_url: &str, system: &str) -> PathBuf {
    let h = blake3::hash(format!("{repo_url}\n{system}").as_bytes());
    dir.join(format!("{}-{}.json", kind.stem(), &h.to_hex()[..16]))
}

pub fn read(file: &Path) -> Option<LastRun> {
    let text = std::fs::read(file).ok()?;
    serde_json::from_slice(&text).ok()
}

/// Record `run` (keeping the last success of the one before) through a temporary file and a
/// rename, so a reader never sees half a file. The directory is the daemon's: it is not
/// created here, where root could make it and lock the daemon out. Readable by all: the
/// daemon may run as another user than a person verifying.
pub fn record(file: &Path, run: LastRun) -> std::io::Result<LastRun> {
    let run = run.after(read(file).as_ref());
    let tmp = file.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(&run).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    std::fs::rename(&tmp, file)?;
    Ok(run)
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_failure_keeps_the_last_success() {
        let ok = LastRun::new(at(100), Duration::from_secs(3), 0, "fine".into());
        assert_eq!(ok.last_success, Some(100.0));
        let bad = LastRun::new(at(200), Duration::from_secs(4), 2, "2 problems".into()).after(Some(&ok));
        assert!(!bad.success);
        assert_eq!((bad.finished, bad.last_success), (200.0, Some(100.0)));
        let again = LastRun::new(at(300), Duration::from_secs(1), 0, "fine".into()).after(Some(&bad));
        assert_eq!(again.last_success, Some(300.0));
        assert_eq!(LastRun::new(at(5), Duration::ZERO, 1, String::new()).after(None).last_success, None);
    }

    #[test]
    fn one_file_per_repository_and_cluster() {
        let d = Path::new("/spool");
        let a = path(d, Kind::Verify, "file:///r", "1");
        assert_ne!(a, path(d, Kind::Verify, "file:///r", "2"));
        assert_ne!(a, path(d, Kind::Verify, "file:///s", "1"));
        assert_ne!(a, path(d, Kind::RestoreTest, "file:///r", "1"));
        assert!(a.file_name().unwrap().to_str().unwrap().starts_with("last-verify-"));
    }

    #[test]
    fn records_round_trip_and_carry_the_last_success() {
        let dir = tempfile::tempdir().unwrap();
        let f = path(dir.path(), Kind::RestoreTest, "file:///r", "1");
        assert!(read(&f).is_none());
        record(&f, LastRun::new(at(100), Duration::from_secs(3), 0, "ok".into())).unwrap();
        let r = record(&f, LastRun::new(at(200), Duration::from_secs(3), 1, "bad".into())).unwrap();
        assert_eq!(read(&f), Some(r.clone()));
        assert_eq!(r.last_success, Some(100.0));
    }
}
