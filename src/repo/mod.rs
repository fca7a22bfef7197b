//! The repository: its identity file, object names, and storing and fetching sealed objects
//! with the no-overwrite rule. Talks to the store and the codec, never to PostgreSQL.

pub mod catalog;
pub mod clock;
pub mod dump_retention;
pub mod dumps;
pub mod file_index;
pub mod identity_cache;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod retention;
pub mod tar_delta;
pub mod timelines;
pub mod unpack;

use std::io::{Read, Write};
use std::path::Path;

use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::codec::{
    digest_hex, last_frame_offset, open_to_vec, seal_to_vec, trailer_digest, Cipher, CodecError, Digest, Header,
    Keyring, OpenReader, SealOptions, SealWriter, HEADER_LEN,
};
use crate::error::{Code, Fail, Result};
use crate::store::{ChannelWriter, Created, Store, StoreError};

pub const FORMAT: u32 = 1;

/// `tidewal.json`: what the repository belongs to. Sealed like every other object.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub format: u32,
    /// Decimal, because JSON numbers lose precision above 2^53.
    pub system_identifier: String,
    pub pg_version_num: u32,
    pub wal_segment_size: u64,
    pub encrypted: bool,
    pub key_id: Option<String>,
    /// Whether the store refused a second create-only write when the repository was made.
    pub conditional_writes: bool,
    /// What new objects are sealed with (repositories made before the choice existed have
    /// none recorded: XChaCha20-Poly1305).
    #[serde(default)]
    pub cipher: Cipher,
    pub created_at: String,
    pub created_by: String,
}

impl Identity {
    pub fn system_id(&self) -> u64 {
        self.system_identifier.parse().unwrap_or(0)
    }

    pub fn pg_major(&self) -> u32 {
        self.pg_version_num / 10000
    }

    /// What every reader relies on (pure): a segment size PostgreSQL allows (a power of
    /// two from 1 MiB to 1 GiB; WAL names divide by it) and a system identifier.
    pub fn check(&self) -> std::result::Result<(), String> {
        let seg = self.wal_segment_size;
        if !seg.is_power_of_two() || !(1 << 20..=1 << 30).contains(&seg) {
            return Err(format!("wal_segment_size {seg} is not a WAL segment size (a power of two, 1 MiB to 1 GiB)"));
        }
        if self.system_identifier.parse::<u64>().is_err() {
            return Err(format!("system_identifier {:?} is not a number", self.system_identifier));
        }
        Ok(())
    }
}

/// How a push ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    Stored,
    /// An identical copy was already there.
    AlreadyPresent,
}

pub struct Repo {
    pub store: Store,
    pub keys: Keyring,
    pub lz4: bool,
    pub identity: Identity,
}

fn integrity(obj: &str, e: CodecError) -> Fail {
    let code = match &e {
        CodecError::Io(_) => Code::Storage,
        _ => Code::Integrity,
    };
    Fail::new(code, format!("object {obj}: {e}"))
}

impl Repo {
    /// Open an initialised repository.
    pub async fn open(store: Store, keys: Keyring, lz4: bool) -> Result<Repo> {
        let raw = identity_bytes(&store).await?;
        let identity = decode_identity(&raw, &keys)?;
        Repo::from_identity(store, keys, lz4, identity)
    }

    fn from_identity(store: Store, keys: Keyring, lz4: bool, identity: Identity) -> Result<Repo> {
        if identity.format > FORMAT {
            return Err(Fail::new(
                Code::Conflict,
                format!(
                    "the repository uses format {} but this tidewal knows {FORMAT}: upgrade tidewal",
                    identity.format
                ),
            ));
        }
        let keys = keys.with_cipher(identity.cipher);
        Ok(Repo { store, keys, lz4, identity })
    }

