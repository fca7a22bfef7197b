//! `tidewal wal-push %p`: PostgreSQL's archive_command.

use std::path::PathBuf;
use std::time::Instant;

use crate::codec::seal_to_vec;
use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::pg::walfile::{check_backup_label, check_history, check_segment, Expect, WalFile};
use crate::repo::{layout, Pushed};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to archive (%p: a path relative to the data directory)
    pub path: PathBuf,
}

/// Largest history or backup-label file accepted; real ones are a few hundred bytes.
const MAX_SMALL_FILE: u64 = 1 << 20;

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let started = Instant::now();
    let path = &args.path;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Fail::new(Code::BadInput, format!("{} has no file name", path.display())))?
        .to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| Fail::new(Code::BadInput, format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(Fail::new(Code::BadInput, format!("{} is not a regular file", path.display())));
    }
    let repo = super::open_repo(settings).await?;
    tracing::debug!("repository opened after {} ms", started.elapsed().as_millis());
    let id = &repo.identity;
    let seg_size = id.wal_segment_size;
    let kind = WalFile::parse(&name, seg_size)
        .map_err(|e| Fail::new(Code::BadInput, format!("{e}: wal-push takes files that PostgreSQL archives (%p)")))?;
    let bad = |m: String| Fail::new(Code::BadInput, m);
    let want = Expect { system_identifier: id.system_id(), seg_size, pg_major: id.pg_major() };
    // Refuse wrong sizes before reading anything into memory.
    match &kind {
        WalFile::Segment(seg) | WalFile::Partial(seg) if meta.len() != seg_size => {
            check_segment(&name, *seg, &[], meta.len(), &want).map_err(bad)?;
        }
        k if !k.is_segment_sized() && meta.len() > MAX_SMALL_FILE => {
            return Err(bad(format!("{name} is {} bytes, too large for a {} file", meta.len(), kind_word(k))));
        }
        _ => {}
    }
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| Fail::new(Code::BadInput, format!("cannot read {}: {e}", path.display())))?;
    match &kind {
        WalFile::Segment(seg) | WalFile::Partial(seg) => {
            check_segment(&name, *seg, &data, data.len() as u64, &want).map_err(bad)?;
        }
        WalFile::History(tli) => check_history(&name, *tli, &data).map_err(bad)?,
        WalFile::BackupLabel { .. } => check_backup_label(&name, &data).map_err(bad)?,
    }
    let obj = layout::wal_object(&kind, seg_size);
    tracing::debug!("{name} read and checked after {} ms", started.elapsed().as_millis());

    // Hashing, compression and encryption are CPU work: keep them off the reactor.
    let key = repo.keys.write_key().cloned();
    let obj_name = obj.clone();
    let lz4 = repo.lz4;
    let (sealed, digest, plain_len) = tokio::task::spawn_blocking(move || {
        let opts = crate::codec::SealOptions { lz4, digest: None };
        seal_to_vec(&data, key.as_ref(), &obj_name, opts).map(|s| (s.out, s.digest, s.plain_len))
    })
    .await
    .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
    .map_err(|e| Fail::new(Code::Internal, format!("sealing {name}: {e}")))?;
    let sealed_len = sealed.len();
    tracing::debug!("{name} sealed after {} ms", started.elapsed().as_millis());
    match repo.push_sealed(&obj, sealed, digest).await? {
        Pushed::Stored => tracing::info!(
            "archived {name} ({plain_len} bytes, {sealed_len} stored) in {} ms",
            started.elapsed().as_millis()
        ),
        Pushed::AlreadyPresent => tracing::info!("{name} was already archived with identical content"),
    }
    Ok(())
}

fn kind_word(k: &WalFile) -> &'static str {
    match k {
        WalFile::History(_) => "timeline history",
        WalFile::BackupLabel { .. } => "backup label",
        _ => "WAL segment",
    }
}
