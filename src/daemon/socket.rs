//! `wal-push` as a thin client: the daemon listens on a Unix socket (mode 0600, so only its
//! own user can ask) for `push-to <repository> <key id> <absolute path>` lines and answers
//! `ok stored|present` once the file is durable in the repository, `not-mine <its
//! repository>` when asked for another repository (or with another key), or `error <exit
//! code> <message>`. The client uploads by itself whenever the daemon does not answer, or
//! answers that it is not its repository. A daemon of an earlier version answers `push-to`
//! with a usage error: that too means "upload by yourself". The earlier `push <absolute
//! path>`, which names no repository, is still served for the daemon's own. `backup` takes
//! a base backup (`tidewal backup --via-daemon`); `status` answers `ok <one line of JSON>`
//! (`tidewal status`, and the lag in `tidewal list`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::repo::Pushed;

/// Which repository a request is for: the URL as configured (normalised, with the S3
/// endpoint, which tells two `s3://bucket/prefix` apart) and the id of the key that seals.
/// Not the system identifier: `wal-push` would have to read `tidewal.json` (a request to
/// the store, and for S3 a round trip) before every segment just to ask the daemon, which
/// is what the socket saves. The daemon's repository is bound to its cluster already, and
/// a wal-push uploading by itself checks the system identifier of the file against the
/// repository it was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoIdentity {
    pub url: String,
    /// Hex id of the write key, `-` for a plaintext repository.
    pub key: String,
}

impl RepoIdentity {
    /// Whether a request for `asked` is for this repository (pure). What the client does not
    /// know counts as unspecified: under systemd only the daemon holds the key
    /// (`LoadCredential`) and may hold the S3 endpoint (`EnvironmentFile`), so PostgreSQL's
    /// `wal-push` asks with key `-` and a bare URL. Refusing that would make every wal-push
    /// upload by itself without the key, fail, and stall archiving.
    pub fn serves(&self, asked: &RepoIdentity) -> bool {
        let key_ok = asked.key == "-" || asked.key == self.key;
        let url_ok = asked.url == self.url
            || (!asked.url.contains(" endpoint=") && self.url.split(" endpoint=").next() == Some(asked.url.as_str()));
        key_ok && url_ok
    }

    pub fn of(settings: &Settings) -> RepoIdentity {
        RepoIdentity {
            url: normalise_url(&settings.repo_url, settings.store.s3.endpoint.as_deref()),
            key: settings.keys.write_key().map(|k| k.id_hex()).unwrap_or_else(|| "-".into()),
        }
    }
}

/// One spelling per repository (pure): a bare path and `file://` the same, no trailing or
/// doubled slashes, `.` dropped; S3 with its endpoint, if one is set.
pub fn normalise_url(url: &str, s3_endpoint: Option<&str>) -> String {
    let url = url.trim();
    let local = if url.starts_with('/') {
        Some(PathBuf::from(url))
    } else if url.starts_with("file://") {
        url::Url::parse(url).ok().and_then(|u| u.to_file_path().ok())
    } else {
        None
    };
    if let Some(p) = local {
        let clean: PathBuf = p.components().collect();
        return format!("file://{}", clean.display());
    }
    if let Some(rest) = url.strip_prefix("s3://") {
        let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
        let endpoint = s3_endpoint.map(|e| format!(" endpoint={}", e.trim().trim_end_matches('/'))).unwrap_or_default();
        return format!("s3://{}{endpoint}", parts.join("/"));
    }
    url.to_string()
}

/// Spaces and newlines would end a field of the request line.
fn escape(s: &str) -> String {
    s.replace('%', "%25").replace(' ', "%20").replace('\n', "%0A")
}

fn unescape(s: &str) -> String {
    s.replace("%0A", "\n").replace("%20", " ").replace("%25", "%")
}

