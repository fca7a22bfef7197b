//! `tidewal daemon`: the long-running agent. One per cluster and repository (`exclusive`: an
//! flock on this host, a lease in the repository across hosts). Supervised tasks: the archiver
//! (archive mode), the scheduler (base backups), the pruner (retention), the monitor (backup
//! lag) and the HTTP endpoint (metrics, health). SIGTERM stops gracefully, SIGHUP reloads the
//! configuration, SIGUSR1 asks for a base backup now. systemd: READY and WATCHDOG through
//! sd-notify when run as a `Type=notify` service.

pub mod archiver;
pub mod copier;
pub mod dumps;
pub mod exclusive;
pub mod health;
pub mod http;
pub mod monitor;
pub mod outcomes;
pub mod receiver;
pub mod restore_tests;
pub mod retention;
pub mod scheduler;
pub mod socket;
pub mod status;
pub mod supervisor;
pub mod timelines;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::pg::lsn::{Lsn, SegmentId};
use crate::repo::Repo;

/// What the tasks share.
pub struct Shared {
    pub settings: Settings,
    pub repo: Repo,
    pub state: Mutex<health::State>,
    /// Segments the archiver stored ahead of PostgreSQL (the monitor counts them as durable).
    pub pushed_ahead: Mutex<HashSet<SegmentId>>,
    pub backup_lock: tokio::sync::Mutex<()>,
    pub backup_now: tokio::sync::Notify,
    /// Streaming mode: WAL of this timeline is durable in the repository up to this LSN.
    /// Kept across reloads: after a failover it says where the new server must resume.
    pub streamed: Mutex<Option<(u32, Lsn)>>,
    /// Streaming mode: a gap was reported; the receiver starts over from what the server has.
    pub accept_gap: std::sync::atomic::AtomicBool,
    /// The server's `pg_wal`, when it is on this host (for its free space).
    pub local_pg_wal: Option<PathBuf>,
    /// When this daemon process started (for `tidewal status`).
    pub started: SystemTime,
    /// Successful retention runs on the repository: the copier follows each on its copies.
    pub pruned: std::sync::atomic::AtomicU64,
    /// Files the archiver stored and how they looked then (`archiver::Stamp`), by path.
    pub stored_files: Mutex<archiver::StoredFiles>,
}

/// Run until SIGTERM/SIGINT. `reload` reads the configuration again (SIGHUP).
pub async fn run(settings: Settings, reload: impl Fn() -> Result<Settings>) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Err(Fail::new(
            Code::Usage,
            "tidewal daemon does not run as root: run it as the postgres user (see systemd/tidewal.service)",
        ));
    }
    bound_allocator();
    let prometheus = PrometheusBuilder::new()
        .set_buckets(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
        .map_err(|e| Fail::new(Code::Internal, e.to_string()))?
        .install_recorder()
        .map_err(|e| Fail::new(Code::Internal, format!("metrics: {e}")))?;
    describe();
    outcomes::describe();
    copier::describe();
    // Before the lock and lease: a stop asked for meanwhile is seen once they are held.
    let mut signals = Signals {
        term: signal(SignalKind::terminate()).map_err(internal)?,
        int: signal(SignalKind::interrupt()).map_err(internal)?,
        hup: signal(SignalKind::hangup()).map_err(internal)?,
        usr1: signal(SignalKind::user_defined1()).map_err(internal)?,
    };
    let mut watchdog = Duration::ZERO;
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) {
        watchdog = Duration::from_micros(usec / 2);
    }
    let repo = settings.open_repo().await?;
    // The repository recorded its store's behaviour at init; the store behind the URL may
    // have changed since (a migration, a proxy). Writing to one that ignores conditional
    // writes could let two writers both store one name.
    if repo.store.requires_conditional_writes()
        && !repo.store.probe_conditional_writes(&crate::repo::layout::probe_name()).await?
    {
        return Err(crate::repo::lax_store(repo.store.url()));
    }
    let mut exclusive = exclusive::take(&settings, &repo).await?;
    drop(repo);
    let out = serve(settings, reload, prometheus, watchdog, &mut exclusive, &mut signals).await;
    exclusive.release().await;
    out
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

