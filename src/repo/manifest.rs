//! PostgreSQL's backup manifest: what every restored file must be. Files are checked as they
//! are written (size and checksum, CRC32C or SHA-256), so nothing is read back from disk,
//! and at the end every file the manifest lists must have been seen.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
pub struct Manifest {
    /// 1 up to PostgreSQL 16; 2 from 17 on, which adds `System-Identifier`.
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version", default)]
    pub version: Option<u32>,
    #[serde(rename = "System-Identifier", default)]
    pub system_identifier: Option<u64>,
    #[serde(rename = "Files")]
    pub files: Vec<ManifestFile>,
}

impl Manifest {
    /// The manifest must be one tidewal can read, and (from version 2 on, which names the
    /// database system) of the repository's cluster.
    pub fn for_system(self, system_identifier: u64) -> Result<Manifest, String> {
        if let Some(v) = self.version.filter(|v| !(1..=2).contains(v)) {
            return Err(format!("backup_manifest version {v} is not supported (1 and 2 are)"));
        }
        match self.system_identifier {
            Some(id) if id != system_identifier => {
                Err(format!("backup_manifest is for database system {id}, not this repository's {system_identifier}"))
            }
            _ => Ok(self),
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ManifestFile {
    #[serde(rename = "Path")]
    pub path: Option<String>,
    #[serde(rename = "Size")]
    pub size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    pub algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    pub checksum: Option<String>,
}

pub fn parse(text: &[u8]) -> Result<Manifest, String> {
    serde_json::from_slice(text).map_err(|e| format!("backup_manifest is not a valid manifest: {e}"))
}

/// The checker of manifest `text`, which must be of database system `system_identifier`.
pub fn checker(text: &[u8], system_identifier: u64) -> Result<Checker, String> {
    parse(text).and_then(|m| m.for_system(system_identifier)).and_then(Checker::new)
}

/// A running checksum in one of the manifest's algorithms.
pub enum FileSum {
    None,
    Crc32c(u32),
    Sha256(Box<Sha256>),
}

impl FileSum {
    pub fn update(&mut self, data: &[u8]) {
        match self {
            FileSum::None => {}
            FileSum::Crc32c(c) => *c = crc32c::crc32c_append(*c, data),
            FileSum::Sha256(h) => h.update(data),
        }
    }

    /// Hex as PostgreSQL writes it (CRC32C: the value's bytes in little-endian order).
    pub fn hex(self) -> Option<String> {
        match self {
            FileSum::None => None,
            FileSum::Crc32c(c) => Some(hex::encode(c.to_le_bytes())),
            FileSum::Sha256(h) => Some(hex::encode(h.finalize())),
        }
    }
}

/// Checks files against a manifest; shared by the unpackers of all archives.
pub struct Checker {
    files: HashMap<String, ManifestFile>,
    seen: Mutex<HashSet<String>>,
    /// Files the manifest lists whole that arrived as tidewal's `INCREMENTAL.<name>`: only
    /// the file rebuilt from the chain can be checked.
    rebuilt: Mutex<Vec<String>>,
}

impl Checker {
    pub fn new(manifest: Manifest) -> Result<Checker, String> {
        let mut files = HashMap::new();
        for f in manifest.files {
            match f.algorithm.as_deref() {
                None | Some("NONE") | Some("CRC32C") | Some("SHA256") => {}
                Some(other) => {
                    return Err(format!(
                        "{}: manifest checksum {other} is not supported (tidewal backups use CRC32C or SHA256)",
                        f.path.as_deref().unwrap_or("?")
                    ))
                }
            }
            if let Some(p) = f.path.clone() {
                files.insert(p, f);
            }
        }
        Ok(Checker { files, seen: Mutex::new(HashSet::new()), rebuilt: Mutex::new(Vec::new()) })
    }

    /// The checksum to compute for `path` while it is written.
    pub fn start(&self, path: &str) -> FileSum {
        match self.files.get(path).and_then(|f| f.algorithm.as_deref()) {
            Some("CRC32C") => FileSum::Crc32c(0),
            Some("SHA256") => FileSum::Sha256(Box::default()),
            _ => FileSum::None,
        }
    }

    /// A file was written in full: it must be what the manifest says. Files the manifest does
    /// not list (there are none in a PostgreSQL backup) pass.
    pub fn finish(&self, path: &str, size: u64, sum: FileSum) -> Result<(), String> {
        let Some(f) = self.files.get(path) else {
            // A client-side incremental backup stores `dir/INCREMENTAL.name` for the
            // manifest's `dir/name` (a server-side one lists the incremental file itself).
            if let Some(target) = stands_for(path).filter(|t| self.files.contains_key(t)) {
                lock(&self.seen).insert(target.clone());
                lock(&self.rebuilt).push(target);
            }
            return Ok(());
        };
        if size != f.size {
            return Err(format!("{path}: {size} bytes, the manifest says {}", f.size));
        }
        if let (Some(got), Some(want)) = (sum.hex(), f.checksum.as_deref()) {
            if !got.eq_ignore_ascii_case(want) {
                let algo = f.algorithm.as_deref().unwrap_or("checksum");
                return Err(format!("{path}: {algo} {got} does not match the manifest's {want}"));
            }
        }
        lock(&self.seen).insert(path.to_string());
        Ok(())
    }

    /// Files under `prefix` are not restored on purpose (a tablespace dropped since an
    /// older member of a chain): they count as seen.
    pub fn leave_out(&self, prefix: &str) {
        lock(&self.seen).extend(self.files.keys().filter(|k| k.starts_with(prefix)).cloned());
    }

    /// The size and checksum the manifest gives `path`.
    pub fn entry(&self, path: &str) -> Option<(u64, Option<&str>)> {
        self.files.get(path).map(|f| (f.size, f.checksum.as_deref()))
    }

    /// A file that arrived as an increment need not be read back: it was rebuilt whole from
    /// a copy that another manifest with the same size and checksum vouched for.
    pub fn vouched(&self, path: &str) {
        lock(&self.rebuilt).retain(|p| p != path);
    }

    /// The files that arrived as increments, to check once the chain has rebuilt them; each
    /// is given once.
    pub fn take_rebuilt(&self) -> Vec<String> {
        std::mem::take(&mut *lock(&self.rebuilt))
    }

    /// A rebuilt file, read back in full, against the manifest.
    pub fn check_rebuilt(&self, path: &str, file: &mut impl std::io::Read) -> Result<(), String> {
        let mut sum = self.start(path);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(|e| format!("{path}: {e}"))?;
            if n == 0 {
                break;
            }
            sum.update(&buf[..n]);
            size += n as u64;
        }
        self.finish(path, size, sum)
    }

    /// After every archive: nothing the manifest lists may be missing. Returns the file count.
    pub fn complete(&self) -> Result<usize, String> {
        let seen = lock(&self.seen);
        let mut missing: Vec<&String> = self.files.keys().filter(|p| !seen.contains(*p)).collect();
        missing.sort();
        match missing.first() {
            Some(p) => Err(format!("{p}: listed in the manifest but not in the backup ({} missing)", missing.len())),
            None => Ok(seen.len()),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `dir/INCREMENTAL.name` → `dir/name` (pure).
fn stands_for(path: &str) -> Option<String> {
    let (dir, name) = path.rsplit_once('/')?;
    let name = name.strip_prefix(crate::pg::incremental::PREFIX).filter(|n| !n.is_empty())?;
    Some(format!("{dir}/{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(algo: &str, sum: &str) -> Manifest {
        let text = format!(
            r#"{{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [
                {{"Path": "PG_VERSION", "Size": 3, "Last-Modified": "x", "Checksum-Algorithm": "{algo}", "Checksum": "{sum}"}},
                {{"Path": "global/pg_control", "Size": 1, "Last-Modified": "x", "Checksum-Algorithm": "NONE"}}]}}"#
        );
        parse(text.as_bytes()).unwrap()
    }

    fn feed(c: &Checker, path: &str, data: &[u8]) -> Result<(), String> {
        let mut sum = c.start(path);
        for piece in data.chunks(2) {
            sum.update(piece);
        }
        c.finish(path, data.len() as u64, sum)
    }

    #[test]
    fn checks_crc32c_and_sha256_as_postgres_writes_them() {
        // PostgreSQL's CRC32C of "15\n", as its manifest prints it.
        let crc = hex::encode(crc32c::crc32c(b"15\n").to_le_bytes());
        let sha = hex::encode(Sha256::digest(b"15\n"));
        for (algo, sum) in [("CRC32C", crc), ("SHA256", sha)] {
            let c = Checker::new(manifest(algo, &sum)).unwrap();
            assert!(feed(&c, "PG_VERSION", b"16\n").unwrap_err().contains("does not match"), "{algo}");
            assert!(feed(&c, "PG_VERSION", b"15\n\n").unwrap_err().contains("4 bytes"));
            feed(&c, "PG_VERSION", b"15\n").unwrap();
            assert!(c.complete().unwrap_err().contains("global/pg_control"));
            feed(&c, "global/pg_control", b"x").unwrap();
            feed(&c, "not/listed", b"anything").unwrap();
            assert_eq!(c.complete().unwrap(), 2);
        }
        let bad = Checker::new(manifest("SHA512", "00"));
        assert!(bad.err().unwrap().contains("SHA512"));
    }

    #[test]
    fn an_increment_stands_for_its_file_until_the_file_is_rebuilt() {
        let crc = hex::encode(crc32c::crc32c(b"15\n").to_le_bytes());
        let text = format!(
            r#"{{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [
                {{"Path": "base/5/1", "Size": 3, "Last-Modified": "x", "Checksum-Algorithm": "CRC32C", "Checksum": "{crc}"}}]}}"#
        );
        let c = Checker::new(parse(text.as_bytes()).unwrap()).unwrap();
        feed(&c, "base/5/INCREMENTAL.1", b"anything").unwrap();
        feed(&c, "base/5/INCREMENTAL.2", b"not listed").unwrap();
        assert_eq!(c.complete().unwrap(), 1);
        assert_eq!(c.entry("base/5/1"), Some((3, Some(crc.as_str()))));
        c.vouched("base/5/2");
        assert_eq!(c.take_rebuilt(), ["base/5/1"]);
        assert!(c.take_rebuilt().is_empty());
        feed(&c, "base/5/INCREMENTAL.1", b"again").unwrap();
        c.vouched("base/5/1");
        assert!(c.take_rebuilt().is_empty(), "vouched for by another manifest");
        assert!(c.check_rebuilt("base/5/1", &mut &b"16\n"[..]).unwrap_err().contains("does not match"));
        let unseen = Checker::new(parse(text.as_bytes()).unwrap()).unwrap();
        assert!(unseen.complete().is_err());
        unseen.leave_out("base/5/");
        assert_eq!(unseen.complete().unwrap(), 1);
        c.check_rebuilt("base/5/1", &mut &b"15\n"[..]).unwrap();
    }

