//! Running PostgreSQL's client programs (`pg_dump`, `pg_dumpall`, `pg_restore`) for one
//! database of the configured server: the connection string with that database and without
//! its password (which goes in `PGPASSWORD`, never on a command line), stderr kept for the
//! error message, and the child killed when tidewal dies.

use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::error::{Code, Fail, Result};
use crate::pg::sql;

/// `conninfo` (key=value or URI, or none) pointing at `db`, for tidewal's own connections (pure).
pub fn for_database(conninfo: Option<&str>, db: &str) -> String {
    rewrite(conninfo, db, true)
}

/// The same for a child's command line: without a password (pure).
pub fn for_child(conninfo: Option<&str>, db: &str) -> String {
    rewrite(conninfo, db, false)
}

fn rewrite(conninfo: Option<&str>, db: &str, keep_password: bool) -> String {
    let text = conninfo.unwrap_or("").trim();
    for scheme in ["postgresql://", "postgres://"] {
        if let Some(rest) = text.strip_prefix(scheme) {
            let auth_end = rest.find(['/', '?']).unwrap_or(rest.len());
            let (auth, tail) = rest.split_at(auth_end);
            let auth = match auth.rsplit_once('@') {
                Some((user, host)) if !keep_password => format!("{}@{host}", user.split(':').next().unwrap_or("")),
                _ => auth.to_string(),
            };
            let query: Vec<&str> = tail
                .split_once('?')
                .map(|(_, q)| {
                    q.split('&')
                        .filter(|p| (keep_password || !p.starts_with("password=")) && !p.starts_with("dbname="))
                        .collect()
                })
                .unwrap_or_default();
            let query = if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            return format!("{scheme}{auth}/{}{query}", percent(db));
        }
    }
    let mut out: Vec<String> = keywords(text)
        .into_iter()
        .filter(|(k, _)| (keep_password || k != "password") && k != "dbname")
        .map(|(k, v)| format!("{k}={}", quote(&v)))
        .collect();
    out.push(format!("dbname={}", quote(db)));
    out.join(" ")
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// libpq's key = value syntax: values bare or single-quoted with backslash escapes.
fn keywords(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_whitespace() {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            return out;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == '=') {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                if c == '\\' {
                    chars.next();
                }
                value.extend(chars.next());
            }
        }
        out.push((key, value));
    }
}

/// A client program run against one database; its password (from the connection string,
/// `PGPASSWORD` or `.pgpass`, as libpq would find it) goes in the child's environment.
pub fn command(program: &std::path::Path, conninfo: Option<&str>, db: &str) -> Result<tokio::process::Command> {
    let resolved = sql::resolve_config(conninfo, false).map_err(|e| Fail::new(Code::Postgres, e))?;
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(format!("--dbname={}", for_child(conninfo, db)));
    if let Some(pw) = resolved.pg.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    cmd.stdin(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true);
    // The child dies with tidewal (kill -9 included): no orphan pg_dump writes on.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Wait for a spawned client; an error carries the last lines it wrote on stderr.
pub async fn wait(mut child: tokio::process::Child, what: &str) -> Result<()> {
    let tail = match child.stderr.take() {
        Some(err) => {
            let mut lines = BufReader::new(err).lines();
            let mut tail: std::collections::VecDeque<String> = Default::default();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::debug!("{what}: {line}");
                if tail.len() == 8 {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
            tail.into_iter().collect::<Vec<_>>().join("; ")
        }
        None => String::new(),
    };
    let status = child.wait().await.map_err(|e| Fail::new(Code::Internal, format!("{what}: {e}")))?;
    if status.success() {
        return Ok(());
    }
    Err(Fail::new(Code::Postgres, format!("{what} failed ({status}): {}", crate::redact::text(&tail))))
}

/// `SELECT extversion` of TimescaleDB in `db`, when installed.
pub async fn timescaledb_version(conninfo: Option<&str>, db: &str) -> Result<Option<String>> {
    let client = sql::connect(Some(&for_database(conninfo, db))).await.map_err(|e| Fail::new(Code::Postgres, e))?;
    let row = client
        .query_opt("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'", &[])
        .await
        .map_err(|e| Fail::new(Code::Postgres, format!("database {db}: {}", sql::error_chain(&e))))?;
    Ok(row.map(|r| r.get(0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_and_no_password() {
        assert_eq!(for_child(None, "app"), "dbname='app'");
        assert_eq!(for_database(Some("password=p dbname=x"), "y"), "password='p' dbname='y'");
        assert_eq!(for_database(Some("postgres://u:p@h/x?password=q"), "y"), "postgres://u:p@h/y?password=q");
        assert_eq!(
            for_child(Some("host=/tmp port=5433 password='a b\\'c' dbname=postgres user=pg"), "o'k"),
            "host='/tmp' port='5433' user='pg' dbname='o\\'k'"
        );
        assert_eq!(
            for_child(Some("postgresql://u:secret@db:5432/postgres?sslmode=require&password=x"), "my db"),
            "postgresql://u@db:5432/my%20db?sslmode=require"
        );
        assert_eq!(for_child(Some("postgres://db"), "a"), "postgres://db/a");
        // What the conninfo parser makes of the result: the database chosen, no password.
        let cfg: tokio_postgres::Config = for_child(Some("host=h password=p dbname=x"), "y").parse().unwrap();
        assert_eq!((cfg.get_dbname(), cfg.get_password()), (Some("y"), None));
        let cfg: tokio_postgres::Config = for_child(Some("postgresql://u:p@h/x"), "y").parse().unwrap();
        assert_eq!((cfg.get_dbname(), cfg.get_password()), (Some("y"), None));
    }
}