pub async fn run(shared: Arc<Shared>, path: PathBuf, cancel: CancellationToken) -> Result<()> {
    // A socket left by a daemon that died: nobody answers on it any more.
    if path.exists() && UnixStream::connect(&path).await.is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path)
        .map_err(|e| Fail::new(Code::Usage, format!("cannot listen on {} (daemon.socket): {e}", path.display())))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| Fail::new(Code::Storage, format!("{}: {e}", path.display())))?;
    tracing::info!("taking wal-push requests on {}", path.display());
    let served = async {
        loop {
            let (stream, _) = listener.accept().await.map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
            let shared = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = serve(&shared, stream).await {
                    tracing::debug!("wal-push client: {e}");
                }
            });
        }
    };
    let out = tokio::select! {
        _ = cancel.cancelled() => Ok(()),
        r = served => r,
    };
    let _ = std::fs::remove_file(&path);
    out
}

async fn serve(shared: &Shared, stream: UnixStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut line = String::new();
    BufReader::new(r).read_line(&mut line).await?;
    let failed = |f: Fail| format!("error {} {}\n", f.code as u8, f.message.replace('\n', " "));
    let request = line.trim_end();
    let push = |p: &str| {
        let p = p.to_string();
        async move {
            match super::archiver::push_once(shared, Path::new(&p)).await {
                Ok(Pushed::Stored) => "ok stored\n".to_string(),
                Ok(_) => "ok present\n".to_string(),
                Err(f) => failed(f),
            }
        }
    };
    let push_to = request.strip_prefix("push-to ").and_then(|rest| {
        let (url, rest) = rest.split_once(' ')?;
        let (key, path) = rest.split_once(' ')?;
        Some((RepoIdentity { url: unescape(url), key: key.to_string() }, path))
    });
    let answer = match (push_to, request.strip_prefix("push ")) {
        (Some((asked, p)), _) if Path::new(p).is_absolute() => {
            let mine = RepoIdentity::of(&shared.settings);
            if mine.serves(&asked) {
                push(p).await
            } else {
                tracing::debug!(
                    "wal-push asked for {} (key {}); this daemon serves {}",
                    asked.url,
                    asked.key,
                    mine.url
                );
                format!("not-mine {} {}\n", escape(&mine.url), mine.key)
            }
        }
        // An earlier wal-push, which names no repository.
        (None, Some(p)) if Path::new(p).is_absolute() => push(p).await,
        _ if request == "status" => match serde_json::to_string(&super::status::snapshot(shared)) {
            Ok(json) => format!("ok {json}\n"),
            Err(e) => failed(Fail::new(Code::Internal, e.to_string())),
        },
        _ if request == "refresh" => match super::monitor::refresh_repo_stats(shared).await {
            Ok(_) => "ok refreshed\n".to_string(),
            Err(f) => failed(f),
        },
        _ if request == "backup" => match super::scheduler::backup_once(shared, &CancellationToken::new()).await {
            Some(Ok(id)) => format!("ok {id}\n"),
            Some(Err(f)) => failed(f),
            None => failed(Fail::new(Code::Internal, "the daemon stopped during the backup")),
        },
        _ => format!(
            "error {} expected: push-to <repository> <key id> <absolute path>, push <absolute path>, backup, refresh, or status\n",
            Code::Usage as u8
        ),
    };
    w.write_all(answer.as_bytes()).await
}

/// What the daemon said to a push.
#[derive(Debug)]
pub enum Answer {
    /// Durable in the repository that was asked for.
    Done(Pushed),
    Failed(Fail),
    /// The daemon serves another repository (named): upload by yourself.
    NotMine(String),
    /// Nobody answered, or a daemon too old to be asked for a repository: upload by yourself.
    NoAnswer,
}

