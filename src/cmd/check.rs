//! `tidewal check`: is the server set up to archive into this repository, and is the
//! repository usable? Prints what is wrong and the exact lines that fix it.

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::copy::DestState;
use crate::ops::timelines;
use crate::pg::lsn::format_size;
use crate::pg::replication::ReplConn;
use crate::pg::sql;
use crate::repo::Repo;
use crate::store::Store;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine-readable output (stable field names); the exit code is the same
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Default)]
struct Report {
    lines: Vec<(Level, String)>,
    fixes: Vec<String>,
    restart: bool,
}

impl Report {
    fn add(&mut self, level: Level, text: impl Into<String>) {
        self.lines.push((level, text.into()));
    }

    fn fix(&mut self, line: String, restart: bool) {
        self.fixes.push(line);
        self.restart |= restart;
    }

    fn worst(&self) -> Level {
        self.lines.iter().map(|(l, _)| *l).max().unwrap_or(Level::Ok)
    }

    /// `--json`: every check with its level, the lines to put into postgresql.conf, and
    /// whether they need a restart.
    fn json(&self, repository: &str) -> serde_json::Value {
        let checks: Vec<serde_json::Value> =
            self.lines.iter().map(|(level, text)| serde_json::json!({"level": level, "text": text})).collect();
        serde_json::json!({
            "repository": repository,
            "ok": self.worst() != Level::Fail,
            "checks": checks,
            "fixes": self.fixes,
            "restart_needed": self.restart,
        })
    }

    fn print(&self) {
        for (level, text) in &self.lines {
            let tag = match level {
                Level::Ok => "ok  ",
                Level::Warn => "WARN",
                Level::Fail => "FAIL",
            };
            println!("  {tag}  {text}");
        }
        if !self.fixes.is_empty() {
            println!();
            println!(
                "Put these lines into postgresql.conf (or use ALTER SYSTEM SET), then {}:",
                if self.restart { "restart PostgreSQL" } else { "reload PostgreSQL (SELECT pg_reload_conf())" }
            );
            for f in &self.fixes {
                println!("  {f}");
            }
        }
    }
}

/// The archive_command line this installation should use.
fn archive_command(settings: &Settings) -> String {
    let exe = std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "tidewal".into());
    match &settings.config_path {
        Some(c) if c.as_os_str() != crate::config::DEFAULT_CONFIG => {
            format!("'{exe} --config {} wal-push %p'", c.display())
        }
        _ => format!("'{exe} wal-push %p'"),
    }
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let mut r = Report::default();
    if !args.json {
        println!("repository {}", settings.repo_url);
    }
    let repo = check_repository(settings, &mut r).await;
    if let Some(repo) = &repo {
        check_timelines(repo, &mut r).await;
        check_copies(settings, repo, &mut r).await;
    }

    match sql::connect(settings.conninfo.as_deref()).await {
        Err(e) => r.add(Level::Fail, e),
        Ok(client) => {
            let info = sql::server_info(&client).await.map_err(|e| Fail::new(Code::Postgres, e))?;
            r.add(
                Level::Ok,
                format!("server: PostgreSQL {}, database system {}", info.version, info.system_identifier),
            );
            if let Some(repo) = &repo {
                let id = &repo.identity;
                if id.system_id() != info.system_identifier {
                    r.add(
                        Level::Fail,
                        format!(
                            "the repository belongs to database system {}, the server is {}: use a separate repository",
                            id.system_identifier, info.system_identifier
                        ),
                    );
                }
                if id.wal_segment_size != info.wal_segment_size {
                    r.add(
                        Level::Fail,
                        format!(
                            "wal_segment_size = {} but the repository holds {} segments",
                            format_size(info.wal_segment_size),
                            format_size(id.wal_segment_size)
                        ),
                    );
                } else {
                    r.add(Level::Ok, format!("wal_segment_size = {}", format_size(info.wal_segment_size)));
                }
            }
            let names = ["wal_level", "archive_mode", "archive_command", "archive_timeout", "max_wal_senders"];
            let values = sql::settings(&client, &names).await.map_err(|e| Fail::new(Code::Postgres, e))?;
            let get = |n: &str| values.iter().find(|(k, _, _)| k == n).map(|(_, v, _)| v.clone()).unwrap_or_default();
            check_settings(settings, &mut r, &get);
            check_replication(settings, &mut r).await;
        }
    }
    if args.json {
        println!("{:#}", r.json(&crate::redact::text(&settings.repo_url)));
    } else {
        r.print();
    }
    match r.worst() {
        Level::Fail => Err(Fail::new(Code::CheckFailed, "check found problems; fix the FAIL lines above")),
        _ => Ok(()),
    }
}

