//! Which PostgreSQL binaries a test runs: the server's from `TIDEWAL_PG_BIN` or, for the
//! cross-version tests, a directory per major (`scripts/install-pg-servers.sh` puts them in
//! /opt/tidewal-pg/<major>/bin); the client tools stay Debian's PostgreSQL 15.

use std::path::{Path, PathBuf};

use super::*;

/// The server binaries (initdb, pg_ctl, postgres) every cluster runs unless a test names
/// others: `TIDEWAL_PG_BIN`, default Debian's PostgreSQL 15.
pub fn server_bin_dir() -> PathBuf {
    std::env::var_os("TIDEWAL_PG_BIN").map_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"), PathBuf::from)
}

/// A PostgreSQL program: the server's from `server_bin_dir()`, client tools (psql, pgbench,
/// pg_basebackup...) from Debian's PostgreSQL 15 (`TIDEWAL_PG_CLIENT_BIN`).
pub fn pg_bin(tool: &str) -> PathBuf {
    let dir = if ["initdb", "pg_ctl", "postgres"].contains(&tool) {
        server_bin_dir()
    } else {
        std::env::var_os("TIDEWAL_PG_CLIENT_BIN").map_or_else(|| "/usr/lib/postgresql/15/bin".into(), PathBuf::from)
    };
    let p = dir.join(tool);
    assert!(
        p.exists(),
        "{} not found: install PostgreSQL 15 (apt-get install postgresql-15) or set TIDEWAL_PG_BIN (server) and TIDEWAL_PG_CLIENT_BIN (client tools)",
        p.display()
    );
    p
}

/// The server binaries of PostgreSQL `major`: `TIDEWAL_PG<major>_BIN`, default
/// /opt/tidewal-pg/<major>/bin. Missing binaries fail the test: CI must run every major.
pub fn major_bin(major: u32) -> PathBuf {
    let var = format!("TIDEWAL_PG{major}_BIN");
    let dir =
        std::env::var_os(&var).map_or_else(|| PathBuf::from(format!("/opt/tidewal-pg/{major}/bin")), PathBuf::from);
    for tool in ["initdb", "pg_ctl", "postgres"] {
        assert!(
            dir.join(tool).exists(),
            "PostgreSQL {major}'s {tool} is not in {}: run `bash .ci/run` or `scripts/install-pg-servers.sh` \
             (as root) to install the PostgreSQL 16 to 18 test servers, or set {var}",
            dir.display()
        );
    }
    dir
}

impl Archiving {
    /// A cluster of the server binaries in `bin`, archiving into a file:// repository.
    pub fn start_from(label: &str, bin: &Path, initdb_args: &[&str]) -> Archiving {
        let env = TestEnv::new(label);
        let dir = env.pg_dir("repo");
        let section = format!("url = \"file://{}\"\n", dir.display());
        Self::start_in(env, &section, None, Some(dir), bin, initdb_args, &[])
    }
}
