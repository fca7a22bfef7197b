//! `wal-push` as a thin client: the daemon listens on a Unix socket (mode 0600, so only its
//! own user can ask) for `push <absolute path>` lines and answers `ok stored|present` once
//! the file is durable in the repository, or `error <exit code> <message>`. The client falls
//! back to uploading by itself whenever the daemon does not answer.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;

use super::Shared;
use crate::error::{Code, Fail, Result};
use crate::repo::Pushed;

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
    let answer = match request.strip_prefix("push ") {
        Some(p) if Path::new(p).is_absolute() => match crate::ops::push::push_file(&shared.repo, Path::new(p)).await {
            Ok(r) if r.outcome == Pushed::Stored => "ok stored\n".to_string(),
            Ok(_) => "ok present\n".to_string(),
            Err(f) => failed(f),
        },
        _ if request == "backup" => match super::scheduler::backup_once(shared, &CancellationToken::new()).await {
            Some(Ok(id)) => format!("ok {id}\n"),
            Some(Err(f)) => failed(f),
            None => failed(Fail::new(Code::Internal, "the daemon stopped during the backup")),
        },
        _ => format!("error {} expected: push <absolute path>, or backup\n", Code::Usage as u8),
    };
    w.write_all(answer.as_bytes()).await
}

/// The client side, for `wal-push`: `None` when the daemon cannot be asked (then the caller
/// uploads by itself), else the daemon's verdict.
pub async fn ask(socket: &Path, file: &Path, timeout: Duration) -> Option<Result<Pushed>> {
    let file = std::path::absolute(file).ok()?;
    match request(socket, &format!("push {}", file.display()), timeout).await? {
        Ok(ok) if ok == "stored" => Some(Ok(Pushed::Stored)),
        Ok(ok) if ok == "present" => Some(Ok(Pushed::AlreadyPresent)),
        Ok(_) => None,
        Err(f) => Some(Err(f)),
    }
}

/// `tidewal backup --via-daemon`: the daemon takes the backup (never two at once); the id.
pub async fn ask_backup(socket: &Path) -> Option<Result<String>> {
    request(socket, "backup", Duration::from_secs(7 * 24 * 3600)).await
}

/// One request line, one answer line: `ok <rest>` or the daemon's error; `None` when nobody
/// answered.
async fn request(socket: &Path, line: &str, timeout: Duration) -> Option<Result<String>> {
    let exchange = async {
        let mut s = UnixStream::connect(socket).await.ok()?;
        s.write_all(format!("{line}\n").as_bytes()).await.ok()?;
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).await.ok()?;
        Some(answer)
    };
    let answer = tokio::time::timeout(timeout, exchange).await.ok()??;
    let answer = answer.trim_end();
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
        _ => Code::Internal,
    };
    Some(Err(Fail::new(code, format!("{msg} (reported by the daemon)"))))
}
