//! Envelope throughput: seal and open one 16 MiB WAL segment, in MB/s of plaintext.
//!
//! By default the input is a synthetic segment shaped like pgbench WAL (8 KiB pages of
//! heap-update records with some incompressible fields). Set TIDEWAL_BENCH_WAL to a real
//! segment file to measure on that instead (scripts/bench-archive.sh does).

use std::io::Read;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tidewal::codec::{open_to_vec, seal_to_vec, Cipher, Key, Keyring, OpenReader, ParOpenReader, SealOptions};

const SEG: usize = 16 << 20;

fn synthetic_segment() -> Vec<u8> {
    let mut v = Vec::with_capacity(SEG);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    while v.len() < SEG {
        // Page header, then records until the page is full, then a zero tail.
        let page_start = v.len();
        v.extend_from_slice(&[0x10, 0xD1, 0x05, 0, 1, 0, 0, 0]);
        v.extend_from_slice(&(page_start as u64).to_le_bytes());
        while v.len() - page_start < 8192 - 160 {
            let r = next();
            v.extend_from_slice(&(120u32).to_le_bytes()); // xl_tot_len
            v.extend_from_slice(&(r as u32).to_le_bytes()); // xid
            v.extend_from_slice(&r.to_le_bytes()); // prev pointer
            v.extend_from_slice(&[0x00, 0x0A, 0, 0]); // info, rmid
            v.extend_from_slice(&next().to_le_bytes()); // crc and block ref
            v.extend_from_slice(&[0u8; 24]); // tuple header
            v.extend_from_slice(&(r % 100_000).to_le_bytes()); // aid
            v.extend_from_slice(&((r >> 20) as i32 % 5000).to_le_bytes()); // abalance
            v.extend_from_slice(&[b' '; 60]); // filler
        }
        v.resize(page_start + 8192, 0);
    }
    v.truncate(SEG);
    v
}

fn input() -> Vec<u8> {
    match std::env::var("TIDEWAL_BENCH_WAL") {
        Ok(p) => std::fs::read(&p).unwrap_or_else(|e| panic!("TIDEWAL_BENCH_WAL={p}: {e}")),
        Err(_) => synthetic_segment(),
    }
}

fn bench(c: &mut Criterion) {
    let data = input();
    let key = Key::from_text(&"5a".repeat(32), "bench").unwrap();
    let keys = Keyring::new(key.clone(), vec![]);
    let digest = Some(*blake3::hash(&data).as_bytes());
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.sample_size(20);
    let aes_keys = keys.clone().with_cipher(Cipher::Aes256Gcm);
    let aes = aes_keys.write_key();
    let modes: [(&str, bool, Option<&Key>); 5] = [
        ("lz4+xchacha20", true, Some(&key)),
        ("lz4+aes256gcm", true, aes),
        ("xchacha20", false, Some(&key)),
        ("aes256gcm", false, aes),
        ("lz4+blake3", true, None),
    ];
    for (name, lz4, k) in modes {
        let opts = SealOptions { lz4, digest, chain: false };
        let sealed = seal_to_vec(&data, k, "wal/bench", opts).unwrap().out;
        eprintln!(
            "{name}: {} -> {} bytes ({:.1}%)",
            data.len(),
            sealed.len(),
            100.0 * sealed.len() as f64 / data.len() as f64
        );
        g.bench_with_input(BenchmarkId::new("seal", name), &data, |b, d| {
            b.iter(|| {
                seal_to_vec(
                    d,
                    k,
                    "wal/bench",
                    SealOptions { lz4, digest: Some(*blake3::hash(d).as_bytes()), chain: false },
                )
                .unwrap()
            })
        });
        let ring = if k.is_some() { keys.clone() } else { Keyring::plaintext() };
        g.bench_with_input(BenchmarkId::new("open", name), &sealed, |b, s| {
            b.iter(|| {
                // Stream through a fixed buffer, as wal-fetch does.
                let mut r = OpenReader::new(&s[..], &ring, "wal/bench").unwrap();
                let mut buf = vec![0u8; 256 * 1024];
                while r.read(&mut buf).unwrap() > 0 {}
            })
        });
        // Pieces as restore takes them on 4 cores or more: opened on the pool.
        g.bench_with_input(BenchmarkId::new("open-pool", name), &sealed, |b, s| {
            b.iter(|| {
                let mut r = ParOpenReader::new(&s[..], &ring, "wal/bench", 4).unwrap();
                let spare = r.spare();
                while let Some(p) = r.next_piece().unwrap() {
                    spare.give(p);
                }
            })
        });
    }
    g.finish();
    // Sanity: the bench measures a real round trip.
    let s = seal_to_vec(&data, Some(&key), "wal/bench", SealOptions { lz4: true, digest, chain: false }).unwrap().out;
    assert_eq!(open_to_vec(&s, &keys, "wal/bench").unwrap(), data);
}

criterion_group!(benches, bench);
criterion_main!(benches);
