//! Opening: framed, protected input → chunks → (lz4 frame) → plaintext, verified end to end.

use std::io::{self, Read};

use lz4_flex::frame::FrameDecoder;

use super::envelope::{CodecError, Header, Protector, TagChain, CHUNK, DIGEST_LEN, FRAME_PREFIX, HEADER_LEN, TAG};
use super::keys::Keyring;
use super::Digest;

/// Read until `buf` is full or the source ends; returns how much was read.
pub(super) fn read_full<R: Read>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Yields the decrypted chunk payloads as one byte stream.
struct ChunkReader<R: Read> {
    src: R,
    prot: Protector,
    aad: [u8; HEADER_LEN],
    buf: Vec<u8>,
    pos: usize,
    idx: u32,
    trailer: Option<Digest>,
    /// Version 3: the non-final chunks' tags, for the digest the final one carries.
    chain: Option<TagChain>,
}

/// Read frame `chunk`'s ciphertext into `buf`; returns whether it is the last frame. The
/// frame's length word must say exactly one full chunk, or for the last a short one.
pub(super) fn read_frame<R: Read>(src: &mut R, chunk: u32, buf: &mut Vec<u8>) -> Result<bool, CodecError> {
    let mut prefix = [0u8; FRAME_PREFIX];
    if read_full(src, &mut prefix)? < FRAME_PREFIX {
        return Err(CodecError::Truncated { chunk });
    }
    let word = u32::from_be_bytes(prefix[..4].try_into().expect("4"));
    if !word != u32::from_be_bytes(prefix[4..].try_into().expect("4")) {
        return Err(CodecError::CorruptFrame { chunk });
    }
    let last = word >> 31 == 1;
    let len = (word & 0x7fff_ffff) as usize;
    let ok = if last { (TAG + DIGEST_LEN..=CHUNK + TAG + DIGEST_LEN).contains(&len) } else { len == CHUNK + TAG };
    if !ok {
        return Err(CodecError::CorruptFrame { chunk });
    }
    buf.resize(len, 0);
    if read_full(src, buf)? < len {
        return Err(CodecError::Truncated { chunk });
    }
    Ok(last)
}

/// After the last frame the source must end.
pub(super) fn check_end<R: Read>(src: &mut R) -> Result<(), CodecError> {
    let mut probe = [0u8; 1];
    if read_full(src, &mut probe)? != 0 {
        return Err(CodecError::Extended);
    }
    Ok(())
}

