//! Clusters of other PostgreSQL majors: their server binaries come from a directory per
//! major (`scripts/install-pg-servers.sh` puts them in /opt/tidewal-pg/<major>/bin); the
//! client tools stay Debian's PostgreSQL 15.

use std::path::{Path, PathBuf};

use super::*;

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
        Self::start_in(env, &section, None, Some(dir), bin, initdb_args)
    }
}
