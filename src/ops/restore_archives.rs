//! A backup's archives: where each goes, and unpacking one through the manifest check.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Code, Fail, Result};
use crate::progress::Progress;
use crate::repo::catalog::BackupInfo;
use crate::repo::manifest;
pub(super) use crate::repo::unpack::Layer;

/// One archive of a backup and where it goes.
pub(super) struct Archive {
    pub obj: String,
    pub stored_bytes: u64,
    dest: PathBuf,
    /// Its files' paths in the manifest start with this.
    prefix: String,
}

/// The backup's archives: `base.tar` into the data directory, each tablespace's into its
/// destination.
pub(super) fn archives(info: &BackupInfo, to: &Path, spaces: &[(u32, PathBuf)]) -> Result<Vec<Archive>> {
    archives_of(info, to, spaces, false)
}

/// An older member of a chain's archives: a tablespace the restored (newest) backup does
/// not have was dropped since, and nothing of it is needed; its files are taken off the
/// member's manifest check.
pub(super) fn older_archives(
    info: &BackupInfo,
    to: &Path,
    spaces: &[(u32, PathBuf)],
    checker: &manifest::Checker,
) -> Result<Vec<Archive>> {
    for o in &info.objects {
        let file = o.name.rsplit('/').next().unwrap_or_default();
        if let Some(oid) = file.strip_suffix(".tar").filter(|&f| f != "base") {
            if !spaces.iter().any(|(s, _)| s.to_string() == oid) {
                tracing::info!("backup {}: tablespace {oid} was dropped since, not restored", info.id);
                checker.leave_out(&format!("pg_tblspc/{oid}/"));
            }
        }
    }
    archives_of(info, to, spaces, true)
}

fn archives_of(info: &BackupInfo, to: &Path, spaces: &[(u32, PathBuf)], older: bool) -> Result<Vec<Archive>> {
    let mut out = Vec::new();
    for obj in &info.objects {
        let file = obj.name.rsplit('/').next().unwrap_or_default();
        let (dest, prefix) = if file == "base.tar" {
            (to.to_path_buf(), String::new())
        } else if let Some(oid) = file.strip_suffix(".tar") {
            let dir = match spaces.iter().find(|(o, _)| o.to_string() == oid) {
                Some((_, d)) => d.clone(),
                None if older => continue,
                None => {
                    return Err(Fail::new(
                        Code::Integrity,
                        format!("backup {} has {oid}.tar but no such tablespace", info.id),
                    ))
                }
            };
            (dir, format!("pg_tblspc/{oid}/"))
        } else {
            continue;
        };
        out.push(Archive { obj: obj.name.clone(), stored_bytes: obj.stored_bytes, dest, prefix });
    }
    Ok(out)
}

pub(super) async fn unpack(
    keys: crate::codec::Keyring,
    a: Archive,
    reader: Box<dyn std::io::Read + Send>,
    checker: Arc<manifest::Checker>,
    layer: Layer,
    progress: Progress,
) -> Result<()> {
    tokio::task::spawn_blocking(move || {
        crate::repo::unpack::unpack(reader, keys, &a.obj, &a.dest, &a.prefix, checker, layer, move |n| progress.add(n))
    })
    .await
    .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
}
