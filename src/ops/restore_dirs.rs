//! The directories a restore writes into: refused when they hold a running cluster,
//! another cluster's data, or anything else unless `--force`; emptied for `--force`.

use std::path::{Path, PathBuf};

use super::local;
use crate::error::{Code, Fail, Result};
use crate::repo::catalog::BackupInfo;

/// Never write into a running cluster; into a non-empty directory only with --force.
pub(super) fn check_target_dir(dir: &Path, force: bool, what: &str) -> Result<()> {
    if let Ok(pid) = std::fs::read_to_string(dir.join("postmaster.pid")) {
        let alive = pid
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
            .is_some_and(|p| unsafe { libc::kill(p, 0) } == 0);
        if alive {
            return Err(Fail::new(
                Code::Conflict,
                format!("{what}{} holds a running cluster: stop it first", dir.display()),
            ));
        }
    }
    let non_empty = std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false);
    if non_empty && !force {
        return Err(Fail::new(
            Code::Conflict,
            format!(
                "{what}{} is not empty: restore into an empty directory{}, or pass --force to overwrite",
                dir.display(),
                if what.is_empty() { "" } else { " (--tablespace-map OID=DIR)" }
            ),
        ));
    }
    Ok(())
}

/// --force replaces a data directory of the repository's own cluster only: another
/// cluster's (a wrong configuration) is refused rather than destroyed.
pub(super) fn refuse_other_cluster(dir: &Path, system_id: u64) -> Result<()> {
    let mut head = [0u8; 8];
    let control = dir.join("global").join("pg_control");
    let Ok(mut f) = std::fs::File::open(&control) else { return Ok(()) };
    std::io::Read::read_exact(&mut f, &mut head).map_err(|e| local(&control, e))?;
    let theirs = u64::from_le_bytes(head);
    if theirs != system_id {
        return Err(Fail::new(
            Code::Conflict,
            format!(
                "{} holds database system {theirs}, but the repository belongs to system {system_id}: --force only replaces its own cluster's data directory; empty the directory yourself if you mean it",
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// --force over a data directory: empty it, so nothing of an earlier attempt (WAL, history
/// files, the prefetch spool, files the backup does not have) survives. Only a directory
/// that holds a data directory (PG_VERSION) or an interrupted restore (backup_manifest,
/// written first) is emptied; anything else is refused rather than deleted.
pub(super) fn clear_data_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let entries: Vec<_> = entries.flatten().collect();
    if entries.is_empty() {
        return Ok(());
    }
    if !dir.join("PG_VERSION").exists() && !dir.join("backup_manifest").exists() {
        return Err(Fail::new(
            Code::Conflict,
            format!(
                "{} is not a PostgreSQL data directory: --force only replaces one; empty the directory yourself",
                dir.display()
            ),
        ));
    }
    entries.iter().try_for_each(|e| remove_entry(&e.path()))
}

/// --force over a tablespace directory: remove PostgreSQL's per-version directories (PG_*),
/// which the backup brings back; anything else there is left alone.
/// Where the data directory's `pg_tblspc` links point (its tablespaces), before it is emptied.
pub(super) fn tablespace_links(data: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(data.join("pg_tblspc")) else { return Vec::new() };
    entries.flatten().filter_map(|e| std::fs::read_link(e.path()).ok()).collect()
}

pub(super) fn clear_tablespace_dir(dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("PG_"))
        .try_for_each(|e| remove_entry(&e.path()))
}

/// Remove a file, a link (not what it points to) or a directory tree.
fn remove_entry(p: &Path) -> Result<()> {
    let is_dir = std::fs::symlink_metadata(p).map(|m| m.is_dir()).map_err(|e| local(p, e))?;
    let r = if is_dir { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
    r.map_err(|e| local(p, e))
}

/// The free space where `to` goes must hold at least the backup's stored size (what it
/// unpacks to is larger still; this catches only what is sure to fail).
pub(super) fn check_space(info: &BackupInfo, to: &Path) -> Result<()> {
    let need: u64 = info.objects.iter().map(|o| o.stored_bytes).sum();
    let Some(dir) = to.ancestors().find(|d| d.exists()) else { return Ok(()) };
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else { return Ok(()) };
    // SAFETY: statvfs fills the zeroed struct it is given; the path is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Ok(());
    }
    let free = st.f_bavail as u64 * st.f_frsize as u64;
    if free < need {
        return Err(Fail::new(
            Code::Storage,
            format!(
                "{} has {} free, less than backup {} takes stored ({}): free space or choose another directory",
                dir.display(),
                crate::progress::human_size(free),
                info.id,
                crate::progress::human_size(need)
            ),
        ));
    }
    Ok(())
}