impl<R: Read> ChunkReader<R> {
    fn next_frame(&mut self) -> Result<(), CodecError> {
        let chunk = self.idx;
        let last = read_frame(&mut self.src, chunk, &mut self.buf)?;
        if let (Some(c), false) = (&mut self.chain, last) {
            c.add(&self.buf);
        }
        self.prot.open(chunk, last, &self.aad, &mut self.buf)?;
        self.pos = 0;
        self.idx += 1;
        if last {
            let split = self.buf.len() - DIGEST_LEN;
            self.trailer = Some(self.buf[split..].try_into().expect("32"));
            self.buf.truncate(split);
            check_end(&mut self.src)?;
        }
        Ok(())
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.trailer.is_some() {
                return Ok(0);
            }
            self.next_frame().map_err(CodecError::into_io)?;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

enum Stage<R: Read> {
    Lz4(Box<FrameDecoder<ChunkReader<R>>>),
    Raw(ChunkReader<R>),
}

/// A `Read` over the plaintext of an object. It returns an error (an `io::Error` wrapping a
/// [`CodecError`]) instead of end-of-file unless every chunk authenticated, the stream ended
/// exactly after its final chunk and the plaintext digest matched.
pub struct OpenReader<R: Read> {
    stage: Stage<R>,
    hasher: blake3::Hasher,
    header: Header,
    finished: Option<Digest>,
}

impl<R: Read> OpenReader<R> {
    pub fn new(mut src: R, keys: &Keyring, name: &str) -> Result<Self, CodecError> {
        let mut raw = [0u8; HEADER_LEN];
        let got = read_full(&mut src, &mut raw)?;
        let header = Header::parse(&raw[..got])?;
        let prot = header.verify(keys, name)?;
        let chain = header.chain.then(|| TagChain::new(&header.raw));
        let chunks = ChunkReader { src, prot, aad: header.raw, buf: Vec::new(), pos: 0, idx: 0, trailer: None, chain };
        let stage = if header.lz4() { Stage::Lz4(Box::new(FrameDecoder::new(chunks))) } else { Stage::Raw(chunks) };
        Ok(OpenReader { stage, hasher: blake3::Hasher::new(), header, finished: None })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The verified plaintext digest, once the reader has returned end-of-file.
    pub fn digest(&self) -> Option<Digest> {
        self.finished
    }

    fn finish(&mut self) -> Result<(), CodecError> {
        let chunks = match &mut self.stage {
            Stage::Lz4(d) => d.get_mut(),
            Stage::Raw(c) => c,
        };
        let trailer = chunks.trailer.ok_or(CodecError::Truncated { chunk: chunks.idx })?;
        let digest: Digest = match &chunks.chain {
            Some(c) => c.digest(),
            None => *self.hasher.finalize().as_bytes(),
        };
        if digest != trailer || self.header.digest.is_some_and(|d| d != digest) {
            return Err(CodecError::DigestMismatch);
        }
        self.finished = Some(digest);
        Ok(())
    }
}

impl<R: Read> Read for OpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.finished.is_some() || out.is_empty() {
            return Ok(0);
        }
        let n = match &mut self.stage {
            // The payload may be several concatenated lz4 frames; the decoder reports the end
            // of each one as end-of-file, so carry on until the chunks are exhausted.
            Stage::Lz4(d) => loop {
                let n = d.read(out).map_err(|e| match CodecError::from_io(e) {
                    CodecError::Io(e) if e.kind() == io::ErrorKind::InvalidData || e.kind() == io::ErrorKind::Other => {
                        CodecError::Decompress(e.to_string()).into_io()
                    }
                    other => other.into_io(),
                })?;
                let c = d.get_ref();
                if n > 0 || (c.trailer.is_some() && c.pos == c.buf.len()) {
                    break n;
                }
            },
            Stage::Raw(c) => c.read(out)?,
        };
        if n == 0 {
            self.finish().map_err(CodecError::into_io)?;
        } else if !self.header.chain {
            self.hasher.update(&out[..n]);
        }
        Ok(n)
    }
}

/// Open a whole object held in memory.
pub fn open_to_vec(sealed: &[u8], keys: &Keyring, name: &str) -> Result<Vec<u8>, CodecError> {
    let mut r = OpenReader::new(sealed, keys, name)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(CodecError::from_io)?;
    Ok(out)
}

/// Where an object's last frame starts, from its stored size: every frame but the last has
/// the same length, so the trailer can be read without the rest of the object.
pub fn last_frame_offset(size: u64) -> Option<u64> {
    let full = (FRAME_PREFIX + CHUNK + TAG) as u64;
    let rest = size.checked_sub((HEADER_LEN + FRAME_PREFIX + TAG + DIGEST_LEN) as u64)?;
    Some(HEADER_LEN as u64 + rest / full * full)
}

/// The plaintext digest an object's last frame carries, authenticated like every chunk (so
/// bound to this object's header and name). `head` is the object's first bytes, `tail` its
/// bytes from [`last_frame_offset`] to the end, `size` its stored size.
pub fn trailer_digest(head: &[u8], tail: &[u8], size: u64, keys: &Keyring, name: &str) -> Result<Digest, CodecError> {
    let header = Header::parse(head)?;
    let prot = header.verify(keys, name)?;
    let start = last_frame_offset(size).ok_or(CodecError::Truncated { chunk: 0 })?;
    let chunk = ((start - HEADER_LEN as u64) / (FRAME_PREFIX + CHUNK + TAG) as u64) as u32;
    if tail.len() < FRAME_PREFIX || tail.len() as u64 != size - start {
        return Err(CodecError::Truncated { chunk });
    }
    let word = u32::from_be_bytes(tail[..4].try_into().expect("4"));
    if !word != u32::from_be_bytes(tail[4..8].try_into().expect("4")) {
        return Err(CodecError::CorruptFrame { chunk });
    }
    if word >> 31 != 1 {
        return Err(CodecError::Truncated { chunk });
    }
    if (word & 0x7fff_ffff) as usize != tail.len() - FRAME_PREFIX {
        return Err(CodecError::CorruptFrame { chunk });
    }
    let mut buf = tail[FRAME_PREFIX..].to_vec();
    prot.open(chunk, true, &header.raw, &mut buf)?;
    let split = buf.len().checked_sub(DIGEST_LEN).ok_or(CodecError::CorruptFrame { chunk })?;
    let trailer: Digest = buf[split..].try_into().expect("32");
    if header.digest.is_some_and(|d| d != trailer) {
        return Err(CodecError::DigestMismatch);
    }
    Ok(trailer)
}

#[cfg(test)]
mod tests {
    use super::super::{seal_to_vec, Key, SealOptions};
    use super::*;
    use proptest::prelude::*;

