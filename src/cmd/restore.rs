//! `tidewal restore --to DIR`: a base backup from the repository, unpacked and checked
//! against its manifest, with recovery configured to replay WAL from the repository.

use std::path::PathBuf;

use crate::config::Settings;
use crate::error::Result;
use crate::ops::restore::{parse_time, restore, Action, RestoreRequest, Restored};
use crate::pg::lsn::Lsn;

/// Where recovery stops (shared by `restore`, `fork` and `verify --restore-test`).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Target {
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
    /// Timeline to follow: "latest", "current" or a number
    #[arg(long)]
    pub target_timeline: Option<String>,
}

impl Target {
    /// Whether any target option was given.
    pub fn is_set(&self) -> bool {
        self.target_time.is_some()
            || self.target_lsn.is_some()
            || self.target_xid.is_some()
            || self.target_name.is_some()
            || self.immediate
            || self.target_timeline.is_some()
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// The new data directory (must be empty unless --force)
    #[arg(long)]
    pub to: PathBuf,
    /// Backup id, or "latest" (the newest one before the target)
    #[arg(long, default_value = "latest")]
    pub backup: String,
    #[command(flatten)]
    pub target: Target,
    /// What to do at the target [default: pause, as PostgreSQL]
    #[arg(long, value_enum)]
    pub target_action: Option<Action>,
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

impl Target {
    /// Set this target on a request; the target time is parsed here, before anything is
    /// read or written.
    pub fn apply(&self, req: &mut RestoreRequest) -> Result<()> {
        req.target_time = self.target_time.as_deref().map(parse_time).transpose()?;
        req.target_lsn = self.target_lsn;
        req.target_xid = self.target_xid.clone();
        req.target_name = self.target_name.clone();
        req.immediate = self.immediate;
        req.target_timeline = self.target_timeline.clone();
        Ok(())
    }
}

impl Args {
    /// The plain request; the target time is parsed here, before anything is read or written.
    pub fn request(&self, settings: &Settings) -> Result<RestoreRequest> {
        let mut req = settings.restore_request(self.to.clone(), &self.backup)?;
        self.target.apply(&mut req)?;
        req.target_action = self.target_action;
        req.tablespace_map = self.tablespace_map.clone();
        req.force = self.force;
        req.as_primary = self.as_primary;
        Ok(req)
    }
}

/// What a restore (or a fork's) prints for a person.
pub fn print_restored(r: &Restored, as_primary: bool) {
    if !r.removed_settings.is_empty() {
        println!(
            "commented out settings that came with the backup (an earlier restore's, or recovery's): {}",
            r.removed_settings.join(", ")
        );
    }
    println!(
        "restored backup {} into {} ({} files verified against the manifest); start it with: pg_ctl -D {} start",
        r.backup.id,
        r.to.display(),
        r.files_checked,
        r.to.display()
    );
    if !r.has_config {
        println!(
            "the backup holds no postgresql.conf (a Debian cluster keeps it in /etc/postgresql/<major>/<cluster>): \
             before starting, write {}/postgresql.conf with an include of the original's, data_directory and \
             external_pid_file = '' (see the restore runbook in the README)",
            r.to.display()
        );
    }
    if as_primary {
        println!(
            "restored as the primary (--as-primary): archiving stays as in the backup, so once promoted \
             this cluster archives into the repository as its new live line"
        );
    } else {
        println!(
            "restored as a copy: archive_mode = off, so it never writes into the repository \
             (for disaster recovery, restore with --as-primary)"
        );
    }
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let req = args.request(settings)?;
    let repo = super::open_repo(settings).await?;
    let restored = restore(&repo, &req).await?;
    print_restored(&restored, req.as_primary);
    Ok(())
}
