//! Logical dumps in the repository: `dumps/<id>/` holds `globals.sql` (`pg_dumpall
//! --globals-only`), one database per prefix (`db1/<file>` for each file of a directory-format
//! dump, or `db1.dump` in custom format) and `dump.json`, written last: a dump without it
//! does not exist (interrupted, or still running). Pure except `read_dumps` and `check_dump`.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::{Repo, StoredObject};
use crate::codec::open_to_vec;
use crate::error::{Code, Fail, Result};
use crate::store::ObjectInfo;

/// Held by a dump for its whole run; prune takes it to know that none runs.
pub const DUMP_LEASE: &str = "locks/dump.json";
pub const RECORD: &str = "dump.json";
pub const GLOBALS: &str = "globals.sql";

/// `dumps/<id>/<file>`.
pub fn dump_object(id: &str, file: &str) -> String {
    format!("dumps/{id}/{file}")
}

/// pg_dump's archive format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum DumpFormat {
    /// One file per table, written by `-j` parallel workers (staged on local disk)
    Directory,
    /// One archive streamed from pg_dump's output (no local disk, no parallelism)
    Custom,
}

/// One database of a dump.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DatabaseDump {
    pub name: String,
    /// Where its objects are: `dumps/<id>/<prefix>/…` (directory) or `dumps/<id>/<prefix>.dump`.
    pub prefix: String,
    pub format: DumpFormat,
    pub timescaledb_version: Option<String>,
    pub duration_seconds: f64,
    pub objects: Vec<StoredObject>,
}

impl DatabaseDump {
    /// The file an object is restored as, inside the restore's directory (pure).
    pub fn file_name<'a>(&self, id: &str, obj: &'a str) -> Option<&'a str> {
        let prefix = match self.format {
            DumpFormat::Directory => format!("dumps/{id}/{}/", self.prefix),
            DumpFormat::Custom => format!("dumps/{id}/"),
        };
        obj.strip_prefix(&prefix).filter(|f| !f.is_empty() && !f.contains('/') && *f != "." && *f != "..")
    }

    pub fn bytes(&self) -> u64 {
        self.objects.iter().map(|o| o.bytes).sum()
    }
}

/// `dump.json`: the record that makes a dump exist.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DumpInfo {
    pub id: String,
    pub system_identifier: String,
    pub server_version: String,
    pub pg_dump_version: String,
    pub jobs: u32,
    pub started_at: String,
    pub finished_at: String,
    pub duration_seconds: f64,
    pub globals: StoredObject,
    pub databases: Vec<DatabaseDump>,
}

impl DumpInfo {
    pub fn finished(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339(&self.finished_at).ok()
    }

    pub fn objects(&self) -> Vec<StoredObject> {
        let dbs = self.databases.iter().flat_map(|d| d.objects.iter().cloned());
        std::iter::once(self.globals.clone()).chain(dbs).collect()
    }

    pub fn bytes(&self) -> u64 {
        self.globals.bytes + self.databases.iter().map(DatabaseDump::bytes).sum::<u64>()
    }

    pub fn stored_bytes(&self) -> u64 {
        self.objects().iter().map(|o| o.stored_bytes).sum()
    }

    /// The database to restore (pure): the one named, or the only one.
    pub fn database(&self, name: Option<&str>) -> std::result::Result<&DatabaseDump, String> {
        let names = || self.databases.iter().map(|d| d.name.as_str()).collect::<Vec<_>>().join(", ");
        match name {
            Some(n) => self
                .databases
                .iter()
                .find(|d| d.name == n)
                .ok_or_else(|| format!("dump {} holds no database {n:?} (it holds {})", self.id, names())),
            None if self.databases.len() == 1 => Ok(&self.databases[0]),
            None => Err(format!("dump {} holds several databases ({}): choose one with --db", self.id, names())),
        }
    }
}

