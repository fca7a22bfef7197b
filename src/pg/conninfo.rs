//! libpq conventions for finding the server: a conninfo string or URI, then the PG*
//! environment, then `.pgpass`. Pure: the caller passes the environment and file contents.

use std::path::PathBuf;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::Config;

/// Debian's compiled-in socket directory, libpq's default host.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/postgresql";

/// Build a connection config the way libpq would: explicit settings first, then PG* variables.
pub fn resolve(conninfo: Option<&str>, env: &dyn Fn(&str) -> Option<String>, os_user: &str) -> Result<Config, String> {
    let text = conninfo.unwrap_or("").trim();
    let mut cfg: Config = if text.is_empty() {
        Config::new()
    } else {
        text.parse().map_err(|e| format!("invalid connection string: {e}"))?
    };
    if cfg.get_hosts().is_empty() {
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
    if !text.contains("sslmode") {
        if let Some(mode) = env("PGSSLMODE") {
            cfg.ssl_mode(match mode.as_str() {
                "disable" => SslMode::Disable,
                "allow" | "prefer" => SslMode::Prefer,
                "require" | "verify-ca" | "verify-full" => SslMode::Require,
                other => return Err(format!("PGSSLMODE={other:?} is not a valid sslmode")),
            });
        }
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
    Ok(cfg)
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
    let mut out = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.last_mut().expect("non-empty").push(n);
                }
            }
            ':' if out.len() < 5 => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
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
        let c = resolve(None, &env, "root").unwrap();
        assert_eq!(c.get_hosts(), &[Host::Unix("/tmp/sock".into())]);
        assert_eq!(c.get_ports(), &[6543]);
        assert_eq!(c.get_user(), Some("alice"));
        assert_eq!(c.get_dbname(), Some("app"));
        let c = resolve(Some("host=db1 port=5433 user=bob"), &env, "root").unwrap();
        assert_eq!(c.get_hosts(), &[Host::Tcp("db1".into())]);
        assert_eq!(c.get_ports(), &[5433]);
        assert_eq!(c.get_user(), Some("bob"));
        assert_eq!(c.get_dbname(), Some("app"));
        let c = resolve(Some("postgresql://carol@db2:5999/x"), &env_of(&[]), "root").unwrap();
        assert_eq!(c.get_user(), Some("carol"));
        assert_eq!(c.get_dbname(), Some("x"));
    }

    #[test]
    fn defaults_like_libpq() {
        let c = resolve(None, &env_of(&[]), "postgres").unwrap();
        assert_eq!(c.get_hosts(), &[Host::Unix(DEFAULT_SOCKET_DIR.into())]);
        assert_eq!(c.get_ports(), &[5432]);
        assert_eq!(c.get_user(), Some("postgres"));
        assert_eq!(c.get_dbname(), Some("postgres"));
        assert!(resolve(None, &env_of(&[("PGPORT", "x")]), "u").is_err());
        assert!(resolve(None, &env_of(&[("PGSSLMODE", "sometimes")]), "u").is_err());
    }

    #[test]
    fn pgpass_matching() {
        let text = "# comment\nother:5432:*:*:nope\nlocalhost:5432:*:rep\\:l:s3cr\\:et\n*:*:*:*:fallback\n";
        assert_eq!(pgpass_lookup(text, "localhost", 5432, "postgres", "rep:l").as_deref(), Some("s3cr:et"));
        assert_eq!(pgpass_lookup(text, "localhost", 5433, "postgres", "rep:l").as_deref(), Some("fallback"));
        assert_eq!(pgpass_lookup("a:1:b:c\n", "a", 1, "b", "c"), None);
    }
}
