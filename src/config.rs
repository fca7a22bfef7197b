//! Configuration: a TOML file, then `TIDEWAL_*` environment variables, then command-line
//! flags, merged once at start-up into plain values that the modules below receive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::codec::{Key, Keyring};
use crate::error::{Code, Fail, Result};
use crate::redact;
use crate::store::{S3Options, StoreOptions};

mod cloud;
mod copies;
mod credentials;
mod dump;
mod verify;

pub use copies::CopySettings;
pub use credentials::CredentialFiles;
pub use dump::DumpSettings;
pub use verify::VerifySettings;

pub const DEFAULT_CONFIG: &str = "/etc/tidewal/tidewal.toml";
pub const DEFAULT_REPO: &str = "file:///var/lib/tidewal/repo";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    repository: RepoSection,
    #[serde(default)]
    postgres: PgSection,
    #[serde(default)]
    restore: RestoreSection,
    #[serde(default)]
    retention: RetentionSection,
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    verify: verify::VerifySection,
    #[serde(default)]
    dump: dump::DumpSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    pgdata: Option<PathBuf>,
    archive: Option<bool>,
    archive_parallel: Option<usize>,
    listen: Option<String>,
    backup_interval: Option<String>,
    backup_at: Option<String>,
    prune_interval: Option<String>,
    shutdown_timeout: Option<String>,
    flush_interval: Option<String>,
    stream: Option<bool>,
    slot: Option<String>,
    socket: Option<PathBuf>,
    spool: Option<PathBuf>,
    restore_test_interval: Option<String>,
    full_every: Option<String>,
}

/// What `tidewal daemon` runs, and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSettings {
    /// The data directory, for `pg_wal/archive_status`; asked from the server when unset.
    pub pgdata: Option<PathBuf>,
    /// Upload `.ready` files ahead of PostgreSQL's archiver.
    pub archive: bool,
    pub archive_parallel: usize,
    /// Prometheus endpoint and /healthz.
    pub listen: std::net::SocketAddr,
    pub backup_interval: Duration,
    /// A daily UTC time ("01:30") for base backups, instead of an interval after the last.
    pub backup_at: Option<(u32, u32)>,
    pub prune_interval: Duration,
    pub shutdown_timeout: Duration,
    /// How often WAL is expected to reach the repository (archive_timeout; in streaming mode
    /// the `.partial` upload interval); health fails at twice it.
    pub flush_interval: Duration,
    /// Streaming mode: follow the server's WAL over a physical replication slot.
    pub stream: bool,
    pub slot: String,
    /// Unix socket on which the daemon takes `wal-push` requests (and `wal-push` finds it).
    pub socket: Option<PathBuf>,
    /// Streaming mode: where the segment being received is written before it is stored.
    pub spool: PathBuf,
    /// How often the daemon runs a restore test (`verify --restore-test`); zero: never.
    pub restore_test_interval: Duration,
    /// Scheduled backups are incremental (PostgreSQL 17+) until the chain's full backup is
    /// this old; unset: every scheduled backup is full.
    pub full_every: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetentionSection {
    window: Option<String>,
}

/// The restorable window the pruner keeps by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(10 * 24 * 3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreSection {
    prefetch: Option<usize>,
}

