//! Object storage: build a store from a URL, and the few operations the repository needs,
//! with the error cases (missing, exists, unreachable) made explicit. Knows nothing of WAL.

mod cloud;
mod ranged;
mod s3_uploads;
mod upload;

pub use cloud::{AzureOptions, GcsOptions, S3Options};
pub use s3_uploads::{parse_upload_name, upload_name};
pub use upload::{ChannelWriter, Piece, PARTS_IN_FLIGHT, PART_SIZE};

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{GetResult, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Config(String),
    #[error("object {0} does not exist")]
    NotFound(String),
    /// A file:// repository whose directory does not exist (only `init` and copying make it).
    #[error("there is no repository at {0}: the directory does not exist (run `tidewal init` as the daemon's user, or check repository.url)")]
    NoDirectory(String),
    #[error("the upload of {0} was abandoned because its data source failed; nothing was stored")]
    Incomplete(String),
    #[error("cannot reach the repository {url} for {op} {path}: {source}")]
    Unavailable {
        url: String,
        op: &'static str,
        path: String,
        #[source]
        source: Box<object_store::Error>,
    },
}

#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub s3: S3Options,
    pub azure: AzureOptions,
    pub gcs: GcsOptions,
    /// How long one operation may keep retrying transient failures.
    pub retry_timeout: Duration,
    pub max_retries: usize,
    /// Refuse to write to a store that ignores create-only writes: there, two writers can
    /// both "store" different content under one name. false accepts it (one writer only).
    pub require_conditional_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            s3: S3Options::default(),
            azure: AzureOptions::default(),
            gcs: GcsOptions::default(),
            retry_timeout: Duration::from_secs(60),
            max_retries: 10,
            require_conditional_writes: true,
        }
    }
}

/// Outcome of a create-if-absent write.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    Written,
    AlreadyExists,
}

/// One listed object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectInfo {
    pub name: String,
    pub size: u64,
    pub modified: std::time::SystemTime,
}

#[derive(Clone, Debug)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    url: String,
    /// The directory of a file:// repository: its multipart staging files (`<name>#<n>`)
    /// are invisible to listings, so leftovers are found on disk.
    local_root: Option<std::path::PathBuf>,
    /// An S3 repository's incomplete multipart uploads, its staging leftovers.
    uploads: Option<s3_uploads::S3Uploads>,
    require_conditional_writes: bool,
}

