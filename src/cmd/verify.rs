//! `tidewal verify`: open every chosen object in full and check it (see `ops::verify`),
//! print a report naming each bad object, and exit 5 on any problem. With `--restore-test`,
//! restore a backup into a scratch directory, start it, check it (see `ops::restore_test`).

use std::time::SystemTime;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::last_run::{self, Kind};
use crate::ops::restore_test::{restore_test, RestoreTestReport};
use crate::ops::verify::{verify, VerifyReport, VerifyRequest};
use crate::progress::human_size;
use crate::repo::Repo;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Verify this backup (or "all"); alone, without the WAL [default: every backup and the WAL].
    /// With --restore-test: the backup to restore [default: the newest before the target]
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
    /// Restore a backup into a scratch directory, start PostgreSQL on it, recover to the end
    /// of the archive (or the target), run amcheck and the [verify] sql checks, remove it
    #[arg(long, conflicts_with_all = ["wal", "sample"])]
    pub restore_test: bool,
    #[command(flatten)]
    pub target: super::restore::Target,
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
    if args.restore_test {
        return run_restore_test(settings, args).await;
    }
    if args.target.is_set() {
        return Err(Fail::new(Code::Usage, "a recovery target only applies with --restore-test"));
    }
    let repo = super::open_repo(settings).await?;
    let began = std::time::Instant::now();
    let result = verify(&repo, &request(args, rand::random())).await;
    let (problems, summary) = match &result {
        Ok(r) if r.problems.is_empty() => (0, format!("{} backups and {} WAL files verified", r.backups, r.wal_files)),
        Ok(r) => (r.problems.len() as u64, format!("{}: {}", r.problems[0].object, r.problems[0].problem)),
        Err(e) => (1, e.to_string()),
    };
    record(
        settings,
        &repo,
        Kind::Verify,
        last_run::LastRun::new(SystemTime::now(), began.elapsed(), problems, summary),
    );
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

/// The outcome for the daemon's `tidewal_last_verify_*` and `*_restore_test_*` metrics; a run
/// that could not finish counts as one problem. Failing to record is a warning: the report
/// itself stands.
fn record(settings: &Settings, repo: &Repo, kind: Kind, run: last_run::LastRun) {
    let file = last_run::path(&settings.daemon.spool, kind, repo.store.url(), &repo.identity.system_identifier);
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
    if r.dumps > 0 {
        println!("  with {} dumps ({} objects, {})", r.dumps, r.dump_objects, human_size(r.dump_bytes));
    }
}

async fn run_restore_test(settings: &Settings, args: &Args) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let backup = args.backup.as_deref().unwrap_or("latest");
    if backup == "all" {
        return Err(Fail::new(Code::Usage, "--restore-test restores one backup: give its id, or leave --backup out"));
    }
    let mut req = settings.restore_test_request(backup)?;
    args.target.apply(&mut req.restore)?;
    let repo = super::open_repo(settings).await?;
    let internal = |e: std::io::Error| Fail::new(Code::Internal, e.to_string());
    let (mut int, mut term) =
        (signal(SignalKind::interrupt()).map_err(internal)?, signal(SignalKind::terminate()).map_err(internal)?);
    // On Ctrl-C or SIGTERM the test is dropped, which stops the copy and removes its
    // directory; then the signal ends the process as it would have.
    let began = std::time::Instant::now();
    let result = tokio::select! {
        r = restore_test(&repo, &req) => r,
        _ = int.recv() => die_of(libc::SIGINT),
        _ = term.recv() => die_of(libc::SIGTERM),
    };
    let run = crate::ops::restore_test::outcome(&result, SystemTime::now(), began.elapsed());
    record(settings, &repo, Kind::RestoreTest, run);
    let report = result?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        println!("{text}");
    } else {
        print_restore_test(&report);
    }
    match report.failures.len() {
        0 => Ok(()),
        n => Err(Fail::new(
            Code::Integrity,
            format!("restore test of backup {} failed: {n} failure(s)", report.backup.as_deref().unwrap_or("latest")),
        )),
    }
}

fn die_of(sig: i32) -> ! {
    tracing::warn!("restore test interrupted: the scratch copy was stopped and removed");
    // SAFETY: restoring the default action and raising the signal ends this process.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        libc::raise(sig);
    }
    std::process::exit(128 + sig)
}

fn print_restore_test(r: &RestoreTestReport) {
    println!(
        "restore test of backup {} (PostgreSQL {}) to {}",
        r.backup.as_deref().unwrap_or("latest"),
        r.pg_version.as_deref().unwrap_or("?"),
        r.target
    );
    print!("restored in {:.1}s", r.restore_seconds);
    match &r.recovered {
        Some(p) => println!(
            ", replayed in {:.1}s to {} (last transaction {}), promoted to timeline {}",
            r.replay_seconds,
            p.lsn,
            p.last_transaction_time.as_deref().unwrap_or("none replayed"),
            p.timeline
        ),
        None => println!(),
    }
    if !r.databases.is_empty() {
        println!(
            "amcheck in {} databases ({}): {} B-tree indexes (bt_index_check), {}",
            r.databases.len(),
            r.databases.join(", "),
            r.indexes_checked,
            if r.heap_checked {
                format!("{} tables, materialized views and TOAST tables (verify_heapam)", r.relations_checked)
            } else {
                "no table check (verify_heapam needs amcheck 1.3, PostgreSQL 14)".to_string()
            }
        );
    }
    // A failed check is listed with the failures.
    for c in r.sql_checks.iter().filter(|c| c.passed) {
        println!("ok   sql database {}, check {:?}", c.database, c.sql);
    }
    for f in &r.failures {
        println!("BAD  {} {}: {}", f.stage, f.what, f.problem);
    }
    let outcome = match r.failures.len() {
        0 => "passed".to_string(),
        n => format!("failed: {n} failures"),
    };
    println!("restore test {outcome} in {:.1}s (checks {:.1}s)", r.duration_seconds, r.check_seconds);
}
