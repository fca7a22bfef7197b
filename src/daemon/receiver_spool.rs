//! The segment being received: in memory, or in a private spool file, until it is stored.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::Shared;
use super::{mark_durable, pg};
use crate::error::{Code, Fail, Result};
use crate::ops::push::SINGLE_PUT_MAX;
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::walfile::WalFile;
use crate::repo::layout;

/// Received WAL is gathered up to this much before it is written to the spool file, for
/// segments too large to hold in memory.
const WRITE_CHUNK: usize = 1 << 20;

/// The segment being received, zeros beyond what arrived (as pg_receivewal leaves a
/// `.partial`). A segment of at most [`SINGLE_PUT_MAX`] that arrives in order stays in
/// memory, from where it is sealed: no spool file to write and read back. Otherwise (larger
/// segments, or WAL that jumps) a spool file of the segment's full size takes it, with up
/// to [`WRITE_CHUNK`] gathered before each write.
pub(super) struct Spooled {
    pub(super) id: SegmentId,
    path: PathBuf,
    /// The spool file, made at the first write.
    file: Option<Arc<std::fs::File>>,
    seg_size: u64,
    /// Gathered bytes, which belong at `pending_at` (an offset in the segment).
    pending: Vec<u8>,
    pending_at: u64,
    /// `pending` is an earlier segment's buffer: all of it is resident.
    reused: bool,
    /// Everything before this arrived.
    pub(super) received: Lsn,
}

impl Spooled {
    /// `buf`: an earlier segment's buffer to reuse.
    pub(super) fn create(dir: &Path, id: SegmentId, seg_size: u64, buf: Option<Vec<u8>>) -> Spooled {
        // One byte more than the segment: a whole segment in order is never written out.
        let reused = buf.is_some();
        let mut pending = buf.unwrap_or_default();
        pending.clear();
        pending.reserve(if seg_size <= SINGLE_PUT_MAX { seg_size as usize } else { WRITE_CHUNK });
        Spooled {
            id,
            path: dir.join(id.file_name(seg_size)),
            file: None,
            seg_size,
            pending,
            pending_at: 0,
            reused,
            received: Lsn(id.segno * seg_size),
        }
    }

    /// WAL has slowed down: a reused buffer, resident in full, gives way to a fresh one that
    /// holds only what arrived, so an idle daemon keeps no more than that.
    pub(super) fn settle_memory(&mut self) {
        if self.reused {
            let mut fresh = Vec::with_capacity(self.pending.capacity());
            fresh.extend_from_slice(&self.pending);
            self.pending = fresh;
            self.reused = false;
        }
    }

    /// `pending` is written out once it holds this much: never while a segment that fits one
    /// write has no spool file (one byte more than the segment), else every [`WRITE_CHUNK`].
    fn limit(&self) -> usize {
        if self.file.is_none() && self.seg_size <= SINGLE_PUT_MAX {
            self.seg_size as usize + 1
        } else {
            WRITE_CHUNK
        }
    }

    /// The whole segment is in `pending`, nothing in a spool file.
    fn in_memory(&self) -> bool {
        self.file.is_none() && self.pending_at == 0
    }

    pub(super) fn is_complete(&self) -> bool {
        self.received.0 == (self.id.segno + 1) * self.seg_size
    }

    /// Take as much of `data` (WAL from `at`) as belongs to this segment; returns how much.
    pub(super) async fn take(&mut self, at: Lsn, data: &[u8]) -> Result<usize> {
        let base = self.id.segno * self.seg_size;
        if at.0 < base || at.0 >= base + self.seg_size {
            return Err(pg(format!(
                "the server sent WAL at {at}, outside segment {}",
                self.id.file_name(self.seg_size)
            )));
        }
        let off = at.0 - base;
        if !self.pending.is_empty() && self.pending_at + self.pending.len() as u64 != off {
            self.write_pending().await?;
        }
        if self.pending.is_empty() {
            self.pending_at = off;
        }
        let n = data.len().min((self.seg_size - off) as usize);
        self.pending.extend_from_slice(&data[..n]);
        self.received = self.received.max(Lsn(at.0 + n as u64));
        if self.pending.len() >= self.limit() {
            self.write_pending().await?;
        }
        Ok(n)
    }

