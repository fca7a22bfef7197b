//! Streaming mode: follow the server's WAL over a physical replication slot. The current
//! segment is kept in memory; every flush interval it is stored as `<segment>.partial`
//! (replaced each time), and the moment it is complete it is stored as the segment itself
//! (create-only: identical to what `archive_command` stores, so both modes can run) and the
//! `.partial` removed. The slot's flush position is confirmed to the server only after the
//! store confirmed the write (DESIGN.md §5 rule 3), so the server keeps every byte until it
//! is safe, and a restart resumes from the slot.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::replication::{ReplConn, WalEvent};
use crate::pg::walfile::WalFile;
use crate::repo::layout;

pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let pg = |e: String| Fail::new(Code::Postgres, e);
    let settings = &shared.settings;
    let slot = settings.daemon.slot.clone();
    let seg = shared.repo.identity.wal_segment_size;
    let cfg = crate::pg::sql::resolve_config(settings.conninfo.as_deref(), true).map_err(pg)?;
    let mut conn = ReplConn::connect(&cfg).await.map_err(pg)?;
    let ident = conn.identify_system().await.map_err(pg)?;
    shared.repo.ensure_cluster(ident.system_identifier, "the server")?;
    let restart = match conn.read_replication_slot(&slot).await.map_err(pg)? {
        Some((lsn, _)) => lsn,
        None => {
            conn.create_physical_slot(&slot).await.map_err(pg)?;
            tracing::info!("created replication slot {slot}");
            conn.read_replication_slot(&slot).await.map_err(pg)?.map(|(l, _)| l).unwrap_or(ident.xlogpos)
        }
    };
    let tli = ident.timeline;
    if tli > 1 {
        store_history(&shared, &mut conn, tli).await?;
    }
    // From the segment that holds the slot's position: the server kept everything from there.
    let restart = if restart.0 == 0 { ident.xlogpos } else { restart };
    let mut cur = SegmentId::containing(tli, restart, seg);
    let start = Lsn(cur.segno * seg);
    conn.start_replication(&slot, start, tli).await.map_err(pg)?;
    tracing::info!("streaming WAL from {start} on timeline {tli} through slot {slot}");
    let mut buf = vec![0u8; seg as usize];
    let mut received = start;
    let mut durable = start;
    let interval = settings.daemon.flush_interval;
    let mut last_flush = Instant::now();
    loop {
        let event = tokio::select! {
            _ = cancel.cancelled() => {
                // What arrived is stored before stopping, and confirmed.
                if received > durable {
                    durable = store_partial(&shared, cur, &buf, received).await?;
                    conn.send_status(received, durable, false).await.map_err(pg)?;
                }
                return Ok(());
            }
            e = tokio::time::timeout(interval.saturating_sub(last_flush.elapsed()), conn.next_wal_event()) => e,
        };
        match event {
            Ok(Ok(WalEvent::Data { start, data })) => {
                let mut at = start;
                let mut data: Bytes = data;
                while !data.is_empty() {
                    let seg_of = at.0 / seg;
                    if seg_of != cur.segno {
                        return Err(Fail::new(
                            Code::Postgres,
                            format!("the server sent WAL at {at}, outside segment {}", cur.file_name(seg)),
                        ));
                    }
                    let off = (at.0 % seg) as usize;
                    let n = data.len().min(seg as usize - off);
                    buf[off..off + n].copy_from_slice(&data[..n]);
                    data = data.slice(n..);
                    at = Lsn(at.0 + n as u64);
                    received = received.max(at);
                    if off + n == seg as usize {
                        durable = store_segment(&shared, cur, &buf).await?;
                        conn.send_status(received, durable, false).await.map_err(pg)?;
                        buf.fill(0);
                        cur = SegmentId { tli, segno: cur.segno + 1 };
                        last_flush = Instant::now();
                    }
                }
            }
            Ok(Ok(WalEvent::Keepalive { reply, .. })) => {
                if reply {
                    conn.send_status(received, durable, false).await.map_err(pg)?;
                }
            }
            Ok(Ok(WalEvent::EndOfTimeline { next_tli, next_start })) => {
                if received > durable {
                    store_partial(&shared, cur, &buf, received).await?;
                }
                tracing::info!("timeline {tli} ended; timeline {next_tli} starts at {next_start}: reconnecting");
                return Ok(());
            }
            Ok(Err(e)) => {
                // The connection is gone: keep what did arrive before reporting it.
                if received > durable {
                    store_partial(&shared, cur, &buf, received).await?;
                }
                return Err(pg(e));
            }
            Err(_) => {} // the flush interval passed
        }
        if last_flush.elapsed() >= interval {
            if received > durable {
                durable = store_partial(&shared, cur, &buf, received).await?;
                conn.send_status(received, durable, false).await.map_err(pg)?;
            }
            last_flush = Instant::now();
        }
    }
}

