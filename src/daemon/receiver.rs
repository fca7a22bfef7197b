//! Streaming mode: follow the server's WAL over a physical replication slot. The segment
//! being received is held in memory (in a spool file when segments are larger than one
//! write takes, or when WAL arrives out of order); every flush interval (and when the
//! connection drops, or the daemon stops) it is stored as `<segment>.stream`, replaced each
//! time. The moment it is complete it is stored as the segment itself, through the same
//! create-only path as `wal-push` (so both modes can run: the repository sees one segment),
//! and the `.stream` copy is removed. The slot's flush position is confirmed to the server
//! only after the store confirmed the write (DESIGN.md §5 rule 3), so the server keeps every
//! byte until it is safe, and a restart resumes from the slot. At the end of a timeline
//! (the server, or its upstream, was promoted) it stores the new history file and goes on
//! on the next timeline, from the start of the segment that holds the switch.

use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::{Code, Fail, Result};
use crate::ops::push::SINGLE_PUT_MAX;
use crate::pg::history::{parse_history, resume_point, timeline_of, HistoryEntry};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::replication::{ReplConn, WalEvent};
use crate::pg::walfile::WalFile;
use crate::repo::catalog::wal_end_on_history;
use crate::repo::layout;

/// Received WAL is gathered up to this much before it is written to the spool file, for
/// segments too large to hold in memory.
const WRITE_CHUNK: usize = 1 << 20;

