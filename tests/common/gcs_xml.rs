//! fake-gcs-server writes only through GCS's JSON API, while object_store's GCS backend writes
//! through the XML API. This proxy sits between them and turns the XML writes into JSON ones:
//! a PUT of an object into a JSON upload (its `x-goog-if-generation-match: 0` into
//! `ifGenerationMatch=0`, so the emulator itself decides whether create-only writes are
//! honoured), and an XML multipart upload into parts kept here and one JSON upload at its
//! completion. Everything else (reads, listings, deletes) goes to the emulator unchanged.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use super::cloud::http;

type Uploads = Arc<Mutex<HashMap<String, BTreeMap<u32, Vec<u8>>>>>;

pub struct XmlProxy {
    pub port: u16,
    /// Multipart uploads completed so far, and their parts.
    pub completed: Arc<Mutex<(usize, usize)>>,
}

impl XmlProxy {
    /// Listen on a free port of 127.0.0.1, for the emulator on `upstream`; the listener is
    /// taken before the emulator starts, so it can name this address as its public host.
    pub fn listen() -> (TcpListener, u16) {
        let l = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = l.local_addr().unwrap().port();
        (l, port)
    }

    pub fn start(listener: TcpListener, upstream: u16) -> XmlProxy {
        let port = listener.local_addr().unwrap().port();
        let uploads: Uploads = Arc::default();
        let completed: Arc<Mutex<(usize, usize)>> = Arc::default();
        let done = completed.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (uploads, done) = (uploads.clone(), done.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, &uploads, &done);
                });
            }
        });
        XmlProxy { port, completed }
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn read_request(conn: &mut TcpStream) -> std::io::Result<Option<Request>> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if conn.read(&mut byte)? == 0 {
            return Ok(None);
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split(' ');
    let method = first.next().unwrap_or_default().to_string();
    let target = first.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert!(!headers.iter().any(|(k, _)| k == "transfer-encoding"), "chunked requests are not handled");
    let len = headers.iter().find(|(k, _)| k == "content-length").map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0u8; len];
    conn.read_exact(&mut body)?;
    Ok(Some(Request { method, path: path.to_string(), query: query.to_string(), headers, body }))
}

fn respond(conn: &mut TcpStream, status: u16, headers: &[(&str, String)], body: &[u8]) -> std::io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}

fn param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (k == name).then_some(v)
    })
}

/// An upload through the JSON API (uploadType=multipart: metadata and content in one
/// request, the kind on which the emulator applies `ifGenerationMatch`; its media uploads
/// ignore it); the status and, on success, the ETag and generation.
fn media_upload(upstream: u16, bucket: &str, key: &str, create: bool, data: &[u8]) -> (u16, String, String, String) {
    let cond = if create { "&ifGenerationMatch=0" } else { "" };
    let path = format!("/upload/storage/v1/b/{bucket}/o?uploadType=multipart&name={key}{cond}");
    let boundary = "tidewal-test-boundary-6b1f0c93e2a5d847";
    let mut body = format!(
        "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{{}}\r\n--{boundary}\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let ct = [("Content-Type", format!("multipart/related; boundary={boundary}"))];
    let (status, body) = http(upstream, "POST", &path, &ct, &body);
    if status != 200 {
        return (status, body, String::new(), String::new());
    }
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    let etag = v["etag"].as_str().unwrap_or_default().to_string();
    let generation = v["generation"].as_str().unwrap_or_default().to_string();
    (status, body, etag, generation)
}

fn serve(mut conn: TcpStream, upstream: u16, uploads: &Uploads, done: &Mutex<(usize, usize)>) -> std::io::Result<()> {
    let Some(req) = read_request(&mut conn)? else { return Ok(()) };
    let (bucket, key) = req.path.trim_start_matches('/').split_once('/').unwrap_or((&req.path, ""));
    let header = |name: &str| req.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let upload_id = param(&req.query, "uploadId").map(str::to_string);
    match (req.method.as_str(), upload_id) {
        ("PUT", Some(id)) => {
            let n: u32 = param(&req.query, "partNumber").unwrap().parse().unwrap();
            match uploads.lock().unwrap().get_mut(&id) {
                Some(parts) => parts.insert(n, req.body),
                None => return respond(&mut conn, 404, &[], b"NoSuchUpload"),
            };
            respond(&mut conn, 200, &[("ETag", format!("\"part-{n}\""))], b"")
        }
        ("PUT", None) if !key.is_empty() => {
            let create = header("x-goog-if-generation-match") == Some("0");
            let (status, body, etag, generation) = media_upload(upstream, bucket, key, create, &req.body);
            if status != 200 {
                return respond(&mut conn, status, &[], body.as_bytes());
            }
            respond(&mut conn, 200, &[("ETag", etag), ("x-goog-generation", generation)], b"")
        }
        ("POST", None) if param(&req.query, "uploads").is_some() => {
            let id = format!("tidewal-test-{}", rand_id());
            uploads.lock().unwrap().insert(id.clone(), BTreeMap::new());
            let xml = format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><InitiateMultipartUploadResult><Bucket>{bucket}</Bucket>\
                 <Key>{key}</Key><UploadId>{id}</UploadId></InitiateMultipartUploadResult>"
            );
            respond(&mut conn, 200, &[], xml.as_bytes())
        }
        ("POST", Some(id)) => {
            let Some(parts) = uploads.lock().unwrap().remove(&id) else {
                return respond(&mut conn, 404, &[], b"NoSuchUpload");
            };
            let n = parts.len();
            let data: Vec<u8> = parts.into_values().flatten().collect();
            let (status, body, etag, generation) = media_upload(upstream, bucket, key, false, &data);
            if status != 200 {
                return respond(&mut conn, status, &[], body.as_bytes());
            }
            let mut d = done.lock().unwrap();
            (d.0, d.1) = (d.0 + 1, d.1 + n);
            let xml = format!("<CompleteMultipartUploadResult><ETag>{etag}</ETag></CompleteMultipartUploadResult>");
            respond(&mut conn, 200, &[("x-goog-generation", generation)], xml.as_bytes())
        }
        ("DELETE", Some(id)) => {
            uploads.lock().unwrap().remove(&id);
            respond(&mut conn, 204, &[], b"")
        }
        _ => forward(conn, upstream, &req),
    }
}

/// Pass a request to the emulator as it came (one request per connection) and its answer back.
fn forward(mut conn: TcpStream, upstream: u16, req: &Request) -> std::io::Result<()> {
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let target = if req.query.is_empty() { req.path.clone() } else { format!("{}?{}", req.path, req.query) };
    let mut head = format!("{} {target} HTTP/1.1\r\n", req.method);
    for (k, v) in req.headers.iter().filter(|(k, _)| k != "connection") {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&req.body)?;
    std::io::copy(&mut up, &mut conn)?;
    Ok(())
}

fn rand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
