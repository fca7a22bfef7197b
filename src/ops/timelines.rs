//! Which line of history a restore, `list` or the daemon follows: the repository's timelines
//! read once (`survey`), split detection (`repo::timelines`, pure), and the server's own
//! timeline from `IDENTIFY_SYSTEM` when two clusters archive into one repository.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::error::{Code, Fail, Result};
use crate::pg::history::HistoryEntry;
use crate::pg::replication::ReplConn;
use crate::pg::sql;
use crate::repo::catalog::{history_timelines, load_history, wal_route, BackupInfo};
use crate::repo::timelines::{analyze, choose_timeline, Split, Timelines};
use crate::repo::Repo;
use crate::store::ObjectInfo;

/// How long to wait for the server to say which timeline it is on.
const ASK_SERVER: Duration = Duration::from_secs(5);

/// The repository's WAL listing (with upload times), every history file, and what they say.
pub struct Survey {
    pub listing: Vec<ObjectInfo>,
    pub histories: BTreeMap<u32, Vec<HistoryEntry>>,
    pub timelines: Timelines,
}

impl Survey {
    pub fn splits(&self) -> Vec<Split> {
        self.timelines.splits()
    }
}

/// List `wal/` once, read every history file and classify the branch points.
pub async fn survey(repo: &Repo) -> Result<Survey> {
    let listing = repo.store.list_meta("wal").await?;
    let histories = histories(repo, &listing).await?;
    let timelines = analyze(&listing, &histories, repo.identity.wal_segment_size)
        .map_err(|e| Fail::new(Code::Integrity, format!("the repository's timelines cannot be read: {e}")))?;
    Ok(Survey { listing, histories, timelines })
}

/// Every history file the `wal/` listing names, parsed (any unreadable one is an error).
pub async fn histories(repo: &Repo, listing: &[ObjectInfo]) -> Result<BTreeMap<u32, Vec<HistoryEntry>>> {
    let names: Vec<String> = listing.iter().map(|o| o.name.clone()).collect();
    let mut histories = BTreeMap::new();
    for tli in history_timelines(&names) {
        histories.insert(tli, load_history(repo, tli).await?);
    }
    Ok(histories)
}

/// The timeline the server behind `conninfo` is on, if it answers within a few seconds and
/// is this repository's cluster. `None` says nothing about the server: it may be down.
pub async fn server_timeline(repo: &Repo, conninfo: Option<&str>) -> Option<u32> {
    let ask = async {
        let cfg = sql::resolve_config(conninfo, true)?;
        let mut conn = ReplConn::connect(&cfg).await?;
        conn.identify_system().await
    };
    match tokio::time::timeout(ASK_SERVER, ask).await {
        Ok(Ok(ident)) if ident.system_identifier == repo.identity.system_id() => Some(ident.timeline),
        Ok(Ok(ident)) => {
            tracing::warn!(
                "the configured server is database system {}, not this repository's {}: its timeline is not used",
                ident.system_identifier,
                repo.identity.system_identifier
            );
            None
        }
        Ok(Err(e)) => {
            tracing::debug!("cannot ask the server for its timeline: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("the server did not say its timeline within {ASK_SERVER:?}");
            None
        }
    }
}

/// The `--target-timeline` to follow when none was given: the timeline of the server the
/// configuration points at, when it answers and the repository knows that timeline (a split
/// is not visible until production has written a few segments past the branch, so the
/// server is asked every time); otherwise PostgreSQL's `latest` while the repository has one
/// live line, and on a split an error that names both branches.
pub async fn resolve(
    repo: &Repo,
    survey: &Survey,
    spec: Option<&str>,
    conninfo: Option<&str>,
) -> Result<Option<String>> {
    if spec.is_some() {
        return Ok(spec.map(str::to_string));
    }
    let server = server_timeline(repo, conninfo).await;
    // A timeline whose history file is not archived yet cannot be followed from here.
    let known = server.filter(|t| *t == 1 || survey.histories.contains_key(t));
    if let Some(tli) = known {
        if survey.timelines.live.len() > 1 {
            tracing::info!("two lines of history in the repository: following timeline {tli}, where the server is");
        }
        return Ok(Some(tli.to_string()));
    }
    if survey.timelines.live.len() < 2 {
        return Ok(None);
    }
    let chosen = choose_timeline(&survey.timelines, None, repo.identity.wal_segment_size)
        .map_err(|e| Fail::new(Code::Conflict, e))?;
    Ok(chosen.map(|t| t.to_string()))
}

/// Whether recovery from `b` can follow timeline `tli` (the backup lies on its line).
pub fn on_line(b: &BackupInfo, tli: u32, survey: &Survey, seg_size: u64) -> bool {
    let Ok(end) = crate::pg::lsn::SegmentId::parse(&b.end_wal, seg_size) else { return false };
    let history = survey.histories.get(&tli).map(Vec::as_slice).unwrap_or(&[]);
    wal_route(end, b.end(), tli, history, seg_size).is_ok()
}

/// One line per split, for `list`, `check` and the daemon's log.
pub fn describe_split(s: &Split, seg_size: u64) -> String {
    let child = match &s.child {
        Some(c) => format!("{} .. {}", c.first.file_name(seg_size), c.last.file_name(seg_size)),
        None => "its history file only".into(),
    };
    format!(
        "timeline {} branched off timeline {} at {} ({child}), and timeline {} went on writing ({} .. {}, last upload {})",
        s.child_tli,
        s.parent_tli,
        s.switchpoint,
        s.parent_tli,
        s.parent.first.file_name(seg_size),
        s.parent.last.file_name(seg_size),
        humantime::format_rfc3339_seconds(s.parent.last_upload)
    )
}
