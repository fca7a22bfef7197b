//! The backup catalog: reading `backup.json` records and choosing a backup for a target.

use serde::{Deserialize, Serialize};

use super::{Repo, StoredObject};
use crate::codec::open_to_vec;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};

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

/// Contiguous runs of archived segments, per timeline: `(first segno, last segno)`.
pub type Coverage = std::collections::BTreeMap<u32, Vec<(u64, u64)>>;

/// WAL coverage from object names under `wal/` (pure). Partial segments, history files
/// and backup labels do not count as coverage.
pub fn wal_coverage(names: &[String], seg_size: u64) -> Coverage {
    let mut segs: Vec<(u32, u64)> = names
        .iter()
        .filter_map(|n| n.rsplit('/').next())
        .filter_map(|file| SegmentId::parse(file, seg_size).ok())
        .map(|s| (s.tli, s.segno))
        .collect();
    segs.sort_unstable();
    segs.dedup();
    let mut out = Coverage::new();
    for (tli, segno) in segs {
        let runs = out.entry(tli).or_default();
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == segno => *last = segno,
            _ => runs.push((segno, segno)),
        }
    }
    out
}

/// The first segment missing between `first` and `last` on a timeline, if any (pure).
pub fn first_missing(cov: &Coverage, tli: u32, first: u64, last: u64) -> Option<u64> {
    let runs = cov.get(&tli).map(Vec::as_slice).unwrap_or(&[]);
    let mut want = first;
    for &(a, b) in runs {
        if b < want {
            continue;
        }
        if a > want {
            return Some(want);
        }
        want = b + 1;
        if want > last {
            return None;
        }
    }
    (want <= last).then_some(want)
}

/// Every segment from the backup's start to its end is archived (pure).
pub fn backup_wal_complete(b: &BackupInfo, cov: &Coverage, seg: u64) -> bool {
    match (SegmentId::parse(&b.start_wal, seg), SegmentId::parse(&b.end_wal, seg)) {
        (Ok(s), Ok(e)) if s.tli == e.tli => first_missing(cov, s.tli, s.segno, e.segno).is_none(),
        (Ok(s), Ok(e)) => {
            first_missing(cov, s.tli, s.segno, s.segno).is_none()
                && first_missing(cov, e.tli, e.segno, e.segno).is_none()
        }
        _ => false,
    }
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
    fn coverage_and_gaps() {
        let seg = 16 << 20;
        let names: Vec<String> = [
            "wal/00000001/000000010000000000000002",
            "wal/00000001/000000010000000000000003",
            "wal/00000001/000000010000000000000005",
            "wal/00000002.history",
            "wal/00000002/000000020000000000000005",
            "wal/00000001/000000010000000000000005.partial",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let cov = wal_coverage(&names, seg);
        assert_eq!(cov[&1], vec![(2, 3), (5, 5)]);
        assert_eq!(cov[&2], vec![(5, 5)]);
        assert_eq!(first_missing(&cov, 1, 2, 3), None);
        assert_eq!(first_missing(&cov, 1, 2, 5), Some(4));
        assert_eq!(first_missing(&cov, 1, 5, 6), Some(6));
        assert_eq!(first_missing(&cov, 1, 1, 2), Some(1));
        assert_eq!(first_missing(&cov, 3, 1, 1), Some(1));
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
