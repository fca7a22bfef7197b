//! `tidewal wal-fetch %f %p`: PostgreSQL's restore_command.

use std::path::PathBuf;

use crate::config::Settings;
use crate::error::Result;
use crate::ops::fetch::{fetch, FetchRequest};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file PostgreSQL asks for (%f)
    pub name: String,
    /// Where to put it (%p)
    pub path: PathBuf,
    /// Internal: download the segments after NAME into the spool, then exit
    #[arg(long, hide = true)]
    pub prefetch_worker: bool,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = settings.open_repo_cached().await?;
    let req = FetchRequest {
        name: &args.name,
        path: &args.path,
        prefetch: settings.prefetch,
        prefetch_worker: args.prefetch_worker,
    };
    fetch(&repo, &req).await
}
