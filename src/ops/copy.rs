//! `tidewal copy --to URL`: copy a repository once to a second store, every object as stored
//! (sealed: no decryption, same key), create-only, in an order that keeps the destination
//! consistent for a reader at every moment: the identity first, then the WAL, then each
//! backup's (dump's) objects before its `backup.json` (`dump.json`). Staging files, locks,
//! probes and interrupted backups or dumps are not copied. Then the destination is opened
//! and every backup and dump in it is checked against its record.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::error::{Code, Fail, Result};
use crate::repo::{catalog, dumps, lax_store, layout, Repo};
use crate::store::{is_staging_name, ObjectInfo, Piece, Store, StoreError, PART_SIZE};

/// Objects copied at once.
const IN_FLIGHT: usize = 4;
/// Bytes at the end of a sealed object compared to tell an identical copy: they hold the
/// seal's authentication tag, so two different objects of one size differ there.
const TAIL: u64 = 64;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CopyReport {
    pub copied: u64,
    pub skipped: u64,
    /// Listed, then deleted from the source by retention before they were copied.
    pub vanished: u64,
    /// Bytes written to the destination.
    pub bytes: u64,
    /// Complete backups and dumps now in the destination, each checked against its record.
    pub backups: usize,
    pub dumps: usize,
}

/// What to copy, in order (pure): WAL (history files first), then per complete backup its
/// objects then its `backup.json`, then per complete dump its objects then `dump.json`.
/// Each inner list may be copied in parallel; the lists one after another.
pub fn plan(listing: &[ObjectInfo]) -> Vec<Vec<ObjectInfo>> {
    let usable = |o: &&ObjectInfo| !is_staging_name(&o.name);
    let mut history = Vec::new();
    let mut wal = Vec::new();
    for o in listing.iter().filter(usable).filter(|o| o.name.starts_with("wal/")) {
        // `.stream` is the segment being received, replaced as it grows: not a final object.
        if o.name.ends_with(".stream") {
            continue;
        }
        if o.name.ends_with(".history") {
            history.push(o.clone());
        } else {
            wal.push(o.clone());
        }
    }
    let mut out = vec![history, wal];
    for (area, record) in [("backups/", "backup.json"), ("dumps/", dumps::RECORD)] {
        let mut by_id: std::collections::BTreeMap<&str, Vec<&ObjectInfo>> = Default::default();
        for o in listing.iter().filter(usable) {
            let id = o.name.strip_prefix(area).and_then(|r| r.split_once('/')).map(|(id, _)| id);
            if let Some(id) = id.filter(|id| layout::parse_backup_id(id).is_some()) {
                by_id.entry(id).or_default().push(o);
            }
        }
        let mut ids: Vec<_> = by_id.into_iter().collect();
        ids.sort_by_key(|(id, _)| (layout::parse_backup_id(id), id.to_string()));
        for (id, objs) in ids {
            let rec = format!("{area}{id}/{record}");
            let Some(rec) = objs.iter().find(|o| o.name == rec) else { continue };
            out.push(objs.iter().filter(|o| o.name != rec.name).map(|o| (*o).clone()).collect());
            out.push(vec![(*rec).clone()]);
        }
    }
    out.retain(|g| !g.is_empty());
    out
}

fn conflict(dest: &Store, name: &str, what: &str) -> Fail {
    Fail::new(
        Code::Conflict,
        format!("{} already holds {name} {what}; it is not overwritten: remove it or copy elsewhere", dest.url()),
    )
}

/// Is the destination's `name` (of `size` bytes) the same object as the source's?
async fn same_object(src: &Store, dest: &Store, name: &str, size: u64, dest_size: u64) -> Result<bool> {
    if size != dest_size {
        return Ok(false);
    }
    let range = size.saturating_sub(TAIL)..size;
    Ok(src.get_range(name, range.clone()).await? == dest.get_range(name, range).await?)
}

enum Outcome {
    Copied(u64),
    Skipped,
    /// Deleted from the source meanwhile (retention): prune removes a record before its
    /// objects, so a record whose objects vanished has vanished too and is not copied.
    Vanished,
}