/// The daemon's life once it holds its lock and lease: generations of tasks, one per
/// configuration, until a stop signal or until another daemon took the lease over.
async fn serve(
    settings: Settings,
    reload: impl Fn() -> Result<Settings>,
    prometheus: PrometheusHandle,
    watchdog: Duration,
    exclusive: &mut exclusive::Exclusive,
    signals: &mut Signals,
) -> Result<()> {
    let Signals { term, int, hup, usr1 } = signals;
    let mut settings = settings;
    let mut streamed = None;
    let started = SystemTime::now();
    loop {
        let generation = start(settings.clone(), prometheus.clone(), streamed, started).await?;
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
        tracing::info!("tidewal daemon running (repository {})", settings.repo_url);
        let mut ping = tokio::time::interval(if watchdog.is_zero() { Duration::from_secs(3600) } else { watchdog });
        let mut lost = None;
        // Settings read while a base backup (or dump, prune, restore test) runs: restarting the
        // tasks would abandon it (hours of work, for ever if reloads come often), so they take
        // effect when it ends.
        let mut deferred = None;
        let mut backup_ended = tokio::time::interval(Duration::from_secs(1));
        let next = loop {
            if deferred.is_some() && !generation.shared.busy() {
                break deferred.take();
            }
            tokio::select! {
                _ = term.recv() => break None,
                _ = int.recv() => break None,
                why = exclusive.lease.lost() => {
                    lost = Some(why);
                    break None;
                }
                _ = hup.recv() => match reload() {
                    // The lock and the lease name the repository: moving is a restart.
                    Ok(s) if socket::RepoIdentity::of(&s).url != socket::RepoIdentity::of(&settings).url => {
                        tracing::error!("configuration not reloaded: the repository changed; restart the daemon to move it")
                    }
                    Ok(s) if generation.shared.busy() => {
                        tracing::info!(
                            "configuration read; it takes effect when the running base backup (or dump, prune, restore test) ends"
                        );
                        deferred = Some(s);
                    }
                    Ok(s) => break Some(s),
                    Err(e) => tracing::error!("configuration not reloaded: {e}"),
                },
                _ = backup_ended.tick(), if deferred.is_some() => {}
                _ = usr1.recv() => generation.shared.backup_now.notify_one(),
                _ = ping.tick() => if !watchdog.is_zero() {
                    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                },
            }
        };
        let _ = sd_notify::notify(
            false,
            &[if next.is_some() { sd_notify::NotifyState::Reloading } else { sd_notify::NotifyState::Stopping }],
        );
        let shared = generation.shared.clone();
        generation.stop(settings.daemon.shutdown_timeout).await;
        streamed = *lock(&shared.streamed);
        match next {
            Some(s) => {
                tracing::info!("configuration reloaded");
                settings = s;
            }
            None => {
                if let Some(why) = lost {
                    // Another daemon decided this one was gone (it could not renew in time):
                    // two must not run, so this one stops.
                    return Err(Fail::new(Code::Conflict, format!("tidewal daemon stopped: {why}")));
                }
                tracing::info!("tidewal daemon stopped");
                return Ok(());
            }
        }
    }
}

impl Shared {
    /// A base backup, dump, prune or restore test is under way: each holds `backup_lock`.
    fn busy(&self) -> bool {
        self.backup_lock.try_lock().is_err()
    }
}

