//! Which dumps retention deletes (pure): the newest dump always stays, and so does every
//! dump that either rule protects: among the newest `keep`, or finished inside `window`.
//! With neither rule set nothing is deleted. Protecting the union means a second rule never
//! deletes what the first alone would keep.

use std::time::{Duration, SystemTime};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DumpPolicy {
    pub keep: Option<usize>,
    pub window: Option<Duration>,
}

/// The ids to delete among `dumps` (id, finished), in any order; `now` from the bounded clock.
pub fn plan_dumps(dumps: &[(String, SystemTime)], now: SystemTime, policy: DumpPolicy) -> Vec<String> {
    if policy.keep.is_none() && policy.window.is_none() {
        return Vec::new();
    }
    let mut newest_first: Vec<&(String, SystemTime)> = dumps.iter().collect();
    newest_first.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
    newest_first
        .iter()
        .enumerate()
        .filter(|(i, (_, finished))| {
            let counted = policy.keep.is_some_and(|k| *i < k);
            let recent = policy.window.is_some_and(|w| *finished + w > now);
            *i > 0 && !counted && !recent
        })
        .map(|(_, (id, _))| id.clone())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: u64 = 86400;

    fn at(days: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(20_000 * DAY + days * DAY)
    }

    fn dumps(days: &[u64]) -> Vec<(String, SystemTime)> {
        days.iter().map(|d| (format!("d{d}"), at(*d))).collect()
    }

    #[test]
    fn keep_window_and_both() {
        let all = dumps(&[1, 2, 3, 4, 5]);
        let now = at(6);
        let p = |keep, window: Option<u64>| DumpPolicy { keep, window: window.map(|d| Duration::from_secs(d * DAY)) };
        assert!(plan_dumps(&all, now, p(None, None)).is_empty());
        assert_eq!(plan_dumps(&all, now, p(Some(1), None)), ["d4", "d3", "d2", "d1"]);
        assert_eq!(plan_dumps(&all, now, p(Some(3), None)), ["d2", "d1"]);
        // Finished less than 3 days before now: days 4 and 5.
        assert_eq!(plan_dumps(&all, now, p(None, Some(3))), ["d3", "d2", "d1"]);
        // The union: three newest, or the last four days.
        assert_eq!(plan_dumps(&all, now, p(Some(3), Some(5))), ["d1"]);
        // All older than the window: the newest still stays.
        assert_eq!(plan_dumps(&all, at(100), p(None, Some(1))), ["d4", "d3", "d2", "d1"]);
        assert!(plan_dumps(&[], now, p(Some(1), Some(1))).is_empty());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn deletes_exactly_the_unprotected(
            days in proptest::collection::btree_set(0u64..60, 0..20),
            keep in proptest::option::of(1usize..6),
            window in proptest::option::of(1u64..30),
            now in 0u64..90,
        ) {
            let days: Vec<u64> = days.into_iter().collect();
            let all = dumps(&days);
            let policy = DumpPolicy { keep, window: window.map(|d| Duration::from_secs(d * DAY)) };
            let gone = plan_dumps(&all, at(now), policy);
            let newest = days.iter().max();
            for d in &days {
                let id = format!("d{d}");
                let rank = days.iter().filter(|x| *x > d).count();
                let protected = Some(d) == newest
                    || (keep.is_none() && window.is_none())
                    || keep.is_some_and(|k| rank < k)
                    || window.is_some_and(|w| d + w > now);
                prop_assert_eq!(gone.contains(&id), !protected, "dump of day {}", d);
            }
            prop_assert!(gone.len() < days.len().max(1));
        }
    }
}
