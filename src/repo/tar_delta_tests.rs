use std::collections::BTreeMap;

use super::*;
use crate::pg::incremental::parse_header;

type Files = BTreeMap<String, Vec<u8>>;

fn tar_of(files: &Files) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o600);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// The archive rewritten against `parent`, fed in pieces of `step` bytes.
fn rewrite(tar: &[u8], parent: Option<FileIndex>, step: usize) -> (Vec<u8>, FileIndex, DeltaStats) {
    rewrite_holding(tar, parent, step, HOLD)
}

/// The same, holding at most `budget` bytes of changed pieces.
fn rewrite_holding(
    tar: &[u8],
    parent: Option<FileIndex>,
    step: usize,
    budget: usize,
) -> (Vec<u8>, FileIndex, DeltaStats) {
    let mut d = TarDelta::new("", parent.map(Arc::new), || FileSum::Crc32c(0));
    d.budget = budget;
    let mut out = Vec::new();
    for piece in tar.chunks(step.max(1)) {
        d.feed(piece, &mut out).unwrap();
    }
    let r = d.finish().unwrap();
    (out, r.index, r.stats)
}

fn entries(tar: &[u8]) -> Files {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (e.path().unwrap().to_string_lossy().into_owned(), data)
        })
        .collect()
}

/// Each file of the newest archive rebuilt from the chain (newest first), block by block.
fn rebuild(chain_newest_first: &[Files]) -> Files {
    let g = Geometry::default();
    let bs = BLOCK as usize;
    let lookup = |layer: &Files, path: &str, b: u32| -> Option<Vec<u8>> {
        let (dir, name) = path.rsplit_once('/').unwrap();
        if let Some(inc) = layer.get(&format!("{dir}/INCREMENTAL.{name}")) {
            let h = parse_header(path, inc, inc.len() as u64, g).unwrap();
            let i = h.blocks.iter().position(|&x| x == b)?;
            let at = h.header_len as usize + i * bs;
            return Some(inc[at..at + bs].to_vec());
        }
        layer.get(path).map(|f| f.get(b as usize * bs..(b as usize + 1) * bs).map(<[u8]>::to_vec).unwrap_or_default())
    };
    let mut out = Files::new();
    for (path, data) in &chain_newest_first[0] {
        let Some((dir, name)) = path.rsplit_once('/').and_then(|(d, n)| Some((d, n.strip_prefix("INCREMENTAL.")?)))
        else {
            out.insert(path.clone(), data.clone());
            continue;
        };
        let target = format!("{dir}/{name}");
        let h = parse_header(path, data, data.len() as u64, g).unwrap();
        let mut file = Vec::new();
        for b in 0..h.truncation_blocks {
            let block = chain_newest_first.iter().find_map(|layer| lookup(layer, &target, b)).expect("block found");
            file.extend_from_slice(&block);
        }
        out.insert(target, file);
    }
    out
}

/// A file of `blocks` blocks whose block i holds `seed + i`.
fn file(blocks: usize, seed: u8) -> Vec<u8> {
    (0..blocks).flat_map(|i| vec![seed.wrapping_add(i as u8); BLOCK as usize]).collect()
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

    /// A chain of three versions rebuilds the newest exactly, whatever changed and however
    /// the stream is cut; each backup's index is the one its whole files give.
    #[test]
    fn a_chain_rebuilds_the_newest_files(
        sizes in proptest::collection::vec(1usize..400, 1..4),
        changes in proptest::collection::vec((0usize..3, 0usize..400, 0usize..3), 0..8),
        step in 1usize..70_000,
        budget_pieces in 0usize..4,
    ) {
        let budget = budget_pieces * CHUNK;
        let mut versions: Vec<Files> = Vec::new();
        let mut current = Files::new();
        for (i, &n) in sizes.iter().enumerate() {
            current.insert(format!("base/5/{}", 16384 + i), file(n, i as u8 * 40));
        }
        current.insert("base/5/PG_VERSION".into(), b"15\n".to_vec());
        current.insert("global/pg_control".into(), vec![3; 8192]);
        current.insert("base/5/16400_vm".into(), vec![1; 8192]);
        versions.push(current.clone());
        for v in 1..3 {
            for &(f, block, kind) in changes.iter().filter(|c| c.2 % 3 == v % 3 || c.0 == v) {
                let Some(data) = current.get_mut(&format!("base/5/{}", 16384 + f)) else { continue };
                match kind {
                    0 => { let b = block % (data.len() / BLOCK as usize).max(1); data[b * BLOCK as usize] ^= 0xff; }
                    1 => data.truncate((block % (data.len() / BLOCK as usize)).max(1) * BLOCK as usize),
                    _ => data.extend(file(block % 200 + 1, 9)),
                }
            }
            versions.push(current.clone());
        }
        let mut stored = Vec::new();
        let mut parent = None;
        for v in &versions {
            let tar = tar_of(v);
            let (out, idx, _) = rewrite_holding(&tar, parent.take(), step, budget);
            let (_, whole_idx, _) = rewrite(&tar, None, step);
            proptest::prop_assert_eq!(&idx, &whole_idx);
            stored.push(entries(&out));
            parent = Some(idx);
        }
        proptest::prop_assert_eq!(&stored[0], &versions[0]);
        let newest_first: Vec<Files> = stored.iter().rev().cloned().collect();
        proptest::prop_assert_eq!(&rebuild(&newest_first), &versions[2]);
        proptest::prop_assert_eq!(&rebuild(&newest_first[1..]), &versions[1]);
    }
}

