use super::*;
use proptest::prelude::*;

/// A tiny geometry keeps files small: 16-byte blocks, 64 blocks a segment.
const G: Geometry = Geometry { block_size: 16, segment_blocks: 64 };

fn incremental(blocks: &[(u32, Vec<u8>)], truncation: u32, g: Geometry) -> Vec<u8> {
    encode(blocks, truncation, g)
}

fn parse(f: &[u8]) -> Result<Header, String> {
    parse_header("base/5/INCREMENTAL.16384", f, f.len() as u64, G)
}

#[test]
fn header_lengths_follow_the_server() {
    let g = Geometry::default();
    assert_eq!(header_len(0, g), 12, "an unchanged file is its 12-byte header");
    assert_eq!(header_len(1, g), 8192);
    assert_eq!(header_len(2045, g), 8192, "12 + 4 * 2045 = 8192 exactly");
    assert_eq!(header_len(2046, g), 16384);
    assert_eq!(needed(&[0x0d, 0x1f, 0xae, 0xd3, 3, 0, 0, 0, 9, 0, 0, 0], g), Some(24));
    assert_eq!(needed(&[0x0d, 0x1f, 0xae, 0xd3, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0], g), None);
}

#[test]
fn a_header_reads_back() {
    let f = incremental(&[(2, vec![7; 16]), (5, vec![9; 16])], 8, G);
    assert_eq!(&f[..4], &[0x0d, 0x1f, 0xae, 0xd3], "little-endian magic");
    let h = parse(&f).unwrap();
    assert_eq!(h, Header { blocks: vec![2, 5], truncation_blocks: 8, header_len: 32 });
    assert_eq!(parse(&incremental(&[], 3, G)).unwrap().header_len, 12);
}

#[test]
fn damaged_headers_are_errors_that_name_the_file() {
    let good = incremental(&[(2, vec![7; 16]), (5, vec![9; 16])], 8, G);
    let mut cases: Vec<(Vec<u8>, &str)> = Vec::new();
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 1;
    cases.push((bad_magic, "not an incremental file"));
    cases.push((good[..10].to_vec(), "shorter than its header"));
    cases.push((good[..good.len() - 1].to_vec(), "its header describes"));
    cases.push((incremental(&[(5, vec![0; 16]), (2, vec![0; 16])], 8, G), "out of order"));
    cases.push((incremental(&[(5, vec![0; 16]), (5, vec![0; 16])], 8, G), "out of order"));
    cases.push((incremental(&[(64, vec![0; 16])], 8, G), "beyond a segment"));
    cases.push((incremental(&[], 65, G), "beyond a segment"));
    let mut too_many = incremental(&[], 0, G);
    too_many[4..8].copy_from_slice(&65u32.to_le_bytes());
    cases.push((too_many, "more than a segment"));
    for (f, want) in cases {
        let e = parse(&f).unwrap_err();
        assert!(e.starts_with("base/5/INCREMENTAL.16384: ") && e.contains(want), "{e} (wanted {want:?})");
    }
}

/// The segment `runs` describe, read from the copies (newest first).
fn rebuild(runs: &[Run], copies: &[Vec<u8>]) -> Vec<u8> {
    let bs = G.block_size as usize;
    let mut out = Vec::new();
    for r in runs {
        assert_eq!(r.blocks.start as usize * bs, out.len(), "runs are in order and leave no gap");
        let n = (r.blocks.end - r.blocks.start) as usize * bs;
        match r.from {
            Source::Zeros => out.resize(out.len() + n, 0),
            Source::Copy { copy, offset } => out.extend_from_slice(&copies[copy][offset as usize..offset as usize + n]),
        }
    }
    out
}

fn block(tag: u8, b: u32) -> Vec<u8> {
    vec![tag.wrapping_mul(31).wrapping_add(b as u8); G.block_size as usize]
}

#[test]
fn blocks_come_from_the_newest_copy_that_has_them() {
    let full: Vec<u8> = (0..6).flat_map(|b| block(1, b)).collect();
    let mid = incremental(&[(1, block(2, 1)), (4, block(2, 4))], 6, G);
    let new = incremental(&[(4, block(3, 4))], 6, G);
    let older = [Older::Incremental(parse(&mid).unwrap()), Older::Full { size: full.len() as u64 }];
    let runs = plan("f", &parse(&new).unwrap(), &older, G).unwrap();
    let got = rebuild(&runs, &[new, mid, full]);
    let want: Vec<u8> = [block(1, 0), block(2, 1), block(1, 2), block(1, 3), block(3, 4), block(1, 5)].concat();
    assert_eq!(got, want);
    assert_eq!(runs.len(), 5, "blocks 2 and 3 of the full copy are one run: {runs:?}");
}

