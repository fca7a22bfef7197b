//! The backup catalog: reading `backup.json` records and choosing a backup for a target.

use serde::{Deserialize, Serialize};

use super::{Repo, StoredObject};
use crate::codec::open_to_vec;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::Lsn;

/// `backup.json`: the record that makes a backup exist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BackupInfo {
    pub id: String,
    pub label: String,
    pub system_identifier: String,
    pub pg_version: String,
    pub timescaledb_version: Option<String>,
    pub timeline: u32,
    pub start_lsn: String,
    pub end_lsn: String,
    pub start_wal: String,
    pub end_wal: String,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    pub tablespaces: Vec<(u32, String)>,
    pub objects: Vec<StoredObject>,
}

impl BackupInfo {
    pub fn end(&self) -> Lsn {
        self.end_lsn.parse().unwrap_or_default()
    }
}

/// Every complete backup (one with `backup.json`), oldest first.
pub async fn list_backups(repo: &Repo) -> Result<Vec<BackupInfo>> {
    let mut out = Vec::new();
    for name in repo.store.list("backups").await? {
        if !name.ends_with("/backup.json") {
            continue;
        }
        let raw = repo.store.get_bytes(&name).await?;
        let plain = open_to_vec(&raw, &repo.keys, &name)
            .map_err(|e| Fail::new(Code::Integrity, format!("object {name}: {e}")))?;
        let info: BackupInfo = serde_json::from_slice(&plain)
            .map_err(|e| Fail::new(Code::Integrity, format!("object {name}: not a valid backup record: {e}")))?;
        out.push(info);
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

/// What a restore aims at, as far as choosing a backup is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Latest,
    /// RFC 3339 UTC, comparable as text with `finished_at`.
    Time(String),
    Lsn(Lsn),
}

/// The newest backup that finished before the target (pure).
pub fn choose<'a>(backups: &'a [BackupInfo], target: &Target) -> Option<&'a BackupInfo> {
    backups.iter().rev().find(|b| match target {
        Target::Latest => true,
        Target::Time(t) => b.finished_at.as_str() <= t.as_str(),
        Target::Lsn(l) => b.end() <= *l,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, finished: &str, end: &str) -> BackupInfo {
        BackupInfo {
            id: id.into(),
            label: String::new(),
            system_identifier: "1".into(),
            pg_version: "15".into(),
            timescaledb_version: None,
            timeline: 1,
            start_lsn: "0/1000000".into(),
            end_lsn: end.into(),
            start_wal: String::new(),
            end_wal: String::new(),
            started_at: finished.into(),
            finished_at: finished.into(),
            duration_seconds: 1.0,
            tablespaces: vec![],
            objects: vec![],
        }
    }

    #[test]
    fn chooses_newest_before_target() {
        let b = vec![info("a", "2026-11-20T00:00:00Z", "0/3000000"), info("b", "2026-11-22T00:00:00Z", "0/9000000")];
        assert_eq!(choose(&b, &Target::Latest).unwrap().id, "b");
        assert_eq!(choose(&b, &Target::Time("2026-11-21T00:00:00Z".into())).unwrap().id, "a");
        assert_eq!(choose(&b, &Target::Time("2026-11-23T00:00:00Z".into())).unwrap().id, "b");
        assert!(choose(&b, &Target::Time("2026-11-19T00:00:00Z".into())).is_none());
        assert_eq!(choose(&b, &Target::Lsn("0/5000000".parse().unwrap())).unwrap().id, "a");
    }
}
