//! Timeline history files (`00000002.history`). Pure parsing, no I/O.

use super::lsn::Lsn;

/// One line of a history file: `parent_tli <TAB> switchpoint <TAB> reason`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryEntry {
    pub parent_tli: u32,
    /// The first LSN that belongs to the next timeline.
    pub switchpoint: Lsn,
    pub reason: String,
}

/// Parse a history file as PostgreSQL writes it. Blank lines and `#` comments are skipped,
/// like `readTimeLineHistory` does; timelines must increase.
pub fn parse_history(text: &str) -> Result<Vec<HistoryEntry>, String> {
    let mut out: Vec<HistoryEntry> = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.splitn(3, |c: char| c.is_ascii_whitespace());
        let tli = parts.next().unwrap_or_default();
        let lsn = parts.next().unwrap_or_default().trim();
        let reason = parts.next().unwrap_or_default().trim().to_string();
        let parent_tli: u32 = tli.parse().map_err(|_| format!("line {}: {tli:?} is not a timeline number", n + 1))?;
        let switchpoint: Lsn = lsn.parse().map_err(|e| format!("line {}: {e}", n + 1))?;
        if let Some(prev) = out.last() {
            if parent_tli <= prev.parent_tli {
                return Err(format!("line {}: timeline {parent_tli} does not increase", n + 1));
            }
        }
        out.push(HistoryEntry { parent_tli, switchpoint, reason });
    }
    Ok(out)
}

/// The timeline a position belongs to, given the history of timeline `current` (pure):
/// the first timeline whose switchpoint lies beyond it, like `tliOfPointInHistory`.
pub fn timeline_of(lsn: Lsn, history: &[HistoryEntry], current: u32) -> u32 {
    history.iter().find(|e| lsn < e.switchpoint).map_or(current, |e| e.parent_tli)
}

/// Where streaming resumes on a server that lost (or never had) our slot (pure): where the
/// WAL we stored ends (`tli`, `end`), or where the server's history left that timeline, if
/// that came first. `None` when the server's history does not pass through our timeline.
pub fn resume_point(tli: u32, end: Lsn, server_tli: u32, history: &[HistoryEntry]) -> Option<Lsn> {
    if tli == server_tli {
        return Some(end);
    }
    history.iter().find(|e| e.parent_tli == tli).map(|e| end.min(e.switchpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resuming_after_a_failover() {
        let h = parse_history("1\t0/5000000\tx\n2\t0/9000000\ty\n").unwrap();
        // Same timeline: where we stopped.
        assert_eq!(resume_point(3, Lsn(0xA000000), 3, &h), Some(Lsn(0xA000000)));
        // We got further on timeline 1 than the new primary did: back to its switch.
        assert_eq!(resume_point(1, Lsn(0x8000000), 3, &h), Some(Lsn(0x5000000)));
        // The switch came later than where we stopped.
        assert_eq!(resume_point(2, Lsn(0x6000000), 3, &h), Some(Lsn(0x6000000)));
        // A timeline the server never went through.
        assert_eq!(resume_point(4, Lsn(0x6000000), 3, &h), None);
    }

    #[test]
    fn timeline_of_a_position() {
        let h = parse_history("1\t0/3000198\tx\n2\t0/5000000\ty\n").unwrap();
        assert_eq!(timeline_of(Lsn(0x1000000), &h, 3), 1);
        assert_eq!(timeline_of(Lsn(0x3000197), &h, 3), 1);
        assert_eq!(timeline_of(Lsn(0x3000198), &h, 3), 2);
        assert_eq!(timeline_of(Lsn(0x5000000), &h, 3), 3);
        assert_eq!(timeline_of(Lsn(0x5000000), &[], 1), 1);
    }

    #[test]
    fn parses_postgres_output() {
        let text = "1\t0/3000198\tno recovery target specified\n\n2\t0/5000000\tat restore point \"x\"\n";
        let h = parse_history(text).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].parent_tli, 1);
        assert_eq!(h[0].switchpoint, Lsn(0x3000198));
        assert_eq!(h[1].reason, "at restore point \"x\"");
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_history("x\t0/1\n").is_err());
        assert!(parse_history("1\tnope\n").is_err());
        assert!(parse_history("2\t0/1\n1\t0/2\n").is_err());
        assert_eq!(parse_history("# comment only\n").unwrap(), vec![]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(8192))]

        /// Any text, and lines shaped like a history file's: parsed with increasing timelines,
        /// or refused; never a panic.
        #[test]
        fn any_history_text_is_parsed_or_refused(
            text in proptest::prop_oneof![
                "\\PC{0,200}",
                "(( |\t)*[0-9]{0,11}[ \t]+[0-9A-Fa-f]{0,9}/[0-9A-Fa-fx]{0,9}([ \t]\\PC{0,10})?\n|#\\PC{0,5}\n|\n){0,6}",
            ],
        ) {
            if let Ok(h) = parse_history(&text) {
                proptest::prop_assert!(h.windows(2).all(|w| w[0].parent_tli < w[1].parent_tli));
                if let Some(last) = h.last() {
                    let _ = timeline_of(last.switchpoint, &h, last.parent_tli.saturating_add(1));
                    let _ = resume_point(last.parent_tli, last.switchpoint, last.parent_tli.saturating_add(1), &h);
                }
            }
        }
    }
}
