use std::io::Write;

use proptest::prelude::*;

use super::super::envelope::{frame_prefix, CHUNK, FRAME_PREFIX, TAG};
use super::super::{open_to_vec, seal_to_vec, Key, SealOptions, SealWriter};
use super::*;

const FULL: usize = FRAME_PREFIX + CHUNK + TAG;

fn key() -> Key {
    Key::from_text(&"33".repeat(32), "test").unwrap()
}

fn keys(enc: bool) -> Keyring {
    if enc {
        Keyring::new(key(), vec![])
    } else {
        Keyring::plaintext()
    }
}

/// Compressible records with some noise; `noise` of 1 in 1 makes it incompressible, so lz4
/// stores blocks as they are.
fn data(len: usize, seed: u64, noise: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 24);
    let mut x = seed | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        if x % noise.max(1) == 0 {
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(b"UPDATE pgbench_accounts ");
        }
    }
    v.truncate(len);
    v
}

fn seal(plain: &[u8], enc: bool, lz4: bool, streamed: bool) -> Vec<u8> {
    let k = enc.then(key);
    let opts = SealOptions { lz4, digest: None, chain: false };
    if streamed {
        let mut w = SealWriter::new(Vec::new(), k.as_ref(), "obj", opts).unwrap();
        w.write_all(plain).unwrap();
        w.finish().unwrap().out
    } else {
        seal_to_vec(plain, k.as_ref(), "obj", opts).unwrap().out
    }
}

/// An lz4-flagged envelope around an lz4 stream written by someone else.
fn seal_lz4_stream(stream: &[u8], plain: &[u8], enc: bool) -> Vec<u8> {
    let k = enc.then(key);
    let (header, prot) = Header::build(k.as_ref(), "obj", true, None, false);
    let mut out = header.raw.to_vec();
    let pieces: Vec<&[u8]> = stream.chunks(CHUNK).collect();
    let n = stream.len() / CHUNK + 1;
    for i in 0..n {
        let last = i + 1 == n;
        let mut buf = pieces.get(i).map(|p| p.to_vec()).unwrap_or_default();
        if last {
            buf.extend_from_slice(blake3::hash(plain).as_bytes());
        }
        prot.seal(i as u32, last, &header.raw, &mut buf).unwrap();
        out.extend_from_slice(&frame_prefix(buf.len(), last));
        out.extend_from_slice(&buf);
    }
    out
}

fn open_par(sealed: &[u8], enc: bool, window: usize) -> Result<(Vec<u8>, Digest), CodecError> {
    let mut r = ParOpenReader::new(sealed, &keys(enc), "obj", window)?;
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(CodecError::from_io)?;
    Ok((out, r.digest().expect("a digest at the end")))
}

#[test]
fn opens_what_the_sequential_reader_opens() {
    // Several lz4 frames (sealed whole, on the pool), stored (incompressible) blocks, an
    // empty object, one ending exactly on a chunk boundary, and streamed 8 MiB batches.
    let cases = [
        (0, 4, false),
        (1, 4, false),
        (CHUNK, 4, true),
        (5 << 20, 3, false),
        (3 << 20, 1, false),
        (super::super::SEAL_BATCH + 12345, 4, true),
    ];
    for (len, noise, streamed) in cases {
        let plain = data(len, len as u64 + 7, noise);
        for (enc, lz4) in [(true, true), (false, true), (true, false)] {
            let sealed = seal(&plain, enc, lz4, streamed);
            for window in [1, 2, 3, 8] {
                let (out, digest) = open_par(&sealed, enc, window).unwrap();
                assert!(out == plain, "len {len} enc {enc} lz4 {lz4} window {window}");
                assert_eq!(digest, *blake3::hash(&plain).as_bytes());
            }
        }
    }
}