/// The client side, for `wal-push`: whether the daemon stored `file` in the repository
/// `repo` names.
pub async fn ask(socket: &Path, repo: &RepoIdentity, file: &Path, timeout: Duration) -> Answer {
    let Ok(file) = std::path::absolute(file) else { return Answer::NoAnswer };
    let line = format!("push-to {} {} {}", escape(&repo.url), repo.key, file.display());
    let Some(answer) = exchange(socket, &line, timeout).await else { return Answer::NoAnswer };
    if let Some(theirs) = answer.strip_prefix("not-mine ") {
        let url = theirs.split(' ').next().unwrap_or_default();
        return Answer::NotMine(unescape(url));
    }
    match parse(&answer) {
        Some(Ok(ok)) if ok == "stored" => Answer::Done(Pushed::Stored),
        Some(Ok(ok)) if ok == "present" => Answer::Done(Pushed::AlreadyPresent),
        // A daemon that does not know `push-to` yet.
        Some(Err(f)) if f.code == Code::Usage => Answer::NoAnswer,
        Some(Err(f)) => Answer::Failed(f),
        _ => Answer::NoAnswer,
    }
}

/// `tidewal backup --via-daemon`: the daemon takes the backup (never two at once); the id.
pub async fn ask_backup(socket: &Path) -> Option<Result<String>> {
    request(socket, "backup", Duration::from_secs(7 * 24 * 3600)).await
}

/// After a backup taken beside the daemon: read the backups again (metrics, status). Best
/// effort: no daemon, or one that does not know the request, changes nothing.
pub async fn ask_refresh(socket: &Path) {
    let _ = request(socket, "refresh", Duration::from_secs(10)).await;
}

/// `tidewal status`: the daemon's state; `None` when nobody answered in `timeout`. A daemon
/// too old to know `status` answers with a usage error.
pub async fn ask_status(socket: &Path, timeout: Duration) -> Option<Result<super::status::DaemonStatus>> {
    Some(request(socket, "status", timeout).await?.and_then(|json| {
        serde_json::from_str(&json)
            .map_err(|e| Fail::new(Code::Internal, format!("the daemon's status is not what this version reads: {e}")))
    }))
}

/// One request line, one answer line: `ok <rest>` or the daemon's error; `None` when nobody
/// answered.
async fn request(socket: &Path, line: &str, timeout: Duration) -> Option<Result<String>> {
    parse(&exchange(socket, line, timeout).await?)
}

/// Send one line, read one line back (trimmed); `None` when nobody answered in time.
async fn exchange(socket: &Path, line: &str, timeout: Duration) -> Option<String> {
    let exchange = async {
        let mut s = UnixStream::connect(socket).await.ok()?;
        s.write_all(format!("{line}\n").as_bytes()).await.ok()?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).await.ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange).await.ok()??;
    Some(answer.trim_end().to_string())
}

/// `ok <rest>`, or `error <code> <message>` as the error it reports.
fn parse(answer: &str) -> Option<Result<String>> {
    if let Some(ok) = answer.strip_prefix("ok ") {
        return Some(Ok(ok.to_string()));
    }
    let rest = answer.strip_prefix("error ")?;
    let (code, msg) = rest.split_once(' ')?;
    let code = match code.parse::<u8>().ok()? {
        1 => Code::NotFound,
        2 => Code::Usage,
        3 => Code::BadInput,
        4 => Code::Conflict,
        5 => Code::Integrity,
        6 => Code::Storage,
        7 => Code::Postgres,
        8 => Code::CheckFailed,
        9 => Code::NoDaemon,
        _ => Code::Internal,
    };
    Some(Err(Fail::new(code, format!("{msg} (reported by the daemon)"))))
}

#[cfg(test)]
mod tests {

