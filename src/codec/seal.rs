//! Sealing: plaintext → (lz4 frame) → 64 KiB chunks → framed, protected output.

use std::io::{self, Write};

use super::envelope::{
    frame_prefix, CodecError, Header, Protector, SliceBuf, TagChain, CHUNK, DIGEST_LEN, FRAME_PREFIX, HEADER_LEN, TAG,
};
use super::keys::Key;
use super::lz4;
use super::Digest;
use aead_stream::aead::Buffer;
use rayon::prelude::*;

#[derive(Clone, Copy, Debug, Default)]
pub struct SealOptions {
    pub lz4: bool,
    /// The plaintext digest, when known up front: it goes into the header so a duplicate can
    /// be recognised from the first bytes of an object, and sealing fails if the data differs.
    pub digest: Option<Digest>,
    /// A version-3 object: the final chunk carries a digest of the chunks' tags, and the
    /// plaintext is not hashed (backup archives; see `envelope::VERSION_CHAIN`).
    pub chain: bool,
}

/// Cuts the (compressed) byte stream into chunks and writes sealed frames.
struct ChunkWriter<W: Write> {
    out: W,
    prot: Protector,
    aad: [u8; super::HEADER_LEN],
    buf: Vec<u8>,
    idx: u32,
    written: u64,
    chain: Option<TagChain>,
}

impl<W: Write> ChunkWriter<W> {
    fn emit(&mut self, last: bool) -> io::Result<()> {
        self.prot.seal(self.idx, last, &self.aad, &mut self.buf).map_err(CodecError::into_io)?;
        if let (Some(c), false) = (&mut self.chain, last) {
            c.add(&self.buf);
        }
        self.out.write_all(&frame_prefix(self.buf.len(), last))?;
        self.out.write_all(&self.buf)?;
        self.written += (self.buf.len() + FRAME_PREFIX) as u64;
        self.buf.clear();
        self.idx = self
            .idx
            .checked_add(1)
            .ok_or_else(|| io::Error::other("object too large for one envelope (2^32 chunks)"))?;
        Ok(())
    }

    fn finish(mut self, digest: &Digest) -> io::Result<(W, u64)> {
        self.buf.extend_from_slice(digest);
        self.emit(true)?;
        self.out.flush()?;
        Ok((self.out, self.written))
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let take = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..take]);
        if self.buf.len() == CHUNK {
            self.emit(false)?;
        }
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Plaintext gathered before it is compressed on all cores as independent lz4 frames.
pub const BATCH: usize = 8 << 20;

/// A batch handed to the rayon pool: hashed and compressed there while the next one fills.
type InFlight = std::sync::mpsc::Receiver<(Vec<u8>, Vec<u8>, usize, blake3::Hasher)>;

enum Stage<W: Write> {
    Lz4 {
        batch: Vec<u8>,
        chunks: ChunkWriter<W>,
        frames: u64,
        inflight: Option<InFlight>,
        /// Buffers coming back from the pool, reused so steady state allocates nothing.
        spare_in: Vec<u8>,
        spare_out: Vec<u8>,
    },
    Raw(ChunkWriter<W>),
}

/// A `Write` that seals everything written to it. With lz4, input is gathered into 8 MiB
/// batches; each full batch is hashed and compressed on the rayon pool while the next one
/// fills (two batches at most), so the producer rarely waits. Call [`SealWriter::finish`]
/// to end the object; an object dropped unfinished has no final chunk and never opens.
pub struct SealWriter<W: Write> {
    stage: Stage<W>,
    /// `None` while a batch (which carries it, since hashing is in order) is in flight.
    hasher: Option<blake3::Hasher>,
    /// False for a version-3 object, whose digest comes from the tags.
    hash_plain: bool,
    expected: Option<Digest>,
    plain_len: u64,
}

/// The result of a finished seal.
#[derive(Debug)]
pub struct Sealed<W> {
    pub out: W,
    pub digest: Digest,
    pub plain_len: u64,
    pub sealed_len: u64,
}

impl<W: Write> SealWriter<W> {
    pub fn new(mut out: W, key: Option<&Key>, name: &str, opts: SealOptions) -> io::Result<Self> {
        let (header, prot) = Header::build(key, name, opts.lz4, opts.digest, opts.chain);
        out.write_all(&header.raw)?;
        let chunks = ChunkWriter {
            out,
            prot,
            aad: header.raw,
            buf: Vec::with_capacity(CHUNK + DIGEST_LEN + TAG),
            idx: 0,
            written: HEADER_LEN as u64,
            chain: opts.chain.then(|| TagChain::new(&header.raw)),
        };
        let stage = if opts.lz4 {
            Stage::Lz4 {
                batch: Vec::with_capacity(BATCH),
                chunks,
                frames: 0,
                inflight: None,
                spare_in: Vec::new(),
                spare_out: Vec::new(),
            }
        } else {
            Stage::Raw(chunks)
        };
        Ok(SealWriter {
            stage,
            hasher: Some(blake3::Hasher::new()),
            hash_plain: !opts.chain,
            expected: opts.digest.filter(|_| !opts.chain),
            plain_len: 0,
        })
    }