fn pg(e: String) -> Fail {
    Fail::new(Code::Postgres, e)
}

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let settings = &shared.settings;
    let slot = settings.daemon.slot.clone();
    let seg = shared.repo.identity.wal_segment_size;
    let cfg = crate::pg::sql::resolve_config(settings.conninfo.as_deref(), true).map_err(pg)?;
    let mut conn = ReplConn::connect(&cfg).await.map_err(pg)?;
    let ident = conn.identify_system().await.map_err(pg)?;
    shared.repo.ensure_cluster(ident.system_identifier, "the server")?;
    // After a reported gap, start over from what the server has: a slot made anew.
    let accept_gap = shared.accept_gap.swap(false, std::sync::atomic::Ordering::SeqCst);
    let (slot_pos, created) = match conn.read_replication_slot(&slot).await.map_err(pg)? {
        Some((lsn, _)) if lsn.0 != 0 && !accept_gap => (lsn, false),
        existing => {
            if existing.is_some() {
                // No position: invalidated by max_slot_wal_keep_size, or made without
                // reserving WAL. Either way it holds nothing for us.
                conn.drop_slot(&slot).await.map_err(pg)?;
            }
            conn.create_physical_slot(&slot).await.map_err(pg)?;
            tracing::info!("created replication slot {slot}");
            let lsn = conn.read_replication_slot(&slot).await.map_err(pg)?.map(|(l, _)| l);
            (lsn.filter(|l| l.0 != 0).unwrap_or(ident.xlogpos), true)
        }
    };
    let history = match ident.timeline {
        1 => Vec::new(),
        t => store_history(&shared, &mut conn, t).await?,
    };
    // A new slot (a failover to a server that had none, or a slot dropped by hand) holds WAL
    // only from about now: resume where the repository's WAL on this server's line of
    // history ends instead, so nothing in between is skipped. So does a slot found at start
    // that this daemon did not advance (made anew by an operator or failover tooling while
    // it was down), when it starts in a segment after that end. Where the server no longer
    // has that WAL, streaming fails with the gap reported below.
    let slot_segment = Lsn(slot_pos.0 - slot_pos.0 % seg);
    let resumed = match accept_gap {
        true => None,
        false => resume_from(&shared, ident.timeline, &history)
            .await?
            .filter(|p| *p < if created { slot_pos } else { slot_segment }),
    };
    // What the server was told is durable (or the repository is known to have): the
    // `.stream` copy is not replaced before the stream gets past it, and nothing lower is
    // confirmed, which would move the slot back.
    let confirmed = resumed.unwrap_or(slot_pos);
    if accept_gap {
        mark_durable(&shared, timeline_of(slot_pos, &history, ident.timeline), slot_pos);
    }
    if let Some(p) = resumed {
        let why = if created {
            "it was created anew: a failover?"
        } else {
            "this daemon did not advance it: made anew while the daemon was down?"
        };
        tracing::warn!(
            "slot {slot} starts at {slot_pos}, after the end of the repository's WAL at {p} ({why}): resuming from {p}"
        );
    }
    // From the start of the segment that holds the position (the server keeps whole
    // segments), on the timeline that position belongs to: an older one when the server was
    // promoted since, and then the server streams it up to the switch.
    let mut pos = Lsn({
        let l = resumed.unwrap_or(slot_pos).0;
        l - l % seg
    });
    let mut tli = timeline_of(pos, &history, ident.timeline);
    let spool = settings.daemon.spool.join(format!("{}-{slot}", ident.system_identifier));
    loop {
        conn.start_replication(&slot, pos, tli).await.map_err(pg)?;
        // The slot is ours now (a physical slot serves one connection), so is the spool.
        clear_spool(&spool)?;
        tracing::info!("streaming WAL from {pos} on timeline {tli} through slot {slot}");
        let followed = follow(&shared, &mut conn, &spool, tli, pos, confirmed, &cancel).await;
        match followed {
            // The server no longer has the WAL streaming must go on from (the message is
            // PostgreSQL's): say so loudly, start a base backup so that restores can reach
            // the present again, and start over from what the server has.
            Err(e) if crate::pg::replication::is_wal_removed(&e.message) => {
                let gap = format!(
                    "the server no longer has WAL from {pos}, where the repository's WAL ends ({e}): restores cannot pass {pos} until the next base backup, which starts now"
                );
                tracing::error!("{gap}");
                metrics::counter!("tidewal_wal_gaps_total").increment(1);
                super::lock(&shared.state).wal_gap = Some((gap.clone(), std::time::SystemTime::now()));
                shared.accept_gap.store(true, std::sync::atomic::Ordering::SeqCst);
                shared.backup_now.notify_one();
                return Err(Fail::new(Code::Postgres, gap));
            }
            Err(e) => return Err(e),
            Ok(None) => return Ok(()),
            Ok(Some((next_tli, next_start))) => {
                tracing::info!("timeline {tli} ended; timeline {next_tli} starts at {next_start}");
                store_history(&shared, &mut conn, next_tli).await?;
                tli = next_tli;
                pos = Lsn(next_start.0 - next_start.0 % seg);
            }
        }
    }
}

/// Where the repository's WAL on the server's line of history ends: known in this process
/// when it streamed before (kept across reloads and task restarts), else read from the
/// repository (and then remembered, so that a retry resumes there too): for a new slot, and
/// for one found at start, which something else may have made.
async fn resume_from(shared: &Shared, server_tli: u32, history: &[HistoryEntry]) -> Result<Option<Lsn>> {
    let known = *super::lock(&shared.streamed);
    match known {
        Some((t, end)) => {
            let p = resume_point(t, end, server_tli, history);
            if p.is_none() {
                tracing::error!(
                    "the server's history does not pass through timeline {t}, where streaming stopped at {end}: WAL after that point may be missing from the repository; take a base backup (tidewal backup --via-daemon)"
                );
            }
            Ok(p)
        }
        None => {
            let names = shared.repo.store.list("wal/").await?;
            let p = wal_end_on_history(&names, shared.repo.identity.wal_segment_size, server_tli, history);
            if let Some(p) = p {
                *super::lock(&shared.streamed) = Some((timeline_of(p, history, server_tli), p));
            }
            Ok(p)
        }
    }
}

