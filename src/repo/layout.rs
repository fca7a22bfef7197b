//! Object names inside a repository. Pure functions.
//!
//! ```text
//! tidewal.json                       identity (sealed)
//! wal/<TLI>/<segment>                completed segments
//! wal/<TLI>/<segment>.partial        last segment of a timeline that was left by promotion
//! wal/<TLI>/<segment>.stream         the segment the streaming receiver is filling (replaced)
//! wal/<TLI>/<segment>.<off>.backup   backup history labels
//! wal/<TLI>.history                  timeline history files
//! backups/<id>/...                   base backups (`backup.json` last)
//! dumps/<id>/...                     logical dumps (`dump.json` last; see `repo::dumps`)
//! tmp/                               probes (conditional writes, the store's clock)
//! ```

use std::time::SystemTime;

use crate::pg::walfile::WalFile;

pub const IDENTITY: &str = "tidewal.json";
pub const PROBE_PREFIX: &str = "tmp/probe";

/// A fresh name for one probe of conditional writes: `tmp/probe-<random>`.
pub fn probe_name() -> String {
    format!("{PROBE_PREFIX}-{:016x}", rand::random::<u64>())
}

/// A fresh object per reading of the store's clock: `tmp/clock-<random>`.
pub const CLOCK_PROBE_PREFIX: &str = "tmp/clock-";

/// `backups/<id>/<file>`; `backup.json` is written last and marks the backup complete.
pub fn backup_object(id: &str, file: &str) -> String {
    format!("backups/{id}/{file}")
}

/// A backup id: the start time to the microsecond and a random suffix, so two backups
/// started at once never share a name, and ids still sort by time:
/// `20261126T130501.123456Z-a1b2c3`.
pub fn backup_id(started: SystemTime, random: [u8; 3]) -> String {
    let t = humantime::format_rfc3339_micros(started).to_string();
    let compact: String = t.chars().filter(|c| *c != '-' && *c != ':').collect();
    format!("{compact}-{}", hex::encode(random))
}

/// When a backup id says its backup started; `None` for a name that is not a backup id.
/// Ids of earlier versions (`20261124T013000Z`, one per second) parse too.
pub fn parse_backup_id(id: &str) -> Option<SystemTime> {
    let (stamp, suffix) = match id.split_once('-') {
        Some((s, r)) if r.len() == 6 && r.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()) => {
            (s, true)
        }
        Some(_) => return None,
        None => (id, false),
    };
    let b = stamp.as_bytes();
    let digits = |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let frac = match (suffix, b.len()) {
        (false, 16) => "",
        (true, 23) if b[15] == b'.' && digits(16..22) => &stamp[15..22],
        _ => return None,
    };
    if !(digits(0..8) && b[8] == b'T' && digits(9..15) && b[b.len() - 1] == b'Z') {
        return None;
    }
    let rfc = format!(
        "{}-{}-{}T{}:{}:{}{frac}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    humantime::parse_rfc3339(&rfc).ok()
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
        let t = humantime::parse_rfc3339("2026-11-24T01:30:00.123456Z").unwrap();
        let id = backup_id(t, [0xa1, 0xb2, 0xc3]);
        assert_eq!(id, "20261124T013000.123456Z-a1b2c3");
        assert_eq!(backup_object(&id, "base.tar"), "backups/20261124T013000.123456Z-a1b2c3/base.tar");
        assert_eq!(parse_backup_id(&id), Some(t));
        // Whole seconds, and ids of earlier versions.
        let whole = humantime::parse_rfc3339("2026-11-24T01:30:00Z").unwrap();
        assert_eq!(backup_id(whole, [0, 0, 1]), "20261124T013000.000000Z-000001");
        assert_eq!(parse_backup_id("20261124T013000Z"), Some(whole));
        for bad in [
            "lease",
            "20261124T013000",
            "20261124T013000Z-a1b2c",
            "20261124T013000.123456Z",
            "20261124T013000.12345Z-a1b2c3",
            "20261124T013000.123456Z-A1B2C3",
            "2026112xT013000Z",
        ] {
            assert_eq!(parse_backup_id(bad), None, "{bad}");
        }
    }

    proptest::proptest! {
        /// Ids sort as their start times do (to the microsecond), whatever the suffix.
        #[test]
        fn ids_sort_by_time(a in 0u64..4_000_000_000_000_000, b in 0u64..4_000_000_000_000_000, ra: [u8; 3], rb: [u8; 3]) {
            let t = |us: u64| SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(us);
            let (ia, ib) = (backup_id(t(a), ra), backup_id(t(b), rb));
            proptest::prop_assert_eq!(parse_backup_id(&ia), Some(t(a)));
            if a < b {
                proptest::prop_assert!(ia < ib);
            }
        }
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
