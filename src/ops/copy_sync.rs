//! Keeping a copy up to date (`[[repository.copy]]`): each round lists the repository and
//! copies what the copy lacks, with `ops::copy`'s order and rules (as sealed, create-only,
//! records last). What the copy holds is listed once and then remembered, so a round that
//! finds nothing new costs one listing of the repository.

use std::collections::HashSet;
use std::time::SystemTime;

use super::copy::{copy_groups, copy_identity, open_dest, plan, CopyReport, Dest};
use crate::error::Result;
use crate::repo::{catalog, dumps, lease, Repo};
use crate::store::{ObjectInfo, Store};

pub struct Syncer {
    dest: Dest,
    /// The copy, opened with the repository's keys.
    repo: Repo,
    /// Names the copy is known to hold; `None`: list them again (after retention deleted
    /// some, or after a failed round).
    known: Option<HashSet<String>>,
}

/// What one round did.
#[derive(Debug, Default)]
pub struct Round {
    pub report: CopyReport,
    /// Backups that became complete in the copy this round, each checked against its record.
    pub backups: Vec<String>,
}

/// What a round should copy (pure): the plan's groups without what the copy holds.
pub fn missing(listing: &[ObjectInfo], known: &HashSet<String>) -> Vec<Vec<ObjectInfo>> {
    plan(listing)
        .into_iter()
        .map(|g| g.into_iter().filter(|o| !known.contains(&o.name)).collect::<Vec<_>>())
        .filter(|g| !g.is_empty())
        .collect()
}

impl Syncer {
    /// Probe the copy's store, give it the repository's identity (or refuse another
    /// repository's) and open it.
    pub async fn open(src: &Repo, dest: Store) -> Result<Syncer> {
        let dest = open_dest(dest).await?;
        copy_identity(src, &dest, &mut CopyReport::default()).await?;
        let repo = Repo::open(dest.store.clone(), src.keys.clone(), src.lz4).await?;
        Ok(Syncer { dest, repo, known: None })
    }

    pub fn repo(&self) -> &Repo {
        &self.repo
    }

    /// List the copy again at the next round (its retention deleted objects).
    pub fn forget(&mut self) {
        self.known = None;
    }

    /// Copy what the copy lacks. `pending` is set to when the oldest object the copy lacks
    /// was stored (None when it lacks nothing), so a failed round still says how far behind
    /// the copy is.
    pub async fn round(&mut self, src: &Repo, pending: &mut Option<SystemTime>) -> Result<Round> {
        let listing = src.store.list_meta("").await?;
        let known = match self.known.take() {
            Some(k) => k,
            None => self.dest.store.list("").await?.into_iter().collect(),
        };
        let groups = missing(&listing, &known);
        *pending = groups.iter().flatten().map(|o| o.modified).min();
        let mut round = Round::default();
        if groups.is_empty() {
            self.known = Some(known);
            return Ok(round);
        }
        // A backup or dump being copied has no record in the copy yet: the leases tell a
        // prune of the copy (by hand) that it is being written, not interrupted.
        let area = |a: &str| groups.iter().flatten().any(|o| o.name.starts_with(a));
        let mut held = Vec::new();
        for (wanted, name) in [(area("backups/"), lease::BACKUP), (area("dumps/"), dumps::DUMP_LEASE)] {
            if wanted {
                held.push(lease::acquire(&self.repo, name, "copy", lease::configured_timeout()).await?);
            }
        }
        let copied = copy_groups(&src.store, &self.dest, &groups, &mut round.report, &|_| {}).await;
        for h in held {
            h.release().await;
        }
        // On failure `known` stays unset: the next round lists the copy again.
        copied?;
        let mut known = known;
        known.extend(groups.iter().flatten().map(|o| o.name.clone()));
        let records: Vec<String> =
            groups.iter().flatten().filter(|o| o.name.ends_with("/backup.json")).map(|o| o.name.clone()).collect();
        for b in catalog::read_backups(&self.repo, &records).await? {
            catalog::check_objects(&self.repo, &b).await?;
            round.backups.push(b.id);
        }
        self.known = Some(known);
        *pending = None;
        Ok(round)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn missing_leaves_out_what_the_copy_holds_and_keeps_the_order() {
        let at = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let o = |name: &str, s| ObjectInfo { name: name.into(), size: 1, modified: at(s) };
        let id = "20261124T013000.000000Z-000001";
        let listing = vec![
            o("wal/00000001/000000010000000000000001", 1),
            o("wal/00000001/000000010000000000000002", 2),
            o(&format!("backups/{id}/base.tar"), 3),
            o(&format!("backups/{id}/backup.json"), 4),
        ];
        let known: HashSet<String> =
            ["wal/00000001/000000010000000000000001", "tidewal.json"].iter().map(|s| s.to_string()).collect();
        let names: Vec<Vec<String>> =
            missing(&listing, &known).into_iter().map(|g| g.into_iter().map(|o| o.name).collect()).collect();
        assert_eq!(
            names,
            vec![
                vec!["wal/00000001/000000010000000000000002".to_string()],
                vec![format!("backups/{id}/base.tar")],
                vec![format!("backups/{id}/backup.json")],
            ]
        );
        let all: HashSet<String> = listing.iter().map(|o| o.name.clone()).collect();
        assert!(missing(&listing, &all).is_empty());
    }
}