/// A complete segment: stored create-only; its `.partial` goes.
async fn store_segment(shared: &Shared, s: SegmentId, buf: &[u8]) -> Result<Lsn> {
    let seg = shared.repo.identity.wal_segment_size;
    let obj = layout::wal_object(&WalFile::Segment(s), seg);
    let (sealed, digest) = seal(shared, &obj, buf).await?;
    let len = sealed.len() as u64;
    let outcome = shared.repo.push_sealed(&obj, sealed, digest).await?;
    if outcome == crate::repo::Pushed::Stored {
        metrics::counter!("tidewal_wal_segments_archived_total").increment(1);
        metrics::counter!("tidewal_uploaded_bytes_total").increment(len);
    }
    shared.repo.store.delete(&layout::wal_object(&WalFile::Partial(s), seg)).await?;
    let end = Lsn((s.segno + 1) * seg);
    shared.streamed_to.fetch_max(end.0, Ordering::Relaxed);
    tracing::info!("streamed {}", s.file_name(seg));
    Ok(end)
}

/// The segment so far, as `<segment>.partial` (replaced each time: it only grows).
async fn store_partial(shared: &Shared, s: SegmentId, buf: &[u8], received: Lsn) -> Result<Lsn> {
    let seg = shared.repo.identity.wal_segment_size;
    let obj = layout::wal_object(&WalFile::Partial(s), seg);
    let (sealed, _) = seal(shared, &obj, buf).await?;
    let len = sealed.len() as u64;
    shared.repo.store.put(&obj, Bytes::from(sealed)).await?;
    metrics::counter!("tidewal_uploaded_bytes_total").increment(len);
    shared.streamed_to.fetch_max(received.0, Ordering::Relaxed);
    tracing::debug!("stored {} up to {received}", obj);
    Ok(received)
}

async fn seal(shared: &Shared, obj: &str, buf: &[u8]) -> Result<(Vec<u8>, crate::codec::Digest)> {
    let data = buf.to_vec();
    let key = shared.repo.keys.write_key().cloned();
    let opts = shared.repo.seal_options(None);
    let name = obj.to_string();
    tokio::task::spawn_blocking(move || crate::codec::seal_to_vec(&data, key.as_ref(), &name, opts))
        .await
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
        .map(|s| (s.out, s.digest))
        .map_err(|e| Fail::new(Code::Internal, format!("sealing {obj}: {e}")))
}

/// History files arrive through the stream's side channel, not as WAL.
async fn store_history(shared: &Shared, conn: &mut ReplConn, tli: u32) -> Result<()> {
    let (name, content) = conn.timeline_history(tli).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    let obj = layout::wal_object(&WalFile::History(tli), shared.repo.identity.wal_segment_size);
    let (sealed, digest) = seal(shared, &obj, &content).await?;
    shared.repo.push_sealed(&obj, sealed, digest).await?;
    tracing::debug!("stored {name}");
    Ok(())
}
