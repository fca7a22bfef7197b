//! libpq conventions for finding the server: a conninfo string or URI, then the PG*
//! environment, then `.pgpass`; and the TLS settings (sslmode, sslrootcert, sslcert, sslkey).
//! Pure: the caller passes the environment and file contents. Errors never quote a password
//! or a URI parameter's value (they go to logs, `check` output and `/healthz`).

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::{Host, SslNegotiation};
use tokio_postgres::Config;

use super::tls::{RootCert, SslMode, TlsSettings};

/// Debian's compiled-in socket directory, libpq's default host.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Connection settings: tokio-postgres' config, and the TLS settings it cannot hold.
#[derive(Clone, Debug)]
pub struct ConnConfig {
    pub pg: Config,
    pub tls: TlsSettings,
}

/// The keywords handled here rather than by tokio-postgres, which knows only three sslmodes.
const TLS_KEYWORDS: [&str; 4] = ["sslmode", "sslrootcert", "sslcert", "sslkey"];

/// Build a connection config the way libpq would: explicit settings first, then PG* variables.
/// Errors never quote the connection string (a malformed one cannot be redacted reliably),
/// and what they quote of it is redacted.
pub fn resolve(
    conninfo: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    os_user: &str,
) -> Result<ConnConfig, String> {
    let text = conninfo.unwrap_or("").trim();
    resolve_text(text, env, os_user).map_err(|e| crate::redact::text(&e))
}

fn resolve_text(text: &str, env: &dyn Fn(&str) -> Option<String>, os_user: &str) -> Result<ConnConfig, String> {
    let (rest, tls_params) = take_tls_params(text)?;
    let mut cfg: Config = if rest.is_empty() {
        Config::new()
    } else {
        rest.parse().map_err(|e| format!("invalid connection string: {e}"))?
    };
    if cfg.get_ssl_negotiation() == SslNegotiation::Direct {
        return Err("sslnegotiation=direct is not supported: leave it out (tidewal asks for SSL first, which every \
                    PostgreSQL version understands)"
            .into());
    }
    if cfg.get_hosts().is_empty() && cfg.get_hostaddrs().is_empty() {
        let hosts = env("PGHOST").unwrap_or_else(|| DEFAULT_SOCKET_DIR.to_string());
        for h in hosts.split(',') {
            if h.starts_with('/') {
                cfg.host_path(h);
            } else {
                cfg.host(h);
            }
        }
    }
    if cfg.get_ports().is_empty() {
        let port = env("PGPORT").unwrap_or_else(|| "5432".into());
        let port: u16 = port.parse().map_err(|_| format!("PGPORT={port:?} is not a port number"))?;
        cfg.port(port);
    }
    if cfg.get_user().is_none() {
        cfg.user(env("PGUSER").unwrap_or_else(|| os_user.to_string()));
    }
    if cfg.get_dbname().is_none() {
        cfg.dbname(env("PGDATABASE").unwrap_or_else(|| cfg.get_user().unwrap_or("postgres").to_string()));
    }
    if cfg.get_connect_timeout().is_none() {
        let secs = env("PGCONNECT_TIMEOUT").and_then(|v| v.parse::<u64>().ok()).unwrap_or(10);
        cfg.connect_timeout(Duration::from_secs(secs.max(2)));
    }
    if cfg.get_application_name().is_none() {
        cfg.application_name(env("PGAPPNAME").unwrap_or_else(|| "tidewal".into()));
    }
    if cfg.get_password().is_none() {
        if let Some(pw) = env("PGPASSWORD") {
            cfg.password(pw);
        }
    }
    let tls = resolve_tls(&tls_params, env)?;
    Ok(ConnConfig { pg: cfg, tls })
}

