//! Verify a repository end to end: every chosen object is opened in full through its
//! envelope (every chunk's tag, the whole-object digest), backups against `backup.json`
//! and their archives' files against `backup_manifest`, WAL segments' first page headers,
//! history files against each other, and the WAL chain from every backup to the newest
//! WAL of each live timeline. Objects are streamed, a few at a time, on blocking threads.

use std::collections::BTreeMap;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use crate::codec::{Keyring, OpenReader};
use crate::error::{Code, Fail, Result};
use crate::ops::timelines;
use crate::pg::history::HistoryEntry;
use crate::pg::lsn::SegmentId;
use crate::pg::walfile::{self, Expect, WalFile};
use crate::repo::catalog::{self, wal_coverage, wal_route, BackupInfo, Coverage};
use crate::repo::manifest::{self, Checker};
use crate::repo::{layout, Repo};

/// Objects opened at once: enough to overlap the store's latency, bounded memory.
const PARALLEL: usize = 4;
const PIECE: usize = 1 << 20;

/// What to verify, as plain values.
#[derive(Clone, Debug)]
pub struct VerifyRequest {
    /// One backup id; `None` (or "all") for every complete backup.
    pub backup: Option<String>,
    /// Check backups (their objects, envelopes and manifests).
    pub backups: bool,
    /// Check the WAL: the chain, every WAL object, the history files.
    pub wal: bool,
    /// Check only this fraction of the objects (0 < f <= 1), at least one of each kind.
    pub sample: Option<f64>,
    /// Seeds the sample's choice.
    pub seed: u64,
}

/// One thing wrong, named by the object (or the segment that is missing).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub backups: usize,
    pub backup_objects: usize,
    pub backup_bytes: u64,
    pub wal_files: usize,
    pub wal_bytes: u64,
    pub history_files: usize,
    /// Logical dumps (`dump.json`), checked with every backup.
    pub dumps: usize,
    pub dump_objects: usize,
    pub dump_bytes: u64,
    pub sample: Option<f64>,
    pub problems: Vec<Problem>,
    pub duration_seconds: f64,
}

