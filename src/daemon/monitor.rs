//! Backup lag and repository figures. Lag is the age of the oldest WAL byte the server has
//! written that is not yet durable in the repository: the server's insert position is
//! sampled every second, and the lag is how long ago the first sample beyond the durable
//! position was taken (0 when everything written is durable, as in an idle cluster).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

use super::scheduler::unix;
use super::Shared;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};

/// Samples of (when, insert position), oldest first (pure).
#[derive(Debug, Default)]
pub struct LagTracker {
    samples: VecDeque<(SystemTime, Lsn)>,
}

impl LagTracker {
    /// Record that by `at` the server had written up to `lsn`.
    pub fn observe(&mut self, at: SystemTime, lsn: Lsn) {
        if self.samples.back().is_none_or(|(_, l)| lsn > *l) {
            self.samples.push_back((at, lsn));
            if self.samples.len() > 100_000 {
                self.samples.pop_front();
            }
        }
    }

    /// Seconds and bytes of WAL not yet durable, given what is durable up to `durable`.
    pub fn lag(&mut self, durable: Lsn, now: SystemTime) -> (f64, u64) {
        while self.samples.front().is_some_and(|(_, l)| *l <= durable) {
            self.samples.pop_front();
        }
        let newest = self.samples.back().map(|(_, l)| *l).unwrap_or(durable);
        match self.samples.front() {
            Some((t, _)) => {
                (now.duration_since(*t).unwrap_or_default().as_secs_f64(), newest.0.saturating_sub(durable.0))
            }
            None => (0.0, 0),
        }
    }
}

/// How far the server has WAL: written on a primary, received or replayed on a standby
/// (where `pg_current_wal_lsn()` is an error).
const SERVER_WAL_LSN: &str = "CASE WHEN pg_is_in_recovery() \
     THEN coalesce(greatest(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()), '0/0') \
     ELSE pg_current_wal_lsn() END";
/// The timeline of that WAL, as an int4.
const SERVER_TIMELINE: &str = "CASE WHEN pg_is_in_recovery() \
     THEN coalesce((SELECT received_tli FROM pg_stat_wal_receiver), (SELECT timeline_id FROM pg_control_checkpoint())) \
     ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int4 END";

