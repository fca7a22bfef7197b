//! TLS against a real PostgreSQL 15 that takes TCP connections only over SSL (hostssl lines,
//! and hostnossl ... reject): `check` (SQL and replication connections) and `backup` with
//! sslmode=require, verify-ca and verify-full, from the conninfo, a URI or PGSSL* variables;
//! a client certificate; and clear failures for a wrong CA, a wrong host name, a missing root
//! certificate and a plain connection.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const PASSWORD: &str = "tls-secret";

/// With the openssl CLI: a CA, a server certificate it signed for localhost and 127.0.0.1, a
/// client certificate for the role `certuser`, and an unrelated CA.
fn make_pki(dir: &Path) {
    let openssl = |args: &[&str]| {
        run_ok(Command::new("openssl").current_dir(dir).args(args));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    std::fs::write(
        dir.join("ca.cnf"),
        "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = ca\n[dn]\nCN = unused\n\
         [ca]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n",
    )
    .unwrap();
    for ca in ["ca", "other-ca"] {
        let (key, crt, subj) = (format!("{ca}.key"), format!("{ca}.crt"), format!("/CN=tidewal test {ca}"));
        openssl(
            &[
                &["req", "-x509", "-config", "ca.cnf", "-days", "2", "-subj", &subj, "-keyout", &key, "-out", &crt],
                &ec[..],
            ]
            .concat(),
        );
    }
    let leaf = |name: &str, cn: &str, ext: &str| {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n{ext}\n"),
        )
        .unwrap();
        let (key, csr, crt, ext) =
            (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        openssl(&[&["req", "-new", "-subj", &format!("/CN={cn}"), "-keyout", &key, "-out", &csr], &ec[..]].concat());
        let sign = ["x509", "-req", "-in", &csr, "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2"];
        openssl(&[&sign[..], &["-extfile", &ext, "-out", &crt]].concat());
    };
    leaf("server", "localhost", "extendedKeyUsage = serverAuth\nsubjectAltName = DNS:localhost, IP:127.0.0.1");
    leaf("client", "certuser", "extendedKeyUsage = clientAuth");
    chown_pg(dir);
    // PostgreSQL and libpq refuse private keys others can read.
    for key in ["server.key", "client.key"] {
        std::fs::set_permissions(dir.join(key), std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Run tidewal as postgres with this conninfo and PGSSL* variables (and no inherited ones).
fn tidewal(env: &TestEnv, conninfo: &str, vars: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = as_pg(&env.bin);
    c.arg("--config").arg(&env.config).args(args).current_dir(env.path());
    for v in ["PGSSLMODE", "PGSSLROOTCERT", "PGSSLCERT", "PGSSLKEY"] {
        c.env_remove(v);
    }
    c.env("TIDEWAL_PG_CONNINFO", conninfo).envs(vars.iter().copied());
    c.output().unwrap()
}

/// `check` passed, over both connections.
fn assert_check_passes(out: &Output, what: &str) {
    let text = stdout(out);
    assert_eq!(code(out), 0, "check with {what}:\n{text}{}", stderr(out));
    for needle in ["server: PostgreSQL ", "replication connection works"] {
        assert!(text.contains(needle), "check with {what} lacks {needle:?}:\n{text}");
    }
}

/// `check` failed (it exits 8 and reports on stdout) mentioning each of `needles`.
fn assert_check_fails(out: &Output, needles: &[&str]) {
    let text = stdout(out);
    assert_eq!(code(out), 8, "{text}{}", stderr(out));
    for n in needles {
        assert!(text.contains(n), "check output should mention {n:?}:\n{text}");
    }
}

#[test]
fn tls_connections_follow_sslmode() {
    let env = TestEnv::new("tls");
    let key = env.keygen("repo.key");
    let repo = env.pg_dir("repo");
    let pki = env.pg_dir("pki");
    make_pki(&pki);
    let p = |name: &str| pki.join(name).display().to_string();
    let mut c = Cluster::init(
        &env.pg_dir("primary"),
        &format!(
            "listen_addresses = '127.0.0.1'\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nssl_ca_file = '{}'\n\
             password_encryption = 'scram-sha-256'\narchive_timeout = 60\n",
            p("server.crt"),
            p("server.key"),
            p("ca.crt")
        ),
    );
    // First matching line wins: over TCP, SSL only; the socket keeps initdb's trust for psql.
    let hba = c.data.join("pg_hba.conf");
    let original = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(
        &hba,
        format!(
            "hostssl all certuser 127.0.0.1/32 cert\nhostssl replication certuser 127.0.0.1/32 cert\n\
             hostssl all postgres 127.0.0.1/32 scram-sha-256\nhostssl replication postgres 127.0.0.1/32 scram-sha-256\n\
             hostnossl all all 127.0.0.1/32 reject\nhostnossl replication all 127.0.0.1/32 reject\n{original}"
        ),
    )
    .unwrap();
    c.start();
    c.psql(&format!("ALTER ROLE postgres PASSWORD '{PASSWORD}'"));
    c.psql("CREATE ROLE certuser LOGIN SUPERUSER");
    env.write_config(&format!("[repository]\nurl = \"file://{}\"\nkey_file = \"{}\"\n", repo.display(), key.display()));
    let tcp = format!("host=127.0.0.1 port={} user=postgres dbname=postgres password={PASSWORD}", c.port);
    let with = |extra: &str| format!("{tcp} {extra}");

    // require: encrypted, the certificate unchecked (there is no root certificate file).
    let require = with("sslmode=require");
    expect_exit(&tidewal(&env, &require, &[], &["init"]), 0, &[]);
    c.psql(&format!("ALTER SYSTEM SET archive_command = '{} wal-push %p'", env.command_line()));
    c.psql("SELECT pg_reload_conf()");
    assert_check_passes(&tidewal(&env, &require, &[], &["check"]), "sslmode=require");
    let out = tidewal(&env, &require, &[], &["backup"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
    let first_backup = Instant::now();

    // The default, prefer, takes SSL when the server offers it. (target_session_attrs still
    // works with the stream tidewal opens itself.)
    let prefer = format!("{tcp} target_session_attrs=read-write");
    assert_check_passes(&tidewal(&env, &prefer, &[], &["check"]), "sslmode=prefer");
    let read_only = format!("{tcp} target_session_attrs=read-only");
    assert_check_fails(&tidewal(&env, &read_only, &[], &["check"]), &["does not match target_session_attrs"]);

    // verify-full with the right CA, from the conninfo and from PGSSLMODE/PGSSLROOTCERT.
    let full = with(&format!("sslmode=verify-full sslrootcert={}", p("ca.crt")));
    assert_check_passes(&tidewal(&env, &full, &[], &["check"]), "sslmode=verify-full");
    let vars = [("PGSSLMODE", "verify-full"), ("PGSSLROOTCERT", &*p("ca.crt"))];
    assert_check_passes(&tidewal(&env, &tcp, &vars, &["check"]), "PGSSLMODE=verify-full");

    // A name the certificate does not hold: verify-ca accepts it, verify-full does not.
    let other_name = format!(
        "host=db.invalid hostaddr=127.0.0.1 port={} user=postgres dbname=postgres password={PASSWORD} sslrootcert={}",
        c.port,
        p("ca.crt")
    );
    assert_check_passes(&tidewal(&env, &format!("{other_name} sslmode=verify-ca"), &[], &["check"]), "verify-ca");
    let out = tidewal(&env, &format!("{other_name} sslmode=verify-full"), &[], &["backup"]);
    expect_exit(&out, 7, &["certificate verification failed for db.invalid:", "db.invalid", "sslmode=verify-ca"]);

    // The wrong CA: a clear failure from both commands, naming the file.
    let wrong = with(&format!("sslmode=verify-full sslrootcert={}", p("other-ca.crt")));
    let out = tidewal(&env, &wrong, &[], &["backup"]);
    expect_exit(&out, 7, &["certificate verification failed for 127.0.0.1:", "UnknownIssuer", &p("other-ca.crt")]);
    assert_check_fails(&tidewal(&env, &wrong, &[], &["check"]), &["UnknownIssuer", &p("other-ca.crt")]);
    // As libpq: require checks the chain when there is a root certificate file.
    let out = tidewal(&env, &with(&format!("sslmode=require sslrootcert={}", p("other-ca.crt"))), &[], &["backup"]);
    expect_exit(&out, 7, &["UnknownIssuer"]);
    // verify-ca without the file: say which file and what to do.
    let out = tidewal(&env, &with(&format!("sslmode=verify-ca sslrootcert={}", p("missing.crt"))), &[], &["backup"]);
    expect_exit(
        &out,
        7,
        &[&format!("root certificate file {} does not exist", p("missing.crt")), "sslrootcert=system"],
    );

    // Without SSL the server itself says no, and we pass its reason on.
    let plain = with("sslmode=disable");
    let out = tidewal(&env, &plain, &[], &["backup"]);
    expect_exit(&out, 7, &["pg_hba.conf rejects replication connection for host \"127.0.0.1\"", "no encryption"]);
    assert_check_fails(
        &tidewal(&env, &plain, &[], &["check"]),
        &["pg_hba.conf rejects connection for host \"127.0.0.1\", user \"postgres\", database \"postgres\", no encryption"],
    );

    // A client certificate (hba method cert) for both connections; a readable key is refused.
    let cert_user = format!(
        "host=localhost port={} user=certuser dbname=postgres sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        c.port,
        p("ca.crt"),
        p("client.crt"),
        p("client.key")
    );
    assert_check_passes(&tidewal(&env, &cert_user, &[], &["check"]), "a client certificate");
    std::fs::set_permissions(pki.join("client.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_check_fails(&tidewal(&env, &cert_user, &[], &["check"]), &["has group or world access"]);

    // A second backup, verify-full from a URI (backup ids have one-second resolution).
    std::thread::sleep(Duration::from_millis(1100).saturating_sub(first_backup.elapsed()));
    let uri = format!(
        "postgresql://postgres:{PASSWORD}@localhost:{}/postgres?sslmode=verify-full&sslrootcert={}",
        c.port,
        p("ca.crt")
    );
    let out = tidewal(&env, &uri, &[], &["backup"]);
    expect_exit(&out, 0, &[]);
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
}
