//! Opening on every core. The chunks of an object are independent (each authenticates on its
//! own index) and so are its lz4 blocks, so both are opened on the rayon pool, a fixed window
//! of jobs in flight at each of the two stages, while the reader's own thread does only what
//! must go in order: reading frames, finding lz4 block boundaries, hashing the plaintext.
//! It fails as [`OpenReader`](super::OpenReader) does, with the same error at the same point
//! of the output: the plaintext before the first failure, then that failure.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};

use super::envelope::{CodecError, Header, Protector, TagChain, DIGEST_LEN, HEADER_LEN};
use super::keys::Keyring;
use super::open::{check_end, read_frame, read_full};
use super::Digest;

/// Frames per decryption job (1 MiB of ciphertext).
const BATCH: usize = 16;
const LZ4_MAGIC: u32 = 0x184D_2204;

/// Jobs in flight per stage by default: enough to keep every core of the pool busy. `None`
/// below 4 cores: the reading thread and its consumer (an unpacker) take two, and pool
/// workers would only take turns with them (a restore on 2 cores was slower on the pool).
pub fn default_window() -> Option<usize> {
    match rayon::current_num_threads() {
        0..=3 => None,
        n => Some((n * 2).clamp(4, 16)),
    }
}

/// Buffers handed back for reuse. Megabyte buffers allocated on one thread and freed on
/// another go back to the system each time (glibc trims per-thread arenas), and faulting
/// fresh pages in cost more than the decompression; recycled, they stay warm.
#[derive(Clone)]
pub struct Spare {
    list: Arc<Mutex<Vec<Vec<u8>>>>,
    cap: usize,
}

impl Spare {
    fn new(cap: usize) -> Self {
        Spare { list: Arc::default(), cap }
    }

    /// A buffer to fill: its length is whatever it had.
    fn take(&self) -> Vec<u8> {
        self.list.lock().ok().and_then(|mut l| l.pop()).unwrap_or_default()
    }

    /// Hand a buffer back once its bytes are used (kept up to a fixed number of buffers).
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        if let Ok(mut l) = self.list.lock() {
            if l.len() < self.cap {
                l.push(buf);
            }
        }
    }
}

/// Jobs on the rayon pool whose results are taken in the order they were queued.
struct Ordered<T> {
    slots: VecDeque<Receiver<T>>,
    cap: usize,
}

impl<T: Send + 'static> Ordered<T> {
    fn new(cap: usize) -> Self {
        Ordered { slots: VecDeque::new(), cap: cap.max(1) }
    }

    fn full(&self) -> bool {
        self.slots.len() >= self.cap
    }

    fn push(&mut self, job: impl FnOnce() -> T + Send + 'static) {
        let (tx, rx) = sync_channel(1);
        rayon::spawn(move || {
            let _ = tx.send(job());
        });
        self.slots.push_back(rx);
    }

    fn push_ready(&mut self, value: T) {
        let (tx, rx) = sync_channel(1);
        let _ = tx.send(value);
        self.slots.push_back(rx);
    }

    /// The oldest result, once it is there; `None` when nothing is queued.
    fn pop(&mut self) -> Option<Result<T, CodecError>> {
        let rx = self.slots.pop_front()?;
        Some(rx.recv().map_err(|_| CodecError::Io(io::Error::other("a worker opening the object panicked"))))
    }
}

/// Decrypted chunks in order, then what stopped the stream after them, if anything.
struct Batch {
    chunks: Vec<Vec<u8>>,
    trailer: Option<Digest>,
    err: Option<CodecError>,
}

/// Open frames `first..` in place. `after` is the framing error read after them; an
/// authentication failure comes first, as it does when the frames are opened one by one.
fn open_batch(
    prot: &Protector,
    aad: &[u8],
    first: u32,
    mut frames: Vec<Vec<u8>>,
    last: bool,
    after: Option<CodecError>,
) -> Batch {
    let n = frames.len();
    let mut trailer = None;
    for i in 0..n {
        let is_last = last && i + 1 == n;
        if let Err(e) = prot.open(first + i as u32, is_last, aad, &mut frames[i]) {
            frames.truncate(i);
            return Batch { chunks: frames, trailer: None, err: Some(e) };
        }
        if is_last {
            let buf = &mut frames[i];
            let split = buf.len() - DIGEST_LEN;
            trailer = Some(buf[split..].try_into().expect("32"));
            buf.truncate(split);
        }
    }
    if matches!(after, Some(CodecError::Extended)) {
        // The final chunk authenticated, but bytes follow it: none of it is handed out.
        frames.pop();
    }
    Batch { chunks: frames, trailer, err: after }
}

