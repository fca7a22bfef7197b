//! Progress of long transfers: a bar on a terminal (indicatif), a log line every
//! ten seconds otherwise (systemd, cron, CI logs).

use std::io::{IsTerminal, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

#[derive(Clone)]
pub struct Progress {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    stop: Option<Arc<tokio::sync::Notify>>,
}

impl Progress {
    /// `total` is an estimate (0 when unknown); must be called inside a tokio runtime.
    pub fn start(what: &str, total: u64) -> Progress {
        let done = Arc::new(AtomicU64::new(0));
        if std::io::stderr().is_terminal() {
            let bar = ProgressBar::new(total);
            let template = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(what.to_string());
            return Progress { bar: Some(bar), done, stop: None };
        }
        let stop = Arc::new(tokio::sync::Notify::new());
        let (d, s, what, began) = (done.clone(), stop.clone(), what.to_string(), Instant::now());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = s.notified() => break,
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                }
                let n = d.load(Ordering::Relaxed);
                let rate = n as f64 / began.elapsed().as_secs_f64().max(0.001);
                let of = if total > 0 {
                    format!(" of about {} ({:.0}%)", human_size(total), 100.0 * n as f64 / total as f64)
                } else {
                    String::new()
                };
                tracing::info!("{what}: {}{of}, {}/s", human_size(n), human_size(rate as u64));
            }
        });
        Progress { bar: None, done, stop: Some(stop) }
    }

    pub fn add(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    /// A reader that counts what passes through it.
    pub fn wrap<R: Read>(&self, inner: R) -> Counted<R> {
        Counted { inner, progress: self.clone() }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if let Some(s) = &self.stop {
            s.notify_one();
        }
    }
}

pub struct Counted<R> {
    inner: R,
    progress: Progress,
}

impl<R: Read> Read for Counted<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(n as u64);
        Ok(n)
    }
}

/// Sizes for people: "1.5 GiB", "48.0 MiB", "512 bytes".
pub fn human_size(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 30 => format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64),
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / (1u64 << 10) as f64),
        b => format!("{b} bytes"),
    }
}
