//! The Prometheus endpoint (`/metrics`) and `/healthz` on one listener.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use super::health::{evaluate, Status};
use super::Shared;
use crate::error::{Code, Fail, Result};

pub async fn run(shared: Arc<Shared>, prometheus: PrometheusHandle, cancel: CancellationToken) -> Result<()> {
    let addr = shared.settings.daemon.listen;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Fail::new(Code::Usage, format!("cannot listen on {addr} (daemon.listen): {e}")))?;
    tracing::info!("metrics on http://{addr}/metrics, health on http://{addr}/healthz");
    loop {
        let (stream, _) = tokio::select! {
            _ = cancel.cancelled() => return Ok(()),
            a = listener.accept() => a.map_err(|e| Fail::new(Code::Internal, format!("{addr}: {e}")))?,
        };
        let (shared, prometheus) = (shared.clone(), prometheus.clone());
        let service = hyper::service::service_fn(move |req| {
            let r = respond(&req, &shared, &prometheus);
            async move { Ok::<_, Infallible>(r) }
        });
        tokio::spawn(async move {
            if let Err(e) =
                hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
            {
                tracing::debug!("metrics connection: {e}");
            }
        });
    }
}

fn respond(
    req: &Request<hyper::body::Incoming>,
    shared: &Shared,
    prometheus: &PrometheusHandle,
) -> Response<Full<Bytes>> {
    let (status, kind, body) = match req.uri().path() {
        "/metrics" => {
            super::outcomes::export(shared);
            super::copier::export(shared);
            (StatusCode::OK, "text/plain; version=0.0.4", prometheus.render())
        }
        "/healthz" => {
            let state = super::lock(&shared.state).clone();
            let h = evaluate(&state, SystemTime::now(), shared.settings.daemon.flush_interval);
            let code = if h.status == Status::Failing { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
            (code, "application/json", serde_json::to_string(&h).unwrap_or_default() + "\n")
        }
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics or /healthz\n".into()),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(kind) {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}