async fn copy_one(src: &Store, dest: &Store, conditional: bool, o: &ObjectInfo) -> Result<Outcome> {
    match dest.size(&o.name).await {
        Ok(dsize) => {
            if same_object(src, dest, &o.name, o.size, dsize).await? {
                return Ok(Outcome::Skipped);
            }
            return Err(conflict(
                dest,
                &o.name,
                &format!("with different content ({dsize} bytes, the source's {})", o.size),
            ));
        }
        Err(StoreError::NotFound(_)) => {}
        Err(e) => return Err(e.into()),
    }
    if o.size < PART_SIZE as u64 {
        let data = match src.get_bytes(&o.name).await {
            Err(StoreError::NotFound(_)) => return Ok(Outcome::Vanished),
            r => r?,
        };
        let len = data.len() as u64;
        if dest.create(&o.name, data, conditional).await? == crate::store::Created::AlreadyExists {
            // Written meanwhile by someone else: fine only if it is the same object.
            let dsize = dest.size(&o.name).await?;
            if !same_object(src, dest, &o.name, o.size, dsize).await? {
                return Err(conflict(dest, &o.name, "with different content"));
            }
            return Ok(Outcome::Skipped);
        }
        return Ok(Outcome::Copied(len));
    }
    // Large: stream through a multipart upload (not create-only: checked above, size after).
    let mut stream = match src.get(&o.name).await {
        Err(StoreError::NotFound(_)) => return Ok(Outcome::Vanished),
        r => r?.into_stream(),
    };
    let (tx, rx) = mpsc::channel::<Piece>(2);
    let upload = dest.put_stream(&o.name, rx);
    let feed = async {
        let mut n = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.map_err(|e| Fail::new(Code::Storage, format!("cannot read {}: {e}", o.name)))?;
            n += chunk.len() as u64;
            if tx.send(Piece::Data(chunk)).await.is_err() {
                break;
            }
        }
        if n == o.size {
            let _ = tx.send(Piece::End).await;
        }
        drop(tx);
        Ok::<u64, Fail>(n)
    };
    let (up, fed) = tokio::join!(upload, feed);
    let n = fed?;
    up?;
    let dsize = dest.size(&o.name).await?;
    if n != o.size || dsize != o.size {
        return Err(Fail::new(
            Code::Storage,
            format!("copying {} stored {dsize} bytes of {}; run tidewal copy again", o.name, o.size),
        ));
    }
    Ok(Outcome::Copied(n))
}

/// A destination whose handling of create-only writes is known (probed once).
pub struct Dest {
    pub store: Store,
    pub conditional: bool,
}

/// Probe `dest` for create-only writes; refuse a lax one unless configured for it.
pub async fn open_dest(dest: Store) -> Result<Dest> {
    let conditional = dest.probe_conditional_writes(&layout::probe_name()).await?;
    if !conditional && dest.requires_conditional_writes() {
        return Err(lax_store(dest.url()));
    }
    Ok(Dest { store: dest, conditional })
}

impl CopyReport {
    fn count(&mut self, o: Outcome) {
        match o {
            Outcome::Copied(n) => {
                self.copied += 1;
                self.bytes += n;
            }
            Outcome::Skipped => self.skipped += 1,
            Outcome::Vanished => self.vanished += 1,
        }
    }
}