/// Frames read in order and opened on the pool; decrypted chunks come out in order.
struct Feed<R> {
    /// `None` once the last frame or a framing error was read.
    src: Option<R>,
    prot: Arc<Protector>,
    aad: [u8; HEADER_LEN],
    idx: u32,
    jobs: Ordered<Batch>,
    spare: Spare,
    ready: VecDeque<Vec<u8>>,
    err: Option<CodecError>,
    trailer: Option<Digest>,
    /// Version 3: the non-final chunks' tags, taken as the frames are read in order.
    chain: Option<TagChain>,
}

impl<R: Read> Feed<R> {
    fn submit(&mut self) {
        let Some(src) = self.src.as_mut() else { return };
        let first = self.idx;
        let mut frames = Vec::with_capacity(BATCH);
        let (mut last, mut after) = (false, None);
        while frames.len() < BATCH {
            let mut buf = self.spare.take();
            match read_frame(src, self.idx, &mut buf) {
                Ok(is_last) => {
                    if let (Some(c), false) = (&mut self.chain, is_last) {
                        c.add(&buf);
                    }
                    frames.push(buf);
                    self.idx += 1;
                    if is_last {
                        last = true;
                        after = check_end(src).err();
                        break;
                    }
                }
                Err(e) => {
                    after = Some(e);
                    break;
                }
            }
        }
        if last || after.is_some() {
            self.src = None;
        }
        let (prot, aad) = (self.prot.clone(), self.aad);
        self.jobs.push(move || open_batch(&prot, &aad, first, frames, last, after));
    }

    /// The next decrypted chunk; `None` after the final one.
    fn next(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        loop {
            while self.src.is_some() && !self.jobs.full() {
                self.submit();
            }
            if let Some(c) = self.ready.pop_front() {
                return Ok(Some(c));
            }
            if let Some(e) = self.err.take() {
                return Err(e);
            }
            if self.trailer.is_some() {
                return Ok(None);
            }
            let batch = self.jobs.pop().ok_or(CodecError::Truncated { chunk: self.idx })??;
            self.ready = batch.chunks.into();
            self.err = batch.err;
            self.trailer = batch.trailer;
        }
    }
}

/// The decrypted bytes not yet parsed, for the lz4 frame and block headers.
#[derive(Default)]
struct Cursor {
    cur: Vec<u8>,
    pos: usize,
}

fn short() -> CodecError {
    CodecError::Decompress("the lz4 stream ends inside a frame".into())
}

impl Cursor {
    /// Whether any byte is left.
    fn fill<R: Read>(&mut self, feed: &mut Feed<R>) -> Result<bool, CodecError> {
        while self.pos == self.cur.len() {
            match feed.next()? {
                Some(c) => feed.spare.give(std::mem::replace(&mut self.cur, c)),
                None => return Ok(false),
            }
            self.pos = 0;
        }
        Ok(true)
    }

    /// Exactly `n` bytes, handed to `f` piece by piece.
    fn each<R: Read>(&mut self, feed: &mut Feed<R>, mut n: usize, mut f: impl FnMut(&[u8])) -> Result<(), CodecError> {
        while n > 0 {
            if !self.fill(feed)? {
                return Err(short());
            }
            let take = n.min(self.cur.len() - self.pos);
            f(&self.cur[self.pos..self.pos + take]);
            self.pos += take;
            n -= take;
        }
        Ok(())
    }

    fn take<R: Read>(&mut self, feed: &mut Feed<R>, n: usize, spare: &Spare) -> Result<Vec<u8>, CodecError> {
        let mut out = spare.take();
        out.clear();
        self.each(feed, n, |b| out.extend_from_slice(b))?;
        Ok(out)
    }

    fn array<const N: usize, R: Read>(&mut self, feed: &mut Feed<R>) -> Result<[u8; N], CodecError> {
        let mut out = [0u8; N];
        let mut at = 0;
        self.each(feed, N, |b| {
            out[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        })?;
        Ok(out)
    }

    fn u32<R: Read>(&mut self, feed: &mut Feed<R>) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array::<4, R>(feed)?))
    }
}

/// One lz4 frame's settings, from its descriptor.
#[derive(Clone, Copy)]
struct Frame {
    max_block: usize,
    block_sums: bool,
    content_sum: bool,
}

