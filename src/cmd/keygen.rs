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
                Fail::new(
                    Code::Usage,
                    format!("cannot create key file {}: {e} (an existing key is never overwritten)", p.display()),
                )
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
