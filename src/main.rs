use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tidewal::cmd::{Cli, Command, LogFormat};
use tidewal::error::Code;

fn init_logging(cli: &Cli) {
    let default = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (_, 0) => "info",
        (_, 1) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEWAL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,tidewal={default}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal());
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.without_time().init(),
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // PostgreSQL stops recovery only for restore_command exit codes above 125.
    let is_fetch = args.iter().skip(1).any(|a| a == "wal-fetch");
    let exit = |code: u8| ExitCode::from(if is_fetch && code > 1 { 128 + code } else { code });
    let cli = match Cli::try_parse_from(&args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit(Code::Usage as u8) } else { ExitCode::SUCCESS };
        }
    };
    init_logging(&cli);
    let quiet_not_found = matches!(cli.command, Command::WalFetch(_));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidewal: cannot start: {e}");
            return exit(Code::Internal as u8);
        }
    };
    match runtime.block_on(tidewal::cmd::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if quiet_not_found && f.code == Code::NotFound {
                tracing::debug!("{f}");
            } else {
                eprintln!("tidewal: error: {f}");
            }
            exit(f.code as u8)
        }
    }
}
