//! `tidewal wal-push %p`: PostgreSQL's archive_command.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::daemon::socket::{ask, Answer, RepoIdentity};
use crate::error::Result;
use crate::ops::push::{push_file, report};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to archive (%p: a path relative to the data directory)
    pub path: PathBuf,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let started = Instant::now();
    if let Some(socket) = &settings.daemon.socket {
        // The daemon answers once the file is durable, and only for its own repository;
        // otherwise upload here, into the repository this command was given.
        let repo = RepoIdentity::of(settings);
        match ask(socket, &repo, &args.path, Duration::from_secs(600)).await {
            Answer::Done(outcome) => {
                let name = args.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                report(&name, outcome, " via the daemon", "", started);
                return Ok(());
            }
            Answer::Failed(f) => return Err(f),
            Answer::NotMine(theirs) => {
                tracing::info!(
                    "the daemon on {} serves {theirs}, not {}: uploading directly",
                    socket.display(),
                    repo.url
                )
            }
            Answer::NoAnswer => {
                tracing::debug!("the daemon did not answer on {}; uploading directly", socket.display())
            }
        }
    }
    let repo = settings.open_repo_cached().await?;
    tracing::debug!("repository opened after {} ms", started.elapsed().as_millis());
    push_file(&repo, &args.path).await.map(|_| ())
}
