//! `tidewal dump-restore`: one database of a dump into a target database. Its objects are
//! checked against `dump.json`, then each is fetched, opened in full (verified) and written
//! into a scratch directory before pg_restore sees anything, so a damaged object stops the
//! restore before the target is touched and is named. TimescaleDB (when the dump holds it)
//! needs the same extension version in the target and the restore wrapped in
//! `timescaledb_pre_restore()` / `timescaledb_post_restore()`: [`timescaledb_sql`].

use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::pg_client;
use super::restore_test::server::find_client;
use crate::error::{Code, Fail, Result};
use crate::pg::sql;
use crate::repo::dumps::{check_dump, read_dumps, DumpFormat, DumpInfo};
use crate::repo::Repo;

#[derive(Clone, Debug)]
pub struct DumpRestoreRequest {
    pub conninfo: Option<String>,
    /// A dump id, or "latest".
    pub dump: String,
    /// The database of the dump [default: its only one].
    pub source_db: Option<String>,
    pub to_db: String,
    pub tables: Vec<String>,
    pub schemas: Vec<String>,
    /// Create the target database (it must not exist).
    pub create: bool,
    pub jobs: u32,
    pub pg_bin: Option<PathBuf>,
    pub scratch_parent: PathBuf,
}

#[derive(Clone, Debug)]
pub struct DumpRestored {
    pub dump: String,
    pub database: String,
    pub bytes: u64,
    pub timescaledb: bool,
}

/// The SQL around a restore for TimescaleDB (pure): statements to run in the target before
/// pg_restore, and after it (also when it fails). `dump`: the version the dump holds,
/// `target`: the version installed in the target (none when the database is created).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct TimescaleSql {
    pub before: Vec<String>,
    pub after: Vec<String>,
}

pub fn timescaledb_sql(
    dump: Option<&str>,
    target: Option<&str>,
    create: bool,
) -> std::result::Result<TimescaleSql, String> {
    let Some(want) = dump else { return Ok(TimescaleSql::default()) };
    let mut before = Vec::new();
    match target {
        Some(have) if have != want => {
            return Err(format!(
                "the dump holds TimescaleDB {want}, the target database has {have}: restore into a database with \
                 TimescaleDB {want} (ALTER EXTENSION timescaledb UPDATE TO '{want}', or install that version)"
            ))
        }
        Some(_) => {}
        None if create => {
            before.push(format!("CREATE EXTENSION IF NOT EXISTS timescaledb VERSION '{}'", want.replace('\'', "''")))
        }
        None => {
            return Err(format!(
                "the dump holds TimescaleDB {want}, the target database does not have it: CREATE EXTENSION \
                 timescaledb VERSION '{want}' there first, or restore with --create"
            ))
        }
    }
    before.push("SELECT timescaledb_pre_restore()".into());
    Ok(TimescaleSql { before, after: vec!["SELECT timescaledb_post_restore()".into()] })
}

/// The dump `want` names ("latest": the newest).
pub async fn find_dump(repo: &Repo, want: &str) -> Result<DumpInfo> {
    let names = repo.store.list("dumps").await?;
    let mut dumps = read_dumps(repo, &names).await?;
    let found = if want == "latest" { dumps.pop() } else { dumps.into_iter().find(|d| d.id == want) };
    found.ok_or_else(|| {
        Fail::new(
            Code::NotFound,
            format!("no dump {want} in the repository (see tidewal list); interrupted dumps do not count"),
        )
    })
}