/// Stream one timeline from `start` (a segment boundary), with WAL up to `confirmed`
/// already durable. `Some(next timeline, its start)` when the timeline ended, `None` when
/// cancelled; errors after storing what arrived.
///
/// A complete segment is stored while the next one arrives (one store at a time, so the
/// flush position still advances strictly in order, and only once the store confirmed).
/// Everything that stores the segment being received as `.stream` first waits for that
/// store: the position it confirms must not pass a segment that is not stored yet.
async fn follow(
    shared: &Arc<Shared>,
    conn: &mut ReplConn,
    spool: &Path,
    tli: u32,
    start: Lsn,
    confirmed: Lsn,
    cancel: &CancellationToken,
) -> Result<Option<(u32, Lsn)>> {
    let seg = shared.repo.identity.wal_segment_size;
    let mut cur = Spooled::create(spool, SegmentId::containing(tli, start, seg), seg, None);
    let mut durable = start.max(confirmed);
    let interval = shared.settings.daemon.flush_interval;
    let mut last_flush = Instant::now();
    let mut storing: Option<Storing> = None;
    // The buffer of the segment stored last, reused for the next one while WAL keeps coming
    // (a fresh 16 MiB costs page faults), let go once a flush interval passes without one.
    let mut spare: Option<Vec<u8>> = None;
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => {
                // What arrived is stored before stopping, and confirmed.
                durable = settle(&mut storing, durable, &mut spare).await?;
                if cur.received > durable {
                    durable = cur.store_stream(shared).await?;
                }
                conn.send_status(cur.received.max(durable), durable, false).await.map_err(pg)?;
                return Ok(None);
            }
            stored = async { storing.as_mut().expect("guarded").await }, if storing.is_some() => {
                storing = None;
                durable = joined(stored, &mut spare)?;
                conn.send_status(cur.received.max(durable), durable, false).await.map_err(pg)?;
                continue;
            }
            e = tokio::time::timeout(interval.saturating_sub(last_flush.elapsed()), conn.next_wal_event()) => e,
        };
        match event {
            Ok(Ok(WalEvent::Data { start, data })) => {
                let mut at = start;
                let mut data = &data[..];
                while !data.is_empty() {
                    let n = cur.take(at, data).await?;
                    data = &data[n..];
                    at = Lsn(at.0 + n as u64);
                    if cur.is_complete() {
                        durable = settle(&mut storing, durable, &mut spare).await?;
                        let next =
                            Spooled::create(spool, SegmentId { tli, segno: cur.id.segno + 1 }, seg, spare.take());
                        let done = std::mem::replace(&mut cur, next);
                        conn.send_status(done.received.max(durable), durable, false).await.map_err(pg)?;
                        storing = Some(tokio::spawn(done.store_segment(shared.clone())));
                        last_flush = Instant::now();
                    }
                }
            }
            Ok(Ok(WalEvent::Keepalive { reply, .. })) => {
                if reply {
                    conn.send_status(cur.received.max(durable), durable, false).await.map_err(pg)?;
                }
            }
            Ok(Ok(WalEvent::EndOfStream)) => {
                // The old timeline's last segment stays as its `.stream` copy; the new
                // timeline's copy of that segment, switch included, follows.
                durable = settle(&mut storing, durable, &mut spare).await?;
                if cur.received > durable {
                    cur.store_stream(shared).await?;
                }
                cur.discard();
                return conn.end_of_timeline().await.map(Some).map_err(pg);
            }
            Ok(Err(e)) => {
                // The connection is gone: keep what did arrive before reporting it.
                durable = settle(&mut storing, durable, &mut spare).await?;
                if cur.received > durable {
                    cur.store_stream(shared).await?;
                }
                return Err(pg(e));
            }
            Err(_) => {} // the flush interval passed
        }
        if last_flush.elapsed() >= interval {
            if cur.received > durable {
                settle(&mut storing, durable, &mut spare).await?;
                durable = cur.store_stream(shared).await?;
                conn.send_status(cur.received.max(durable), durable, false).await.map_err(pg)?;
            }
            spare = None;
            cur.settle_memory();
            last_flush = Instant::now();
        }
    }
}