pub async fn verify(repo: &Repo, req: &VerifyRequest) -> Result<VerifyReport> {
    let started = Instant::now();
    let mut report = VerifyReport { sample: req.sample, ..Default::default() };
    let all = catalog::list_backups(repo).await?;
    let chosen: Vec<&BackupInfo> = match req.backup.as_deref() {
        None | Some("all") => all.iter().collect(),
        Some(id) => vec![all
            .iter()
            .find(|b| b.id == id)
            .ok_or_else(|| Fail::new(Code::NotFound, format!("no complete backup with id {id}")))?],
    };
    if req.backups {
        report.problems.extend(chain_gaps(&all, &chosen));
        for b in &chosen {
            verify_backup(repo, b, req, &mut report).await?;
        }
    }
    if req.backups && matches!(req.backup.as_deref(), None | Some("all")) {
        verify_dumps(repo, req, &mut report).await?;
    }
    if req.wal {
        verify_wal(repo, &all, req, &mut report).await?;
    }
    report.problems.sort();
    report.problems.dedup();
    report.duration_seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Incremental backups that cannot be restored because a backup their chain builds on is
/// not in the repository (pure).
pub fn chain_gaps(all: &[BackupInfo], chosen: &[&BackupInfo]) -> Vec<Problem> {
    let mut out = Vec::new();
    for b in chosen {
        let mut at = *b;
        let mut steps = 0;
        while let Some(parent) = at.parent.as_deref() {
            match all.iter().find(|a| a.id == parent) {
                Some(p) if steps < all.len() => (at, steps) = (p, steps + 1),
                Some(_) => {
                    out.push(problem(
                        &layout::backup_object(&b.id, "backup.json"),
                        "its chain of parent backups loops",
                    ));
                    break;
                }
                None => {
                    out.push(problem(
                        &layout::backup_object(&b.id, "backup.json"),
                        format!("builds on backup {parent}, which is not in the repository: it cannot be restored"),
                    ));
                    break;
                }
            }
        }
    }
    out
}

fn problem(object: &str, what: impl Into<String>) -> Problem {
    Problem { object: object.to_string(), problem: what.into() }
}

async fn verify_backup(repo: &Repo, b: &BackupInfo, req: &VerifyRequest, report: &mut VerifyReport) -> Result<()> {
    report.backups += 1;
    let record = layout::backup_object(&b.id, "backup.json");
    for obj in catalog::unlisted_objects(b) {
        report.problems.push(problem(&record, format!("does not list {obj}")));
    }
    let names: Vec<&str> = b.objects.iter().map(|o| o.name.as_str()).collect();
    let picked = sample(&names, req.sample, req.seed);
    let manifest_obj = layout::backup_object(&b.id, "backup_manifest");
    let system = repo.identity.system_id();
    let checker = match open_small(repo, &manifest_obj).await? {
        Ok(text) => match manifest::checker(&text, system) {
            Ok(c) => Some(Arc::new(c)),
            Err(e) => {
                report.problems.push(problem(&manifest_obj, e));
                None
            }
        },
        Err(e) => {
            report.problems.push(problem(&manifest_obj, e));
            None
        }
    };
    let mut jobs = Vec::new();
    for (o, pick) in b.objects.iter().zip(&picked) {
        if !pick {
            continue;
        }
        report.backup_objects += 1;
        report.backup_bytes += o.stored_bytes;
        let file = o.name.rsplit('/').next().unwrap_or_default();
        let prefix = match file {
            "base.tar" => Some(String::new()),
            f => f.strip_suffix(".tar").map(|oid| format!("pg_tblspc/{oid}/")),
        };
        let tar = prefix.zip(checker.clone());
        let recorded = Recorded { stored_bytes: o.stored_bytes, digest: o.digest.clone(), record: "backup.json" };
        jobs.push(open_object(repo, o.name.clone(), Some(recorded), move |r, name| match tar {
            Some((prefix, checker)) => check_tar(r, name, &prefix, &checker),
            None => drain(r).map(|_| ()),
        }));
    }
    let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
    let mut damaged = false;
    while let Some(r) = results.next().await {
        let r = r?;
        damaged |= !r.is_empty();
        report.problems.extend(r);
    }
    // Only when every archive was read in full can every listed file have been seen.
    if let Some(c) = checker.filter(|_| !damaged && picked.iter().all(|p| *p)) {
        if let Err(e) = c.complete() {
            report.problems.push(problem(&manifest_obj, format!("the archives do not match the manifest: {e}")));
        }
    }
    Ok(())
}

/// Every object of every dump opened in full and compared with `dump.json`.
async fn verify_dumps(repo: &Repo, req: &VerifyRequest, report: &mut VerifyReport) -> Result<()> {
    let names = repo.store.list("dumps").await?;
    for d in crate::repo::dumps::read_dumps(repo, &names).await? {
        report.dumps += 1;
        let objects = d.objects();
        let names: Vec<&str> = objects.iter().map(|o| o.name.as_str()).collect();
        let mut jobs = Vec::new();
        for (o, pick) in objects.iter().zip(sample(&names, req.sample, req.seed)) {
            if pick {
                report.dump_objects += 1;
                report.dump_bytes += o.stored_bytes;
                let recorded = Recorded { stored_bytes: o.stored_bytes, digest: o.digest.clone(), record: "dump.json" };
                jobs.push(open_object(repo, o.name.clone(), Some(recorded), |r, _| drain(r).map(|_| ())));
            }
        }
        let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
        while let Some(r) = results.next().await {
            report.problems.extend(r?);
        }
    }
    Ok(())
}

/// What an object must be, as its record (`backup.json`, `dump.json`) has it.
struct Recorded {
    stored_bytes: u64,
    digest: String,
    record: &'static str,
}

/// Open `obj` in full on a blocking thread, handing the plaintext to `check`. A failure to
/// read the store ends the run; damage becomes a problem naming the object.
async fn open_object<F>(repo: &Repo, obj: String, recorded: Option<Recorded>, check: F) -> Result<Vec<Problem>>
where
    F: FnOnce(&mut dyn Read, &str) -> std::result::Result<(), String> + Send + 'static,
{
    let src = match repo.reader(&obj, None).await {
        Ok(r) => r,
        Err(e) if e.code == Code::NotFound => return Ok(vec![problem(&obj, "is missing")]),
        Err(e) => return Err(e),
    };
    let keys = repo.keys.clone();
    let name = obj.clone();
    let outcome = tokio::task::spawn_blocking(move || open_and_check(src, &keys, &name, check))
        .await
        .map_err(|e| Fail::new(Code::Internal, format!("object {obj}: the check panicked: {e}")))?;
    let (stored, digest) = match outcome {
        Ok(done) => done,
        Err(Bad::Damaged(e)) => return Ok(vec![problem(&obj, e)]),
        Err(Bad::Storage(e)) => return Err(Fail::new(Code::Storage, format!("object {obj}: {e}"))),
    };
    let Some(want) = recorded else { return Ok(Vec::new()) };
    let digest = crate::codec::digest_hex(&digest);
    Ok(if stored != want.stored_bytes {
        vec![problem(&obj, format!("has {stored} bytes, {} recorded {}", want.record, want.stored_bytes))]
    } else if digest != want.digest {
        vec![problem(&obj, format!("holds BLAKE3 {digest}, {} recorded {}", want.record, want.digest))]
    } else {
        Vec::new()
    })
}

/// Why an object did not open: its bytes (or the key) are wrong, or the store failed.
#[derive(Debug)]
enum Bad {
    Damaged(String),
    Storage(String),
}

impl Bad {
    fn of(e: &crate::codec::CodecError) -> Bad {
        match e {
            crate::codec::CodecError::Io(io) => Bad::Storage(io.to_string()),
            e => Bad::Damaged(e.to_string()),
        }
    }
}

/// Open, check, read to the end; the stored size and the verified plaintext digest.
fn open_and_check<F>(
    src: Box<dyn Read + Send>,
    keys: &Keyring,
    name: &str,
    check: F,
) -> std::result::Result<(u64, crate::codec::Digest), Bad>
where
    F: FnOnce(&mut dyn Read, &str) -> std::result::Result<(), String>,
{
    let count = Arc::new(AtomicU64::new(0));
    let counted = Counting { inner: src, count: count.clone() };
    let opened = OpenReader::new(counted, keys, name).map_err(|e| Bad::of(&e))?;
    let mut r = Recording { inner: opened, error: None };
    let checked = check(&mut r, name);
    // Read to the end, where the last frame and the whole-object digest are checked.
    let rest = checked.is_ok().then(|| drain(&mut r));
    // The envelope's error comes first: damage explains a short or garbled stream.
    if let Some(e) = r.error {
        return Err(e);
    }
    checked.map_err(Bad::Damaged)?;
    rest.transpose().map_err(Bad::Damaged)?;
    let digest = r.inner.digest().ok_or_else(|| Bad::Damaged("ended without its digest".into()))?;
    Ok((count.load(Ordering::Relaxed), digest))
}

/// Counts the stored bytes read.
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// Keeps the first read error, which a tar reader would wrap beyond recognition.
struct Recording<R> {
    inner: R,
    error: Option<Bad>,
}

impl<R: Read> Read for Recording<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|e| {
            if self.error.is_none() {
                self.error = Some(match crate::codec::CodecError::find_in(e) {
                    Some(c) => Bad::of(c),
                    None => Bad::Storage(e.to_string()),
                });
            }
        })
    }
}

