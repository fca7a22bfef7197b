//! Restoring an incremental backup: its chain, from the full backup it builds on to itself,
//! unpacked newest first into one directory, so every block is written once, from the
//! newest backup that has it (`repo/unpack_chain.rs`). Each backup's files are checked
//! against its own manifest as they pass; `backup_label` then loses the lines that make
//! PostgreSQL refuse to start.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::archives::{older_archives, unpack, Layer};
use crate::error::{Code, Fail, Result};
use crate::progress::Progress;
use crate::repo::catalog::BackupInfo;
use crate::repo::unpack::ChainState;
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

/// The file checker of backup `id`'s manifest `text`, for this repository's cluster.
pub(super) fn checker(repo: &Repo, id: &str, text: &[u8]) -> Result<Arc<manifest::Checker>> {
    manifest::checker(text, repo.identity.system_id())
        .map(Arc::new)
        .map_err(|e| Fail::new(Code::Integrity, format!("backup {id}: {e}")))
}

/// Unpack the chain's older backups over what the newest left in `to` (and the tablespace
/// directories), newest of them first, each checked against its own manifest; each fills
/// only blocks still missing (`repo/unpack_chain.rs`). Returns the files checked.
pub(super) async fn apply_older(
    repo: &Repo,
    newest: &manifest::Checker,
    older: &[&BackupInfo],
    to: &Path,
    spaces: &[(u32, PathBuf)],
    state: &Arc<ChainState>,
    progress: &Progress,
) -> Result<usize> {
    let mut checked = 0;
    for b in older.iter().rev() {
        tracing::info!("filling in from backup {}", b.id);
        let text = repo.open_bytes(&layout::backup_object(&b.id, "backup_manifest")).await?;
        let checker = checker(repo, &b.id, &text)?;
        let jobs = older_archives(b, to, spaces, &checker)?.into_iter().map(|a| {
            let (checker, progress, layer) = (checker.clone(), progress.clone(), Layer::Older(state.clone()));
            async move {
                let reader = repo.reader(&a.obj, Some(a.stored_bytes)).await?;
                unpack(repo.keys.clone(), a, reader, checker, layer, progress).await
            }
        });
        futures::future::try_join_all(jobs).await?;
        checked += checker.complete().map_err(|e| {
            Fail::new(Code::Integrity, format!("backup {}: restored files do not match its manifest: {e}", b.id))
        })?;
        // A file copied whole from this backup, whose manifest gives it the newest one's size
        // and checksum, is already checked.
        for key in state.take_copied_whole() {
            if checker.entry(&key).is_some_and(|e| e.1.is_some() && Some(e) == newest.entry(&key)) {
                newest.vouched(&key);
            }
        }
    }
    Ok(checked)
}

/// After the whole chain: every block below a truncation length was found, the data
/// directory's `backup_manifest` (the newest backup's, which lists incremental files) goes,
/// and `backup_label` loses its INCREMENTAL FROM lines.
pub(super) fn finish(to: &Path, state: &ChainState) -> Result<()> {
    state.finish().map_err(|e| Fail::new(Code::Integrity, e))?;
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

/// The files the newest backup stored as tidewal's increments (client-side), read back now
/// that the chain has rebuilt them and checked against that backup's manifest, on all cores.
/// (A server-side increment's manifest lists the increment, checked as it passed.)
pub(super) async fn check_rebuilt(
    checker: &Arc<manifest::Checker>,
    to: &Path,
    spaces: &[(u32, PathBuf)],
) -> Result<()> {
    let keys = checker.take_rebuilt();
    let (checker, to, spaces) = (checker.clone(), to.to_path_buf(), spaces.to_vec());
    let checked = tokio::task::spawn_blocking(move || {
        use rayon::prelude::*;
        keys.par_iter().try_for_each(|key| {
            let path = match key.strip_prefix("pg_tblspc/").and_then(|k| k.split_once('/')) {
                Some((oid, rest)) => match spaces.iter().find(|(o, _)| o.to_string() == oid) {
                    Some((_, dir)) => dir.join(rest),
                    None => return Err(format!("{key}: no such tablespace in the restore")),
                },
                None => to.join(key),
            };
            let mut file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            checker.check_rebuilt(key, &mut file)
        })
    })
    .await
    .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    checked.map_err(|e| {
        Fail::new(
            Code::Integrity,
            format!("a file rebuilt from the chain does not match the newest backup's manifest: {e}"),
        )
    })
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
    fn labels_lose_their_incremental_lines() {
        let label = "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nINCREMENTAL FROM LSN: 0/1000028\nINCREMENTAL FROM TLI: 1\nLABEL: x\n";
        assert_eq!(full_label(label), "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\nLABEL: x\n");
    }
}
