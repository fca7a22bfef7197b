//! Supervised tasks: one that fails or panics is logged, counted and restarted with
//! exponential backoff; it never takes the others down. Cancellation ends the loop.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt;
use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::redact;

/// Backoff before the n-th restart in a row (pure): 1 s doubling to 60 s.
pub fn backoff(failures_in_a_row: u32) -> Duration {
    Duration::from_secs(1u64 << failures_in_a_row.min(6)).min(Duration::from_secs(60))
}

/// Run `task` until `cancel`; an error, a panic (or an early return) restarts it after a
/// backoff. A run that lasted a minute resets the backoff.
pub async fn supervise<F, Fut>(name: &'static str, cancel: CancellationToken, on_restart: impl Fn(&str), mut task: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    // The panic hook leaves panics off the main thread to us from now on.
    crate::error::tasks_recover_from_panics();
    let mut failures = 0;
    let mut first = true;
    loop {
        let began = std::time::Instant::now();
        // Shared state survives a panic: std mutexes are taken through `daemon::lock`, which
        // ignores poisoning, and tokio's (the backup lock) are released on unwinding.
        let run = AssertUnwindSafe(async {
            test_panic(name, std::mem::take(&mut first));
            task(cancel.clone()).await
        });
        let outcome = run.catch_unwind().await;
        if cancel.is_cancelled() {
            return;
        }
        if began.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        match outcome {
            Ok(Ok(())) => tracing::warn!("task {name} stopped; restarting it"),
            Ok(Err(e)) => tracing::error!("task {name} failed: {}; restarting it", redact::text(&e.to_string())),
            Err(panic) => tracing::error!(
                "task {name} panicked: {}; restarting it",
                redact::text(&crate::error::panic_message(&*panic))
            ),
        }
        metrics::counter!("tidewal_task_restarts_total", "task" => name).increment(1);
        on_restart(name);
        let wait = backoff(failures);
        failures += 1;
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Test hook, for the tests only: `TIDEWAL_TEST_PANIC=daemon-<task>` makes that task panic
/// on its first run.
fn test_panic(name: &str, first: bool) {
    if first && std::env::var("TIDEWAL_TEST_PANIC").is_ok_and(|v| v.strip_prefix("daemon-") == Some(name)) {
        panic!("TIDEWAL_TEST_PANIC: task {name} panics");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(6), Duration::from_secs(60));
        assert_eq!(backoff(40), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_task_is_restarted_until_cancelled() {
        let cancel = CancellationToken::new();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (r, c) = (runs.clone(), cancel.clone());
        let handle = tokio::spawn(supervise(
            "t",
            cancel.clone(),
            |_| {},
            move |_| {
                let r = r.clone();
                let c = c.clone();
                async move {
                    if r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 3 {
                        c.cancel();
                    }
                    Err(crate::error::Fail::new(crate::error::Code::Internal, "boom"))
                }
            },
        ));
        handle.await.unwrap();
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_like_a_failed_one() {
        let cancel = CancellationToken::new();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let restarts = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (r, c, seen) = (runs.clone(), cancel.clone(), restarts.clone());
        let handle = tokio::spawn(supervise(
            "p",
            cancel.clone(),
            move |name| seen.lock().unwrap().push(name.to_string()),
            move |_| {
                let r = r.clone();
                let c = c.clone();
                async move {
                    match r.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
                        0 => panic!("first run panics"),
                        1 => Err(crate::error::Fail::new(crate::error::Code::Internal, "second run fails")),
                        _ => {
                            c.cancel();
                            Ok(())
                        }
                    }
                }
            },
        ));
        handle.await.expect("the supervisor itself survives the panic");
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 3);
        assert_eq!(*restarts.lock().unwrap(), ["p", "p"]);
    }
}