#[derive(Clone, Copy)]
enum Mode {
    Raw,
    /// lz4: `None` between frames.
    Lz4(Option<Frame>),
}

fn bad(what: &str) -> CodecError {
    CodecError::Decompress(what.into())
}

fn decompress(data: Vec<u8>, max: usize, packed: &Spare, pieces: &Spare) -> Result<Vec<u8>, CodecError> {
    let mut out = pieces.take();
    // Only what lies past the buffer's old length is zeroed.
    out.resize(max, 0);
    let n = lz4_flex::block::decompress_into(&data, &mut out).map_err(|e| CodecError::Decompress(e.to_string()));
    packed.give(data);
    out.truncate(n?);
    Ok(out)
}

/// A `Read` over the plaintext of an object, opened on the rayon pool; like `OpenReader`,
/// it returns an error instead of end-of-file unless every chunk authenticated, the stream
/// ended exactly after its final chunk and the plaintext digest matched. It waits for pool
/// jobs, so it must not be driven from a pool worker.
pub struct ParOpenReader<R: Read> {
    feed: Feed<R>,
    cursor: Cursor,
    mode: Mode,
    /// Plaintext pieces (decompressed blocks, or chunks without lz4) in order.
    pieces: Ordered<Result<Vec<u8>, CodecError>>,
    /// Buffers for compressed blocks, and for pieces once the caller is done with them
    /// (without lz4 the pieces are the frames' buffers).
    packed: Spare,
    spent: Spare,
    parsed: bool,
    failed: bool,
    hasher: blake3::Hasher,
    header: Header,
    finished: Option<Digest>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<R: Read> ParOpenReader<R> {
    /// `window`: jobs in flight at each stage (each holds about 1 MiB), at least 1.
    pub fn new(mut src: R, keys: &Keyring, name: &str, window: usize) -> Result<Self, CodecError> {
        let window = window.max(1);
        let mut raw = [0u8; HEADER_LEN];
        let got = read_full(&mut src, &mut raw)?;
        let header = Header::parse(&raw[..got])?;
        let prot = header.verify(keys, name)?;
        let feed = Feed {
            src: Some(src),
            prot: Arc::new(prot),
            aad: header.raw,
            idx: 0,
            jobs: Ordered::new(window),
            spare: Spare::new((window + 1) * BATCH),
            ready: VecDeque::new(),
            err: None,
            trailer: None,
            chain: header.chain.then(|| TagChain::new(&header.raw)),
        };
        let mode = if header.lz4() { Mode::Lz4(None) } else { Mode::Raw };
        // Each pool holds about what its stage has in flight at once (a consumer such as
        // unpack may queue a few more pieces).
        let spent = if header.lz4() { Spare::new(window + 12) } else { feed.spare.clone() };
        Ok(ParOpenReader {
            feed,
            cursor: Cursor::default(),
            mode,
            pieces: Ordered::new(window),
            packed: Spare::new(window + 2),
            spent,
            parsed: false,
            failed: false,
            hasher: blake3::Hasher::new(),
            header,
            finished: None,
            out: Vec::new(),
            out_pos: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Where a caller of [`next_piece`](Self::next_piece) hands pieces back for reuse.
    pub fn spare(&self) -> Spare {
        self.spent.clone()
    }

    /// The verified plaintext digest, once the whole plaintext was returned.
    pub fn digest(&self) -> Option<Digest> {
        self.finished
    }

    /// Queue the next piece of plaintext (or skip a header); false at the end of the stream.
    fn parse_step(&mut self) -> Result<bool, CodecError> {
        let (feed, cur) = (&mut self.feed, &mut self.cursor);
        match self.mode {
            Mode::Raw => match feed.next()? {
                Some(chunk) => self.pieces.push_ready(Ok(chunk)),
                None => return Ok(false),
            },
            Mode::Lz4(None) => {
                // A stream of concatenated frames may end at any frame boundary.
                if !cur.fill(feed)? {
                    return Ok(false);
                }
                let magic = cur.u32(feed)?;
                if magic != LZ4_MAGIC {
                    // Skippable and legacy frames too: lz4_flex's decoder refuses them as well.
                    return Err(bad("not an lz4 frame (wrong magic number)"));
                }
                let [flg, bd] = cur.array::<2, R>(feed)?;
                if flg >> 6 != 1 || flg & 0b10 != 0 || bd & 0b1000_1111 != 0 {
                    return Err(bad("unsupported lz4 frame descriptor"));
                }
                if flg & 1 != 0 {
                    return Err(bad("lz4 frames with a dictionary are not supported"));
                }
                if flg & 0x20 == 0 {
                    // tidewal writes independent blocks only; linked ones cannot be split.
                    return Err(bad("lz4 frames with linked blocks are not supported"));
                }
                let max_block = match (bd >> 4) & 7 {
                    4 => 64 << 10,
                    5 => 256 << 10,
                    6 => 1 << 20,
                    7 => 4 << 20,
                    _ => return Err(bad("unknown lz4 block size")),
                };
                // Content size, then the descriptor checksum: the envelope authenticates them.
                let skip = if flg & 0x08 != 0 { 9 } else { 1 };
                cur.each(feed, skip, |_| {})?;
                let frame = Frame { max_block, block_sums: flg & 0x10 != 0, content_sum: flg & 0x04 != 0 };
                self.mode = Mode::Lz4(Some(frame));
            }
            Mode::Lz4(Some(f)) => {
                let word = cur.u32(feed)?;
                if word == 0 {
                    if f.content_sum {
                        cur.each(feed, 4, |_| {})?;
                    }
                    self.mode = Mode::Lz4(None);
                    return Ok(true);
                }
                let len = (word & 0x7fff_ffff) as usize;
                if len > f.max_block {
                    return Err(bad("an lz4 block is larger than its frame allows"));
                }
                let data = cur.take(feed, len, &self.packed)?;
                if f.block_sums {
                    cur.each(feed, 4, |_| {})?;
                }
                if word >> 31 == 1 {
                    self.pieces.push_ready(Ok(data));
                } else {
                    let (max, packed, spent) = (f.max_block, self.packed.clone(), self.spent.clone());
                    self.pieces.push(move || decompress(data, max, &packed, &spent));
                }
            }
        }
        Ok(true)
    }

    fn finish(&mut self) -> Result<Digest, CodecError> {
        let trailer = self.feed.trailer.ok_or(CodecError::Truncated { chunk: self.feed.idx })?;
        let digest: Digest = match &self.feed.chain {
            Some(c) => c.digest(),
            None => *self.hasher.finalize().as_bytes(),
        };
        if digest != trailer || self.header.digest.is_some_and(|d| d != digest) {
            return Err(CodecError::DigestMismatch);
        }
        Ok(digest)
    }

    /// The next piece of plaintext (at most one lz4 block or one chunk); `None` at the end,
    /// once everything verified.
    pub fn next_piece(&mut self) -> Result<Option<Vec<u8>>, CodecError> {
        loop {
            if self.failed {
                return Err(CodecError::Io(io::Error::other("the object failed to open (see the first error)")));
            }
            if self.finished.is_some() {
                return Ok(None);
            }
            while !self.parsed && !self.pieces.full() {
                match self.parse_step() {
                    Ok(true) => {}
                    Ok(false) => self.parsed = true,
                    Err(e) => {
                        // After the pieces already queued, as the stream has it.
                        self.pieces.push_ready(Err(e));
                        self.parsed = true;
                    }
                }
            }
            let piece = match self.pieces.pop() {
                Some(Ok(Ok(p))) => p,
                Some(Ok(Err(e)) | Err(e)) => {
                    self.failed = true;
                    return Err(e);
                }
                None => match self.finish() {
                    Ok(d) => {
                        self.finished = Some(d);
                        return Ok(None);
                    }
                    Err(e) => {
                        self.failed = true;
                        return Err(e);
                    }
                },
            };
            if !piece.is_empty() {
                if !self.header.chain {
                    self.hasher.update(&piece);
                }
                return Ok(Some(piece));
            }
        }
    }
}

impl<R: Read> Read for ParOpenReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        while self.out_pos == self.out.len() {
            match self.next_piece().map_err(CodecError::into_io)? {
                Some(p) => {
                    self.spent.give(std::mem::replace(&mut self.out, p));
                    self.out_pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.out.len() - self.out_pos);
        out[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

/// Open a whole object held in memory on the pool (`window` jobs in flight per stage).
pub fn par_open_to_vec(sealed: &[u8], keys: &Keyring, name: &str, window: usize) -> Result<Vec<u8>, CodecError> {
    let mut r = ParOpenReader::new(sealed, keys, name, window)?;
    let mut out = Vec::new();
    while let Some(p) = r.next_piece()? {
        out.extend_from_slice(&p);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "par_open_tests.rs"]
mod tests;
