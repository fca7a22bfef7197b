//! `tidewal status [--json]`: ask the running daemon over `daemon.socket` for its state (tasks,
//! lag, last backup, last verify, last restore test, health) and print it.

use std::path::Path;
use std::time::Duration;

use crate::config::Settings;
use crate::daemon::status::{DaemonStatus, RunStatus};
use crate::error::{Code, Fail, Result};
use crate::progress::human_size;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Machine-readable output (stable field names)
    #[arg(long)]
    pub json: bool,
}

/// How long to wait for the daemon: it answers from memory and two small files.
const TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(settings: &Settings, args: &Args) -> Result<()> {
    let socket = settings.daemon.socket.as_deref().ok_or_else(|| {
        Fail::new(
            Code::Usage,
            "tidewal status asks the daemon on daemon.socket, which is not set (in [daemon], or TIDEWAL_SOCKET)",
        )
    })?;
    let status = ask(socket).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&status).map_err(|e| Fail::new(Code::Internal, e.to_string()))?;
        println!("{text}");
    } else {
        print!("{}", human(&status));
    }
    Ok(())
}

/// The daemon's answer, or exit code 9 when nobody answers.
pub async fn ask(socket: &Path) -> Result<DaemonStatus> {
    match crate::daemon::socket::ask_status(socket, TIMEOUT).await {
        Some(Err(f)) if f.code == Code::Usage => Err(Fail::new(
            Code::Usage,
            format!(
                "the daemon on {} does not know `status`: it is an older version (restart it with this one)",
                socket.display()
            ),
        )),
        Some(r) => r,
        None => Err(Fail::new(
            Code::NoDaemon,
            format!(
                "no tidewal daemon answers on {} (daemon.socket): is it running, as a user that may open the socket? (systemctl status tidewal)",
                socket.display()
            ),
        )),
    }
}

fn run_line(r: Option<&RunStatus>) -> String {
    match r {
        None => "never (on this host)".into(),
        Some(r) => {
            let outcome = if r.success { "passed".to_string() } else { format!("FAILED ({} problems)", r.problems) };
            let mut line = format!("{} {outcome} in {:.1}s: {}", r.finished, r.duration_seconds, r.summary);
            if !r.success {
                line.push_str(&format!("; last passed {}", r.last_success.as_deref().unwrap_or("never")));
            }
            line
        }
    }
}

/// The human form (pure).
pub fn human(s: &DaemonStatus) -> String {
    let mut out = format!(
        "tidewal daemon {} (pid {}), running since {}\nrepository {} (database system {})\n",
        s.version, s.pid, s.started_at, s.repository, s.system_identifier
    );
    let status = serde_json::to_value(s.health.status).ok().and_then(|v| v.as_str().map(String::from));
    out.push_str(&format!("health: {}\n", status.unwrap_or_default()));
    for r in &s.health.reasons {
        out.push_str(&format!("  - {r}\n"));
    }
    let lag = match (s.lag_seconds, s.lag_bytes) {
        (Some(secs), Some(bytes)) => format!("{secs:.0}s ({} not yet durable)", human_size(bytes)),
        (Some(secs), None) => format!("{secs:.0}s"),
        _ => "unknown (the server has not been reached yet)".into(),
    };
    out.push_str(&format!("lag: {lag}\n"));
    let backup = match (&s.last_backup, s.backup_running) {
        (Some(t), true) => format!("{t} (one is running now)"),
        (Some(t), false) => t.clone(),
        (None, true) => "none yet (the first is running now)".into(),
        (None, false) => "none".into(),
    };
    out.push_str(&format!("last base backup: {backup}\n"));
    if let Some(e) = &s.last_backup_error {
        out.push_str(&format!("  the last attempt failed: {e}\n"));
    }
    out.push_str(&format!("last verify: {}\n", run_line(s.last_verify.as_ref())));
    out.push_str(&format!("last restore test: {}\n", run_line(s.last_restore_test.as_ref())));
    for c in &s.copies {
        let to = c.caught_up_to.as_deref().map(|t| format!(", holds everything before {t}")).unwrap_or_default();
        out.push_str(&format!("copy {} ({}): {:.0}s behind{to}\n", c.repo, c.url, c.lag_seconds));
        if let Some(e) = &c.last_error {
            out.push_str(&format!("  the last round failed: {e}\n"));
        }
    }
    let tasks: Vec<String> = s
        .tasks
        .iter()
        .map(|t| match (t.restarts, &t.last_restart) {
            (0, _) => t.name.clone(),
            (n, Some(at)) => format!("{} (restarted {n}x, last {at})", t.name),
            (n, None) => format!("{} (restarted {n}x)", t.name),
        })
        .collect();
    out.push_str(&format!("tasks: {}\n", tasks.join(", ")));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::health::{Health, Status};
    use crate::daemon::status::TaskStatus;

    #[test]
    fn the_human_form_says_what_failed_and_what_never_ran() {
        let s = DaemonStatus {
            pid: 42,
            version: "0.1.0".into(),
            repository: "file:///r".into(),
            key_id: "-".into(),
            system_identifier: "7".into(),
            started_at: "2026-11-26T10:00:00Z".into(),
            now: "2026-11-26T11:00:00Z".into(),
            health: Health { status: Status::Degraded, reasons: vec!["the last restore test failed: x".into()] },
            tasks: vec![
                TaskStatus { name: "archiver".into(), restarts: 0, last_restart: None },
                TaskStatus { name: "monitor".into(), restarts: 2, last_restart: Some("2026-11-26T10:30:00Z".into()) },
            ],
            lag_seconds: Some(3.4),
            lag_bytes: Some(2048),
            backup_running: true,
            last_backup: None,
            last_backup_error: None,
            last_verify: None,
            last_restore_test: Some(RunStatus {
                finished: "2026-11-26T10:45:00Z".into(),
                success: false,
                problems: 1,
                duration_seconds: 12.0,
                last_success: None,
                summary: "amcheck postgres public.i: corrupt".into(),
            }),
            copies: vec![crate::daemon::status::CopyStatus {
                repo: 2,
                url: "s3://eu/db".into(),
                lag_seconds: 12.2,
                caught_up_to: Some("2026-11-26T10:59:48Z".into()),
                last_error: Some("timed out".into()),
            }],
        };
        let text = human(&s);
        for needle in [
            "health: degraded\n  - the last restore test failed: x\n",
            "lag: 3s (2.0 KiB not yet durable)",
            "last base backup: none yet (the first is running now)",
            "last verify: never",
            "last restore test: 2026-11-26T10:45:00Z FAILED (1 problems) in 12.0s: amcheck postgres public.i: corrupt; last passed never",
            "tasks: archiver, monitor (restarted 2x, last 2026-11-26T10:30:00Z)",
            "copy 2 (s3://eu/db): 12s behind, holds everything before 2026-11-26T10:59:48Z\n  the last round failed: timed out\n",
        ] {
            assert!(text.contains(needle), "{needle:?} not in:\n{text}");
        }
    }
}
