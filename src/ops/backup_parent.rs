//! What an incremental backup builds on, and how. Server-side (PostgreSQL 17 and later with
//! `summarize_wal = on`): the newest backup's manifest is uploaded and the server sends only
//! changed blocks. Client-side (every other server): the server sends everything, and each
//! archive is compared on the way with the file index of the newest backup that has one
//! (`repo/tar_delta.rs`), so only what changed is stored.

use std::sync::{Arc, Mutex};

use crate::error::{Code, Fail, Result};
use crate::pg::replication::ReplConn;
use crate::repo::catalog::{BackupInfo, Increment};
use crate::repo::file_index::{self, FileIndex};
use crate::repo::manifest::FileSum;
use crate::repo::tar_delta::{Rewritten, TarDelta};
use crate::repo::{layout, Repo, StreamFilter};

pub(super) struct Parent {
    pub info: BackupInfo,
    pub how: Increment,
    /// Client-side: the parent's file index.
    pub index: Option<Arc<FileIndex>>,
}

/// The parent of an incremental backup, refused (saying what to do) where none can be taken.
/// `client_side`: compare on the client even where the server could send changed blocks.
pub(super) async fn choose(repo: &Repo, conn: &mut ReplConn, client_side: bool) -> Result<Parent> {
    let usage = |m: String| Fail::new(Code::Usage, m);
    let major: u32 = conn.server_version.split(['.', ' ']).next().and_then(|m| m.parse().ok()).unwrap_or(0);
    // Rebuilding files from a chain assumes PostgreSQL's default block size.
    let block_size = show(conn, "block_size").await?;
    if block_size != "8192" {
        return Err(usage(format!(
            "incremental backups need the default block_size (8192); this server was built with {block_size}: take full backups"
        )));
    }
    let server_side = !client_side
        && major >= 17
        && show(conn, "summarize_wal").await? == "on"
        && show(conn, "segment_size").await? == "1GB";
    let backups = crate::repo::catalog::list_backups(repo).await?;
    if server_side {
        let info = backups.last().cloned().ok_or_else(|| {
            usage(
                "an incremental backup builds on an earlier one, and the repository has none: run tidewal backup first"
                    .into(),
            )
        })?;
        let manifest = repo.open_bytes(&layout::backup_object(&info.id, "backup_manifest")).await?;
        conn.upload_manifest(&manifest).await.map_err(|e| {
            Fail::new(Code::Postgres, format!("the server refused backup {}'s manifest to build on: {e}", info.id))
        })?;
        return Ok(Parent { info, how: Increment::Server, index: None });
    }
    let info = backups.iter().rev().find(|b| has_index(b)).cloned().ok_or_else(|| {
        usage(format!(
            "an incremental backup builds on an earlier backup's file index, and no backup in the repository has one ({}): run tidewal backup first",
            match backups.len() {
                0 => "it has no backups".to_string(),
                n => format!("its {n} backups were taken by an earlier tidewal, or are PostgreSQL's own incrementals"),
            }
        ))
    })?;
    let bytes = repo.open_bytes(&layout::backup_object(&info.id, file_index::NAME)).await?;
    let index = FileIndex::decode(&bytes)
        .map_err(|e| Fail::new(Code::Integrity, format!("backup {}'s {}: {e}", info.id, file_index::NAME)))?;
    Ok(Parent { info, how: Increment::Client, index: Some(Arc::new(index)) })
}

pub(super) fn has_index(b: &BackupInfo) -> bool {
    b.objects.iter().any(|o| o.name.rsplit('/').next() == Some(file_index::NAME))
}

async fn show(conn: &mut ReplConn, name: &str) -> Result<String> {
    let rows = conn.simple_query(&format!("SHOW {name}")).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    Ok(rows.first().and_then(|r| r.first()).cloned().flatten().unwrap_or_default())
}

/// The rewriting of one archive (`base.tar`, `<oid>.tar`), shared between the sealer's
/// thread that feeds it and the backup that collects its index at the end.
pub(super) struct Delta(Arc<Mutex<TarDelta>>);

impl Delta {
    /// For an archive the server announced, unless it is not a tar archive.
    pub fn for_archive(name: &str, parent: Option<&Arc<FileIndex>>, new_sum: fn() -> FileSum) -> Option<Delta> {
        let prefix = match name {
            "base.tar" => String::new(),
            n => format!("pg_tblspc/{}/", n.strip_suffix(".tar")?),
        };
        Some(Delta(Arc::new(Mutex::new(TarDelta::new(&prefix, parent.cloned(), new_sum)))))
    }

    pub fn filter(&self) -> StreamFilter {
        let d = self.0.clone();
        Box::new(move |input: &[u8], out: &mut Vec<u8>| {
            d.lock().unwrap_or_else(std::sync::PoisonError::into_inner).feed(input, out).map_err(std::io::Error::other)
        })
    }

    pub fn finish(self) -> Result<Rewritten> {
        let inner = Arc::try_unwrap(self.0)
            .map_err(|_| Fail::new(Code::Internal, "an archive's rewrite is still in use"))?
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.finish().map_err(|e| Fail::new(Code::Postgres, e))
    }
}