/// Segments `wal-fetch` downloads ahead of recovery by default.
pub const DEFAULT_PREFETCH: usize = 8;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RepoSection {
    url: Option<String>,
    compression: Option<Compression>,
    key_file: Option<PathBuf>,
    #[serde(default)]
    read_key_files: Vec<PathBuf>,
    retry_timeout: Option<String>,
    /// false accepts a store that ignores create-only writes (one writer only).
    require_conditional_writes: Option<bool>,
    #[serde(default)]
    s3: S3Section,
    #[serde(default)]
    azure: cloud::AzureSection,
    #[serde(default)]
    gcs: cloud::GcsSection,
    /// Set in the file a restore writes for recovery: `TIDEWAL_*` variables are ignored.
    ignore_env: Option<bool>,
    /// Further repositories the daemon keeps a copy in (`[[repository.copy]]`).
    #[serde(default)]
    copy: Vec<copies::CopySection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Section {
    endpoint: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    /// The same, read from a file (a Kubernetes Secret volume).
    access_key_id_file: Option<PathBuf>,
    secret_access_key_file: Option<PathBuf>,
    allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PgSection {
    conninfo: Option<String>,
    standby_conninfo: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    Lz4,
    None,
}

/// Values given on the command line; they win over everything else.
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub config: Option<PathBuf>,
    pub repo: Option<String>,
    pub key_file: Option<PathBuf>,
}

/// The merged, validated settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The config file that was read, if any (echoed into suggested archive_command lines).
    pub config_path: Option<PathBuf>,
    pub repo_url: String,
    pub lz4: bool,
    pub keys: Keyring,
    pub store: StoreOptions,
    pub conninfo: Option<String>,
    /// A standby to take base backups from, keeping their I/O off the primary.
    pub standby_conninfo: Option<String>,
    /// How many segments wal-fetch downloads ahead (0: none).
    pub prefetch: usize,
    /// Every moment this far back stays restorable; older backups and WAL are pruned.
    pub retention_window: Duration,
    pub daemon: DaemonSettings,
    pub verify: VerifySettings,
    pub dump: DumpSettings,
    /// Where the keys came from, for the file a restore writes for recovery.
    pub key_source: KeySource,
    /// The S3 credentials that were read from files (the same purpose).
    pub s3_files: CredentialFiles,
    /// `[[repository.copy]]`: repositories 2 and up, kept up to date by the daemon.
    pub copies: Vec<CopySettings>,
    /// Where `wal-push` and `wal-fetch` keep a remote repository's identity between calls.
    pub identity_cache: Option<crate::repo::identity_cache::IdentityCache>,
}

/// Where the repository keys were read from (never the keys themselves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeySource {
    /// The current key's file; None without a key or when it came from `TIDEWAL_KEY`.
    pub key_file: Option<PathBuf>,
    /// The current key came from the `TIDEWAL_KEY` variable.
    pub from_env: bool,
    pub read_key_files: Vec<PathBuf>,
}

fn usage(msg: String) -> Fail {
    Fail::new(Code::Usage, msg)
}

fn parse_bool(key: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(usage(format!("{key}={v:?}: expected true or false"))),
    }
}

fn parse_duration(key: &str, v: &str) -> Result<Duration> {
    humantime::parse_duration(v).map_err(|e| usage(format!("{key} = {v:?}: {e} (examples: \"30s\", \"2m\")")))
}

