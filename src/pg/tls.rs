//! TLS for PostgreSQL connections, with libpq's `sslmode` rules: the settings, the rustls
//! client configuration, and opening a stream to a server (SSLRequest, then the handshake).
//! Both the SQL connection (tokio-postgres over this stream) and the replication connection
//! use [`connect`], so they behave alike.

use std::fmt;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::message::frontend;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::config::Host;

use super::conninfo::ConnConfig;

/// libpq's `sslmode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn parse(s: &str) -> Option<SslMode> {
        Some(match s {
            "disable" => SslMode::Disable,
            "allow" => SslMode::Allow,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Allow => "allow",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the trusted CA certificates come from (`sslrootcert`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootCert {
    File(PathBuf),
    /// `sslrootcert=system`: the operating system's trust store.
    System,
}

impl fmt::Display for RootCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCert::File(p) => write!(f, "{}", p.display()),
            RootCert::System => f.write_str("system"),
        }
    }
}

/// The TLS side of the connection settings, resolved from the conninfo and PGSSL* variables
/// (see `conninfo::resolve`). Files are only read when a TLS connection is attempted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub mode: SslMode,
    /// None when neither sslrootcert nor a home directory (for ~/.postgresql/root.crt) is known.
    pub root_cert: Option<RootCert>,
    /// Client certificate and key; the certificate is only sent if its file exists (as libpq).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings { mode: SslMode::Prefer, root_cert: None, cert: None, key: None }
    }
}

/// What is checked about the server's certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    Nothing,
    /// The chain must lead to a trusted root (verify-ca).
    Chain,
    /// The chain, and the certificate must name the host (verify-full).
    ChainAndName,
}

/// libpq's decision: verify-ca and verify-full need root certificates; weaker modes still
/// verify the chain when a root certificate file exists, and accept anything otherwise.
pub fn verification(mode: SslMode, root: Option<&RootCert>, root_file_exists: bool) -> Result<Verify, String> {
    let have_roots = match root {
        Some(RootCert::System) => true,
        Some(RootCert::File(_)) => root_file_exists,
        None => false,
    };
    let strict = matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull);
    if !have_roots {
        if !strict {
            return Ok(Verify::Nothing);
        }
        return Err(match root {
            Some(RootCert::File(p)) => format!(
                "root certificate file {} does not exist: provide it (sslrootcert or PGSSLROOTCERT), use the \
                 system's trusted roots with sslrootcert=system, or change sslmode={mode} to one that does not \
                 verify the server certificate",
                p.display()
            ),
            _ => format!(
                "sslmode={mode} needs the CA certificate to verify the server with: set sslrootcert (or \
                 PGSSLROOTCERT) to its file, or sslrootcert=system"
            ),
        });
    }
    Ok(if mode == SslMode::VerifyFull { Verify::ChainAndName } else { Verify::Chain })
}

