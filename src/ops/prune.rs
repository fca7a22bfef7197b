//! Retention: apply the retention window (DESIGN.md §5 rule 4). The plan is
//! a pure function of the catalog (`repo::retention`); this module reads the catalog in full
//! (or deletes nothing), prints the plan and carries it out in bounded batches, stopping at
//! the first error. Deletions are decided by the host's clock bounded by the store's
//! (`repo::clock`): when the two disagree, nothing is deleted.

use std::time::{Duration, SystemTime};

use futures::StreamExt;

use crate::error::{Code, Fail, Result};
use crate::repo::catalog::{abandoned_backups, check_objects, read_backups, ABANDONED_AFTER};
use crate::repo::clock::bounded_now;
use crate::repo::lease;
use crate::repo::retention::{plan, Catalog, Plan};
use crate::repo::{layout, Repo};
use crate::store::{is_staging_name, ObjectInfo};

/// Deletions in flight at once, and objects per batch between checks.
const PARALLEL: usize = 8;
const BATCH: usize = 200;

/// What a prune did (or, dry, would do).
#[derive(Debug, Default)]
pub struct Pruned {
    pub plan: Plan,
    /// The time the plan was made for: the host's clock bounded by the store's.
    pub now: Option<SystemTime>,
    pub abandoned: Vec<String>,
    /// Staging files (file://) or incomplete multipart uploads (S3) of interrupted uploads,
    /// outside those backups.
    pub staging: Vec<String>,
    pub deleted_objects: u64,
}

/// What interrupted runs left behind (pure): backups without `backup.json` whose newest
/// object or staging leftover is older than [`ABANDONED_AFTER`], and staging leftovers that
/// old anywhere else. `listing` is `backups/`, `staging` every staging leftover (file://
/// staging files, or S3 incomplete uploads dated by their last activity).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub backups: Vec<(String, Vec<String>)>,
    pub staging: Vec<String>,
}

/// `backups_after` is how old a backup's newest object must be to count as interrupted:
/// [`ABANDONED_AFTER`] while a backup may be running, zero while the caller holds the backup
/// lease (then no backup runs anywhere, and whatever has no `backup.json` was interrupted).
/// `wal` lists `wal/`: a WAL upload's staging file whose object is stored already (a killed
/// `wal-push` that PostgreSQL retried) goes at once, since a write still in flight to it
/// could only fail or find the object there; other WAL staging files wait a day.
pub fn leftovers(
    listing: &[ObjectInfo],
    staging: &[ObjectInfo],
    wal: &[ObjectInfo],
    now: SystemTime,
    backups_after: Duration,
) -> Leftovers {
    let all: Vec<ObjectInfo> = listing.iter().chain(staging).cloned().collect();
    let mut backups = abandoned_backups(&all, now, backups_after);
    // Ids without the random suffix come from versions that take no backup lease: one of
    // them may be writing now (a rolling upgrade), so those keep the one-day rule.
    let day_old: std::collections::HashSet<String> =
        abandoned_backups(&all, now, ABANDONED_AFTER).into_iter().map(|(id, _)| id).collect();
    backups.retain(|(id, _)| id.contains('-') || day_old.contains(id));
    let taken: std::collections::HashSet<&str> =
        backups.iter().flat_map(|(_, o)| o.iter().map(String::as_str)).collect();
    // A large WAL upload may be in flight whatever the backup lease says, unless its object
    // is there already and never replaced (the receiver's `.stream` copy is).
    let stored: std::collections::HashSet<&str> = wal.iter().map(|o| o.name.as_str()).collect();
    let done =
        |name: &str| name.rsplit_once('#').is_some_and(|(obj, _)| !obj.ends_with(".stream") && stored.contains(obj));
    let after = |o: &ObjectInfo| {
        if o.name.starts_with("backups/") {
            backups_after
        } else if done(&o.name) {
            Duration::ZERO
        } else {
            ABANDONED_AFTER
        }
    };
    let staging = staging
        .iter()
        .filter(|o| o.modified + after(o) <= now && !taken.contains(o.name.as_str()))
        .map(|o| o.name.clone())
        .collect();
    Leftovers { backups, staging }
}

