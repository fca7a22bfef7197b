//! Base backups on a schedule: daily at a UTC time, or an interval after the last one; at
//! once when the repository has none; on demand (SIGUSR1). Never two at once.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::{Code, Result};

const DAY: u64 = 86400;

/// When the next backup is due (pure). `at` is a daily UTC (hour, minute); without it the
/// backup is due `interval` after the last. Without any backup it is due now. A time in the
/// past means "now".
pub fn next_backup(
    last_finished: Option<SystemTime>,
    interval: Duration,
    at: Option<(u32, u32)>,
    jitter: Duration,
) -> Option<SystemTime> {
    let last = last_finished?;
    let due = match at {
        None => last + interval,
        Some((h, m)) => {
            let secs = last.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs();
            let day_start = secs - secs % DAY;
            let mut t = day_start + u64::from(h) * 3600 + u64::from(m) * 60;
            if t <= secs {
                t += DAY;
            }
            SystemTime::UNIX_EPOCH + Duration::from_secs(t)
        }
    };
    Some(due + jitter)
}

/// A spread of up to five minutes, so that many clusters on one store do not start together.
fn jitter() -> Duration {
    Duration::from_millis(rand::random::<u64>() % 300_000)
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let d = &shared.settings.daemon;
    let jitter = jitter();
    loop {
        let last = super::monitor::refresh_repo_stats(&shared).await?;
        let due = next_backup(last, d.backup_interval, d.backup_at, jitter);
        let wait = match due {
            None => Duration::ZERO,
            Some(t) => t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO),
        };
        if !wait.is_zero() {
            tracing::info!("next base backup in {}", humantime::format_duration(Duration::from_secs(wait.as_secs())));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
            _ = shared.backup_now.notified() => tracing::info!("base backup requested"),
        }
        take_backup(&shared, &cancel).await;
    }
}

/// One backup, reported in metrics and health; a failure is logged and retried at the next
/// due time (or request), after a pause so a broken server is not hammered.
async fn take_backup(shared: &Shared, cancel: &CancellationToken) {
    if let Some(Err(_)) = backup_once(shared, cancel).await {
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = tokio::time::sleep(Duration::from_secs(300)) => {}
        }
    }
}

/// One backup under the backup lock, reported in metrics and health: its id, its error, or
/// `None` when a stop interrupted it. Shared with `tidewal backup --via-daemon`.
pub async fn backup_once(shared: &Shared, cancel: &CancellationToken) -> Option<Result<String>> {
    let _one = shared.backup_lock.lock().await;
    super::lock(&shared.state).backup_running = true;
    let incremental = match shared.settings.daemon.full_every {
        Some(every) => match crate::repo::catalog::list_backups(&shared.repo).await {
            Ok(backups) => crate::repo::catalog::incremental_due(&backups, SystemTime::now(), every),
            Err(e) => {
                tracing::warn!("cannot list the backups to choose full or incremental ({e}): taking a full backup");
                false
            }
        },
        None => false,
    };
    let mut args = crate::ops::backup::BackupRequest {
        conninfo: shared.settings.conninfo.clone(),
        standby_conninfo: shared.settings.standby_conninfo.clone(),
        label: Some("tidewal daemon".into()),
        spread_checkpoint: false,
        manifest_checksums: crate::ops::backup::ManifestChecksums::Crc32c,
        wal_timeout: Duration::from_secs(600),
        incremental,
        client_side: false,
    };
    let began = std::time::Instant::now();
    let take = async |args: &crate::ops::backup::BackupRequest| {
        tokio::select! {
            r = crate::ops::backup::take(&shared.repo, args) => Some(r),
            _ = cancel.cancelled() => None,
        }
    };
    let mut result = take(&args).await;
    // An incremental backup that cannot be taken: compared client-side when the server's
    // WAL summaries do not reach back to the parent, then (no backup with a file index, a
    // non-default block size) a full one; each time with the reason in the log.
    for full in [false, true] {
        let Some(Err(e)) = result.as_ref().filter(|_| args.incremental) else { break };
        if !full && e.code == Code::Postgres && e.message.contains("WAL summar") {
            tracing::warn!("server-side incremental backup not possible ({e}); comparing client-side");
            args.client_side = true;
        } else if full && matches!(e.code, Code::Usage | Code::Postgres) {
            tracing::warn!("incremental backup not possible ({e}); taking a full backup");
            args.incremental = false;
        } else {
            continue;
        }
        result = take(&args).await;
    }
    let outcome = {
        let mut st = super::lock(&shared.state);
        st.backup_running = false;
        match result {
            Some(Ok(info)) => {
                tracing::info!("base backup {} complete in {:.1}s", info.id, info.duration_seconds);
                metrics::gauge!("tidewal_base_backup_duration_seconds").set(began.elapsed().as_secs_f64());
                metrics::gauge!("tidewal_last_base_backup_timestamp_seconds").set(unix(SystemTime::now()));
                st.last_backup = Some(SystemTime::now());
                st.last_backup_error = None;
                Some(Ok(info.id))
            }
            Some(Err(e)) => {
                tracing::error!("base backup failed: {e}");
                metrics::counter!("tidewal_base_backup_failures_total").increment(1);
                st.last_backup_error = Some(e.to_string());
                Some(Err(e))
            }
            None => {
                tracing::warn!("base backup abandoned at shutdown; it leaves no backup.json and is cleaned up later");
                None
            }
        }
    };
    if matches!(outcome, Some(Ok(_))) {
        // Backups count and age, now rather than at the scheduler's next turn.
        let _ = super::monitor::refresh_repo_stats(shared).await;
    }
    outcome
}

pub fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(day: u64, h: u64, m: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * DAY + day * DAY + h * 3600 + m * 60)
    }

    #[test]
    fn schedules() {
        let day = Duration::from_secs(DAY);
        let no = Duration::ZERO;
        assert_eq!(next_backup(None, day, None, no), None);
        assert_eq!(next_backup(Some(t(0, 10, 0)), day, None, no), Some(t(1, 10, 0)));
        // Daily at 01:30: after a backup at 10:00, the next is tomorrow 01:30 ...
        assert_eq!(next_backup(Some(t(0, 10, 0)), day, Some((1, 30)), no), Some(t(1, 1, 30)));
        // ... and after one at 01:00 (early), today's 01:30.
        assert_eq!(next_backup(Some(t(0, 1, 0)), day, Some((1, 30)), no), Some(t(0, 1, 30)));
        assert_eq!(next_backup(Some(t(0, 10, 0)), day, None, Duration::from_secs(60)), Some(t(1, 10, 1)));
    }
}
