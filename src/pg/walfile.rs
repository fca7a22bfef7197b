//! What `archive_command` hands us: classify a file by name and check a segment's first page.
//! Pure functions over names and bytes; the caller does the reading.

use super::history::parse_history;
use super::lsn::{format_size, SegmentId};

/// The kinds of file PostgreSQL archives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// A completed segment, `000000010000000000000003`.
    Segment(SegmentId),
    /// The last, incomplete segment of an old timeline after a promotion (`….partial`).
    Partial(SegmentId),
    /// Timeline history, `00000002.history`.
    History(u32),
    /// Backup history label, `000000010000000000000003.00000028.backup`.
    BackupLabel { seg: SegmentId, offset: u32 },
    /// tidewal's own, never PostgreSQL's: the segment the streaming receiver is still
    /// filling (`….stream`), replaced as it grows. A name of its own, because PostgreSQL
    /// archives a `.partial` of the same segment at promotion, with other content.
    Streamed(SegmentId),
}

impl WalFile {
    /// Classify a file name (no directory part).
    pub fn parse(name: &str, seg_size: u64) -> Result<Self, String> {
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 && tli.bytes().all(|b| b.is_ascii_hexdigit()) {
                let tli = u32::from_str_radix(tli, 16).expect("checked hex");
                // Recovery asks for 00000001.history too, although it never exists.
                if tli > 0 {
                    return Ok(WalFile::History(tli));
                }
            }
            return Err(format!("{name:?} is not a timeline history file name (8 hex digits, then .history)"));
        }
        if let Some(seg) = name.strip_suffix(".partial") {
            return Ok(WalFile::Partial(SegmentId::parse(seg, seg_size)?));
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            if let Some((seg, off)) = rest.split_once('.') {
                if off.len() == 8 && off.bytes().all(|b| b.is_ascii_hexdigit()) {
                    let offset = u32::from_str_radix(off, 16).expect("checked hex");
                    return Ok(WalFile::BackupLabel { seg: SegmentId::parse(seg, seg_size)?, offset });
                }
            }
            return Err(format!("{name:?} is not a backup label name (segment.offset.backup)"));
        }
        Ok(WalFile::Segment(SegmentId::parse(name, seg_size)?))
    }

    /// Classify the name of a stored object (the file part under `wal/`): what PostgreSQL
    /// archives, and the receiver's `.stream` copies, which only the repository has.
    pub fn parse_stored(name: &str, seg_size: u64) -> Result<Self, String> {
        match name.strip_suffix(".stream") {
            Some(seg) => Ok(WalFile::Streamed(SegmentId::parse(seg, seg_size)?)),
            None => Self::parse(name, seg_size),
        }
    }

    /// The segment this file is, or belongs to; `None` for a history file.
    pub fn segment(&self) -> Option<SegmentId> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Streamed(s) | WalFile::BackupLabel { seg: s, .. } => {
                Some(*s)
            }
            WalFile::History(_) => None,
        }
    }

    /// The timeline this file belongs to, which is also its directory in the repository.
    pub fn timeline(&self) -> u32 {
        match self {
            WalFile::History(t) => *t,
            other => other.segment().map_or(0, |s| s.tli),
        }
    }

    /// Whether the file must be exactly one segment long.
    pub fn is_segment_sized(&self) -> bool {
        matches!(self, WalFile::Segment(_) | WalFile::Partial(_) | WalFile::Streamed(_))
    }
}

/// The WAL page magic (`XLOG_PAGE_MAGIC`) of each supported PostgreSQL major version
/// (15 to 18 are tested; 13 and 14 are kept from before).
pub fn page_magic(pg_major: u32) -> Option<u16> {
    match pg_major {
        13 => Some(0xD106),
        14 => Some(0xD10D),
        15 => Some(0xD110),
        16 => Some(0xD113),
        17 => Some(0xD116),
        18 => Some(0xD118),
        _ => None,
    }
}

/// What the repository expects every segment to match.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub system_identifier: u64,
    pub seg_size: u64,
    pub pg_major: u32,
}

const XLP_LONG_HEADER: u16 = 0x0002;
/// Size of `XLogLongPageHeaderData`.
const LONG_HEADER_LEN: usize = 40;

