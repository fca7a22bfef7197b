//! Logical dumps (`tidewal dump`): `pg_dumpall --globals-only`, then `pg_dump` of each chosen
//! database, streamed through the codec into `dumps/<id>/`, and `dump.json` written last, so
//! an interrupted dump never counts. One dump at a time per repository (the dump lease).
//!
//! Directory format (`-j` workers write one file per table) needs a directory: each database
//! is dumped into a scratch directory, then every file is streamed into its own object and
//! the directory removed. Memory stays bounded (an object streams in 8 MiB groups) and a
//! restore fetches, verifies and names objects one file at a time; local disk holds one
//! database's dump at once. Custom format streams pg_dump's output straight into one object
//! (no local disk, no parallelism). pg_dump runs with `--compress=0`: the codec compresses
//! (lz4, on every core) and encrypts, and gzip first would leave lz4 nothing to do.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Instant, SystemTime};

use tokio::io::AsyncReadExt;

use super::pg_client;
use super::restore_test::server::{find_client, parse_major};
use crate::error::{Code, Fail, Result};
use crate::pg::sql;
use crate::repo::dumps::{dump_object, DatabaseDump, DumpFormat, DumpInfo, DUMP_LEASE, GLOBALS, RECORD};
use crate::repo::{layout, lease, ObjectWriter, Repo, StoredObject};

/// Which databases to dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Databases {
    /// Every database that accepts connections, templates left out.
    All,
    Named(Vec<String>),
}

/// A dump, as plain values.
#[derive(Clone, Debug)]
pub struct DumpRequest {
    pub conninfo: Option<String>,
    pub databases: Databases,
    pub format: DumpFormat,
    /// pg_dump's `-j` (directory format).
    pub jobs: u32,
    /// Directory with pg_dump and pg_dumpall [default: searched for the server's major].
    pub pg_bin: Option<PathBuf>,
    /// Where a directory-format dump is staged.
    pub scratch_parent: PathBuf,
}

/// Take a dump; shared with the daemon. The dump lease is held throughout.
pub async fn dump(repo: &Repo, req: &DumpRequest) -> Result<DumpInfo> {
    let mut held = lease::acquire(repo, DUMP_LEASE, "logical dump", lease::configured_timeout()).await?;
    let out = tokio::select! {
        r = dump_leased(repo, req) => r,
        why = held.lost() => Err(Fail::new(Code::Conflict, format!("dump abandoned: {why}"))),
    };
    held.release().await;
    out
}

fn pg(e: String) -> Fail {
    Fail::new(Code::Postgres, e)
}

