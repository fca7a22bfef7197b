//! `tidewal backup`: a base backup over the replication protocol, streamed into the
//! repository (sealed, multipart, bounded memory), complete only once the WAL it needs is
//! archived and `backup.json` is written last.

use std::time::{Duration, Instant, SystemTime};

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::pg::replication::{BackupEvent, ReplConn};
use crate::pg::sql;
use crate::pg::walfile::WalFile;
use crate::progress::Progress;
use crate::repo::catalog::{abandoned_backups, BackupInfo, ABANDONED_AFTER};
use crate::repo::{layout, ObjectWriter, Repo, StoredObject};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ManifestChecksums {
    Crc32c,
    Sha256,
}

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Backup label (shown in pg_stat_activity and the backup_label file)
    #[arg(long)]
    pub label: Option<String>,
    /// Spread the start checkpoint out like a regular one instead of forcing it now
    #[arg(long)]
    pub spread_checkpoint: bool,
    /// Checksums in the backup manifest, which restore checks every file against. The archives
    /// themselves are authenticated by the envelope either way; CRC32C costs the server far
    /// less CPU than SHA-256.
    #[arg(long, value_enum, default_value = "crc32c")]
    pub manifest_checksums: ManifestChecksums,
    /// Ask the running daemon (daemon.socket) to take it, so it never runs beside a scheduled one
    #[arg(long)]
    pub via_daemon: bool,
    /// How long to wait for the backup's WAL to reach the repository
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub wal_timeout: Duration,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    if args.via_daemon {
        let socket = settings.daemon.socket.as_ref().ok_or_else(|| {
            Fail::new(Code::Usage, "--via-daemon needs daemon.socket in the configuration (the daemon listens there)")
        })?;
        return match crate::daemon::socket::ask_backup(socket).await {
            Some(Ok(id)) => {
                println!("backup {id} complete (taken by the daemon)");
                Ok(())
            }
            Some(Err(f)) => Err(f),
            None => Err(Fail::new(
                Code::Storage,
                format!(
                    "the daemon did not answer on {}: is it running? (or run tidewal backup without --via-daemon)",
                    socket.display()
                ),
            )),
        };
    }
    let info = take(settings, args).await?;
    let total: u64 = info.objects.iter().map(|o| o.bytes).sum();
    let stored: u64 = info.objects.iter().map(|o| o.stored_bytes).sum();
    println!(
        "backup {} complete: {total} bytes ({stored} stored) in {:.1}s, WAL {} to {} ({} to {})",
        info.id, info.duration_seconds, info.start_lsn, info.end_lsn, info.start_wal, info.end_wal
    );
    Ok(())
}

/// Take a base backup; shared with the daemon's scheduler.
pub async fn take(settings: &Settings, args: &Args) -> Result<BackupInfo> {
    let began = Instant::now();
    let started_at = SystemTime::now();
    let repo = super::open_repo(settings).await?;
    let pg = |e: String| Fail::new(Code::Postgres, e);
    // From a standby when one is configured: the same files, without the primary's I/O.
    let source = settings.standby_conninfo.as_deref().or(settings.conninfo.as_deref());
    let from_standby = settings.standby_conninfo.is_some();
    let cfg = sql::resolve_config(source, true).map_err(pg)?;
    let mut conn = ReplConn::connect(&cfg).await.map_err(pg)?;
    let ident = conn.identify_system().await.map_err(pg)?;
    repo.ensure_cluster(ident.system_identifier, if from_standby { "the standby" } else { "the server" })?;
    let timescaledb = timescaledb_version(source).await;
    remove_abandoned(&repo).await;

    let id = layout::backup_id(&humantime::format_rfc3339_seconds(started_at).to_string());
    if repo.store.exists(&layout::backup_object(&id, "backup.json")).await? {
        return Err(Fail::new(Code::Conflict, format!("backup {id} already exists; try again in a second")));
    }
    let label = args.label.clone().unwrap_or_else(|| format!("tidewal {id}"));
    let checksums = match args.manifest_checksums {
        ManifestChecksums::Crc32c => "CRC32C",
        ManifestChecksums::Sha256 => "SHA256",
    };
    let start = conn.start_base_backup(&label, !args.spread_checkpoint, checksums).await.map_err(pg)?;
    tracing::info!("backup {id} started at {} on timeline {}", start.start_lsn, start.timeline);

    let progress = Progress::start(&format!("backup {id}"), start.estimated_bytes);
    let mut objects = Vec::new();
    let mut current: Option<ObjectWriter> = None;
    while let Some(event) = conn.next_backup_event().await.map_err(pg)? {
        match event {
            BackupEvent::Archive { name, .. } => {
                finish(&mut current, &mut objects).await?;
                current = Some(repo.create_stream(&layout::backup_object(&id, &name)));
            }
            BackupEvent::Manifest => {
                finish(&mut current, &mut objects).await?;
                current = Some(repo.create_stream(&layout::backup_object(&id, "backup_manifest")));
            }
            BackupEvent::Data(b) => match current.as_mut() {
                Some(w) => {
                    progress.add(b.len() as u64);
                    w.write(&b).await?
                }
                None => return Err(pg("BASE_BACKUP sent data before naming an archive".into())),
            },
            BackupEvent::Progress(done) => tracing::debug!("backup {id}: {done} bytes streamed"),
        }
    }
    finish(&mut current, &mut objects).await?;
    progress.finish();
    let (end_lsn, end_tli) = conn.finish_base_backup().await.map_err(pg)?;
    if from_standby {
        // A standby does not archive, and its stop position lies in a segment the primary
        // is still writing: ask the primary to finish that segment so it gets archived now.
        switch_primary_wal(settings).await;
    }

    let seg_size = repo.identity.wal_segment_size;
    let first = SegmentId::containing(start.timeline, start.start_lsn, seg_size);
    let last = SegmentId::containing(end_tli, Lsn(end_lsn.0.saturating_sub(1)), seg_size);
    tracing::info!(
        "backup {id}: data stored in {:.1}s, ends at {end_lsn}; waiting for WAL up to {}",
        began.elapsed().as_secs_f64(),
        last.file_name(seg_size)
    );
    wait_for_wal(&repo, first, last, args.wal_timeout).await?;

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
    };
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    let obj = layout::backup_object(&id, "backup.json");
    let sealed = crate::codec::seal_to_vec(&json, repo.keys.write_key(), &obj, repo.seal_options(None))
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    repo.push_sealed(&obj, sealed.out, sealed.digest).await?;
    Ok(info)
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

/// Objects of backups interrupted more than a day ago (best effort: a failure here must not
/// stop today's backup).
async fn remove_abandoned(repo: &Repo) {
    let listing = match repo.store.list_meta("backups").await {
        Ok(l) => l,
        Err(e) => return tracing::warn!("cannot look for interrupted backups: {e}"),
    };
    for (id, objects) in abandoned_backups(&listing, SystemTime::now(), ABANDONED_AFTER) {
        let mut removed = 0;
        for obj in &objects {
            match repo.store.delete(obj).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("cannot remove {obj} of interrupted backup {id}: {e}"),
            }
        }
        tracing::info!("removed interrupted backup {id} ({removed} of {} objects)", objects.len());
    }
}

async fn switch_primary_wal(settings: &Settings) {
    let switched = match sql::connect(settings.conninfo.as_deref()).await {
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
