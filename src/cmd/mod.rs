//! The command line: one file per verb. Each parses its arguments, hands plain values to the
//! operations layer (`crate::ops`) and prints the outcome; no logic lives here.

pub mod backup;
pub mod check;
pub mod copy;
pub mod daemon;
pub mod dump;
pub mod dump_restore;
pub mod fork;
pub mod init;
pub mod keygen;
pub mod list;
pub mod manual;
pub mod prune;
pub mod restore;
pub mod status;
pub mod verify;
pub mod wal_fetch;
pub mod wal_push;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{Flags, Settings};
use crate::error::Result;
use crate::repo::Repo;

const AFTER_HELP: &str = "\
Exit codes:
  0  success
  1  wal-fetch: the file is not in the repository (normal during recovery)
  2  bad command line or configuration
  3  the input file is not valid WAL (wrong size or header, another cluster's)
  4  repository conflict: a different object exists, another cluster's or uninitialised repository
  5  integrity failure: corrupt object or wrong key; verify found a problem
  6  storage unreachable or not writable (network, permissions, full disk)
  7  PostgreSQL unreachable or refused the request
  8  check found settings to fix
  9  no daemon answers on daemon.socket (status, backup --via-daemon)
 70  internal error (a bug), also every panic
wal-fetch reports every failure other than 1 as 128 + code (a panic: 198), because PostgreSQL
only stops recovery for exit codes above 125; any lower code would end recovery early.";

#[derive(Debug, Parser)]
#[command(
    name = "tidewal",
    version,
    about = "Continuous WAL archiving and point-in-time backup for PostgreSQL",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// Configuration file [default: /etc/tidewal/tidewal.toml, or TIDEWAL_CONFIG]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repository URL: file:///path or s3://bucket/prefix [env: TIDEWAL_REPO]
    #[arg(long, global = true, value_name = "URL")]
    pub repo: Option<String>,
    /// File holding the repository key (mode 0600) [env: TIDEWAL_KEY_FILE]
    #[arg(long, global = true, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// Read from repository N: 1 is the repository, 2 and up the [[repository.copy]] entries in
    /// order (list, restore, fork, verify, check, prune, copy, wal-fetch, dump-restore)
    #[arg(long, global = true, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub from_repo: Option<u16>,
    /// Log format on stderr
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// More log output (-v debug, -vv trace); TIDEWAL_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the repository for the cluster that the connection settings point at
    Init(init::Args),
    /// archive_command: store one WAL file; exits 0 only once it is durable in the repository
    #[command(name = "wal-push")]
    WalPush(wal_push::Args),
    /// restore_command: fetch one WAL file from the repository into PATH
    #[command(name = "wal-fetch")]
    WalFetch(wal_fetch::Args),
    /// Take a base backup over the replication protocol into the repository
    Backup(backup::Args),
    /// Restore to a point in time as an independent, promoted cluster on its own port
    Fork(fork::Args),
    /// Show the restorable window and the current lag, then backups and WAL per timeline with gaps
    #[command(alias = "info")]
    List(list::Args),
    /// Restore a base backup into a new data directory, set up to recover to a target
    Restore(restore::Args),
    /// Delete backups and WAL outside the retention window (print the plan with --dry-run)
    Prune(prune::Args),
    /// Check the server settings, the repository and the store, and print what to fix
    Check(check::Args),
    /// Open every backup and WAL object in full and check it; exit 5 naming what is damaged.
    /// With --restore-test: restore a backup into a scratch copy, start it, amcheck it
    Verify(verify::Args),
    /// Copy the repository once to a second store (another region), as stored, create-only
    Copy(copy::Args),
    /// Logical dumps (pg_dump, and the globals from pg_dumpall) into the repository
    Dump(dump::Args),
    /// Restore a database (or some tables) from a dump with pg_restore
    #[command(name = "dump-restore")]
    DumpRestore(dump_restore::Args),
    /// Run the agent: archive ahead of PostgreSQL, daily base backups, retention, metrics
    Daemon(daemon::Args),
    /// Ask the running daemon (daemon.socket) for its state: health, lag, last backup, verify
    /// and restore test, tasks
    Status(status::Args),
    /// Print a new random repository key (or write it to a file with mode 0600)
    Keygen(keygen::Args),
    /// Print shell completions (bash, zsh, fish, elvish, powershell) for tidewal
    Completions(manual::CompletionArgs),
    /// Print the manual page, or write one per verb into a directory (--dir)
    Man(manual::ManArgs),
}

impl Cli {
    pub fn flags(&self) -> Flags {
        Flags { config: self.config.clone(), repo: self.repo.clone(), key_file: self.key_file.clone() }
    }
}

pub fn load_settings(cli: &Cli) -> Result<Settings> {
    Settings::load(&cli.flags(), &|k| std::env::var(k).ok())
}

/// Open the configured, initialised repository.
pub async fn open_repo(settings: &Settings) -> Result<Repo> {
    settings.open_repo().await
}

pub async fn run(cli: Cli) -> Result<()> {
    // These read no configuration.
    match &cli.command {
        Command::Keygen(a) => return keygen::run(a),
        Command::Completions(a) => return manual::completions(a),
        Command::Man(a) => return manual::man(a),
        _ => {}
    }
    let settings = load_settings(&cli)?;
    let settings = match cli.from_repo {
        None => settings,
        Some(n) => {
            if let Some(verb) = writes_its_repository(&cli.command) {
                return Err(crate::error::Fail::new(
                    crate::error::Code::Usage,
                    format!("--from-repo does not apply to {verb}: it writes to the repository, and copies are the daemon's to write"),
                ));
            }
            settings.for_repo(n.into())?
        }
    };
    match &cli.command {
        Command::Init(a) => init::run(&settings, a).await,
        Command::WalPush(a) => wal_push::run(&settings, a).await,
        Command::WalFetch(a) => wal_fetch::run(&settings, a).await,
        Command::Check(a) => check::run(&settings, a).await,
        Command::Backup(a) => backup::run(&settings, a).await,
        Command::Restore(a) => restore::run(&settings, a).await,
        Command::List(a) => list::run(&settings, a).await,
        Command::Fork(a) => fork::run(&settings, a).await,
        Command::Prune(a) => prune::run(&settings, a).await,
        Command::Verify(a) => verify::run(&settings, a).await,
        Command::Copy(a) => copy::run(&settings, a).await,
        Command::Dump(a) => dump::run(&settings, a).await,
        Command::DumpRestore(a) => dump_restore::run(&settings, a).await,
        Command::Daemon(a) => daemon::run(&settings, a, || load_settings(&cli)).await,
        Command::Status(a) => status::run(&settings, a).await,
        Command::Keygen(_) | Command::Completions(_) | Command::Man(_) => unreachable!("handled above"),
    }
}

/// The verbs that write backups or WAL (or serve the daemon): never aimed at a copy.
fn writes_its_repository(c: &Command) -> Option<&'static str> {
    match c {
        Command::Init(_) => Some("init"),
        Command::WalPush(_) => Some("wal-push"),
        Command::Backup(_) => Some("backup"),
        Command::Dump(_) => Some("dump"),
        Command::Daemon(_) => Some("daemon"),
        Command::Status(_) => Some("status"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
