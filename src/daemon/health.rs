//! /healthz: ok, degraded or failing, with the reasons (pure: the state and `now` go in).
//! Reasons are fixed phrases with names and positions; the error texts they quote may come
//! from a server, a store or a connection string, so every reason is redacted.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// What the daemon knows about itself, updated by its tasks.
#[derive(Clone, Debug, Default)]
pub struct State {
    /// Seconds since the oldest WAL byte not yet durable in the repository was written.
    pub lag_seconds: Option<f64>,
    pub lag_bytes: Option<u64>,
    pub last_backup: Option<SystemTime>,
    pub backup_running: bool,
    pub last_backup_error: Option<String>,
    pub upload_failures_in_a_row: u32,
    pub last_upload_error: Option<String>,
    pub last_prune_error: Option<String>,
    pub last_restart: Option<(String, SystemTime)>,
    pub server_error: Option<String>,
    /// The streaming slot holds back too much WAL on the server.
    pub slot_warning: Option<String>,
    /// WAL the repository will never have, and when that was found: restores cannot cross
    /// it until a base backup finishes after it.
    pub wal_gap: Option<(String, SystemTime)>,
    /// Two clusters archive into the repository (one reason per split).
    pub splits: Vec<String>,
    /// The daemon's last restore test failed: what failed.
    pub last_restore_test_error: Option<String>,
    /// The supervised tasks of this generation, in start order (for `tidewal status`).
    pub tasks: Vec<String>,
    /// Restarts per task since the daemon started: how many, and the last one.
    pub restarts: std::collections::BTreeMap<String, (u32, SystemTime)>,
    /// The daemon's last scheduled dump failed: why.
    pub last_dump_error: Option<String>,
    /// `[[repository.copy]]`, by repository number (2 and up).
    pub copies: std::collections::BTreeMap<usize, CopyState>,
}

/// How far a copy of the repository is behind, as the copier last found it.
#[derive(Clone, Debug)]
pub struct CopyState {
    pub url: String,
    /// Health is degraded beyond this lag.
    pub max_lag: Duration,
    /// Everything stored in the repository before this moment is in the copy.
    pub caught_up: Option<SystemTime>,
    /// When the daemon began keeping this copy (the lag counts from here until a round has
    /// said more).
    pub since: SystemTime,
    pub last_error: Option<String>,
    pub retention_error: Option<String>,
}

impl CopyState {
    pub fn new(url: String, max_lag: Duration, since: SystemTime) -> CopyState {
        CopyState { url, max_lag, caught_up: None, since, last_error: None, retention_error: None }
    }

