//! A base backup over the replication protocol, streamed into the
//! repository (sealed, multipart, bounded memory), complete only once the WAL it needs is
//! archived and `backup.json` is written last.

use std::time::{Duration, Instant, SystemTime};

use super::backup_parent;
use super::backup_parent::{Delta, Parent};
use super::prune::{find_leftovers, remove_object};
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::replication::{BackupEvent, ReplConn};
use crate::pg::sql;
use crate::pg::walfile::WalFile;
use crate::progress::Progress;
use crate::repo::catalog::{BackupInfo, Increment};
use crate::repo::clock::bounded_now;
use crate::repo::file_index::{self, FileIndex};
use crate::repo::manifest::FileSum;
use crate::repo::tar_delta::DeltaStats;
use crate::repo::{layout, ObjectWriter, Repo, StoredObject};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ManifestChecksums {
    Crc32c,
    Sha256,
}

/// What to back up and how; plain values, so the daemon and the verb share it.
#[derive(Clone, Debug)]
pub struct BackupRequest {
    /// The primary (SQL and replication connections)
    pub conninfo: Option<String>,
    /// Take the backup from this standby instead
    pub standby_conninfo: Option<String>,
    pub label: Option<String>,
    pub spread_checkpoint: bool,
    pub manifest_checksums: ManifestChecksums,
    /// How long to wait for the backup's WAL to reach the repository
    pub wal_timeout: Duration,
    /// Only what changed since an earlier backup: server-side on PostgreSQL 17 and later with
    /// summarize_wal, client-side otherwise
    pub incremental: bool,
    /// Incremental backups compared by tidewal even where the server could send changed blocks
    pub client_side: bool,
}

/// Take a base backup; shared with the daemon's scheduler. One at a time per repository,
/// on any host: the backup lease is held throughout and released however the backup ends.
pub async fn take(repo: &Repo, args: &BackupRequest) -> Result<BackupInfo> {
    use crate::repo::lease;
    let mut held = lease::acquire(repo, lease::BACKUP, "base backup", lease::configured_timeout()).await?;
    let out = tokio::select! {
        r = take_leased(repo, args) => r,
        why = held.lost() => Err(Fail::new(Code::Conflict, format!("base backup abandoned: {why}"))),
    };
    held.release().await;
    out
}

