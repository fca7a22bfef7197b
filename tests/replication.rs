//! The replication-protocol client against a real server: SCRAM-SHA-256, md5 and trust
//! logins, IDENTIFY_SYSTEM, TIMELINE_HISTORY, and clear refusals.

mod common;

use common::*;
use tidewal::pg::replication::ReplConn;

fn config(c: &Cluster, user: &str, password: Option<&str>) -> tidewal::pg::conninfo::ConnConfig {
    let mut info = format!("host={} port={} user={user}", c.sock.display(), c.port);
    if let Some(p) = password {
        info.push_str(&format!(" password={p}"));
    }
    tidewal::pg::sql::resolve_config(Some(&info), true).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_logins_and_commands() {
    let env = TestEnv::new("repl");
    let mut c = Cluster::init(&env.pg_dir("primary"), "password_encryption = 'scram-sha-256'\n");
    // First matching line wins: put the password rules above initdb's trust lines.
    let hba = c.data.join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "local replication rep_scram scram-sha-256\nlocal replication rep_md5 md5\nlocal replication norep scram-sha-256\n{original}"
        ),
    )
    .unwrap();
    c.start();
    c.psql("CREATE ROLE rep_scram LOGIN REPLICATION PASSWORD 'scram-secret'");
    c.psql("SET password_encryption = 'md5'; CREATE ROLE rep_md5 LOGIN REPLICATION PASSWORD 'md5-secret'");
    c.psql("CREATE ROLE norep LOGIN PASSWORD 'norep-secret'");
    let sysid: u64 = c.psql("SELECT system_identifier FROM pg_control_system()").parse().unwrap();

    for (user, pw) in [("rep_scram", Some("scram-secret")), ("rep_md5", Some("md5-secret")), ("postgres", None)] {
        let mut conn = ReplConn::connect(&config(&c, user, pw)).await.unwrap_or_else(|e| panic!("{user}: {e}"));
        assert_eq!(conn.server_version, c.psql("SHOW server_version"));
        let id = conn.identify_system().await.unwrap();
        assert_eq!(id.system_identifier, sysid);
        assert_eq!(id.timeline, 1);
        assert!(id.xlogpos.0 > 0);
    }

    // Wrong password, missing password, and a role without REPLICATION: clear messages.
    let e = ReplConn::connect(&config(&c, "rep_scram", Some("nope"))).await.err().unwrap();
    assert!(e.contains("password authentication failed for user \"rep_scram\""), "{e}");
    let e = ReplConn::connect(&config(&c, "rep_md5", None)).await.err().unwrap();
    assert!(e.contains("asks for a password for user rep_md5"), "{e}");
    let e = ReplConn::connect(&config(&c, "norep", Some("norep-secret"))).await.err().unwrap();
    // PostgreSQL 15's wording, then 16's.
    assert!(
        e.contains("must be superuser or replication role to start walsender")
            || e.contains("permission denied to start WAL sender"),
        "{e}"
    );

    // A promoted standby's history is readable over the protocol; timeline 1 has none.
    let mut conn = ReplConn::connect(&config(&c, "postgres", None)).await.unwrap();
    let e = conn.timeline_history(1).await.unwrap_err();
    assert!(e.contains("TIMELINE_HISTORY 1"), "{e}");
    // The connection survives an error and keeps working.
    assert_eq!(conn.identify_system().await.unwrap().system_identifier, sysid);
}
