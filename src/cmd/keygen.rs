//! `tidewal keygen`: make a repository key.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use crate::codec::Key;
use crate::error::{Code, Fail, Result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write the key to this file (created with mode 0600, never overwritten) instead of stdout
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let text = Key::generate();
    let id = Key::from_text(&text, "new key").map_err(|e| Fail::new(Code::Internal, e))?.id_hex();
    match &args.output {
        None => println!("{text}"),
        Some(p) => {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(p).map_err(|e| {
                let hint = match e.kind() {
                    std::io::ErrorKind::AlreadyExists => " (an existing key is never overwritten)".to_string(),
                    std::io::ErrorKind::NotFound => {
                        let dir = p.parent().map(|d| d.display().to_string()).unwrap_or_default();
                        format!(" (make the directory first: install -d -o postgres -m 0750 {dir})")
                    }
                    _ => String::new(),
                };
                Fail::new(Code::Usage, format!("cannot create key file {}: {e}{hint}", p.display()))
            })?;
            writeln!(f, "{text}")
                .and_then(|_| f.sync_all())
                .map_err(|e| Fail::new(Code::Storage, format!("cannot write key file {}: {e}", p.display())))?;
            eprintln!(
                "wrote key {id} to {}: keep a copy outside this machine, without it the backups cannot be read",
                p.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_or_an_existing_key_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let missing = Args { output: Some(dir.path().join("etc/tidewal/tidewal.key")) };
        let e = run(&missing).unwrap_err();
        assert!(e.message.contains("make the directory first") && e.message.contains("etc/tidewal"), "{e}");
        assert!(!e.message.contains("never overwritten"), "{e}");
        let file = Args { output: Some(dir.path().join("k")) };
        run(&file).unwrap();
        let e = run(&file).unwrap_err();
        assert!(e.message.contains("an existing key is never overwritten"), "{e}");
    }
}
