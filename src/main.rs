use std::io::IsTerminal;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tidewal::cmd::{Cli, Command, LogFormat};
use tidewal::error::{exit_status, Code, Fail};

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
    // Before anything else can panic: a panic is a hard failure, never exit code 101.
    tidewal::error::install_panic_hook(is_fetch);
    let exit = |code: Code| ExitCode::from(exit_status(code, is_fetch));
    let parsed = Cli::command().try_get_matches_from(&args).and_then(|m| {
        let verb = m.subcommand_name().unwrap_or_default().to_string();
        Cli::from_arg_matches(&m).map(|c| (c, verb)).map_err(|e| e.format(&mut Cli::command()))
    });
    let (cli, verb) = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { exit(Code::Usage) } else { ExitCode::SUCCESS };
        }
    };
    init_logging(&cli);
    let quiet_not_found = matches!(cli.command, Command::WalFetch(_));
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tidewal: cannot start: {e}");
            return exit(Code::Internal);
        }
    };
    let outcome = runtime.block_on(async {
        test_panic(&verb).await?;
        tidewal::cmd::run(cli).await
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if quiet_not_found && f.code == Code::NotFound {
                tracing::debug!("{f}");
            } else {
                // Messages may quote a connection string or a URL: no credentials on stderr.
                eprintln!("tidewal: error: {}", tidewal::redact::text(&f.to_string()));
            }
            exit(f.code)
        }
    }
}

/// Test hook, for the tests only: `TIDEWAL_TEST_PANIC=<verb>` makes that verb panic on the main
/// thread, as a bug would; `<verb>:worker` panics in a runtime task whose JoinError is then
/// taken for "not found", as careless code might (the panic hook must exit first). The daemon's
/// tasks have their own (`daemon-<task>`, in the supervisor).
async fn test_panic(verb: &str) -> Result<(), Fail> {
    let Some(want) = std::env::var_os("TIDEWAL_TEST_PANIC") else { return Ok(()) };
    let want = want.to_string_lossy();
    if want == verb {
        panic!("TIDEWAL_TEST_PANIC: {verb} panics");
    }
    if want.strip_suffix(":worker") == Some(verb) {
        let what = format!("TIDEWAL_TEST_PANIC: a task of {verb} panics");
        if tokio::spawn(async move { panic!("{what}") }).await.is_err() {
            return Err(Fail::new(Code::NotFound, "the task failed"));
        }
    }
    Ok(())
}