/// The TLS settings from conninfo keywords, else PGSSL* variables, else libpq's defaults
/// under ~/.postgresql. Empty values count as unset.
fn resolve_tls(given: &[(String, String)], env: &dyn Fn(&str) -> Option<String>) -> Result<TlsSettings, String> {
    let pick = |key: &str, var: &str| {
        // The last occurrence of a keyword wins, as in libpq.
        let value = match given.iter().rev().find(|(k, _)| k == key) {
            Some((_, v)) => Some(v.clone()),
            None => env(var),
        };
        value.filter(|v| !v.is_empty())
    };
    let dir = env("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".postgresql"));
    let root_cert = match pick("sslrootcert", "PGSSLROOTCERT") {
        Some(v) if v == "system" => Some(RootCert::System),
        Some(v) => Some(RootCert::File(v.into())),
        None => dir.as_ref().map(|d| RootCert::File(d.join("root.crt"))),
    };
    let mode = match pick("sslmode", "PGSSLMODE") {
        // Not quoted: from a URI with a ';' for a '&', the value runs on into the next ones.
        Some(m) => SslMode::parse(&m).ok_or(
            "the sslmode given is not valid: use disable, allow, prefer, require, verify-ca or verify-full".to_string(),
        )?,
        // Trusting the whole system store only makes sense if the name is checked too.
        None if root_cert == Some(RootCert::System) => SslMode::VerifyFull,
        None => SslMode::Prefer,
    };
    if root_cert == Some(RootCert::System) && mode != SslMode::VerifyFull {
        return Err(format!("weak sslmode={mode} may not be used with sslrootcert=system (use sslmode=verify-full)"));
    }
    let file = |key: &str, var: &str, default: &str| {
        pick(key, var).map(PathBuf::from).or_else(|| dir.as_ref().map(|d| d.join(default)))
    };
    Ok(TlsSettings {
        mode,
        root_cert,
        cert: file("sslcert", "PGSSLCERT", "postgresql.crt"),
        key: file("sslkey", "PGSSLKEY", "postgresql.key"),
    })
}

/// Take the TLS keywords out of a conninfo string or URI: what is left, for tokio-postgres,
/// and the (keyword, value) pairs taken.
fn take_tls_params(text: &str) -> Result<(String, Vec<(String, String)>), String> {
    if text.starts_with("postgres://") || text.starts_with("postgresql://") {
        // Parameters follow the first '?' after the credentials (as tokio-postgres reads them).
        let after_at = text.find('@').map(|i| i + 1).unwrap_or(0);
        let Some(q) = text[after_at..].find('?').map(|i| i + after_at) else {
            return Ok((text.to_string(), Vec::new()));
        };
        let (mut kept, mut taken) = (Vec::new(), Vec::new());
        for part in text[q + 1..].split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let key =
                percent_decode(k).ok_or("invalid percent-encoding in a connection URI parameter's name".to_string())?;
            if TLS_KEYWORDS.contains(&key.as_str()) {
                let value = percent_decode(v)
                    .ok_or_else(|| format!("invalid percent-encoding or UTF-8 in connection URI parameter {key}"))?;
                taken.push((key, value));
            } else {
                kept.push(part);
            }
        }
        let mut rest = text[..q].to_string();
        if !kept.is_empty() {
            rest.push('?');
            rest.push_str(&kept.join("&"));
        }
        return Ok((rest, taken));
    }
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    for (key, value) in parse_keywords(text)? {
        let quoted = format!("{key}='{}'", value.replace('\\', "\\\\").replace('\'', "\\'"));
        if TLS_KEYWORDS.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            kept.push(quoted);
        }
    }
    Ok((kept.join(" "), taken))
}

/// `key = value` pairs, values bare or single-quoted, `\` escaping the next character.
fn parse_keywords(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        if key.is_empty() {
            if chars.peek().is_some() {
                return Err("invalid connection string: a value without a keyword".into());
            }
            return Ok(out);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            // A stray word may be the rest of a password with a space in it: never quote it.
            let after = match out.last() {
                Some((k, _)) => format!(" (after the value of {k})"),
                None => String::new(),
            };
            return Err(format!("invalid connection string: a word without \"=\" where a keyword belongs{after}"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\'') if quoted => break,
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None if quoted => {
                    return Err(format!("invalid connection string: unterminated quoted value for {key}"))
                }
                None => break,
            }
        }
        out.push((key, value));
    }
}

/// None when the encoding or the UTF-8 is broken (the caller says where, not what).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            out.push(s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `.pgpass` file libpq would read: PGPASSFILE, else ~/.pgpass.
pub fn pgpass_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    env("PGPASSFILE").map(PathBuf::from).or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".pgpass")))
}

/// The host name `.pgpass` matches for a host: socket directories count as "localhost".
pub fn pgpass_host(host: &Host) -> String {
    match host {
        Host::Tcp(h) => h.clone(),
        Host::Unix(_) => "localhost".into(),
    }
}