/// Each `[[repository.copy]]`: reachable, create-only writes, and empty or this repository.
async fn check_copies(settings: &Settings, repo: &Repo, r: &mut Report) {
    for c in &settings.copies {
        let name = format!("copy {} ({})", c.number, c.url);
        let state = match Store::open(&c.url, &c.store) {
            Ok(store) => crate::ops::copy::check_dest(repo, store).await,
            Err(crate::store::StoreError::NoDirectory(_)) => {
                r.add(
                    Level::Warn,
                    format!("{name}: the directory does not exist yet; the daemon makes it at its first round (its parent must be writable by the daemon's user)"),
                );
                continue;
            }
            Err(e) => Err(e.into()),
        };
        match state {
            Ok(DestState::Empty) => {
                r.add(Level::Ok, format!("{name}: reachable and empty; the daemon fills it at its first round"))
            }
            Ok(DestState::Same { conditional }) => r.add(
                Level::Ok,
                format!(
                    "{name}: reachable, holds this repository{}; read it with --from-repo {}",
                    if conditional { "" } else { " (conditional writes ignored, accepted by configuration)" },
                    c.number
                ),
            ),
            Err(e) => r.add(Level::Fail, format!("{name}: {}", e.message)),
        }
    }
}

/// Two clusters archiving into one repository (a split) break the window for both.
async fn check_timelines(repo: &Repo, r: &mut Report) {
    let seg = repo.identity.wal_segment_size;
    match timelines::survey(repo).await {
        Err(e) => r.add(Level::Fail, e.message),
        Ok(survey) => {
            let splits = survey.splits();
            for s in &splits {
                r.add(
                    Level::Fail,
                    format!(
                        "two clusters archive into this repository: {}. Stop archiving from the one that is not production (a restored copy?), then keep the repository's window in mind: restore with --target-timeline {} or {}",
                        timelines::describe_split(s, seg),
                        s.parent_tli,
                        s.child_tli
                    ),
                );
            }
            match survey.timelines.live.as_slice() {
                [one] if splits.is_empty() => {
                    r.add(Level::Ok, format!("one line of history, ending on timeline {}", one.tli))
                }
                [_, _, ..] if splits.is_empty() => {
                    let tlis: Vec<String> = survey.timelines.live.iter().map(|l| l.tli.to_string()).collect();
                    r.add(
                        Level::Warn,
                        format!(
                            "timelines {} each end a line of history: restore needs --target-timeline",
                            tlis.join(", ")
                        ),
                    )
                }
                _ => {}
            }
        }
    }
}

/// Base backups and WAL streaming need a replication connection; archiving does not.
async fn check_replication(settings: &Settings, r: &mut Report) {
    let outcome = async {
        let cfg = sql::resolve_config(settings.conninfo.as_deref(), true)?;
        let mut conn = ReplConn::connect(&cfg).await?;
        conn.identify_system().await
    }
    .await;
    match outcome {
        Ok(id) => r.add(Level::Ok, format!("replication connection works (timeline {}, WAL at {})", id.timeline, id.xlogpos)),
        Err(e) => r.add(
            Level::Warn,
            format!("replication connection failed: {e}; base backups need a role with REPLICATION and a pg_hba.conf line for the replication database"),
        ),
    }
}

