//! The restore test (`verify --restore-test`): restore a backup into a scratch directory as
//! a copy (archiving off, nothing written into the repository), start PostgreSQL on a socket
//! there, let it recover to the end of the archive (or the target) and promote, run amcheck
//! and the configured SQL checks, then stop it and remove the directory, also on failure.
//! The daemon runs the same function on a schedule and records its [`outcome`].

mod checks;
pub(crate) mod server;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

pub use server::FORCED_SETTINGS;
use server::{find_bin, PgBin, Scratch};

use crate::error::{Code, Fail, Result};
use crate::ops::last_run::LastRun;
use crate::ops::restore::{restore, Action, RestoreRequest};
use crate::pg::sql;
use crate::repo::Repo;

/// A restore test, as plain values.
#[derive(Clone, Debug)]
pub struct RestoreTestRequest {
    /// Which backup and target; where it goes, the target action and archiving are set by
    /// the test (a promoted copy in the scratch directory).
    pub restore: RestoreRequest,
    /// Directory with the server binaries [default: searched for the backup's major]
    pub pg_bin: Option<PathBuf>,
    /// Where the scratch directory is made.
    pub scratch_parent: PathBuf,
    /// The OS user the server runs as when this process runs as root.
    pub os_user: String,
    /// The role the checks connect as.
    pub user: String,
    /// Queries that must each return one boolean true.
    pub sql: Vec<String>,
    /// The database they run in.
    pub database: String,
    pub heapallindexed: bool,
    /// Extra server settings for the copy.
    pub server_settings: Vec<(String, String)>,
    /// The longest recovery may take.
    pub timeout: Duration,
}

/// Where recovery ended on the copy.
#[derive(Clone, Debug, Serialize)]
pub struct RecoveredPoint {
    /// The end of the last WAL record replayed
    pub lsn: String,
    /// The commit time of the last transaction replayed (RFC 3339, UTC), if any was
    pub last_transaction_time: Option<String>,
    /// The timeline the copy continues on after promotion
    pub timeline: u32,
}

#[derive(Clone, Debug, Serialize)]
pub struct SqlCheck {
    pub sql: String,
    pub database: String,
    pub passed: bool,
    pub problem: Option<String>,
}

/// One thing that failed: the stage ("restore", "recovery", "amcheck", "sql", "cleanup"),
/// what (a database and relation, a check), and what is wrong.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    pub stage: String,
    pub what: String,
    pub problem: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct RestoreTestReport {
    pub started_at: String,
    pub success: bool,
    pub backup: Option<String>,
    pub pg_version: Option<String>,
    /// "end of the archive", or the target
    pub target: String,
    /// The scratch directory (removed)
    pub scratch_dir: String,
    pub server_bin: Option<String>,
    pub restore_seconds: f64,
    pub replay_seconds: f64,
    pub check_seconds: f64,
    pub duration_seconds: f64,
    pub recovered: Option<RecoveredPoint>,
    pub databases: Vec<String>,
    pub indexes_checked: u64,
    pub relations_checked: u64,
    /// Whether verify_heapam was available (amcheck 1.3 or later)
    pub heap_checked: bool,
    pub sql_checks: Vec<SqlCheck>,
    pub failures: Vec<Failure>,
}

/// What is recorded of a test that ended at `finished_at` after `took` (for the metrics and
/// the daemon's schedule): a success only when it ran to the end and nothing failed; the
/// failures counted (one when it could not finish), the first one named.
pub fn outcome(result: &Result<RestoreTestReport>, finished_at: SystemTime, took: Duration) -> LastRun {
    let (problems, summary) = match result {
        Ok(r) if r.success && r.failures.is_empty() => {
            (0, format!("backup {} restored and checked", r.backup.as_deref().unwrap_or("latest")))
        }
        Ok(r) => (
            r.failures.len().max(1) as u64,
            r.failures.first().map_or("failed".into(), |f| format!("{} {}: {}", f.stage, f.what, f.problem)),
        ),
        Err(e) => (1, e.to_string()),
    };
    LastRun::new(finished_at, took, problems, summary)
}

/// The target in words.
pub fn describe_target(r: &RestoreRequest) -> String {
    let point = if let Some(t) = r.target_time {
        format!("time {}", humantime::format_rfc3339_micros(t))
    } else if let Some(l) = r.target_lsn {
        format!("lsn {l}")
    } else if let Some(x) = &r.target_xid {
        format!("xid {x}")
    } else if let Some(n) = &r.target_name {
        format!("restore point {n:?}")
    } else if r.immediate {
        "the end of the backup (immediate)".into()
    } else {
        "the end of the archive".into()
    };
    match &r.target_timeline {
        Some(t) => format!("{point} on timeline {t}"),
        None => point,
    }
}

