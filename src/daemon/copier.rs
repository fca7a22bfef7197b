//! The copier: keeps every `[[repository.copy]]` up to date, one loop per copy. A round
//! every `interval` copies what the copy lacks (`ops::copy_sync`); after each successful
//! retention run on the repository, the same retention runs on the copy, in this loop, so it
//! never meets a round half-way. Errors are recorded (health, metrics) and retried; they
//! never stop the other copies or the daemon.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use super::health::CopyState;
use super::{lock, Shared};
use crate::config::CopySettings;
use crate::error::Result;
use crate::ops::copy_sync::Syncer;
use crate::store::Store;

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let loops = shared.settings.copies.iter().cloned().map(|c| keep(shared.clone(), c, cancel.clone()));
    futures::future::join_all(loops).await;
    Ok(())
}

fn update(shared: &Shared, n: usize, f: impl FnOnce(&mut CopyState)) {
    if let Some(c) = lock(&shared.state).copies.get_mut(&n) {
        f(c);
    }
}

async fn keep(shared: Arc<Shared>, c: CopySettings, cancel: CancellationToken) {
    let n = c.number;
    let label = n.to_string();
    lock(&shared.state).copies.insert(n, CopyState::new(c.url.clone(), c.max_lag, SystemTime::now()));
    let mut syncer: Option<Syncer> = None;
    let mut pruned_seen = 0;
    let mut failing = false;
    loop {
        let listed_at = SystemTime::now();
        let mut pending = None;
        let round = async {
            let s = match syncer.as_mut() {
                Some(s) => s,
                None => syncer.insert(Syncer::open(&shared.repo, Store::open_or_make(&c.url, &c.store)?).await?),
            };
            s.round(&shared.repo, &mut pending).await
        };
        let outcome = tokio::select! {
            _ = cancel.cancelled() => return,
            r = round => r,
        };
        match outcome {
            Ok(r) => {
                metrics::counter!("tidewal_copied_objects_total", "repo" => label.clone()).increment(r.report.copied);
                metrics::counter!("tidewal_copied_bytes_total", "repo" => label.clone()).increment(r.report.bytes);
                for id in &r.backups {
                    tracing::info!("backup {id} copied to repository {n} ({})", c.url);
                }
                if failing {
                    tracing::info!("copying to repository {n} ({}) works again", c.url);
                }
                failing = false;
                update(&shared, n, |s| {
                    s.caught_up = Some(listed_at);
                    s.last_error = None;
                });
            }
            Err(e) => {
                metrics::counter!("tidewal_copy_failures_total", "repo" => label.clone()).increment(1);
                let why = e.to_string();
                if !failing {
                    tracing::error!("copying to repository {n} ({}) failed, retrying every round: {why}", c.url);
                } else {
                    tracing::debug!("copying to repository {n} failed again: {why}");
                }
                failing = true;
                update(&shared, n, |s| {
                    // What the copy lacks was all stored after `pending`: it holds the rest.
                    s.caught_up = s.caught_up.max(pending);
                    s.last_error = Some(why);
                });
            }
        }
        let generation = shared.pruned.load(Ordering::Relaxed);
        if generation != pruned_seen {
            if let Some(s) = syncer.as_mut() {
                pruned_seen = generation;
                let done = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = super::retention::apply(s.repo(), &shared.settings) => r,
                };
                s.forget();
                match done {
                    Ok(deleted) => {
                        if deleted > 0 {
                            tracing::info!("retention removed {deleted} object(s) from repository {n}");
                        }
                        update(&shared, n, |s| s.retention_error = None);
                    }
                    Err(e) => {
                        tracing::error!(
                            "retention on repository {n} ({}) failed, nothing more was deleted: {e}",
                            c.url
                        );
                        update(&shared, n, |s| s.retention_error = Some(e.to_string()));
                    }
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(c.interval) => {}
        }
    }
}

/// `tidewal_copy_lag_seconds{repo}`, computed at each scrape from the copier's state.
pub fn export(shared: &Shared) {
    let now = SystemTime::now();
    for (n, c) in &lock(&shared.state).copies {
        metrics::gauge!("tidewal_copy_lag_seconds", "repo" => n.to_string()).set(c.lag(now));
    }
}

pub fn describe() {
    use metrics::{describe_counter, describe_gauge, Unit};
    describe_gauge!(
        "tidewal_copy_lag_seconds",
        Unit::Seconds,
        "How far a [[repository.copy]] is behind: seconds since the moment before which everything in the repository is in the copy"
    );
    describe_counter!("tidewal_copied_objects_total", "Objects the daemon copied into a [[repository.copy]]");
    describe_counter!("tidewal_copied_bytes_total", Unit::Bytes, "Bytes the daemon copied into a [[repository.copy]]");
    describe_counter!("tidewal_copy_failures_total", "Rounds of copying into a [[repository.copy]] that failed");
}