fn drain(r: &mut dyn Read) -> std::result::Result<u64, String> {
    io::copy(r, &mut io::sink()).map_err(|e| e.to_string())
}

/// Every regular file of a tar archive against the manifest, nothing written.
fn check_tar(r: &mut dyn Read, _name: &str, prefix: &str, checker: &Checker) -> std::result::Result<(), String> {
    let mut archive = tar::Archive::new(r);
    let mut buf = vec![0u8; PIECE];
    let io = |e: io::Error| format!("not a readable tar archive: {e}");
    for entry in archive.entries().map_err(io)? {
        let mut entry = entry.map_err(io)?;
        if !matches!(entry.header().entry_type(), tar::EntryType::Regular | tar::EntryType::Continuous) {
            continue;
        }
        let path = entry.path().map_err(io)?.to_string_lossy().trim_start_matches("./").to_string();
        let key = format!("{prefix}{path}");
        let mut sum = checker.start(&key);
        let mut size = 0u64;
        loop {
            let n = entry.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            size += n as u64;
        }
        checker.finish(&key, size, sum).map_err(|m| format!("does not match the backup manifest: {m}"))?;
    }
    Ok(())
}

/// The plaintext of a small object (a manifest), or what is wrong with it.
async fn open_small(repo: &Repo, obj: &str) -> Result<std::result::Result<Vec<u8>, String>> {
    let raw = match repo.store.get_bytes(obj).await {
        Ok(raw) => raw,
        Err(crate::store::StoreError::NotFound(_)) => return Ok(Err("is missing".into())),
        Err(e) => return Err(e.into()),
    };
    let (keys, name) = (repo.keys.clone(), obj.to_string());
    tokio::task::spawn_blocking(move || crate::codec::open_to_vec(&raw, &keys, &name).map_err(|e| e.to_string()))
        .await
        .map_err(|e| Fail::new(Code::Internal, format!("object {obj}: opening it panicked: {e}")))
}

