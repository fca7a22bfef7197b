//! Streamed uploads and ranged reads against an in-memory store that counts the requests
//! it is sent, standing in for a remote one (where each request is a round trip).

use super::*;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::memory::InMemory;
use object_store::path::Path as P;
use object_store::{
    CopyOptions, GetOptions, ListResult, MultipartUpload, ObjectMeta, PutMultipartOptions, PutOptions, PutResult,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;

#[derive(Debug)]
struct Counted {
    inner: InMemory,
    puts: AtomicUsize,
    multiparts: AtomicUsize,
    plain_gets: AtomicUsize,
    ranged_gets: AtomicUsize,
    /// Ranged reads send their first 64 KiB, then the rest only once `release` has permits
    /// (or, with `cut`, end there): a link slower than the reader.
    gated: std::sync::atomic::AtomicBool,
    cut: std::sync::atomic::AtomicBool,
    release: Arc<tokio::sync::Semaphore>,
}

impl Default for Counted {
    fn default() -> Self {
        Counted {
            inner: InMemory::new(),
            puts: AtomicUsize::new(0),
            multiparts: AtomicUsize::new(0),
            plain_gets: AtomicUsize::new(0),
            ranged_gets: AtomicUsize::new(0),
            gated: Default::default(),
            cut: Default::default(),
            release: Arc::new(tokio::sync::Semaphore::new(0)),
        }
    }
}

/// A ranged read's body as `Counted` sends it when gated.
fn gated_body(c: &Counted, all: Bytes) -> BoxStream<'static, object_store::Result<Bytes>> {
    let split = all.len().min(64 << 10);
    let (head, rest) = (all.slice(..split), all.slice(split..));
    let (release, cut) = (c.release.clone(), c.cut.load(Ordering::SeqCst));
    let rest = async move {
        if cut {
            return None;
        }
        let _permit = release.acquire().await.ok()?;
        Some(Ok(rest))
    };
    futures::stream::iter([Ok(head)]).chain(futures::stream::once(rest).filter_map(std::future::ready)).boxed()
}

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counted")
    }
}

#[async_trait::async_trait]
impl ObjectStore for Counted {
    async fn put_opts(&self, l: &P, p: PutPayload, o: PutOptions) -> object_store::Result<PutResult> {
        self.puts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &P,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.multiparts.fetch_add(1, Ordering::SeqCst);
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &P, o: GetOptions) -> object_store::Result<GetResult> {
        let n = if o.range.is_some() { &self.ranged_gets } else { &self.plain_gets };
        n.fetch_add(1, Ordering::SeqCst);
        let gated = o.range.is_some() && self.gated.load(Ordering::SeqCst);
        let got = self.inner.get_opts(l, o).await?;
        if !gated {
            return Ok(got);
        }
        let (meta, range, attributes, extensions) =
            (got.meta.clone(), got.range.clone(), got.attributes.clone(), got.extensions.clone());
        let payload = object_store::GetResultPayload::Stream(gated_body(self, got.bytes().await?));
        Ok(GetResult { payload, meta, range, attributes, extensions })
    }
    fn delete_stream(
        &self,
        l: BoxStream<'static, object_store::Result<P>>,
    ) -> BoxStream<'static, object_store::Result<P>> {
        self.inner.delete_stream(l)
    }
    fn list(&self, p: Option<&P>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(p)
    }
    async fn list_with_delimiter(&self, p: Option<&P>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(p).await
    }
    async fn copy_opts(&self, f: &P, t: &P, o: CopyOptions) -> object_store::Result<()> {
        self.inner.copy_opts(f, t, o).await
    }
}

fn counted() -> (Arc<Counted>, Store) {
    let c = Arc::new(Counted::default());
    let store = Store::from_object_store(c.clone(), "s3://test/repo");
    (c, store)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 4093) as u8).collect()
}

async fn upload(store: &Store, name: &str, pieces: &[&[u8]], end: bool) -> Result<(), StoreError> {
    let (tx, rx) = mpsc::channel(2);
    let sender = async {
        for p in pieces {
            tx.send(Piece::Data(Bytes::copy_from_slice(p))).await.unwrap();
        }
        if end {
            tx.send(Piece::End).await.unwrap();
        }
        drop(tx);
    };
    let (r, ()) = tokio::join!(store.put_stream(name, rx), sender);
    r
}

#[tokio::test]
async fn an_object_within_one_part_is_one_put() {
    let (c, store) = counted();
    let body = data(3 << 20);
    upload(&store, "backups/x/backup_manifest", &[&body[..1 << 20], &body[1 << 20..]], true).await.unwrap();
    assert_eq!(c.puts.load(Ordering::SeqCst), 1, "one PUT, not a multipart upload");
    assert_eq!(store.get_bytes("backups/x/backup_manifest").await.unwrap(), body);
}

