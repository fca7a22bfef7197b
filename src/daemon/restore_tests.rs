//! Restore tests on a schedule (`daemon.restore_test_interval`, default weekly, zero off):
//! the same `ops::restore_test` as `tidewal verify --restore-test`, never beside a base
//! backup or retention (it holds the backup lock), recorded like a one-shot run so the
//! `tidewal_last_restore_test_*` metrics and a restart see it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::Result;
use crate::ops::last_run::{self, Kind};

/// The first test after a start with none recorded: after this delay (or the interval, if
/// shorter), so the daemon's first base backup comes first.
const FIRST_DELAY: Duration = Duration::from_secs(3600);

/// When the next restore test is due (pure): `interval` after the last one, whatever its
/// outcome; with none recorded, `FIRST_DELAY` after `started`. `None`: never (interval 0).
pub fn next_restore_test(last: Option<SystemTime>, started: SystemTime, interval: Duration) -> Option<SystemTime> {
    if interval.is_zero() {
        return None;
    }
    Some(match last {
        Some(t) => t + interval,
        None => started + interval.min(FIRST_DELAY),
    })
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let started = SystemTime::now();
    loop {
        let last = super::outcomes::last(&shared, Kind::RestoreTest).map(|r| at(r.finished));
        let Some(due) = next_restore_test(last, started, shared.settings.daemon.restore_test_interval) else {
            cancel.cancelled().await;
            return Ok(());
        };
        let wait = due.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tracing::info!("next restore test in {}", humantime::format_duration(Duration::from_secs(wait.as_secs())));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        if super::lock(&shared.state).last_backup.is_none() {
            // Nothing to restore yet: look again once the first backup had time to finish.
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
            continue;
        }
        if !test_once(&shared, &cancel).await {
            return Ok(());
        }
    }
}

/// One restore test of the newest backup; false when a stop interrupted it (the copy is
/// stopped and removed as the test is dropped; nothing is recorded).
async fn test_once(shared: &Shared, cancel: &CancellationToken) -> bool {
    let _quiet = shared.backup_lock.lock().await;
    let began = Instant::now();
    let result = match shared.settings.restore_test_request("latest") {
        Ok(req) => tokio::select! {
            r = crate::ops::restore_test::restore_test(&shared.repo, &req) => r,
            _ = cancel.cancelled() => return false,
        },
        Err(e) => Err(e),
    };
    let run = crate::ops::restore_test::outcome(&result, SystemTime::now(), began.elapsed());
    match &result {
        Ok(r) if run.success => tracing::info!(
            "restore test of backup {} passed in {:.1}s (restore {:.1}s, replay {:.1}s, {} indexes checked)",
            r.backup.as_deref().unwrap_or("?"),
            r.duration_seconds,
            r.restore_seconds,
            r.replay_seconds,
            r.indexes_checked
        ),
        _ => tracing::error!("restore test failed: {}", run.summary),
    }
    super::lock(&shared.state).last_restore_test_error = (!run.success).then(|| run.summary.clone());
    let file = super::outcomes::file(shared, Kind::RestoreTest);
    if let Err(e) = last_run::record(&file, run) {
        tracing::warn!("cannot record the restore test in {}: {e}", file.display());
    }
    true
}

fn at(unix: f64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + s);
        let week = Duration::from_secs(7 * 86400);
        assert_eq!(next_restore_test(Some(t(0)), t(50), week), Some(t(0) + week));
        assert_eq!(next_restore_test(None, t(50), week), Some(t(50 + 3600)), "the first an hour after start");
        assert_eq!(next_restore_test(None, t(0), Duration::from_secs(30)), Some(t(30)));
        assert_eq!(next_restore_test(Some(t(0)), t(0), Duration::ZERO), None, "0 turns it off");
    }
}
