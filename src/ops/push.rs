//! Storing one file PostgreSQL archives: `wal-push`, the daemon's archiver and its receiver.

use std::io::{Read, Seek};
use std::path::Path;
use std::time::Instant;

use crate::codec::{seal_hashed_to_vec, seal_to_vec};
use crate::error::{Code, Fail, Result};
use crate::pg::walfile::{check_backup_label, check_history, check_segment, Expect, WalFile};
use crate::repo::{layout, Pushed, Repo};

/// Largest history or backup-label file accepted; real ones are a few hundred bytes.
const MAX_SMALL_FILE: u64 = 1 << 20;
/// Segments up to this size are sealed in memory and sent with one create-only write.
pub const SINGLE_PUT_MAX: u64 = 32 << 20;

/// What one push did.
#[derive(Clone, Copy, Debug)]
pub struct PushReport {
    pub outcome: Pushed,
    pub plain_bytes: u64,
    pub stored_bytes: u64,
}

/// Check and store one file PostgreSQL archives. Shared by `wal-push` and the daemon, which
/// uploads `.ready` files ahead of the archiver (so `wal-push` then only confirms).
pub async fn push_file(repo: &Repo, path: &Path) -> Result<PushReport> {
    let started = Instant::now();
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
    let obj = layout::wal_object(&kind, seg_size);
    if let (WalFile::Segment(seg) | WalFile::Partial(seg), true) = (&kind, seg_size > SINGLE_PUT_MAX) {
        return push_large(repo, path, &name, &obj, *seg, &want, started).await;
    }
    let read_err = |e: std::io::Error| Fail::new(Code::BadInput, format!("cannot read {}: {e}", path.display()));
    let data = tokio::fs::read(path).await.map_err(read_err)?;
    tracing::debug!("{name} read after {} ms", started.elapsed().as_millis());
    push_checked(repo, &name, kind, obj, data, false, started).await.map(|(r, _)| r)
}

/// Check and store a file PostgreSQL archives from memory (the receiver holds each segment
/// as it arrives); the buffer comes back for reuse. Segments must be at most
/// [`SINGLE_PUT_MAX`].
pub async fn push_bytes(repo: &Repo, name: &str, data: Vec<u8>) -> Result<(PushReport, Vec<u8>)> {
    let started = Instant::now();
    let seg_size = repo.identity.wal_segment_size;
    let kind = WalFile::parse(name, seg_size).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    let obj = layout::wal_object(&kind, seg_size);
    push_checked(repo, name, kind, obj, data, true, started).await
}