async fn check_repository(settings: &Settings, r: &mut Report) -> Option<Repo> {
    let store = match Store::open(&settings.repo_url, &settings.store) {
        Ok(s) => s,
        Err(e) => {
            r.add(Level::Fail, e.to_string());
            return None;
        }
    };
    match store.probe_conditional_writes(&super::init::probe_name()).await {
        Ok(true) => r.add(Level::Ok, "store is reachable and writable, and refuses overwrites (conditional writes honoured)"),
        Ok(false) if store.requires_conditional_writes() => r.add(
            Level::Fail,
            "store is reachable and writable, but ignores conditional writes: two writers could both store different content under one name. Use a store that honours If-None-Match, or set repository.require_conditional_writes = false if only one writer ever writes here",
        ),
        Ok(false) => r.add(
            Level::Warn,
            "store is reachable and writable, but ignores conditional writes (accepted by repository.require_conditional_writes = false): tidewal checks before and after each write, which cannot stop two concurrent writers",
        ),
        Err(e) => {
            r.add(Level::Fail, format!("store is not usable: {e}"));
            return None;
        }
    }
    match Repo::open(store, settings.keys.clone(), settings.lz4).await {
        Ok(repo) => {
            let id = &repo.identity;
            r.add(
                Level::Ok,
                format!(
                    "repository: database system {}, PostgreSQL {}, {} segments, {}",
                    id.system_identifier,
                    id.pg_major(),
                    format_size(id.wal_segment_size),
                    id.key_id
                        .as_ref()
                        .map(|k| format!("encrypted with key {k}, {}", id.cipher.name()))
                        .unwrap_or_else(|| "not encrypted".into())
                ),
            );
            Some(repo)
        }
        Err(e) => {
            r.add(Level::Fail, e.message);
            None
        }
    }
}

fn check_settings(settings: &Settings, r: &mut Report, get: &dyn Fn(&str) -> String) {
    let level = get("wal_level");
    if level == "replica" || level == "logical" {
        r.add(Level::Ok, format!("wal_level = {level}"));
    } else {
        r.add(Level::Fail, format!("wal_level = {level}: archiving needs replica or logical"));
        r.fix("wal_level = replica".into(), true);
    }
    let mode = get("archive_mode");
    if mode == "on" || mode == "always" {
        r.add(Level::Ok, format!("archive_mode = {mode}"));
    } else {
        r.add(Level::Fail, format!("archive_mode = {mode}: PostgreSQL archives nothing"));
        r.fix("archive_mode = on".into(), true);
    }
    let cmd = get("archive_command");
    if cmd.contains("tidewal") && cmd.contains("wal-push") && cmd.contains("%p") {
        r.add(Level::Ok, format!("archive_command = '{cmd}'"));
    } else {
        r.add(Level::Fail, format!("archive_command = '{cmd}': it must call tidewal wal-push %p"));
        r.fix(format!("archive_command = {}", archive_command(settings)), false);
    }
    let timeout: u64 = get("archive_timeout").parse().unwrap_or(0);
    match timeout {
        0 => {
            r.add(Level::Fail, "archive_timeout = 0: a quiet cluster ships WAL only when a segment fills, so recent commits may be unarchived for hours");
            r.fix("archive_timeout = 60".into(), false);
        }
        1..=60 => r.add(Level::Ok, format!("archive_timeout = {timeout}s")),
        _ => {
            r.add(Level::Warn, format!("archive_timeout = {timeout}s: commits can wait up to that long before they are archived (60s recommended)"));
            r.fix("archive_timeout = 60".into(), false);
        }
    }
    let senders: u64 = get("max_wal_senders").parse().unwrap_or(0);
    if senders >= 2 {
        r.add(Level::Ok, format!("max_wal_senders = {senders}"));
    } else {
        r.add(Level::Warn, format!("max_wal_senders = {senders}: base backups and WAL streaming need at least 2"));
        r.fix("max_wal_senders = 10".into(), true);
    }
}
