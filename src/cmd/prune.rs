//! `tidewal prune [--dry-run]`: apply the retention window and print what it did.

use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::dump_prune::prune_dumps;
use crate::ops::prune::prune;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print what would be deleted, delete nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Keep every moment this far back restorable [default: retention.window, 10d]
    #[arg(long, value_parser = humantime::parse_duration)]
    pub window: Option<Duration>,
    /// Plan as if this host's clock said this time (RFC 3339; for tests and what-if
    /// questions). It is still bounded by the store's clock: more than 5 minutes apart from
    /// it, nothing is deleted
    #[arg(long, hide = true, value_parser = humantime::parse_rfc3339_weak)]
    pub now: Option<SystemTime>,
    /// Machine-readable output (stable field names)
    #[arg(long)]
    pub json: bool,
}

/// `--json`: the plan and what was (or, with --dry-run, would be) deleted.
#[derive(Serialize)]
struct PruneJson<'a> {
    dry_run: bool,
    window_seconds: u64,
    /// The time the plan was made for: this host's clock bounded by the store's.
    planned_at: Option<String>,
    anchor: Option<&'a str>,
    line_anchors: &'a std::collections::BTreeMap<u32, String>,
    keep_backups: &'a [String],
    delete_backups: &'a [String],
    /// WAL that ends at or before this position goes (none without a backup).
    keep_wal_from: Option<String>,
    keep_wal: usize,
    delete_wal: &'a [String],
    interrupted_backups: &'a [String],
    staging: &'a [String],
    /// Logical dumps kept, and those retention (`[dump] keep`, `window`) removes.
    keep_dumps: usize,
    delete_dumps: &'a [String],
    interrupted_dumps: &'a [String],
    /// Objects deleted (0 with --dry-run).
    deleted_objects: u64,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = super::open_repo(settings).await?;
    let window = args.window.unwrap_or(settings.retention_window);
    let done = prune(&repo, args.now.unwrap_or_else(SystemTime::now), window, args.dry_run).await?;
    let p = &done.plan;
    let now = done.now.unwrap_or_else(SystemTime::now);
    let dumps = prune_dumps(&repo, now, settings.dump.retention, args.dry_run, &settings.dump_scratch()).await?;
    if args.json {
        let json = PruneJson {
            dry_run: args.dry_run,
            window_seconds: window.as_secs(),
            planned_at: done.now.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
            anchor: p.anchor.as_deref(),
            line_anchors: &p.line_anchors,
            keep_backups: &p.keep_backups,
            delete_backups: &p.delete_backups,
            keep_wal_from: p.keep_from.map(|l| l.to_string()),
            keep_wal: p.keep_wal,
            delete_wal: &p.delete_wal,
            interrupted_backups: &done.abandoned,
            staging: &done.staging,
            keep_dumps: dumps.kept,
            delete_dumps: &dumps.expired,
            interrupted_dumps: &dumps.interrupted,
            deleted_objects: done.deleted_objects + dumps.deleted_objects,
        };
        let text = serde_json::to_string_pretty(&json).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    let verb = if args.dry_run { "would delete" } else { "deleted" };
    println!(
        "window {}: anchor backup {}; keeping {} backup(s), {verb} {} backup(s){}",
        humantime::format_duration(window),
        p.anchor.as_deref().unwrap_or("none (every backup is inside the window)"),
        p.keep_backups.len(),
        p.delete_backups.len(),
        if p.delete_backups.is_empty() { String::new() } else { format!(": {}", p.delete_backups.join(", ")) }
    );
    let range = match (p.delete_wal.first(), p.delete_wal.last()) {
        (Some(a), Some(z)) => format!(" ({a} .. {z})"),
        _ => String::new(),
    };
    let from = p.keep_from.map_or("everything".to_string(), |l| format!("WAL ending after {l}"));
    println!("keeping {from}: {} object(s), {verb} {}{range}", p.keep_wal, p.delete_wal.len());
    if !done.abandoned.is_empty() {
        println!("interrupted backups: {verb} {}", done.abandoned.join(", "));
    }
    if !done.staging.is_empty() {
        println!("staging files of interrupted uploads: {verb} {}", done.staging.len());
    }
    if dumps.kept + dumps.expired.len() + dumps.interrupted.len() > 0 {
        println!(
            "dumps: keeping {}, {verb} {}{}",
            dumps.kept,
            dumps.expired.len(),
            if dumps.expired.is_empty() { String::new() } else { format!(": {}", dumps.expired.join(", ")) }
        );
    }
    if !dumps.interrupted.is_empty() {
        println!("interrupted dumps: {verb} {}", dumps.interrupted.join(", "));
    }
    if !args.dry_run {
        println!("{} object(s) deleted", done.deleted_objects + dumps.deleted_objects);
    }
    Ok(())
}
