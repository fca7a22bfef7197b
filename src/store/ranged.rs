//! Reading a large object from a remote store as several ranged requests at once. One
//! connection carries at most its window per round trip, so far from the store a single
//! GET runs at a fraction of the link; pieces fetched side by side, handed on in order,
//! fill it. Memory stays bounded: at most `IN_FLIGHT` pieces are held.

use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};

use object_store::path::Path as ObjPath;
use object_store::{GetOptions, GetRange, GetResult};

use super::{Store, StoreError};

/// Bytes per ranged request.
pub const PIECE: u64 = 4 << 20;
/// Ranged requests under way at once (each holds at most one piece).
pub const IN_FLIGHT: usize = 8;

/// The ranges of an object of `size` bytes from `start` on, `piece` bytes each (pure).
pub fn pieces(start: u64, size: u64, piece: u64) -> Vec<std::ops::Range<u64>> {
    (start..size).step_by(piece as usize).map(|at| at..(at + piece).min(size)).collect()
}

impl Store {
    /// An object's bytes in order. On a remote store, an object larger than one piece is
    /// read as ranged requests, `IN_FLIGHT` at once. With `size` (the recorded stored size)
    /// they all start at once; the caller checks the size separately, and a piece of another
    /// object of that name fails authentication when it is opened. Without it, a plain GET
    /// tells the size (a small object costs one request) and gives the first piece; the
    /// other pieces are bound to its ETag, so an object replaced meanwhile is an error.
    pub async fn get_stream(
        &self,
        path: &str,
        size: Option<u64>,
    ) -> Result<BoxStream<'static, std::io::Result<Bytes>>, StoreError> {
        if self.is_local() || size.is_some_and(|s| s <= PIECE) {
            return Ok(body(self, path, self.get(path).await?));
        }
        let (head, size, etag, from) = match size {
            Some(size) => (None, size, None, 0),
            None => {
                let first = self.get(path).await?;
                let size = first.meta.size;
                if size <= PIECE {
                    return Ok(body(self, path, first));
                }
                let etag = first.meta.e_tag.clone();
                (Some(first_piece(body(self, path, first))), size, etag, PIECE)
            }
        };
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let (store, name) = (self.clone(), path.to_string());
        tokio::spawn(async move {
            let mut ranges = pieces(from, size, PIECE).into_iter();
            let mut ahead = std::collections::VecDeque::with_capacity(IN_FLIGHT);
            loop {
                while ahead.len() < IN_FLIGHT {
                    let Some(range) = ranges.next() else { break };
                    ahead.push_back(fetch_piece(&store, &name, range, etag.clone()));
                }
                let Some(mut piece) = ahead.pop_front() else { return };
                while let Some(bytes) = piece.recv().await {
                    let failed = bytes.is_err();
                    if tx.send(bytes).await.is_err() || failed {
                        return;
                    }
                }
            }
        });
        let rest = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|p| (p, rx)) });
        Ok(match head {
            Some(head) => head.chain(rest).boxed(),
            None => rest.boxed(),
        })
    }
}

/// One ranged request, under way at once: its bytes arrive on their own channel as the
/// store sends them, so the piece being handed on streams while those behind it fill (at
/// most one piece each: bounded). A piece that ends short is an error here, not a puzzle
/// when the object is opened.
fn fetch_piece(
    store: &Store,
    name: &str,
    range: std::ops::Range<u64>,
    etag: Option<String>,
) -> tokio::sync::mpsc::UnboundedReceiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (store, name) = (store.clone(), name.to_string());
    tokio::spawn(async move {
        let want = range.end - range.start;
        let opts = GetOptions { range: Some(GetRange::Bounded(range)), if_match: etag, ..Default::default() };
        let mut body = match store.inner.get_opts(&ObjPath::from(name.as_str()), opts).await {
            Ok(r) => body(&store, &name, r),
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(store.unavailable("read", &name, e))));
                return;
            }
        };
        let mut got = 0u64;
        while let Some(bytes) = body.next().await {
            let failed = bytes.is_err();
            got += bytes.as_ref().map_or(0, |b| b.len() as u64);
            if tx.send(bytes).is_err() || failed {
                return;
            }
        }
        if got != want {
            let short = format!("{name}: a ranged read gave {got} of {want} bytes; the store cut it short, try again");
            let _ = tx.send(Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, short)));
        }
    });
    rx
}

/// The first `PIECE` bytes of a plain GET's body; the rest of it is dropped unread.
fn first_piece(
    body: BoxStream<'static, std::io::Result<Bytes>>,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    body.scan(0u64, |taken, item| {
        std::future::ready(match item {
            _ if *taken >= PIECE => None,
            Ok(mut b) => {
                let keep = (PIECE - *taken).min(b.len() as u64);
                *taken += keep;
                b.truncate(keep as usize);
                Some(Ok(b))
            }
            Err(e) => Some(Err(e)),
        })
    })
}

fn body(store: &Store, path: &str, got: GetResult) -> BoxStream<'static, std::io::Result<Bytes>> {
    let (store, name) = (store.clone(), path.to_string());
    got.into_stream().map_err(move |e| std::io::Error::other(store.unavailable("read", &name, e))).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_object_in_order() {
        assert!(pieces(0, 0, 4).is_empty());
        assert!(pieces(4, 4, 4).is_empty());
        assert_eq!(pieces(0, 4, 4), vec![0..4]);
        assert_eq!(pieces(4, 5, 4), vec![4..5]);
        assert_eq!(pieces(4, 12, 4), vec![4..8, 8..12]);
        assert_eq!(pieces(0, 13, 4), vec![0..4, 4..8, 8..12, 12..13]);
    }
}