#[tokio::test]
async fn a_larger_object_is_a_multipart_upload_with_its_bytes_in_order() {
    let (c, store) = counted();
    let body = data(PART_SIZE * 2 + 12345);
    let pieces: Vec<&[u8]> = body.chunks(1 << 20).collect();
    upload(&store, "backups/x/base.tar", &pieces, true).await.unwrap();
    assert_eq!(c.puts.load(Ordering::SeqCst), 0);
    assert_eq!(c.multiparts.load(Ordering::SeqCst), 1, "the upload begun early is the one used");
    assert_eq!(store.get_bytes("backups/x/base.tar").await.unwrap(), body);
}

#[tokio::test]
async fn a_stream_that_stops_before_its_end_stores_nothing() {
    for len in [1000, PART_SIZE + 1000] {
        let (_, store) = counted();
        let body = data(len);
        let pieces: Vec<&[u8]> = body.chunks(1 << 20).collect();
        let e = upload(&store, "backups/x/base.tar", &pieces, false).await.unwrap_err();
        assert!(matches!(e, StoreError::Incomplete(_)), "{e}");
        assert!(!store.exists("backups/x/base.tar").await.unwrap(), "{len} bytes");
    }
}

async fn read_all(store: &Store, name: &str, size: Option<u64>) -> std::io::Result<Vec<u8>> {
    let mut s = store.get_stream(name, size).await.map_err(std::io::Error::other)?;
    let mut out = Vec::new();
    while let Some(b) = s.next().await {
        out.extend_from_slice(&b?);
    }
    Ok(out)
}

#[tokio::test]
async fn a_large_object_is_read_as_ranges_in_order() {
    let piece = ranged::PIECE as usize;
    for len in [10, piece, piece + 1, 3 * piece + 4321] {
        let (c, store) = counted();
        let body = data(len);
        store.put("wal/x", Bytes::from(body.clone())).await.unwrap();
        let pieces = len.div_ceil(piece);
        assert_eq!(read_all(&store, "wal/x", None).await.unwrap(), body, "{len} bytes, size unknown");
        assert_eq!(c.plain_gets.load(Ordering::SeqCst), 1);
        assert_eq!(c.ranged_gets.load(Ordering::SeqCst), pieces - 1, "{len} bytes: the first piece comes with the GET");
        c.plain_gets.store(0, Ordering::SeqCst);
        c.ranged_gets.store(0, Ordering::SeqCst);
        assert_eq!(read_all(&store, "wal/x", Some(len as u64)).await.unwrap(), body, "{len} bytes, size known");
        let ranged = if pieces > 1 { pieces } else { 0 };
        assert_eq!(c.ranged_gets.load(Ordering::SeqCst), ranged, "{len} bytes: every piece by range");
    }
}

#[tokio::test]
async fn a_missing_object_is_not_found_before_any_byte() {
    let (_, store) = counted();
    assert!(matches!(store.get_stream("wal/none", None).await.err(), Some(StoreError::NotFound(_))));
}

#[tokio::test]
async fn the_piece_being_read_streams_while_the_others_fill() {
    let (c, store) = counted();
    let body = data(3 * ranged::PIECE as usize + 4321);
    store.put("backups/x/base.tar", Bytes::from(body.clone())).await.unwrap();
    c.gated.store(true, Ordering::SeqCst);
    let mut s = store.get_stream("backups/x/base.tar", Some(body.len() as u64)).await.unwrap();
    // Before, a piece was handed on only once all of it had arrived: this waited forever.
    let first = tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("the first bytes are handed on before the rest of their piece arrives")
        .unwrap()
        .unwrap();
    assert_eq!(first[..], body[..first.len()]);
    c.release.add_permits(1 << 20);
    let mut got = first.to_vec();
    while let Some(b) = s.next().await {
        got.extend_from_slice(&b.unwrap());
    }
    assert_eq!(got, body);
}

#[tokio::test]
async fn a_piece_cut_short_is_an_error_that_names_the_object() {
    let (c, store) = counted();
    let body = data(2 * ranged::PIECE as usize + 10);
    store.put("backups/x/base.tar", Bytes::from(body.clone())).await.unwrap();
    c.gated.store(true, Ordering::SeqCst);
    c.cut.store(true, Ordering::SeqCst);
    let e = read_all(&store, "backups/x/base.tar", Some(body.len() as u64)).await.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof, "{e}");
    assert!(e.to_string().contains("backups/x/base.tar"), "{e}");
}