/// The crypto provider already in the tree (object_store's rustls uses aws-lc-rs). Passing it
/// explicitly avoids depending on a process-wide default.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl TlsSettings {
    /// The rustls client configuration: reads the root and client certificate files.
    pub fn client_config(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = provider();
        let root_exists = matches!(&self.root_cert, Some(RootCert::File(p)) if p.exists());
        let verify = verification(self.mode, self.root_cert.as_ref(), root_exists)?;
        let verifier: Arc<dyn ServerCertVerifier> = match verify {
            Verify::Nothing => Arc::new(AcceptAnyCert(provider.clone())),
            Verify::Chain | Verify::ChainAndName => {
                let roots = self.load_roots()?;
                let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| format!("cannot use the root certificates in {}: {e}", self.root_display()))?;
                match verify {
                    Verify::Chain => Arc::new(ChainOnly(webpki)),
                    _ => webpki,
                }
            }
        };
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match self.client_identity()? {
            Some((chain, key)) => builder.with_client_auth_cert(chain, key).map_err(|e| {
                format!(
                    "cannot use client certificate {}: {e}",
                    self.cert.as_ref().map(|p| p.display().to_string()).unwrap_or_default()
                )
            })?,
            None => builder.with_no_client_auth(),
        };
        // What libpq 17 sends; PostgreSQL 17 checks it when present, older servers ignore it.
        config.alpn_protocols = vec![b"postgresql".to_vec()];
        Ok(Arc::new(config))
    }

    fn root_display(&self) -> String {
        self.root_cert.as_ref().map(|r| r.to_string()).unwrap_or_else(|| "(none)".into())
    }

    fn load_roots(&self) -> Result<RootCertStore, String> {
        let mut roots = RootCertStore::empty();
        match &self.root_cert {
            Some(RootCert::File(path)) => {
                let certs = read_certs(path)
                    .map_err(|e| format!("cannot read root certificate file {}: {e}", path.display()))?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(format!("root certificate file {} holds no usable PEM certificate", path.display()));
                }
            }
            Some(RootCert::System) => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    let why: Vec<String> = found.errors.iter().map(|e| e.to_string()).collect();
                    return Err(format!(
                        "sslrootcert=system: no trusted root certificates found in the system's store (install \
                         ca-certificates or set SSL_CERT_FILE){}",
                        if why.is_empty() { String::new() } else { format!(": {}", why.join("; ")) }
                    ));
                }
            }
            None => return Err("no root certificates configured (sslrootcert)".into()),
        }
        Ok(roots)
    }

    /// The client certificate chain and key, if the certificate file exists (libpq's rule).
    #[allow(clippy::type_complexity)]
    fn client_identity(&self) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, String> {
        let Some(cert) = self.cert.as_ref().filter(|p| p.exists()) else {
            return Ok(None);
        };
        let chain = read_certs(cert).map_err(|e| format!("cannot read client certificate {}: {e}", cert.display()))?;
        if chain.is_empty() {
            return Err(format!("client certificate file {} holds no PEM certificate", cert.display()));
        }
        let key = match &self.key {
            Some(k) if k.exists() => k,
            Some(k) => {
                return Err(format!("certificate {} present, but not private key file {}", cert.display(), k.display()))
            }
            None => {
                return Err(format!("certificate {} present, but no private key file (set sslkey)", cert.display()))
            }
        };
        // libpq refuses keys others can read: 0600, or 0640 when owned by root.
        let meta =
            std::fs::metadata(key).map_err(|e| format!("cannot read private key file {}: {e}", key.display()))?;
        let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
        if meta.mode() & 0o777 & !allowed != 0 {
            return Err(format!(
                "private key file {} has group or world access; it must be mode 0600 or less (0640 if owned by root)",
                key.display()
            ));
        }
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            format!(
                "cannot read private key file {}: {e} (PEM PKCS#1, PKCS#8 or SEC1; encrypted keys are not supported)",
                key.display()
            )
        })?;
        Ok(Some((chain, key)))
    }
}

fn read_certs(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    CertificateDer::pem_file_iter(path)?.collect()
}

/// sslmode=require (or weaker) without root certificates: encrypt, accept any certificate, as
/// libpq does. The handshake signatures are still checked.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// verify-ca: the chain must lead to a trusted root, whatever name the certificate carries.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.0.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name last, after the chain verified: a name error means the chain is good.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A connection to the server, encrypted or not.
pub type BoxStream = Pin<Box<dyn Stream>>;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

/// One server of the host list.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Endpoint {
    /// hostaddr when given, else host.
    addr: Addr,
    port: u16,
    /// The name the certificate must carry (host, else hostaddr); None for a Unix socket.
    tls_name: Option<String>,
    /// For messages: `host:port` or the socket path.
    target: String,
}

