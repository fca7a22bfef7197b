//! Everything that speaks PostgreSQL: LSN and file-name arithmetic, history files,
//! segment validation, and SQL connections with libpq conventions.

pub mod conninfo;
pub mod history;
pub mod lsn;
pub mod replication;
pub mod sql;
pub mod walfile;
