//! Sealing: plaintext → (lz4 frame) → 64 KiB chunks → framed, protected output.

use std::io::{self, Write};

use lz4_flex::frame::FrameEncoder;

use super::envelope::{frame_prefix, CodecError, Header, Protector, CHUNK, DIGEST_LEN};
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
        self.written += (self.buf.len() + super::envelope::FRAME_PREFIX) as u64;
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
            buf: Vec::with_capacity(CHUNK + DIGEST_LEN + super::envelope::TAG),
            idx: 0,
            written: super::HEADER_LEN as u64,
        };
        let stage = if opts.lz4 {
            let info = lz4_flex::frame::FrameInfo::new().block_size(lz4_flex::frame::BlockSize::Max256KB);
            Stage::Lz4(Box::new(FrameEncoder::with_frame_info(info, chunks)))
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

/// Seal a whole buffer (small objects: metadata, history files, tests).
pub fn seal_to_vec(data: &[u8], key: Option<&Key>, name: &str, opts: SealOptions) -> io::Result<Sealed<Vec<u8>>> {
    let mut w = SealWriter::new(Vec::with_capacity(data.len() / 2 + 256), key, name, opts)?;
    w.write_all(data)?;
    w.finish()
}