#[test]
fn truncation_and_extension() {
    let full: Vec<u8> = (0..6).flat_map(|b| block(1, b)).collect();
    // Truncated to 3 blocks, then one block written far beyond: the gap is zeros.
    let new = incremental(&[(7, block(2, 7))], 3, G);
    let runs = plan("f", &parse(&new).unwrap(), &[Older::Full { size: full.len() as u64 }], G).unwrap();
    let got = rebuild(&runs, &[new.clone(), full.clone()]);
    let want: Vec<u8> = [full[..48].to_vec(), vec![0; 64], block(2, 7)].concat();
    assert_eq!(got, want);
    // Nor does an older incremental copy fill the gap: those blocks were truncated away.
    let mid = incremental(&[(1, block(3, 1)), (5, block(3, 5))], 6, G);
    let older = [Older::Incremental(parse(&mid).unwrap()), Older::Full { size: full.len() as u64 }];
    let runs = plan("f", &parse(&new).unwrap(), &older, G).unwrap();
    let got = rebuild(&runs, &[new.clone(), mid, full.clone()]);
    assert_eq!(got, [block(1, 0), block(3, 1), block(1, 2), vec![0; 64], block(2, 7)].concat());
    // An older copy shorter than the truncation length: the rest is zeros, as the server had it.
    let new = incremental(&[], 8, G);
    let runs = plan("f", &parse(&new).unwrap(), &[Older::Full { size: 32 }], G).unwrap();
    assert_eq!(rebuild(&runs, &[new, full.clone()]), [full[..32].to_vec(), vec![0; 96]].concat());
}

#[test]
fn a_chain_without_a_full_copy_is_an_error_when_it_leaves_blocks_missing() {
    let a = incremental(&[(0, block(1, 0))], 2, G);
    let b = incremental(&[(1, block(2, 1))], 2, G);
    let older = [Older::Incremental(parse(&a).unwrap())];
    let e = plan("base/5/16384", &parse(&incremental(&[], 3, G)).unwrap(), &older, G).unwrap_err();
    assert!(e.starts_with("base/5/16384: ") && e.contains("no older backup holds a full copy"), "{e}");
    // Every block present: no full copy is needed.
    let runs = plan("f", &parse(&b).unwrap(), &older, G).unwrap();
    assert_eq!(rebuild(&runs, &[b, a]), [block(1, 0), block(2, 1)].concat());
}

/// One step of a segment's life between two backups.
#[derive(Clone, Debug)]
struct Step {
    /// The shortest the file became meanwhile (a fraction of its length then).
    shrink_to: u8,
    /// Its length at the backup.
    len: u32,
    /// Blocks written meanwhile.
    written: Vec<u32>,
}

fn step() -> impl Strategy<Value = Step> {
    (0u8..=4, 0u32..40, proptest::collection::vec(0u32..40, 0..12)).prop_map(|(shrink_to, len, written)| Step {
        shrink_to,
        len,
        written,
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    /// A segment written, truncated and extended between backups, backed up in full once and
    /// then incrementally as the server does (every block written since the last backup,
    /// every block beyond the shortest the file became, the current length as truncation
    /// length), is rebuilt exactly from the newest copy and the older ones.
    #[test]
    fn a_chain_rebuilds_the_segment(first in 0u32..40, steps in proptest::collection::vec(step(), 1..5)) {
        let mut file: Vec<Vec<u8>> = (0..first).map(|b| block(0, b)).collect();
        let mut copies: Vec<Vec<u8>> = vec![file.concat()];
        let mut headers: Vec<Older> = vec![Older::Full { size: (first * G.block_size) as u64 }];
        for (i, s) in steps.iter().enumerate() {
            let tag = i as u8 + 1;
            let low = (file.len() as u32).min(s.len) * s.shrink_to as u32 / 4;
            file.truncate(low as usize);
            file.resize(s.len as usize, vec![0; G.block_size as usize]);
            let mut sent: std::collections::BTreeSet<u32> = (low..s.len).collect();
            for &b in s.written.iter().filter(|&&b| b < s.len) {
                file[b as usize] = block(tag, b);
                sent.insert(b);
            }
            for &b in &sent {
                if b >= low {
                    file[b as usize] = block(tag.wrapping_add(100), b);
                }
            }
            let blocks: Vec<(u32, Vec<u8>)> = sent.iter().map(|&b| (b, file[b as usize].clone())).collect();
            let bytes = incremental(&blocks, s.len, G);
            let h = parse(&bytes).unwrap();
            let mut older = headers.clone();
            older.reverse();
            let mut chain = copies.clone();
            chain.reverse();
            chain.insert(0, bytes.clone());
            let runs = plan("f", &h, &older, G).unwrap();
            prop_assert_eq!(rebuild(&runs, &chain), file.concat());
            copies.push(bytes);
            headers.push(Older::Incremental(h));
        }
    }
}
