//! The operations layer: what a one-shot verb (`cmd/`) and the daemon (`daemon/`) both run.
//! Each operation takes an open `Repo` and plain values; nothing here reads the
//! configuration, parses a command line or prints for a person.

pub mod backup;
mod backup_parent;
pub mod copy;
pub mod copy_sync;
pub mod dump;
pub mod dump_prune;
pub mod dump_restore;
pub mod fetch;
pub mod last_run;
pub mod pg_client;
pub mod prune;
pub mod push;
pub mod recovery_conf;
pub mod restore;
pub mod restore_test;
pub mod timelines;
pub mod verify;
