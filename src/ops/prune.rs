//! Retention: apply the retention window (DESIGN.md §5 rule 4). The plan is
//! a pure function of the catalog (`repo::retention`); this module reads the catalog in full
//! (or deletes nothing), prints the plan and carries it out in bounded batches, stopping at
//! the first error.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::error::{Code, Fail, Result};
use crate::repo::catalog::{abandoned_backups, history_timelines, load_history, read_backups, ABANDONED_AFTER};
use crate::repo::retention::{plan, Catalog, Plan};
use crate::repo::{layout, Repo};

/// Deletions in flight at once, and objects per batch between checks.
const PARALLEL: usize = 8;
const BATCH: usize = 200;

/// What a prune did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Pruned {
    pub plan: Plan,
    pub abandoned: Vec<String>,
    pub deleted_objects: u64,
}

/// Read the whole catalog, plan, and unless `dry_run` delete: expired backups first (their
/// `backup.json` before anything else, so a half-deleted backup is never listed), then WAL,
/// then interrupted backups. Any error stops it.
pub async fn prune(repo: &Repo, now: SystemTime, window: Duration, dry_run: bool) -> Result<Pruned> {
    // One listing of backups/ serves both the records and the interrupted leftovers.
    let listing = repo.store.list_meta("backups").await?;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let backups = read_backups(repo, &names).await?;
    let wal = repo.store.list_meta("wal").await?;
    let wal_names: Vec<String> = wal.iter().map(|o| o.name.clone()).collect();
    let mut histories = BTreeMap::new();
    for tli in history_timelines(&wal_names) {
        histories.insert(tli, load_history(repo, tli).await?);
    }
    let cat = Catalog { backups: &backups, wal: &wal, histories: &histories, seg_size: repo.identity.wal_segment_size };
    let plan = plan(&cat, now, window).map_err(|e| {
        Fail::new(Code::Integrity, format!("the repository's catalog is inconsistent, nothing was deleted: {e}"))
    })?;
    let stale = abandoned_backups(&listing, now, ABANDONED_AFTER);
    let mut done = Pruned { abandoned: stale.iter().map(|(id, _)| id.clone()).collect(), ..Pruned::default() };
    if dry_run {
        done.plan = plan;
        return Ok(done);
    }
    for id in &plan.delete_backups {
        let record = layout::backup_object(id, "backup.json");
        repo.store.delete(&record).await?;
        done.deleted_objects += 1;
        let rest = repo.store.list(&format!("backups/{id}")).await?;
        done.deleted_objects += delete_all(repo, &rest).await?;
        tracing::info!("pruned backup {id}");
    }
    for batch in plan.delete_wal.chunks(BATCH) {
        done.deleted_objects += delete_all(repo, batch).await?;
    }
    for (id, objects) in &stale {
        done.deleted_objects += delete_all(repo, objects).await?;
        tracing::info!("removed interrupted backup {id}");
    }
    done.plan = plan;
    Ok(done)
}

async fn delete_all(repo: &Repo, names: &[String]) -> Result<u64> {
    let deletes = names.iter().cloned().map(|n| {
        let store = repo.store.clone();
        async move { store.delete(&n).await }
    });
    let results: Vec<_> = futures::stream::iter(deletes).buffer_unordered(PARALLEL).collect().await;
    for r in results {
        r?;
    }
    Ok(names.len() as u64)
}
