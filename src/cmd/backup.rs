//! `tidewal backup`: a base backup over the replication protocol into the repository.

use std::time::Duration;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::backup::{take, BackupRequest, ManifestChecksums};

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
    /// Store only what changed since an earlier backup, which this one then builds on: the
    /// server sends only changed blocks (PostgreSQL 17 or later with summarize_wal = on), or
    /// tidewal compares what it sends with the newest backup's file index; restore rebuilds
    /// the files from the chain
    #[arg(long, conflicts_with = "via_daemon")]
    pub incremental: bool,
    /// With --incremental: compare on the client even where the server could send only
    /// changed blocks (content compared byte for byte, no reliance on WAL summaries)
    #[arg(long, requires = "incremental")]
    pub client_side: bool,
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
                Code::NoDaemon,
                format!(
                    "the daemon did not answer on {}: is it running? (or run tidewal backup without --via-daemon)",
                    socket.display()
                ),
            )),
        };
    }
    let repo = super::open_repo(settings).await?;
    let req = BackupRequest {
        conninfo: settings.conninfo.clone(),
        standby_conninfo: settings.standby_conninfo.clone(),
        label: args.label.clone(),
        spread_checkpoint: args.spread_checkpoint,
        manifest_checksums: args.manifest_checksums,
        wal_timeout: args.wal_timeout,
        incremental: args.incremental,
        client_side: args.client_side,
    };
    let info = take(&repo, &req).await?;
    let total: u64 = info.objects.iter().map(|o| o.bytes).sum();
    let stored: u64 = info.objects.iter().map(|o| o.stored_bytes).sum();
    println!(
        "backup {} complete: {total} bytes ({stored} stored) in {:.1}s, WAL {} to {} ({} to {})",
        info.id, info.duration_seconds, info.start_lsn, info.end_lsn, info.start_wal, info.end_wal
    );
    // A daemon beside us would otherwise count it only at its next look (minutes).
    if let Some(socket) = &settings.daemon.socket {
        crate::daemon::socket::ask_refresh(socket).await;
    }
    Ok(())
}
