//! `tidewal completions SHELL` and `tidewal man [--dir DIR]`: shell completions and manual
//! pages generated from the same clap definitions as `--help`, so they never drift from it.
//! Nothing is read: no configuration, no repository.

use std::path::PathBuf;

use clap::CommandFactory;

use crate::error::{Code, Fail, Result};

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write tidewal.1 and one page per verb (tidewal-backup.1, ...) into this directory
    /// instead of printing tidewal.1
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

pub fn completions(args: &CompletionArgs) -> Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "tidewal", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: &ManArgs) -> Result<()> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    // Names the verbs' pages tidewal-<verb> and hands them the global options.
    cmd.build();
    let page = |c: clap::Command| {
        clap_mangen::Man::new(c).source(format!("tidewal {}", env!("CARGO_PKG_VERSION"))).manual("tidewal")
    };
    let io = |e: std::io::Error| Fail::new(Code::Storage, format!("cannot write the manual: {e}"));
    let Some(dir) = &args.dir else {
        return page(cmd).render(&mut std::io::stdout()).map_err(io);
    };
    let failed = |e| io(e).context(dir.display());
    std::fs::create_dir_all(dir).map_err(failed)?;
    for verb in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        page(verb.clone()).generate_to(dir).map_err(failed)?;
    }
    page(cmd).generate_to(dir).map_err(failed)?;
    println!("wrote tidewal.1 and a page per verb into {}", dir.display());
    Ok(())
}
