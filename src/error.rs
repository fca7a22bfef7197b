//! Exit codes and the error every command returns. The codes are part of the interface:
//! archive_command and restore_command scripts and PostgreSQL itself act on them.

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::codec::CodecError;
use crate::store::StoreError;

/// Documented exit codes (see README, "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Code {
    /// The requested object is not in the repository (wal-fetch: a normal answer during recovery).
    NotFound = 1,
    /// Bad command line or configuration.
    Usage = 2,
    /// The input file is not what it must be (not WAL, truncated, another cluster's).
    BadInput = 3,
    /// The repository disagrees: a different object already has that name, the repository
    /// belongs to another cluster, or it is not initialised.
    Conflict = 4,
    /// Stored data failed verification: corrupt object or wrong key.
    Integrity = 5,
    /// Storage could not be reached or written (network, permissions, full disk).
    Storage = 6,
    /// PostgreSQL could not be reached or refused the request.
    Postgres = 7,
    /// `check` found settings to fix.
    CheckFailed = 8,
    /// No daemon answers on `daemon.socket` (`status`, `backup --via-daemon`).
    NoDaemon = 9,
    /// A bug: please report it.
    Internal = 70,
}

/// The process exit status for `code`. wal-fetch reports every failure other than "not found"
/// as 128 + code: PostgreSQL stops recovery only for restore_command codes above 125, and
/// reads any lower one as "not found", ending recovery early.
pub fn exit_status(code: Code, wal_fetch: bool) -> u8 {
    let c = code as u8;
    if wal_fetch && c > 1 {
        128 + c
    } else {
        c
    }
}

/// Set once a supervisor runs: a panic off the main thread then unwinds to it (or to the
/// task's JoinHandle) instead of ending the process.
static SUPERVISED: AtomicBool = AtomicBool::new(false);

/// From now on, tasks recover from panics (the daemon's supervisor restarts them).
pub fn tasks_recover_from_panics() {
    SUPERVISED.store(true, Ordering::SeqCst);
}

/// Whether a panic on `thread` ends the process: always, except off the main thread once
/// supervised tasks run.
pub fn panic_is_fatal(thread: Option<&str>) -> bool {
    !SUPERVISED.load(Ordering::SeqCst) || thread == Some("main")
}

/// The text a panic was raised with.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".into(),
    }
}

/// Log every panic (redacted, with where it happened) and, where it is fatal, exit with
/// the internal-error status: 70, or 198 for wal-fetch, a hard failure to PostgreSQL (the
/// default 101 would read as "file not found" and end recovery early). Catching the panic
/// later (a JoinError from tokio) could map it to any code; exiting here cannot.
pub fn install_panic_hook(wal_fetch: bool) {
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        let name = thread.name();
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        let what = crate::redact::text(&panic_message(info.payload()));
        let backtrace = std::backtrace::Backtrace::capture();
        let trace = match backtrace.status() {
            std::backtrace::BacktraceStatus::Captured => format!("\n{backtrace}"),
            _ => String::new(),
        };
        let fatal = panic_is_fatal(name);
        let line = format!(
            "internal error (a bug, please report it): thread {} panicked{at}: {what}{trace}",
            name.unwrap_or("unnamed")
        );
        if tracing::dispatcher::has_been_set() {
            tracing::error!("{line}");
        } else {
            eprintln!("tidewal: {line}");
        }
        if fatal {
            std::process::exit(exit_status(Code::Internal, wal_fetch).into());
        }
    }));
}

#[derive(Debug)]
pub struct Fail {
    pub code: Code,
    pub message: String,
}

impl Fail {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Fail { code, message: message.into() }
    }

    pub fn context(mut self, what: impl fmt::Display) -> Self {
        self.message = format!("{what}: {}", self.message);
        self
    }
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Fail {}

pub type Result<T, E = Fail> = std::result::Result<T, E>;

impl From<StoreError> for Fail {
    fn from(e: StoreError) -> Self {
        let code = match &e {
            StoreError::Config(_) => Code::Usage,
            StoreError::NotFound(_) => Code::NotFound,
            StoreError::NoDirectory(_) => Code::Conflict,
            StoreError::Unavailable { .. } | StoreError::Incomplete(_) => Code::Storage,
        };
        let mut msg = e.to_string();
        if code == Code::Storage {
            msg.push_str(
                " (check that the store is up and the credentials and permissions are right; nothing was changed)",
            );
        }
        Fail::new(code, msg)
    }
}

impl From<CodecError> for Fail {
    fn from(e: CodecError) -> Self {
        let code = match &e {
            CodecError::Io(_) => Code::Storage,
            _ => Code::Integrity,
        };
        Fail::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_fetch_fails_hard_for_everything_but_not_found() {
        assert_eq!(exit_status(Code::NotFound, true), 1);
        assert_eq!(exit_status(Code::Storage, true), 134);
        assert_eq!(exit_status(Code::Internal, true), 198);
        assert_eq!(exit_status(Code::Internal, false), 70);
        assert_eq!(exit_status(Code::Usage, false), 2);
    }

    #[test]
    fn only_the_main_thread_is_fatal_once_tasks_are_supervised() {
        tasks_recover_from_panics();
        assert!(panic_is_fatal(Some("main")));
        assert!(!panic_is_fatal(Some("tokio-runtime-worker")));
        assert!(!panic_is_fatal(None));
    }

    #[test]
    fn panic_messages() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&42u8), "(no message)");
    }
}
