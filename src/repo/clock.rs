//! Time for deciding what to delete: the host's clock bounded by the store's, so a host
//! clock that jumped forward cannot make retention or clean-up delete what is still needed.

use std::time::{Duration, SystemTime};

use super::{layout, Repo};
use crate::error::{Code, Fail, Result};

/// How far the host's and the store's clocks may disagree before nothing is deleted.
pub const MAX_SKEW: Duration = Duration::from_secs(5 * 60);

/// The host's and the store's clocks disagree by more than [`MAX_SKEW`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Skew {
    pub host: SystemTime,
    pub store: SystemTime,
}

impl std::fmt::Display for Skew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (ahead, by) = match self.host.duration_since(self.store) {
            Ok(d) => ("ahead of", d),
            Err(e) => ("behind", e.duration()),
        };
        write!(
            f,
            "this host's clock ({}) is {} {ahead} the repository store's clock ({}), more than {} allowed",
            humantime::format_rfc3339_seconds(self.host),
            humantime::format_duration(Duration::from_secs(by.as_secs())),
            humantime::format_rfc3339_seconds(self.store),
            humantime::format_duration(MAX_SKEW)
        )
    }
}

/// The time to decide deletions by (pure): the earlier of the two clocks, or a refusal when
/// they disagree by more than [`MAX_SKEW`].
pub fn effective_now(host: SystemTime, store: SystemTime) -> Result<SystemTime, Skew> {
    let apart = host.duration_since(store).unwrap_or_else(|e| e.duration());
    if apart > MAX_SKEW {
        return Err(Skew { host, store });
    }
    Ok(host.min(store))
}

/// Read the store's clock (a fresh probe object's modification time) and bound `host` by it.
pub async fn bounded_now(repo: &Repo, host: SystemTime) -> Result<SystemTime> {
    let mut random = [0u8; 8];
    rand::fill(&mut random);
    let probe = format!("{}{}", layout::CLOCK_PROBE_PREFIX, hex::encode(random));
    let store = repo.store.clock(&probe).await?;
    effective_now(host, store).map_err(|s| Fail::new(Code::Conflict, format!("{s}: nothing was deleted")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_earlier_clock_within_the_bound() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let min = Duration::from_secs(60);
        assert_eq!(effective_now(t, t), Ok(t));
        assert_eq!(effective_now(t + 4 * min, t), Ok(t));
        assert_eq!(effective_now(t, t + 4 * min), Ok(t));
        assert_eq!(effective_now(t + MAX_SKEW, t), Ok(t));
        let ahead = effective_now(t + MAX_SKEW + Duration::from_secs(1), t).unwrap_err();
        assert_eq!(ahead, Skew { host: t + MAX_SKEW + Duration::from_secs(1), store: t });
        assert!(ahead.to_string().contains("5m 1s ahead of"), "{ahead}");
        let behind = effective_now(t, t + Duration::from_secs(86400)).unwrap_err();
        assert!(behind.to_string().contains("1day behind"), "{behind}");
    }

    proptest::proptest! {
        /// Never later than either clock, and refused exactly when they are too far apart.
        #[test]
        fn never_later_than_either(h in 0u64..4_000_000_000, s in 0u64..4_000_000_000) {
            let (h, s) = (SystemTime::UNIX_EPOCH + Duration::from_secs(h), SystemTime::UNIX_EPOCH + Duration::from_secs(s));
            let apart = h.duration_since(s).unwrap_or_else(|e| e.duration());
            match effective_now(h, s) {
                Ok(n) => proptest::prop_assert!(n <= h && n <= s && apart <= MAX_SKEW),
                Err(_) => proptest::prop_assert!(apart > MAX_SKEW),
            }
        }
    }
}