impl Settings {
    /// Merge file, environment (through `env`, so tests can pass their own) and flags.
    pub fn load(flags: &Flags, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let explicit = flags.config.clone().or_else(|| env("TIDEWAL_CONFIG").map(PathBuf::from));
        let path = explicit.clone().unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let (file, config_path) = match std::fs::read_to_string(&path) {
            Ok(text) => (parse_file(&text, &path)?, Some(path)),
            // The default file is optional; one that was named must exist.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => (FileConfig::default(), None),
            Err(e) => return Err(usage(format!("cannot read config file {}: {e}", path.display()))),
        };
        let repo = file.repository;
        // A restore's file for recovery names exactly the repository restore checked; the
        // environment PostgreSQL runs restore_command in must not point elsewhere.
        let pinned = repo.ignore_env == Some(true);
        let filtered = |k: &str| if pinned && k.starts_with("TIDEWAL_") { None } else { env(k) };
        let env: &dyn Fn(&str) -> Option<String> = &filtered;

        let repo_url =
            flags.repo.clone().or_else(|| env("TIDEWAL_REPO")).or(repo.url).unwrap_or_else(|| DEFAULT_REPO.to_string());

        let compression = match env("TIDEWAL_COMPRESSION") {
            Some(v) => match v.as_str() {
                "lz4" => Compression::Lz4,
                "none" => Compression::None,
                _ => return Err(usage(format!("TIDEWAL_COMPRESSION={v:?}: expected \"lz4\" or \"none\""))),
            },
            None => repo.compression.unwrap_or(Compression::Lz4),
        };

        let key_source = key_source(flags, env, &repo.key_file, &repo.read_key_files);
        let keys = load_keys(flags, env, repo.key_file, &repo.read_key_files)?;

        let s3 = repo.s3;
        let (access_key_id, id_file) = credentials::credential(
            env("TIDEWAL_S3_ACCESS_KEY_ID"),
            s3.access_key_id,
            s3.access_key_id_file,
            "repository.s3.access_key_id",
        )?;
        let (secret_access_key, secret_file) = credentials::credential(
            env("TIDEWAL_S3_SECRET_ACCESS_KEY"),
            s3.secret_access_key,
            s3.secret_access_key_file,
            "repository.s3.secret_access_key",
        )?;
        let s3_files = CredentialFiles { access_key_id: id_file, secret_access_key: secret_file };
        let s3 = S3Options {
            endpoint: env("TIDEWAL_S3_ENDPOINT").or(s3.endpoint),
            region: env("TIDEWAL_S3_REGION").or(s3.region),
            access_key_id,
            secret_access_key,
            allow_http: match env("TIDEWAL_S3_ALLOW_HTTP") {
                Some(v) => parse_bool("TIDEWAL_S3_ALLOW_HTTP", &v)?,
                None => s3.allow_http.unwrap_or(false),
            },
        };
        let (azure, gcs) = (cloud::azure_options(repo.azure)?, cloud::gcs_options(repo.gcs)?);
        let mut store = StoreOptions { s3, azure, gcs, ..StoreOptions::default() };
        store.require_conditional_writes = match env("TIDEWAL_REQUIRE_CONDITIONAL_WRITES") {
            Some(v) => parse_bool("TIDEWAL_REQUIRE_CONDITIONAL_WRITES", &v)?,
            None => repo.require_conditional_writes.unwrap_or(true),
        };
        if let Some(v) = env("TIDEWAL_RETRY_TIMEOUT") {
            store.retry_timeout = parse_duration("TIDEWAL_RETRY_TIMEOUT", &v)?;
        } else if let Some(v) = repo.retry_timeout {
            store.retry_timeout = parse_duration("repository.retry_timeout", &v)?;
        }

        let copies = copies::copy_settings(repo.copy, &repo_url, &store, &s3_files)?;
        let identity_cache =
            cache_dir(env).map(|dir| crate::repo::identity_cache::IdentityCache { dir, max_age: IDENTITY_CACHE_AGE });
        let conninfo = env("TIDEWAL_PG_CONNINFO").or(file.postgres.conninfo);
        let standby_conninfo = env("TIDEWAL_PG_STANDBY_CONNINFO").or(file.postgres.standby_conninfo);
        let prefetch = match env("TIDEWAL_PREFETCH") {
            Some(v) => {
                v.parse().map_err(|_| usage(format!("TIDEWAL_PREFETCH={v:?}: expected a number of segments")))?
            }
            None => file.restore.prefetch.unwrap_or(DEFAULT_PREFETCH),
        };
        let retention_window = match env("TIDEWAL_RETENTION_WINDOW") {
            Some(v) => parse_duration("TIDEWAL_RETENTION_WINDOW", &v)?,
            None => match file.retention.window {
                Some(v) => parse_duration("retention.window", &v)?,
                None => DEFAULT_WINDOW,
            },
        };
        if retention_window < Duration::from_secs(3600) {
            return Err(usage(format!(
                "retention.window = {}: at least 1h",
                humantime::format_duration(retention_window)
            )));
        }
        let remote = crate::store::Store::local_path(&repo_url).is_none();
        let daemon = daemon_settings(file.daemon, env, remote)?;
        let verify = verify::verify_settings(file.verify)?;
        let dump = dump::dump_settings(file.dump)?;
        if prefetch > 64 {
            return Err(usage(format!("restore.prefetch = {prefetch}: at most 64 segments")));
        }
        Ok(Settings {
            config_path,
            repo_url,
            lz4: compression == Compression::Lz4,
            keys,
            store,
            conninfo,
            standby_conninfo,
            prefetch,
            retention_window,
            daemon,
            verify,
            dump,
            key_source,
            s3_files,
            copies,
            identity_cache,
        })
    }
}

/// How long a cached repository identity is trusted (see repo/identity_cache.rs).
const IDENTITY_CACHE_AGE: Duration = Duration::from_secs(60);