/// Find what interrupted runs left, as of `now` (already bounded by the store's clock).
/// `wal` is the listing of `wal/`.
pub async fn find_leftovers(
    repo: &Repo,
    listing: &[ObjectInfo],
    wal: &[ObjectInfo],
    now: SystemTime,
    backups_after: Duration,
) -> Result<Leftovers> {
    let staging = repo.store.staging_leftovers().await?;
    Ok(leftovers(listing, &staging, wal, now, backups_after))
}

/// The lease `name` for prune, so that what lacks its record is known to be interrupted
/// (not still being written); `None` for a dry run, or when `what` holds it (then only
/// what is a day old goes).
pub async fn quiet_lease(repo: &Repo, name: &str, what: &str, dry_run: bool) -> Result<Option<lease::Held>> {
    if dry_run {
        return Ok(None);
    }
    match lease::acquire(repo, name, "prune", lease::configured_timeout()).await {
        Ok(held) => Ok(Some(held)),
        Err(f) if f.code == Code::Conflict => {
            tracing::info!("{what} is running ({}): what it leaves must be a day old to go", f.message);
            Ok(None)
        }
        Err(f) => Err(f),
    }
}

/// Remove an object or a staging leftover (an S3 upload is aborted).
pub async fn remove_object(repo: &Repo, name: &str) -> Result<()> {
    if is_staging_name(name) {
        repo.store.remove_staging(name).await?;
    } else {
        repo.store.delete(name).await?;
    }
    Ok(())
}

/// Read the whole catalog, plan, and unless `dry_run` delete: expired backups first (their
/// `backup.json` before anything else, so a half-deleted backup is never listed), then WAL,
/// then interrupted backups. Any error stops it.
pub async fn prune(repo: &Repo, now: SystemTime, window: Duration, dry_run: bool) -> Result<Pruned> {
    let now = bounded_now(repo, now).await.map_err(|e| e.context("prune"))?;
    // Holding the backup lease, prune knows no backup runs anywhere: every backup without
    // backup.json (and its staging files) was interrupted, however recent. A dry run takes
    // no lease and applies the one-day rule.
    let quiet = quiet_lease(repo, lease::BACKUP, "a base backup", dry_run).await?;
    let backups_after = if quiet.is_some() { Duration::ZERO } else { ABANDONED_AFTER };
    let done = prune_with(repo, now, window, dry_run, backups_after).await;
    if let Some(held) = quiet {
        held.release().await;
    }
    done
}

async fn prune_with(
    repo: &Repo,
    now: SystemTime,
    window: Duration,
    dry_run: bool,
    backups_after: Duration,
) -> Result<Pruned> {
    // One listing of backups/ serves both the records and the interrupted leftovers.
    let listing = repo.store.list_meta("backups").await?;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let mut backups = read_backups(repo, &names).await?;
    // A backup whose objects are not all there as recorded can restore nothing: it must not
    // become the anchor that lets older, good backups and their WAL go. It stays (so does
    // its WAL while a good backup needs it) for a person to look at; list marks it.
    let checks = futures::future::join_all(backups.iter().map(|b| check_objects(repo, b))).await;
    let mut bad = checks.iter().map(Result::is_err);
    backups.retain(|b| {
        let broken = bad.next().unwrap_or(false);
        if broken {
            tracing::warn!(
                "backup {} has missing or damaged objects: retention does not count it (see tidewal list)",
                b.id
            );
        }
        !broken
    });
    let wal = repo.store.list_meta("wal").await?;
    let histories = super::timelines::histories(repo, &wal).await?;
    let cat = Catalog { backups: &backups, wal: &wal, histories: &histories, seg_size: repo.identity.wal_segment_size };
    let plan = plan(&cat, now, window).map_err(|e| {
        Fail::new(Code::Integrity, format!("the repository's catalog is inconsistent, nothing was deleted: {e}"))
    })?;
    let left = find_leftovers(repo, &listing, &wal, now, backups_after).await?;
    let mut done = Pruned {
        now: Some(now),
        abandoned: left.backups.iter().map(|(id, _)| id.clone()).collect(),
        staging: left.staging.clone(),
        ..Pruned::default()
    };
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
    for (id, objects) in &left.backups {
        done.deleted_objects += delete_all(repo, objects).await?;
        tracing::info!("removed interrupted backup {id}");
    }
    done.deleted_objects += delete_all(repo, &left.staging).await?;
    done.plan = plan;
    Ok(done)
}