/// Sample the server every second and publish the lag.
pub async fn run(shared: Arc<Shared>, cancel: CancellationToken) -> Result<()> {
    let client =
        crate::pg::sql::connect(shared.settings.conninfo.as_deref()).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    let seg = shared.repo.identity.wal_segment_size;
    let mut tracker = LagTracker::default();
    let mut trimmed = std::time::Instant::now();
    // The archiver's last durable position, kept for when its last file names no segment.
    let mut archiver_saw = (0u32, Lsn(0));
    let mut quiet = Quiet::default();
    loop {
        let row = client
            .query_one(
                &format!(
                    "SELECT ({SERVER_WAL_LSN})::text, {SERVER_TIMELINE}, \
                     coalesce(last_archived_wal, ''), coalesce(extract(epoch FROM last_archived_time)::float8, 0) \
                     FROM pg_stat_archiver"
                ),
                &[],
            )
            .await
            .map_err(|e| Fail::new(Code::Postgres, crate::pg::sql::error_chain(&e)))?;
        let now = SystemTime::now();
        let current: Lsn = row.get::<_, String>(0).parse().map_err(|e: String| Fail::new(Code::Postgres, e))?;
        let tli = row.get::<_, i32>(1) as u32;
        let archived: String = row.get(2);
        let archived_at: f64 = row.get(3);
        tracker.observe(now, current);
        // Durable: the end of the server's last archived segment on this timeline, carried on
        // through the segments the daemon stored ahead of the archiver.
        let mut durable = Lsn(0);
        match archived_segment(&archived, seg) {
            Some(s) if s.tli == tli => durable = Lsn((s.segno + 1) * seg),
            Some(_) => {}
            // A history file: what was archived before it still is.
            None if archiver_saw.0 == tli => durable = archiver_saw.1,
            None => {}
        }
        archiver_saw = (tli, durable);
        {
            let ahead = super::lock(&shared.pushed_ahead);
            while ahead.contains(&SegmentId { tli, segno: durable.0 / seg }) && durable.0 > 0 {
                durable = Lsn(durable.0 + seg);
            }
        }
        if let Some((_, end)) = *super::lock(&shared.streamed) {
            durable = durable.max(end);
        }
        if quiet.check(&shared, durable, current, tli, seg).await {
            durable = current;
        }
        let (secs, bytes) = tracker.lag(durable, now);
        metrics::gauge!("tidewal_wal_archive_lag_seconds").set(secs);
        metrics::gauge!("tidewal_wal_archive_lag_bytes").set(bytes as f64);
        if archived_at > 0.0 {
            metrics::gauge!("tidewal_last_archived_wal_timestamp_seconds").set(archived_at);
        }
        let slot_warning = if shared.settings.daemon.stream { slot_retention(&client, &shared).await? } else { None };
        {
            let mut st = super::lock(&shared.state);
            st.lag_seconds = Some(secs);
            st.lag_bytes = Some(bytes);
            st.server_error = None;
            st.slot_warning = slot_warning;
        }
        if trimmed.elapsed() > Duration::from_secs(10) {
            release_memory();
            trimmed = std::time::Instant::now();
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Whether the WAL between the durable position (a segment's start) and the server's
/// write position holds only running-transactions records (`pg::wal_records`): read from
/// the server's `pg_wal` when it is on this host, once per pair of positions.
#[derive(Default)]
struct Quiet {
    last: Option<((Lsn, Lsn), bool)>,
}

impl Quiet {
    async fn check(&mut self, shared: &Shared, durable: Lsn, current: Lsn, tli: u32, seg: u64) -> bool {
        const PAGE: u64 = 8192;
        let Some(pg_wal) = &shared.local_pg_wal else { return false };
        if current <= durable || durable.0 % seg != 0 || current.0 - durable.0 > PAGE {
            return false;
        }
        if let Some((_, answer)) = self.last.filter(|(at, _)| *at == (durable, current)) {
            return answer;
        }
        let path = pg_wal.join(SegmentId { tli, segno: durable.0 / seg }.file_name(seg));
        let len = (current.0 - durable.0) as usize;
        let read = async {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; len];
            tokio::fs::File::open(&path).await?.read_exact(&mut buf).await?;
            Ok::<_, std::io::Error>(buf)
        };
        let answer = read.await.is_ok_and(|b| crate::pg::wal_records::only_standby_snapshots(&b, durable.0));
        self.last = Some(((durable, current), answer));
        answer
    }
}

/// The segment `pg_stat_archiver.last_archived_wal` vouches for (pure): a segment is archived
/// whole; a backup history file (`<segment>.<offset>.backup`) sorts right after its start
/// segment, and PostgreSQL archives in name order, so that segment and all before it are.
/// A timeline history file says nothing about segments.
pub fn archived_segment(name: &str, seg: u64) -> Option<SegmentId> {
    let segment = match name.strip_suffix(".backup") {
        Some(backup) => backup.split('.').next()?,
        None => name,
    };
    SegmentId::parse(segment, seg).ok()
}

/// Hand freed memory back to the system: after a backup or a burst of uploads, glibc keeps
/// the freed buffers and the daemon's resident size would stay at its peak.
fn release_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// WAL the streaming slot holds back on the server, against `max_slot_wal_keep_size`: a slot
/// nobody reads fills the disk (or, with a limit, is invalidated and streaming breaks).
async fn slot_retention(client: &tokio_postgres::Client, shared: &Shared) -> Result<Option<String>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT pg_wal_lsn_diff({SERVER_WAL_LSN}, restart_lsn)::float8, \
                 pg_size_bytes(current_setting('max_slot_wal_keep_size'))::float8 \
                 FROM pg_replication_slots WHERE slot_name = $1 AND restart_lsn IS NOT NULL"
            ),
            &[&shared.settings.daemon.slot],
        )
        .await
        .map_err(|e| Fail::new(Code::Postgres, crate::pg::sql::error_chain(&e)))?;
    let Some(row) = row else { return Ok(None) };
    let (held, limit): (f64, f64) = (row.get(0), row.get(1));
    metrics::gauge!("tidewal_slot_retained_wal_bytes").set(held);
    // The disk pg_wal lives on, when the daemon runs beside the server.
    let free = shared.local_pg_wal.as_deref().and_then(free_bytes);
    let warning = slot_warning(&shared.settings.daemon.slot, held, limit, free);
    if let Some(w) = &warning {
        tracing::warn!("{w}");
    }
    Ok(warning)
}