    /// Create the identity file, or accept an existing one for the same cluster.
    pub async fn init(store: Store, keys: Keyring, lz4: bool, identity: Identity) -> Result<(Repo, bool)> {
        if !identity.conditional_writes && store.requires_conditional_writes() {
            return Err(lax_store(store.url()));
        }
        // Always XChaCha20-Poly1305: an older tidewal can then read it and say to upgrade.
        let sealed = seal_to_vec(
            &serde_json::to_vec_pretty(&identity).map_err(|e| Fail::new(Code::Internal, e.to_string()))?,
            keys.clone().with_cipher(Cipher::XChaCha20Poly1305).write_key(),
            layout::IDENTITY,
            SealOptions { lz4: false, digest: None, chain: false },
        )
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        let created = store.create(layout::IDENTITY, Bytes::from(sealed.out), identity.conditional_writes).await?;
        if created == Created::Written {
            return Ok((Repo::from_identity(store, keys, lz4, identity)?, true));
        }
        let existing = Repo::open(store, keys, lz4).await?;
        existing.ensure_cluster(identity.system_id(), "this cluster")?;
        Ok((existing, false))
    }

    /// Refuse to write where the store ignores create-only writes (the repository recorded
    /// it at init), unless the configuration accepts that store: there, two concurrent
    /// writers of one name could both succeed and one copy would be lost.
    pub fn ensure_writable(&self) -> Result<()> {
        if self.identity.conditional_writes || !self.store.requires_conditional_writes() {
            return Ok(());
        }
        Err(lax_store(self.store.url()))
    }

    /// Refuse to mix clusters in one repository.
    pub fn ensure_cluster(&self, system_id: u64, who: &str) -> Result<()> {
        if self.identity.system_id() != system_id {
            return Err(Fail::new(
                Code::Conflict,
                format!(
                    "the repository {} belongs to database system {}, but {who} is system {system_id}: use a separate repository for each cluster",
                    self.store.url(),
                    self.identity.system_identifier
                ),
            ));
        }
        Ok(())
    }

    pub fn seal_options(&self, digest: Option<Digest>) -> SealOptions {
        SealOptions { lz4: self.lz4, digest, chain: false }
    }

    /// Store a sealed object under the no-overwrite rule: an identical object already there is
    /// success, a different one is a conflict that names both digests.
    pub async fn push_sealed(&self, obj: &str, sealed: Vec<u8>, digest: Digest) -> Result<Pushed> {
        self.ensure_writable()?;
        let conditional = self.identity.conditional_writes;
        let created = match self.store.create(obj, Bytes::from(sealed), conditional).await {
            Ok(c) => c,
            // A server may refuse a create-only write before it has read the body, and
            // close the connection: the client then sees a failed request, not the refusal.
            // An identical object there is success; anything else keeps the error.
            Err(e) => match self.already_stored(obj, &digest).await {
                Ok(Some(done)) => return Ok(done),
                Err(f) if f.code == Code::Conflict => return Err(f),
                _ => return Err(e.into()),
            },
        };
        match created {
            Created::Written if conditional => Ok(Pushed::Stored),
            Created::Written => {
                // The store cannot refuse overwrites, so confirm that what is there now is ours.
                let now = self.stored_digest(obj).await?;
                if now != digest {
                    return Err(conflict(obj, &now, &digest, "was replaced by a concurrent writer"));
                }
                Ok(Pushed::Stored)
            }
            Created::AlreadyExists => {
                let existing = self.stored_digest(obj).await?;
                if existing == digest {
                    Ok(Pushed::AlreadyPresent)
                } else {
                    Err(conflict(obj, &existing, &digest, "already exists with different content"))
                }
            }
        }
    }

