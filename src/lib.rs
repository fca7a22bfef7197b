//! tidewal: continuous WAL archiving and point-in-time backup for PostgreSQL.
//!
//! Data path: `pg` (what PostgreSQL hands us) → `codec` (compress, seal) → `store`
//! (object storage), with `repo` owning names and rules. `ops` holds the operations that the
//! one-shot verbs (`cmd`, one file per verb) and the daemon (`daemon`) share.

pub mod cmd;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod error;
pub mod ops;
pub mod pg;
pub mod progress;
pub mod redact;
pub mod repo;
pub mod store;
