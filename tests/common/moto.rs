//! moto's S3 server for the tests of incomplete multipart uploads.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{free_port, wait_for, S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY};

/// An S3 server that lists and aborts incomplete multipart uploads (moto's server, which
/// s3s-fs does not cover) on 127.0.0.1, with the bucket [`S3_BUCKET`]. It takes any
/// credentials, so the test reaches it with plain unsigned requests ([`MotoServer::http`]).
pub struct MotoServer {
    child: Child,
    pub port: u16,
}

impl MotoServer {
    pub fn start(log: &Path) -> MotoServer {
        let port = free_port();
        let log = std::fs::File::create(log).unwrap();
        let mut cmd = match std::env::var("TIDEWAL_MOTO_SERVER") {
            Ok(p) => Command::new(p),
            Err(_) => {
                let mut c = Command::new("python3");
                c.args(["-m", "moto.server"]);
                c
            }
        };
        let child = cmd
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start moto's server: pip install 'moto[server]' (or set TIDEWAL_MOTO_SERVER)");
        let mut m = MotoServer { child, port };
        wait_for("moto's server to listen", Duration::from_secs(60), || {
            assert!(m.child.try_wait().unwrap().is_none(), "moto's server exited: pip install 'moto[server]'");
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        let (status, body) = m.http("PUT", &format!("/{S3_BUCKET}"), b"");
        assert_eq!(status, 200, "cannot create the bucket: {body}");
        m
    }

    /// One plain HTTP request; the status and the body.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/octet-stream\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.port,
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
        (status, body)
    }

    /// The bucket's incomplete multipart uploads: (key, upload id).
    pub fn uploads(&self) -> Vec<(String, String)> {
        let (status, body) = self.http("GET", &format!("/{S3_BUCKET}?uploads"), b"");
        assert_eq!(status, 200, "{body}");
        let tag = |s: &str, t: &str| {
            let from = s.find(&format!("<{t}>"))? + t.len() + 2;
            Some(s[from..from + s[from..].find(&format!("</{t}>"))?].to_string())
        };
        let mut out: Vec<(String, String)> =
            body.split("<Upload>").skip(1).map(|u| (tag(u, "Key").unwrap(), tag(u, "UploadId").unwrap())).collect();
        out.sort();
        out
    }

    /// Start a multipart upload of `key` that is never completed; with `part`, upload one
    /// small part (moto dates every upload's start in 2010: a part dates its activity).
    pub fn start_upload(&self, key: &str, part: bool) -> String {
        let (status, body) = self.http("POST", &format!("/{S3_BUCKET}/{key}?uploads"), b"");
        assert_eq!(status, 200, "{body}");
        let from = body.find("<UploadId>").unwrap() + "<UploadId>".len();
        let id = body[from..from + body[from..].find("</UploadId>").unwrap()].to_string();
        if part {
            let (status, body) =
                self.http("PUT", &format!("/{S3_BUCKET}/{key}?partNumber=1&uploadId={id}"), b"part one");
            assert_eq!(status, 200, "{body}");
        }
        id
    }

    /// Does an upload of `key` have a part yet?
    pub fn has_part(&self, key: &str, id: &str) -> bool {
        let (status, body) = self.http("GET", &format!("/{S3_BUCKET}/{key}?uploadId={id}"), b"");
        status == 200 && body.contains("<Part>")
    }

    /// The `[repository]` settings for this server. moto before 5 ignores conditional
    /// writes, so these accept such a store (the tests of uploads need no second writer).
    pub fn repo_config(&self, prefix: &str) -> String {
        self.strict_repo_config(prefix).replacen(
            "[repository.s3]",
            "require_conditional_writes = false\n[repository.s3]",
            1,
        )
    }

    /// The `[repository]` settings, refusing a store that ignores conditional writes.
    pub fn strict_repo_config(&self, prefix: &str) -> String {
        format!(
            "url = \"s3://{S3_BUCKET}/{prefix}\"\nretry_timeout = \"3s\"\n[repository.s3]\nendpoint = \"http://127.0.0.1:{}\"\n\
             region = \"us-east-1\"\naccess_key_id = \"{S3_ACCESS_KEY}\"\nsecret_access_key = \"{S3_SECRET_KEY}\"\nallow_http = true\n",
            self.port
        )
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