async fn take_leased(repo: &Repo, args: &BackupRequest) -> Result<BackupInfo> {
    let began = Instant::now();
    let started_at = SystemTime::now();
    let pg = |e: String| Fail::new(Code::Postgres, e);
    // From a standby when one is configured: the same files, without the primary's I/O.
    let source = args.standby_conninfo.as_deref().or(args.conninfo.as_deref());
    let from_standby = args.standby_conninfo.is_some();
    let cfg = sql::resolve_config(source, true).map_err(pg)?;
    let mut conn = ReplConn::connect(&cfg).await.map_err(pg)?;
    let ident = conn.identify_system().await.map_err(pg)?;
    repo.ensure_cluster(ident.system_identifier, if from_standby { "the standby" } else { "the server" })?;
    let timescaledb = timescaledb_version(source).await;
    remove_abandoned(repo).await;

    // Unique by construction (microseconds and a random suffix): no two backups share an
    // object name, so the multipart uploads below never meet another backup's objects.
    let mut random = [0u8; 3];
    rand::fill(&mut random);
    let id = layout::backup_id(started_at, random);
    let label = args.label.clone().unwrap_or_else(|| format!("tidewal {id}"));
    let checksums = match args.manifest_checksums {
        ManifestChecksums::Crc32c => "CRC32C",
        ManifestChecksums::Sha256 => "SHA256",
    };
    let parent = match args.incremental {
        true => Some(backup_parent::choose(repo, &mut conn, args.client_side).await?),
        false => None,
    };
    let server_side = parent.as_ref().is_some_and(|p| p.how == Increment::Server);
    let start = conn.start_base_backup(&label, !args.spread_checkpoint, checksums, server_side).await.map_err(
        |e| match &parent {
            Some(p) if e.contains("WAL summar") => Fail::new(
                Code::Postgres,
                format!(
                    "{e}: the server cannot tell what changed since backup {}; take a full backup (without --incremental), or a client-side incremental one (--incremental --client-side)",
                    p.info.id
                ),
            ),
            _ => pg(e),
        },
    )?;
    match &parent {
        Some(p) => tracing::info!(
            "backup {id} ({} incremental on {}) started at {} on timeline {}",
            if server_side { "server-side" } else { "client-side" },
            p.info.id,
            start.start_lsn,
            start.timeline
        ),
        None => tracing::info!("backup {id} started at {} on timeline {}", start.start_lsn, start.timeline),
    }
    // Every archive is summed for the manifest check and indexed (so later backups can
    // build on this one) and, client-side, compared with the parent's index; a server-side
    // increment cannot be indexed.
    let parent_index = parent.as_ref().and_then(|p| p.index.clone());
    let new_sum: fn() -> FileSum = match args.manifest_checksums {
        ManifestChecksums::Crc32c => || FileSum::Crc32c(0),
        ManifestChecksums::Sha256 => || FileSum::Sha256(Box::default()),
    };
    let mut deltas = Vec::new();
    let mut manifest: Option<Vec<u8>> = None;

    let progress = Progress::start(&format!("backup {id}"), start.estimated_bytes);
    let mut objects = Vec::new();
    let mut current: Option<ObjectWriter> = None;
    while let Some(event) = conn.next_backup_event().await.map_err(pg)? {
        match event {
            BackupEvent::Archive { name, .. } => {
                finish(&mut current, &mut objects).await?;
                let obj = layout::backup_object(&id, &name);
                let delta = Delta::for_archive(&name, parent_index.as_ref(), new_sum);
                current = Some(repo.create_stream_filtered(&obj, delta.as_ref().map(Delta::filter)));
                deltas.extend(delta);
            }
            BackupEvent::Manifest => {
                finish(&mut current, &mut objects).await?;
                current = Some(repo.create_stream(&layout::backup_object(&id, "backup_manifest")));
                manifest = Some(Vec::new());
            }
            BackupEvent::Data(b) => match current.as_mut() {
                Some(w) => {
                    progress.add(b.len() as u64);
                    if let Some(m) = manifest.as_mut() {
                        m.extend_from_slice(&b);
                    }
                    w.write(&b).await?
                }
                None => return Err(pg("BASE_BACKUP sent data before naming an archive".into())),
            },
            BackupEvent::Progress(done) => tracing::debug!("backup {id}: {done} bytes streamed"),
        }
    }
    finish(&mut current, &mut objects).await?;
    progress.finish();
    let mut index = FileIndex::default();
    let mut stats = DeltaStats::default();
    let mut sums = Vec::new();
    for d in deltas {
        let r = d.finish()?;
        index.extend(r.index);
        stats.add(r.stats);
        sums.extend(r.sums);
    }
    let manifest = manifest.ok_or_else(|| pg("the server sent no backup manifest".into()))?;
    check_sent(repo, &id, &manifest, sums)?;
    if !server_side {
        objects.push(store_index(repo, &id, &index, stats, parent.as_ref()).await?);
    }
    let (end_lsn, end_tli) = conn.finish_base_backup().await.map_err(pg)?;
    if from_standby {
        // A standby does not archive, and its stop position lies in a segment the primary
        // is still writing: ask the primary to finish that segment so it gets archived now.
        switch_primary_wal(args.conninfo.as_deref()).await;
    }

    let seg_size = repo.identity.wal_segment_size;
    let first = SegmentId::containing(start.timeline, start.start_lsn, seg_size);
    let last = SegmentId::containing(end_tli, Lsn(end_lsn.0.saturating_sub(1)), seg_size);
    tracing::info!(
        "backup {id}: data stored in {:.1}s, ends at {end_lsn}; waiting for WAL up to {}",
        began.elapsed().as_secs_f64(),
        last.file_name(seg_size)
    );
    wait_for_wal(repo, first, last, args.wal_timeout).await?;

    let info = BackupInfo {
        id: id.clone(),
        label,
        system_identifier: ident.system_identifier.to_string(),
        pg_version: conn.server_version.clone(),
        timescaledb_version: timescaledb,
        timeline: start.timeline,
        start_lsn: start.start_lsn.to_string(),
        end_lsn: end_lsn.to_string(),
        start_wal: first.file_name(seg_size),
        end_wal: last.file_name(seg_size),
        started_at: humantime::format_rfc3339_seconds(started_at).to_string(),
        finished_at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        duration_seconds: began.elapsed().as_secs_f64(),
        tablespaces: start.tablespaces.clone(),
        objects,
        parent: parent.as_ref().map(|p| p.info.id.clone()),
        increment: parent.map(|p| p.how),
    };
    // Every object as the repository has it now, before the record says it is there (a
    // clean-up elsewhere that took this backup for dead would show here).
    crate::repo::catalog::check_objects(repo, &info).await?;
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    let obj = layout::backup_object(&id, "backup.json");
    let sealed = crate::codec::seal_to_vec(&json, repo.keys.write_key(), &obj, repo.seal_options(None))
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    repo.push_sealed(&obj, sealed.out, sealed.digest).await?;
    Ok(info)
}

