//! `tidewal dump [--db NAME]... | --all`: logical dumps of the configured server into the repository.

use crate::config::Settings;
use crate::error::Result;
use crate::ops::dump::{dump, Databases};
use crate::progress::human_size;
use crate::repo::dumps::DumpFormat;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A database to dump (repeat for several) [default: every database, as --all]
    #[arg(long = "db", value_name = "NAME", conflicts_with = "all")]
    pub db: Vec<String>,
    /// Every database that accepts connections (templates left out)
    #[arg(long)]
    pub all: bool,
    /// pg_dump's parallel jobs (directory format) [default: dump.jobs, 2]
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
    /// Archive format [default: dump.format, directory]
    #[arg(long, value_enum)]
    pub format: Option<DumpFormat>,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = super::open_repo(settings).await?;
    let databases = if args.db.is_empty() { Databases::All } else { Databases::Named(args.db.clone()) };
    let info = dump(&repo, &settings.dump_request(databases, args.jobs, args.format)).await?;
    println!(
        "dump {} complete: {} database(s), {} ({} stored) in {:.1}s",
        info.id,
        info.databases.len(),
        human_size(info.bytes()),
        human_size(info.stored_bytes()),
        info.duration_seconds
    );
    for d in &info.databases {
        let ts = d.timescaledb_version.as_deref().map(|v| format!(", TimescaleDB {v}")).unwrap_or_default();
        println!("  {}: {} in {} object(s){ts}", d.name, human_size(d.bytes()), d.objects.len());
    }
    Ok(())
}
