//! `tidewal fork`: the spec's "restore as a fork": restore to a point in time, promote to a
//! new timeline, and run as an independent cluster on its own port that does not archive
//! into the source's repository.

use std::path::PathBuf;

use crate::config::Settings;
use crate::error::{Code, Fail, Result};
use crate::ops::restore::Action;

#[derive(Debug, clap::Args)]
#[group(id = "fork_args")]
pub struct Args {
    #[command(flatten)]
    pub restore: super::restore::Args,
    /// Port for the fork
    #[arg(long)]
    pub port: u16,
    /// Start the fork with pg_ctl once it is restored
    #[arg(long)]
    pub start: bool,
    /// Directory holding pg_ctl [default: /usr/lib/postgresql/<major>/bin, then PATH]
    #[arg(long)]
    pub pg_bin: Option<PathBuf>,
}

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let mut restore = args.restore.request(settings)?;
    if restore.target_action.is_some_and(|a| a != Action::Promote) {
        return Err(Fail::new(Code::Usage, "a fork always promotes: drop --target-action"));
    }
    if restore.as_primary {
        return Err(Fail::new(Code::Usage, "a fork is always a copy that does not archive: drop --as-primary"));
    }
    restore.target_action = Some(Action::Promote);
    restore.port = Some(args.port);
    let repo = super::open_repo(settings).await?;
    let restored = crate::ops::restore::restore(&repo, &restore).await?;
    super::restore::print_restored(&restored, false);
    if !args.start {
        println!("fork ready in {}; start it with: pg_ctl -D {} start", restore.to.display(), restore.to.display());
        return Ok(());
    }
    let pg_ctl = match &args.pg_bin {
        Some(dir) => dir.join("pg_ctl"),
        None => {
            let debian = PathBuf::from(format!("/usr/lib/postgresql/{}/bin/pg_ctl", repo.identity.pg_major()));
            if debian.exists() {
                debian
            } else {
                PathBuf::from("pg_ctl")
            }
        }
    };
    let log = restore.to.join("fork.log");
    let status = tokio::process::Command::new(&pg_ctl)
        .arg("-D")
        .arg(&restore.to)
        .arg("-l")
        .arg(&log)
        .args(["-w", "-t", "600", "start"])
        .status()
        .await
        .map_err(|e| Fail::new(Code::Postgres, format!("cannot run {}: {e} (use --pg-bin)", pg_ctl.display())))?;
    if !status.success() {
        return Err(Fail::new(Code::Postgres, format!("the fork did not start: see {}", log.display())));
    }
    println!("fork running on port {} from {} (log {})", args.port, restore.to.display(), log.display());
    Ok(())
}