    #[test]
    fn version_2_names_the_system() {
        let v2 = |version: u32, id: &str| {
            let text = format!(
                r#"{{"PostgreSQL-Backup-Manifest-Version": {version}, "System-Identifier": {id}, "Files": [],
                    "WAL-Ranges": [], "Manifest-Checksum": "00"}}"#
            );
            parse(text.as_bytes()).unwrap()
        };
        // Above i64::MAX: system identifiers use all 64 bits.
        let m = v2(2, "17300000000000000001").for_system(17_300_000_000_000_000_001).unwrap();
        assert_eq!((m.version, m.system_identifier), (Some(2), Some(17_300_000_000_000_000_001)));
        let e = v2(2, "7300000000000000002").for_system(7_300_000_000_000_000_001).unwrap_err();
        assert!(e.contains("database system 7300000000000000002") && e.contains("7300000000000000001"), "{e}");
        assert!(v2(3, "1").for_system(1).unwrap_err().contains("version 3 is not supported"));
        // Version 1 (PostgreSQL 15 and 16) names no system.
        manifest("NONE", "").for_system(1).unwrap();
    }

    #[test]
    fn crc32c_matches_a_known_vector() {
        // RFC 3720's test vector: 32 bytes of zeros.
        assert_eq!(crc32c::crc32c(&[0u8; 32]), 0x8a9136aa);
    }
}