    /// Seconds since the moment before which everything is known to be in the copy.
    pub fn lag(&self, now: SystemTime) -> f64 {
        now.duration_since(self.caught_up.unwrap_or(self.since)).unwrap_or_default().as_secs_f64()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Degraded,
    Failing,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub status: Status,
    pub reasons: Vec<String>,
}

/// Failing: restores would lose data now (WAL is not reaching the repository, or there is no
/// backup at all). Degraded: something needs attention before it becomes that.
pub fn evaluate(s: &State, now: SystemTime, flush_interval: Duration) -> Health {
    let mut failing = Vec::new();
    let mut degraded = Vec::new();
    let limit = 2.0 * flush_interval.as_secs_f64();
    match s.lag_seconds {
        Some(lag) if lag > limit => {
            failing.push(format!("WAL archive lag {lag:.0}s is over twice the flush interval ({limit:.0}s)"))
        }
        None => degraded.push("backup lag unknown: the server has not been reached yet".into()),
        _ => {}
    }
    if let Some((gap, at)) = &s.wal_gap {
        if s.last_backup.is_none_or(|b| b < *at) {
            failing.push(gap.clone());
        }
    }
    failing.extend(s.splits.iter().cloned());
    if s.upload_failures_in_a_row >= 3 {
        let why = s.last_upload_error.as_deref().unwrap_or("unknown error");
        failing.push(format!("{} uploads in a row failed: {why}", s.upload_failures_in_a_row));
    }
    match s.last_backup {
        None if !s.backup_running => failing.push("no base backup in the repository".into()),
        Some(t) if now.duration_since(t).unwrap_or_default() > Duration::from_secs(26 * 3600) => {
            degraded.push("no base backup in 26 hours".into())
        }
        _ => {}
    }
    if let Some(e) = &s.last_backup_error {
        degraded.push(format!("the last base backup failed: {e}"));
    }
    if let Some(e) = &s.last_prune_error {
        degraded.push(format!("retention failed: {e}"));
    }
    if let Some(e) = &s.last_restore_test_error {
        degraded.push(format!("the last restore test failed: {e}"));
    }
    if let Some(e) = &s.last_dump_error {
        degraded.push(format!("the last scheduled dump failed: {e}"));
    }
    for (n, c) in &s.copies {
        let (lag, limit) = (c.lag(now), c.max_lag.as_secs_f64());
        if lag > limit {
            let why = c.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
            degraded.push(format!("copy {n} ({}) is {lag:.0}s behind (over {limit:.0}s){why}", c.url));
        }
        if let Some(e) = &c.retention_error {
            degraded.push(format!("retention on copy {n} ({}) failed: {e}", c.url));
        }
    }
    if let Some(w) = &s.slot_warning {
        degraded.push(w.clone());
    }
    if let Some(e) = &s.server_error {
        degraded.push(format!("PostgreSQL: {e}"));
    }
    if let Some((task, at)) = &s.last_restart {
        if now.duration_since(*at).unwrap_or_default() < Duration::from_secs(300) {
            degraded.push(format!("task {task} was restarted in the last 5 minutes"));
        }
    }
    let status = if !failing.is_empty() {
        Status::Failing
    } else if !degraded.is_empty() {
        Status::Degraded
    } else {
        Status::Ok
    };
    failing.extend(degraded);
    Health { status, reasons: failing.iter().map(|r| crate::redact::text(r)).collect() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let flush = Duration::from_secs(60);
        let good = State { lag_seconds: Some(3.0), lag_bytes: Some(10), last_backup: Some(now), ..State::default() };
        assert_eq!(evaluate(&good, now, flush).status, Status::Ok);
        let lagging = State { lag_seconds: Some(121.0), ..good.clone() };
        let h = evaluate(&lagging, now, flush);
        assert_eq!(h.status, Status::Failing);
        assert!(h.reasons[0].contains("lag 121s"));
        let old = State { last_backup: Some(now - Duration::from_secs(27 * 3600)), ..good.clone() };
        assert_eq!(evaluate(&old, now, flush).status, Status::Degraded);
        let none = State { last_backup: None, ..good.clone() };
        assert_eq!(evaluate(&none, now, flush).status, Status::Failing);
        let first = State { last_backup: None, backup_running: true, ..good.clone() };
        assert_eq!(evaluate(&first, now, flush).status, Status::Ok);
        let uploads =
            State { upload_failures_in_a_row: 3, last_upload_error: Some("disk full".into()), ..good.clone() };
        assert!(evaluate(&uploads, now, flush).reasons[0].contains("disk full"));
        // A gap in the WAL fails until a base backup finishes after it.
        let gap = Some(("WAL from 0/5000000 is gone".to_string(), now - Duration::from_secs(10)));
        let before = State { wal_gap: gap.clone(), last_backup: Some(now - Duration::from_secs(60)), ..good.clone() };
        assert_eq!(evaluate(&before, now, flush).status, Status::Failing);
        assert!(evaluate(&before, now, flush).reasons[0].contains("0/5000000"));
        let after = State { wal_gap: gap, last_backup: Some(now), ..good.clone() };
        assert_eq!(evaluate(&after, now, flush).status, Status::Ok);
        let split = State { splits: vec!["two clusters archive into this repository: …".into()], ..good.clone() };
        assert_eq!(evaluate(&split, now, flush).status, Status::Failing);
        assert!(evaluate(&split, now, flush).reasons[0].starts_with("two clusters"));
        let untested = State { last_restore_test_error: Some("amcheck postgres public.i: corrupt".into()), ..good };
        assert_eq!(evaluate(&untested, now, flush).status, Status::Degraded);
        assert!(evaluate(&untested, now, flush).reasons[0].contains("restore test failed: amcheck"));
        let undumped = State { last_dump_error: Some("pg_dump failed".into()), ..State::default() };
        let h = evaluate(&State { lag_seconds: Some(3.0), last_backup: Some(now), ..undumped }, now, flush);
        assert_eq!(
            (h.status, h.reasons[0].as_str()),
            (Status::Degraded, "the last scheduled dump failed: pg_dump failed")
        );
    }

    #[test]
    fn a_copy_behind_or_failing_retention_degrades() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let flush = Duration::from_secs(60);
        let mut s = State { lag_seconds: Some(1.0), last_backup: Some(now), ..State::default() };
        let start = now - Duration::from_secs(3600);
        let mut c = CopyState::new("s3://eu/db".into(), Duration::from_secs(300), start);
        c.caught_up = Some(now - Duration::from_secs(100));
        s.copies.insert(2, c.clone());
        assert_eq!(evaluate(&s, now, flush).status, Status::Ok);
        // Behind by more than max_lag: the last error is named.
        c.caught_up = Some(now - Duration::from_secs(400));
        c.last_error = Some("s3://eu/db is unreachable".into());
        s.copies.insert(2, c.clone());
        let h = evaluate(&s, now, flush);
        assert_eq!(h.status, Status::Degraded);
        assert_eq!(h.reasons, vec!["copy 2 (s3://eu/db) is 400s behind (over 300s): s3://eu/db is unreachable"]);
        // Never caught up: the lag counts from when the daemon began keeping it.
        c.caught_up = None;
        assert_eq!(c.lag(now), 3600.0);
        c.caught_up = Some(now);
        c.retention_error = Some("the copy's catalog is inconsistent".into());
        s.copies.insert(2, c);
        let h = evaluate(&s, now, flush);
        assert_eq!(h.reasons, vec!["retention on copy 2 (s3://eu/db) failed: the copy's catalog is inconsistent"]);
    }

    #[test]
    fn reasons_hold_no_credentials() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = State {
            lag_seconds: Some(3.0),
            last_backup: Some(now),
            upload_failures_in_a_row: 3,
            last_upload_error: Some("PUT https://k:hunter2@s3.example/b/x?X-Amz-Signature=hunter2: 403".into()),
            last_backup_error: Some("cannot connect: host=db password=hunter2 user=rep".into()),
            server_error: Some("postgresql://rep:hunter2@db/app?sslpassword=hunter2 is unreachable".into()),
            last_prune_error: Some("secret_access_key = 'hunter2' was refused".into()),
            ..State::default()
        };
        let h = evaluate(&s, now, Duration::from_secs(60));
        assert_eq!(h.reasons.len(), 4, "{:?}", h.reasons);
        let all = h.reasons.join("\n");
        assert!(!all.contains("hunter2"), "{all}");
        // What is left still says what happened, and where.
        assert!(
            all.contains("uploads in a row failed: PUT https://k:***@s3.example/b/x?X-Amz-Signature=*** 403"),
            "{all}"
        );
        assert!(all.contains("postgresql://rep:***@db/app"), "{all}");
        assert!(all.contains("user=rep"), "{all}");
    }
}
