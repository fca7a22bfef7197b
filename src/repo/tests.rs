//! The repository's unit tests: the no-overwrite rule on an honest in-memory store and on
//! one that ignores conditional writes, streamed objects and their digests.

use super::*;
use crate::codec::Key;
use futures::stream::BoxStream;
use object_store::memory::InMemory;
use object_store::path::Path as P;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore, PutMode,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use std::sync::Arc;

/// An in-memory store with a server's quirk.
#[derive(Debug)]
struct Quirky(InMemory, Quirk);

#[derive(Debug, PartialEq)]
enum Quirk {
    /// Silently ignores create-only writes, as some S3-compatible servers do.
    IgnoresConditions,
    /// Refuses a create-only write over an existing object by dropping the connection
    /// before reading the body: the client sees a failed request, not the refusal.
    DropsRefusals,
}

fn ignores_conditions() -> Quirky {
    Quirky(InMemory::new(), Quirk::IgnoresConditions)
}

impl std::fmt::Display for Quirky {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.1)
    }
}

#[async_trait::async_trait]
impl ObjectStore for Quirky {
    async fn put_opts(&self, l: &P, p: PutPayload, mut o: PutOptions) -> object_store::Result<PutResult> {
        match self.1 {
            Quirk::IgnoresConditions => o.mode = PutMode::Overwrite,
            Quirk::DropsRefusals
                if o.mode == PutMode::Create && object_store::ObjectStoreExt::head(&self.0, l).await.is_ok() =>
            {
                return Err(object_store::Error::Generic { store: "quirky", source: "connection closed".into() });
            }
            Quirk::DropsRefusals => {}
        }
        self.0.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &P,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.0.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &P, o: GetOptions) -> object_store::Result<GetResult> {
        self.0.get_opts(l, o).await
    }
    fn delete_stream(
        &self,
        l: BoxStream<'static, object_store::Result<P>>,
    ) -> BoxStream<'static, object_store::Result<P>> {
        self.0.delete_stream(l)
    }
    fn list(&self, p: Option<&P>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.0.list(p)
    }
    async fn list_with_delimiter(&self, p: Option<&P>) -> object_store::Result<ListResult> {
        self.0.list_with_delimiter(p).await
    }
    async fn copy_opts(&self, f: &P, t: &P, o: CopyOptions) -> object_store::Result<()> {
        self.0.copy_opts(f, t, o).await
    }
}

struct FailingReader;
impl std::io::Read for FailingReader {
    fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
        Err(std::io::Error::other("disk read error"))
    }
}

fn identity(conditional: bool) -> Identity {
    Identity {
        format: FORMAT,
        system_identifier: "7300000000000000001".into(),
        pg_version_num: 150010,
        wal_segment_size: 16 << 20,
        encrypted: true,
        key_id: None,
        conditional_writes: conditional,
        cipher: Default::default(),
        created_at: "2026-11-24T00:00:00Z".into(),
        created_by: "test".into(),
    }
}

async fn push(repo: &Repo, obj: &str, data: &[u8]) -> Result<Pushed> {
    let key = repo.keys.write_key().cloned();
    let s = seal_to_vec(data, key.as_ref(), obj, repo.seal_options(Some(*blake3::hash(data).as_bytes()))).unwrap();
    repo.push_sealed(obj, s.out, s.digest).await
}

#[tokio::test]
async fn streamed_objects_tell_their_digest_without_a_download() {
    let keys = Keyring::new(Key::from_text(&"44".repeat(32), "t").unwrap(), vec![]);
    let store = Store::from_object_store(Arc::new(InMemory::new()), "memory://");
    let (repo, _) = Repo::init(store, keys, true, identity(true)).await.unwrap();
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8 ^ (i >> 12) as u8).collect();
    let mut w = repo.create_stream("backups/x/base.tar");
    w.write(&data).await.unwrap();
    let stored = w.finish().await.unwrap();
    // What backup.json records is the digest the object itself carries: for an archive the
    // digest of its chunks' tags (version 3), which opening it in full confirms.
    let raw = repo.store.get_bytes(&stored.name).await.unwrap();
    let mut r = OpenReader::new(&raw[..], &repo.keys, &stored.name).unwrap();
    assert!(r.header().chain);
    let mut plain = Vec::new();
    std::io::Read::read_to_end(&mut r, &mut plain).unwrap();
    assert_eq!(plain, data);
    assert_eq!(digest_hex(&r.digest().unwrap()), stored.digest);
    assert_eq!(repo.store.size(&stored.name).await.unwrap(), stored.stored_bytes);
    assert_eq!(digest_hex(&repo.stored_digest(&stored.name).await.unwrap()), stored.digest);
}