/// Every complete dump among names listed under `dumps/`, oldest first.
pub async fn read_dumps(repo: &Repo, names: &[String]) -> Result<Vec<DumpInfo>> {
    let mut out = Vec::new();
    for name in names.iter().filter(|n| n.ends_with(&format!("/{RECORD}"))) {
        let raw = repo.store.get_bytes(name).await?;
        let plain = open_to_vec(&raw, &repo.keys, name)
            .map_err(|e| Fail::new(Code::Integrity, format!("object {name}: {e}")))?;
        let info: DumpInfo = serde_json::from_slice(&plain)
            .map_err(|e| Fail::new(Code::Integrity, format!("object {name}: not a valid dump record: {e}")))?;
        out.push(info);
    }
    out.sort_by(|a, b| {
        (super::layout::parse_backup_id(&a.id), &a.id).cmp(&(super::layout::parse_backup_id(&b.id), &b.id))
    });
    Ok(out)
}

/// Every object `dump.json` lists is there with its recorded size and digest.
pub async fn check_dump(repo: &Repo, info: &DumpInfo) -> Result<()> {
    let who = format!("dump {}", info.id);
    super::catalog::check_stored(repo, &who, RECORD, "choose another dump (see tidewal list)", &info.objects()).await
}

/// Dumps without `dump.json` (running or interrupted), by id, with their objects and when
/// the newest was written (pure). Only ids of the backup-id form count; `listing` may hold
/// staging leftovers too.
pub fn incomplete_dumps(listing: &[ObjectInfo]) -> Vec<(String, Vec<String>, SystemTime)> {
    let mut by_id: std::collections::BTreeMap<&str, Vec<&ObjectInfo>> = Default::default();
    for o in listing {
        let id = o.name.strip_prefix("dumps/").and_then(|r| r.split_once('/')).map(|(id, _)| id);
        if let Some(id) = id.filter(|id| super::layout::parse_backup_id(id).is_some()) {
            by_id.entry(id).or_default().push(o);
        }
    }
    by_id
        .into_iter()
        .filter(|(id, objs)| !objs.iter().any(|o| o.name == dump_object(id, RECORD)))
        .map(|(id, objs)| {
            let newest = objs.iter().map(|o| o.modified).max().unwrap_or(SystemTime::UNIX_EPOCH);
            (id.to_string(), objs.iter().map(|o| o.name.clone()).collect(), newest)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn incomplete_and_names() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let o = |name: &str, s: u64| ObjectInfo { name: name.into(), size: 1, modified: t + Duration::from_secs(s) };
        let (done, killed) = ("20270101T000000.000000Z-aaaaaa", "20270101T000001.000000Z-bbbbbb");
        let listing = vec![
            o(&format!("dumps/{done}/globals.sql"), 0),
            o(&format!("dumps/{done}/db1/toc.dat"), 1),
            o(&format!("dumps/{done}/dump.json"), 2),
            o(&format!("dumps/{killed}/globals.sql"), 3),
            o(&format!("dumps/{killed}/db1/toc.dat#1"), 4),
            o("dumps/not-an-id/x", 5),
        ];
        let got = incomplete_dumps(&listing);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, killed);
        assert_eq!(got[0].1.len(), 2);
        assert_eq!(got[0].2, t + Duration::from_secs(4));

        let db = DatabaseDump {
            name: "app".into(),
            prefix: "db1".into(),
            format: DumpFormat::Directory,
            timescaledb_version: None,
            duration_seconds: 0.0,
            objects: vec![],
        };
        assert_eq!(db.file_name(done, &format!("dumps/{done}/db1/3012.dat")), Some("3012.dat"));
        assert_eq!(db.file_name(done, &format!("dumps/{done}/db1/../x")), None);
        assert_eq!(db.file_name(done, &format!("dumps/{done}/db2/x")), None);
        let custom = DatabaseDump { format: DumpFormat::Custom, ..db };
        assert_eq!(custom.file_name(done, &format!("dumps/{done}/db1.dump")), Some("db1.dump"));
    }
}