#[test]
fn opens_aes_256_gcm_objects() {
    let ring = keys(true).with_cipher(super::super::Cipher::Aes256Gcm);
    let k = ring.write_key().cloned();
    for len in [0, CHUNK, (3 << 20) + 17] {
        let plain = data(len, len as u64 + 3, 4);
        for lz4 in [true, false] {
            let sealed =
                seal_to_vec(&plain, k.as_ref(), "obj", SealOptions { lz4, digest: None, chain: false }).unwrap().out;
            assert_eq!(sealed[7], 1, "an AES-256-GCM envelope");
            for window in [1, 4] {
                let mut r = ParOpenReader::new(&sealed[..], &ring, "obj", window).unwrap();
                let mut out = Vec::new();
                r.read_to_end(&mut out).unwrap();
                assert!(out == plain, "len {len} lz4 {lz4} window {window}");
            }
            // The same object under another name fails, as on one thread.
            assert!(ParOpenReader::new(&sealed[..], &ring, "other", 1)
                .and_then(|mut r| r.read_to_end(&mut Vec::new()).map_err(CodecError::from_io))
                .is_err());
        }
    }
}

#[test]
fn opens_lz4_frames_from_other_writers() {
    use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
    let plain = data(700_000, 5, 4);
    let frame = |info: FrameInfo, part: &[u8]| {
        let mut e = FrameEncoder::with_frame_info(info, Vec::new());
        e.write_all(part).unwrap();
        e.finish().unwrap()
    };
    let (a, b) = plain.split_at(300_001);
    let mut stream = frame(FrameInfo::new().block_checksums(true).content_checksum(true), a);
    // Then a frame with its content size and 4 MiB blocks.
    stream.extend_from_slice(&frame(
        FrameInfo::new().block_size(BlockSize::Max4MB).content_size(Some(b.len() as u64)),
        b,
    ));
    let sealed = seal_lz4_stream(&stream, &plain, true);
    assert_eq!(open_to_vec(&sealed, &keys(true), "obj").unwrap(), plain);
    for window in [1, 4] {
        assert!(open_par(&sealed, true, window).unwrap().0 == plain);
    }
    // Linked blocks cannot be opened apart: refused as undecodable, never wrong output.
    let linked = frame(FrameInfo::new().block_mode(BlockMode::Linked), &plain);
    let sealed = seal_lz4_stream(&linked, &plain, false);
    match open_par(&sealed, false, 4) {
        Err(CodecError::Decompress(m)) => assert!(m.contains("linked"), "{m}"),
        other => panic!("{:?}", other.map(|(o, _)| o.len())),
    }
    // An lz4 stream that stops inside a block, though every chunk authenticates.
    let cut = frame(FrameInfo::new(), &plain);
    let sealed = seal_lz4_stream(&cut[..cut.len() / 2], &plain, true);
    assert!(matches!(open_par(&sealed, true, 2), Err(CodecError::Decompress(_))));
}

/// Read-ahead stays inside the window: the source is read no further than the frames of
/// `window` decryption jobs past what was handed out.
#[test]
fn reads_ahead_only_the_window() {
    struct Counting<'a>(&'a [u8], std::rc::Rc<std::cell::Cell<usize>>);
    impl Read for Counting<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(out)?;
            self.1.set(self.1.get() + n);
            Ok(n)
        }
    }
    let plain = data(6 << 20, 9, 1);
    let sealed = seal(&plain, true, false, false);
    for window in [1, 3] {
        let read = std::rc::Rc::new(std::cell::Cell::new(0));
        let mut r = ParOpenReader::new(Counting(&sealed, read.clone()), &keys(true), "obj", window).unwrap();
        let first = r.next_piece().unwrap().unwrap();
        assert_eq!(first, plain[..CHUNK]);
        assert!(read.get() <= HEADER_LEN + (window + 1) * BATCH * FULL, "window {window}: read {}", read.get());
        assert!(read.get() >= HEADER_LEN + window * BATCH * FULL, "window {window}: read {}", read.get());
    }
}