/// `TIDEWAL_CACHE_DIR`, else the XDG cache directory (`$XDG_CACHE_HOME/tidewal`, else
/// `$HOME/.cache/tidewal`); none without a home ("" turns the cache off).
fn cache_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(v) = env("TIDEWAL_CACHE_DIR") {
        return (!v.is_empty()).then(|| PathBuf::from(v));
    }
    nonempty("XDG_CACHE_HOME")
        .map(|x| PathBuf::from(x).join("tidewal"))
        .or_else(|| nonempty("HOME").map(|h| PathBuf::from(h).join(".cache/tidewal")))
}

/// Uploads the daemon runs at once by default: a remote store spends most of an upload
/// waiting for its answer, a local disk does not.
const ARCHIVE_PARALLEL_LOCAL: usize = 4;
const ARCHIVE_PARALLEL_REMOTE: usize = 8;

fn daemon_settings(d: DaemonSection, env: &dyn Fn(&str) -> Option<String>, remote: bool) -> Result<DaemonSettings> {
    let dur = |key: &str, v: Option<String>, default: &str| {
        parse_duration(&format!("daemon.{key}"), v.as_deref().unwrap_or(default))
    };
    let listen = env("TIDEWAL_LISTEN").or(d.listen).unwrap_or_else(|| "127.0.0.1:9187".into());
    let listen = listen
        .parse()
        .map_err(|_| usage(format!("daemon.listen = {listen:?}: give an address and port, e.g. \"127.0.0.1:9187\"")))?;
    let backup_at = match d.backup_at {
        None => None,
        Some(t) => {
            let parsed = t.split_once(':').and_then(|(h, m)| Some((h.parse::<u32>().ok()?, m.parse::<u32>().ok()?)));
            match parsed {
                Some((h, m)) if h < 24 && m < 60 => Some((h, m)),
                _ => return Err(usage(format!("daemon.backup_at = {t:?}: give a UTC time as \"HH:MM\""))),
            }
        }
    };
    let archive_parallel =
        d.archive_parallel.unwrap_or(if remote { ARCHIVE_PARALLEL_REMOTE } else { ARCHIVE_PARALLEL_LOCAL });
    if !(1..=32).contains(&archive_parallel) {
        return Err(usage(format!("daemon.archive_parallel = {archive_parallel}: 1 to 32")));
    }
    Ok(DaemonSettings {
        pgdata: env("TIDEWAL_PGDATA").map(PathBuf::from).or(d.pgdata),
        archive: d.archive.unwrap_or(true),
        archive_parallel,
        listen,
        backup_interval: dur("backup_interval", d.backup_interval, "24h")?,
        backup_at,
        prune_interval: dur("prune_interval", d.prune_interval, "1h")?,
        shutdown_timeout: dur("shutdown_timeout", d.shutdown_timeout, "60s")?,
        flush_interval: dur("flush_interval", d.flush_interval, "60s")?.max(Duration::from_secs(1)),
        stream: d.stream.unwrap_or(false),
        slot: d.slot.unwrap_or_else(|| "tidewal".into()),
        socket: env("TIDEWAL_SOCKET").map(PathBuf::from).or(d.socket),
        spool: env("TIDEWAL_SPOOL").map(PathBuf::from).or(d.spool).unwrap_or_else(|| default_spool(env)),
        restore_test_interval: dur("restore_test_interval", d.restore_test_interval, "7d")?,
        full_every: match &d.full_every {
            Some(v) => Some(dur("full_every", Some(v.clone()), "7d")?),
            None => None,
        },
    })
}

/// systemd's `StateDirectory=` (the first one given), else the temporary directory.
fn default_spool(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    match env("STATE_DIRECTORY").as_deref().and_then(|d| d.split(':').next()).filter(|d| !d.is_empty()) {
        Some(dir) => Path::new(dir).join("spool"),
        None => std::env::temp_dir().join("tidewal-spool"),
    }
}

fn parse_file(text: &str, path: &Path) -> Result<FileConfig> {
    toml::from_str(text).map_err(|e| usage(format!("config file {}: {}", path.display(), toml_error(text, &e))))
}

/// Every section and key of the file (the names a TOML error may be reported under).
const KNOWN_KEYS: &str = "repository url compression key_file read_key_files retry_timeout \
    require_conditional_writes s3 endpoint region \
    access_key_id secret_access_key access_key_id_file secret_access_key_file allow_http \
    azure account access_key_file sas_token_file gcs service_account_file anonymous \
    postgres conninfo standby_conninfo restore prefetch retention window \
    daemon pgdata archive archive_parallel listen backup_interval backup_at prune_interval shutdown_timeout \
    flush_interval stream slot socket spool restore_test_interval full_every ignore_env verify sql database user pg_bin scratch_dir os_user timeout \
    heapallindexed settings dump jobs format keep interval copy max_lag";