/// The dump's globals (`pg_dumpall --globals-only`: roles, tablespaces), checked and opened.
pub async fn globals(repo: &Repo, want: &str) -> Result<(String, Vec<u8>)> {
    let info = find_dump(repo, want).await?;
    let g = std::slice::from_ref(&info.globals);
    crate::repo::catalog::check_stored(repo, &format!("dump {}", info.id), "dump.json", "see tidewal list", g).await?;
    let raw = repo.store.get_bytes(&info.globals.name).await?;
    let plain = crate::codec::open_to_vec(&raw, &repo.keys, &info.globals.name)
        .map_err(|e| Fail::new(Code::Integrity, format!("object {}: {e}", info.globals.name)))?;
    Ok((info.id, plain))
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

pub async fn dump_restore(repo: &Repo, req: &DumpRestoreRequest) -> Result<DumpRestored> {
    let pg = |e: String| Fail::new(Code::Postgres, e);
    let q = |e: tokio_postgres::Error| Fail::new(Code::Postgres, sql::error_chain(&e));
    let info = find_dump(repo, &req.dump).await?;
    let db = info.database(req.source_db.as_deref()).map_err(|e| Fail::new(Code::Usage, e))?;
    check_dump(repo, &info).await?;
    let dump_major = super::restore_test::server::parse_major(&info.pg_dump_version).unwrap_or(0);
    let pg_restore = find_client("pg_restore", dump_major, req.pg_bin.as_deref(), "dump.pg_bin")?;

    let conninfo = req.conninfo.as_deref();
    let admin = sql::connect(conninfo).await.map_err(pg)?;
    let exists =
        admin.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&req.to_db]).await.map_err(q)?.is_some();
    let target_ts = match (exists, req.create) {
        (true, true) => {
            return Err(Fail::new(
                Code::Usage,
                format!("database {} exists: leave out --create to restore into it", req.to_db),
            ))
        }
        (false, false) => {
            return Err(Fail::new(Code::Usage, format!("database {} does not exist: add --create", req.to_db)))
        }
        (true, false) => pg_client::timescaledb_version(conninfo, &req.to_db).await?,
        (false, true) => None,
    };
    let ts = timescaledb_sql(db.timescaledb_version.as_deref(), target_ts.as_deref(), req.create)
        .map_err(|e| Fail::new(Code::Conflict, e))?;

    // Everything verified on local disk before the target is touched.
    let scratch = tempfile::Builder::new()
        .prefix("tidewal-dump-restore-")
        .tempdir_in(&req.scratch_parent)
        .map_err(|e| Fail::new(Code::Storage, format!("{}: {e}", req.scratch_parent.display())))?;
    let dir = scratch.path().join(&db.prefix);
    std::fs::create_dir(&dir).map_err(|e| Fail::new(Code::Storage, format!("{}: {e}", dir.display())))?;
    let mut fetches = Vec::new();
    for o in &db.objects {
        let file = db.file_name(&info.id, &o.name).ok_or_else(|| {
            Fail::new(Code::Integrity, format!("dump {}: dump.json lists {} out of place", info.id, o.name))
        })?;
        let dest = dir.join(file);
        fetches.push(async move { repo.fetch_to_path(&o.name, &dest).await });
    }
    use futures::{StreamExt, TryStreamExt};
    let sizes: Vec<u64> = futures::stream::iter(fetches).buffer_unordered(4).try_collect().await?;
    let bytes = sizes.iter().sum();
    let archive: PathBuf = match db.format {
        DumpFormat::Directory => dir.clone(),
        DumpFormat::Custom => dir.join(format!("{}.dump", db.prefix)),
    };

    if req.create {
        admin
            .batch_execute(&format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(&req.to_db)))
            .await
            .map_err(q)?;
    }
    drop(admin);
    let target = sql::connect(Some(&pg_client::for_database(conninfo, &req.to_db))).await.map_err(pg)?;
    for s in &ts.before {
        target.batch_execute(s).await.map_err(|e| pg(format!("{s}: {}", sql::error_chain(&e))))?;
    }
    let restored = run_pg_restore(&pg_restore.path, req, &archive).await;
    // Also after a failed restore: the database must not stay in restoring mode.
    for s in &ts.after {
        if let Err(e) = target.batch_execute(s).await {
            let e = pg(format!("{s}: {}", sql::error_chain(&e)));
            return Err(restored.err().unwrap_or(e));
        }
    }
    if let Err(e) = restored {
        return Err(match req.create {
            true => Fail::new(
                e.code,
                format!(
                    "{}; database {} was created and is left as it is: drop it before trying again",
                    e.message, req.to_db
                ),
            ),
            false => e,
        });
    }
    Ok(DumpRestored {
        dump: info.id.clone(),
        database: db.name.clone(),
        bytes,
        timescaledb: db.timescaledb_version.is_some(),
    })
}

async fn run_pg_restore(program: &Path, req: &DumpRestoreRequest, archive: &Path) -> Result<()> {
    let mut cmd = pg_client::command(program, req.conninfo.as_deref(), &req.to_db)?;
    cmd.arg("--exit-on-error").arg(format!("--jobs={}", req.jobs.max(1)));
    for t in &req.tables {
        cmd.arg(format!("--table={t}"));
    }
    for s in &req.schemas {
        cmd.arg(format!("--schema={s}"));
    }
    cmd.arg(archive).stdout(Stdio::null());
    let child = cmd.spawn().map_err(|e| Fail::new(Code::Usage, format!("cannot run {}: {e}", program.display())))?;
    pg_client::wait(child, "pg_restore").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timescaledb_statements() {
        // No TimescaleDB in the dump: nothing around the restore, whatever the target has.
        assert_eq!(timescaledb_sql(None, Some("2.14.2"), false), Ok(TimescaleSql::default()));
        assert_eq!(timescaledb_sql(None, None, true), Ok(TimescaleSql::default()));
        // The same version: pre_restore before, post_restore after.
        let same = timescaledb_sql(Some("2.14.2"), Some("2.14.2"), false).unwrap();
        assert_eq!(same.before, ["SELECT timescaledb_pre_restore()"]);
        assert_eq!(same.after, ["SELECT timescaledb_post_restore()"]);
        // A created database gets the dump's version first.
        let created = timescaledb_sql(Some("2.14.2"), None, true).unwrap();
        assert_eq!(
            created.before,
            ["CREATE EXTENSION IF NOT EXISTS timescaledb VERSION '2.14.2'", "SELECT timescaledb_pre_restore()"]
        );
        assert_eq!(created.after, ["SELECT timescaledb_post_restore()"]);
        // Refused: another version, or none in an existing database.
        let e = timescaledb_sql(Some("2.14.2"), Some("2.15.0"), false).unwrap_err();
        assert!(e.contains("holds TimescaleDB 2.14.2") && e.contains("has 2.15.0"), "{e}");
        let e = timescaledb_sql(Some("2.14.2"), None, false).unwrap_err();
        assert!(e.contains("does not have it"), "{e}");
        // A version string cannot break out of its literal.
        let odd = timescaledb_sql(Some("1'; DROP"), None, true).unwrap();
        assert_eq!(odd.before[0], "CREATE EXTENSION IF NOT EXISTS timescaledb VERSION '1''; DROP'");
    }
}