async fn delete_all(repo: &Repo, names: &[String]) -> Result<u64> {
    let deletes = names.iter().cloned().map(|n| async move { remove_object(repo, &n).await });
    let results: Vec<_> = futures::stream::iter(deletes).buffer_unordered(PARALLEL).collect().await;
    for r in results {
        r?;
    }
    Ok(names.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leftovers_of_interrupted_runs() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let day = Duration::from_secs(86400);
        let o = |name: &str, at: SystemTime| ObjectInfo { name: name.into(), size: 1, modified: at };
        let (done, killed, running) =
            ("20270101T000000.000000Z-aaaaaa", "20270101T000001.000000Z-bbbbbb", "20270101T000002.000000Z-cccccc");
        let listing = vec![
            o(&format!("backups/{done}/base.tar"), t0),
            o(&format!("backups/{done}/backup.json"), t0),
            o(&format!("backups/{running}/backup_manifest"), t0),
        ];
        let staging = vec![
            // A complete backup's stray staging file, old.
            o(&format!("backups/{done}/base.tar#1"), t0),
            // All that is left of a killed backup.
            o(&format!("backups/{killed}/base.tar#1"), t0),
            // A backup still writing its archive.
            o(&format!("backups/{running}/base.tar#1"), t0 + 2 * day),
            // A killed WAL upload, recent and old.
            o("wal/00000001/000000010000000000000003#1", t0 + 2 * day),
            o("wal/00000001/000000010000000000000004#1", t0),
        ];
        let left = leftovers(&listing, &staging, &[], t0 + 2 * day + day / 2, ABANDONED_AFTER);
        assert_eq!(left.backups, vec![(killed.to_string(), vec![format!("backups/{killed}/base.tar#1")])]);
        assert_eq!(
            left.staging,
            vec![format!("backups/{done}/base.tar#1"), "wal/00000001/000000010000000000000004#1".to_string()]
        );
        // Nothing is a day old yet.
        assert_eq!(leftovers(&listing, &staging, &[], t0 + day / 2, ABANDONED_AFTER), Leftovers::default());
        // With the backup lease held, no backup runs: the running one was interrupted too,
        // however recent; a recent WAL upload's staging file still waits a day.
        let now = t0 + 2 * day + day / 2;
        let quiet = leftovers(&listing, &staging, &[], now, Duration::ZERO);
        let ids: Vec<&str> = quiet.backups.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(ids, vec![killed, running]);
        assert!(!quiet.staging.contains(&"wal/00000001/000000010000000000000003#1".to_string()));
        // An id of the old form (no lease taken by its writer) still waits a day.
        let older = vec![o("backups/20270101T000003Z/base.tar", t0 + 2 * day)];
        assert!(leftovers(&older, &[], &[], now, Duration::ZERO).backups.is_empty());
        assert_eq!(leftovers(&older, &[], &[], now + day, Duration::ZERO).backups.len(), 1);
        // A WAL upload's staging file whose object is stored (the retry succeeded) goes at
        // once; not while the object is missing, nor for the receiver's replaced copy.
        let wal = vec![
            o("wal/00000001/000000010000000000000003", now),
            o("wal/00000001/000000010000000000000005.stream", now),
        ];
        let fresh = vec![
            o("wal/00000001/000000010000000000000003#1", now),
            o("wal/00000001/000000010000000000000003#2", now),
            o("wal/00000001/000000010000000000000004#1", now),
            o("wal/00000001/000000010000000000000005.stream#1", now),
        ];
        assert_eq!(
            leftovers(&[], &fresh, &wal, now, ABANDONED_AFTER).staging,
            vec!["wal/00000001/000000010000000000000003#1", "wal/00000001/000000010000000000000003#2"]
        );
        assert!(leftovers(&[], &fresh, &[], now, ABANDONED_AFTER).staging.is_empty());
    }
}
