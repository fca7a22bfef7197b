use super::*;
use std::sync::Mutex;

type Log = Arc<Mutex<Vec<String>>>;

/// A stand-in server: answers SSLRequest with `answer`, hangs up after 'S' (so the TLS
/// handshake fails), and logs what each connection sent in 8-byte pieces.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, answer: u8, log: Log) {
    let mut buf = [0u8; 8];
    while s.read_exact(&mut buf).await.is_ok() {
        if buf == [0, 0, 0, 8, 4, 210, 22, 47] {
            log.lock().unwrap().push("ssl".into());
            let _ = s.write_all(&[answer]).await;
            if answer == b'S' {
                return;
            }
        } else {
            log.lock().unwrap().push(String::from_utf8_lossy(&buf).into_owned());
        }
    }
}

async fn tcp_server(answer: u8) -> (String, Log) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let log = Log::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, answer, l.clone()));
        }
    });
    (format!("host=127.0.0.1 port={port}"), log)
}

/// Connect with `mode`; the "startup" sends 8 bytes, then succeeds or fails as told.
async fn attempt(conninfo: &str, mode: SslMode, startup_fails: bool) -> Result<(), String> {
    let cfg = ConnConfig { pg: conninfo.parse().unwrap(), tls: TlsSettings { mode, ..TlsSettings::default() } };
    connect(&cfg, |mut stream, target| async move {
        stream.write_all(b"startup!").await.map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        if startup_fails {
            return Err(format!("{target} refused"));
        }
        Ok(())
    })
    .await
}

/// Wait for the server to have logged `want`, then clear the log.
async fn expect_log(log: &Log, want: &[&str]) {
    for _ in 0..200 {
        if log.lock().unwrap().len() >= want.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(*log.lock().unwrap(), want);
    log.lock().unwrap().clear();
}

#[tokio::test]
async fn sslmodes_against_servers_with_and_without_ssl() {
    use SslMode::*;
    // A server without SSL ('N').
    let (info, log) = tcp_server(b'N').await;
    attempt(&info, Disable, false).await.unwrap();
    expect_log(&log, &["startup!"]).await;
    attempt(&info, Prefer, false).await.unwrap();
    expect_log(&log, &["ssl", "startup!"]).await;
    let e = attempt(&info, Require, false).await.unwrap_err();
    assert!(e.contains("does not support SSL, but sslmode=require was given"), "{e}");
    expect_log(&log, &["ssl"]).await;
    // allow: plain first, SSL only after the server refused.
    let e = attempt(&info, Allow, true).await.unwrap_err();
    assert!(e.contains("refused (and with SSL:"), "{e}");
    expect_log(&log, &["startup!", "ssl"]).await;

    // A server whose handshake fails: prefer starts over without SSL, require stops.
    let (info, log) = tcp_server(b'S').await;
    attempt(&info, Prefer, false).await.unwrap();
    expect_log(&log, &["ssl", "startup!"]).await;
    let e = attempt(&info, Require, false).await.unwrap_err();
    assert!(e.starts_with("SSL handshake with 127.0.0.1:"), "{e}");
    expect_log(&log, &["ssl"]).await;

    // Unix sockets never ask for SSL, whatever the sslmode (as libpq).
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::UnixListener::bind(dir.path().join(".s.PGSQL.5432")).unwrap();
    let log = Log::default();
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(serve(s, b'N', l.clone()));
        }
    });
    attempt(&format!("host={} port=5432", dir.path().display()), VerifyFull, false).await.unwrap();
    expect_log(&log, &["startup!"]).await;
}

#[test]
fn sslmode_names_round_trip() {
    for name in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
        assert_eq!(SslMode::parse(name).unwrap().as_str(), name);
    }
    assert_eq!(SslMode::parse("verify_full"), None);
}

#[test]
fn verification_follows_libpq() {
    let file = RootCert::File("/x/root.crt".into());
    use SslMode::*;
    // Without a root certificate file, only the verify modes fail, naming the file.
    for mode in [Disable, Allow, Prefer, Require] {
        assert_eq!(verification(mode, Some(&file), false), Ok(Verify::Nothing));
        assert_eq!(verification(mode, None, false), Ok(Verify::Nothing));
    }
    for mode in [VerifyCa, VerifyFull] {
        let e = verification(mode, Some(&file), false).unwrap_err();
        assert!(e.contains("/x/root.crt does not exist") && e.contains("sslrootcert=system"), "{e}");
        assert!(verification(mode, None, false).unwrap_err().contains("sslrootcert"));
    }
    // With one, require (and weaker) verify the chain like verify-ca.
    assert_eq!(verification(Require, Some(&file), true), Ok(Verify::Chain));
    assert_eq!(verification(Prefer, Some(&file), true), Ok(Verify::Chain));
    assert_eq!(verification(VerifyCa, Some(&file), true), Ok(Verify::Chain));
    assert_eq!(verification(VerifyFull, Some(&file), true), Ok(Verify::ChainAndName));
    assert_eq!(verification(VerifyFull, Some(&RootCert::System), false), Ok(Verify::ChainAndName));
}

#[test]
fn endpoints_pair_hosts_addresses_and_ports() {
    let cfg: tokio_postgres::Config = "host=db1,/run/pg hostaddr=10.0.0.1,10.0.0.2 port=5433".parse().unwrap();
    let eps = endpoints(&cfg).unwrap();
    assert_eq!(eps[0].addr, Addr::Tcp("10.0.0.1".into()));
    assert_eq!(eps[0].tls_name.as_deref(), Some("db1"));
    assert_eq!(eps[0].target, "db1:5433 (10.0.0.1)");
    assert_eq!(eps[1].addr, Addr::Tcp("10.0.0.2".into()));
    let cfg: tokio_postgres::Config = "host=/run/pg,::1 port=5432,5433".parse().unwrap();
    let eps = endpoints(&cfg).unwrap();
    assert_eq!(eps[0].addr, Addr::Unix("/run/pg/.s.PGSQL.5432".into()));
    assert_eq!(eps[0].tls_name, None);
    assert_eq!(eps[1].target, "[::1]:5433");
    assert!(endpoints(&"host=a,b port=1,2,3".parse().unwrap()).is_err());
    assert!(endpoints(&"host=a,b hostaddr=10.0.0.1".parse().unwrap()).is_err());
}
