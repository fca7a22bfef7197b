//! `tidewal verify`: open every chosen object in full and check it (see `ops::verify`),
//! print a report naming each bad object, and exit 5 on any problem.

use std::time::{Duration, SystemTime};

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::last_run::{self, Kind};
use crate::ops::verify::{verify, VerifyReport, VerifyRequest};
use crate::progress::human_size;
use crate::repo::Repo;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verify this backup (or "all"); alone, without the WAL [default: every backup and the WAL]
    #[arg(long, value_name = "ID")]
    pub backup: Option<String>,
    /// Verify the WAL: every WAL object, the history files and the chain from each backup;
    /// alone, without the backups
    #[arg(long)]
    pub wal: bool,
    /// Verify a random fraction of the objects (0 < FRACTION <= 1), at least one of each kind
    #[arg(long, value_name = "FRACTION", value_parser = parse_fraction)]
    pub sample: Option<f64>,
    /// Machine-readable output (stable field names)
    #[arg(long)]
    pub json: bool,
}

fn parse_fraction(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        _ => Err(format!("{s:?} is not a fraction above 0 and at most 1")),
    }
}

/// Which parts to verify: both by default; `--backup` or `--wal` alone narrows to that part.
pub fn request(args: &Args, seed: u64) -> VerifyRequest {
    VerifyRequest {
        backup: args.backup.clone(),
        backups: args.backup.is_some() || !args.wal,
        wal: args.wal || args.backup.is_none(),
        sample: args.sample,
        seed,
    }
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let repo = super::open_repo(settings).await?;
    let began = std::time::Instant::now();
    let result = verify(&repo, &request(args, rand::random())).await;
    record(settings, &repo, Kind::Verify, began.elapsed(), &result);
    let report = result?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        println!("{text}");
    } else {
        print_text(&report);
    }
    match report.problems.len() {
        0 => Ok(()),
        n => Err(Fail::new(Code::Integrity, format!("verify found {n} problem(s) in {}", repo.store.url()))),
    }
}

/// The outcome for the daemon's `tidewal_last_verify_*` metrics; a run that could not finish
/// counts as one problem. Failing to record is a warning: the report itself stands.
fn record(settings: &Settings, repo: &Repo, kind: Kind, took: Duration, result: &Result<VerifyReport>) {
    let (problems, summary) = match result {
        Ok(r) if r.problems.is_empty() => (0, format!("{} backups and {} WAL files verified", r.backups, r.wal_files)),
        Ok(r) => (r.problems.len() as u64, format!("{}: {}", r.problems[0].object, r.problems[0].problem)),
        Err(e) => (1, e.to_string()),
    };
    let file = last_run::path(&settings.daemon.spool, kind, repo.store.url(), &repo.identity.system_identifier);
    let run = last_run::LastRun::new(SystemTime::now(), took, problems, summary);
    if let Err(e) = last_run::record(&file, run) {
        tracing::warn!("cannot record the outcome in {} for the daemon's metrics: {e}", file.display());
    }
}

fn print_text(r: &VerifyReport) {
    for p in &r.problems {
        println!("BAD  {}: {}", p.object, p.problem);
    }
    let outcome = match r.problems.len() {
        0 => "no problems".to_string(),
        n => format!("{n} problems"),
    };
    println!(
        "verified {} backups ({} objects, {}) and {} WAL files ({}, {} history files){} in {:.1}s: {outcome}",
        r.backups,
        r.backup_objects,
        human_size(r.backup_bytes),
        r.wal_files,
        human_size(r.wal_bytes),
        r.history_files,
        r.sample.map_or(String::new(), |f| format!(", a sample of {f}")),
        r.duration_seconds
    );
}
