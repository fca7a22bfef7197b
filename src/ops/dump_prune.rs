//! Dump retention, run by `tidewal prune` and the daemon's pruner after the backups' own:
//! complete dumps by `repo::dump_retention` (a dump with a missing or damaged object is not
//! counted, so it cannot push a good one out), and what interrupted dumps left. Holding the
//! dump lease, prune knows no dump runs: every dump without `dump.json` goes at once;
//! otherwise (or for a dry run) only those untouched for a day.

use std::path::Path;
use std::time::{Duration, SystemTime};

use super::prune::{quiet_lease, remove_object};
use crate::error::{Code, Result};
use crate::repo::catalog::ABANDONED_AFTER;
use crate::repo::clock::bounded_now;
use crate::repo::dump_retention::{plan_dumps, DumpPolicy};
use crate::repo::dumps::{check_dump, dump_object, incomplete_dumps, read_dumps, DUMP_LEASE, RECORD};
use crate::repo::Repo;

#[derive(Debug, Default)]
pub struct DumpsPruned {
    pub kept: usize,
    pub expired: Vec<String>,
    pub interrupted: Vec<String>,
    pub deleted_objects: u64,
}

/// `scratch`: this host's `dump.scratch_dir`, where an interrupted dump's staging directory
/// (`tidewal-dump-<id>-*`) is removed with its objects.
pub async fn prune_dumps(
    repo: &Repo,
    now: SystemTime,
    policy: DumpPolicy,
    dry_run: bool,
    scratch: &Path,
) -> Result<DumpsPruned> {
    let now = bounded_now(repo, now).await?;
    let quiet = quiet_lease(repo, DUMP_LEASE, "a dump", dry_run).await?;
    let after = if quiet.is_some() { Duration::ZERO } else { ABANDONED_AFTER };
    let done = prune_with(repo, now, policy, dry_run, after, scratch).await;
    if let Some(held) = quiet {
        held.release().await;
    }
    done
}

async fn prune_with(
    repo: &Repo,
    now: SystemTime,
    policy: DumpPolicy,
    dry_run: bool,
    after: Duration,
    scratch: &Path,
) -> Result<DumpsPruned> {
    let mut listing = repo.store.list_meta("dumps").await?;
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let dumps = read_dumps(repo, &names).await?;
    let mut counted = Vec::new();
    for d in &dumps {
        match check_dump(repo, d).await {
            Ok(()) => counted.push((d.id.clone(), d.finished().unwrap_or(SystemTime::UNIX_EPOCH))),
            Err(f) if f.code == Code::Integrity => {
                tracing::warn!("dump {} has missing or damaged objects: retention does not count it ({f})", d.id)
            }
            Err(f) => return Err(f),
        }
    }
    let expired = plan_dumps(&counted, now, policy);
    listing.extend(repo.store.staging_leftovers().await?.into_iter().filter(|o| o.name.starts_with("dumps/")));
    let interrupted: Vec<(String, Vec<String>)> = incomplete_dumps(&listing)
        .into_iter()
        .filter(|(_, _, newest)| *newest + after <= now)
        .map(|(id, objs, _)| (id, objs))
        .collect();
    let mut done = DumpsPruned {
        kept: dumps.len() - expired.len(),
        expired: expired.clone(),
        interrupted: interrupted.iter().map(|(id, _)| id.clone()).collect(),
        deleted_objects: 0,
    };
    if dry_run {
        return Ok(done);
    }
    for id in &expired {
        // The record first: a half-deleted dump is never listed.
        remove_object(repo, &dump_object(id, RECORD)).await?;
        done.deleted_objects += 1;
        let prefix = format!("dumps/{id}/");
        for o in listing.iter().filter(|o| o.name.starts_with(&prefix) && !o.name.ends_with(&format!("/{RECORD}"))) {
            remove_object(repo, &o.name).await?;
            done.deleted_objects += 1;
        }
        tracing::info!("pruned dump {id}");
    }
    for (id, objects) in &interrupted {
        for o in objects {
            remove_object(repo, o).await?;
            done.deleted_objects += 1;
        }
        remove_scratch(scratch, id);
        tracing::info!("removed interrupted dump {id}");
    }
    Ok(done)
}

/// An interrupted dump's staging directory on this host, if any (best effort).
fn remove_scratch(parent: &Path, id: &str) {
    let prefix = format!("tidewal-dump-{id}-");
    for entry in std::fs::read_dir(parent).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().starts_with(&prefix) {
            match std::fs::remove_dir_all(entry.path()) {
                Ok(()) => tracing::info!("removed {}, left by interrupted dump {id}", entry.path().display()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", entry.path().display()),
            }
        }
    }
}