impl Store {
    /// The directory a `file://` URL or a bare absolute path names; None for other schemes.
    pub fn local_path(url: &str) -> Option<Result<std::path::PathBuf, StoreError>> {
        if url.starts_with('/') {
            return Some(Ok(std::path::PathBuf::from(url)));
        }
        url.starts_with("file://").then(|| {
            url::Url::parse(url)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| StoreError::Config(format!("repository url {url:?}: expected file:///absolute/path")))
        })
    }

    /// `file:///path`, a bare absolute path, `s3://bucket[/prefix]`, `az://container[/prefix]`
    /// or `gs://bucket[/prefix]`. A `file://` directory must exist: reading verbs never make
    /// one (as root, that would leave a directory the daemon's user cannot write).
    pub fn open(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        Self::open_at(url, opts, false)
    }

    /// The same, making a `file://` directory that does not exist yet (`init`, copying).
    pub fn open_or_make(url: &str, opts: &StoreOptions) -> Result<Store, StoreError> {
        Self::open_at(url, opts, true)
    }

    fn open_at(url: &str, opts: &StoreOptions, create: bool) -> Result<Store, StoreError> {
        let cfg = |m: String| StoreError::Config(m);
        let mut local_root = None;
        let mut uploads = None;
        let inner: Arc<dyn ObjectStore> = if let Some(path) = Self::local_path(url) {
            let path = path?;
            if create {
                std::fs::create_dir_all(&path)
                    .map_err(|e| cfg(format!("cannot create repository directory {}: {e}", path.display())))?;
            } else if !path.is_dir() {
                return Err(StoreError::NoDirectory(path.display().to_string()));
            }
            // file:// URLs ignore options, so build the store by hand to get fsync on every write.
            let fs = LocalFileSystem::new_with_prefix(&path)
                .map_err(|e| cfg(format!("cannot open repository directory {}: {e}", path.display())))?
                .with_fsync(true)
                .with_automatic_cleanup(true);
            local_root = Some(path);
            Arc::new(fs)
        } else if let Some(build) = cloud::builder(url) {
            let built = build(url, opts).map_err(|e| cfg(format!("repository url {url:?}: {e}")))?;
            uploads = built.uploads;
            built.inner
        } else if url.contains("://") {
            let scheme = url.split("://").next().unwrap_or_default();
            return Err(cfg(format!(
                "repository url {url:?}: the {scheme}:// scheme is not supported; use file:///path, s3://bucket/prefix, \
                 az://container/prefix or gs://bucket/prefix"
            )));
        } else {
            return Err(cfg(format!(
                "repository url {url:?}: expected file:///absolute/path or a store URL such as s3://bucket/prefix"
            )));
        };
        let require_conditional_writes = opts.require_conditional_writes;
        Ok(Store { inner, url: url.to_string(), local_root, uploads, require_conditional_writes })
    }

    /// Wrap an already-built store (tests use this to stand in for misbehaving servers).
    pub fn from_object_store(inner: Arc<dyn ObjectStore>, url: &str) -> Store {
        Store { inner, url: url.to_string(), local_root: None, uploads: None, require_conditional_writes: true }
    }

    /// Accept (false) or refuse (true, the default) writing where create-only writes are ignored.
    pub fn with_conditional_writes_required(mut self, required: bool) -> Store {
        self.require_conditional_writes = required;
        self
    }

    pub fn requires_conditional_writes(&self) -> bool {
        self.require_conditional_writes
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// A `file://` repository: reading it costs no round trip.
    pub fn is_local(&self) -> bool {
        self.local_root.is_some()
    }

    fn unavailable(&self, op: &'static str, path: &str, source: object_store::Error) -> StoreError {
        match source {
            object_store::Error::NotFound { .. } => StoreError::NotFound(path.to_string()),
            source => {
                StoreError::Unavailable { url: self.url.clone(), op, path: path.to_string(), source: Box::new(source) }
            }
        }
    }

    /// Write `data` unless an object of that name exists. `conditional` says the store honours
    /// create-only writes; without it the check is a HEAD first, which the caller must back
    /// with a read-after-write comparison.
    pub async fn create(&self, path: &str, data: Bytes, conditional: bool) -> Result<Created, StoreError> {
        let loc = ObjPath::from(path);
        if !conditional && self.exists(path).await? {
            return Ok(Created::AlreadyExists);
        }
        let mode = if conditional { PutMode::Create } else { PutMode::Overwrite };
        match self.put_small(&loc, data, mode).await {
            Ok(()) => Ok(Created::Written),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
            Err(e) => Err(self.unavailable("write", path, e)),
        }
    }

    /// Replace an object (used only for objects that are meant to change, such as probes).
    pub async fn put(&self, path: &str, data: Bytes) -> Result<(), StoreError> {
        self.put_small(&ObjPath::from(path), data, PutMode::Overwrite)
            .await
            .map_err(|e| self.unavailable("write", path, e))
    }

    /// One small object written whole. In a local repository a delete that empties a
    /// directory removes it (so removed backups leave no directories behind), and another
    /// process writing into it at that moment fails on the vanished directory before its
    /// object exists (leases and clock probes share `locks/`): such a write is tried again.
    async fn put_small(&self, loc: &ObjPath, data: Bytes, mode: PutMode) -> Result<(), object_store::Error> {
        let mut tries = 0;
        loop {
            let opts = PutOptions { mode: mode.clone(), ..Default::default() };
            match self.inner.put_opts(loc, PutPayload::from_bytes(data.clone()), opts).await {
                Err(e) if tries < 10 && self.local_root.is_some() && directory_vanished(&e) => {
                    tries += 1;
                    tracing::debug!("writing {loc}: its directory was removed beside it ({e}); writing again");
                }
                r => return r.map(|_| ()),
            }
        }
    }

    pub async fn exists(&self, path: &str) -> Result<bool, StoreError> {
        match self.inner.head(&ObjPath::from(path)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.unavailable("check", path, e)),
        }
    }

    /// Start reading an object; `NotFound` when it does not exist.
    pub async fn get(&self, path: &str) -> Result<GetResult, StoreError> {
        self.inner.get(&ObjPath::from(path)).await.map_err(|e| self.unavailable("read", path, e))
    }

    /// Read a whole small object.
    pub async fn get_bytes(&self, path: &str) -> Result<Bytes, StoreError> {
        let r = self.get(path).await?;
        r.bytes().await.map_err(|e| self.unavailable("read", path, e))
    }

    /// An object's stored size; `NotFound` when it does not exist.
    pub async fn size(&self, path: &str) -> Result<u64, StoreError> {
        Ok(self.inner.head(&ObjPath::from(path)).await.map_err(|e| self.unavailable("check", path, e))?.size)
    }

    /// Bytes `range` of an object (the caller keeps the range inside the object).
    pub async fn get_range(&self, path: &str, range: std::ops::Range<u64>) -> Result<Bytes, StoreError> {
        if range.is_empty() {
            return Ok(Bytes::new());
        }
        self.inner.get_range(&ObjPath::from(path), range).await.map_err(|e| self.unavailable("read", path, e))
    }

    /// The store's own clock: the modification time it gives a freshly written probe object
    /// (`probe` must be a unique name), which is removed again.
    pub async fn clock(&self, probe: &str) -> Result<std::time::SystemTime, StoreError> {
        self.put(probe, Bytes::from_static(b"tidewal clock probe")).await?;
        let head = self.inner.head(&ObjPath::from(probe)).await.map_err(|e| self.unavailable("check", probe, e));
        self.delete(probe).await?;
        Ok(to_system_time(&head?))
    }

    /// What multipart uploads that never finished (a killed writer) left, with a size and
    /// the time of their last activity. file://: staging files (`<name>#<n>`), found on disk.
    /// S3: incomplete uploads under the repository prefix (`<name>?uploadId=<id>`, size 0,
    /// the newest part's time or the start); an empty list, with a warning, when the server
    /// does not offer the listing or the credentials may not use it (the bucket's lifecycle
    /// rule then does the clean-up). Azure and GCS: an empty list. Azure keeps an unfinished
    /// upload's blocks uncommitted, invisible and discarded by the service after 7 days;
    /// GCS keeps an unfinished XML multipart upload until it is aborted, which the bucket's
    /// lifecycle rule (AbortIncompleteMultipartUpload) does.
    pub async fn staging_leftovers(&self) -> Result<Vec<ObjectInfo>, StoreError> {
        if let Some(up) = &self.uploads {
            return match up.list().await {
                Ok(list) => Ok(list
                    .into_iter()
                    .map(|u| ObjectInfo { name: upload_name(&u.name, &u.id), size: 0, modified: u.active })
                    .collect()),
                Err(s3_uploads::UploadsError::NotOffered(e)) => {
                    tracing::warn!("{e}: incomplete multipart uploads are left to the bucket's lifecycle rule");
                    Ok(Vec::new())
                }
                Err(s3_uploads::UploadsError::Failed(e)) => {
                    Err(StoreError::Config(format!("repository {}: {e}", self.url)))
                }
            };
        }
        let Some(root) = self.local_root.clone() else { return Ok(Vec::new()) };
        let url = self.url.clone();
        tokio::task::spawn_blocking(move || walk_staging(&root))
            .await
            .map_err(|e| StoreError::Config(format!("cannot look for staging files in {url}: {e}")))?
            .map_err(|e| StoreError::Config(format!("cannot look for staging files in {}: {e}", self.url)))
    }

    /// Remove one staging leftover found by [`Store::staging_leftovers`]: abort an S3 upload,
    /// or remove a staging file and its directory when that is left empty (as deleting an
    /// object does).
    pub async fn remove_staging(&self, name: &str) -> Result<(), StoreError> {
        if let Some(up) = &self.uploads {
            let (object, id) = parse_upload_name(name)
                .ok_or_else(|| StoreError::Config(format!("{name} is not an incomplete upload")))?;
            return up.abort(object, &id).await.map_err(|e| self.unavailable("abort the upload of", object, e));
        }
        let Some(root) = &self.local_root else { return Ok(()) };
        if !is_staging_file(name) || name.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
            return Err(StoreError::Config(format!("{name} is not a staging file")));
        }
        let path = root.join(name);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::Config(format!("cannot remove {}: {e}", path.display()))),
        }
        let mut dir = path.parent();
        while let Some(d) = dir.filter(|d| *d != root.as_path()) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    }

    pub async fn delete(&self, path: &str) -> Result<(), StoreError> {
        match self.inner.delete(&ObjPath::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.unavailable("delete", path, e)),
        }
    }

    /// Names of all objects under a prefix.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self.list_meta(prefix).await?.into_iter().map(|o| o.name).collect())
    }

    /// All objects under a prefix with their size and modification time, sorted by name.
    pub async fn list_meta(&self, prefix: &str) -> Result<Vec<ObjectInfo>, StoreError> {
        let p = ObjPath::from(prefix);
        let mut s = self.inner.list(Some(&p));
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            match m {
                Ok(m) => {
                    out.push(ObjectInfo { name: m.location.to_string(), size: m.size, modified: to_system_time(&m) })
                }
                Err(e) => return Err(self.unavailable("list", prefix, e)),
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Does the store refuse a second create-only write to the same name? Some S3-compatible
    /// servers silently overwrite instead; on those the repository must check before and after.
    /// `probe_path` must be a fresh name (`layout::probe_name`): nothing is deleted first.
    pub async fn probe_conditional_writes(&self, probe_path: &str) -> Result<bool, StoreError> {
        let first = match self.create(probe_path, Bytes::from_static(b"tidewal probe 1"), true).await {
            Ok(c) => c,
            Err(StoreError::Unavailable { .. }) => {
                // Some servers reject the precondition header outright; plain writes must still work.
                self.put(probe_path, Bytes::from_static(b"tidewal probe 1")).await?;
                self.delete(probe_path).await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let second = self.create(probe_path, Bytes::from_static(b"tidewal probe 2"), true).await;
        let kept = self.get_bytes(probe_path).await;
        self.delete(probe_path).await?;
        let honoured = first == Created::Written
            && matches!(second, Ok(Created::AlreadyExists))
            && kept.map(|b| &b[..] == b"tidewal probe 1").unwrap_or(false);
        Ok(honoured)
    }
}

fn to_system_time(m: &object_store::ObjectMeta) -> std::time::SystemTime {
    let secs = m.last_modified.timestamp().max(0) as u64;
    std::time::UNIX_EPOCH + Duration::new(secs, m.last_modified.timestamp_subsec_nanos())
}

/// Is this a staging leftover's name: object_store's local staging file `<name>#<digits>`,
/// or an incomplete S3 upload `<name>?uploadId=<id>` (pure).
pub fn is_staging_name(name: &str) -> bool {
    parse_upload_name(name).is_some() || is_staging_file(name)
}

fn is_staging_file(name: &str) -> bool {
    let file = name.rsplit('/').next().unwrap_or(name);
    match file.rsplit_once('#') {
        Some((base, n)) => !base.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()),
        None => false,
    }
}

/// Only where tidewal writes objects: a repository at the root of a file system also holds
/// `lost+found` (unreadable to the daemon's user) or a filer's `.snapshot` (read-only).
const STAGING_AREAS: [&str; 3] = ["backups", "wal", "dumps"];

fn walk_staging(root: &std::path::Path) -> std::io::Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    let mut dirs: Vec<_> = STAGING_AREAS.iter().map(|a| root.join(a)).collect();
    while let Some(dir) = dirs.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            // Removed meanwhile (a prune emptied it), or never made.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            // Not ours to clean: say so, and let retention go on.
            Err(e) => {
                tracing::warn!("not looking for staging files in {}: {e}", dir.display());
                continue;
            }
        };
        for entry in entries {
            let entry = entry?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if meta.is_dir() {
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    dirs.push(entry.path());
                }
                continue;
            }
            let Ok(rel) = entry.path().strip_prefix(root).map(|p| p.to_string_lossy().into_owned()) else { continue };
            if meta.is_file() && is_staging_file(&rel) {
                out.push(ObjectInfo { name: rel, size: meta.len(), modified: meta.modified()? });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// A local write that failed because a directory on its way was not there (not an object
/// that was not found, nor one that exists).
fn directory_vanished(e: &object_store::Error) -> bool {
    if matches!(e, object_store::Error::NotFound { .. } | object_store::Error::AlreadyExists { .. }) {
        return false;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::NotFound) {
            return true;
        }
        cause = c.source();
    }
    false
}

#[cfg(test)]
#[path = "remote_tests.rs"]
mod remote_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names() {
        assert!(is_staging_name("backups/x/base.tar#1"));
        assert!(is_staging_name("wal/00000001/000000010000000000000003#12"));
        assert!(!is_staging_name("backups/x/base.tar"));
        assert!(!is_staging_name("backups/x/base.tar#"));
        assert!(!is_staging_name("backups/x/base.tar#a1"));
        assert!(!is_staging_name("#1"));
        // An incomplete S3 upload.
        assert!(is_staging_name(&upload_name("backups/x/base.tar", "2~x/y")));
        assert!(!is_staging_file(&upload_name("backups/x/base.tar", "1")));
    }

    /// Two processes write and delete small objects in one directory (leases and clock
    /// probes in `locks/`): a delete that empties it removes it, while the other is making
    /// it again for its own write. Every write still succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_survive_a_directory_emptied_and_removed_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = dir.path().to_str().unwrap().to_string();
        let run = |who: &'static str| {
            let store = Store::open(&url, &StoreOptions::default()).unwrap();
            tokio::spawn(async move {
                for i in 0..1500 {
                    let name = format!("locks/{who}-{i}");
                    if i % 2 == 0 {
                        store.put(&name, Bytes::from_static(b"probe")).await?;
                    } else {
                        store.create(&name, Bytes::from_static(b"lease"), true).await?;
                    }
                    store.delete(&name).await?;
                }
                Ok::<(), StoreError>(())
            })
        };
        let (a, b) = (run("a"), run("b"));
        a.await.unwrap().unwrap();
        b.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn staging_leftovers_of_a_local_repository() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap(), &StoreOptions::default()).unwrap();
        store.put("backups/a/base.tar", Bytes::from_static(b"done")).await.unwrap();
        std::fs::write(dir.path().join("backups/a/base.tar#1"), b"partial").unwrap();
        std::fs::create_dir_all(dir.path().join("backups/b")).unwrap();
        std::fs::write(dir.path().join("backups/b/16384.tar#2"), b"partial").unwrap();
        // Invisible to listings, found on disk.
        assert_eq!(store.list("backups").await.unwrap(), vec!["backups/a/base.tar".to_string()]);
        let left: Vec<String> = store.staging_leftovers().await.unwrap().into_iter().map(|o| o.name).collect();
        assert_eq!(left, vec!["backups/a/base.tar#1".to_string(), "backups/b/16384.tar#2".to_string()]);
        for n in &left {
            store.remove_staging(n).await.unwrap();
        }
        assert!(store.staging_leftovers().await.unwrap().is_empty());
        assert!(!dir.path().join("backups/b").exists(), "an emptied directory stays behind");
        assert!(dir.path().join("backups/a/base.tar").exists());
        assert!(store.remove_staging("backups/a/base.tar").await.is_err());
        assert!(store.remove_staging("../x#1").await.is_err());
        // Only where objects are written: not lost+found (unreadable), not elsewhere.
        std::fs::create_dir_all(dir.path().join("lost+found")).unwrap();
        std::fs::write(dir.path().join("lost+found/x#1"), b"?").unwrap();
        std::fs::set_permissions(dir.path().join("lost+found"), std::os::unix::fs::PermissionsExt::from_mode(0o000))
            .unwrap();
        assert!(store.staging_leftovers().await.unwrap().is_empty());
        std::fs::set_permissions(dir.path().join("lost+found"), std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        // The store's clock is the probe's modification time.
        let t = store.clock("tmp/clock-test").await.unwrap();
        let now = std::time::SystemTime::now();
        assert!(t <= now + Duration::from_secs(1) && t + Duration::from_secs(60) > now);
        assert!(!store.exists("tmp/clock-test").await.unwrap());
    }
}