    async fn write_pending(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let (p, size) = (self.path.clone(), self.seg_size);
                let f = blocking(&self.path, move || {
                    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p)?;
                    f.set_len(size)?;
                    Ok(f)
                })
                .await?;
                self.file.insert(Arc::new(f)).clone()
            }
        };
        let data = std::mem::take(&mut self.pending);
        let at = self.pending_at;
        let mut data = blocking(&self.path, move || file.write_all_at(&data, at).map(|_| data)).await?;
        data.clear();
        self.pending = data;
        Ok(())
    }

    /// The complete segment, create-only, as `wal-push` stores it; then its `.stream` goes.
    /// Gives back the buffer of a segment held in memory.
    pub(super) async fn store_segment(mut self, shared: Arc<Shared>) -> Result<(Lsn, Option<Vec<u8>>)> {
        let (pushed, buf) = if self.in_memory() && self.pending.len() as u64 == self.seg_size {
            let name = self.id.file_name(self.seg_size);
            let (pushed, buf) =
                crate::ops::push::push_bytes(&shared.repo, &name, std::mem::take(&mut self.pending)).await?;
            (pushed, Some(buf))
        } else {
            self.write_pending().await?;
            (crate::ops::push::push_file(&shared.repo, &self.path).await?, None)
        };
        if pushed.outcome == crate::repo::Pushed::Stored {
            metrics::counter!("tidewal_wal_segments_archived_total").increment(1);
            metrics::counter!("tidewal_uploaded_bytes_total").increment(pushed.stored_bytes);
        }
        let streamed = layout::wal_object(&WalFile::Streamed(self.id), self.seg_size);
        shared.repo.store.delete(&streamed).await?;
        self.discard();
        mark_durable(&shared, self.id.tli, self.received);
        tracing::info!("streamed {}", self.id.file_name(self.seg_size));
        Ok((self.received, buf))
    }

    /// The segment so far, as `<segment>.stream` (replaced: it only grows).
    pub(super) async fn store_stream(&mut self, shared: &Shared) -> Result<Lsn> {
        let obj = layout::wal_object(&WalFile::Streamed(self.id), self.seg_size);
        let stored = if self.in_memory() {
            // Lent to the upload and taken back: the receiver waits for this store.
            let held = Arc::new(std::mem::take(&mut self.pending));
            let zeros = std::io::repeat(0).take(self.seg_size - held.len() as u64);
            let stored =
                shared.repo.replace_stream(&obj, std::io::Cursor::new(ArcBytes(held.clone())).chain(zeros)).await;
            self.pending = Arc::try_unwrap(held).unwrap_or_else(|a| a.to_vec());
            stored?
        } else {
            self.write_pending().await?;
            // A descriptor of its own: reading moves the file offset.
            let file = std::fs::File::open(&self.path).map_err(|e| spool_error(&self.path, e))?;
            shared.repo.replace_stream(&obj, std::io::BufReader::with_capacity(1 << 20, file)).await?
        };
        metrics::counter!("tidewal_uploaded_bytes_total").increment(stored);
        mark_durable(shared, self.id.tli, self.received);
        tracing::debug!("stored {obj} up to {}", self.received);
        Ok(self.received)
    }

    /// Its spool file is not needed any more.
    pub(super) fn discard(&self) {
        if self.file.is_some() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A shared buffer as the bytes a `Cursor` reads.
struct ArcBytes(Arc<Vec<u8>>);

impl AsRef<[u8]> for ArcBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// Make the spool (private: the default lives in the shared temporary directory, where
/// someone else could have put a directory or a link first) and drop the leftovers of an
/// earlier run: the slot replays them.
pub(super) fn clear_spool(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| spool_error(dir, e))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    for d in [dir.parent().unwrap_or(dir), dir] {
        let m = std::fs::symlink_metadata(d).map_err(|e| spool_error(d, e))?;
        if !m.is_dir() || m.uid() != me || m.mode() & 0o022 != 0 {
            return Err(spool_error(
                d,
                std::io::Error::other("not a directory of this user's that only it can write to"),
            ));
        }
    }
    for entry in std::fs::read_dir(dir).map_err(|e| spool_error(dir, e))?.flatten() {
        let _ = std::fs::remove_file(entry.path());
    }
    Ok(())
}

fn spool_error(path: &Path, e: std::io::Error) -> Fail {
    Fail::new(
        Code::Storage,
        format!("spool {}: {e} (daemon.spool must be a writable directory with room for one segment)", path.display()),
    )
}

