//! Header layout, chunk protection and the error type shared by sealing and opening.

use std::io;

use aead_stream::aead::Buffer;
use aead_stream::{StreamBE32, StreamPrimitive};
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

use super::keys::{Cipher, Key, Keyring};

pub const MAGIC: &[u8; 4] = b"TWAL";
/// Plaintext and XChaCha20-Poly1305 objects.
pub const VERSION: u8 = 1;
/// Objects whose byte 7 names another cipher (so an older tidewal says "upgrade" rather
/// than "damaged").
pub const VERSION_CIPHER: u8 = 2;
/// Objects whose final chunk carries a digest of the header and the other chunks' tags
/// ([`TagChain`]) instead of the plaintext's BLAKE3 (backup archives, where every chunk is
/// authenticated and every file checked against the manifest: hashing the plaintext again
/// cost a third of a backup's user CPU). Byte 7 names the cipher as in version 2.
pub const VERSION_CHAIN: u8 = 3;
pub const CIPHER_AES_256_GCM: u8 = 1;
pub const HEADER_LEN: usize = 108;
/// Plaintext bytes per chunk; every frame but the last carries exactly this much.
pub const CHUNK: usize = 64 * 1024;
pub const CHUNK_LOG2: u8 = 16;
pub const TAG: usize = 16;
pub const FRAME_PREFIX: usize = 8;
pub const DIGEST_LEN: usize = 32;

pub const FLAG_LZ4: u8 = 1;
pub const FLAG_ENCRYPTED: u8 = 2;
pub const FLAG_DIGEST: u8 = 4;

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("not a tidewal object (it does not start with the TWAL magic)")]
    NotAnEnvelope,
    #[error("written by a newer tidewal (envelope version {0}); upgrade tidewal to read it")]
    UnsupportedVersion(u8),
    #[error("the header is damaged (its checksum does not match)")]
    CorruptHeader,
    #[error("the header failed authentication: the object was altered after it was written")]
    TamperedHeader,
    #[error("sealed with key {needed}, but the configured keys are [{have}]: configure the key with id {needed}")]
    WrongKey { needed: String, have: String },
    #[error("encrypted with key {needed}, but no key is configured: set key_file or TIDEWAL_KEY")]
    KeyRequired { needed: String },
    #[error("not encrypted, but this repository requires encryption: it was not written by this repository's tidewal, refusing it")]
    UnexpectedPlaintext,
    #[error("written under another name: it was copied or renamed inside the repository")]
    WrongName,
    #[error("truncated: the stream ends inside chunk {chunk} before the final chunk")]
    Truncated { chunk: u32 },
    #[error("has extra bytes after its final chunk")]
    Extended,
    #[error("chunk {chunk} has a damaged frame header")]
    CorruptFrame { chunk: u32 },
    #[error("chunk {chunk} failed authentication: the bytes were damaged or altered")]
    AuthFailed { chunk: u32 },
    #[error("decompression failed: {0}")]
    Decompress(String),
    #[error("content digest mismatch: the decoded data is not what was written")]
    DigestMismatch,
    #[error("the data changed while it was being sealed (the source file was modified during upload)")]
    SourceChanged,
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl CodecError {
    pub fn into_io(self) -> io::Error {
        match self {
            CodecError::Io(e) => e,
            other => io::Error::new(io::ErrorKind::InvalidData, other),
        }
    }

    /// Recover a codec error that travelled through an `io::Error`.
    pub fn from_io(e: io::Error) -> CodecError {
        if !e.get_ref().is_some_and(|i| i.is::<CodecError>()) {
            return CodecError::Io(e);
        }
        match e.into_inner().map(|i| i.downcast::<CodecError>()) {
            Some(Ok(c)) => *c,
            Some(Err(other)) => CodecError::Io(io::Error::other(other)),
            None => CodecError::Io(io::Error::other("an I/O error without its cause")),
        }
    }

    /// A codec error anywhere in an error's chain of causes (readers such as `tar` wrap it).
    pub fn find_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a CodecError> {
        let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(err) = cur {
            if let Some(c) = err.downcast_ref::<CodecError>() {
                return Some(c);
            }
            if let Some(io) = err.downcast_ref::<io::Error>() {
                if let Some(c) = io.get_ref().and_then(|i| i.downcast_ref::<CodecError>()) {
                    return Some(c);
                }
            }
            cur = err.source();
        }
        None
    }

    /// Errors that say the stored bytes are bad (as opposed to I/O or configuration).
    pub fn is_integrity(&self) -> bool {
        !matches!(self, CodecError::Io(_) | CodecError::WrongKey { .. } | CodecError::KeyRequired { .. })
    }
}