    #[test]
    fn what_the_client_does_not_know_is_unspecified() {
        let id = |url: &str, key: &str| RepoIdentity { url: url.into(), key: key.into() };
        let mine = id("s3://bucket/prefix endpoint=http://127.0.0.1:9000", "00aa11bb22cc33dd");
        // PostgreSQL's wal-push under systemd: no key, no endpoint.
        assert!(mine.serves(&id("s3://bucket/prefix", "-")));
        assert!(mine.serves(&id("s3://bucket/prefix endpoint=http://127.0.0.1:9000", "00aa11bb22cc33dd")));
        assert!(!mine.serves(&id("s3://bucket/other", "-")));
        assert!(!mine.serves(&id("s3://bucket/prefix endpoint=http://10.0.0.1:9000", "-")));
        assert!(!mine.serves(&id("s3://bucket/prefix", "ffffffffffffffff")));
        let local = id("file:///var/backups/tidewal", "-");
        assert!(local.serves(&id("file:///var/backups/tidewal", "-")));
        assert!(!local.serves(&id("file:///var/backups/other", "-")));
    }
    use super::*;

    #[test]
    fn one_spelling_per_repository() {
        let n = |u| normalise_url(u, None);
        assert_eq!(n("/var/lib/tidewal/repo"), "file:///var/lib/tidewal/repo");
        assert_eq!(n("file:///var/lib/tidewal/repo/"), "file:///var/lib/tidewal/repo");
        assert_eq!(n("file:///var/lib//tidewal/./repo"), "file:///var/lib/tidewal/repo");
        assert_ne!(n("/var/lib/tidewal/repo"), n("/var/lib/tidewal/dr"));
        assert_eq!(n("s3://bucket/prefix/"), n("s3://bucket//prefix"));
        assert_ne!(n("s3://bucket/a"), n("s3://bucket/b"));
        assert_ne!(normalise_url("s3://b/p", Some("http://minio:9000/")), n("s3://b/p"));
        assert_eq!(
            normalise_url("s3://b/p", Some("http://minio:9000/")),
            normalise_url("s3://b/p/", Some("http://minio:9000"))
        );
    }

    #[test]
    fn fields_survive_the_line() {
        let url = "file:///srv/my repo/100%";
        assert_eq!(unescape(&escape(url)), url);
        assert!(!escape(url).contains(' '));
        assert_eq!(parse("ok stored").unwrap().unwrap(), "stored");
        let e = parse("error 4 object exists").unwrap().unwrap_err();
        assert_eq!(e.code, Code::Conflict);
        assert!(parse("not-mine file:///x -").is_none());
    }

    /// A daemon answers only for its own repository; a daemon that does not know `push-to`
    /// yet (its usage error) means "upload by yourself", as does silence.
    #[tokio::test]
    async fn answers_for_another_repository_or_an_older_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s");
        let listener = UnixListener::bind(&sock).unwrap();
        let answers = ["not-mine file:///srv/main%20repo -\n", "error 2 expected: push <absolute path>, or backup\n"];
        let server = tokio::spawn(async move {
            let mut asked = Vec::new();
            for a in answers {
                let (s, _) = listener.accept().await.unwrap();
                let (r, mut w) = s.into_split();
                let mut line = String::new();
                BufReader::new(r).read_line(&mut line).await.unwrap();
                asked.push(line);
                w.write_all(a.as_bytes()).await.unwrap();
            }
            asked
        });
        let me = RepoIdentity { url: "file:///srv/dr".into(), key: "-".into() };
        let t = Duration::from_secs(10);
        let a = ask(&sock, &me, Path::new("/pg/pg_wal/000000010000000000000001"), t).await;
        assert!(matches!(&a, Answer::NotMine(u) if u == "file:///srv/main repo"), "{a:?}");
        assert!(matches!(ask(&sock, &me, Path::new("/x/y"), t).await, Answer::NoAnswer));
        let asked = server.await.unwrap();
        assert_eq!(asked[0], "push-to file:///srv/dr - /pg/pg_wal/000000010000000000000001\n");
        drop(dir);
        assert!(matches!(ask(&sock, &me, Path::new("/x/y"), t).await, Answer::NoAnswer));
    }
}