#[tokio::test]
async fn no_overwrite_rule_on_both_kinds_of_store() {
    let keys = Keyring::new(Key::from_text(&"33".repeat(32), "t").unwrap(), vec![]);
    let honest: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let lax: Arc<dyn ObjectStore> = Arc::new(ignores_conditions());
    for (inner, conditional) in [(honest, true), (lax, false)] {
        let store = Store::from_object_store(inner, "memory://");
        assert_eq!(store.probe_conditional_writes("tmp/probe").await.unwrap(), conditional);
        if !conditional {
            // Refused unless the configuration accepts such a store (one writer only).
            let e = Repo::init(store.clone(), keys.clone(), true, identity(false)).await.err().unwrap();
            assert!(e.code == Code::Usage && e.message.contains("ignores conditional writes"), "{e}");
            assert!(!store.exists(layout::IDENTITY).await.unwrap());
            let refused = Repo { store: store.clone(), keys: keys.clone(), lz4: true, identity: identity(false) };
            assert_eq!(push(&refused, "wal/a", b"first").await.unwrap_err().code, Code::Usage);
            assert!(!store.exists("wal/a").await.unwrap());
        }
        let store = store.with_conditional_writes_required(conditional);
        let (repo, created) = Repo::init(store, keys.clone(), true, identity(conditional)).await.unwrap();
        assert!(created);
        assert_eq!(push(&repo, "wal/a", b"first").await.unwrap(), Pushed::Stored);
        assert_eq!(push(&repo, "wal/a", b"first").await.unwrap(), Pushed::AlreadyPresent);
        let e = push(&repo, "wal/a", b"second").await.unwrap_err();
        assert_eq!(e.code, Code::Conflict, "{e}");
        assert_eq!(repo.stored_digest("wal/a").await.unwrap(), *blake3::hash(b"first").as_bytes());
        // Re-initialising for the same cluster is a no-op; another cluster is refused.
        let (_, again) = Repo::init(repo.store.clone(), keys.clone(), true, identity(conditional)).await.unwrap();
        assert!(!again);
        // Streaming (multipart) pushes follow the same rule.
        let big: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
        let d = *blake3::hash(&big).as_bytes();
        assert_eq!(repo.push_stream("wal/big", std::io::Cursor::new(big.clone()), d).await.unwrap(), Pushed::Stored);
        assert_eq!(
            repo.push_stream("wal/big", std::io::Cursor::new(big.clone()), d).await.unwrap(),
            Pushed::AlreadyPresent
        );
        let mut other_big = big.clone();
        other_big[7] ^= 1;
        let od = *blake3::hash(&other_big).as_bytes();
        let e = repo.push_stream("wal/big", std::io::Cursor::new(other_big), od).await.unwrap_err();
        assert_eq!(e.code, Code::Conflict, "{e}");
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("big");
        assert_eq!(repo.fetch_to_path("wal/big", &dest).await.unwrap(), big.len() as u64);
        assert!(std::fs::read(&dest).unwrap() == big);
        // A source that changes under us, or fails, stores nothing.
        let e = repo.push_stream("wal/changed", std::io::Cursor::new(big.clone()), od).await.unwrap_err();
        assert_eq!(e.code, Code::BadInput, "{e}");
        assert!(!repo.store.exists("wal/changed").await.unwrap());
        let failing = std::io::Read::chain(std::io::Cursor::new(big.clone()), FailingReader);
        assert!(repo.push_stream("wal/failed", failing, d).await.is_err());
        assert!(!repo.store.exists("wal/failed").await.unwrap());

        let mut other = identity(conditional);
        other.system_identifier = "42".into();
        let e = Repo::init(repo.store.clone(), keys.clone(), true, other).await.err().unwrap();
        assert!(e.message.contains("7300000000000000001") && e.message.contains("42"), "{e}");
    }
}

/// A refusal the client saw as a failed request is still told apart: the same content is
/// there (success), other content is a conflict.
#[tokio::test]
async fn a_refusal_seen_as_a_dropped_connection_is_still_a_refusal() {
    let keys = Keyring::new(Key::from_text(&"55".repeat(32), "t").unwrap(), vec![]);
    let store = Store::from_object_store(Arc::new(Quirky(InMemory::new(), Quirk::DropsRefusals)), "memory://");
    let (repo, _) = Repo::init(store, keys, true, identity(true)).await.unwrap();
    assert_eq!(push(&repo, "wal/a", b"first").await.unwrap(), Pushed::Stored);
    assert_eq!(push(&repo, "wal/a", b"first").await.unwrap(), Pushed::AlreadyPresent);
    assert_eq!(push(&repo, "wal/a", b"second").await.unwrap_err().code, Code::Conflict);
}
