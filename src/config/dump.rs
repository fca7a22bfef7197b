//! The `[dump]` section: logical dumps (`tidewal dump`, `dump-restore`), their retention and
//! the daemon's schedule, and the plain requests built from it.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, usage, Settings};
use crate::error::Result;
use crate::ops::dump::{Databases, DumpRequest};
use crate::ops::dump_restore::DumpRestoreRequest;
use crate::repo::dump_retention::DumpPolicy;
use crate::repo::dumps::DumpFormat;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DumpSection {
    pg_bin: Option<PathBuf>,
    scratch_dir: Option<PathBuf>,
    jobs: Option<u32>,
    format: Option<DumpFormat>,
    keep: Option<usize>,
    window: Option<String>,
    interval: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DumpSettings {
    /// Directory with pg_dump, pg_dumpall and pg_restore [default: searched].
    pub pg_bin: Option<PathBuf>,
    /// Where directory-format dumps are staged and restores fetched [default: the temporary directory].
    pub scratch_dir: Option<PathBuf>,
    pub jobs: u32,
    pub format: DumpFormat,
    pub retention: DumpPolicy,
    /// How often the daemon takes a dump; zero: never (the default).
    pub interval: Duration,
}

pub(super) fn dump_settings(d: DumpSection) -> Result<DumpSettings> {
    let jobs = d.jobs.unwrap_or(2);
    if !(1..=64).contains(&jobs) {
        return Err(usage(format!("dump.jobs = {jobs}: 1 to 64")));
    }
    if d.keep == Some(0) {
        return Err(usage("dump.keep = 0: keep at least 1 (leave it out to keep every dump)".into()));
    }
    let window = d.window.map(|w| parse_duration("dump.window", &w)).transpose()?;
    Ok(DumpSettings {
        pg_bin: d.pg_bin,
        scratch_dir: d.scratch_dir,
        jobs,
        format: d.format.unwrap_or(DumpFormat::Directory),
        retention: DumpPolicy { keep: d.keep, window },
        interval: parse_duration("dump.interval", d.interval.as_deref().unwrap_or("0s"))?,
    })
}

impl Settings {
    /// `dump.scratch_dir`, or the temporary directory.
    pub fn dump_scratch(&self) -> PathBuf {
        self.dump.scratch_dir.clone().unwrap_or_else(std::env::temp_dir)
    }

    /// A dump of `databases`; `jobs` and `format` override the section's.
    pub fn dump_request(&self, databases: Databases, jobs: Option<u32>, format: Option<DumpFormat>) -> DumpRequest {
        DumpRequest {
            conninfo: self.conninfo.clone(),
            databases,
            format: format.unwrap_or(self.dump.format),
            jobs: jobs.unwrap_or(self.dump.jobs),
            pg_bin: self.dump.pg_bin.clone(),
            scratch_parent: self.dump_scratch(),
        }
    }

    /// A restore of `dump` ("latest" or an id) into `to_db`; the caller sets the rest.
    pub fn dump_restore_request(&self, dump: &str, to_db: &str) -> DumpRestoreRequest {
        DumpRestoreRequest {
            conninfo: self.conninfo.clone(),
            dump: dump.to_string(),
            source_db: None,
            to_db: to_db.to_string(),
            tables: Vec::new(),
            schemas: Vec::new(),
            create: false,
            jobs: self.dump.jobs,
            pg_bin: self.dump.pg_bin.clone(),
            scratch_parent: self.dump_scratch(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<DumpSettings> {
        #[derive(Deserialize)]
        struct F {
            dump: DumpSection,
        }
        let f: F = toml::from_str(text).map_err(|e| usage(e.to_string()))?;
        dump_settings(f.dump)
    }

    #[test]
    fn defaults_values_and_refusals() {
        let d = dump_settings(DumpSection::default()).unwrap();
        assert_eq!((d.jobs, d.format, d.interval), (2, DumpFormat::Directory, Duration::ZERO));
        assert_eq!(d.retention, DumpPolicy::default());
        let v =
            parse("[dump]\nkeep = 7\nwindow = \"30d\"\ninterval = \"1d\"\nformat = \"custom\"\njobs = 4\n").unwrap();
        assert_eq!(v.retention, DumpPolicy { keep: Some(7), window: Some(Duration::from_secs(30 * 86400)) });
        assert_eq!((v.jobs, v.format, v.interval), (4, DumpFormat::Custom, Duration::from_secs(86400)));
        for (text, needle) in [
            ("[dump]\nkeep = 0\n", "dump.keep = 0"),
            ("[dump]\njobs = 0\n", "dump.jobs = 0"),
            ("[dump]\nwindow = \"soon\"\n", "dump.window"),
            ("[dump]\nformat = \"tar\"\n", "unknown variant"),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.message.contains(needle), "{text}: {e}");
        }
    }
}