/// A parsed header. `raw` is the associated data of every chunk.
#[derive(Clone, Debug)]
pub struct Header {
    pub raw: [u8; HEADER_LEN],
    pub flags: u8,
    pub key_id: [u8; 8],
    pub digest: Option<[u8; DIGEST_LEN]>,
    pub cipher: Cipher,
    /// The final chunk carries a [`TagChain`] digest (version 3).
    pub chain: bool,
}

/// The digest a version-3 object's final chunk carries: BLAKE3 over its header and the tag
/// of every chunk before the final one, in order. The tags authenticate each chunk under
/// the object's own nonce (or hash it, unencrypted), so this names one stored object's
/// content as the plaintext digest did, for the cost of hashing 16 bytes per 64 KiB.
/// (Boxed: a hasher is 2 KiB, and readers hold one only for version 3.)
pub struct TagChain(Box<blake3::Hasher>);

impl TagChain {
    pub fn new(header: &[u8; HEADER_LEN]) -> TagChain {
        let mut h = blake3::Hasher::new();
        h.update(b"tidewal tag chain\0").update(header);
        TagChain(Box::new(h))
    }

    /// Add a non-final chunk: its sealed bytes end with its tag.
    pub fn add(&mut self, sealed_chunk: &[u8]) {
        self.0.update(&sealed_chunk[sealed_chunk.len().saturating_sub(TAG)..]);
    }

    pub fn digest(&self) -> [u8; DIGEST_LEN] {
        *self.0.finalize().as_bytes()
    }
}

fn name_tag(key: Option<&Key>, name: &str) -> [u8; 16] {
    let mut h = match key {
        Some(k) => blake3::Hasher::new_keyed(k.mac_key()),
        None => blake3::Hasher::new(),
    };
    h.update(b"tidewal object name\0").update(name.as_bytes());
    h.finalize().as_bytes()[..16].try_into().expect("16")
}

fn header_mac(key: Option<&Key>, bytes: &[u8]) -> [u8; 16] {
    let h = match key {
        Some(k) => blake3::keyed_hash(k.mac_key(), bytes),
        None => blake3::hash(bytes),
    };
    h.as_bytes()[..16].try_into().expect("16")
}

impl Header {
    /// `chain`: a version-3 object (see [`VERSION_CHAIN`]); it carries no digest up front.
    pub fn build(
        key: Option<&Key>,
        name: &str,
        lz4: bool,
        digest: Option<[u8; DIGEST_LEN]>,
        chain: bool,
    ) -> (Header, Protector) {
        let digest = digest.filter(|_| !chain);
        let mut raw = [0u8; HEADER_LEN];
        let mut flags = 0;
        if lz4 {
            flags |= FLAG_LZ4;
        }
        if key.is_some() {
            flags |= FLAG_ENCRYPTED;
        }
        if digest.is_some() {
            flags |= FLAG_DIGEST;
        }
        let cipher = key.map(Key::cipher).unwrap_or_default();
        raw[0..4].copy_from_slice(MAGIC);
        raw[4] = VERSION;
        raw[5] = flags;
        raw[6] = CHUNK_LOG2;
        if cipher == Cipher::Aes256Gcm {
            raw[4] = VERSION_CIPHER;
            raw[7] = CIPHER_AES_256_GCM;
        }
        if chain {
            raw[4] = VERSION_CHAIN;
        }
        let mut nonce = [0u8; 19];
        if let Some(k) = key {
            raw[8..16].copy_from_slice(&k.id());
            rand::fill(&mut nonce);
        }
        raw[16..35].copy_from_slice(&nonce);
        raw[36..52].copy_from_slice(&name_tag(key, name));
        if let Some(d) = digest {
            raw[52..84].copy_from_slice(&d);
        }
        let check = blake3::hash(&raw[..84]);
        raw[84..92].copy_from_slice(&check.as_bytes()[..8]);
        let mac = header_mac(key, &raw[..92]);
        raw[92..108].copy_from_slice(&mac);
        let header = Header { raw, flags, key_id: raw[8..16].try_into().expect("8"), digest, cipher, chain };
        let prot = Protector::new(key, &nonce, cipher);
        (header, prot)
    }