/// What the server sent, as it arrived (before any rewrite), against the server's own
/// manifest: every file's size and checksum, and nothing missing. A backup that fails is
/// not recorded, so damage on the way in never passes for a backup.
fn check_sent(repo: &Repo, id: &str, manifest: &[u8], sums: Vec<(String, u64, FileSum)>) -> Result<()> {
    let bad = |e: String| {
        Fail::new(
            Code::Integrity,
            format!("backup {id}: what the server sent does not match its backup manifest ({e}); the backup is not recorded: take it again"),
        )
    };
    let checker = crate::repo::manifest::checker(manifest, repo.identity.system_id()).map_err(bad)?;
    for (key, size, sum) in sums {
        checker.finish(&key, size, sum).map_err(bad)?;
    }
    checker.complete().map(|_| ()).map_err(bad)
}

/// The file index of every archive, stored as one object; for a client-side increment, what
/// was left out is logged.
async fn store_index(
    repo: &Repo,
    id: &str,
    index: &FileIndex,
    stats: DeltaStats,
    parent: Option<&Parent>,
) -> Result<StoredObject> {
    if let Some(p) = parent {
        tracing::info!(
            "backup {id}: {} of {} MiB of relation files left out as backup {}'s: {} files unchanged, {} stored in part, {} whole",
            stats.left_out >> 20,
            stats.relation_bytes >> 20,
            p.info.id,
            stats.unchanged,
            stats.partial,
            stats.whole
        );
    }
    let mut w = repo.create_stream(&layout::backup_object(id, file_index::NAME));
    w.write(&index.encode()).await?;
    w.finish().await
}

async fn finish(current: &mut Option<ObjectWriter>, objects: &mut Vec<StoredObject>) -> Result<()> {
    if let Some(w) = current.take() {
        objects.push(w.finish().await?);
    }
    Ok(())
}

/// The backup is restorable only with every segment from its start to its end archived.
async fn wait_for_wal(repo: &Repo, first: SegmentId, last: SegmentId, timeout: Duration) -> Result<()> {
    let seg_size = repo.identity.wal_segment_size;
    let deadline = Instant::now() + timeout;
    let mut segno = first.segno;
    while segno <= last.segno {
        let tli = if segno == last.segno { last.tli } else { first.tli };
        let seg = SegmentId { tli, segno };
        let obj = layout::wal_object(&WalFile::Segment(seg), seg_size);
        if repo.store.exists(&obj).await? {
            segno += 1;
            continue;
        }
        if Instant::now() >= deadline {
            return Err(Fail::new(
                Code::Storage,
                format!(
                    "the backup's WAL segment {} did not reach the repository within {timeout:?}: check archive_command (tidewal check); the backup is incomplete and not recorded",
                    seg.file_name(seg_size)
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Objects and staging files of backups interrupted more than a day ago, by the host's clock
/// bounded by the store's (best effort: a failure here must not stop today's backup).
async fn remove_abandoned(repo: &Repo) {
    let found = async {
        let now = bounded_now(repo, SystemTime::now()).await?;
        let listing = repo.store.list_meta("backups").await?;
        // This backup holds the backup lease: no other backup runs, whatever has no
        // backup.json was interrupted. (WAL staging files are prune's.)
        find_leftovers(repo, &listing, &[], now, Duration::ZERO).await
    };
    let left = match found.await {
        Ok(l) => l,
        Err(e) => return tracing::warn!("not removing interrupted backups: {e}"),
    };
    for (id, objects) in &left.backups {
        let mut removed = 0;
        for obj in objects {
            match remove_object(repo, obj).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove {obj} of interrupted backup {id}: {e}"),
            }
        }
        tracing::info!("removed interrupted backup {id} ({removed} of {} objects)", objects.len());
    }
    for obj in &left.staging {
        match remove_object(repo, obj).await {
            Ok(()) => tracing::info!("removed {obj}, left by an interrupted upload"),
            Err(e) => tracing::warn!("cannot remove {obj}, left by an interrupted upload: {e}"),
        }
    }
}

async fn switch_primary_wal(conninfo: Option<&str>) {
    let switched = match sql::connect(conninfo).await {
        Ok(c) => c.query_one("SELECT pg_walfile_name(pg_switch_wal())", &[]).await.map_err(|e| sql::error_chain(&e)),
        Err(e) => Err(e),
    };
    match switched {
        Ok(row) => tracing::info!("the primary switched away from WAL segment {}", row.get::<_, String>(0)),
        Err(e) => tracing::warn!(
            "cannot ask the primary to switch WAL ({e}); waiting for it to archive the backup's last segment (archive_timeout)"
        ),
    }
}

async fn timescaledb_version(conninfo: Option<&str>) -> Option<String> {
    let client = sql::connect(conninfo).await.ok()?;
    let row = client.query_opt("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[]).await.ok()?;
    row.map(|r| r.get(0))
}
