//! `tidewal dump-restore --dump ID --to-db NAME`: one database of a dump into a database.

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::dump_restore::{dump_restore, globals};
use crate::progress::human_size;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The dump to restore (an id from tidewal list, or latest)
    #[arg(long, default_value = "latest")]
    pub dump: String,
    /// The database to restore into
    #[arg(long, value_name = "NAME", required_unless_present = "globals")]
    pub to_db: Option<String>,
    /// Print the dump's globals (roles, tablespaces: pg_dumpall --globals-only) instead, for psql
    #[arg(long, conflicts_with_all = ["to_db", "db", "tables", "schemas", "create"])]
    pub globals: bool,
    /// The dump's database to restore [default: its only one]
    #[arg(long = "db", value_name = "SOURCE_DB")]
    pub db: Option<String>,
    /// Only this table (pg_restore --table; repeat for several)
    #[arg(long = "table", value_name = "T")]
    pub tables: Vec<String>,
    /// Only this schema (pg_restore --schema; repeat for several)
    #[arg(long = "schema", value_name = "S")]
    pub schemas: Vec<String>,
    /// Create the target database first (it must not exist)
    #[arg(long)]
    pub create: bool,
    /// pg_restore's parallel jobs [default: dump.jobs, 2]
    #[arg(short = 'j', long, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub jobs: Option<u32>,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = super::open_repo(settings).await?;
    let Some(to_db) = args.to_db.as_deref() else {
        let (id, sql) = globals(&repo, &args.dump).await?;
        tracing::info!("globals of dump {id}");
        use std::io::Write;
        return std::io::stdout().write_all(&sql).map_err(|e| Fail::new(Code::Storage, format!("stdout: {e}")));
    };
    let mut req = settings.dump_restore_request(&args.dump, to_db);
    req.source_db = args.db.clone();
    req.tables = args.tables.clone();
    req.schemas = args.schemas.clone();
    req.create = args.create;
    req.jobs = args.jobs.unwrap_or(req.jobs);
    let done = dump_restore(&repo, &req).await?;
    println!(
        "restored database {} of dump {} into {} ({} verified{})",
        done.database,
        done.dump,
        to_db,
        human_size(done.bytes),
        if done.timescaledb { ", inside timescaledb_pre_restore/post_restore" } else { "" }
    );
    Ok(())
}
