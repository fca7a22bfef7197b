//! Restoring an incremental backup: its chain, from the full backup it builds on to itself,
//! unpacked in order into one directory. Each backup's files are checked against its own
//! manifest as they are written; an `INCREMENTAL.<name>` file is applied in place to the
//! copy the backups before it left (`repo/unpack.rs`). Then what the newest backup no longer
//! has goes, and its `backup_label` loses the lines that make PostgreSQL refuse to start.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::archives::{archives, unpack};
use crate::error::{Code, Fail, Result};
use crate::pg::incremental::PREFIX;
use crate::progress::Progress;
use crate::repo::catalog::BackupInfo;
use crate::repo::{layout, manifest, Repo};

/// The chain `newest` restores with, oldest (the full backup) first (pure).
pub(super) fn chain_of<'a>(all: &'a [BackupInfo], newest: &'a BackupInfo) -> Result<Vec<&'a BackupInfo>> {
    let mut chain = vec![newest];
    while let Some(parent) = chain.last().and_then(|b| b.parent.as_deref()) {
        let at = chain.last().map(|b| b.id.as_str()).unwrap_or_default();
        let p = all.iter().find(|b| b.id == parent).ok_or_else(|| {
            Fail::new(
                Code::Integrity,
                format!(
                    "backup {at} builds on backup {parent}, which is not in the repository: restore another backup with --backup (see tidewal list)"
                ),
            )
        })?;
        if chain.iter().any(|b| b.id == p.id) {
            return Err(Fail::new(
                Code::Integrity,
                format!("backup {}: its chain of parents loops at {parent}", newest.id),
            ));
        }
        chain.push(p);
    }
    chain.reverse();
    Ok(chain)
}

/// A backup's manifest as stored, and its file checker for this cluster.
pub(super) async fn checker(repo: &Repo, b: &BackupInfo) -> Result<(Vec<u8>, manifest::Checker)> {
    let text = repo.open_bytes(&layout::backup_object(&b.id, "backup_manifest")).await?;
    let checker = manifest::parse(&text)
        .and_then(|m| m.for_system(repo.identity.system_id()))
        .and_then(manifest::Checker::new)
        .map_err(|e| Fail::new(Code::Integrity, format!("backup {}: {e}", b.id)))?;
    Ok((text.to_vec(), checker))
}

/// Unpack the backups after the chain's first, in order, over what it left in `to` (and the
/// tablespace directories); returns the files checked and each backup's manifest.
pub(super) async fn apply_rest(
    repo: &Repo,
    rest: &[&BackupInfo],
    to: &Path,
    spaces: &[(u32, PathBuf)],
    progress: &Progress,
) -> Result<(usize, Vec<Vec<u8>>)> {
    let (mut checked, mut manifests) = (0, Vec::new());
    for b in rest {
        tracing::info!("applying incremental backup {} (on {})", b.id, b.parent.as_deref().unwrap_or_default());
        let (text, checker) = checker(repo, b).await?;
        let checker = Arc::new(checker);
        let jobs = archives(b, to, spaces)?.into_iter().map(|a| {
            let (checker, progress) = (checker.clone(), progress.clone());
            async move {
                let reader = repo.reader(&a.obj, Some(a.stored_bytes)).await?;
                unpack(repo.keys.clone(), a, reader, checker, progress).await
            }
        });
        futures::future::try_join_all(jobs).await?;
        checked += checker.complete().map_err(|e| {
            Fail::new(Code::Integrity, format!("backup {}: restored files do not match its manifest: {e}", b.id))
        })?;
        manifests.push(text);
    }
    Ok((checked, manifests))
}

/// After the whole chain: files an earlier backup had that the newest does not are removed
/// (dropped tables), the data directory's `backup_manifest` (the full backup's, which no
/// longer describes it) goes, and `backup_label` loses its INCREMENTAL FROM lines.
pub(super) fn finish(to: &Path, spaces: &[(u32, PathBuf)], manifests: &[Vec<u8>]) -> Result<()> {
    let paths = |text: &[u8]| -> Result<HashSet<String>> {
        let m = manifest::parse(text).map_err(|e| Fail::new(Code::Integrity, e))?;
        Ok(m.files.into_iter().filter_map(|f| f.path).map(|p| plain_name(&p)).collect())
    };
    let Some((newest, older)) = manifests.split_last() else { return Ok(()) };
    let keep = paths(newest)?;
    let mut gone = HashSet::new();
    for m in older {
        gone.extend(paths(m)?.into_iter().filter(|p| !keep.contains(p)));
    }
    // A visibility map rebuilt from incremental files cannot be trusted: PostgreSQL clears
    // its bits without naming the block in WAL, so the summaries miss those changes and the
    // rebuilt map may call a changed page all-visible (index-only scans would then return
    // deleted rows). Without the fork every page counts as not all-visible, which is always
    // safe; recovery and the next VACUUM set the bits again.
    let newest_files = manifest::parse(newest).map_err(|e| Fail::new(Code::Integrity, e))?.files;
    gone.extend(
        newest_files.into_iter().filter_map(|f| f.path).filter(|p| rebuilt_visibility_map(p)).map(|p| plain_name(&p)),
    );
    for rel in gone {
        let path = destination(to, spaces, &rel);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Fail::new(Code::Storage, format!("cannot remove {}: {e}", path.display()))),
        }
    }
    let local = |p: &Path, e: std::io::Error| Fail::new(Code::Storage, format!("{}: {e}", p.display()));
    let manifest_path = to.join("backup_manifest");
    std::fs::remove_file(&manifest_path).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Ok(()),
        _ => Err(local(&manifest_path, e)),
    })?;
    let label = to.join("backup_label");
    let text = std::fs::read_to_string(&label).map_err(|e| local(&label, e))?;
    std::fs::write(&label, full_label(&text)).map_err(|e| local(&label, e))?;
    Ok(())
}

