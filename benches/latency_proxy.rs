//! A TCP proxy that delays every byte by a fixed time in each direction, to bench tidewal
//! against an object store that is far away (scripts/bench-remote.sh).
//!
//!   latency_proxy LISTEN UPSTREAM DELAY_MS
//!
//! Bytes keep flowing while earlier ones wait (each direction is a queue of timestamped
//! reads), so a connection behaves like a long link, not a slow one: a request and its
//! answer take 2 × DELAY_MS more, whatever their size. It prints the connection count on
//! stderr when it stops (SIGTERM or Ctrl-C).

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

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let reader = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
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

async fn serve(client: TcpStream, upstream: String, delay: Duration) {
    let Ok(server) = TcpStream::connect(&upstream).await else { return };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    // The connection itself costs one round trip, as on a real link.
    tokio::time::sleep(delay * 2).await;
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, delay), pump(sr, cw, delay));
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
    let connections = Arc::new(AtomicU64::new(0));
    let counted = connections.clone();
    let accept = async move {
        loop {
            let Ok((client, _)) = listener.accept().await else { continue };
            counted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(client, upstream.clone(), delay));
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