    fn key() -> Key {
        Key::from_text(&"11".repeat(32), "test").unwrap()
    }

    fn ring() -> Keyring {
        Keyring::new(key(), vec![])
    }

    fn wal_like(len: usize, seed: u64) -> Vec<u8> {
        // Mostly structured with some noise, like WAL records.
        let mut v = Vec::with_capacity(len);
        let mut x = seed | 1;
        while v.len() < len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 4 == 0 {
                v.extend_from_slice(&x.to_le_bytes());
            } else {
                v.extend_from_slice(b"INSERT row 0000 tidewal ");
            }
        }
        v.truncate(len);
        v
    }

    fn err_of(sealed: &[u8], keys: &Keyring, name: &str) -> CodecError {
        open_to_vec(sealed, keys, name).expect_err("must not open")
    }

    #[test]
    fn trailer_digest_from_the_last_frame_alone() {
        for len in [0, 1, CHUNK - 40, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 1 << 20] {
            for (lz4, k) in [(false, None), (true, Some(key())), (false, Some(key()))] {
                let data = wal_like(len, len as u64 + 3);
                let keys = k.clone().map(|k| Keyring::new(k, vec![])).unwrap_or_else(Keyring::plaintext);
                let mut w = super::super::SealWriter::new(
                    Vec::new(),
                    k.as_ref(),
                    "obj",
                    SealOptions { lz4, digest: None, chain: false },
                )
                .unwrap();
                io::Write::write_all(&mut w, &data).unwrap();
                let s = w.finish().unwrap();
                let size = s.out.len() as u64;
                let at = last_frame_offset(size).unwrap() as usize;
                let d = trailer_digest(&s.out[..HEADER_LEN], &s.out[at..], size, &keys, "obj").unwrap();
                assert_eq!(d, *blake3::hash(&data).as_bytes(), "len {len} lz4 {lz4}");
                // Another name, a cut object or a flipped bit in the last frame is refused.
                assert!(trailer_digest(&s.out[..HEADER_LEN], &s.out[at..], size, &keys, "other").is_err());
                let cut = &s.out[..s.out.len() - 1];
                if let Some(at2) = last_frame_offset(cut.len() as u64) {
                    let tail = &cut[at2 as usize..];
                    assert!(trailer_digest(&cut[..HEADER_LEN], tail, cut.len() as u64, &keys, "obj").is_err());
                }
                let mut bad = s.out.clone();
                let n = bad.len();
                bad[n - 20] ^= 1;
                assert!(trailer_digest(&bad[..HEADER_LEN], &bad[at..], size, &keys, "obj").is_err());
            }
        }
    }