    /// The hasher, home after `drain`; gone only if an earlier compression worker failed.
    fn take_hasher(&mut self) -> io::Result<blake3::Hasher> {
        self.hasher.take().ok_or_else(lost_hasher)
    }

    /// Wait for the batch in flight, if any, and seal its compressed bytes.
    fn drain(&mut self) -> io::Result<()> {
        if let Stage::Lz4 { chunks, inflight, spare_in, spare_out, .. } = &mut self.stage {
            if let Some(rx) = inflight.take() {
                let (mut data, out, len, hasher) =
                    rx.recv().map_err(|_| io::Error::other("the compression worker stopped"))?;
                chunks.write_all(&out[..len])?;
                data.clear();
                *spare_in = data;
                *spare_out = out;
                self.hasher = Some(hasher);
            }
        }
        Ok(())
    }

    /// Hand the full batch to the pool (after the previous one is written out).
    fn submit(&mut self) -> io::Result<()> {
        self.drain()?;
        let mut hasher = self.take_hasher()?;
        let hash = self.hash_plain;
        if let Stage::Lz4 { batch, frames, inflight, spare_in, spare_out, .. } = &mut self.stage {
            let mut next = std::mem::take(spare_in);
            next.reserve(BATCH);
            let data = std::mem::replace(batch, next);
            let mut out = std::mem::take(spare_out);
            let (tx, rx) = std::sync::mpsc::sync_channel(1);
            rayon::spawn(move || {
                let ((), len) = rayon::join(
                    || {
                        if hash {
                            hasher.update(&data);
                        }
                    },
                    || lz4::compress_parallel_into(&data, &mut out),
                );
                let _ = tx.send((data, out, len, hasher));
            });
            *inflight = Some(rx);
            *frames += 1;
        }
        Ok(())
    }

    /// `write_all` for a caller that owns its buffer: a batch-sized buffer is handed to the
    /// pool as it is, without a copy. Returns a buffer for the caller to fill next.
    pub fn write_owned(&mut self, data: Vec<u8>) -> io::Result<Vec<u8>> {
        if let Stage::Lz4 { batch, .. } = &mut self.stage {
            if batch.is_empty() && data.len() >= BATCH / 2 {
                let spare = std::mem::replace(batch, data);
                self.plain_len += batch.len() as u64;
                self.submit()?;
                return Ok(spare);
            }
        }
        self.write_all(&data)?;
        Ok(data)
    }

