//! `tidewal status`: what the daemon knows about itself, as it answers the `status` request on
//! its socket (one JSON line). Built by a pure function from the health state, the last
//! verify and restore-test records and `now`; the field names are stable.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::health::{evaluate, Health, State};
use super::Shared;
use crate::ops::last_run::{Kind, LastRun};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DaemonStatus {
    pub pid: u32,
    pub version: String,
    /// The repository it serves (normalised URL, with the S3 endpoint if set) and the id of
    /// the key it writes with (`-` for none): `list` uses the lag only when these match.
    pub repository: String,
    pub key_id: String,
    pub system_identifier: String,
    /// When the daemon process started (RFC 3339, UTC).
    pub started_at: String,
    /// When this answer was made.
    pub now: String,
    /// `/healthz`: ok, degraded or failing, and why.
    pub health: Health,
    pub tasks: Vec<TaskStatus>,
    /// Age of the oldest WAL byte not yet durable in the repository (0 when all is);
    /// absent until the server has been reached.
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<u64>,
    pub backup_running: bool,
    /// When the newest base backup finished.
    pub last_backup: Option<String>,
    pub last_backup_error: Option<String>,
    pub last_verify: Option<RunStatus>,
    pub last_restore_test: Option<RunStatus>,
    /// `[[repository.copy]]`: how far each copy is behind.
    #[serde(default)]
    pub copies: Vec<CopyStatus>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyStatus {
    /// Its number for `--from-repo` (2 and up).
    pub repo: usize,
    pub url: String,
    /// Seconds since the moment before which everything in the repository is in the copy.
    pub lag_seconds: f64,
    /// That moment; absent until a round of copying finished.
    pub caught_up_to: Option<String>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub name: String,
    /// Restarts after a failure or panic since the daemon started or last reloaded.
    pub restarts: u32,
    pub last_restart: Option<String>,
}

/// The last `verify` or restore test recorded on this host, whoever ran it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    pub finished: String,
    pub success: bool,
    pub problems: u64,
    pub duration_seconds: f64,
    pub last_success: Option<String>,
    pub summary: String,
}

/// Where the daemon is and what it serves (not in the health state).
pub struct Identity {
    pub pid: u32,
    pub repository: String,
    pub key_id: String,
    pub system_identifier: String,
    pub started: SystemTime,
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn from_unix(secs: f64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs.max(0.0)))
}

fn run_status(r: &LastRun) -> RunStatus {
    RunStatus {
        finished: from_unix(r.finished),
        success: r.success,
        problems: r.problems,
        duration_seconds: r.duration_seconds,
        last_success: r.last_success.map(from_unix),
        summary: r.summary.clone(),
    }
}

/// The answer (pure).
pub fn build(
    id: Identity,
    state: &State,
    verify: Option<&LastRun>,
    restore_test: Option<&LastRun>,
    now: SystemTime,
    flush_interval: Duration,
) -> DaemonStatus {
    let tasks = state
        .tasks
        .iter()
        .map(|name| {
            let r = state.restarts.get(name);
            TaskStatus {
                name: name.clone(),
                restarts: r.map_or(0, |(n, _)| *n),
                last_restart: r.map(|(_, t)| rfc3339(*t)),
            }
        })
        .collect();
    DaemonStatus {
        pid: id.pid,
        version: env!("CARGO_PKG_VERSION").into(),
        repository: id.repository,
        key_id: id.key_id,
        system_identifier: id.system_identifier,
        started_at: rfc3339(id.started),
        now: rfc3339(now),
        health: evaluate(state, now, flush_interval),
        tasks,
        lag_seconds: state.lag_seconds,
        lag_bytes: state.lag_bytes,
        backup_running: state.backup_running,
        last_backup: state.last_backup.map(rfc3339),
        last_backup_error: state.last_backup_error.as_deref().map(crate::redact::text),
        last_verify: verify.map(run_status),
        last_restore_test: restore_test.map(run_status),
        copies: state
            .copies
            .iter()
            .map(|(n, c)| CopyStatus {
                repo: *n,
                url: c.url.clone(),
                lag_seconds: c.lag(now),
                caught_up_to: c.caught_up.map(rfc3339),
                last_error: c.last_error.as_deref().map(crate::redact::text),
            })
            .collect(),
    }
}

/// The running daemon's answer now.
pub fn snapshot(shared: &Shared) -> DaemonStatus {
    let mine = super::socket::RepoIdentity::of(&shared.settings);
    let id = Identity {
        pid: std::process::id(),
        repository: mine.url,
        key_id: mine.key,
        system_identifier: shared.repo.identity.system_identifier.clone(),
        started: shared.started,
    };
    let state = super::lock(&shared.state).clone();
    let verify = super::outcomes::last(shared, Kind::Verify);
    let restore_test = super::outcomes::last(shared, Kind::RestoreTest);
    build(id, &state, verify.as_ref(), restore_test.as_ref(), SystemTime::now(), shared.settings.daemon.flush_interval)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s)
    }

    #[test]
    fn reports_tasks_restarts_runs_and_health() {
        let mut state = State {
            lag_seconds: Some(2.0),
            lag_bytes: Some(4096),
            last_backup: Some(at(0)),
            tasks: vec!["archiver".into(), "scheduler".into()],
            last_backup_error: Some("cannot connect: password=hunter2".into()),
            ..State::default()
        };
        state.restarts.insert("scheduler".into(), (2, at(50)));
        let verify = LastRun::new(at(30), Duration::from_secs(4), 0, "1 backups and 3 WAL files verified".into());
        let id = Identity {
            pid: 42,
            repository: "file:///r".into(),
            key_id: "-".into(),
            system_identifier: "7".into(),
            started: at(0),
        };
        let s = build(id, &state, Some(&verify), None, at(100), Duration::from_secs(60));
        assert_eq!(s.tasks[0], TaskStatus { name: "archiver".into(), restarts: 0, last_restart: None });
        assert_eq!(s.tasks[1].restarts, 2);
        assert_eq!(s.tasks[1].last_restart.as_deref(), Some("2023-11-14T22:14:10Z"));
        assert_eq!(s.last_backup.as_deref(), Some("2023-11-14T22:13:20Z"));
        let v = s.last_verify.as_ref().unwrap();
        assert!(v.success && v.problems == 0 && v.finished == "2023-11-14T22:13:50Z", "{v:?}");
        assert!(s.last_restore_test.is_none());
        // The backup failed: degraded, and no credentials in what it says.
        assert_eq!(s.health.status, super::super::health::Status::Degraded);
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
        // One line on the socket, read back whole.
        let line = serde_json::to_string(&s).unwrap();
        assert!(!line.contains('\n'));
        assert_eq!(serde_json::from_str::<DaemonStatus>(&line).unwrap(), s);
    }

    /// The JSON field names are an interface.
    #[test]
    fn field_names_are_stable() {
        let id = Identity {
            pid: 1,
            repository: "r".into(),
            key_id: "-".into(),
            system_identifier: "7".into(),
            started: at(0),
        };
        let v = serde_json::to_value(build(id, &State::default(), None, None, at(1), Duration::from_secs(60))).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        for k in [
            "pid",
            "version",
            "repository",
            "key_id",
            "system_identifier",
            "started_at",
            "now",
            "health",
            "tasks",
            "lag_seconds",
            "lag_bytes",
            "backup_running",
            "last_backup",
            "last_backup_error",
            "last_verify",
            "last_restore_test",
            "copies",
        ] {
            assert!(keys.contains(&k), "{k} missing from {keys:?}");
        }
        assert_eq!(v["health"]["status"], "failing");
    }
}