/// `keep`: the caller wants the buffer back; otherwise it is freed once sealed, so an
/// upload waiting on a far-away store holds only the sealed bytes.
async fn push_checked(
    repo: &Repo,
    name: &str,
    kind: WalFile,
    obj: String,
    data: Vec<u8>,
    keep: bool,
    started: Instant,
) -> Result<(PushReport, Vec<u8>)> {
    let id = &repo.identity;
    let want = Expect { system_identifier: id.system_id(), seg_size: id.wal_segment_size, pg_major: id.pg_major() };
    let bad = |m: String| Fail::new(Code::BadInput, m);
    match &kind {
        WalFile::Segment(seg) | WalFile::Partial(seg) | WalFile::Streamed(seg) => {
            check_segment(name, *seg, &data, data.len() as u64, &want).map_err(bad)?;
        }
        WalFile::History(tli) => check_history(name, *tli, &data).map_err(bad)?,
        WalFile::BackupLabel { .. } => check_backup_label(name, &data).map_err(bad)?,
    }

    // Hashing, compression and encryption are CPU work: keep them off the reactor. The digest
    // comes first: when the daemon (or an earlier attempt) stored this file already, reading
    // the stored header is all that is left to do. That look is free on a local disk; on a
    // remote store it is two round trips per file, so there the create-only write goes
    // first and the stored object is read only when the write is refused.
    let plain_bytes = data.len() as u64;
    let (known, data) = if repo.store.is_local() {
        let (digest, data) = tokio::task::spawn_blocking(move || (*blake3::hash(&data).as_bytes(), data))
            .await
            .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        if let Some(outcome) = repo.already_stored(&obj, &digest).await? {
            report(name, outcome, "", "", started);
            return Ok((PushReport { outcome, plain_bytes, stored_bytes: 0 }, data));
        }
        (Some(digest), data)
    } else {
        (None, data)
    };
    let key = repo.keys.write_key().cloned();
    let obj_name = obj.clone();
    let lz4 = repo.lz4;
    // Hashed once: by the look above, or by the sealing itself, beside the compression.
    let (sealed, data) = tokio::task::spawn_blocking(move || {
        let sealed = match known {
            Some(d) => seal_hashed_to_vec(&data, key.as_ref(), &obj_name, lz4, d),
            None => seal_to_vec(
                &data,
                key.as_ref(),
                &obj_name,
                crate::codec::SealOptions { lz4, digest: None, chain: false },
            ),
        };
        (sealed, data)
    })
    .await
    .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    let crate::codec::Sealed { out: sealed, digest, .. } =
        sealed.map_err(|e| Fail::new(Code::Internal, format!("sealing {name}: {e}")))?;
    let stored_bytes = sealed.len() as u64;
    let data = if keep { data } else { Vec::new() };
    tracing::debug!("{name} sealed after {} ms", started.elapsed().as_millis());
    let outcome = repo.push_sealed(&obj, sealed, digest).await?;
    report(name, outcome, "", &format!(" ({plain_bytes} bytes, {stored_bytes} stored)"), started);
    Ok((PushReport { outcome, plain_bytes, stored_bytes }, data))
}

/// Segments above SINGLE_PUT_MAX (`initdb --wal-segsize` up to 1 GiB) are hashed, then
/// sealed and uploaded as a stream, so memory stays bounded.
async fn push_large(
    repo: &Repo,
    path: &std::path::Path,
    name: &str,
    obj: &str,
    seg: crate::pg::lsn::SegmentId,
    want: &Expect,
    started: Instant,
) -> Result<PushReport> {
    let read_err = |e: std::io::Error| Fail::new(Code::BadInput, format!("cannot read {}: {e}", path.display()));
    let p = path.to_path_buf();
    let (first_page, len, digest) = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        let mut f = std::fs::File::open(&p)?;
        let mut first = vec![0u8; 8192];
        f.read_exact(&mut first)?;
        f.seek(std::io::SeekFrom::Start(0))?;
        let mut h = blake3::Hasher::new();
        h.update_reader(&mut f)?;
        Ok((first, f.metadata()?.len(), *h.finalize().as_bytes()))
    })
    .await
    .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
    .map_err(read_err)?;
    check_segment(name, seg, &first_page, len, want).map_err(|m| Fail::new(Code::BadInput, m))?;
    let file = std::fs::File::open(path).map_err(read_err)?;
    let outcome = repo.push_stream(obj, std::io::BufReader::with_capacity(1 << 20, file), digest).await?;
    report(name, outcome, "", &format!(" ({len} bytes, streamed)"), started);
    Ok(PushReport { outcome, plain_bytes: len, stored_bytes: 0 })
}

/// One log line per push; `via` (" via the daemon") is said on both outcomes, `sizes` only
/// when something was stored.
pub fn report(name: &str, outcome: Pushed, via: &str, sizes: &str, started: Instant) {
    let ms = started.elapsed().as_millis();
    match outcome {
        Pushed::Stored => tracing::info!("archived {name}{via}{sizes} in {ms} ms"),
        Pushed::AlreadyPresent => tracing::info!("{name} was already archived with identical content{via} ({ms} ms)"),
    }
}

fn kind_word(k: &WalFile) -> &'static str {
    match k {
        WalFile::History(_) => "timeline history",
        WalFile::BackupLabel { .. } => "backup label",
        _ => "WAL segment",
    }
}