/// Run a restore test. Problems of the copy (a backup that does not restore, recovery that
/// fails, corruption, a check that is not true) are failures in the report; the store, the
/// configuration and this host's problems are errors with their own codes.
pub async fn restore_test(repo: &Repo, req: &RestoreTestRequest) -> Result<RestoreTestReport> {
    let began = Instant::now();
    let owner = server::owner(&req.os_user)?;
    // Before anything is downloaded: the binaries for the repository's major.
    let bin = find_bin(repo.identity.pg_major(), req.pg_bin.as_deref())?;
    let mut scratch = Scratch::create(&req.scratch_parent, owner)?;
    let mut report = RestoreTestReport {
        started_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        success: false,
        // The one asked for; "latest" is resolved by the restore.
        backup: Some(req.restore.backup.clone()).filter(|b| b != "latest"),
        target: describe_target(&req.restore),
        scratch_dir: scratch.dir.display().to_string(),
        ..RestoreTestReport::default()
    };
    let ran = run(repo, req, &mut scratch, bin, &mut report).await;
    // Always: stop the server and remove the directory (off the reactor: it waits).
    match tokio::task::spawn_blocking(move || scratch.remove()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            report.failures.push(Failure { stage: "cleanup".into(), what: report.scratch_dir.clone(), problem: e })
        }
        Err(e) => return Err(Fail::new(Code::Internal, format!("restore test cleanup: {e}"))),
    }
    ran?;
    report.duration_seconds = began.elapsed().as_secs_f64();
    report.success = report.failures.is_empty();
    Ok(report)
}

async fn run(
    repo: &Repo,
    req: &RestoreTestRequest,
    scratch: &mut Scratch,
    mut bin: PgBin,
    report: &mut RestoreTestReport,
) -> Result<()> {
    let mut restore_req = req.restore.clone();
    restore_req.to = scratch.data();
    // Tablespaces too go into the scratch directory, never to their original places.
    restore_req.tablespace_root = Some(scratch.tablespaces());
    restore_req.tablespace_map = Vec::new();
    restore_req.check_space = true;
    restore_req.force = false;
    restore_req.as_primary = false;
    restore_req.port = None;
    restore_req.target_action = Some(Action::Promote);
    let t = Instant::now();
    let restored = match restore(repo, &restore_req).await {
        Ok(r) => r,
        Err(f) if f.code == Code::Integrity => {
            report.restore_seconds = t.elapsed().as_secs_f64();
            report.failures.push(Failure { stage: "restore".into(), what: "backup".into(), problem: f.message });
            return Ok(());
        }
        Err(f) => return Err(f),
    };
    report.restore_seconds = t.elapsed().as_secs_f64();
    report.backup = Some(restored.backup.id.clone());
    report.pg_version = Some(restored.backup.pg_version.clone());
    // The backup's own major decides (a repository may outlive an upgrade).
    let version = std::fs::read_to_string(scratch.data().join("PG_VERSION")).unwrap_or_default();
    if let Ok(major) = version.trim().parse::<u32>() {
        if major != bin.major {
            bin = find_bin(major, req.pg_bin.as_deref())?;
        }
    }
    report.server_bin = Some(bin.dir.display().to_string());
    let t = Instant::now();
    scratch.start(&bin, &req.server_settings)?;
    let Some(client) = wait_promoted(scratch, req, report).await? else {
        report.replay_seconds = t.elapsed().as_secs_f64();
        return Ok(());
    };
    report.replay_seconds = t.elapsed().as_secs_f64();
    let t = Instant::now();
    match recovered_point(&client).await {
        Ok(p) => report.recovered = Some(p),
        Err(e) => {
            report.failures.push(Failure { stage: "recovery".into(), what: "recovered point".into(), problem: e })
        }
    }
    let connect = |db: &str| scratch.conninfo(&req.user, db);
    checks::amcheck(&connect, &client, req.heapallindexed, report).await;
    checks::sql_checks(&client, &req.database, &req.sql, report).await;
    report.check_seconds = t.elapsed().as_secs_f64();
    Ok(())
}