/// The store of a complete segment, running while the next one arrives: how far the
/// repository then has the WAL, and the segment's buffer when it was held in memory.
type Storing = tokio::task::JoinHandle<Result<(Lsn, Option<Vec<u8>>)>>;

/// Wait for the store under way, if any: how far the repository has the WAL then.
async fn settle(storing: &mut Option<Storing>, durable: Lsn, spare: &mut Option<Vec<u8>>) -> Result<Lsn> {
    match storing.take() {
        Some(task) => joined(task.await, spare),
        None => Ok(durable),
    }
}

type Joined = std::result::Result<Result<(Lsn, Option<Vec<u8>>)>, tokio::task::JoinError>;

fn joined(r: Joined, spare: &mut Option<Vec<u8>>) -> Result<Lsn> {
    let (lsn, buf) = r.map_err(|e| Fail::new(Code::Internal, format!("storing a streamed segment: {e}")))??;
    if buf.is_some() {
        *spare = buf;
    }
    Ok(lsn)
}

/// The segment being received, zeros beyond what arrived (as pg_receivewal leaves a
/// `.partial`). A segment of at most [`SINGLE_PUT_MAX`] that arrives in order stays in
/// memory, from where it is sealed: no spool file to write and read back. Otherwise (larger
/// segments, or WAL that jumps) a spool file of the segment's full size takes it, with up
/// to [`WRITE_CHUNK`] gathered before each write.
struct Spooled {
    id: SegmentId,
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
    received: Lsn,
}

impl Spooled {
    /// `buf`: an earlier segment's buffer to reuse.
    fn create(dir: &Path, id: SegmentId, seg_size: u64, buf: Option<Vec<u8>>) -> Spooled {
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
    fn settle_memory(&mut self) {
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

    fn is_complete(&self) -> bool {
        self.received.0 == (self.id.segno + 1) * self.seg_size
    }

    /// Take as much of `data` (WAL from `at`) as belongs to this segment; returns how much.
    async fn take(&mut self, at: Lsn, data: &[u8]) -> Result<usize> {
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
    async fn store_segment(mut self, shared: Arc<Shared>) -> Result<(Lsn, Option<Vec<u8>>)> {
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
    async fn store_stream(&mut self, shared: &Shared) -> Result<Lsn> {
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
    fn discard(&self) {
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

/// Tell the monitor (and a later reconnect) how far the repository has this timeline.
fn mark_durable(shared: &Shared, tli: u32, end: Lsn) {
    let mut streamed = super::lock(&shared.streamed);
    if streamed.is_none_or(|(t, l)| tli > t || (tli == t && end > l)) {
        *streamed = Some((tli, end));
    }
}

/// Make the spool (private: the default lives in the shared temporary directory, where
/// someone else could have put a directory or a link first) and drop the leftovers of an
/// earlier run: the slot replays them.
fn clear_spool(dir: &Path) -> Result<()> {
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

/// History files arrive through the stream's side channel, not as WAL.
async fn store_history(shared: &Shared, conn: &mut ReplConn, tli: u32) -> Result<Vec<HistoryEntry>> {
    let (name, content) = conn.timeline_history(tli).await.map_err(pg)?;
    let text = String::from_utf8_lossy(&content).into_owned();
    let history = parse_history(&text).map_err(|e| pg(format!("{name} from the server: {e}")))?;
    let obj = layout::wal_object(&WalFile::History(tli), shared.repo.identity.wal_segment_size);
    let key = shared.repo.keys.write_key().cloned();
    let opts = shared.repo.seal_options(None);
    let o = obj.clone();
    let sealed = tokio::task::spawn_blocking(move || crate::codec::seal_to_vec(&content, key.as_ref(), &o, opts))
        .await
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
        .map_err(|e| Fail::new(Code::Internal, format!("sealing {obj}: {e}")))?;
    shared.repo.push_sealed(&obj, sealed.out, sealed.digest).await?;
    tracing::debug!("stored {name}");
    Ok(history)
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
