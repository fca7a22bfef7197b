//! Logical dumps on a schedule (`[dump] interval`, off by default): one interval after the
//! last complete dump, at once when there is none; under the backup lock, so never beside a
//! base backup, a restore test or retention in this daemon.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::scheduler::{next_backup, unix};
use super::Shared;
use crate::error::Result;
use crate::ops::dump::Databases;

/// When the newest complete dump finished.
async fn last_dump(shared: &Shared) -> Result<Option<SystemTime>> {
    let names = shared.repo.store.list("dumps").await?;
    let dumps = crate::repo::dumps::read_dumps(&shared.repo, &names).await?;
    Ok(dumps.iter().filter_map(|d| d.finished()).max())
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let interval = shared.settings.dump.interval;
    loop {
        let due = next_backup(last_dump(&shared).await?, interval, None, Duration::ZERO);
        let wait = due.map_or(Duration::ZERO, |t| t.duration_since(SystemTime::now()).unwrap_or(Duration::ZERO));
        if !wait.is_zero() {
            tracing::info!("next dump in {}", humantime::format_duration(Duration::from_secs(wait.as_secs())));
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
        let failed = {
            let _one = shared.backup_lock.lock().await;
            let req = shared.settings.dump_request(Databases::All, None, None);
            let result = tokio::select! {
                r = crate::ops::dump::dump(&shared.repo, &req) => r,
                _ = cancel.cancelled() => return Ok(()),
            };
            match result {
                Ok(info) => {
                    tracing::info!("dump {} complete in {:.1}s", info.id, info.duration_seconds);
                    metrics::gauge!("tidewal_last_dump_timestamp_seconds").set(unix(SystemTime::now()));
                    metrics::gauge!("tidewal_last_dump_success").set(1.0);
                    super::lock(&shared.state).last_dump_error = None;
                    false
                }
                Err(e) => {
                    tracing::error!("dump failed: {e}");
                    metrics::counter!("tidewal_dump_failures_total").increment(1);
                    metrics::gauge!("tidewal_last_dump_success").set(0.0);
                    super::lock(&shared.state).last_dump_error = Some(e.to_string());
                    true
                }
            }
        };
        if failed {
            // Not at once again: a broken server is not hammered.
            tokio::select! {
                _ = cancel.cancelled() => return Ok(()),
                _ = tokio::time::sleep(Duration::from_secs(300)) => {}
            }
        }
    }
}
