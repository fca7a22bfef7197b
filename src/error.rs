//! Exit codes and the error every command returns. The codes are part of the interface:
//! archive_command and restore_command scripts and PostgreSQL itself act on them.

use std::fmt;

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
    /// A bug: please report it.
    Internal = 70,
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
