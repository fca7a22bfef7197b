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

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::{Code, Fail, Result};
use crate::pg::history::{parse_history, resume_point, timeline_of, HistoryEntry};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::replication::{ReplConn, WalEvent};
use crate::pg::walfile::WalFile;
use crate::repo::catalog::wal_end_on_history;
use crate::repo::layout;

#[path = "receiver_spool.rs"]
mod spool;
use spool::{clear_spool, Spooled};

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

/// Tell the monitor (and a later reconnect) how far the repository has this timeline.
fn mark_durable(shared: &Shared, tli: u32, end: Lsn) {
    let mut streamed = super::lock(&shared.streamed);
    if streamed.is_none_or(|(t, l)| tli > t || (tli == t && end > l)) {
        *streamed = Some((tli, end));
    }
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
