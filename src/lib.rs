//! tidewal: continuous WAL archiving and point-in-time backup for PostgreSQL.
//!
//! Data path: `pg` (what PostgreSQL hands us) → `codec` (compress, seal) → `store`
//! (object storage), with `repo` owning names and rules, and `cmd` one file per verb.

pub mod cmd;
pub mod codec;
pub mod config;
pub mod daemon;
pub mod error;
pub mod pg;
pub mod progress;
pub mod redact;
pub mod repo;
pub mod store;