/// A TOML error by position and key, without the source line toml would quote (it may hold
/// a password or an S3 secret); for a key that holds a credential, without the values the
/// message quotes either.
fn toml_error(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', "; ");
    let Some(start) = e.span().map(|s| s.start).filter(|s| text.is_char_boundary(*s)) else {
        return redact::text(&message);
    };
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line = text[..start].matches('\n').count() + 1;
    let column = text[line_start..start].chars().count() + 1;
    let key = key_at(&text[..line_start], text[line_start..].lines().next().unwrap_or(""));
    let secret = key.as_deref().is_some_and(|k| redact::is_secret_key(k) || k.ends_with("conninfo"));
    // serde quotes the value it was given ("invalid type: integer `5`", "string \"x\"");
    // syntax errors quote only the tokens they expected.
    let quotes_value = ["invalid type", "invalid value", "invalid length"].iter().any(|p| message.starts_with(p));
    let message = if secret && quotes_value { mask_quoted(&message) } else { message };
    let at = match key {
        Some(k) => format!("line {line}, column {column}, at {k}"),
        None => format!("line {line}, column {column}"),
    };
    format!("{at}: {}", redact::text(&message))
}

/// The dotted name of the key (or table) on `line`, given the lines before it; None unless
/// every part is a known name, so that a fragment of a value is never shown as a key.
fn key_at(before: &str, line: &str) -> Option<String> {
    let known = |name: &str| {
        let parts: Vec<&str> = name.split('.').map(str::trim).collect();
        parts.iter().all(|p| KNOWN_KEYS.split_whitespace().any(|k| k == *p)).then(|| parts.join("."))
    };
    let line = line.trim();
    if let Some(header) = line.strip_prefix('[') {
        return known(header.split(']').next()?);
    }
    let key = known(line.split_once('=')?.0)?;
    let table = before.lines().rev().map(str::trim).find(|l| l.starts_with('['));
    match table.and_then(|t| known(t.trim_start_matches('[').split(']').next()?)) {
        Some(t) => Some(format!("{t}.{key}")),
        None => Some(key),
    }
}

/// Every `...` and "..." in `message` masked.
fn mask_quoted(message: &str) -> String {
    let mask = |text: &str, q: char| {
        let parts = text.split(q).enumerate();
        parts.map(|(i, p)| if i % 2 == 1 { redact::MASK } else { p }).collect::<Vec<_>>().join(&q.to_string())
    };
    mask(&mask(message, '`'), '"')
}

fn load_keys(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    file_key: Option<PathBuf>,
    read_files: &[PathBuf],
) -> Result<Keyring> {
    let write = if let Some(p) = flags.key_file.clone().or_else(|| env("TIDEWAL_KEY_FILE").map(PathBuf::from)) {
        Some(Key::from_file(&p).map_err(usage)?)
    } else if let Some(text) = env("TIDEWAL_KEY") {
        Some(Key::from_text(&text, "TIDEWAL_KEY").map_err(usage)?)
    } else if let Some(p) = file_key {
        Some(Key::from_file(&p).map_err(usage)?)
    } else {
        None
    };
    let older = read_files.iter().map(|p| Key::from_file(p).map_err(usage)).collect::<Result<Vec<_>>>()?;
    match write {
        Some(w) => Ok(Keyring::new(w, older)),
        None if older.is_empty() => Ok(Keyring::plaintext()),
        None => {
            Err(usage("repository.read_key_files is set but there is no current key: set repository.key_file".into()))
        }
    }
}

/// The same precedence as `load_keys`: flag, TIDEWAL_KEY_FILE, TIDEWAL_KEY, the file.
fn key_source(
    flags: &Flags,
    env: &dyn Fn(&str) -> Option<String>,
    file_key: &Option<PathBuf>,
    read_files: &[PathBuf],
) -> KeySource {
    let path = flags.key_file.clone().or_else(|| env("TIDEWAL_KEY_FILE").map(PathBuf::from));
    let from_env = path.is_none() && env("TIDEWAL_KEY").is_some();
    let key_file = if from_env { None } else { path.or_else(|| file_key.clone()) };
    KeySource { key_file, from_env, read_key_files: read_files.to_vec() }
}

