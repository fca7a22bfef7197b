//! LSN and WAL segment-name arithmetic. Pure functions, no I/O.

use std::fmt;
use std::str::FromStr;

/// A WAL location (`pg_lsn`), printed as PostgreSQL does: `16/B374D848`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 as u32)
    }
}

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (hi, lo) = s.split_once('/').ok_or_else(|| format!("invalid LSN {s:?}: expected the form 16/B374D848"))?;
        let parse = |p: &str| {
            if p.is_empty() || p.len() > 8 {
                return Err(format!("invalid LSN {s:?}: expected the form 16/B374D848"));
            }
            u32::from_str_radix(p, 16).map_err(|_| format!("invalid LSN {s:?}: not hexadecimal"))
        };
        Ok(Lsn(((parse(hi)? as u64) << 32) | parse(lo)? as u64))
    }
}

/// Smallest and largest segment size `initdb --wal-segsize` accepts (1 MiB .. 1 GiB, powers of two).
pub const MIN_SEG_SIZE: u64 = 1 << 20;
pub const MAX_SEG_SIZE: u64 = 1 << 30;

pub fn valid_segment_size(size: u64) -> bool {
    size.is_power_of_two() && (MIN_SEG_SIZE..=MAX_SEG_SIZE).contains(&size)
}

/// Segments per 4 GiB "xlogid", the middle 8 hex digits of a segment name.
pub fn segments_per_xlogid(seg_size: u64) -> u64 {
    0x1_0000_0000 / seg_size
}

/// A WAL segment: timeline plus segment number (LSN / segment size).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentId {
    pub tli: u32,
    pub segno: u64,
}

impl SegmentId {
    pub fn containing(tli: u32, lsn: Lsn, seg_size: u64) -> Self {
        SegmentId { tli, segno: lsn.0 / seg_size }
    }

    pub fn start_lsn(&self, seg_size: u64) -> Lsn {
        Lsn(self.segno * seg_size)
    }

    /// The 24-hex-digit file name, e.g. `000000010000000A000000FF`.
    pub fn file_name(&self, seg_size: u64) -> String {
        let per = segments_per_xlogid(seg_size);
        format!("{:08X}{:08X}{:08X}", self.tli, self.segno / per, self.segno % per)
    }

    /// Parse a 24-hex-digit segment name for the given segment size.
    pub fn parse(name: &str, seg_size: u64) -> Result<Self, String> {
        let (tli, log, seg) = split_segment_name(name)?;
        let per = segments_per_xlogid(seg_size);
        if seg as u64 >= per {
            return Err(format!(
                "{name:?} is not a valid segment name for {} segments (the last 8 digits must be below {per:X})",
                crate::pg::lsn::format_size(seg_size)
            ));
        }
        if tli == 0 {
            return Err(format!("{name:?} has timeline 0, which PostgreSQL never uses"));
        }
        Ok(SegmentId { tli, segno: log as u64 * per + seg as u64 })
    }
}

/// Split a 24-hex-digit name into its three 32-bit fields, without knowing the segment size.
pub fn split_segment_name(name: &str) -> Result<(u32, u32, u32), String> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("{name:?} is not a WAL segment name (24 hexadecimal digits)"));
    }
    let field = |i: usize| u32::from_str_radix(&name[i..i + 8], 16).expect("checked hex");
    Ok((field(0), field(8), field(16)))
}

/// Human size with binary units, as DBAs read them in `SHOW wal_segment_size`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, div) in UNITS {
        if bytes >= div && bytes % div == 0 {
            return format!("{} {unit}", bytes / div);
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MB16: u64 = 16 << 20;

    #[test]
    fn lsn_round_trip_and_format() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert_eq!(Lsn(0).to_string(), "0/0");
        assert!("16B374D848".parse::<Lsn>().is_err());
        assert!("1/xyz".parse::<Lsn>().is_err());
        assert!("/1".parse::<Lsn>().is_err());
    }

    #[test]
    fn segment_names_16mb() {
        let s = SegmentId::containing(1, "0/3000028".parse().unwrap(), MB16);
        assert_eq!(s.file_name(MB16), "000000010000000000000003");
        let s = SegmentId::containing(2, "A/FF000000".parse().unwrap(), MB16);
        assert_eq!(s.file_name(MB16), "000000020000000A000000FF");
        assert_eq!(SegmentId::parse("000000020000000A000000FF", MB16).unwrap(), s);
        // 16 MiB segments stop at ...FF within an xlogid.
        assert!(SegmentId::parse("000000010000000000000100", MB16).is_err());
        assert!(SegmentId::parse("000000000000000000000001", MB16).is_err());
    }

    #[test]
    fn segment_names_other_sizes() {
        let mb1 = 1 << 20;
        let s = SegmentId::parse("000000010000000000000FFF", mb1).unwrap();
        assert_eq!(s.segno, 0xFFF);
        assert_eq!(s.start_lsn(mb1), Lsn(0xFFF << 20));
        let gb1 = 1 << 30;
        let s = SegmentId::containing(1, "5/C0000000".parse().unwrap(), gb1);
        assert_eq!(s.file_name(gb1), "000000010000000500000003");
        assert!(SegmentId::parse("000000010000000500000004", gb1).is_err());
        assert!(valid_segment_size(64 << 20));
        assert!(!valid_segment_size(3 << 20));
        assert!(!valid_segment_size(2 << 30));
    }

    proptest! {
        #[test]
        fn name_round_trip(tli in 1u32.., lsn in 0u64..u64::MAX, shift in 20u32..=30) {
            let seg = 1u64 << shift;
            let id = SegmentId::containing(tli, Lsn(lsn), seg);
            let name = id.file_name(seg);
            prop_assert_eq!(SegmentId::parse(&name, seg).unwrap(), id);
            prop_assert!(id.start_lsn(seg).0 <= lsn && lsn - id.start_lsn(seg).0 < seg);
        }

        #[test]
        fn lsn_text_round_trip(v in any::<u64>()) {
            prop_assert_eq!(Lsn(v).to_string().parse::<Lsn>().unwrap(), Lsn(v));
        }
    }
}
