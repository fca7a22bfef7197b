//! Whether the WAL at the start of an open segment holds anything a restore could miss
//! (pure). After a segment switch the background writer logs a running-transactions record
//! into the next segment (at most every 15 s after other activity). PostgreSQL marks it
//! unimportant: `archive_timeout` never switches such a segment away, so on an idle server
//! it stays unarchived for good, yet it holds no commit. Anything else, or anything this
//! does not recognise, counts as WAL that matters.

/// `RM_STANDBY_ID` and its `XLOG_RUNNING_XACTS` record (`rmgrlist.h`, `standbydefs.h`).
const RM_STANDBY_ID: u8 = 8;
const XLOG_RUNNING_XACTS: u8 = 0x10;
/// `XLR_INFO_MASK`: the low bits of `xl_info` are the WAL machinery's, not the record type's.
const XLR_INFO_MASK: u8 = 0x0F;
const XLP_LONG_HEADER: u16 = 0x0002;
/// `SizeOfXLogLongPHD` and `SizeOfXLogRecord`.
const LONG_HEADER_LEN: usize = 40;
const RECORD_HEADER_LEN: usize = 24;
/// Offset of `xl_crc` in `XLogRecord`.
const CRC_OFFSET: usize = 20;

/// `bytes`: a segment from its first byte up to the server's write position, the segment
/// starting at WAL location `start`. True only when the first page (its long header for
/// `start`, no record continued from the previous segment) holds running-transactions
/// records, each whole with its CRC right and linked to the one before (the first to the
/// previous segment), that end exactly at the write position. The links keep out a
/// recycled segment's old records, which a copy written only part of the way (a standby's)
/// still holds beyond its own write position.
pub fn only_standby_snapshots(bytes: &[u8], start: u64) -> bool {
    if bytes.len() <= LONG_HEADER_LEN {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([bytes[o], bytes[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(bytes[o..o + 4].try_into().expect("4 bytes"));
    let u64_at = |o: usize| u64::from_le_bytes(bytes[o..o + 8].try_into().expect("8 bytes"));
    let page_size = u32_at(36) as usize;
    let seg_size = u32_at(32) as u64;
    let long = u16_at(2) & XLP_LONG_HEADER != 0;
    // xlp_pageaddr: not a recycled segment's old page; xlp_rem_len: no record carried over.
    if !long || u64_at(8) != start || u32_at(16) != 0 || bytes.len() > page_size {
        return false;
    }
    let mut at = LONG_HEADER_LEN;
    let mut previous: Option<u64> = None;
    while at < bytes.len() {
        let Some(header) = bytes.get(at..at + RECORD_HEADER_LEN) else { return false };
        let total = u32_at(at) as usize;
        let (info, rmid) = (header[16], header[17]);
        if total < RECORD_HEADER_LEN || at + total > bytes.len() {
            return false;
        }
        if rmid != RM_STANDBY_ID || info & !XLR_INFO_MASK != XLOG_RUNNING_XACTS {
            return false;
        }
        let prev = u64_at(at + 8);
        let linked = match previous {
            Some(p) => prev == p,
            None => prev < start && prev >= start.saturating_sub(seg_size),
        };
        if !linked {
            return false;
        }
        previous = Some(start + at as u64);
        // PostgreSQL's record CRC: the data after the header, then the header up to xl_crc.
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&bytes[at + RECORD_HEADER_LEN..at + total]), &header[..CRC_OFFSET]);
        if crc != u32_at(at + CRC_OFFSET) {
            return false;
        }
        // Records start MAXALIGNed.
        at += total.next_multiple_of(8);
    }
    at == bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const START: u64 = 0x0A00_0000;

    fn page() -> Vec<u8> {
        let mut p = vec![0u8; LONG_HEADER_LEN];
        p[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        p[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        p[4..8].copy_from_slice(&1u32.to_le_bytes());
        p[8..16].copy_from_slice(&START.to_le_bytes());
        p[32..36].copy_from_slice(&(16u32 << 20).to_le_bytes());
        p[36..40].copy_from_slice(&8192u32.to_le_bytes());
        p
    }

    /// Where the last record of the segment before ends up: what the first one links to.
    const BEFORE: u64 = START - 0x48;

    /// A record as PostgreSQL writes it: header, data, CRC, padding to 8 bytes; linked to
    /// the record before it on the page, or to `BEFORE` as the first.
    fn record(out: &mut Vec<u8>, rmid: u8, info: u8, data: &[u8]) {
        let prev = last_record(out).unwrap_or(BEFORE);
        record_linked(out, rmid, info, data, prev);
    }

    /// Where the page's last record starts.
    fn last_record(page: &[u8]) -> Option<u64> {
        let mut at = LONG_HEADER_LEN;
        let mut last = None;
        while at < page.len() {
            last = Some(START + at as u64);
            at += (u32::from_le_bytes(page[at..at + 4].try_into().unwrap()) as usize).next_multiple_of(8);
        }
        last
    }

    fn record_linked(out: &mut Vec<u8>, rmid: u8, info: u8, data: &[u8], prev: u64) {
        let total = RECORD_HEADER_LEN + data.len();
        let mut h = vec![0u8; RECORD_HEADER_LEN];
        h[0..4].copy_from_slice(&(total as u32).to_le_bytes());
        h[8..16].copy_from_slice(&prev.to_le_bytes());
        h[16] = info;
        h[17] = rmid;
        let crc = crc32c::crc32c_append(crc32c::crc32c(data), &h[..CRC_OFFSET]);
        h[20..24].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(8), 0);
    }

    /// The running-transactions record of an idle PostgreSQL 15 server.
    const SNAPSHOT: [u8; 26] =
        [0xff, 0x18, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xe6, 0x02, 0, 0, 0xe5, 0x02, 0, 0, 0xe5, 0x02, 0, 0, 0, 0];

    #[test]
    fn running_transactions_records_alone_are_recognised() {
        let mut p = page();
        record(&mut p, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT);
        assert!(only_standby_snapshots(&p, START));
        // Two of them (the server was idle through two 15 s rounds).
        record(&mut p, RM_STANDBY_ID, XLOG_RUNNING_XACTS | 0x01, &SNAPSHOT);
        assert!(only_standby_snapshots(&p, START));
    }

    #[test]
    fn anything_else_counts() {
        let snapshot = || {
            let mut p = page();
            record(&mut p, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT);
            p
        };
        // A commit (RM_XACT_ID), or a lock record of the standby manager, after the snapshot.
        for (rmid, info) in [(1u8, 0x00u8), (RM_STANDBY_ID, 0x00)] {
            let mut p = snapshot();
            record(&mut p, rmid, info, b"twelve bytes");
            assert!(!only_standby_snapshots(&p, START), "rmid {rmid} info {info:#x}");
        }
        // The write position inside a record, or past the page's records.
        let p = snapshot();
        assert!(!only_standby_snapshots(&p[..p.len() - 9], START));
        let mut longer = p.clone();
        longer.extend_from_slice(&[0u8; 8]);
        assert!(!only_standby_snapshots(&longer, START));
        // A damaged record, another segment's page, a record carried over, no records.
        let mut bad = p.clone();
        bad[LONG_HEADER_LEN + RECORD_HEADER_LEN + 3] ^= 1;
        assert!(!only_standby_snapshots(&bad, START));
        assert!(!only_standby_snapshots(&p, START + (16 << 20)));
        let mut carried = p.clone();
        carried[16] = 8;
        assert!(!only_standby_snapshots(&carried, START));
        assert!(!only_standby_snapshots(&page(), START));
        assert!(!only_standby_snapshots(&[], START));
    }

    /// A recycled segment's old records, valid in themselves, where a copy written only part
    /// of the way has not overwritten them: their links point elsewhere.
    #[test]
    fn records_not_linked_to_the_ones_before_count() {
        let old_range = START - 3 * (16 << 20);
        let mut p = page();
        record(&mut p, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT);
        record_linked(&mut p, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT, old_range + 0x28);
        assert!(!only_standby_snapshots(&p, START));
        let mut first = page();
        record_linked(&mut first, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT, old_range + 0x60);
        assert!(!only_standby_snapshots(&first, START));
        let mut ahead = page();
        record_linked(&mut ahead, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT, START + 0x28);
        assert!(!only_standby_snapshots(&ahead, START));
    }

    proptest! {
        /// Any byte of a record changed, or any bytes at all: never taken for snapshots
        /// by mistake, never a panic.
        #[test]
        fn damage_is_never_taken_for_snapshots(at in 0usize..50, bit in 0u8..8, junk in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut p = page();
            record(&mut p, RM_STANDBY_ID, XLOG_RUNNING_XACTS, &SNAPSHOT);
            p[LONG_HEADER_LEN + at] ^= 1 << bit;
            prop_assert!(!only_standby_snapshots(&p, START));
            let _ = only_standby_snapshots(&junk, START);
            let mut q = page();
            q.extend_from_slice(&junk);
            let _ = only_standby_snapshots(&q, START);
        }
    }
}