#[test]
fn only_changed_pieces_are_stored() {
    let piece = CHUNK / BLOCK as usize;
    let mut v0 = Files::new();
    for (name, seed) in [("1", 1), ("2", 2), ("3", 3), ("4", 4)] {
        v0.insert(format!("base/5/{name}"), file(3 * piece, seed));
    }
    v0.insert("base/5/3_vm".into(), file(1, 3));
    v0.insert("base/5/pg_filenode.map".into(), vec![0; 512]);
    let (_, idx, stats) = rewrite(&tar_of(&v0), None, 100_000);
    assert_eq!((stats.whole, stats.partial, stats.unchanged), (4, 0, 0));
    let mut v1 = v0.clone();
    v1.get_mut("base/5/2").unwrap()[2 * CHUNK + 5] = 0xaa;
    v1.get_mut("base/5/3").unwrap()[5] = 0xaa;
    for p in 0..3 {
        v1.get_mut("base/5/4").unwrap()[p * CHUNK] = 0xaa;
    }
    let (out, _, stats) = rewrite(&tar_of(&v1), Some(idx), 100_000);
    assert_eq!((stats.whole, stats.partial, stats.unchanged), (1, 2, 1));
    assert_eq!(stats.left_out, 3 * CHUNK as u64 + 2 * 2 * CHUNK as u64);
    let got = entries(&out);
    let names: Vec<&str> = got.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "base/5/3_vm",
            "base/5/4",
            "base/5/INCREMENTAL.1",
            "base/5/INCREMENTAL.2",
            "base/5/INCREMENTAL.3",
            "base/5/pg_filenode.map"
        ]
    );
    assert_eq!(got["base/5/INCREMENTAL.1"].len(), 12, "no blocks");
    let blocks = |name: &str| {
        let f = &got[name];
        parse_header("i", f, f.len() as u64, Geometry::default()).unwrap().blocks
    };
    let p = piece as u32;
    assert_eq!(blocks("base/5/INCREMENTAL.2"), (2 * p..3 * p).collect::<Vec<_>>());
    assert_eq!(blocks("base/5/INCREMENTAL.3"), (0..p).collect::<Vec<_>>(), "the first piece only");
    assert!(out.len() < 6 * CHUNK, "{} bytes stored", out.len());
}

#[test]
fn past_the_budget_the_rest_of_a_file_is_stored_as_it_comes() {
    let p = (CHUNK / BLOCK as usize) as u32;
    let mut v0 = Files::new();
    v0.insert("base/5/1".into(), file(5 * p as usize, 1));
    let (_, idx, _) = rewrite(&tar_of(&v0), None, 100_000);
    let mut v1 = v0.clone();
    for piece in [0, 2] {
        v1.get_mut("base/5/1").unwrap()[piece * CHUNK] = 0xaa;
    }
    // One piece may be held: at the second changed piece, it and all after it are stored.
    let (out, _, stats) = rewrite_holding(&tar_of(&v1), Some(idx), 100_000, CHUNK);
    assert_eq!((stats.partial, stats.left_out), (1, CHUNK as u64));
    let f = &entries(&out)["base/5/INCREMENTAL.1"];
    let h = parse_header("i", f, f.len() as u64, Geometry::default()).unwrap();
    assert_eq!(h.blocks, (0..p).chain(2 * p..5 * p).collect::<Vec<_>>());
    assert_eq!(rebuild(&[entries(&out), v0]), v1);
}

#[test]
fn an_archive_cut_inside_an_entry_is_an_error() {
    let mut v = Files::new();
    v.insert("base/5/1".into(), file(2, 1));
    let tar = tar_of(&v);
    let mut d = TarDelta::new("", None, || FileSum::None);
    d.feed(&tar[..700], &mut Vec::new()).unwrap();
    assert!(d.finish().err().unwrap().contains("ended inside an entry"));
    assert!(relation_file("16384") && relation_file("16384_fsm.2") && relation_file("1_init"));
    assert!(
        !relation_file("16384_vm")
            && !relation_file("pg_internal.init")
            && !relation_file("16384.")
            && !relation_file("x1")
    );
}

#[test]
fn every_regular_file_is_summed_as_the_server_sent_it() {
    let piece = CHUNK / BLOCK as usize;
    let mut v0 = Files::new();
    v0.insert("base/5/1".into(), file(2 * piece, 1));
    v0.insert("base/5/PG_VERSION".into(), b"15\n".to_vec());
    v0.insert("global/empty".into(), Vec::new());
    let (_, idx, _) = rewrite(&tar_of(&v0), None, 4096);
    let mut v1 = v0.clone();
    v1.get_mut("base/5/1").unwrap()[CHUNK] = 0xaa;
    let mut d = TarDelta::new("pg_tblspc/7/", Some(Arc::new(idx)), || FileSum::Crc32c(0));
    let mut out = Vec::new();
    d.feed(&tar_of(&v1), &mut out).unwrap();
    let sums: Vec<(String, u64, Option<String>)> =
        d.finish().ok().unwrap().sums.into_iter().map(|(k, n, s)| (k, n, s.hex())).collect();
    let want: Vec<(String, u64, Option<String>)> = v1
        .iter()
        .map(|(k, data)| {
            let crc = hex::encode(crc32c::crc32c(data).to_le_bytes());
            (format!("pg_tblspc/7/{k}"), data.len() as u64, Some(crc))
        })
        .collect();
    assert_eq!(sums, want, "the changed file's sum is of the whole file, not the stored increment");
}
