//! `tidewal copy --to URL`: copy the repository once to a second store (see `ops::copy`).
//! The destination is opened with the same store settings as the repository (the
//! `[repository.s3]`, `[repository.azure]`, `[repository.gcs]` tables and their environment
//! variables), so a bucket in another region of the same account needs nothing more.

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::progress::human_size;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to copy: file:///path, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix
    #[arg(long, value_name = "URL")]
    pub to: String,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let src = settings.open_repo().await?;
    let dest = Store::open(&args.to, &settings.store)?;
    if dest.url().trim_end_matches('/') == src.store.url().trim_end_matches('/') {
        return Err(Fail::new(Code::Usage, format!("--to {} is the repository itself", args.to)));
    }
    println!("copying {} to {}", src.store.url(), dest.url());
    let report = crate::ops::copy::copy(&src, dest, &|rec| println!("  {rec}")).await?;
    println!(
        "copy complete: {} objects copied ({}), {} already there; {} backups and {} dumps checked in {}",
        report.copied,
        human_size(report.bytes),
        report.skipped,
        report.backups,
        report.dumps,
        args.to
    );
    Ok(())
}