/// Look a password up in `.pgpass` text: `host:port:db:user:password`, `*` matches anything,
/// `\` escapes `:` and `\`, first match wins.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    for line in text.lines() {
        if line.trim_start().starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        if fields.len() != 5 {
            continue;
        }
        let want = [host, port.as_str(), db, user];
        if fields[..4].iter().zip(want).all(|(f, w)| f == "*" || f == w) {
            return Some(fields[4].clone());
        }
    }
    None
}

fn split_pgpass(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut field = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => field.extend(chars.next()),
            ':' if out.len() < 4 => out.push(std::mem::take(&mut field)),
            c => field.push(c),
        }
    }
    out.push(field);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn env_fills_gaps_only() {
        let env = env_of(&[("PGHOST", "/tmp/sock"), ("PGPORT", "6543"), ("PGUSER", "alice"), ("PGDATABASE", "app")]);
        let c = resolve(None, &env, "root").unwrap().pg;
        assert_eq!(c.get_hosts(), &[Host::Unix("/tmp/sock".into())]);
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_dbname(), Some("app"));
        let c = resolve(Some("host=db1 port=5433 user=bob"), &env, "root").unwrap().pg;
        assert_eq!(c.get_hosts(), &[Host::Tcp("db1".into())]);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_user(), Some("bob"));
        assert_eq!(c.get_dbname(), Some("app"));
        let c = resolve(Some("postgresql://carol@db2:5999/x"), &env_of(&[]), "root").unwrap().pg;
        assert_eq!(c.get_user(), Some("carol"));
        assert_eq!(c.get_dbname(), Some("x"));
        // A hostaddr alone is a host: no default socket added next to it.
        let c = resolve(Some("hostaddr=127.0.0.1"), &env, "root").unwrap().pg;
        assert!(c.get_hosts().is_empty());
    }

    #[test]
    fn defaults_like_libpq() {
        let c = resolve(None, &env_of(&[]), "postgres").unwrap();
        assert_eq!(c.pg.get_hosts(), &[Host::Unix(DEFAULT_SOCKET_DIR.into())]);
        assert_eq!(c.pg.get_ports(), &[5432]);
        assert_eq!(c.pg.get_user(), Some("postgres"));
        assert_eq!(c.pg.get_dbname(), Some("postgres"));
        assert_eq!(c.tls, TlsSettings::default());
        assert!(resolve(None, &env_of(&[("PGPORT", "x")]), "u").is_err());
        assert!(resolve(None, &env_of(&[("PGSSLMODE", "sometimes")]), "u").is_err());
    }

    #[test]
    fn tls_settings_from_conninfo_env_and_home() {
        let home = env_of(&[("HOME", "/home/u")]);
        let t = resolve(Some("host=db"), &home, "u").unwrap().tls;
        assert_eq!(t.mode, SslMode::Prefer);
        assert_eq!(t.root_cert, Some(RootCert::File("/home/u/.postgresql/root.crt".into())));
        assert_eq!(t.cert, Some("/home/u/.postgresql/postgresql.crt".into()));
        assert_eq!(t.key, Some("/home/u/.postgresql/postgresql.key".into()));

        // Every libpq mode survives (tokio-postgres alone would turn verify-* into require).
        for mode in ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] {
            let t = resolve(Some(&format!("host=db sslmode={mode}")), &home, "u").unwrap().tls;
            assert_eq!(t.mode.as_str(), mode);
            let t = resolve(Some("host=db"), &env_of(&[("PGSSLMODE", mode)]), "u").unwrap().tls;
            assert_eq!(t.mode.as_str(), mode);
        }

        // The conninfo beats the environment, which beats the defaults; quoting and spaces as libpq.
        let env = env_of(&[
            ("HOME", "/home/u"),
            ("PGSSLMODE", "require"),
            ("PGSSLROOTCERT", "/env/ca.pem"),
            ("PGSSLCERT", "/env/c.crt"),
            ("PGSSLKEY", "/env/c.key"),
        ]);
        let c = resolve(
            Some(r"host=db sslmode = verify-full sslrootcert='/my certs/ca.pem' sslkey=/k\\ey user='o\'brien'"),
            &env,
            "u",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyFull);
        assert_eq!(c.tls.root_cert, Some(RootCert::File("/my certs/ca.pem".into())));
        assert_eq!(c.tls.cert, Some("/env/c.crt".into()));
        assert_eq!(c.tls.key, Some("/k\\ey".into()));
        assert_eq!(c.pg.get_user(), Some("o'brien"));
        assert_eq!(c.pg.get_hosts(), &[Host::Tcp("db".into())]);
        let t = resolve(Some("host=db"), &env, "u").unwrap().tls;
        assert_eq!(t.mode, SslMode::Require);
        assert_eq!(t.root_cert, Some(RootCert::File("/env/ca.pem".into())));
        assert_eq!(t.key, Some("/env/c.key".into()));

        // URIs: the TLS parameters come out, percent-decoded; the others stay for tokio-postgres.
        let c = resolve(
            Some(
                "postgresql://rep:pw@db:5433/app?sslmode=verify-ca&application_name=x&sslrootcert=%2Fca%20dir%2Fca.pem",
            ),
            &home,
            "u",
        )
        .unwrap();
        assert_eq!(c.tls.mode, SslMode::VerifyCa);
        assert_eq!(c.tls.root_cert, Some(RootCert::File("/ca dir/ca.pem".into())));
        assert_eq!(c.pg.get_application_name(), Some("x"));
        assert_eq!(c.pg.get_ports(), &[5433]);
        assert_eq!(c.pg.get_password(), Some(&b"pw"[..]));

        // sslrootcert=system means verify-full, and refuses weaker modes, as libpq 16.
        let t = resolve(Some("host=db sslrootcert=system"), &home, "u").unwrap().tls;
        assert_eq!((t.mode, t.root_cert), (SslMode::VerifyFull, Some(RootCert::System)));
        let e = resolve(Some("host=db sslrootcert=system sslmode=require"), &home, "u").unwrap_err();
        assert!(e.contains("weak sslmode=require"), "{e}");

        // No home directory: no default files.
        let t = resolve(Some("host=db"), &env_of(&[]), "u").unwrap().tls;
        assert_eq!((t.root_cert, t.cert, t.key), (None, None, None));
        assert!(resolve(Some("host=db sslmode=sometimes"), &home, "u").unwrap_err().contains("verify-full"));
        assert!(resolve(Some("host=db sslnegotiation=direct"), &home, "u").is_err());
        assert!(resolve(Some("host='db"), &home, "u").is_err());
    }

    #[test]
    fn errors_quote_no_password_and_no_uri_value() {
        let env = env_of(&[]);
        let bad = [
            // A ';' where '&' belongs: the sslmode value swallows the password.
            "postgresql://rep:hunter2@db/app?sslmode=verify;password=hunter2",
            "postgresql://rep:hunter2@db/app?sslrootcert=%ZZhunter2",
            "postgresql://rep:hunter2@db/app?sslkey=hunter2%FF",
            "postgresql://rep:hunter2@db/app?password=hunter2&nosuchoption=hunter2",
            "postgresql://rep:hunter2@db:notaport/app?password=hunter2",
            "host=db password=hunter2 sslmode=sometimes",
            "host=db password=hun hunter2 user=rep",
            "host=db password=hun\\ hunter2 port=x",
            "host=db password='hunter2' sslmode=require sslrootcert=system",
        ];
        for conninfo in bad {
            let e = resolve(Some(conninfo), &env, "u").unwrap_err();
            assert!(!e.contains("hunter2"), "{conninfo}: {e}");
        }
        // They still say what is wrong.
        let e = resolve(Some(bad[0]), &env, "u").unwrap_err();
        assert!(e.contains("sslmode given is not valid"), "{e}");
        assert!(resolve(Some(bad[1]), &env, "u").unwrap_err().contains("parameter sslrootcert"));
        assert!(resolve(Some(bad[6]), &env, "u").unwrap_err().contains("after the value of password"));
    }

    #[test]
    fn pgpass_matching() {
        let text = "# comment\nother:5432:*:*:nope\nlocalhost:5432:*:rep\\:l:s3cr\\:et\n*:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(text, "localhost", 5432, "postgres", "rep:l").as_deref(), Some("s3cr:et"));
        assert_eq!(pgpass_lookup(text, "localhost", 5433, "postgres", "rep:l").as_deref(), Some("fallback"));
        assert_eq!(pgpass_lookup("a:1:b:c\n", "a", 1, "b", "c"), None);
    }
}