async fn verify_wal(repo: &Repo, backups: &[BackupInfo], req: &VerifyRequest, report: &mut VerifyReport) -> Result<()> {
    let seg = repo.identity.wal_segment_size;
    let listing = match timelines::survey(repo).await {
        Ok(s) => {
            let names: Vec<String> = s.listing.iter().map(|o| o.name.clone()).collect();
            let cov = wal_coverage(&names, seg);
            report.problems.extend(history_problems(&s.histories, seg));
            let live: Vec<u32> = s.timelines.live.iter().map(|l| l.tli).collect();
            report.problems.extend(chain_problems(backups, &live, &s.histories, &cov, seg));
            s.listing
        }
        Err(e) if e.code == Code::Integrity || e.code == Code::NotFound => {
            report.problems.push(problem("wal/", e.message));
            repo.store.list_meta("wal").await?
        }
        Err(e) => return Err(e),
    };
    let files: Vec<(String, u64, WalFile)> = listing
        .into_iter()
        .filter_map(|o| {
            let kind = WalFile::parse_stored(o.name.rsplit('/').next()?, seg).ok()?;
            Some((o.name, o.size, kind))
        })
        .collect();
    let names: Vec<&str> = files.iter().map(|(n, _, _)| n.as_str()).collect();
    let picked = sample(&names, req.sample, req.seed);
    let want =
        Expect { system_identifier: repo.identity.system_id(), seg_size: seg, pg_major: repo.identity.pg_major() };
    let mut jobs = Vec::new();
    for ((name, size, kind), pick) in files.into_iter().zip(picked) {
        if !pick {
            continue;
        }
        if matches!(kind, WalFile::History(_)) {
            report.history_files += 1;
        } else {
            report.wal_files += 1;
        }
        report.wal_bytes += size;
        jobs.push(open_object(repo, name, None, move |r, name| check_wal_file(r, name, &kind, &want)));
    }
    let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
    while let Some(r) = results.next().await {
        report.problems.extend(r?);
    }
    Ok(())
}

/// Open WAL objects in full and check them as `verify` does (the envelope, the first page
/// header against the repository's cluster); what is wrong with each, sorted.
pub async fn check_wal_objects(repo: &Repo, objs: Vec<String>) -> Result<Vec<Problem>> {
    let seg = repo.identity.wal_segment_size;
    let want =
        Expect { system_identifier: repo.identity.system_id(), seg_size: seg, pg_major: repo.identity.pg_major() };
    let mut jobs = Vec::new();
    for name in objs {
        let file = name.rsplit('/').next().unwrap_or_default();
        let Ok(kind) = WalFile::parse_stored(file, seg) else { continue };
        jobs.push(open_object(repo, name, None, move |r, name| check_wal_file(r, name, &kind, &want)));
    }
    let mut results = futures::stream::iter(jobs).buffer_unordered(PARALLEL);
    let mut out = Vec::new();
    while let Some(r) = results.next().await {
        out.extend(r?);
    }
    out.sort();
    Ok(out)
}

/// A WAL object's plaintext: a segment's first page header, a history file's text.
fn check_wal_file(r: &mut dyn Read, name: &str, kind: &WalFile, want: &Expect) -> std::result::Result<(), String> {
    let file = name.rsplit('/').next().unwrap_or(name);
    let mut head = Vec::with_capacity(64);
    r.take(64).read_to_end(&mut head).map_err(|e| e.to_string())?;
    match kind {
        WalFile::Segment(s) | WalFile::Partial(s) => {
            let len = head.len() as u64 + drain(r)?;
            walfile::check_segment(file, *s, &head, len, want)
        }
        // The receiver's copy grows up to a segment.
        WalFile::Streamed(s) => {
            let len = head.len() as u64 + drain(r)?;
            if len > want.seg_size {
                return Err(format!("{len} bytes, more than a segment"));
            }
            walfile::check_segment(file, *s, &head, want.seg_size, want)
        }
        WalFile::History(tli) => {
            r.take(1 << 20).read_to_end(&mut head).map_err(|e| e.to_string())?;
            walfile::check_history(file, *tli, &head)
        }
        WalFile::BackupLabel { .. } => {
            r.take(1 << 20).read_to_end(&mut head).map_err(|e| e.to_string())?;
            walfile::check_backup_label(file, &head)
        }
    }
}

