//! `tidewal daemon`: the long-running agent (see `daemon/`).

use crate::config::Settings;
use crate::error::Result;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub async fn run(settings: &Settings, _args: &Args, reload: impl Fn() -> Result<Settings>) -> Result<()> {
    crate::daemon::run(settings.clone(), reload).await
}