/// A manifest path as the restored file is named: `dir/INCREMENTAL.name` is `dir/name` (pure).
fn plain_name(p: &str) -> String {
    match p.rsplit_once('/') {
        Some((dir, name)) => format!("{dir}/{}", name.strip_prefix(PREFIX).unwrap_or(name)),
        None => p.to_string(),
    }
}

/// Is this manifest path a visibility map fork sent as an incremental file? (pure)
fn rebuilt_visibility_map(p: &str) -> bool {
    let name = p.rsplit('/').next().unwrap_or_default();
    name.strip_prefix(PREFIX).is_some_and(|n| n.split('.').next().is_some_and(|fork| fork.ends_with("_vm")))
}

/// Where a manifest path lies: a tablespace's under its destination.
fn destination(to: &Path, spaces: &[(u32, PathBuf)], rel: &str) -> PathBuf {
    for (oid, dir) in spaces {
        if let Some(rest) = rel.strip_prefix(&format!("pg_tblspc/{oid}/")) {
            return dir.join(rest);
        }
    }
    to.join(rel)
}

/// An incremental backup's label without the lines that tell PostgreSQL it still needs
/// combining (pure), as pg_combinebackup writes it.
fn full_label(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("INCREMENTAL FROM LSN:") && !l.starts_with("INCREMENTAL FROM TLI:"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, parent: Option<&str>) -> BackupInfo {
        let mut info: BackupInfo = serde_json::from_value(serde_json::json!({
            "id": id, "label": "", "system_identifier": "1", "pg_version": "17", "timescaledb_version": null,
            "timeline": 1, "start_lsn": "0/0", "end_lsn": "0/0", "start_wal": "", "end_wal": "",
            "started_at": "", "finished_at": "", "duration_seconds": 0.0, "tablespaces": [], "objects": []
        }))
        .unwrap();
        info.parent = parent.map(str::to_string);
        info
    }

    #[test]
    fn a_chain_runs_from_its_full_backup() {
        let all = vec![b("f", None), b("i1", Some("f")), b("i2", Some("i1")), b("x", Some("gone"))];
        let ids = |c: Vec<&BackupInfo>| c.iter().map(|b| b.id.clone()).collect::<Vec<_>>();
        assert_eq!(ids(chain_of(&all, &all[2]).unwrap()), ["f", "i1", "i2"]);
        assert_eq!(ids(chain_of(&all, &all[0]).unwrap()), ["f"]);
        let e = chain_of(&all, &all[3]).unwrap_err();
        assert!(e.message.contains("builds on backup gone, which is not in the repository"), "{e}");
        let looped = vec![b("a", Some("b")), b("b", Some("a"))];
        assert!(chain_of(&looped, &looped[0]).unwrap_err().message.contains("loops"));
    }

    #[test]
    fn names_and_labels() {
        assert_eq!(plain_name("base/5/INCREMENTAL.16384_vm"), "base/5/16384_vm");
        assert_eq!(plain_name("global/pg_control"), "global/pg_control");
        assert!(rebuilt_visibility_map("base/5/INCREMENTAL.16384_vm"));
        assert!(rebuilt_visibility_map("pg_tblspc/1/PG_17/5/INCREMENTAL.16384_vm.1"));
        assert!(!rebuilt_visibility_map("base/5/16384_vm"), "sent whole: as the server had it");
        assert!(!rebuilt_visibility_map("base/5/INCREMENTAL.16384"));
        assert!(!rebuilt_visibility_map("base/5/INCREMENTAL.16384_fsm"));
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nINCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\nLABEL: x\n";
        assert_eq!(full_label(label), "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: x\n");
        let spaces = vec![(16400, PathBuf::from("/ts"))];
        assert_eq!(destination(Path::new("/d"), &spaces, "pg_tblspc/16400/PG_17/5/1"), PathBuf::from("/ts/PG_17/5/1"));
        assert_eq!(destination(Path::new("/d"), &spaces, "base/5/1"), PathBuf::from("/d/base/5/1"));
    }
}
