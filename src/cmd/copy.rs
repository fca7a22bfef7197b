//! `tidewal copy --to URL`: copy the repository once to a second store (see `ops::copy`).
//! The destination is opened with the same store settings as the repository (the
//! `[repository.s3]`, `[repository.azure]`, `[repository.gcs]` tables and their environment
//! variables); `--to-region` and `--to-endpoint` change the S3 region and endpoint for the
//! destination only (another region of the same account).

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::progress::human_size;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to copy: file:///path, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// The destination's S3 region [default: the repository's, [repository.s3] region]
    #[arg(long, value_name = "REGION")]
    pub to_region: Option<String>,
    /// The destination's S3 endpoint [default: the repository's, [repository.s3] endpoint]
    #[arg(long, value_name = "URL")]
    pub to_endpoint: Option<String>,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let src = settings.open_repo().await?;
    let mut opts = settings.store.clone();
    if args.to_region.is_some() || args.to_endpoint.is_some() {
        if !args.to.starts_with("s3://") {
            return Err(Fail::new(Code::Usage, "--to-region and --to-endpoint apply to an s3:// destination only"));
        }
        opts.s3.region = args.to_region.clone().or(opts.s3.region);
        opts.s3.endpoint = args.to_endpoint.clone().or(opts.s3.endpoint);
    }
    let dest = Store::open_or_make(&args.to, &opts)?;
    if dest.url().trim_end_matches('/') == src.store.url().trim_end_matches('/') {
        return Err(Fail::new(Code::Usage, format!("--to {} is the repository itself", args.to)));
    }
    println!("copying {} to {}", src.store.url(), dest.url());
    let report = crate::ops::copy::copy(&src, dest, &|rec| println!("  {rec}")).await?;
    println!(
        "copy complete: {} objects copied ({}), {} already there, {} deleted by retention meanwhile; {} backups and {} dumps checked in {}",
        report.copied,
        human_size(report.bytes),
        report.skipped,
        report.vanished,
        report.backups,
        report.dumps,
        args.to
    );
    Ok(())
}