/// File work off the reactor.
async fn blocking<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
        .map_err(|e| spool_error(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spool_file_takes_wal_up_to_the_segment_end() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1u64 << 20;
        let id = SegmentId { tli: 2, segno: 5 };
        let mut s = Spooled::create(dir.path(), id, seg, None);
        let base = 5 * seg;
        let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(s.take(Lsn(base), &data).await.unwrap(), data.len());
        assert!(!s.is_complete());
        // More than the segment holds: only its end is taken.
        assert_eq!(s.take(Lsn(base + 700_000), &data).await.unwrap(), seg as usize - 700_000);
        assert!(s.is_complete());
        assert_eq!(s.received, Lsn(6 * seg));
        assert!(s.take(Lsn(6 * seg), &data).await.is_err(), "WAL of the next segment was taken");
        s.write_pending().await.unwrap();
        let file = std::fs::read(dir.path().join("000000020000000000000005")).unwrap();
        assert_eq!(file.len() as u64, seg);
        assert_eq!(&file[..700_000], &data[..]);
        assert_eq!(&file[700_000..], &data[..seg as usize - 700_000]);
        s.discard();
        assert!(!dir.path().join("000000020000000000000005").exists());
    }

    #[test]
    fn the_spool_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("spool");
        let ours = base.join("7-slot");
        clear_spool(&ours).unwrap();
        std::fs::write(ours.join("000000010000000000000001"), b"old").unwrap();
        clear_spool(&ours).unwrap();
        assert_eq!(std::fs::read_dir(&ours).unwrap().count(), 0, "leftovers stay");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = clear_spool(&ours).unwrap_err();
        assert!(e.message.contains("only it can write"), "{e}");
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::remove_dir(&ours).unwrap();
        std::os::unix::fs::symlink(dir.path(), &ours).unwrap();
        assert!(clear_spool(&ours).is_err(), "a link was followed");
    }

    #[tokio::test]
    async fn a_partly_received_segment_is_zero_beyond_what_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1u64 << 20;
        let mut s = Spooled::create(dir.path(), SegmentId { tli: 1, segno: 0 }, seg, None);
        s.take(Lsn(0), &[7u8; 1000]).await.unwrap();
        s.write_pending().await.unwrap();
        let file = std::fs::read(&s.path).unwrap();
        assert_eq!(file.len() as u64, seg);
        assert!(file[..1000].iter().all(|&b| b == 7) && file[1000..].iter().all(|&b| b == 0));
    }

    #[tokio::test]
    async fn a_segment_that_arrives_in_order_stays_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1u64 << 20;
        let id = SegmentId { tli: 1, segno: 3 };
        // A reused buffer starts empty, whatever it held.
        let mut s = Spooled::create(dir.path(), id, seg, Some(vec![9u8; 100]));
        let data: Vec<u8> = (0..seg as u32).map(|i| (i % 253) as u8).collect();
        for (i, piece) in data.chunks(128 * 1024).enumerate() {
            s.take(Lsn(3 * seg + (i * 128 * 1024) as u64), piece).await.unwrap();
        }
        assert!(s.is_complete() && s.in_memory());
        assert!(s.pending == data, "the segment as it arrived");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "a spool file was written");
    }

    #[tokio::test]
    async fn wal_that_jumps_or_a_large_segment_goes_to_the_spool_file() {
        let dir = tempfile::tempdir().unwrap();
        let seg = 1u64 << 20;
        let mut s = Spooled::create(dir.path(), SegmentId { tli: 1, segno: 0 }, seg, None);
        s.take(Lsn(0), &[1u8; 1000]).await.unwrap();
        s.take(Lsn(5000), &[2u8; 1000]).await.unwrap();
        assert!(!s.in_memory());
        s.write_pending().await.unwrap();
        let file = std::fs::read(&s.path).unwrap();
        assert!(file[..1000].iter().all(|&b| b == 1) && file[1000..5000].iter().all(|&b| b == 0));
        assert!(file[5000..6000].iter().all(|&b| b == 2) && file[6000..].iter().all(|&b| b == 0));
        // Above what one write stores, a segment is written out as it arrives.
        let big = 2 * SINGLE_PUT_MAX;
        let mut b = Spooled::create(dir.path(), SegmentId { tli: 1, segno: 1 }, big, None);
        b.take(Lsn(big), &vec![3u8; WRITE_CHUNK + 10]).await.unwrap();
        assert!(b.file.is_some() && b.pending.len() < WRITE_CHUNK, "{} bytes held", b.pending.len());
    }
}