/// The servers to try, in order, pairing host, hostaddr and port lists as libpq does.
fn endpoints(cfg: &tokio_postgres::Config) -> Result<Vec<Endpoint>, String> {
    let (hosts, addrs, ports) = (cfg.get_hosts(), cfg.get_hostaddrs(), cfg.get_ports());
    if !hosts.is_empty() && !addrs.is_empty() && hosts.len() != addrs.len() {
        return Err(format!("{} hosts but {} hostaddrs given; give one hostaddr per host", hosts.len(), addrs.len()));
    }
    let n = hosts.len().max(addrs.len());
    if n == 0 {
        return Err("no host to connect to (set host= or PGHOST)".into());
    }
    if ports.len() > 1 && ports.len() != n {
        return Err(format!("{} ports given for {n} hosts", ports.len()));
    }
    let tcp_target = |name: &str, port: u16| match name.contains(':') {
        true => format!("[{name}]:{port}"),
        false => format!("{name}:{port}"),
    };
    Ok((0..n)
        .map(|i| {
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            match (hosts.get(i), addrs.get(i)) {
                (Some(Host::Tcp(h)), Some(ip)) => Endpoint {
                    addr: Addr::Tcp(ip.to_string()),
                    port,
                    tls_name: Some(h.clone()),
                    target: format!("{} ({ip})", tcp_target(h, port)),
                },
                (_, Some(ip)) => Endpoint {
                    addr: Addr::Tcp(ip.to_string()),
                    port,
                    tls_name: Some(ip.to_string()),
                    target: tcp_target(&ip.to_string(), port),
                },
                (Some(Host::Tcp(h)), None) => Endpoint {
                    addr: Addr::Tcp(h.clone()),
                    port,
                    tls_name: Some(h.clone()),
                    target: tcp_target(h, port),
                },
                (Some(Host::Unix(dir)), None) => {
                    let path = dir.join(format!(".s.PGSQL.{port}"));
                    Endpoint { target: path.display().to_string(), addr: Addr::Unix(path), port, tls_name: None }
                }
                (None, None) => unreachable!("i < max(hosts, hostaddrs)"),
            }
        })
        .collect())
}

/// Why a TLS attempt failed: prefer falls back to plain text only after a failed handshake.
enum TlsFailure {
    Other(String),
    Handshake(String),
}

impl From<String> for TlsFailure {
    fn from(s: String) -> Self {
        TlsFailure::Other(s)
    }
}

impl TlsFailure {
    fn message(self) -> String {
        match self {
            TlsFailure::Other(m) | TlsFailure::Handshake(m) => m,
        }
    }
}

/// Connect to the first server of the host list that lets us in, with TLS as `sslmode` says,
/// and run `startup` (the protocol's startup and authentication) on the stream. Unix sockets
/// never use TLS, as in libpq. Each server gets `connect_timeout` for all of it.
pub async fn connect<T, F, Fut>(cfg: &ConnConfig, mut startup: F) -> Result<T, String>
where
    F: FnMut(BoxStream, String) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let timeout = cfg.pg.get_connect_timeout().copied().unwrap_or(Duration::from_secs(10));
    let mut tls_config = None;
    let mut errors = Vec::new();
    for ep in endpoints(&cfg.pg)? {
        let attempt = connect_one(&ep, &cfg.tls, &mut tls_config, &mut startup);
        match tokio::time::timeout(timeout, attempt).await {
            Ok(Ok(conn)) => return Ok(conn),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push(format!("{}: no connection within connect_timeout ({timeout:?})", ep.target)),
        }
    }
    Err(errors.join("; "))
}

async fn connect_one<T, F, Fut>(
    ep: &Endpoint,
    settings: &TlsSettings,
    tls_config: &mut Option<Arc<ClientConfig>>,
    startup: &mut F,
) -> Result<T, String>
where
    F: FnMut(BoxStream, String) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let target = || ep.target.clone();
    let name = match &ep.tls_name {
        Some(name) if settings.mode != SslMode::Disable => name,
        _ => return startup(open_plain(ep).await?, target()).await,
    };
    match settings.mode {
        // libpq's allow: plain text first, and TLS only if the server refuses that.
        SslMode::Allow => match startup(open_plain(ep).await?, target()).await {
            Ok(conn) => Ok(conn),
            Err(plain_err) => {
                tracing::debug!("{plain_err}; sslmode=allow: retrying with SSL");
                let config = cached_config(tls_config, settings)?;
                match start_tls(ep, name, settings, config, true).await {
                    Ok(stream) => startup(stream, target()).await,
                    Err(e) => Err(format!("{plain_err} (and with SSL: {})", e.message())),
                }
            }
        },
        // libpq's prefer: TLS if the server offers it, plain text if not or if the handshake fails.
        SslMode::Prefer => match start_tls(ep, name, settings, cached_config(tls_config, settings)?, false).await {
            Ok(stream) => startup(stream, target()).await,
            Err(TlsFailure::Handshake(e)) => {
                tracing::warn!("{e}; sslmode=prefer: connecting without SSL");
                startup(open_plain(ep).await?, target()).await
            }
            Err(TlsFailure::Other(e)) => Err(e),
        },
        _ => {
            let config = cached_config(tls_config, settings)?;
            let stream = start_tls(ep, name, settings, config, true).await.map_err(TlsFailure::message)?;
            startup(stream, target()).await
        }
    }
}

