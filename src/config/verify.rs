//! The `[verify]` section (what `verify --restore-test` needs), and the plain requests for
//! a restore and a restore test built from the settings, for the verbs and the daemon.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, usage, Settings};
use crate::error::Result;
use crate::ops::restore::RestoreRequest;
use crate::ops::restore_test::{RestoreTestRequest, FORCED_SETTINGS};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VerifySection {
    #[serde(default)]
    sql: Vec<String>,
    database: Option<String>,
    user: Option<String>,
    pg_bin: Option<PathBuf>,
    scratch_dir: Option<PathBuf>,
    os_user: Option<String>,
    timeout: Option<String>,
    heapallindexed: Option<bool>,
    #[serde(default)]
    settings: toml::Table,
}

/// How a restore test runs and what it checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifySettings {
    /// Queries that must each return one boolean true on the restored copy.
    pub sql: Vec<String>,
    /// The database the queries run in.
    pub database: String,
    /// The role the checks connect as (a superuser of the restored cluster).
    pub user: String,
    /// Directory with `postgres` of the backup's major [default: searched].
    pub pg_bin: Option<PathBuf>,
    /// Where the scratch directory is made [default: the temporary directory].
    pub scratch_dir: Option<PathBuf>,
    /// The OS user the server runs as when tidewal runs as root.
    pub os_user: String,
    /// The longest the restored server may take to finish recovery.
    pub timeout: Duration,
    /// `bt_index_check` also checks that every heap tuple is in the index (slower).
    pub heapallindexed: bool,
    /// Extra server settings for the restored copy (e.g. a smaller shared_buffers).
    pub server_settings: Vec<(String, String)>,
}

pub(super) fn verify_settings(v: VerifySection) -> Result<VerifySettings> {
    if let Some(i) = v.sql.iter().position(|q| q.trim().is_empty()) {
        return Err(usage(format!("verify.sql: query {} is empty", i + 1)));
    }
    let mut server_settings = Vec::new();
    for (name, value) in v.settings {
        if !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            return Err(usage(format!("verify.settings: {name:?} is not a PostgreSQL setting name")));
        }
        if FORCED_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(usage(format!("verify.settings: {name} is set by the restore test itself")));
        }
        let value = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_string(),
            _ => return Err(usage(format!("verify.settings.{name}: give a string, number or boolean"))),
        };
        server_settings.push((name, value));
    }
    let non_empty = |key: &str, v: Option<String>, default: &str| match v {
        Some(s) if s.trim().is_empty() => Err(usage(format!("verify.{key} is empty"))),
        Some(s) => Ok(s),
        None => Ok(default.to_string()),
    };
    Ok(VerifySettings {
        sql: v.sql,
        database: non_empty("database", v.database, "postgres")?,
        user: non_empty("user", v.user, "postgres")?,
        pg_bin: v.pg_bin,
        scratch_dir: v.scratch_dir,
        os_user: non_empty("os_user", v.os_user, "postgres")?,
        timeout: parse_duration("verify.timeout", v.timeout.as_deref().unwrap_or("24h"))?,
        heapallindexed: v.heapallindexed.unwrap_or(false),
        server_settings,
    })
}

impl Settings {
    /// A restore of `backup` ("latest" or an id) into `to` as a copy, to the end of the
    /// archive; the caller sets a target and the rest.
    pub fn restore_request(&self, to: PathBuf, backup: &str) -> Result<RestoreRequest> {
        Ok(RestoreRequest {
            to,
            backup: backup.to_string(),
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
            exe: std::env::current_exe().unwrap_or_else(|_| "tidewal".into()),
            // Before anything is read: a restore that recovery could not read is useless.
            fetch_config: self.fetch_config()?,
            conninfo: self.conninfo.clone(),
            tablespace_root: None,
            check_space: false,
        })
    }

    /// A restore test of `backup` ("latest" or an id), to the end of the archive unless the
    /// caller sets a target on its `restore`.
    pub fn restore_test_request(&self, backup: &str) -> Result<RestoreTestRequest> {
        let v = &self.verify;
        Ok(RestoreTestRequest {
            // The test puts it in its scratch directory.
            restore: self.restore_request(PathBuf::new(), backup)?,
            pg_bin: v.pg_bin.clone(),
            scratch_parent: v.scratch_dir.clone().unwrap_or_else(std::env::temp_dir),
            os_user: v.os_user.clone(),
            user: v.user.clone(),
            sql: v.sql.clone(),
            database: v.database.clone(),
            heapallindexed: v.heapallindexed,
            server_settings: v.server_settings.clone(),
            timeout: v.timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<VerifySettings> {
        #[derive(Deserialize)]
        struct F {
            verify: VerifySection,
        }
        let f: F = toml::from_str(text).map_err(|e| usage(e.to_string()))?;
        verify_settings(f.verify)
    }

    #[test]
    fn defaults_and_values() {
        let d = verify_settings(VerifySection::default()).unwrap();
        assert_eq!((d.database.as_str(), d.user.as_str(), d.os_user.as_str()), ("postgres", "postgres", "postgres"));
        assert_eq!(d.timeout, Duration::from_secs(24 * 3600));
        assert!(d.sql.is_empty() && d.server_settings.is_empty() && !d.heapallindexed);
        let v = parse(
            "[verify]\nsql = [\"SELECT true\"]\ndatabase = \"app\"\ntimeout = \"2h\"\n\
             settings = { shared_buffers = \"64MB\", max_parallel_workers = 2, jit = false }\n",
        )
        .unwrap();
        assert_eq!(v.sql, ["SELECT true"]);
        assert_eq!(v.database, "app");
        assert_eq!(v.timeout, Duration::from_secs(7200));
        let mut s = v.server_settings.clone();
        s.sort();
        let want = [("jit", "off"), ("max_parallel_workers", "2"), ("shared_buffers", "64MB")];
        assert_eq!(s, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, needle) in [
            ("[verify]\nsql = [\" \"]\n", "query 1 is empty"),
            ("[verify]\nsettings = { port = 5 }\n", "set by the restore test"),
            ("[verify]\nsettings = { \"a b\" = 5 }\n", "not a PostgreSQL setting"),
            ("[verify]\nsettings = { a = [1] }\n", "verify.settings.a"),
            ("[verify]\ntimeout = \"soon\"\n", "verify.timeout"),
            ("[verify]\ndatabase = \"\"\n", "verify.database is empty"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }
}
