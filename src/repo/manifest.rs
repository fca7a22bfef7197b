//! PostgreSQL's backup manifest: parse it and check restored files against it.

use std::io::Read;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

#[derive(Debug, Deserialize)]
pub struct Manifest {
    #[serde(rename = "Files")]
    pub files: Vec<ManifestFile>,
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

/// Check every file of the manifest under `dir`: present, same size, same SHA-256.
/// Returns how many files were checked.
pub fn verify(manifest: &Manifest, dir: &Path) -> Result<usize, String> {
    let mut checked = 0;
    for f in &manifest.files {
        let Some(rel) = &f.path else { continue };
        let path = dir.join(rel);
        let meta = std::fs::metadata(&path).map_err(|e| format!("{rel}: listed in the manifest but {e}"))?;
        if meta.len() != f.size {
            return Err(format!("{rel}: {} bytes, the manifest says {}", meta.len(), f.size));
        }
        match (f.algorithm.as_deref(), f.checksum.as_deref()) {
            (Some("SHA256"), Some(want)) => {
                let mut h = Sha256::new();
                let mut file = std::fs::File::open(&path).map_err(|e| format!("{rel}: {e}"))?;
                let mut buf = vec![0u8; 256 * 1024];
                loop {
                    let n = file.read(&mut buf).map_err(|e| format!("{rel}: {e}"))?;
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                let got = hex::encode(h.finalize());
                if !got.eq_ignore_ascii_case(want) {
                    return Err(format!("{rel}: SHA-256 {got} does not match the manifest's {want}"));
                }
            }
            (None | Some("NONE"), _) => {}
            (Some(other), _) => {
                return Err(format!("{rel}: manifest checksum {other} is not supported (tidewal backups use SHA256)"))
            }
        }
        checked += 1;
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        let sum = hex::encode(Sha256::digest(b"15\n"));
        let text = format!(
            r#"{{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [{{"Path": "PG_VERSION", "Size": 3, "Last-Modified": "x", "Checksum-Algorithm": "SHA256", "Checksum": "{sum}"}}]}}"#
        );
        let m = parse(text.as_bytes()).unwrap();
        assert_eq!(verify(&m, dir.path()).unwrap(), 1);
        std::fs::write(dir.path().join("PG_VERSION"), "16\n").unwrap();
        assert!(verify(&m, dir.path()).unwrap_err().contains("does not match"));
        std::fs::remove_file(dir.path().join("PG_VERSION")).unwrap();
        assert!(verify(&m, dir.path()).unwrap_err().contains("listed in the manifest"));
    }
}
