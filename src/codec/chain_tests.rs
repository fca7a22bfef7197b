//! Version-3 objects (backup archives): the final chunk carries a digest of the header and
//! the chunks' tags instead of the plaintext's; they open, fail and report their digest as
//! the other objects do, on one thread and on the pool.

use super::*;
use crate::codec::{
    last_frame_offset, open_to_vec, par_open_to_vec, trailer_digest, OpenReader, ParOpenReader, SealOptions,
    SealWriter, Sealed,
};
use std::io::{Read, Write};

fn chacha() -> Keyring {
    Keyring::new(Key::from_text(&"22".repeat(32), "test").unwrap(), vec![])
}

fn keyrings() -> [(Keyring, &'static str); 3] {
    [(chacha(), "xchacha"), (chacha().with_cipher(Cipher::Aes256Gcm), "aes"), (Keyring::default(), "plain")]
}

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| ((i * 31) ^ (i >> 9)) as u8 % 23).collect()
}

fn seal(keys: &Keyring, plain: &[u8], lz4: bool) -> Sealed<Vec<u8>> {
    let opts = SealOptions { lz4, digest: None, chain: true };
    let mut w = SealWriter::new(Vec::new(), keys.write_key(), "backups/b/base.tar", opts).unwrap();
    // In pieces, as a backup writes them.
    for piece in plain.chunks(100_000) {
        w.write_all(piece).unwrap();
    }
    w.finish().unwrap()
}

#[test]
fn chained_objects_open_and_report_the_digest_they_carry() {
    let name = "backups/b/base.tar";
    for (keys, what) in keyrings() {
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5, (9 << 20) + 3] {
            let plain = data(len);
            for lz4 in [false, true] {
                let s = seal(&keys, &plain, lz4);
                let case = format!("{what} len {len} lz4 {lz4}");
                assert_eq!(s.out[4], VERSION_CHAIN, "{case}");
                assert_ne!(s.digest, *blake3::hash(&plain).as_bytes(), "{case}: the plaintext is not hashed");
                let mut r = OpenReader::new(&s.out[..], &keys, name).unwrap();
                assert!(r.header().chain && r.header().digest.is_none(), "{case}");
                let mut got = Vec::new();
                r.read_to_end(&mut got).unwrap();
                assert_eq!(got, plain, "{case}");
                assert_eq!(r.digest(), Some(s.digest), "{case}");
                let mut p = ParOpenReader::new(&s.out[..], &keys, name, 4).unwrap();
                let mut got = Vec::new();
                while let Some(piece) = p.next_piece().unwrap() {
                    got.extend_from_slice(&piece);
                }
                assert_eq!(got, plain, "{case} on the pool");
                assert_eq!(p.digest(), Some(s.digest), "{case} on the pool");
                let at = last_frame_offset(s.out.len() as u64).unwrap() as usize;
                let t = trailer_digest(&s.out[..HEADER_LEN], &s.out[at..], s.out.len() as u64, &keys, name).unwrap();
                assert_eq!(t, s.digest, "{case}: the last frame alone tells it");
            }
        }
    }
}

#[test]
fn damage_to_a_chained_object_is_an_error_on_one_thread_and_on_the_pool() {
    let name = "backups/b/base.tar";
    let frame = FRAME_PREFIX + CHUNK + TAG;
    for (keys, what) in keyrings() {
        let s = seal(&keys, &data(5 * CHUNK + 77), false).out;
        let first = HEADER_LEN;
        let mut flipped = s.clone();
        flipped[first + frame + 100] ^= 1;
        let mut swapped = s.clone();
        swapped[first..first + 2 * frame].rotate_left(frame);
        let cut = s[..first + 3 * frame].to_vec();
        let mut tag_only = s.clone();
        // Each chunk authenticates itself; a changed tag must not pass either.
        tag_only[first + 2 * frame - 1] ^= 0x80;
        for (bad, how) in [
            (flipped, "a flipped byte"),
            (swapped, "two chunks swapped"),
            (cut, "cut short"),
            (tag_only, "a tag changed"),
        ] {
            assert!(open_to_vec(&bad, &keys, name).is_err(), "{what}: {how}");
            assert!(par_open_to_vec(&bad, &keys, name, 4).is_err(), "{what}: {how} on the pool");
        }
        assert!(matches!(open_to_vec(&s, &keys, "backups/b/other.tar"), Err(CodecError::WrongName)), "{what}");
    }
}

#[test]
fn a_chained_header_is_checked_like_the_others() {
    let (h, _) = Header::build(None, "x", true, Some([7; DIGEST_LEN]), true);
    assert!(h.chain && h.digest.is_none(), "a chained object carries no digest up front");
    let reseal = |mut raw: [u8; HEADER_LEN], at: usize, v: u8| {
        raw[at] = v;
        let check = blake3::hash(&raw[..84]);
        raw[84..92].copy_from_slice(&check.as_bytes()[..8]);
        raw
    };
    // An unknown cipher byte says "upgrade", as in version 2.
    let e = Header::parse(&reseal(h.raw, 7, 9)).unwrap_err();
    assert!(matches!(e, CodecError::UnsupportedVersion(VERSION_CHAIN)), "{e}");
    // A plaintext digest flag on a chained object is damage.
    let e = Header::parse(&reseal(h.raw, 5, h.raw[5] | FLAG_DIGEST)).unwrap_err();
    assert!(matches!(e, CodecError::CorruptHeader), "{e}");
}
