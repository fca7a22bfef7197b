//! lz4 frames written straight from the input into a caller's buffer, with lz4_flex's block
//! compressor: no staging copy of the input and no allocation per frame (the frame encoder
//! copies its input and allocates its buffers anew for every frame). The frames are
//! standard (independent 1 MiB blocks, no checksums: the envelope authenticates everything),
//! so lz4_flex's frame decoder and the `lz4` tool read them.

use std::sync::OnceLock;

use lz4_flex::block::{compress_into, get_maximum_output_size};
use lz4_flex::frame::{BlockSize, FrameEncoder, FrameInfo};
use rayon::prelude::*;

const BLOCK: usize = 1 << 20;
const HEADER: usize = 7;
const END_MARK: usize = 4;
/// Below this, splitting a buffer across threads costs more than it saves.
const MIN_PIECE: usize = 1 << 20;

fn frame_info() -> FrameInfo {
    FrameInfo::new().block_size(BlockSize::Max1MB)
}

/// The 7-byte frame header for `frame_info()`, taken from lz4_flex's own encoder once (its
/// last byte is a hash of the descriptor, which is fixed).
fn header() -> &'static [u8; HEADER] {
    static H: OnceLock<[u8; HEADER]> = OnceLock::new();
    H.get_or_init(|| {
        let mut enc = FrameEncoder::with_frame_info(frame_info(), Vec::new());
        std::io::Write::write_all(&mut enc, b"x").expect("in-memory write");
        let out = enc.finish().expect("in-memory frame");
        out[..HEADER].try_into().expect("a frame header")
    })
}

/// The most bytes one frame of `len` input bytes can take.
pub fn frame_bound(len: usize) -> usize {
    let full = len / BLOCK;
    let rest = len % BLOCK;
    let blocks =
        full * (4 + get_maximum_output_size(BLOCK)) + if rest > 0 { 4 + get_maximum_output_size(rest) } else { 0 };
    HEADER + blocks + END_MARK
}

/// Write one frame holding `data` into `out` (at least `frame_bound(data.len())` long);
/// returns its length.
pub fn frame_into(data: &[u8], out: &mut [u8]) -> usize {
    out[..HEADER].copy_from_slice(header());
    let mut at = HEADER;
    for block in data.chunks(BLOCK) {
        let body = &mut out[at + 4..];
        let len = match compress_into(block, body) {
            Ok(n) if n < block.len() => n as u32,
            // Incompressible: stored as is, flagged by the high bit.
            _ => {
                body[..block.len()].copy_from_slice(block);
                block.len() as u32 | 0x8000_0000
            }
        };
        out[at..at + 4].copy_from_slice(&len.to_le_bytes());
        at += 4 + (len & 0x7fff_ffff) as usize;
    }
    out[at..at + END_MARK].fill(0);
    at + END_MARK
}

/// Compress `data` as independent frames, one per piece, on the rayon pool, into the front
/// of `out`; returns the length. `out` only ever grows, so a reused buffer is not zeroed
/// again. A concatenation of frames is one lz4 stream.
pub fn compress_parallel_into(data: &[u8], out: &mut Vec<u8>) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let piece = data.len().div_ceil(threads).max(MIN_PIECE);
    let pieces: Vec<&[u8]> = if data.is_empty() { vec![data] } else { data.chunks(piece).collect() };
    let bounds: Vec<usize> = pieces.iter().map(|p| frame_bound(p.len())).collect();
    let need: usize = bounds.iter().sum();
    if out.is_empty() {
        // Zeroed by the kernel as pages are touched: only what the frames fill becomes
        // resident (WAL shrinks to a tenth), where resize would write every byte.
        *out = vec![0u8; need];
    } else if out.len() < need {
        out.resize(need, 0);
    }
    let mut regions = Vec::with_capacity(pieces.len());
    let mut rest = out.as_mut_slice();
    for b in &bounds {
        let (region, tail) = std::mem::take(&mut rest).split_at_mut(*b);
        regions.push(region);
        rest = tail;
    }
    let lens: Vec<usize> = if pieces.len() == 1 {
        vec![frame_into(pieces[0], regions.pop().expect("one region"))]
    } else {
        pieces.par_iter().zip(regions.into_par_iter()).map(|(p, r)| frame_into(p, r)).collect()
    };
    // Close the gaps between frames (compressed data is small; this moves little).
    let mut write = 0;
    let mut read = 0;
    for (len, bound) in lens.iter().zip(&bounds) {
        out.copy_within(read..read + len, write);
        write += len;
        read += bound;
    }
    write
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn decode(frames: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = frames;
        // Concatenated frames: decode one after another, as OpenReader does.
        while !rest.is_empty() {
            let mut d = lz4_flex::frame::FrameDecoder::new(rest);
            d.read_to_end(&mut out).unwrap();
            let used = rest.len() - d.into_inner().len();
            assert!(used > 0);
            rest = &rest[used..];
        }
        out
    }

    #[test]
    fn frames_decode_with_the_standard_decoder() {
        let mut noise = vec![0u8; 3 * BLOCK + 12345];
        let mut x = 1u64;
        for b in noise.iter_mut() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (x >> 56) as u8;
        }
        let text: Vec<u8> = b"pgbench_accounts 0 0 ".iter().cycle().take(5 * BLOCK + 7).copied().collect();
        for data in [&b""[..], b"a", &noise, &text, &noise[..BLOCK]] {
            let mut out = vec![7u8; 3];
            let n = compress_parallel_into(data, &mut out);
            assert_eq!(decode(&out[..n]), data, "length {}", data.len());
            let mut one = vec![0u8; frame_bound(data.len())];
            let n = frame_into(data, &mut one);
            assert_eq!(decode(&one[..n]), data);
        }
    }
}