    /// Seal and store a plaintext stream of any size with bounded memory (multipart upload).
    /// `digest` is the plaintext's BLAKE3, computed beforehand: it decides duplicates up
    /// front, and sealing fails (storing nothing) if the source no longer matches it.
    pub async fn push_stream<R: Read + Send + 'static>(&self, obj: &str, mut src: R, digest: Digest) -> Result<Pushed> {
        self.ensure_writable()?;
        if let Some(done) = self.already_stored(obj, &digest).await? {
            return Ok(done);
        }
        self.sealed_upload(obj, self.seal_options(Some(digest)), move |w| std::io::copy(&mut src, w).map(|_| ()))
            .wait(obj)
            .await?;
        // Multipart uploads cannot be create-only: confirm that what is stored now is ours.
        let now = self.stored_digest(obj).await?;
        if now != digest {
            return Err(conflict(obj, &now, &digest, "was replaced by a concurrent writer"));
        }
        Ok(Pushed::Stored)
    }

    /// Seal and store a plaintext stream, replacing whatever `obj` held: only for objects
    /// that are meant to change, like the receiver's growing `.stream` copy. Returns the
    /// stored size.
    pub async fn replace_stream<R: Read + Send + 'static>(&self, obj: &str, mut src: R) -> Result<u64> {
        self.ensure_writable()?;
        let (_, _, stored) = self
            .sealed_upload(obj, self.seal_options(None), move |w| std::io::copy(&mut src, w).map(|_| ()))
            .wait(obj)
            .await?;
        Ok(stored)
    }

    /// Is `obj` stored already? `Some(AlreadyPresent)` with this digest, `None` when absent,
    /// a conflict naming both digests when different. Reads only the object's header.
    pub async fn already_stored(&self, obj: &str, digest: &Digest) -> Result<Option<Pushed>> {
        match self.stored_digest(obj).await {
            Ok(d) if &d == digest => Ok(Some(Pushed::AlreadyPresent)),
            Ok(d) => Err(conflict(obj, &d, digest, "already exists with different content")),
            Err(f) if f.code == Code::NotFound => Ok(None),
            Err(f) => Err(f),
        }
    }

    /// The plaintext digest of a stored object, from its authenticated header when it has one,
    /// otherwise from its authenticated last frame (streamed objects learn their digest only
    /// at the end). Reads at most the header and one frame.
    pub async fn stored_digest(&self, obj: &str) -> Result<Digest> {
        let size = self.store.size(obj).await?;
        let head = self.store.get_range(obj, 0..size.min(HEADER_LEN as u64)).await?;
        if let Some(d) = self.header_digest(obj, &head)? {
            return Ok(d);
        }
        let tail = match last_frame_offset(size) {
            Some(start) => Some(self.store.get_range(obj, start..size).await?),
            None => None,
        };
        self.trailer_digest(obj, &head, tail, size)
    }

    /// [`Repo::stored_digest`] of an object whose stored size is recorded: its size, its
    /// header and its last frame are asked for at once (one round trip on a remote store
    /// instead of four, one after the other). `Ok(Err(size))`: it has another size.
    pub async fn recorded_digest(&self, obj: &str, recorded: u64) -> Result<std::result::Result<Digest, u64>> {
        let tail_at = last_frame_offset(recorded);
        let tail = async {
            match tail_at {
                Some(start) => self.store.get_range(obj, start..recorded).await.map(Some),
                None => Ok(None),
            }
        };
        let (size, head, tail) =
            tokio::join!(self.store.size(obj), self.store.get_range(obj, 0..recorded.min(HEADER_LEN as u64)), tail);
        let size = size?;
        if size != recorded {
            return Ok(Err(size));
        }
        let head = head?;
        if let Some(d) = self.header_digest(obj, &head)? {
            return Ok(Ok(d));
        }
        self.trailer_digest(obj, &head, tail?, size).map(Ok)
    }

    /// The digest an object's last frame carries; `tail` is `None` when the object is too
    /// short to have one.
    fn trailer_digest(&self, obj: &str, head: &[u8], tail: Option<Bytes>, size: u64) -> Result<Digest> {
        let tail = tail.ok_or_else(|| integrity(obj, CodecError::Truncated { chunk: 0 }))?;
        trailer_digest(head, &tail, size, &self.keys, obj).map_err(|e| integrity(obj, e))
    }

    /// The digest an object's authenticated header carries, if it carries one.
    fn header_digest(&self, obj: &str, head: &[u8]) -> Result<Option<Digest>> {
        let header = Header::parse(head).map_err(|e| integrity(obj, e))?;
        header.verify(&self.keys, obj).map_err(|e| integrity(obj, e))?;
        Ok(header.digest)
    }

    /// A blocking reader over an object's stored bytes, for use inside `spawn_blocking`.
    /// Local files are read directly; remote objects are streamed through a bridge.
    /// A large remote object is read as several ranges at once, all from the start when its
    /// stored `size` is known (see `Store::get_stream`).
    pub async fn reader(&self, obj: &str, size: Option<u64>) -> Result<Box<dyn Read + Send + 'static>> {
        if !self.store.is_local() {
            return Ok(Box::new(SyncIoBridge::new(StreamReader::new(self.store.get_stream(obj, size).await?))));
        }
        let get = self.store.get(obj).await?;
        Ok(match get.payload {
            object_store::GetResultPayload::File(file, _) => Box::new(std::io::BufReader::with_capacity(1 << 20, file)),
            object_store::GetResultPayload::Stream(s) => {
                Box::new(SyncIoBridge::new(StreamReader::new(s.map_err(std::io::Error::other))))
            }
        })
    }

    /// Fetch and open a small object (a record, a manifest) into memory.
    pub async fn open_bytes(&self, obj: &str) -> Result<Vec<u8>> {
        let raw = self.store.get_bytes(obj).await?;
        let keys = self.keys.clone();
        let name = obj.to_string();
        tokio::task::spawn_blocking(move || open_to_vec(&raw, &keys, &name).map_err(|e| integrity(&name, e)))
            .await
            .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
    }

    /// Fetch and open an object into `dest` atomically: a temporary file next to it is
    /// written, fsynced and renamed, so `dest` never holds a partial or unverified file.
    pub async fn fetch_to_path(&self, obj: &str, dest: &Path) -> Result<u64> {
        let reader = self.reader(obj, None).await?;
        let keys = self.keys.clone();
        let name = obj.to_string();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || open_into_file(reader, &keys, &name, &dest))
            .await
            .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
    }
}

