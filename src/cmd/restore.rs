//! `tidewal restore --to DIR`: a base backup from the repository, unpacked and checked
//! against its manifest, with recovery configured to replay WAL from the repository.

use std::path::PathBuf;

use crate::config::Settings;
use crate::error::Result;
use crate::ops::restore::{parse_time, restore, Action, RestoreRequest};
use crate::pg::lsn::Lsn;

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The new data directory (must be empty unless --force)
    #[arg(long)]
    pub to: PathBuf,
    /// Backup id, or "latest" (the newest one before the target)
    #[arg(long, default_value = "latest")]
    pub backup: String,
    /// Recover to this time, in UTC (e.g. 2026-11-24T13:05:00Z or 2026-11-24 13:05:00.25+00)
    #[arg(long, group = "target")]
    pub target_time: Option<String>,
    /// Recover to this WAL location (e.g. 0/5A000028)
    #[arg(long, group = "target")]
    pub target_lsn: Option<Lsn>,
    /// Recover to this transaction id
    #[arg(long, group = "target")]
    pub target_xid: Option<String>,
    /// Recover to this restore point (pg_create_restore_point)
    #[arg(long, group = "target")]
    pub target_name: Option<String>,
    /// Stop as soon as the backup is consistent
    #[arg(long, group = "target")]
    pub immediate: bool,
    /// What to do at the target [default: pause, as PostgreSQL]
    #[arg(long, value_enum)]
    pub target_action: Option<Action>,
    /// Timeline to follow: "latest", "current" or a number
    #[arg(long)]
    pub target_timeline: Option<String>,
    /// Put tablespace OID in DIR instead of its original location (repeatable)
    #[arg(long, value_name = "OID=DIR")]
    pub tablespace_map: Vec<String>,
    /// Replace the data directory DIR holds: empty it first (never a running cluster)
    #[arg(long)]
    pub force: bool,
    /// Disaster recovery: keep archiving on, so the restored cluster becomes the repository's
    /// new live line [default: a copy with archive_mode = off]
    #[arg(long)]
    pub as_primary: bool,
}

impl Args {
    /// The plain request; the target time is parsed here, before anything is read or written.
    pub fn request(&self, settings: &Settings) -> Result<RestoreRequest> {
        Ok(RestoreRequest {
            to: self.to.clone(),
            backup: self.backup.clone(),
            target_time: self.target_time.as_deref().map(parse_time).transpose()?,
            target_lsn: self.target_lsn,
            target_xid: self.target_xid.clone(),
            target_name: self.target_name.clone(),
            immediate: self.immediate,
            target_action: self.target_action,
            target_timeline: self.target_timeline.clone(),
            tablespace_map: self.tablespace_map.clone(),
            force: self.force,
            as_primary: self.as_primary,
            port: None,
            exe: std::env::current_exe().unwrap_or_else(|_| "tidewal".into()),
            // Before anything is read: a restore that recovery could not read is useless.
            fetch_config: settings.fetch_config()?,
            conninfo: settings.conninfo.clone(),
        })
    }
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let req = args.request(settings)?;
    let repo = super::open_repo(settings).await?;
    restore(&repo, &req).await
}