/// Wait until the copy has recovered and promoted; None (a failure recorded) when the server
/// stopped first or the time ran out.
async fn wait_promoted(
    scratch: &mut Scratch,
    req: &RestoreTestRequest,
    report: &mut RestoreTestReport,
) -> Result<Option<tokio_postgres::Client>> {
    let began = Instant::now();
    let mut query_errors = 0;
    let mut fail = |problem: String| {
        report.failures.push(Failure { stage: "recovery".into(), what: "server".into(), problem });
        Ok(None)
    };
    loop {
        if let Some(status) = scratch.exited() {
            let log = scratch.log_tail(20);
            return fail(format!("the server stopped before recovery finished ({status}); its log ends:\n{log}"));
        }
        if began.elapsed() > req.timeout {
            let log = scratch.log_tail(20);
            let limit = humantime::format_duration(req.timeout);
            return fail(format!("recovery did not finish within {limit} (verify.timeout); the log ends:\n{log}"));
        }
        match sql::connect(Some(&scratch.conninfo(&req.user, &req.database))).await {
            Ok(c) => match c.query_one("SELECT pg_is_in_recovery()", &[]).await {
                Ok(row) if !row.get::<_, bool>(0) => return Ok(Some(c)),
                Ok(_) => query_errors = 0,
                // The server accepts connections but cannot answer: waiting will not help.
                Err(e) => {
                    query_errors += 1;
                    if query_errors >= 20 {
                        let e = sql::error_chain(&e);
                        return fail(format!("the copy accepts connections but fails a plain query: {e}"));
                    }
                }
            },
            // The configuration names a role or database the copy lacks: waiting cannot help.
            Err(e) if e.contains("does not exist") => {
                return Err(Fail::new(
                    Code::Usage,
                    format!("{e} in the restored copy: set [verify] user and database to ones it has"),
                ))
            }
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn recovered_point(c: &tokio_postgres::Client) -> std::result::Result<RecoveredPoint, String> {
    let row = c
        .query_one(
            "SELECT pg_last_wal_replay_lsn()::text, \
             to_char(pg_last_xact_replay_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
             substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)",
            &[],
        )
        .await
        .map_err(|e| format!("cannot read where recovery ended: {e}"))?;
    let tli: String = row.get(2);
    Ok(RecoveredPoint {
        lsn: row.get::<_, Option<String>>(0).unwrap_or_default(),
        last_transaction_time: row.get(1),
        timeline: u32::from_str_radix(&tli, 16).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failures: usize) -> RestoreTestReport {
        RestoreTestReport {
            success: failures == 0,
            failures: (0..failures)
                .map(|_| Failure { stage: "sql".into(), what: "x".into(), problem: "returned false".into() })
                .collect(),
            ..RestoreTestReport::default()
        }
    }

    #[test]
    fn outcome_is_a_success_only_without_failures() {
        let (at, took) = (SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000), Duration::from_secs(42));
        let o = outcome(&Ok(report(0)), at, took);
        assert_eq!((o.success, o.problems, o.finished, o.duration_seconds), (true, 0, 1_800_000_000.0, 42.0));
        let o = outcome(&Ok(report(2)), at, took);
        assert_eq!((o.success, o.problems, o.summary.as_str()), (false, 2, "sql x: returned false"));
        let o = outcome(&Err(Fail::new(Code::Storage, "down")), at, took);
        assert_eq!((o.success, o.problems), (false, 1));
        assert!(o.summary.contains("down"), "{}", o.summary);
    }

    #[test]
    fn targets_in_words() {
        let base = RestoreRequest {
            to: PathBuf::new(),
            backup: "latest".into(),
            target_time: None,
            target_lsn: None,
            target_xid: None,
            target_name: None,
            immediate: false,
            target_action: None,
            target_timeline: None,
            tablespace_map: Vec::new(),
            force: false,
            as_primary: false,
            port: None,
            exe: PathBuf::new(),
            fetch_config: String::new(),
            conninfo: None,
            tablespace_root: None,
            check_space: false,
        };
        assert_eq!(describe_target(&base), "the end of the archive");
        let named = RestoreRequest { target_name: Some("before".into()), ..base.clone() };
        assert_eq!(describe_target(&named), "restore point \"before\"");
        let lsn = RestoreRequest {
            target_lsn: Some("0/5000028".parse().unwrap()),
            target_timeline: Some("2".into()),
            ..base
        };
        assert_eq!(describe_target(&lsn), "lsn 0/5000028 on timeline 2");
    }
}