/// Check the long page header at the start of a segment against its name and the cluster.
/// `first_page` is at least the first 40 bytes of the file; `file_len` its full length.
pub fn check_segment(
    name: &str,
    seg: SegmentId,
    first_page: &[u8],
    file_len: u64,
    want: &Expect,
) -> Result<(), String> {
    if file_len != want.seg_size {
        return Err(format!(
            "{name} is {file_len} bytes but this cluster's WAL segments are {} ({} bytes): the file is truncated or not a WAL segment",
            format_size(want.seg_size),
            want.seg_size
        ));
    }
    if first_page.len() < LONG_HEADER_LEN {
        return Err(format!("{name} is too short to hold a WAL page header"));
    }
    let u16_at = |o: usize| u16::from_le_bytes(first_page[o..o + 2].try_into().expect("len 2"));
    let u32_at = |o: usize| u32::from_le_bytes(first_page[o..o + 4].try_into().expect("len 4"));
    let u64_at = |o: usize| u64::from_le_bytes(first_page[o..o + 8].try_into().expect("len 8"));
    let magic = u16_at(0);
    let expected_magic = page_magic(want.pg_major)
        .ok_or_else(|| format!("PostgreSQL {} is not supported (tidewal knows 13 to 18)", want.pg_major))?;
    if magic != expected_magic {
        return Err(format!(
            "{name} does not start with a PostgreSQL {} WAL page (magic {magic:#06X}, expected {expected_magic:#06X}): it is not a WAL segment, or it comes from another major version",
            want.pg_major
        ));
    }
    if u16_at(2) & XLP_LONG_HEADER == 0 {
        return Err(format!("{name}: the first page lacks the long header every segment starts with"));
    }
    let tli = u32_at(4);
    // A new timeline's first segment is copied from the parent, so its first page may carry an older timeline.
    if tli == 0 || tli > seg.tli {
        return Err(format!(
            "{name}: the page header says timeline {tli}, which cannot appear in a segment of timeline {}",
            seg.tli
        ));
    }
    let pageaddr = u64_at(8);
    let start = seg.start_lsn(want.seg_size).0;
    if pageaddr != start {
        return Err(format!(
            "{name}: the first page is for WAL location {}, not {} as the name says: the file was renamed or is damaged",
            super::lsn::Lsn(pageaddr),
            super::lsn::Lsn(start)
        ));
    }
    let sysid = u64_at(24);
    if sysid != want.system_identifier {
        return Err(format!(
            "{name} comes from database system {sysid}, but this repository belongs to system {}: it is another cluster's WAL",
            want.system_identifier
        ));
    }
    let seg_size = u32_at(32) as u64;
    if seg_size != want.seg_size {
        return Err(format!(
            "{name}: the header says {seg_size}-byte segments, the repository expects {}",
            want.seg_size
        ));
    }
    Ok(())
}

/// A history file must parse and only name timelines below its own.
pub fn check_history(name: &str, tli: u32, body: &[u8]) -> Result<(), String> {
    let text =
        std::str::from_utf8(body).map_err(|_| format!("{name} is not text, so it is not a timeline history file"))?;
    let entries = parse_history(text).map_err(|e| format!("{name} is not a valid timeline history file: {e}"))?;
    if let Some(bad) = entries.iter().find(|e| e.parent_tli >= tli) {
        return Err(format!("{name} names timeline {} as a parent of timeline {tli}", bad.parent_tli));
    }
    Ok(())
}