/// History files against each other (pure): a child's history is its parent's plus the
/// entry for the switch to the child, and names only timelines below its own.
pub fn history_problems(histories: &BTreeMap<u32, Vec<HistoryEntry>>, seg: u64) -> Vec<Problem> {
    let mut out = Vec::new();
    for (tli, h) in histories {
        let name = layout::wal_object(&WalFile::History(*tli), seg);
        let Some((last, before)) = h.split_last() else {
            out.push(problem(&name, "names no parent timeline"));
            continue;
        };
        if last.parent_tli >= *tli {
            out.push(problem(&name, format!("names timeline {} as the parent of timeline {tli}", last.parent_tli)));
            continue;
        }
        let parent: &[HistoryEntry] = match last.parent_tli {
            1 => &[],
            p => match histories.get(&p) {
                Some(ph) => ph,
                None => {
                    out.push(problem(&name, format!("its parent timeline {p} has no history file")));
                    continue;
                }
            },
        };
        let same = before.len() == parent.len()
            && before.iter().zip(parent).all(|(a, b)| a.parent_tli == b.parent_tli && a.switchpoint == b.switchpoint);
        if !same {
            out.push(problem(
                &name,
                format!("does not continue the history of its parent timeline {}", last.parent_tli),
            ));
        }
    }
    out
}

/// Gaps in the WAL from each backup's start to the newest WAL of each live timeline it
/// leads to (pure). A missing segment is named once, with the first backup it cuts off.
pub fn chain_problems(
    backups: &[BackupInfo],
    live: &[u32],
    histories: &BTreeMap<u32, Vec<HistoryEntry>>,
    cov: &Coverage,
    seg: u64,
) -> Vec<Problem> {
    let mut missing: BTreeMap<SegmentId, String> = BTreeMap::new();
    let mut note = |s: SegmentId, why: String| {
        missing.entry(s).or_insert(why);
    };
    for b in backups {
        let (Ok(start), Ok(end)) = (SegmentId::parse(&b.start_wal, seg), SegmentId::parse(&b.end_wal, seg)) else {
            note(
                SegmentId { tli: 0, segno: 0 },
                format!("backup {}: its start or end segment is not a WAL name", b.id),
            );
            continue;
        };
        // The backup's own WAL, from its start to its end (on two timelines: both ends).
        let own =
            if start.tli == end.tli { vec![(start, end.segno)] } else { vec![(start, start.segno), (end, end.segno)] };
        for (from, to) in own {
            if let Some(m) = catalog::first_missing(cov, from.tli, from.segno, to) {
                note(
                    SegmentId { tli: from.tli, segno: m },
                    format!("missing: backup {} cannot be restored without it", b.id),
                );
            }
        }
        for &tli in live {
            let history = histories.get(&tli).map(Vec::as_slice).unwrap_or(&[]);
            let Ok(route) = wal_route(end, b.end(), tli, history, seg) else { continue };
            let newest = cov.get(&tli).and_then(|r| r.last()).map(|&(_, z)| z);
            for leg in route {
                let Some(last) = leg.last.or(newest) else { continue };
                if let Some(m) = catalog::first_missing(cov, leg.tli, leg.first, last) {
                    note(
                        SegmentId { tli: leg.tli, segno: m },
                        format!("missing: a gap in the WAL from backup {} to the newest WAL of timeline {tli}", b.id),
                    );
                }
            }
        }
    }
    missing
        .into_iter()
        .map(|(s, why)| match s.tli {
            0 => problem("backups/", why),
            _ => problem(&layout::wal_object(&WalFile::Segment(s), seg), why),
        })
        .collect()
}

/// Which of `names` to check (pure): all, or about `fraction` of them chosen by a hash of
/// the name and `seed`, never none when there are any.
pub fn sample(names: &[&str], fraction: Option<f64>, seed: u64) -> Vec<bool> {
    let Some(f) = fraction.filter(|f| *f < 1.0) else { return vec![true; names.len()] };
    let score = |n: &str| {
        let h = blake3::keyed_hash(&blake3::hash(&seed.to_le_bytes()).into(), n.as_bytes());
        u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes")) as f64 / u64::MAX as f64
    };
    let scores: Vec<f64> = names.iter().map(|n| score(n)).collect();
    let mut out: Vec<bool> = scores.iter().map(|s| *s < f).collect();
    if !out.contains(&true) {
        if let Some(i) = (0..scores.len()).min_by(|a, b| scores[*a].total_cmp(&scores[*b])) {
            out[i] = true;
        }
    }
    out
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