/// Too much WAL held back by the slot (pure): over 80% of `max_slot_wal_keep_size` (when
/// set), or as much as the free space left on pg_wal's file system.
pub fn slot_warning(slot: &str, held: f64, limit: f64, free: Option<f64>) -> Option<String> {
    let mib = |b: f64| b / 1048576.0;
    if limit > 0.0 && held > 0.8 * limit {
        return Some(format!(
            "slot {slot} holds {:.0} MiB of WAL, over 80% of max_slot_wal_keep_size ({:.0} MiB)",
            mib(held),
            mib(limit)
        ));
    }
    match free {
        Some(f) if held > f => Some(format!(
            "slot {slot} holds {:.0} MiB of WAL, more than the {:.0} MiB still free for pg_wal",
            mib(held),
            mib(f)
        )),
        _ => None,
    }
}

fn free_bytes(dir: &std::path::Path) -> Option<f64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a statvfs the call fills in.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as f64 * st.f_frsize as f64)
}

/// Backups in the repository → metrics and health; returns when the newest finished.
pub async fn refresh_repo_stats(shared: &Shared) -> Result<Option<SystemTime>> {
    let backups = crate::repo::catalog::list_backups(&shared.repo).await?;
    let newest = backups.iter().filter_map(|b| b.finished()).max();
    let oldest = backups.iter().filter_map(|b| b.finished()).min();
    metrics::gauge!("tidewal_repo_backups").set(backups.len() as f64);
    if let Some(t) = newest {
        metrics::gauge!("tidewal_last_base_backup_timestamp_seconds").set(unix(t));
    }
    if let Some(t) = oldest {
        metrics::gauge!("tidewal_repo_oldest_recoverable_timestamp_seconds").set(unix(t));
    }
    super::lock(&shared.state).last_backup = newest;
    Ok(newest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_warnings() {
        let gib = 1024.0 * 1048576.0;
        assert!(slot_warning("s", 0.5 * gib, 1.0 * gib, None).is_none());
        assert!(slot_warning("s", 0.9 * gib, 1.0 * gib, None).unwrap().contains("80%"));
        assert!(slot_warning("s", 5.0 * gib, -1.0, Some(10.0 * gib)).is_none());
        assert!(slot_warning("s", 5.0 * gib, -1.0, Some(4.0 * gib)).unwrap().contains("still free"));
        assert!(free_bytes(std::path::Path::new("/")).is_some_and(|f| f > 0.0));
    }

    #[test]
    fn the_archived_segment_of_each_kind_of_file() {
        let seg = 16 << 20;
        let s = |n: &str| archived_segment(n, seg).map(|s| (s.tli, s.segno));
        assert_eq!(s("000000010000000000000003"), Some((1, 3)));
        // Right after a base backup the last archived file is its backup history file.
        assert_eq!(s("000000010000000000000005.00000028.backup"), Some((1, 5)));
        assert_eq!(s("00000002.history"), None);
        assert_eq!(s(""), None);
        assert_eq!(s("000000010000000000000005.partial"), None);
    }

    #[test]
    fn lag_is_the_age_of_the_oldest_byte_not_durable() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + s);
        let mut l = LagTracker::default();
        l.observe(t(0), Lsn(100));
        assert_eq!(l.lag(Lsn(100), t(5)), (0.0, 0), "idle: everything written is durable");
        l.observe(t(10), Lsn(200));
        l.observe(t(11), Lsn(200)); // no new WAL: not a new sample
        l.observe(t(20), Lsn(300));
        assert_eq!(l.lag(Lsn(100), t(25)), (15.0, 200));
        // Part of it became durable: the lag is now the age of the next byte.
        assert_eq!(l.lag(Lsn(200), t(26)), (6.0, 100));
        assert_eq!(l.lag(Lsn(300), t(27)), (0.0, 0));
    }
}