/// A sealed upload under way: sealing on a blocking thread, a multipart upload on a task.
/// Dropped before its end (its caller was cancelled), the upload is aborted: it must not
/// land later, over what a newer writer stored.
struct SealedUpload {
    sealer: tokio::task::JoinHandle<std::io::Result<(Digest, u64, u64)>>,
    upload: AbortOnDrop<std::result::Result<(), StoreError>>,
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl SealedUpload {
    /// Wait for both halves. When the producer failed, the upload was aborted because of it,
    /// so the producer's error explains; otherwise the store's own error does.
    async fn wait(mut self, obj: &str) -> Result<(Digest, u64, u64)> {
        let sealed = self.sealer.await.map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        let uploaded = (&mut self.upload.0).await.map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        match (sealed, uploaded) {
            (Ok(done), Ok(())) => Ok(done),
            (Err(e), Ok(()) | Err(StoreError::Incomplete(_))) => Err(match CodecError::from_io(e) {
                CodecError::SourceChanged => Fail::new(
                    Code::BadInput,
                    format!("{obj}: the file changed while it was being archived; nothing was stored"),
                ),
                e => Fail::new(Code::Storage, format!("object {obj}: {e}")),
            }),
            (_, Err(e)) => Err(e.into()),
        }
    }
}

/// A sealed object written piece by piece from async code, for streams of unknown length
/// such as a base backup's tar archives. Dropped without [`ObjectWriter::finish`], the
/// upload is aborted and nothing is stored.
pub struct ObjectWriter {
    obj: String,
    tx: tokio::sync::mpsc::Sender<Option<Vec<u8>>>,
    pending: Option<SealedUpload>,
    gathered: Vec<u8>,
    /// Buffers coming back from the sealer.
    reuse: std::sync::mpsc::Receiver<Vec<u8>>,
}

/// What was stored by an [`ObjectWriter`].
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredObject {
    pub name: String,
    pub digest: String,
    pub bytes: u64,
    pub stored_bytes: u64,
}

impl Repo {
    /// Seal whatever `fill` writes into a streamed multipart upload of `obj`, with bounded
    /// channels between the two. The object appears only if `fill` and the seal succeed.
    fn sealed_upload<F>(&self, obj: &str, opts: SealOptions, fill: F) -> SealedUpload
    where
        F: FnOnce(&mut SealWriter<ChannelWriter>) -> std::io::Result<()> + Send + 'static,
    {
        let (piece_tx, piece_rx) = tokio::sync::mpsc::channel(4);
        let key = self.keys.write_key().cloned();
        let name = obj.to_string();
        let sealer = tokio::task::spawn_blocking(move || {
            let mut w = SealWriter::new(ChannelWriter::new(piece_tx), key.as_ref(), &name, opts)?;
            fill(&mut w)?;
            let s = w.finish()?;
            let lens = (s.digest, s.plain_len, s.sealed_len);
            s.out.finish()?;
            Ok(lens)
        });
        let store = self.store.clone();
        let path = obj.to_string();
        let upload = AbortOnDrop(tokio::spawn(async move { store.put_stream(&path, piece_rx).await }));
        SealedUpload { sealer, upload }
    }