    /// Parse the fixed-size header and check it for damage (not yet for authenticity).
    pub fn parse(raw: &[u8]) -> Result<Header, CodecError> {
        if raw.len() < HEADER_LEN {
            if !raw.is_empty() && !MAGIC.starts_with(&raw[..raw.len().min(4)]) {
                return Err(CodecError::NotAnEnvelope);
            }
            return Err(CodecError::Truncated { chunk: 0 });
        }
        if &raw[0..4] != MAGIC {
            return Err(CodecError::NotAnEnvelope);
        }
        if blake3::hash(&raw[..84]).as_bytes()[..8] != raw[84..92] {
            return Err(CodecError::CorruptHeader);
        }
        let flags = raw[5];
        let cipher = match (raw[4], raw[7]) {
            (VERSION, _) | (VERSION_CHAIN, 0) => Cipher::XChaCha20Poly1305,
            // Only encrypted objects name a cipher.
            (VERSION_CIPHER | VERSION_CHAIN, CIPHER_AES_256_GCM) if flags & FLAG_ENCRYPTED != 0 => Cipher::Aes256Gcm,
            (VERSION_CIPHER | VERSION_CHAIN, CIPHER_AES_256_GCM) => return Err(CodecError::CorruptHeader),
            (v, _) => return Err(CodecError::UnsupportedVersion(v)),
        };
        let chain = raw[4] == VERSION_CHAIN;
        // A chained object has no plaintext digest to carry up front.
        if chain && flags & FLAG_DIGEST != 0 {
            return Err(CodecError::CorruptHeader);
        }
        if raw[6] != CHUNK_LOG2 {
            return Err(CodecError::CorruptHeader);
        }
        let digest = (flags & FLAG_DIGEST != 0).then(|| raw[52..84].try_into().expect("32"));
        Ok(Header {
            raw: raw[..HEADER_LEN].try_into().expect("len"),
            flags,
            key_id: raw[8..16].try_into().expect("8"),
            digest,
            cipher,
            chain,
        })
    }

    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    pub fn lz4(&self) -> bool {
        self.flags & FLAG_LZ4 != 0
    }

    /// Check authenticity and the bound name; returns what opens the chunks.
    pub fn verify(&self, keys: &Keyring, name: &str) -> Result<Protector, CodecError> {
        let key = if self.encrypted() {
            let needed = hex::encode(self.key_id);
            match keys.find(&self.key_id) {
                Some(k) => Some(k),
                None if keys.write_key().is_none() => return Err(CodecError::KeyRequired { needed }),
                None => return Err(CodecError::WrongKey { needed, have: keys.ids_hex().join(", ") }),
            }
        } else {
            if keys.write_key().is_some() {
                return Err(CodecError::UnexpectedPlaintext);
            }
            None
        };
        if header_mac(key, &self.raw[..92]) != self.raw[92..108] {
            return Err(CodecError::TamperedHeader);
        }
        if name_tag(key, name) != self.raw[36..52] {
            return Err(CodecError::WrongName);
        }
        let nonce: [u8; 19] = self.raw[16..35].try_into().expect("19");
        Ok(Protector::new(key, &nonce, self.cipher))
    }
}

/// Seals or opens one chunk in place: AEAD with a key, a BLAKE3 tag without.
pub enum Protector {
    Aead(Box<StreamBE32<XChaCha20Poly1305>>),
    Gcm(Box<Gcm>),
    Plain,
}

/// AES-256-GCM in the same STREAM construction as XChaCha20-Poly1305 (nonce: a 7-byte
/// prefix, the chunk index, a last-chunk flag), under a key of this object's own, derived
/// from the repository key and the header's 19 random bytes: GCM's 96-bit nonces then never
/// repeat under one key, however many objects the repository holds.
pub struct Gcm {
    key: LessSafeKey,
    prefix: [u8; 7],
}

/// Derivation context of the per-object AES key.
const CTX_GCM_OBJECT: &[u8] = b"tidewal 2026 aes-256-gcm object key v1\0";

impl Gcm {
    fn new(k: &Key, salt: &[u8; 19]) -> Gcm {
        let sub = blake3::Hasher::new_keyed(k.aead_key()).update(CTX_GCM_OBJECT).update(salt).finalize();
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, sub.as_bytes()).expect("a 32-byte key"));
        Gcm { key, prefix: salt[..7].try_into().expect("7") }
    }

    fn nonce(&self, idx: u32, last: bool) -> Nonce {
        let mut n = [0u8; 12];
        n[..7].copy_from_slice(&self.prefix);
        n[7..11].copy_from_slice(&idx.to_be_bytes());
        n[11] = last as u8;
        Nonce::assume_unique_for_key(n)
    }
}