/// The destination's identity: absent (written now), the same (kept), or another
/// repository's (refused).
pub async fn copy_identity(src: &Repo, dest: &Dest, report: &mut CopyReport) -> Result<()> {
    let (conditional, dest) = (dest.conditional, &dest.store);
    let mine = src.store.get_bytes(layout::IDENTITY).await?;
    let theirs = match dest.get_bytes(layout::IDENTITY).await {
        Ok(b) => Some(b),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let refuse = || {
        Fail::new(
            Code::Conflict,
            format!(
                "{} holds another repository (its {} differs from this one's); copy to an empty location",
                dest.url(),
                layout::IDENTITY
            ),
        )
    };
    let outcome = match theirs {
        Some(t) if t == mine => Outcome::Skipped,
        Some(_) => return Err(refuse()),
        None => {
            let len = mine.len() as u64;
            match dest.create(layout::IDENTITY, mine, conditional).await? {
                crate::store::Created::Written => Outcome::Copied(len),
                crate::store::Created::AlreadyExists => return Err(refuse()),
            }
        }
    };
    report.count(outcome);
    Ok(())
}

fn is_record(name: &str) -> bool {
    name.ends_with("/backup.json") || name.ends_with(&format!("/{}", dumps::RECORD))
}

/// Copy `groups` (from [`plan`]) one after another, the objects of each in parallel.
pub async fn copy_groups(
    src: &Store,
    dest: &Dest,
    groups: &[Vec<ObjectInfo>],
    report: &mut CopyReport,
    progress: &(dyn Fn(&str) + Sync),
) -> Result<()> {
    for group in groups {
        if let [one] = group.as_slice() {
            if is_record(&one.name) {
                progress(&one.name);
            }
        }
        // Collected first: a lazy map's closure makes the future not Send (the daemon spawns it).
        let copies: Vec<_> = group.iter().map(|o| copy_one(src, &dest.store, dest.conditional, o)).collect();
        let outcomes: Vec<Outcome> = futures::stream::iter(copies).buffer_unordered(IN_FLIGHT).try_collect().await?;
        for o in outcomes {
            report.count(o);
        }
    }
    Ok(())
}

/// What `check` finds at a copy's place: usable and empty (filled at the daemon's first
/// round) or holding this repository; another repository or a lax store is an error.
#[derive(Debug, PartialEq, Eq)]
pub enum DestState {
    Empty,
    Same { conditional: bool },
}

/// Probe `dest` and compare its identity with `src`'s, writing nothing but the probe.
pub async fn check_dest(src: &Repo, dest: Store) -> Result<DestState> {
    let dest = open_dest(dest).await?;
    let mine = src.store.get_bytes(layout::IDENTITY).await?;
    match dest.store.get_bytes(layout::IDENTITY).await {
        Err(StoreError::NotFound(_)) => Ok(DestState::Empty),
        Err(e) => Err(e.into()),
        Ok(theirs) if theirs == mine => Ok(DestState::Same { conditional: dest.conditional }),
        Ok(_) => Err(Fail::new(
            Code::Conflict,
            format!("{} holds another repository (its {} differs from this one's)", dest.store.url(), layout::IDENTITY),
        )),
    }
}

/// Copy `src` into `dest` (see the module comment), then open the destination with the
/// source's key and check every backup and dump there against its record.
pub async fn copy(src: &Repo, dest: Store, progress: &(dyn Fn(&str) + Sync)) -> Result<CopyReport> {
    let dest = open_dest(dest).await?;
    let mut report = CopyReport::default();
    copy_identity(src, &dest, &mut report).await?;
    let listing = src.store.list_meta("").await?;
    copy_groups(&src.store, &dest, &plan(&listing), &mut report, progress).await?;
    let copy = Repo::open(dest.store, src.keys.clone(), src.lz4).await?;
    let backups = catalog::list_backups(&copy).await?;
    for b in &backups {
        catalog::check_objects(&copy, b).await?;
    }
    let dump_names = copy.store.list("dumps").await?;
    let dumps = dumps::read_dumps(&copy, &dump_names).await?;
    for d in &dumps {
        dumps::check_dump(&copy, d).await?;
    }
    report.backups = backups.len();
    report.dumps = dumps.len();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn o(name: &str) -> ObjectInfo {
        ObjectInfo { name: name.into(), size: 1, modified: SystemTime::UNIX_EPOCH }
    }

    #[test]
    fn plan_orders_records_last_and_skips_what_is_not_final() {
        let a = "20261124T013000.000000Z-000001";
        let b = "20261125T013000.000000Z-000002";
        let listing: Vec<ObjectInfo> = [
            &format!("backups/{a}/backup.json"),
            &format!("backups/{a}/base.tar"),
            &format!("backups/{a}/backup_manifest"),
            &format!("backups/{b}/base.tar"), // interrupted: no backup.json
            &format!("backups/{a}/16384.tar#1"),
            &format!("dumps/{a}/dump.json"),
            &format!("dumps/{a}/db.dump"),
            &format!("dumps/{b}/db.dump"),
            "locks/daemon.json",
            "tmp/probe-1",
            "tidewal.json",
            "wal/00000001/000000010000000000000001",
            "wal/00000001/000000010000000000000002.stream",
            "wal/00000002.history",
        ]
        .iter()
        .map(|n| o(n))
        .collect();
        let names: Vec<Vec<String>> =
            plan(&listing).into_iter().map(|g| g.into_iter().map(|o| o.name).collect()).collect();
        assert_eq!(
            names,
            vec![
                vec!["wal/00000002.history".to_string()],
                vec!["wal/00000001/000000010000000000000001".to_string()],
                vec![format!("backups/{a}/base.tar"), format!("backups/{a}/backup_manifest")],
                vec![format!("backups/{a}/backup.json")],
                vec![format!("dumps/{a}/db.dump")],
                vec![format!("dumps/{a}/dump.json")],
            ]
        );
    }

    /// A large object goes through the multipart path and arrives whole; a second copy is
    /// skipped; a same-size object with other content is refused by name.
    #[tokio::test]
    async fn large_objects_stream_and_differing_ones_are_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let opts = crate::store::StoreOptions::default();
        let src = Store::open(a.path().to_str().unwrap(), &opts).unwrap();
        let dest = Store::open(b.path().to_str().unwrap(), &opts).unwrap();
        let big: Vec<u8> = (0..(2 * PART_SIZE + 12345)).map(|i| (i * 7 % 251) as u8).collect();
        src.put("wal/big", Bytes::from(big.clone())).await.unwrap();
        let info = src.list_meta("wal").await.unwrap().remove(0);
        assert!(
            matches!(copy_one(&src, &dest, true, &info).await.unwrap(), Outcome::Copied(n) if n == big.len() as u64)
        );
        assert_eq!(dest.get_bytes("wal/big").await.unwrap(), Bytes::from(big.clone()));
        assert!(matches!(copy_one(&src, &dest, true, &info).await.unwrap(), Outcome::Skipped));
        let mut other = big;
        *other.last_mut().unwrap() ^= 1;
        dest.put("wal/big", Bytes::from(other)).await.unwrap();
        let e = copy_one(&src, &dest, true, &info).await.err().unwrap();
        assert_eq!(e.code, Code::Conflict);
        assert!(e.to_string().contains("wal/big"), "{e}");
        // Deleted from the source meanwhile (retention): not copied, not an error.
        src.delete("wal/big").await.unwrap();
        dest.delete("wal/big").await.unwrap();
        assert!(matches!(copy_one(&src, &dest, true, &info).await.unwrap(), Outcome::Vanished));
        assert!(!dest.exists("wal/big").await.unwrap());
    }
}
