//! `tidewal wal-fetch %f %p`: PostgreSQL's restore_command.

use std::path::PathBuf;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::pg::walfile::WalFile;
use crate::repo::layout;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file PostgreSQL asks for (%f)
    pub name: String,
    /// Where to put it (%p)
    pub path: PathBuf,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = super::open_repo(settings).await?;
    let seg_size = repo.identity.wal_segment_size;
    let kind = WalFile::parse(&args.name, seg_size).map_err(|e| {
        Fail::new(Code::BadInput, format!("{e}: wal-fetch takes the file name PostgreSQL asks for (%f)"))
    })?;
    let obj = layout::wal_object(&kind, seg_size);
    match repo.fetch_to_path(&obj, &args.path).await {
        Ok(bytes) => {
            tracing::info!("restored {} ({bytes} bytes)", args.name);
            Ok(())
        }
        Err(f) if f.code == Code::NotFound => {
            // PostgreSQL probes for files that do not exist as part of normal recovery.
            Err(Fail::new(Code::NotFound, format!("{} is not in the repository", args.name)))
        }
        Err(f) => Err(f),
    }
}