    pub fn finish(mut self) -> io::Result<Sealed<W>> {
        self.drain()?;
        let mut hasher = self.take_hasher()?;
        let chunks = match self.stage {
            Stage::Lz4 { batch, mut chunks, frames, mut spare_out, .. } => {
                if self.hash_plain {
                    hasher.update(&batch);
                }
                // An empty object still needs one (empty) frame to be a valid lz4 stream.
                if !batch.is_empty() || frames == 0 {
                    let len = lz4::compress_parallel_into(&batch, &mut spare_out);
                    chunks.write_all(&spare_out[..len])?;
                }
                chunks
            }
            Stage::Raw(c) => c,
        };
        let digest: Digest = match &chunks.chain {
            Some(c) => c.digest(),
            None => *hasher.finalize().as_bytes(),
        };
        if self.expected.is_some_and(|e| e != digest) {
            return Err(CodecError::SourceChanged.into_io());
        }
        let (out, sealed_len) = chunks.finish(&digest)?;
        Ok(Sealed { out, digest, plain_len: self.plain_len, sealed_len })
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let (n, full) = match &mut self.stage {
            Stage::Lz4 { batch, .. } => {
                let take = data.len().min(BATCH - batch.len());
                batch.extend_from_slice(&data[..take]);
                (take, batch.len() == BATCH)
            }
            Stage::Raw(c) => {
                let n = c.write(data)?;
                match self.hasher.as_mut() {
                    Some(h) if self.hash_plain => {
                        h.update(&data[..n]);
                    }
                    Some(_) => {}
                    None => return Err(lost_hasher()),
                };
                (n, false)
            }
        };
        self.plain_len += n as u64;
        if full {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn lost_hasher() -> io::Error {
    io::Error::other("the compression worker failed earlier; this object cannot be finished")
}

/// Seal a whole buffer, using every core: the digest is computed while independent lz4 frames
/// are compressed in parallel (a concatenation of frames is itself a valid lz4 stream), and
/// the chunks are then sealed in parallel (STREAM positions are independent). The header
/// always carries the digest. If `opts.digest` is given it must match the data.
pub fn seal_to_vec(data: &[u8], key: Option<&Key>, name: &str, opts: SealOptions) -> io::Result<Sealed<Vec<u8>>> {
    seal_whole(data, key, name, opts, None)
}

/// [`seal_to_vec`] for a buffer whose digest the caller has just computed from it: the data
/// is not hashed a second time.
pub fn seal_hashed_to_vec(
    data: &[u8],
    key: Option<&Key>,
    name: &str,
    lz4: bool,
    digest: Digest,
) -> io::Result<Sealed<Vec<u8>>> {
    seal_whole(data, key, name, SealOptions { lz4, digest: Some(digest), chain: false }, Some(digest))
}

fn seal_whole(
    data: &[u8],
    key: Option<&Key>,
    name: &str,
    opts: SealOptions,
    known: Option<Digest>,
) -> io::Result<Sealed<Vec<u8>>> {
    let compress = || {
        opts.lz4.then(|| {
            let mut out = Vec::new();
            let len = lz4::compress_parallel_into(data, &mut out);
            out.truncate(len);
            out
        })
    };
    let (digest, compressed) = match known {
        Some(d) => (d, compress()),
        None => rayon::join(|| *blake3::hash(data).as_bytes(), compress),
    };
    if opts.digest.is_some_and(|d| d != digest) {
        return Err(CodecError::SourceChanged.into_io());
    }
    let payload = compressed.as_deref().unwrap_or(data);
    let (header, prot) = Header::build(key, name, opts.lz4, Some(digest), false);
    // Every frame's size is known up front, so seal each chunk in place in one buffer.
    let n_chunks = payload.len() / CHUNK + 1; // the last chunk may be empty
    let full = FRAME_PREFIX + CHUNK + TAG;
    let last_len = FRAME_PREFIX + (payload.len() - (n_chunks - 1) * CHUNK) + DIGEST_LEN + TAG;
    let total = HEADER_LEN + (n_chunks - 1) * full + last_len;
    let mut out = vec![0u8; total];
    out[..HEADER_LEN].copy_from_slice(&header.raw);
    let per = n_chunks.div_ceil(rayon::current_num_threads().max(1)).max(16);
    let mut jobs = Vec::new();
    let mut rest = &mut out[HEADER_LEN..];
    for first in (0..n_chunks).step_by(per) {
        let end = (first + per).min(n_chunks);
        let bytes = if end == n_chunks { rest.len() } else { (end - first) * full };
        let (region, tail) = std::mem::take(&mut rest).split_at_mut(bytes);
        rest = tail;
        jobs.push((first..end, region));
    }
    let results: Vec<io::Result<()>> = jobs
        .into_par_iter()
        .map(|(range, region)| seal_range(&prot, &header.raw, payload, range, n_chunks, &digest, region))
        .collect();
    results.into_iter().collect::<io::Result<()>>()?;
    Ok(Sealed { out, digest, plain_len: data.len() as u64, sealed_len: total as u64 })
}

/// Seal chunks `range` of `payload` into `region`, which holds exactly their frames; chunk
/// `total - 1` is the last and carries the digest.
fn seal_range(
    prot: &Protector,
    aad: &[u8],
    payload: &[u8],
    range: std::ops::Range<usize>,
    total: usize,
    digest: &Digest,
    region: &mut [u8],
) -> io::Result<()> {
    let mut at = 0;
    for i in range {
        let last = i + 1 == total;
        let plain = &payload[(i * CHUNK).min(payload.len())..((i + 1) * CHUNK).min(payload.len())];
        let ct_len = plain.len() + if last { DIGEST_LEN } else { 0 } + TAG;
        let frame = &mut region[at..at + FRAME_PREFIX + ct_len];
        frame[..FRAME_PREFIX].copy_from_slice(&frame_prefix(ct_len, last));
        let body = &mut frame[FRAME_PREFIX..];
        body[..plain.len()].copy_from_slice(plain);
        let mut buf = SliceBuf { slice: body, len: plain.len() };
        if last {
            buf.extend_from_slice(digest).map_err(|_| io::Error::other("frame size"))?;
        }
        prot.seal(i as u32, last, aad, &mut buf).map_err(CodecError::into_io)?;
        debug_assert_eq!(buf.len, ct_len);
        at += FRAME_PREFIX + ct_len;
    }
    Ok(())
}