struct Generation {
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl Generation {
    /// Ask every task to stop and wait for in-flight work, at most `timeout`.
    async fn stop(mut self, timeout: Duration) {
        self.cancel.cancel();
        let all = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(timeout, all).await.is_err() {
            tracing::warn!("tasks did not stop within {}; abandoning them", humantime::format_duration(timeout));
            self.tasks.abort_all();
        }
    }
}

async fn start(
    settings: Settings,
    prometheus: PrometheusHandle,
    streamed: Option<(u32, Lsn)>,
    started: SystemTime,
) -> Result<Generation> {
    let repo = settings.open_repo().await?;
    let data = data_directory(&settings).await;
    let local_pg_wal = data.as_ref().ok().and_then(|d| local_pg_wal(d, repo.identity.system_id()));
    let pg_wal = if settings.daemon.archive { Some(archive_status_dir(data)?) } else { None };
    let shared = Arc::new(Shared {
        settings,
        repo,
        state: Mutex::new(health::State::default()),
        pushed_ahead: Mutex::new(HashSet::new()),
        backup_lock: tokio::sync::Mutex::new(()),
        backup_now: tokio::sync::Notify::new(),
        streamed: Mutex::new(streamed),
        accept_gap: std::sync::atomic::AtomicBool::new(false),
        local_pg_wal,
        started,
        pruned: std::sync::atomic::AtomicU64::new(0),
        stored_files: Mutex::new(Default::default()),
    });
    let cancel = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let restarted = {
        let shared = shared.clone();
        move |task: &str| {
            let now = SystemTime::now();
            let mut st = lock(&shared.state);
            st.last_restart = Some((task.into(), now));
            let count = st.restarts.get(task).map_or(0, |(n, _)| *n);
            st.restarts.insert(task.into(), (count + 1, now));
        }
    };
    macro_rules! task {
        ($name:literal, $body:expr) => {{
            let (shared, cancel, restarted) = (shared.clone(), cancel.clone(), restarted.clone());
            let body = $body;
            lock(&shared.state).tasks.push($name.into());
            tasks.spawn(supervisor::supervise($name, cancel, restarted, move |c| body(shared.clone(), c)));
        }};
    }
    if let Some(dir) = pg_wal {
        task!("archiver", move |s, c| archiver::run(s, dir.clone(), c));
    }
    if shared.settings.daemon.stream {
        task!("receiver", receiver::run);
    }
    if let Some(path) = shared.settings.daemon.socket.clone() {
        task!("socket", move |s, c| socket::run(s, path.clone(), c));
    }
    task!("scheduler", scheduler::run);
    task!("monitor", monitor::run);
    task!("pruner", retention::run);
    if !shared.settings.copies.is_empty() {
        task!("copier", copier::run);
    }
    task!("timelines", timelines::run);
    task!("restore-test", restore_tests::run);
    if !shared.settings.dump.interval.is_zero() {
        task!("dumps", dumps::run);
    }
    let ph = prometheus.clone();
    task!("http", move |s, c| http::run(s, ph.clone(), c));
    Ok(Generation { shared, cancel, tasks })
}

/// The cluster's data directory: `daemon.pgdata`, or asked from the server.
async fn data_directory(settings: &Settings) -> Result<PathBuf> {
    if let Some(d) = &settings.daemon.pgdata {
        return Ok(d.clone());
    }
    let client =
        crate::pg::sql::connect(settings.conninfo.as_deref()).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    let row = client.query_one("SHOW data_directory", &[]).await.map_err(|e| {
        Fail::new(
            Code::Postgres,
            format!("cannot ask for data_directory ({}); set daemon.pgdata", crate::pg::sql::error_chain(&e)),
        )
    })?;
    Ok(PathBuf::from(row.get::<_, String>(0)))
}

/// Archive mode needs `pg_wal/archive_status` of the cluster.
fn archive_status_dir(data: Result<PathBuf>) -> Result<PathBuf> {
    let status = data?.join("pg_wal").join("archive_status");
    if !status.is_dir() {
        return Err(Fail::new(
            Code::Usage,
            format!(
                "{} is not readable: set daemon.pgdata to the data directory, or daemon.archive = false",
                status.display()
            ),
        ));
    }
    Ok(status.parent().map(PathBuf::from).unwrap_or(status))
}

/// `pg_wal` when this host has the cluster's data directory: its `global/pg_control` names
/// the repository's system. A server elsewhere may have the same path for another cluster.
fn local_pg_wal(data: &std::path::Path, system_id: u64) -> Option<PathBuf> {
    let mut head = [0u8; 8];
    let mut f = std::fs::File::open(data.join("global").join("pg_control")).ok()?;
    std::io::Read::read_exact(&mut f, &mut head).ok()?;
    (u64::from_le_bytes(head) == system_id).then(|| data.join("pg_wal"))
}

/// A long-running process should give memory back: buffers of 4 MiB and more (WAL segments,
/// their sealed copies, backup batches) are mapped for each use and unmapped when freed,
/// instead of staying in glibc's arenas at the peak size; and fewer arenas fragment less.
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tuning; called before the tasks start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// The shared state stays usable even if a task panicked while holding it: the data is
/// plain status, never half-updated in a way that matters, and the daemon must keep going.
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn internal(e: std::io::Error) -> Fail {
    Fail::new(Code::Internal, e.to_string())
}

/// HELP text for every metric (DESIGN.md §7 names).
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_gauge!("tidewal_wal_archive_lag_seconds", Unit::Seconds, "Age of the oldest WAL byte written by the server that is not yet durable in the repository (0 when all is durable)");
    describe_gauge!(
        "tidewal_wal_archive_lag_bytes",
        Unit::Bytes,
        "WAL written by the server but not yet durable in the repository"
    );
    describe_gauge!(
        "tidewal_last_archived_wal_timestamp_seconds",
        Unit::Seconds,
        "When PostgreSQL last archived a WAL file (Unix time)"
    );
    describe_gauge!(
        "tidewal_last_base_backup_timestamp_seconds",
        Unit::Seconds,
        "When the newest base backup finished (Unix time)"
    );
    describe_gauge!("tidewal_base_backup_duration_seconds", Unit::Seconds, "How long the last base backup took");
    describe_gauge!("tidewal_repo_backups", "Complete base backups in the repository");
    describe_gauge!(
        "tidewal_timeline_splits",
        "Branch points where two clusters went on archiving into the repository (0 when healthy)"
    );
    describe_gauge!(
        "tidewal_repo_oldest_recoverable_timestamp_seconds",
        Unit::Seconds,
        "The oldest moment a restore can reach (Unix time)"
    );
    describe_gauge!(
        "tidewal_slot_retained_wal_bytes",
        Unit::Bytes,
        "WAL the streaming slot keeps on the server (warned at 80% of max_slot_wal_keep_size)"
    );
    describe_gauge!("tidewal_wal_ready_files", "Files PostgreSQL marked .ready that the daemon has not stored yet");
    describe_counter!("tidewal_wal_segments_archived_total", "WAL files the daemon stored");
    describe_counter!(
        "tidewal_uploaded_bytes_total",
        Unit::Bytes,
        "Bytes the daemon stored (after compression and encryption)"
    );
    describe_counter!("tidewal_upload_failures_total", "Failed WAL uploads");
    describe_counter!("tidewal_base_backup_failures_total", "Failed base backups");
    describe_counter!("tidewal_dump_failures_total", "Failed scheduled logical dumps");
    describe_gauge!("tidewal_last_dump_timestamp_seconds", "When the last scheduled logical dump finished");
    describe_gauge!("tidewal_last_dump_success", "1 when the daemon's last scheduled dump succeeded, 0 when it failed");
    describe_counter!("tidewal_pruned_objects_total", "Objects deleted by retention");
    describe_counter!("tidewal_retention_failures_total", "Retention runs that stopped without deleting");
    describe_counter!("tidewal_task_restarts_total", "Supervised tasks restarted after failing");
    describe_counter!(
        "tidewal_wal_gaps_total",
        "Streaming found WAL that is neither in the repository nor on the server (a base backup follows)"
    );
    describe_histogram!("tidewal_wal_upload_seconds", Unit::Seconds, "Time to check, seal and store one WAL file");
}
