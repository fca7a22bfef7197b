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

#[derive(Debug, Default)]
struct Counted {
    inner: InMemory,
    puts: AtomicUsize,
    multiparts: AtomicUsize,
    plain_gets: AtomicUsize,
    ranged_gets: AtomicUsize,
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
        self.inner.get_opts(l, o).await
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