    /// Start a streamed object. Callers pick names that cannot exist yet (multipart uploads
    /// cannot be create-only).
    pub fn create_stream(&self, obj: &str) -> ObjectWriter {
        self.create_stream_filtered(obj, None)
    }

    /// [`Repo::create_stream`] with the bytes rewritten by `filter` on the sealer's thread
    /// before they are sealed (a client-side incremental backup's archives).
    pub fn create_stream_filtered(&self, obj: &str, mut filter: Option<StreamFilter>) -> ObjectWriter {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Option<Vec<u8>>>(WRITER_QUEUE);
        let (recycle, reuse) = std::sync::mpsc::channel::<Vec<u8>>();
        // Archives, manifests and dumps: every chunk is authenticated and (for a backup)
        // every file checked against the manifest, so their digest comes from the chunks'
        // tags rather than from hashing all the plaintext again.
        let opts = SealOptions { chain: true, ..self.seal_options(None) };
        let pending = self.sealed_upload(obj, opts, move |w| {
            let mut rewritten = Vec::new();
            while let Some(item) = rx.blocking_recv() {
                match item {
                    Some(group) => {
                        let group = match filter.as_mut() {
                            Some(f) => {
                                f(&group, &mut rewritten)?;
                                let mut group = group;
                                group.clear();
                                let _ = recycle.send(group);
                                std::mem::take(&mut rewritten)
                            }
                            None => group,
                        };
                        let mut spare = w.write_owned(group)?;
                        spare.clear();
                        match filter {
                            Some(_) => rewritten = spare,
                            None => {
                                let _ = recycle.send(spare);
                            }
                        }
                    }
                    None => return Ok(()),
                }
            }
            Err(std::io::Error::other("the object was abandoned before its end"))
        });
        ObjectWriter {
            obj: obj.to_string(),
            tx,
            pending: Some(pending),
            gathered: Vec::with_capacity(WRITER_GROUP),
            reuse,
        }
    }
}

/// Rewrites a stream's bytes into the buffer given (appending).
pub type StreamFilter = Box<dyn FnMut(&[u8], &mut Vec<u8>) -> std::io::Result<()> + Send>;

/// Small writes (a BASE_BACKUP message is 32 KiB) are copied into groups of one seal batch,
/// which the sealer hands to the compressors as they are. The sealer thread is woken once
/// per group, the network receive buffer is free for reuse at once (holding on to its
/// pieces made every read allocate fresh pages), and buffers circulate instead of being
/// allocated.
const WRITER_GROUP: usize = crate::codec::SEAL_BATCH;
/// Groups queued for the sealer: enough to keep reading the network while a batch compresses.
const WRITER_QUEUE: usize = 3;

impl ObjectWriter {
    pub async fn write(&mut self, data: &[u8]) -> Result<()> {
        self.gathered.extend_from_slice(data);
        if self.gathered.len() >= WRITER_GROUP {
            self.send_gathered().await?;
        }
        Ok(())
    }

