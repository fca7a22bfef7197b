//! Supervised tasks: one that fails is logged, counted and restarted with exponential
//! backoff; it never takes the others down. Cancellation ends the loop.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::error::Result;

/// Backoff before the n-th restart in a row (pure): 1 s doubling to 60 s.
pub fn backoff(failures_in_a_row: u32) -> Duration {
    Duration::from_secs(1u64 << failures_in_a_row.min(6)).min(Duration::from_secs(60))
}

/// Run `task` until `cancel`; an error (or an early return) restarts it after a backoff.
/// A run that lasted a minute resets the backoff.
pub async fn supervise<F, Fut>(name: &'static str, cancel: CancellationToken, on_restart: impl Fn(&str), mut task: F)
where
    F: FnMut(CancellationToken) -> Fut,
    Fut: Future<Output = Result<()>>,
{
    let mut failures = 0;
    loop {
        let began = std::time::Instant::now();
        let outcome = task(cancel.clone()).await;
        if cancel.is_cancelled() {
            return;
        }
        if began.elapsed() > Duration::from_secs(60) {
            failures = 0;
        }
        match outcome {
            Ok(()) => tracing::warn!("task {name} stopped; restarting it"),
            Err(e) => tracing::error!("task {name} failed: {e}; restarting it"),
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
}