/// A backup label is small text that PostgreSQL writes at the end of a base backup.
pub fn check_backup_label(name: &str, body: &[u8]) -> Result<(), String> {
    let ok =
        body.len() < 64 * 1024 && std::str::from_utf8(body).map(|t| t.contains("START WAL LOCATION:")).unwrap_or(false);
    if ok {
        Ok(())
    } else {
        Err(format!("{name} is not a backup history file (no START WAL LOCATION line)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB16: u64 = 16 << 20;
    const WANT: Expect = Expect { system_identifier: 7_300_000_000_000_000_001, seg_size: MB16, pg_major: 15 };

    fn header(tli: u32, pageaddr: u64, sysid: u64) -> Vec<u8> {
        let mut h = vec![0u8; 8192];
        h[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        h[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        h[4..8].copy_from_slice(&tli.to_le_bytes());
        h[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        h[24..32].copy_from_slice(&sysid.to_le_bytes());
        h[32..36].copy_from_slice(&(MB16 as u32).to_le_bytes());
        h[36..40].copy_from_slice(&8192u32.to_le_bytes());
        h
    }

    #[test]
    fn classify_names() {
        let seg = SegmentId { tli: 1, segno: 3 };
        assert_eq!(WalFile::parse("000000010000000000000003", MB16).unwrap(), WalFile::Segment(seg));
        assert_eq!(WalFile::parse("000000010000000000000003.partial", MB16).unwrap(), WalFile::Partial(seg));
        // .stream copies exist only in the repository: not a name PostgreSQL archives or asks for.
        assert!(WalFile::parse("000000010000000000000003.stream", MB16).is_err());
        assert_eq!(WalFile::parse_stored("000000010000000000000003.stream", MB16).unwrap(), WalFile::Streamed(seg));
        assert_eq!(WalFile::parse("0000000A.history", MB16).unwrap(), WalFile::History(10));
        assert_eq!(
            WalFile::parse("000000010000000000000003.00000028.backup", MB16).unwrap(),
            WalFile::BackupLabel { seg, offset: 0x28 }
        );
        for bad in [
            "00000000.history",
            "postgresql.conf",
            "00000001000000000000003",
            "x.backup",
            "000000010000000000000003.zz.backup",
        ] {
            assert!(WalFile::parse(bad, MB16).is_err(), "{bad}");
        }
    }

    #[test]
    fn segment_header_checks() {
        let seg = SegmentId { tli: 2, segno: 3 };
        let name = "000000020000000000000003";
        assert!(check_segment(name, seg, &header(2, 0x300_0000, WANT.system_identifier), MB16, &WANT).is_ok());
        // First segment of a new timeline carries the parent's timeline.
        assert!(check_segment(name, seg, &header(1, 0x300_0000, WANT.system_identifier), MB16, &WANT).is_ok());
        let e = check_segment(name, seg, &header(3, 0x300_0000, WANT.system_identifier), MB16, &WANT).unwrap_err();
        assert!(e.contains("timeline 3"), "{e}");
        let e = check_segment(name, seg, &header(2, 0x400_0000, WANT.system_identifier), MB16, &WANT).unwrap_err();
        assert!(e.contains("renamed"), "{e}");
        let e = check_segment(name, seg, &header(2, 0x300_0000, 42), MB16, &WANT).unwrap_err();
        assert!(e.contains("another cluster"), "{e}");
        let e = check_segment(name, seg, &header(2, 0x300_0000, WANT.system_identifier), MB16 - 1, &WANT).unwrap_err();
        assert!(e.contains("truncated"), "{e}");
        let e = check_segment(name, seg, &[0u8; 8192], MB16, &WANT).unwrap_err();
        assert!(e.contains("not a WAL segment"), "{e}");
    }

    #[test]
    fn each_major_has_its_own_page_magic() {
        let seg = SegmentId { tli: 1, segno: 3 };
        let name = "000000010000000000000003";
        // Read off real segments of 16.14, 17.10 and 18.4.
        for (major, magic) in [(16, 0xD113u16), (17, 0xD116), (18, 0xD118)] {
            let want = Expect { pg_major: major, ..WANT };
            let mut page = header(1, 0x300_0000, WANT.system_identifier);
            page[0..2].copy_from_slice(&magic.to_le_bytes());
            assert!(check_segment(name, seg, &page, MB16, &want).is_ok(), "{major}");
            let e = check_segment(name, seg, &header(1, 0x300_0000, WANT.system_identifier), MB16, &want).unwrap_err();
            assert!(e.contains("another major version") && e.contains(&format!("PostgreSQL {major}")), "{e}");
        }
        let e = check_segment(name, seg, &[0u8; 40], MB16, &Expect { pg_major: 19, ..WANT }).unwrap_err();
        assert!(e.contains("PostgreSQL 19 is not supported"), "{e}");
    }

    #[test]
    fn history_and_label_checks() {
        assert!(check_history("00000003.history", 3, b"1\t0/3000198\tno recovery target specified\n2\t0/5000000\tx\n")
            .is_ok());
        assert!(check_history("00000002.history", 2, b"2\t0/3000198\tself\n").is_err());
        assert!(check_history("00000002.history", 2, &[0xff, 0xfe]).is_err());
        assert!(
            check_backup_label("a.backup", b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n").is_ok()
        );
        assert!(check_backup_label("a.backup", b"hello").is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]

        /// The page-header check over arbitrary bytes and any segment: an answer, never a panic;
        /// arbitrary bytes pass only if they happen to hold exactly the header expected.
        #[test]
        fn any_first_page_is_checked_without_panic(
            page in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..128),
            tli in proptest::prelude::any::<u32>(),
            segno in 0u64..(u64::MAX / MB16),
            short in proptest::prelude::any::<bool>(),
            major in 0u32..40,
        ) {
            let want = Expect { pg_major: major, ..WANT };
            let seg = SegmentId { tli, segno };
            let len = if short { page.len() as u64 } else { MB16 };
            if check_segment("x", seg, &page, len, &want).is_ok() {
                proptest::prop_assert_eq!(&page[8..16], &seg.start_lsn(MB16).0.to_le_bytes()[..]);
                proptest::prop_assert_eq!(&page[24..32], &WANT.system_identifier.to_le_bytes()[..]);
            }
            let _ = check_history("x", tli, &page);
            let _ = check_backup_label("x", &page);
        }

        /// File names as a listing or PostgreSQL could give them: classified or refused.
        #[test]
        fn any_file_name_is_classified_or_refused(
            name in proptest::prop_oneof![
                "\\PC{0,40}",
                "[0-9A-Fa-f]{0,26}(\\.[0-9A-Fa-f]{0,9})?(\\.partial|\\.history|\\.backup|\\.stream)?",
                "[0-9A-Fé]{6,10}\\.history",
            ],
            shift in 20u32..=30,
        ) {
            let seg = 1u64 << shift;
            if let Ok(f) = WalFile::parse_stored(&name, seg) {
                let _ = (f.segment(), f.timeline(), f.is_segment_sized());
                if let Some(s) = f.segment() {
                    proptest::prop_assert_eq!(SegmentId::parse(&s.file_name(seg), seg).unwrap(), s);
                }
            }
        }
    }
}