impl Settings {
    /// The configuration file a restore writes into the data directory for recovery's
    /// `wal-fetch`: the repository, store settings, key file paths (never key material) and
    /// prefetch, with `ignore_env` so PostgreSQL's environment cannot redirect it.
    pub fn fetch_config(&self) -> Result<String> {
        use toml::{Table, Value};
        if self.key_source.from_env {
            return Err(usage(
                "the repository key comes from TIDEWAL_KEY, which recovery's restore_command cannot see: \
                 pass --key-file (or set repository.key_file) so that recovery can read the repository"
                    .into(),
            ));
        }
        let abs = |p: &Path| -> Result<Value> {
            let p = std::path::absolute(p).map_err(|e| usage(format!("{}: {e}", p.display())))?;
            Ok(Value::String(p.display().to_string()))
        };
        let mut repo = Table::new();
        repo.insert("url".into(), Value::String(self.repo_url.clone()));
        repo.insert("ignore_env".into(), Value::Boolean(true));
        if let Some(k) = &self.key_source.key_file {
            repo.insert("key_file".into(), abs(k)?);
        }
        if !self.key_source.read_key_files.is_empty() {
            let files = self.key_source.read_key_files.iter().map(|p| abs(p)).collect::<Result<Vec<_>>>()?;
            repo.insert("read_key_files".into(), Value::Array(files));
        }
        let retry = humantime::format_duration(self.store.retry_timeout).to_string();
        repo.insert("retry_timeout".into(), Value::String(retry));
        let o = &self.store.s3;
        let mut s3 = Table::new();
        // A credential read from a file is named by its file again, never copied.
        let files = &self.s3_files;
        for (k, v, file) in [
            ("endpoint", &o.endpoint, None),
            ("region", &o.region, None),
            ("access_key_id", &o.access_key_id, files.access_key_id.as_ref()),
            ("secret_access_key", &o.secret_access_key, files.secret_access_key.as_ref()),
        ] {
            if let Some(f) = file {
                s3.insert(format!("{k}_file"), abs(f)?);
            } else if let Some(v) = v {
                s3.insert(k.into(), Value::String(v.clone()));
            }
        }
        s3.insert("allow_http".into(), Value::Boolean(o.allow_http));
        repo.insert("s3".into(), Value::Table(s3));
        cloud::fetch_tables(&self.store, &mut repo)?;
        let mut restore = Table::new();
        restore.insert("prefetch".into(), Value::Integer(self.prefetch as i64));
        let mut top = Table::new();
        top.insert("repository".into(), Value::Table(repo));
        top.insert("restore".into(), Value::Table(restore));
        let body = toml::to_string(&top).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        Ok(format!(
            "# Written by tidewal restore for recovery's restore_command (tidewal wal-fetch): the\n\
             # repository that restore checked. TIDEWAL_* variables do not apply to it.\n{body}"
        ))
    }

    /// Open the configured, initialised repository.
    pub async fn open_repo(&self) -> Result<crate::repo::Repo> {
        let store = crate::store::Store::open(&self.repo_url, &self.store)?;
        crate::repo::Repo::open(store, self.keys.clone(), self.lz4).await
    }

    /// The same, for `wal-push` and `wal-fetch` (one process per file): a remote
    /// repository's identity comes from the local cache while it is fresh.
    pub async fn open_repo_cached(&self) -> Result<crate::repo::Repo> {
        let store = crate::store::Store::open(&self.repo_url, &self.store)?;
        let o = &self.store;
        let server = [&o.s3.endpoint, &o.s3.region, &o.azure.account, &o.azure.endpoint, &o.gcs.endpoint]
            .map(|v| v.as_deref().unwrap_or_default())
            .join(" ");
        crate::repo::Repo::open_cached(store, self.keys.clone(), self.lz4, self.identity_cache.as_ref(), &server).await
    }
}

#[cfg(test)]
#[path = "config_fuzz_tests.rs"]
mod fuzz_tests;

#[cfg(test)]
mod tests;
