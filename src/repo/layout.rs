//! Object names inside a repository. Pure functions.
//!
//! ```text
//! tidewal.json                       identity (sealed)
//! wal/<TLI>/<segment>                completed segments
//! wal/<TLI>/<segment>.partial        last segment of a timeline that was left by promotion
//! wal/<TLI>/<segment>.stream         the segment the streaming receiver is filling (replaced)
//! wal/<TLI>/<segment>.<off>.backup   backup history labels
//! wal/<TLI>.history                  timeline history files
//! ```

use crate::pg::walfile::WalFile;

pub const IDENTITY: &str = "tidewal.json";
pub const PROBE_PREFIX: &str = "tmp/probe";

/// `backups/<id>/<file>`; `backup.json` is written last and marks the backup complete.
pub fn backup_object(id: &str, file: &str) -> String {
    format!("backups/{id}/{file}")
}

/// A backup id sorts by time: `20261124T013000Z`.
pub fn backup_id(rfc3339_seconds: &str) -> String {
    rfc3339_seconds.chars().filter(|c| *c != '-' && *c != ':').collect()
}

/// Where a WAL-archive file lives. Names are rebuilt from the parsed value, so they are canonical.
pub fn wal_object(file: &WalFile, seg_size: u64) -> String {
    match file {
        WalFile::History(tli) => format!("wal/{tli:08X}.history"),
        WalFile::Segment(s) => format!("wal/{:08X}/{}", s.tli, s.file_name(seg_size)),
        WalFile::Partial(s) => format!("wal/{:08X}/{}.partial", s.tli, s.file_name(seg_size)),
        WalFile::Streamed(s) => format!("wal/{:08X}/{}.stream", s.tli, s.file_name(seg_size)),
        WalFile::BackupLabel { seg, offset } => {
            format!("wal/{:08X}/{}.{offset:08X}.backup", seg.tli, seg.file_name(seg_size))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_names() {
        let id = backup_id("2026-11-24T01:30:00Z");
        assert_eq!(id, "20261124T013000Z");
        assert_eq!(backup_object(&id, "base.tar"), "backups/20261124T013000Z/base.tar");
    }

    #[test]
    fn names() {
        let seg = 16 << 20;
        let f = |n: &str| wal_object(&WalFile::parse_stored(n, seg).unwrap(), seg);
        assert_eq!(f("000000010000000000000003"), "wal/00000001/000000010000000000000003");
        assert_eq!(f("0000000A.history"), "wal/0000000A.history");
        assert_eq!(f("000000020000000100000003.partial"), "wal/00000002/000000020000000100000003.partial");
        assert_eq!(f("000000020000000100000003.stream"), "wal/00000002/000000020000000100000003.stream");
        assert_eq!(
            f("000000010000000000000003.00000028.backup"),
            "wal/00000001/000000010000000000000003.00000028.backup"
        );
    }
}
