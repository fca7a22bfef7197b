//! Retention on a timer, for the repository and then for each copy (the copier applies it
//! to its copy once the repository's run succeeded, so both forget the same things).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::{lock, Shared};
use crate::config::Settings;
use crate::error::Result;
use crate::repo::Repo;

/// Backups, WAL and dumps of `repo` that the retention settings no longer keep; how many
/// objects went.
pub async fn apply(repo: &Repo, settings: &Settings) -> Result<u64> {
    let now = SystemTime::now();
    let done = crate::ops::prune::prune(repo, now, settings.retention_window, false).await?;
    let scratch = settings.dump_scratch();
    let dumps = crate::ops::dump_prune::prune_dumps(repo, now, settings.dump.retention, false, &scratch).await?;
    Ok(done.deleted_objects + dumps.deleted_objects)
}

/// A failed plan deletes nothing; it is reported and tried again.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(shared.settings.daemon.prune_interval) => {}
        }
        // Never while a backup runs: its objects have no backup.json yet.
        let _quiet = shared.backup_lock.lock().await;
        match apply(&shared.repo, &shared.settings).await {
            Ok(deleted) => {
                metrics::counter!("tidewal_pruned_objects_total").increment(deleted);
                lock(&shared.state).last_prune_error = None;
                shared.pruned.fetch_add(1, Ordering::Relaxed);
                // The oldest recoverable moment moved.
                if let Err(e) = super::monitor::refresh_repo_stats(&shared).await {
                    tracing::warn!("cannot read the backups after retention: {e}");
                }
                if deleted > 0 {
                    tracing::info!("retention removed {deleted} object(s)");
                }
            }
            Err(e) => {
                metrics::counter!("tidewal_retention_failures_total").increment(1);
                tracing::error!("retention failed, nothing more was deleted: {e}");
                lock(&shared.state).last_prune_error = Some(e.to_string());
            }
        }
    }
}