    async fn send_gathered(&mut self) -> Result<()> {
        let next = self.reuse.try_recv().unwrap_or_else(|_| Vec::with_capacity(WRITER_GROUP));
        let group = std::mem::replace(&mut self.gathered, next);
        if self.tx.send(Some(group)).await.is_err() {
            // The sealer stopped: report why.
            let stopped = Fail::new(Code::Storage, format!("object {}: the upload stopped", self.obj));
            return Err(match self.pending.take() {
                Some(p) => p.wait(&self.obj).await.err().unwrap_or(stopped),
                None => stopped,
            });
        }
        Ok(())
    }

    pub async fn finish(mut self) -> Result<StoredObject> {
        if !self.gathered.is_empty() {
            self.send_gathered().await?;
        }
        let _ = self.tx.send(None).await;
        drop(self.tx);
        let pending =
            self.pending.ok_or_else(|| Fail::new(Code::Internal, format!("object {}: finished twice", self.obj)))?;
        let (digest, bytes, stored_bytes) = pending.wait(&self.obj).await?;
        Ok(StoredObject { name: self.obj, digest: digest_hex(&digest), bytes, stored_bytes })
    }
}

fn conflict(obj: &str, existing: &Digest, new: &Digest, what: &str) -> Fail {
    Fail::new(
        Code::Conflict,
        format!(
            "object {obj} {what} (stored BLAKE3 {}, this file {}); nothing was overwritten. Compare the two copies before removing either",
            digest_hex(existing),
            digest_hex(new)
        ),
    )
}

/// The refusal of a store that ignores conditional writes, and the way out.
pub fn lax_store(url: &str) -> Fail {
    Fail::new(
        Code::Usage,
        format!(
            "the store {url} ignores conditional writes (a second create-only write replaced the first): two writers \
             could both store different content under one name and one copy would be lost. Use a store that honours \
             If-None-Match, or set repository.require_conditional_writes = false if only one writer ever writes here"
        ),
    )
}

/// The sealed `tidewal.json` as stored.
async fn identity_bytes(store: &Store) -> Result<Bytes> {
    match store.get_bytes(layout::IDENTITY).await {
        Ok(b) => Ok(b),
        Err(StoreError::NotFound(_)) => Err(Fail::new(
            Code::Conflict,
            format!("the repository {} is not initialised: run `tidewal init` first", store.url()),
        )),
        Err(e) => Err(e.into()),
    }
}

fn decode_identity(raw: &[u8], keys: &Keyring) -> Result<Identity> {
    let plain = open_to_vec(raw, keys, layout::IDENTITY).map_err(|e| match e {
        CodecError::UnexpectedPlaintext => Fail::new(
            Code::Usage,
            "this repository is not encrypted, but a key is configured: remove key_file/TIDEWAL_KEY for this repository",
        ),
        e => integrity(layout::IDENTITY, e),
    })?;
    let identity: Identity = serde_json::from_slice(&plain)
        .map_err(|e| Fail::new(Code::Integrity, format!("object {}: not valid JSON: {e}", layout::IDENTITY)))?;
    identity.check().map_err(|e| Fail::new(Code::Integrity, format!("object {}: {e}", layout::IDENTITY)))?;
    Ok(identity)
}

fn open_into_file(src: impl Read, keys: &Keyring, obj: &str, dest: &Path) -> Result<u64> {
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let local = |e: std::io::Error| Fail::new(Code::Storage, format!("cannot write {}: {e}", dest.display()));
    let mut tmp = tempfile::Builder::new().prefix(".tidewal-").tempfile_in(&dir).map_err(local)?;
    let mut r = OpenReader::new(src, keys, obj).map_err(|e| integrity(obj, e))?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).map_err(|e| integrity(obj, CodecError::from_io(e)))?;
        if n == 0 {
            break;
        }
        tmp.write_all(&buf[..n]).map_err(local)?;
        total += n as u64;
    }
    tmp.as_file().sync_all().map_err(local)?;
    tmp.persist(dest).map_err(|e| local(e.error))?;
    std::fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(local)?;
    Ok(total)
}

#[cfg(test)]
#[path = "records_fuzz_tests.rs"]
mod records_fuzz_tests;

#[cfg(test)]
mod tests;
