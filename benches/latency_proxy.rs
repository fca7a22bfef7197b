//! A TCP proxy that delays every byte by a fixed time in each direction, to bench tidewal
//! against an object store that is far away (scripts/bench-remote.sh).
//!
//!   latency_proxy LISTEN UPSTREAM DELAY_MS
//!
//! Bytes keep flowing while earlier ones wait (each direction is a queue of timestamped
//! reads), so a connection behaves like a long link, not a slow one: a request and its
//! answer take 2 × DELAY_MS more, whatever their size. It prints the connection count on
//! stderr when it stops (SIGTERM or Ctrl-C). With LATENCY_PROXY_TRACE=1 it also prints each
//! new connection and each HTTP request and status line as it arrives (milliseconds since start), to
//! find the round trips a command makes one after the other.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Reads kept in flight per direction; a full queue holds the reader back (bounded memory).
const QUEUE: usize = 256;

/// Where a connection's requests are reported: its number, when tracing is on.
#[derive(Clone, Copy)]
struct Trace {
    conn: u64,
    start: Instant,
}

impl Trace {
    fn say(&self, what: &str) {
        eprintln!("{:>8.1} ms  conn {:>3}  {what}", self.start.elapsed().as_secs_f64() * 1e3, self.conn);
    }

    /// The request (or status) line, if this read starts an HTTP request (or answer).
    fn request(&self, bytes: &[u8]) {
        const METHODS: [&[u8]; 7] = [b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ", b"PATCH ", b"HTTP/1.1 "];
        if METHODS.iter().any(|m| bytes.starts_with(m)) {
            let end = bytes.iter().position(|&b| b == b'\r').unwrap_or(bytes.len().min(200));
            self.say(&String::from_utf8_lossy(&bytes[..end]));
        }
    }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration, trace: Option<Trace>) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if let Some(t) = &trace {
                        t.request(&buf[..n]);
                    }
                    if tx.send((Instant::now() + delay, buf[..n].to_vec())).await.is_err() {
                        break;
                    }
                }
            }
        }
    };
    let writer = async move {
        while let Some((due, bytes)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        // The end of the stream is delayed like the bytes before it.
        let _ = to.shutdown().await;
    };
    tokio::join!(reader, writer);
}

async fn serve(client: TcpStream, upstream: String, delay: Duration, trace: Option<Trace>) {
    if let Some(t) = &trace {
        t.say("connect");
    }
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The connection itself costs one round trip, as on a real link.
    tokio::time::sleep(delay * 2).await;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, delay, trace), pump(sr, cw, delay, trace));
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let [listen, upstream, delay] = &args[..] else {
        eprintln!("usage: latency_proxy LISTEN_ADDR UPSTREAM_ADDR DELAY_MS");
        std::process::exit(2);
    };
    let delay = Duration::from_millis(delay.parse().expect("DELAY_MS is a number of milliseconds"));
    let listener = TcpListener::bind(listen).await.expect("cannot listen");
    let tracing = std::env::var_os("LATENCY_PROXY_TRACE").is_some_and(|v| v != "0");
    let start = Instant::now();
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    let accept = async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            let conn = counted.fetch_add(1, Ordering::Relaxed) + 1;
            let trace = tracing.then_some(Trace { conn, start });
            tokio::spawn(serve(client, upstream.clone(), delay, trace));
        }
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal");
    tokio::select! {
        _ = accept => {}
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!("latency_proxy: {} connections", connections.load(Ordering::Relaxed));
}
