//! Everything that speaks PostgreSQL: LSN and file-name arithmetic, history files,
//! segment validation, and SQL and replication connections (with TLS) with libpq conventions.

pub mod conninfo;
pub mod history;
pub mod incremental;
pub mod lsn;
pub mod replication;
pub mod sql;
pub mod tls;
pub mod wal_records;
pub mod walfile;