impl Protector {
    fn new(key: Option<&Key>, nonce: &[u8; 19], cipher: Cipher) -> Protector {
        match (key, cipher) {
            (Some(k), Cipher::XChaCha20Poly1305) => {
                let aead = XChaCha20Poly1305::new(k.aead_key().into());
                Protector::Aead(Box::new(aead_stream::NewStream::from_aead(aead, nonce.into())))
            }
            (Some(k), Cipher::Aes256Gcm) => Protector::Gcm(Box::new(Gcm::new(k, nonce))),
            (None, _) => Protector::Plain,
        }
    }

    fn plain_tag(aad: &[u8], idx: u32, last: bool, data: &[u8]) -> [u8; TAG] {
        let mut h = blake3::Hasher::new();
        h.update(aad).update(&idx.to_be_bytes()).update(&[last as u8]).update(data);
        h.finalize().as_bytes()[..TAG].try_into().expect("16")
    }

    /// Appends the tag to `buf`.
    pub fn seal(&self, idx: u32, last: bool, aad: &[u8], buf: &mut dyn Buffer) -> Result<(), CodecError> {
        match self {
            Protector::Aead(s) => s
                .encrypt_in_place(idx, last, aad, buf)
                .map_err(|_| CodecError::Io(io::Error::other("encryption failed"))),
            Protector::Gcm(g) => {
                let failed = |_| CodecError::Io(io::Error::other("encryption failed"));
                let tag = g
                    .key
                    .seal_in_place_separate_tag(g.nonce(idx, last), Aad::from(aad), buf.as_mut())
                    .map_err(failed)?;
                buf.extend_from_slice(tag.as_ref())
                    .map_err(|_| CodecError::Io(io::Error::other("chunk buffer too small")))
            }
            Protector::Plain => {
                let tag = Self::plain_tag(aad, idx, last, buf.as_ref());
                buf.extend_from_slice(&tag).map_err(|_| CodecError::Io(io::Error::other("chunk buffer too small")))
            }
        }
    }

    /// Verifies and strips the tag from `buf`.
    pub fn open(&self, idx: u32, last: bool, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), CodecError> {
        let fail = CodecError::AuthFailed { chunk: idx };
        match self {
            Protector::Aead(s) => s.decrypt_in_place(idx, last, aad, buf).map_err(|_| fail),
            Protector::Gcm(g) => {
                let Some(plain) = buf.len().checked_sub(TAG) else { return Err(fail) };
                g.key.open_in_place(g.nonce(idx, last), Aad::from(aad), buf).map_err(|_| fail)?;
                buf.truncate(plain);
                Ok(())
            }
            Protector::Plain => {
                if buf.len() < TAG {
                    return Err(fail);
                }
                let split = buf.len() - TAG;
                let tag = Self::plain_tag(aad, idx, last, &buf[..split]);
                if tag[..] != buf[split..] {
                    return Err(fail);
                }
                buf.truncate(split);
                Ok(())
            }
        }
    }
}

pub fn frame_prefix(len: usize, last: bool) -> [u8; FRAME_PREFIX] {
    let word = len as u32 | ((last as u32) << 31);
    let mut p = [0u8; FRAME_PREFIX];
    p[..4].copy_from_slice(&word.to_be_bytes());
    p[4..].copy_from_slice(&(!word).to_be_bytes());
    p
}

/// An `aead::Buffer` over a fixed slice, so chunks can be sealed in place in their final
/// position in the output (no per-chunk allocation or copy).
pub struct SliceBuf<'a> {
    pub slice: &'a mut [u8],
    pub len: usize,
}

impl AsRef<[u8]> for SliceBuf<'_> {
    fn as_ref(&self) -> &[u8] {
        &self.slice[..self.len]
    }
}

impl AsMut<[u8]> for SliceBuf<'_> {
    fn as_mut(&mut self) -> &mut [u8] {
        &mut self.slice[..self.len]
    }
}

impl Buffer for SliceBuf<'_> {
    fn extend_from_slice(&mut self, other: &[u8]) -> aead_stream::aead::Result<()> {
        let end = self.len + other.len();
        if end > self.slice.len() {
            return Err(aead_stream::aead::Error);
        }
        self.slice[self.len..end].copy_from_slice(other);
        self.len = end;
        Ok(())
    }

    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
}

#[cfg(test)]
#[path = "cipher_tests.rs"]
mod cipher_tests;

#[cfg(test)]
#[path = "chain_tests.rs"]
mod chain_tests;