/// Read the certificate files once per connect, and only when TLS is attempted.
fn cached_config(cache: &mut Option<Arc<ClientConfig>>, settings: &TlsSettings) -> Result<Arc<ClientConfig>, String> {
    match cache {
        Some(c) => Ok(c.clone()),
        None => Ok(cache.insert(settings.client_config()?).clone()),
    }
}

async fn open_tcp(ep: &Endpoint, host: &str) -> Result<TcpStream, String> {
    let s = TcpStream::connect((host, ep.port)).await.map_err(|e| format!("cannot reach {}: {e}", ep.target))?;
    s.set_nodelay(true).map_err(|e| format!("{}: {e}", ep.target))?;
    Ok(s)
}

async fn open_plain(ep: &Endpoint) -> Result<BoxStream, String> {
    Ok(match &ep.addr {
        Addr::Tcp(h) => Box::pin(open_tcp(ep, h).await?),
        Addr::Unix(p) => {
            Box::pin(tokio::net::UnixStream::connect(p).await.map_err(|e| format!("cannot reach {}: {e}", ep.target))?)
        }
    })
}

/// SSLRequest, the server's one-byte answer, then the TLS handshake. With `required` false a
/// server without SSL gets the plain stream back.
async fn start_tls(
    ep: &Endpoint,
    name: &str,
    settings: &TlsSettings,
    config: Arc<ClientConfig>,
    required: bool,
) -> Result<BoxStream, TlsFailure> {
    let Addr::Tcp(host) = &ep.addr else {
        return Err(TlsFailure::Other(format!("{}: no SSL over Unix sockets", ep.target)));
    };
    let server_name = ServerName::try_from(name.to_string())
        .map_err(|e| format!("host name {name:?} cannot be used for an SSL connection: {e}"))?;
    let mut tcp = open_tcp(ep, host).await?;
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    let io_err = |e: std::io::Error| TlsFailure::Other(format!("{}: {e} (while asking for SSL)", ep.target));
    tcp.write_all(&request).await.map_err(io_err)?;
    // Exactly one byte: anything after it must come through TLS (CVE-2021-23222).
    let answer = tcp.read_u8().await.map_err(io_err)?;
    match answer {
        b'S' => {}
        b'N' if !required => return Ok(Box::pin(tcp)),
        b'N' => {
            return Err(TlsFailure::Other(format!(
                "server at {} does not support SSL, but sslmode={} was given (turn ssl on in the server, or use \
                 a weaker sslmode)",
                ep.target, settings.mode
            )))
        }
        other => {
            return Err(TlsFailure::Other(format!(
                "server at {} answered the SSL request with {:?}, not 'S' or 'N'",
                ep.target, other as char
            )))
        }
    }
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| TlsFailure::Handshake(handshake_error(ep, settings, &e)))?;
    let (_, session) = tls.get_ref();
    tracing::debug!(
        "{}: SSL connection ({:?}, {:?})",
        ep.target,
        session.protocol_version(),
        session.negotiated_cipher_suite().map(|s| s.suite())
    );
    Ok(Box::pin(tls))
}

/// A failed handshake, with what to check when the certificate was the problem.
fn handshake_error(ep: &Endpoint, settings: &TlsSettings, e: &std::io::Error) -> String {
    let tls_error = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let mode = settings.mode;
    let root = settings.root_cert.as_ref().map(|r| r.to_string()).unwrap_or_default();
    match tls_error {
        Some(rustls::Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        )) => format!(
            "server certificate verification failed for {}: {e} (sslmode={mode} needs the certificate to name \
             the host connected to: connect by a name it holds, or use sslmode=verify-ca)",
            ep.target
        ),
        Some(rustls::Error::InvalidCertificate(_)) => format!(
            "server certificate verification failed for {}: {e} (sslmode={mode}, sslrootcert={root}: that file \
             must hold the CA certificate that signed the server's certificate)",
            ep.target
        ),
        _ => format!("SSL handshake with {} failed: {e}", ep.target),
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
