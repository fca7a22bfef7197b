//! SQL connections (tokio-postgres) set up with libpq conventions. TLS is negotiated by
//! `tls::connect`, shared with replication connections; tokio-postgres then speaks the
//! protocol over that stream.

use std::os::unix::fs::PermissionsExt;

use tokio_postgres::config::{SslMode, TargetSessionAttrs};
use tokio_postgres::{Client, NoTls};

use super::conninfo::{pgpass_host, pgpass_lookup, pgpass_path, resolve, ConnConfig};
use super::tls;

/// Resolve connection settings like libpq: conninfo, PG* variables, then `.pgpass` (where a
/// replication connection matches the database name `replication`, as in libpq).
pub fn resolve_config(conninfo: Option<&str>, replication: bool) -> Result<ConnConfig, String> {
    let env = |k: &str| std::env::var(k).ok();
    let os_user = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "postgres".into());
    let mut conn = resolve(conninfo, &env, &os_user)?;
    let cfg = &mut conn.pg;
    if cfg.get_password().is_none() {
        if let Some(path) = pgpass_path(&env) {
            if let Ok(meta) = std::fs::metadata(&path) {
                if meta.permissions().mode() & 0o077 != 0 {
                    tracing::warn!(
                        "password file {} has group or world access; ignoring it, as libpq does (chmod 600)",
                        path.display()
                    );
                } else if let Ok(text) = std::fs::read_to_string(&path) {
                    // libpq matches the host name, else the hostaddr.
                    let host = match (cfg.get_hosts().first(), cfg.get_hostaddrs().first()) {
                        (Some(h), _) => pgpass_host(h),
                        (None, Some(addr)) => addr.to_string(),
                        (None, None) => "localhost".into(),
                    };
                    let port = cfg.get_ports().first().copied().unwrap_or(5432);
                    let db = if replication { "replication" } else { cfg.get_dbname().unwrap_or("") };
                    let user = cfg.get_user().unwrap_or("");
                    if let Some(pw) = pgpass_lookup(&text, &host, port, db, user) {
                        cfg.password(pw);
                    }
                }
            }
        }
    }
    Ok(conn)
}

/// Connect with a conninfo string (or none) and the process environment.
pub async fn connect(conninfo: Option<&str>) -> Result<Client, String> {
    let cfg = resolve_config(conninfo, false)?;
    let user = cfg.pg.get_user().unwrap_or("?").to_string();
    // The stream arrives with TLS already settled: tokio-postgres must not ask again.
    let mut plain = cfg.pg.clone();
    plain.ssl_mode(SslMode::Disable);
    let (plain, user) = (&plain, user.as_str());
    tls::connect(&cfg, |stream, target| async move {
        let (client, conn) = plain.connect_raw(stream, NoTls).await.map_err(|e| match e.as_db_error() {
            Some(d) => format!("the server at {target} refused the connection for user {user}: {}", d.message()),
            None => format!("{target}: {}", error_chain(&e)),
        })?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection closed: {e}");
            }
        });
        // connect_raw skips target_session_attrs (Config::connect would check it): as libpq, a
        // server that does not match is passed over for the next host.
        let want_writable = match plain.get_target_session_attrs() {
            TargetSessionAttrs::ReadWrite => true,
            TargetSessionAttrs::ReadOnly => false,
            _ => return Ok(client),
        };
        let row = client
            .query_one("SHOW transaction_read_only", &[])
            .await
            .map_err(|e| format!("{target}: cannot check target_session_attrs: {e}"))?;
        match (row.get::<_, String>(0) == "off") == want_writable {
            true => Ok(client),
            false => Err(format!("the server at {target} does not match target_session_attrs")),
        }
    })
    .await
    .map_err(|e| format!("cannot connect to PostgreSQL: {e} (check [postgres] conninfo and the PG* variables)"))
}

/// An error and its causes on one line ("error connecting to server: No such file or directory").
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// What tidewal needs to know about a running server.
#[derive(Clone, Debug)]
pub struct ServerInfo {
    pub version_num: u32,
    pub version: String,
    pub system_identifier: u64,
    pub wal_segment_size: u64,
    pub in_recovery: bool,
}

pub async fn server_info(client: &Client) -> Result<ServerInfo, String> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int4, current_setting('server_version'), \
             (SELECT system_identifier::text FROM pg_control_system()), \
             (SELECT setting::int8 FROM pg_settings WHERE name = 'wal_segment_size'), pg_is_in_recovery()",
            &[],
        )
        .await
        .map_err(|e| format!("cannot read server information: {e}"))?;
    let sysid: String = row.get(2);
    Ok(ServerInfo {
        version_num: row.get::<_, i32>(0) as u32,
        version: row.get(1),
        system_identifier: sysid.parse().map_err(|_| format!("unexpected system identifier {sysid:?}"))?,
        wal_segment_size: row.get::<_, i64>(3) as u64,
        in_recovery: row.get(4),
    })
}

/// `(name, setting, unit)` for the named settings.
pub async fn settings(client: &Client, names: &[&str]) -> Result<Vec<(String, String, Option<String>)>, String> {
    let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let rows = client
        .query("SELECT name, setting, unit FROM pg_settings WHERE name = ANY($1)", &[&names])
        .await
        .map_err(|e| format!("cannot read pg_settings: {e}"))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
}
