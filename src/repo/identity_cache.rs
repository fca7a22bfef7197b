//! A local copy of a remote repository's `tidewal.json`, so that `wal-push` and `wal-fetch`
//! (one process per file) do not pay a round trip to the store for it on every call.
//!
//! The copy is the sealed object as stored, so it is authenticated with the repository key
//! like the original. It is trusted for `max_age` only: a repository deleted and made again
//! for another cluster is noticed within that time (and a create-only write into it is
//! refused sooner, on the first name both share).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{decode_identity, identity_bytes, Repo};
use crate::codec::Keyring;
use crate::error::Result;
use crate::store::Store;

/// Where and for how long identities are kept.
#[derive(Clone, Debug)]
pub struct IdentityCache {
    pub dir: PathBuf,
    pub max_age: Duration,
}

impl IdentityCache {
    /// The file for one repository: its URL and the server it is on (one bucket name can be
    /// on two servers). The name is a hash: URLs hold slashes.
    pub fn file_for(&self, url: &str, server: &str) -> PathBuf {
        let h = blake3::Hasher::new().update(url.as_bytes()).update(b"\0").update(server.as_bytes()).finalize();
        self.dir.join(format!("identity-{}", &h.to_hex()[..32]))
    }
}

/// Is a copy written at `written` still fresh at `now`? (Pure; a clock that went back
/// makes it stale rather than fresh for longer.)
pub fn fresh(written: SystemTime, now: SystemTime, max_age: Duration) -> bool {
    now.duration_since(written).is_ok_and(|age| age <= max_age)
}

impl Repo {
    /// Open a repository, reading a remote store's identity from `cache` while it is fresh.
    /// Local repositories are read directly: that is as cheap as the copy.
    /// `server` names where the store is (its endpoint), when the URL does not.
    pub async fn open_cached(
        store: Store,
        keys: Keyring,
        lz4: bool,
        cache: Option<&IdentityCache>,
        server: &str,
    ) -> Result<Repo> {
        let Some(cache) = cache.filter(|_| !store.is_local()) else {
            return Repo::open(store, keys, lz4).await;
        };
        let file = cache.file_for(store.url(), server);
        if let Some(raw) = read_fresh(&file, cache.max_age) {
            match decode_identity(&raw, &keys) {
                Ok(identity) => return Repo::from_identity(store, keys, lz4, identity),
                // Another key, damage: the store's copy decides.
                Err(e) => tracing::debug!("ignoring {}: {}", file.display(), e.message),
            }
        }
        let raw = identity_bytes(&store).await?;
        let identity = decode_identity(&raw, &keys)?;
        let repo = Repo::from_identity(store, keys, lz4, identity)?;
        if let Err(e) = write_copy(&cache.dir, &file, &raw) {
            tracing::debug!("cannot keep the repository identity in {}: {e}", cache.dir.display());
        }
        Ok(repo)
    }
}

fn read_fresh(file: &Path, max_age: Duration) -> Option<Vec<u8>> {
    let written = std::fs::metadata(file).ok()?.modified().ok()?;
    fresh(written, SystemTime::now(), max_age).then(|| std::fs::read(file).ok()).flatten()
}

/// Written whole and renamed into place, readable by its owner only.
fn write_copy(dir: &Path, file: &Path, raw: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    let mut tmp = tempfile::Builder::new().prefix(".identity-").tempfile_in(dir)?;
    tmp.write_all(raw)?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_only_within_max_age_and_never_from_the_future() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let max = Duration::from_secs(60);
        assert!(fresh(t, t, max));
        assert!(fresh(t, t + max, max));
        assert!(!fresh(t, t + max + Duration::from_secs(1), max));
        // Written "later" than now: the clock went back; do not trust it.
        assert!(!fresh(t + Duration::from_secs(5), t, max));
    }

    #[test]
    fn one_file_per_url_and_server() {
        let c = IdentityCache { dir: PathBuf::from("/c"), max_age: Duration::from_secs(60) };
        assert_ne!(c.file_for("s3://a/x", ""), c.file_for("s3://a/y", ""));
        assert_ne!(c.file_for("s3://a/x", "http://minio:9000"), c.file_for("s3://a/x", ""));
        assert_eq!(c.file_for("s3://a/x", "e"), c.file_for("s3://a/x", "e"));
        assert!(c.file_for("s3://a/x", "").starts_with("/c"));
    }
}