async fn dump_leased(repo: &Repo, req: &DumpRequest) -> Result<DumpInfo> {
    let began = Instant::now();
    let started_at = SystemTime::now();
    let conninfo = req.conninfo.as_deref();
    let client = sql::connect(conninfo).await.map_err(pg)?;
    let q = |e: tokio_postgres::Error| pg(sql::error_chain(&e));
    let row = client
        .query_one("SELECT current_setting('server_version'), system_identifier::text FROM pg_control_system()", &[])
        .await
        .map_err(q)?;
    let (server_version, system): (String, String) = (row.get(0), row.get(1));
    repo.ensure_cluster(system.parse().unwrap_or(0), "the server")?;
    let major = parse_major(&format!("PostgreSQL {server_version}"))
        .ok_or_else(|| pg(format!("cannot read the server's version {server_version:?}")))?;
    let names: Vec<String> = match &req.databases {
        Databases::All => client
            .query("SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname", &[])
            .await
            .map_err(q)?
            .iter()
            .map(|r| r.get(0))
            .collect(),
        Databases::Named(names) => {
            for n in names {
                if client.query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[n]).await.map_err(q)?.is_none() {
                    return Err(Fail::new(Code::Usage, format!("the server has no database {n:?}")));
                }
            }
            names.clone()
        }
    };
    drop(client);
    // pg_dump refuses a server newer than itself; find one as new before anything is stored.
    let pg_dump = find_client("pg_dump", major, req.pg_bin.as_deref(), "dump.pg_bin")?;
    let bin_dir = pg_dump.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let pg_dumpall = find_client("pg_dumpall", major, Some(&bin_dir), "dump.pg_bin")?;

    let mut random = [0u8; 3];
    rand::fill(&mut random);
    let id = layout::backup_id(started_at, random);
    tracing::info!("dump {id}: {} database(s) of PostgreSQL {server_version} with {}", names.len(), pg_dump.version);

    let mut globals_cmd = pg_client::command(&pg_dumpall.path, conninfo, "postgres")?;
    globals_cmd.arg("--globals-only");
    let globals = stream_stdout(repo, globals_cmd, &dump_object(&id, GLOBALS), "pg_dumpall --globals-only").await?;

    let mut databases = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let t = Instant::now();
        let prefix = format!("db{}", i + 1);
        let timescaledb_version = pg_client::timescaledb_version(conninfo, name).await?;
        let what = format!("pg_dump of database {name}");
        let mut cmd = pg_client::command(&pg_dump.path, conninfo, name)?;
        cmd.arg("--compress=0");
        let objects = match req.format {
            DumpFormat::Custom => {
                cmd.arg("--format=custom");
                vec![stream_stdout(repo, cmd, &dump_object(&id, &format!("{prefix}.dump")), &what).await?]
            }
            DumpFormat::Directory => {
                let scratch = tempfile::Builder::new()
                    .prefix(&format!("tidewal-dump-{id}-"))
                    .tempdir_in(&req.scratch_parent)
                    .map_err(|e| local(&req.scratch_parent, e))?;
                let dir = scratch.path().join(&prefix);
                cmd.arg("--format=directory").arg(format!("--jobs={}", req.jobs.max(1))).arg("--file").arg(&dir);
                let child = cmd.stdout(Stdio::null()).spawn().map_err(|e| spawn_failed(&pg_dump.path, e))?;
                pg_client::wait(child, &what).await?;
                store_directory(repo, &dir, &dump_object(&id, &prefix)).await?
            }
        };
        let db = DatabaseDump {
            name: name.clone(),
            prefix,
            format: req.format,
            timescaledb_version,
            duration_seconds: t.elapsed().as_secs_f64(),
            objects,
        };
        tracing::info!(
            "dump {id}: database {name} stored ({} objects) in {:.1}s",
            db.objects.len(),
            db.duration_seconds
        );
        databases.push(db);
    }
    let info = DumpInfo {
        id: id.clone(),
        system_identifier: system,
        server_version,
        pg_dump_version: pg_dump.version,
        jobs: req.jobs,
        started_at: humantime::format_rfc3339_micros(started_at).to_string(),
        finished_at: humantime::format_rfc3339_micros(SystemTime::now()).to_string(),
        duration_seconds: began.elapsed().as_secs_f64(),
        globals,
        databases,
    };
    crate::repo::dumps::check_dump(repo, &info).await?;
    let json = serde_json::to_vec_pretty(&info).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    let obj = dump_object(&id, RECORD);
    let sealed = crate::codec::seal_to_vec(&json, repo.keys.write_key(), &obj, repo.seal_options(None))
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
    repo.push_sealed(&obj, sealed.out, sealed.digest).await?;
    Ok(info)
}

fn local(path: &Path, e: std::io::Error) -> Fail {
    Fail::new(Code::Storage, format!("{}: {e}", path.display()))
}

fn spawn_failed(path: &Path, e: std::io::Error) -> Fail {
    Fail::new(Code::Usage, format!("cannot run {}: {e}", path.display()))
}

/// A client's standard output, streamed into one object.
async fn stream_stdout(repo: &Repo, mut cmd: tokio::process::Command, obj: &str, what: &str) -> Result<StoredObject> {
    let mut child = cmd.stdout(Stdio::piped()).spawn().map_err(|e| Fail::new(Code::Usage, format!("{what}: {e}")))?;
    let mut out = child.stdout.take().ok_or_else(|| Fail::new(Code::Internal, format!("{what}: no stdout")))?;
    let mut w = repo.create_stream(obj);
    // Reading stdout while the child's stderr is drained by `wait` on another task.
    let waiter = tokio::spawn({
        let what = what.to_string();
        async move { pg_client::wait(child, &what).await }
    });
    copy_into(&mut out, &mut w).await?;
    waiter.await.map_err(|e| Fail::new(Code::Internal, e.to_string()))??;
    w.finish().await
}

async fn copy_into(src: &mut (impl AsyncReadExt + Unpin), w: &mut ObjectWriter) -> Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = src.read(&mut buf).await.map_err(|e| Fail::new(Code::Storage, e.to_string()))?;
        if n == 0 {
            return Ok(());
        }
        w.write(&buf[..n]).await?;
    }
}

/// Every file of a directory-format dump into its own object under `prefix/`, in name order.
async fn store_directory(repo: &Repo, dir: &Path, prefix: &str) -> Result<Vec<StoredObject>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| local(dir, e))? {
        let entry = entry.map_err(|e| local(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.file_type().map_err(|e| local(dir, e))?.is_file() || name.contains('/') {
            return Err(Fail::new(Code::Internal, format!("{}: pg_dump wrote {name:?}, not a file", dir.display())));
        }
        files.push(name);
    }
    files.sort();
    // A few at once: one object per table means many small uploads.
    let uploads: Vec<_> = files
        .into_iter()
        .map(|name| async move {
            let path = dir.join(&name);
            let mut file = tokio::fs::File::open(&path).await.map_err(|e| local(&path, e))?;
            let mut w = repo.create_stream(&format!("{prefix}/{name}"));
            copy_into(&mut file, &mut w).await?;
            w.finish().await
        })
        .collect();
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(uploads).buffered(4).try_collect().await
}