#[derive(Clone, Debug)]
enum Damage {
    Flip(prop::sample::Index, u8),
    Drop(prop::sample::Index),
    Duplicate(prop::sample::Index),
    Swap(prop::sample::Index, prop::sample::Index),
    Truncate(prop::sample::Index),
    Extend(Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    let i = any::<prop::sample::Index>;
    prop_oneof![
        (i(), 0u8..8).prop_map(|(p, b)| Damage::Flip(p, b)),
        i().prop_map(Damage::Drop),
        i().prop_map(Damage::Duplicate),
        (i(), i()).prop_map(|(a, b)| Damage::Swap(a, b)),
        i().prop_map(Damage::Truncate),
        prop::collection::vec(any::<u8>(), 1..40).prop_map(Damage::Extend),
    ]
}

/// The object's frames as byte ranges (all but the last have one length).
fn frames(sealed: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut at = HEADER_LEN;
    while at < sealed.len() {
        let end = (at + FULL).min(sealed.len());
        out.push(at..end);
        at = end;
    }
    out
}

fn apply(sealed: &[u8], d: &Damage) -> Vec<u8> {
    let f = frames(sealed);
    let body = |order: Vec<usize>| {
        let mut out = sealed[..HEADER_LEN].to_vec();
        for i in order {
            out.extend_from_slice(&sealed[f[i].clone()]);
        }
        out
    };
    let all: Vec<usize> = (0..f.len()).collect();
    match d {
        Damage::Flip(p, bit) => {
            let mut out = sealed.to_vec();
            out[p.index(sealed.len())] ^= 1 << bit;
            out
        }
        Damage::Drop(i) => body(all.iter().copied().filter(|&k| k != i.index(f.len())).collect()),
        Damage::Duplicate(i) => {
            let i = i.index(f.len());
            body(all.iter().flat_map(|&k| if k == i { vec![k, k] } else { vec![k] }).collect())
        }
        Damage::Swap(a, b) => {
            let mut order = all;
            order.swap(a.index(f.len()), b.index(f.len()));
            body(order)
        }
        Damage::Truncate(p) => sealed[..p.index(sealed.len())].to_vec(),
        Damage::Extend(tail) => [sealed, tail].concat(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn same_plaintext_for_any_input_and_window(
        len in 0usize..400_000, seed in any::<u64>(), noise in 1u64..6,
        lz4 in any::<bool>(), enc in any::<bool>(), streamed in any::<bool>(), window in 1usize..7,
    ) {
        let plain = data(len, seed, noise);
        let sealed = seal(&plain, enc, lz4, streamed);
        let (out, digest) = open_par(&sealed, enc, window).unwrap();
        prop_assert!(out == plain);
        prop_assert_eq!(digest, *blake3::hash(&plain).as_bytes());
    }

    /// A flipped bit, a dropped, duplicated or reordered chunk, a cut or an extended object:
    /// the error (and the plaintext handed out before it) is the sequential reader's.
    #[test]
    fn same_error_for_any_damage(
        len in 0usize..300_000, seed in any::<u64>(), lz4 in any::<bool>(), enc in any::<bool>(),
        window in 1usize..5, d in damage(),
    ) {
        let plain = data(len, seed, 3);
        let sealed = seal(&plain, enc, lz4, false);
        let bad = apply(&sealed, &d);
        prop_assume!(bad != sealed);
        // The sequential reader's output up to its error.
        let mut seq_got = Vec::new();
        let seq = match super::super::OpenReader::new(&bad[..], &keys(enc), "obj") {
            Err(e) => e,
            Ok(mut r) => match r.read_to_end(&mut seq_got) {
                Ok(_) => panic!("damage {d:?} was not detected"),
                Err(e) => CodecError::from_io(e),
            },
        };
        let mut got = Vec::new();
        let par = match ParOpenReader::new(&bad[..], &keys(enc), "obj", window) {
            Err(e) => e,
            Ok(mut r) => loop {
                match r.next_piece() {
                    Ok(Some(p)) => got.extend_from_slice(&p),
                    Ok(None) => panic!("damage {d:?} was not detected"),
                    Err(e) => break e,
                }
            },
        };
        prop_assert_eq!(seq.to_string(), par.to_string());
        prop_assert!(plain.starts_with(&got), "only verified plaintext is handed out");
        prop_assert!(got == seq_got, "{} bytes before the error, {} sequentially", got.len(), seq_got.len());
    }
}