    #[test]
    fn round_trip_modes() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 1 << 20] {
            let data = wal_like(len, len as u64);
            for lz4 in [false, true] {
                for k in [Some(key()), None] {
                    let digest = *blake3::hash(&data).as_bytes();
                    let s = seal_to_vec(
                        &data,
                        k.as_ref(),
                        "wal/x",
                        SealOptions { lz4, digest: Some(digest), chain: false },
                    )
                    .unwrap();
                    let keys = if k.is_some() { ring() } else { Keyring::plaintext() };
                    assert_eq!(open_to_vec(&s.out, &keys, "wal/x").unwrap(), data, "len {len} lz4 {lz4}");
                    assert_eq!(s.digest, digest);
                }
            }
        }
    }

    #[test]
    fn distinct_errors() {
        let data = wal_like(5 * CHUNK + 77, 9);
        let s = seal_to_vec(&data, Some(&key()), "wal/a", SealOptions { lz4: false, digest: None, chain: false })
            .unwrap()
            .out;
        // Renamed object.
        assert!(matches!(err_of(&s, &ring(), "wal/b"), CodecError::WrongName));
        // Wrong key, and no key.
        let other = Keyring::new(Key::from_text(&"22".repeat(32), "t").unwrap(), vec![]);
        assert!(matches!(err_of(&s, &other, "wal/a"), CodecError::WrongKey { .. }));
        assert!(matches!(err_of(&s, &Keyring::plaintext(), "wal/a"), CodecError::KeyRequired { .. }));
        // Extended.
        let mut ext = s.clone();
        ext.push(0);
        assert!(matches!(err_of(&ext, &ring(), "wal/a"), CodecError::Extended));
        // Truncated at a chunk boundary and inside a chunk.
        let boundary = HEADER_LEN + 2 * (FRAME_PREFIX + CHUNK + TAG);
        assert!(matches!(err_of(&s[..boundary], &ring(), "wal/a"), CodecError::Truncated { chunk: 2 }));
        assert!(matches!(err_of(&s[..boundary + 100], &ring(), "wal/a"), CodecError::Truncated { chunk: 2 }));
        assert!(matches!(err_of(&s[..50], &ring(), "wal/a"), CodecError::Truncated { chunk: 0 }));
        // Flipped bits in each region.
        let flip = |at: usize| {
            let mut c = s.clone();
            c[at] ^= 0x10;
            err_of(&c, &ring(), "wal/a")
        };
        assert!(matches!(flip(0), CodecError::NotAnEnvelope));
        assert!(matches!(flip(20), CodecError::CorruptHeader));
        assert!(matches!(flip(100), CodecError::TamperedHeader));
        assert!(matches!(flip(HEADER_LEN + 1), CodecError::CorruptFrame { chunk: 0 }));
        assert!(matches!(flip(HEADER_LEN + FRAME_PREFIX + 5), CodecError::AuthFailed { chunk: 0 }));
        assert!(matches!(flip(s.len() - 1), CodecError::AuthFailed { chunk: 5 }));
        // A plaintext object in an encrypted repository is refused.
        let plain = seal_to_vec(&data, None, "wal/a", SealOptions::default()).unwrap().out;
        assert!(matches!(err_of(&plain, &ring(), "wal/a"), CodecError::UnexpectedPlaintext));
        // Not ours at all.
        assert!(matches!(err_of(b"hello world", &ring(), "wal/a"), CodecError::NotAnEnvelope));
    }

    #[test]
    fn streaming_and_parallel_sealers_agree() {
        use super::super::SealWriter;
        use std::io::Write;
        for len in [0, 10, CHUNK, 5 << 20] {
            let data = wal_like(len, 77);
            let mut w =
                SealWriter::new(Vec::new(), Some(&key()), "x", SealOptions { lz4: true, digest: None, chain: false })
                    .unwrap();
            for piece in data.chunks(1000) {
                w.write_all(piece).unwrap();
            }
            let streamed = w.finish().unwrap();
            let parallel =
                seal_to_vec(&data, Some(&key()), "x", SealOptions { lz4: true, digest: None, chain: false }).unwrap();
            assert_eq!(streamed.digest, parallel.digest);
            assert_eq!(open_to_vec(&streamed.out, &ring(), "x").unwrap(), data);
            assert_eq!(open_to_vec(&parallel.out, &ring(), "x").unwrap(), data);
        }
    }

    #[test]
    fn rotated_keys_still_open_old_objects() {
        let old = key();
        let new = Key::from_text(&"44".repeat(32), "t").unwrap();
        let data = wal_like(100_000, 5);
        let sealed =
            seal_to_vec(&data, Some(&old), "x", SealOptions { lz4: true, digest: None, chain: false }).unwrap().out;
        let rotated = Keyring::new(new.clone(), vec![old.clone()]);
        assert_eq!(open_to_vec(&sealed, &rotated, "x").unwrap(), data);
        assert_eq!(rotated.write_key().unwrap().id(), new.id());
        // Without the old key the error names the key that is needed.
        match open_to_vec(&sealed, &Keyring::new(new, vec![]), "x") {
            Err(CodecError::WrongKey { needed, .. }) => assert_eq!(needed, old.id_hex()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn source_change_is_caught() {
        let data = wal_like(1000, 1);
        let wrong = Some(*blake3::hash(b"something else").as_bytes());
        let e = seal_to_vec(&data, None, "x", SealOptions { lz4: true, digest: wrong, chain: false }).unwrap_err();
        assert!(matches!(CodecError::from_io(e), CodecError::SourceChanged));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn any_input_round_trips(len in 0usize..300_000, seed in any::<u64>(), lz4 in any::<bool>(), enc in any::<bool>()) {
            let data = wal_like(len, seed);
            let k = enc.then(key);
            let keys = if enc { ring() } else { Keyring::plaintext() };
            let s = seal_to_vec(&data, k.as_ref(), "obj", SealOptions { lz4, digest: None, chain: false }).unwrap();
            prop_assert_eq!(s.sealed_len as usize, s.out.len());
            prop_assert_eq!(open_to_vec(&s.out, &keys, "obj").unwrap(), data);
        }

        #[test]
        fn any_flip_is_detected(len in 0usize..200_000, seed in any::<u64>(), pos in any::<prop::sample::Index>(), bit in 0u8..8, lz4 in any::<bool>(), enc in any::<bool>()) {
            let data = wal_like(len, seed);
            let k = enc.then(key);
            let keys = if enc { ring() } else { Keyring::plaintext() };
            let mut s = seal_to_vec(&data, k.as_ref(), "obj", SealOptions { lz4, digest: None, chain: false }).unwrap().out;
            let at = pos.index(s.len());
            s[at] ^= 1 << bit;
            let e = open_to_vec(&s, &keys, "obj").expect_err("flip must be detected");
            prop_assert!(e.is_integrity(), "{e:?}");
            prop_assert!(!matches!(e, CodecError::Truncated { .. } | CodecError::Extended), "a flip is not a truncation: {e:?}");
        }

        #[test]
        fn any_truncation_is_detected(len in 0usize..200_000, seed in any::<u64>(), cut in any::<prop::sample::Index>(), lz4 in any::<bool>()) {
            let data = wal_like(len, seed);
            let s = seal_to_vec(&data, Some(&key()), "obj", SealOptions { lz4, digest: None, chain: false }).unwrap().out;
            let at = cut.index(s.len());
            let e = open_to_vec(&s[..at], &ring(), "obj").expect_err("truncation must be detected");
            prop_assert!(matches!(e, CodecError::Truncated { .. }), "{e:?}");
        }

        /// Arbitrary bytes, and a genuine header followed by arbitrary frames (length words
        /// of any size included): refused, never a panic, never a frame-sized allocation
        /// beyond one chunk.
        #[test]
        fn any_bytes_are_refused(junk in prop::collection::vec(any::<u8>(), 0..4096), enc in any::<bool>(), len in 0usize..100_000) {
            let keys = if enc { ring() } else { Keyring::plaintext() };
            prop_assert!(open_to_vec(&junk, &keys, "obj").is_err());
            let k = enc.then(key);
            let real = seal_to_vec(&wal_like(len, 5), k.as_ref(), "obj", SealOptions { lz4: true, digest: None, chain: false }).unwrap().out;
            let mut forged = real[..HEADER_LEN].to_vec();
            forged.extend_from_slice(&junk);
            prop_assert!(open_to_vec(&forged, &keys, "obj").is_err());
            let size = forged.len() as u64;
            if let Some(at) = last_frame_offset(size) {
                let _ = trailer_digest(&forged, &forged[at as usize..], size, &keys, "obj");
            }
            let _ = trailer_digest(&junk, &junk, junk.len() as u64, &keys, "obj");
        }

        #[test]
        fn any_reader_chunking_works(len in 0usize..200_000, step in 1usize..70_000) {
            // Read with odd buffer sizes to cross every chunk boundary.
            let data = wal_like(len, 3);
            let s = seal_to_vec(&data, Some(&key()), "obj", SealOptions { lz4: true, digest: None, chain: false }).unwrap().out;
            let mut r = OpenReader::new(&s[..], &ring(), "obj").unwrap();
            let mut out = Vec::new();
            let mut buf = vec![0u8; step];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 { break; }
                out.extend_from_slice(&buf[..n]);
            }
            prop_assert_eq!(out, data);
            prop_assert!(r.digest().is_some());
        }
    }
}
