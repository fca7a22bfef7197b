//! AES-256-GCM objects: the same guarantees as XChaCha20-Poly1305 ones, and both kinds open
//! with the same keyring.

use super::*;
use crate::codec::{open_to_vec, seal_to_vec, SealOptions};
use proptest::prelude::*;

fn ring() -> Keyring {
    Keyring::new(Key::from_text(&"11".repeat(32), "test").unwrap(), vec![])
}

fn aes() -> Keyring {
    ring().with_cipher(Cipher::Aes256Gcm)
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[(i % 3) + 1] % 17).collect()
}

fn seal(keys: &Keyring, plain: &[u8], name: &str, lz4: bool) -> Vec<u8> {
    seal_to_vec(plain, keys.write_key(), name, SealOptions { lz4, digest: None, chain: false }).unwrap().out
}

fn err(sealed: &[u8], keys: &Keyring, name: &str) -> CodecError {
    open_to_vec(sealed, keys, name).expect_err("must not open")
}

#[test]
fn either_cipher_opens_with_the_same_keys() {
    for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5] {
        let plain = data(len);
        for lz4 in [false, true] {
            let a = seal(&aes(), &plain, "wal/x", lz4);
            let c = seal(&ring(), &plain, "wal/x", lz4);
            assert_eq!((a[4], a[7]), (VERSION_CIPHER, CIPHER_AES_256_GCM));
            // XChaCha20-Poly1305 objects are written exactly as before.
            assert_eq!((c[4], c[7]), (VERSION, 0));
            assert_eq!(a.len(), c.len(), "same framing, same tag size");
            for keys in [ring(), aes()] {
                assert_eq!(open_to_vec(&a, &keys, "wal/x").unwrap(), plain, "len {len} lz4 {lz4}");
                assert_eq!(open_to_vec(&c, &keys, "wal/x").unwrap(), plain, "len {len} lz4 {lz4}");
            }
        }
    }
}

#[test]
fn aes_objects_fail_as_chacha_ones_do() {
    let plain = data(5 * CHUNK + 77);
    let s = seal(&aes(), &plain, "wal/a", false);
    assert!(matches!(err(&s, &ring(), "wal/b"), CodecError::WrongName));
    let other = Keyring::new(Key::from_text(&"22".repeat(32), "t").unwrap(), vec![]);
    assert!(matches!(err(&s, &other, "wal/a"), CodecError::WrongKey { .. }));
    assert!(matches!(err(&s, &Keyring::plaintext(), "wal/a"), CodecError::KeyRequired { .. }));
    let mut ext = s.clone();
    ext.push(0);
    assert!(matches!(err(&ext, &ring(), "wal/a"), CodecError::Extended));
    let boundary = HEADER_LEN + 2 * (FRAME_PREFIX + CHUNK + TAG);
    assert!(matches!(err(&s[..boundary], &ring(), "wal/a"), CodecError::Truncated { chunk: 2 }));
    let flip = |at: usize| {
        let mut c = s.clone();
        c[at] ^= 0x10;
        err(&c, &ring(), "wal/a")
    };
    assert!(matches!(flip(7), CodecError::CorruptHeader));
    assert!(matches!(flip(20), CodecError::CorruptHeader));
    assert!(matches!(flip(100), CodecError::TamperedHeader));
    assert!(matches!(flip(HEADER_LEN + FRAME_PREFIX + 5), CodecError::AuthFailed { chunk: 0 }));
    assert!(matches!(flip(s.len() - 1), CodecError::AuthFailed { chunk: 5 }));
}

/// The cipher byte is covered by the header's MAC: relabelling an object as the other
/// cipher (checksum made to match) is tampering, and an unknown cipher asks for an upgrade.
#[test]
fn the_cipher_cannot_be_relabelled() {
    let s = seal(&aes(), &data(1000), "x", true);
    let relabel = |version: u8, cipher: u8| {
        let mut c = s.clone();
        c[4] = version;
        c[7] = cipher;
        let check = blake3::hash(&c[..84]);
        c[84..92].copy_from_slice(&check.as_bytes()[..8]);
        err(&c, &ring(), "x")
    };
    assert!(matches!(relabel(VERSION, 0), CodecError::TamperedHeader));
    assert!(matches!(relabel(VERSION_CIPHER, 9), CodecError::UnsupportedVersion(2)));
    // A plaintext object never names a cipher.
    let mut p = seal(&Keyring::plaintext(), &data(10), "x", false);
    p[4] = VERSION_CIPHER;
    p[7] = CIPHER_AES_256_GCM;
    let check = blake3::hash(&p[..84]);
    p[84..92].copy_from_slice(&check.as_bytes()[..8]);
    assert!(matches!(err(&p, &Keyring::plaintext(), "x"), CodecError::CorruptHeader));
}

/// Each object has a key of its own: the same plaintext sealed twice differs, and one
/// object's frames do not open under another's header, even with the same name.
#[test]
fn every_object_has_its_own_key() {
    let plain = data(3 * CHUNK);
    let (a, b) = (seal(&aes(), &plain, "x", false), seal(&aes(), &plain, "x", false));
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    let mut spliced = a[..HEADER_LEN].to_vec();
    spliced.extend_from_slice(&b[HEADER_LEN..]);
    assert!(matches!(err(&spliced, &ring(), "x"), CodecError::AuthFailed { chunk: 0 }));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn any_aes_flip_is_detected(len in 0usize..150_000, pos in any::<prop::sample::Index>(), bit in 0u8..8, lz4 in any::<bool>()) {
        let mut s = seal(&aes(), &data(len), "obj", lz4);
        let at = pos.index(s.len());
        s[at] ^= 1 << bit;
        let e = open_to_vec(&s, &ring(), "obj").expect_err("flip must be detected");
        prop_assert!(e.is_integrity(), "{e:?}");
    }
}
