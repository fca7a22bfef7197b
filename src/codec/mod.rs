//! The object envelope: every object in a repository is `header | frames`, where the frames
//! carry the (optionally lz4-compressed) payload in 64 KiB chunks sealed with
//! XChaCha20-Poly1305 (version 1) or AES-256-GCM under a per-object key (version 2) in the
//! STREAM construction, or, without a key, tagged with BLAKE3.
//! Everything here works on `Read`/`Write` and holds at most one chunk in memory.
//!
//! ```text
//! header (108 bytes)
//!   0  "TWAL"  4 version  5 flags  6 chunk log2  7 cipher (version 2: 1 = AES-256-GCM)
//!   8  key id (8)   16 STREAM nonce prefix (19)   35 reserved
//!   36 name tag (16): MAC of the object name, so a renamed object is caught
//!   52 plaintext BLAKE3 digest (32), all zero unless flags has DIGEST
//!   84 check (8): unkeyed BLAKE3 of bytes 0..84, tells damage from a wrong key
//!   92 mac (16): keyed BLAKE3 of bytes 0..92
//! frame, repeated
//!   u32 BE word = ciphertext length | last << 31,  u32 BE !word,  ciphertext
//!   the last frame's plaintext ends with the 32-byte digest of the whole plaintext
//! ```

mod envelope;
pub mod keys;
mod lz4;
mod open;
mod par_open;
mod seal;

pub use envelope::{CodecError, Header, CHUNK, HEADER_LEN};
pub use keys::{Cipher, Key, Keyring};
pub use open::{last_frame_offset, open_to_vec, trailer_digest, OpenReader};
pub use par_open::{default_window, par_open_to_vec, ParOpenReader, Spare};
pub use seal::{seal_hashed_to_vec, seal_to_vec, SealOptions, SealWriter, Sealed, BATCH as SEAL_BATCH};

/// BLAKE3 digest of a plaintext, the identity used to compare objects.
pub type Digest = [u8; 32];

pub fn digest_hex(d: &Digest) -> String {
    hex::encode(d)
}
