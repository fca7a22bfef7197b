//! Sealing: plaintext → (lz4 frame) → 64 KiB chunks → framed, protected output.

use std::io::{self, Write};

use lz4_flex::frame::FrameEncoder;

use super::envelope::{frame_prefix, CodecError, Header, Protector, CHUNK, DIGEST_LEN, FRAME_PREFIX, HEADER_LEN, TAG};
use super::keys::Key;
use super::Digest;

#[derive(Clone, Copy, Debug, Default)]
pub struct SealOptions {
    pub lz4: bool,
    /// The plaintext digest, when known up front: it goes into the header so a duplicate can
    /// be recognised from the first bytes of an object, and sealing fails if the data differs.
    pub digest: Option<Digest>,
}

/// Cuts the (compressed) byte stream into chunks and writes sealed frames.
struct ChunkWriter<W: Write> {
    out: W,
    prot: Protector,
    aad: [u8; super::HEADER_LEN],
    buf: Vec<u8>,
    idx: u32,
    written: u64,
}

impl<W: Write> ChunkWriter<W> {
    fn emit(&mut self, last: bool) -> io::Result<()> {
        self.prot.seal(self.idx, last, &self.aad, &mut self.buf).map_err(CodecError::into_io)?;
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

enum Stage<W: Write> {
    Lz4(Box<FrameEncoder<ChunkWriter<W>>>),
    Raw(ChunkWriter<W>),
}

/// A `Write` that seals everything written to it. Call [`SealWriter::finish`] to end the object;
/// an object that is dropped unfinished has no final chunk and never opens.
pub struct SealWriter<W: Write> {
    stage: Stage<W>,
    hasher: blake3::Hasher,
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
        let (header, prot) = Header::build(key, name, opts.lz4, opts.digest);
        out.write_all(&header.raw)?;
        let chunks = ChunkWriter {
            out,
            prot,
            aad: header.raw,
            buf: Vec::with_capacity(CHUNK + DIGEST_LEN + TAG),
            idx: 0,
            written: HEADER_LEN as u64,
        };
        let stage = if opts.lz4 {
            Stage::Lz4(Box::new(FrameEncoder::with_frame_info(frame_info(), chunks)))
        } else {
            Stage::Raw(chunks)
        };
        Ok(SealWriter { stage, hasher: blake3::Hasher::new(), expected: opts.digest, plain_len: 0 })
    }

    pub fn finish(self) -> io::Result<Sealed<W>> {
        let digest: Digest = *self.hasher.finalize().as_bytes();
        if self.expected.is_some_and(|e| e != digest) {
            return Err(CodecError::SourceChanged.into_io());
        }
        let chunks = match self.stage {
            Stage::Lz4(enc) => enc.finish().map_err(io::Error::other)?,
            Stage::Raw(c) => c,
        };
        let (out, sealed_len) = chunks.finish(&digest)?;
        Ok(Sealed { out, digest, plain_len: self.plain_len, sealed_len })
    }
}

impl<W: Write> Write for SealWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = match &mut self.stage {
            Stage::Lz4(enc) => enc.write(data)?,
            Stage::Raw(c) => c.write(data)?,
        };
        self.hasher.update(&data[..n]);
        self.plain_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Seal a whole buffer, using every core: the digest is computed while independent lz4 frames
/// are compressed in parallel (a concatenation of frames is itself a valid lz4 stream), and
/// the chunks are then sealed in parallel (STREAM positions are independent). The header
/// always carries the digest. If `opts.digest` is given it must match the data.
pub fn seal_to_vec(data: &[u8], key: Option<&Key>, name: &str, opts: SealOptions) -> io::Result<Sealed<Vec<u8>>> {
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1).min(8);
    let (digest, compressed) = std::thread::scope(|s| {
        let hasher = s.spawn(|| *blake3::hash(data).as_bytes());
        let compressed = if opts.lz4 { Some(compress_parallel(data, threads)) } else { None };
        (hasher.join().expect("hash thread"), compressed)
    });
    let compressed = compressed.transpose()?;
    if opts.digest.is_some_and(|d| d != digest) {
        return Err(CodecError::SourceChanged.into_io());
    }
    let payload = compressed.as_deref().unwrap_or(data);
    let (header, prot) = Header::build(key, name, opts.lz4, Some(digest));
    let n_chunks = payload.len() / CHUNK + 1; // the last chunk may be empty
    let per = n_chunks.div_ceil(threads).max(16);
    let parts: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n_chunks)
            .step_by(per)
            .map(|first| {
                let (prot, aad) = (&prot, &header.raw);
                s.spawn(move || seal_range(prot, aad, payload, first, (first + per).min(n_chunks), n_chunks, &digest))
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("seal thread")).collect()
    });
    let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + n_chunks * (TAG + FRAME_PREFIX) + DIGEST_LEN);
    out.extend_from_slice(&header.raw);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    let sealed_len = out.len() as u64;
    Ok(Sealed { out, digest, plain_len: data.len() as u64, sealed_len })
}

/// Compress in pieces of at least 1 MiB, each an independent lz4 frame.
fn compress_parallel(data: &[u8], threads: usize) -> io::Result<Vec<u8>> {
    let piece = data.len().div_ceil(threads).max(1 << 20);
    let frames: Vec<io::Result<Vec<u8>>> = std::thread::scope(|s| {
        let handles: Vec<_> = data.chunks(piece).map(|p| s.spawn(move || compress_frame(p))).collect();
        handles.into_iter().map(|h| h.join().expect("compress thread")).collect()
    });
    if frames.is_empty() {
        return compress_frame(&[]);
    }
    let mut out = Vec::new();
    for f in frames {
        out.extend_from_slice(&f?);
    }
    Ok(out)
}

fn compress_frame(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = FrameEncoder::with_frame_info(frame_info(), Vec::with_capacity(data.len() / 2 + 64));
    enc.write_all(data)?;
    enc.finish().map_err(io::Error::other)
}

fn frame_info() -> lz4_flex::frame::FrameInfo {
    lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max256KB)
}

/// Seal chunks `first..end` of `payload`; chunk `total - 1` is the last and carries the digest.
fn seal_range(
    prot: &Protector,
    aad: &[u8],
    payload: &[u8],
    first: usize,
    end: usize,
    total: usize,
    digest: &Digest,
) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity((end - first) * (CHUNK + TAG + FRAME_PREFIX) + DIGEST_LEN);
    let mut buf = Vec::with_capacity(CHUNK + TAG + DIGEST_LEN);
    for i in first..end {
        let last = i + 1 == total;
        buf.clear();
        buf.extend_from_slice(&payload[(i * CHUNK).min(payload.len())..((i + 1) * CHUNK).min(payload.len())]);
        if last {
            buf.extend_from_slice(digest);
        }
        prot.seal(i as u32, last, aad, &mut buf).map_err(CodecError::into_io)?;
        out.extend_from_slice(&frame_prefix(buf.len(), last));
        out.extend_from_slice(&buf);
    }
    Ok(out)
}
