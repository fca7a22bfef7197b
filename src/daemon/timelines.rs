//! Watch the repository's lines of history: a second cluster archiving into it (a split)
//! breaks the window for both, so it fails `/healthz` and sets `tidewal_timeline_splits`.
//! The same pass reads the backups again, so that those taken beside the daemon show in its
//! metrics and status within minutes.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::Result;
use crate::ops::timelines::{describe_split, server_timeline, survey};

/// How often the repository's timelines are read again (a listing of `wal/` and the history
/// files): splits happen on the scale of hours, and a listing is not free on object storage.
const EVERY: Duration = Duration::from_secs(300);

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    loop {
        check(&shared).await?;
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

async fn check(shared: &Shared) -> Result<()> {
    // Backups taken beside the daemon (`tidewal backup` by hand, another host) count too.
    super::monitor::refresh_repo_stats(shared).await?;
    let seg = shared.repo.identity.wal_segment_size;
    let s = survey(&shared.repo).await?;
    let splits = s.splits();
    metrics::gauge!("tidewal_timeline_splits").set(splits.len() as f64);
    let mut reasons = Vec::new();
    if !splits.is_empty() {
        let server = server_timeline(&shared.repo, shared.settings.conninfo.as_deref()).await;
        let on = server.map(|t| format!("; this daemon's server is on timeline {t}")).unwrap_or_default();
        for sp in &splits {
            let reason = format!("two clusters archive into this repository: {}{on}", describe_split(sp, seg));
            tracing::error!("{reason}: stop archiving from the one that is not production");
            reasons.push(reason);
        }
    }
    super::lock(&shared.state).splits = reasons;
    Ok(())
}
