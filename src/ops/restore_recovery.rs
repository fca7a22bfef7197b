//! The recovery settings a restore leaves in the data directory: `restore_command` reading
//! the checked repository, the target, and what the backup carried commented out.

use std::path::Path;
use std::time::SystemTime;

use super::{local, Action, RestoreRequest, FETCH_CONFIG};
use crate::error::Result;

/// Write the recovery settings; the settings that came with the backup and were commented out.
pub(super) fn write_recovery_config(args: &RestoreRequest, target_time: Option<SystemTime>) -> Result<Vec<String>> {
    use crate::ops::recovery_conf::{block, clean, quote};
    // Recovery reads exactly the repository this restore checked (see FETCH_CONFIG).
    let fetch_config = args.to.join(FETCH_CONFIG);
    write_private(&fetch_config, &args.fetch_config)?;
    let command = format!(
        "{} --config {} wal-fetch %f %p",
        shell_word(&args.exe.display().to_string()),
        shell_word(&fetch_config.display().to_string())
    );
    let mut lines = vec![format!("restore_command = {}", quote(&command))];
    // The file may name store credentials: it goes when recovery ends, before anything can
    // copy the data directory (a base backup, a standby's clone).
    let forget = format!("rm -f {}", shell_word(&fetch_config.display().to_string()));
    lines.push(format!("recovery_end_command = {}", quote(&forget)));
    if let Some(t) = target_time {
        // PostgreSQL wants "YYYY-MM-DD HH:MM:SS.ffffff+00" here, not the RFC 3339 'T'/'Z' form.
        let t = humantime::format_rfc3339_micros(t).to_string().replace('T', " ").replace('Z', "+00");
        lines.push(format!("recovery_target_time = {}", quote(&t)));
    }
    if let Some(l) = args.target_lsn {
        lines.push(format!("recovery_target_lsn = '{l}'"));
    }
    if let Some(x) = &args.target_xid {
        lines.push(format!("recovery_target_xid = {}", quote(x)));
    }
    if let Some(n) = &args.target_name {
        lines.push(format!("recovery_target_name = {}", quote(n)));
    }
    if args.immediate {
        lines.push("recovery_target = 'immediate'".into());
    }
    if let Some(a) = args.target_action {
        let a = match a {
            Action::Pause => "pause",
            Action::Promote => "promote",
            Action::Shutdown => "shutdown",
        };
        lines.push(format!("recovery_target_action = '{a}'"));
    }
    if let Some(t) = &args.target_timeline {
        lines.push(format!("recovery_target_timeline = {}", quote(t)));
    }
    let mut added = Vec::new();
    if let Some(p) = args.port {
        lines.push(format!("port = {p}"));
        added.push(("port", p.to_string()));
    }
    let what = if args.as_primary {
        "the repository's new primary (--as-primary): archiving as in the backup"
    } else {
        lines.push("archive_mode = off".into());
        added.push(("archive_mode", "off".into()));
        "a copy: archiving off, the repository is only read"
    };
    // What an earlier restore or fork left in the backup, and recovery settings that came
    // with it, are commented out first: a later restore must not inherit them.
    let mut removed = Vec::new();
    for (file, ours) in [("postgresql.conf", None), ("postgresql.auto.conf", Some(block(what, &lines, &added)))] {
        let path = args.to.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && ours.is_none() => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(local(&path, e)),
        };
        let cleaned = clean(&text);
        if cleaned.removed.is_empty() && ours.is_none() {
            continue;
        }
        let mut text = cleaned.text;
        if let Some(ours) = ours {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push('\n');
            text.push_str(&ours);
        }
        replace_file(&path, &text, 0o600)?;
        removed.extend(cleaned.removed.into_iter().map(|n| format!("{n} ({file})")));
    }
    removed.dedup();
    // A backup taken from a standby carries its standby.signal, which would make the copy
    // wait for a primary forever instead of recovering to the target.
    let standby = args.to.join("standby.signal");
    if standby.exists() {
        std::fs::remove_file(&standby).map_err(|e| local(&standby, e))?;
        tracing::info!("removed standby.signal (the backup was taken from a standby)");
    }
    replace_file(&args.to.join("recovery.signal"), "", 0o600)?;
    Ok(removed)
}

/// A file only its owner reads (it may name store credentials).
fn write_private(path: &Path, text: &str) -> Result<()> {
    replace_file(path, text, 0o600)
}

/// Write `path` anew through a temporary file and a rename, never through what is there: a
/// backup may carry a symbolic link under that name (a superuser on the source can make
/// one), and following it would let a restore run by root overwrite any file on this host.
fn replace_file(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_file_name(format!(
        ".{}.tidewal-tmp",
        path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
    ));
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(local(&tmp, e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)
        .map_err(|e| local(&tmp, e))?;
    f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).map_err(|e| local(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| local(path, e))
}

/// `w` as one word for the shell that runs restore_command.
fn shell_word(w: &str) -> String {
    if !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+:=,@".contains(c)) {
        w.to_string()
    } else {
        format!("'{}'", w.replace('\'', "'\\''"))
    }
}
