//! Streamed uploads: a blocking writer feeding a bounded channel, and the upload that
//! drains it (one PUT for an object that fits one part, a multipart upload otherwise).

use bytes::Bytes;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::sync::mpsc;

use super::{Store, StoreError};

/// Multipart part size (S3 needs at least 5 MiB per part but the last).
pub const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once: bounds memory to about PART_SIZE × (this + 1).
pub const PARTS_IN_FLIGHT: usize = 2;

/// Abort a multipart upload begun in case it was needed; a failure to begin or abort it
/// leaves at most an incomplete upload, which the bucket's lifecycle rule removes.
async fn abort_begun(begun: tokio::task::JoinHandle<object_store::Result<Box<dyn object_store::MultipartUpload>>>) {
    if let Ok(Ok(mut upload)) = begun.await {
        let _ = upload.abort().await;
    }
}

/// What a producer sends to [`Store::put_stream`]. Only an explicit `End` completes the
/// object: a producer that fails (or just drops the channel) leaves nothing behind.
#[derive(Debug)]
pub enum Piece {
    Data(Bytes),
    End,
}

/// A blocking `Write` that feeds [`Store::put_stream`] through a bounded channel, so a fast
/// producer waits for the upload (backpressure) instead of filling memory.
pub struct ChannelWriter {
    tx: mpsc::Sender<Piece>,
    buf: Vec<u8>,
}

const CHANNEL_PIECE: usize = 1 << 20;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Piece>) -> Self {
        ChannelWriter { tx, buf: Vec::with_capacity(CHANNEL_PIECE) }
    }

    fn send(&mut self, p: Piece) -> std::io::Result<()> {
        self.tx.blocking_send(p).map_err(|_| std::io::Error::other("the upload stopped before the data was complete"))
    }

    /// Send what is buffered and mark the object complete.
    pub fn finish(mut self) -> std::io::Result<()> {
        let rest = std::mem::take(&mut self.buf);
        if !rest.is_empty() {
            self.send(Piece::Data(Bytes::from(rest)))?;
        }
        self.send(Piece::End)
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let take = data.len().min(CHANNEL_PIECE - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHANNEL_PIECE {
            let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHANNEL_PIECE));
            self.send(Piece::Data(Bytes::from(full)))?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Store {
    /// Upload a stream as one object with a multipart upload, so memory stays bounded
    /// whatever the size. The object becomes visible only when `Piece::End` arrives and the
    /// upload completes; otherwise the upload is aborted. Multipart uploads cannot be
    /// create-only, so callers check for an existing object first and verify afterwards.
    /// An object that ends within its first part (a manifest, a small tablespace, the
    /// receiver's growing copy) is one PUT instead: a multipart upload is three requests one
    /// after the other. On a remote store the multipart upload is begun meanwhile, so a large
    /// object loses no round trip, and dropped (aborted) if it was not needed.
    pub async fn put_stream(&self, path: &str, mut rx: mpsc::Receiver<Piece>) -> Result<(), StoreError> {
        let loc = ObjPath::from(path);
        let begin = {
            let (inner, loc) = (self.inner.clone(), loc.clone());
            async move { inner.put_multipart(&loc).await }
        };
        let early = (!self.is_local()).then(|| tokio::spawn(begin));
        let mut first: Vec<Bytes> = Vec::new();
        let mut gathered = 0;
        let ended = loop {
            match rx.recv().await {
                Some(Piece::Data(b)) => {
                    gathered += b.len();
                    first.push(b);
                    if gathered > PART_SIZE {
                        break false;
                    }
                }
                Some(Piece::End) => break true,
                None => {
                    if let Some(e) = early {
                        abort_begun(e).await;
                    }
                    return Err(StoreError::Incomplete(path.to_string()));
                }
            }
        };
        if ended {
            if let Some(e) = early {
                // Not waited for: a process that exits first leaves an incomplete upload,
                // which the next backup's clean-up or the bucket's lifecycle rule removes.
                tokio::spawn(abort_begun(e));
            }
            let put = self.inner.put(&loc, PutPayload::from_iter(first)).await;
            return put.map(|_| ()).map_err(|e| self.unavailable("write", path, e));
        }
        let upload = match early {
            Some(e) => e.await.map_err(|e| StoreError::Incomplete(format!("{path}: {e}")))?,
            None => self.inner.put_multipart(&loc).await,
        }
        .map_err(|e| self.unavailable("write", path, e))?;
        let mut w = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut pending = first.into_iter();
        let complete = loop {
            let piece = match pending.next() {
                Some(b) => Some(Piece::Data(b)),
                None => rx.recv().await,
            };
            match piece {
                Some(Piece::Data(b)) => {
                    if let Err(e) = w.wait_for_capacity(PARTS_IN_FLIGHT).await {
                        drop(rx);
                        let _ = w.abort().await;
                        return Err(self.unavailable("write", path, e));
                    }
                    w.put(b);
                }
                Some(Piece::End) => break true,
                None => break false,
            }
        };
        if !complete {
            let _ = w.abort().await;
            return Err(StoreError::Incomplete(path.to_string()));
        }
        w.finish().await.map(|_| ()).map_err(|e| self.unavailable("write", path, e))
    }
}
