//! What runs on the promoted copy: amcheck in every database that takes connections, then
//! the configured SQL checks. Each problem becomes a failure naming the database and the
//! relation or check; nothing here stops at the first.

use tokio_postgres::Client;

use super::{Failure, RestoreTestReport, SqlCheck};
use crate::pg::sql;

/// B-tree indexes amcheck can check: valid, ready, not another session's temporary ones.
const INDEXES: &str = "SELECT c.oid, format('%I.%I', n.nspname, c.relname) \
    FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid \
    JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_am a ON a.oid = c.relam \
    WHERE a.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND i.indisready \
    AND c.relpersistence <> 't' ORDER BY 2";

/// Relations with heap storage: tables, populated materialized views, TOAST tables.
const HEAPS: &str = "SELECT c.oid, format('%I.%I', n.nspname, c.relname) \
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
    WHERE (c.relkind IN ('r', 't') OR (c.relkind = 'm' AND c.relispopulated)) \
    AND c.relpersistence <> 't' ORDER BY 2";

fn db_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => sql::error_chain(e),
    }
}

fn fail(r: &mut RestoreTestReport, stage: &str, what: String, problem: String) {
    r.failures.push(Failure { stage: stage.into(), what, problem });
}

/// amcheck in every database that allows connections (the copy may be changed: the
/// extension is created where it is missing).
pub(super) async fn amcheck(
    connect: &(dyn Fn(&str) -> String + Sync),
    first: &Client,
    heapallindexed: bool,
    r: &mut RestoreTestReport,
) {
    let dbs = match first.query("SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1", &[]).await {
        Ok(rows) => rows.iter().map(|row| row.get::<_, String>(0)).collect::<Vec<_>>(),
        Err(e) => return fail(r, "amcheck", "pg_database".into(), db_error(&e)),
    };
    for db in dbs {
        match sql::connect(Some(&connect(&db))).await {
            Ok(client) => check_database(&client, &db, heapallindexed, r).await,
            Err(e) => fail(r, "amcheck", format!("database {db}"), e),
        }
        r.databases.push(db);
    }
}

async fn check_database(c: &Client, db: &str, heapallindexed: bool, r: &mut RestoreTestReport) {
    let at = |rel: &str| format!("database {db}, {rel}");
    if let Err(e) = c.batch_execute("CREATE EXTENSION IF NOT EXISTS amcheck").await {
        return fail(
            r,
            "amcheck",
            format!("database {db}"),
            format!("cannot create extension amcheck: {} (it comes with the server's contrib modules)", db_error(&e)),
        );
    }
    // An older amcheck installed there may lack verify_heapam (1.3).
    let _ = c.batch_execute("ALTER EXTENSION amcheck UPDATE").await;
    let found = c
        .query_one(
            "SELECT n.nspname::text, EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = n.oid \
             AND p.proname = 'verify_heapam') FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace \
             WHERE e.extname = 'amcheck'",
            &[],
        )
        .await;
    let (schema, heap) = match found {
        Ok(row) => (quote_ident(row.get(0)), row.get::<_, bool>(1)),
        Err(e) => return fail(r, "amcheck", format!("database {db}"), db_error(&e)),
    };
    let list = |q: &'static str| async move {
        c.query(q, &[]).await.map(|rows| rows.iter().map(|r| (r.get::<_, u32>(0), r.get::<_, String>(1))).collect())
    };
    let indexes: Vec<(u32, String)> = match list(INDEXES).await {
        Ok(l) => l,
        Err(e) => return fail(r, "amcheck", format!("database {db}"), db_error(&e)),
    };
    let check = format!("SELECT {schema}.bt_index_check($1::oid::regclass, $2)");
    for (oid, name) in &indexes {
        match c.query(&check, &[oid, &heapallindexed]).await {
            Ok(_) => r.indexes_checked += 1,
            Err(e) if c.is_closed() => {
                return fail(r, "amcheck", at(name), format!("connection lost: {}", db_error(&e)))
            }
            Err(e) => fail(r, "amcheck", at(name), format!("bt_index_check: {}", db_error(&e))),
        }
    }
    if !heap {
        return;
    }
    r.heap_checked = true;
    let heaps: Vec<(u32, String)> = match list(HEAPS).await {
        Ok(l) => l,
        Err(e) => return fail(r, "amcheck", format!("database {db}"), db_error(&e)),
    };
    let check = format!(
        "SELECT coalesce(blkno::text, '?'), coalesce(offnum::text, '?'), coalesce(msg, '') \
         FROM {schema}.verify_heapam($1::oid::regclass) LIMIT 5"
    );
    for (oid, name) in &heaps {
        match c.query(&check, &[oid]).await {
            Ok(rows) if rows.is_empty() => r.relations_checked += 1,
            Ok(rows) => {
                let found: Vec<String> = rows
                    .iter()
                    .map(|row| {
                        format!(
                            "block {}, offset {}: {}",
                            row.get::<_, String>(0),
                            row.get::<_, String>(1),
                            row.get::<_, String>(2)
                        )
                    })
                    .collect();
                fail(r, "amcheck", at(name), format!("verify_heapam: {}", found.join("; ")));
            }
            Err(e) if c.is_closed() => {
                return fail(r, "amcheck", at(name), format!("connection lost: {}", db_error(&e)))
            }
            Err(e) => fail(r, "amcheck", at(name), format!("verify_heapam: {}", db_error(&e))),
        }
    }
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Whether what a check returned is exactly one boolean true; else what it was instead.
pub fn verdict(columns: usize, first_type: &str, rows: usize, value: Option<bool>) -> Result<(), String> {
    match (columns, rows) {
        (1, 1) if first_type != "bool" => Err(format!("returned a {first_type}, not a boolean")),
        (1, 1) => match value {
            Some(true) => Ok(()),
            Some(false) => Err("returned false".into()),
            None => Err("returned NULL".into()),
        },
        (1, n) => Err(format!("returned {n} rows, not one")),
        (n, _) => Err(format!("returned {n} columns, not one")),
    }
}

/// The configured checks, in `db`, each on its own.
pub(super) async fn sql_checks(client: &Client, db: &str, queries: &[String], r: &mut RestoreTestReport) {
    for q in queries {
        let outcome = match client.prepare(q).await {
            Err(e) => Err(db_error(&e)),
            Ok(stmt) => {
                let cols = stmt.columns();
                let first = cols.first().map(|c| c.type_().name().to_string()).unwrap_or_default();
                match client.query(&stmt, &[]).await {
                    Err(e) => Err(db_error(&e)),
                    Ok(rows) => {
                        let value = (cols.len() == 1 && first == "bool" && rows.len() == 1)
                            .then(|| rows[0].get::<_, Option<bool>>(0))
                            .flatten();
                        verdict(cols.len(), &first, rows.len(), value)
                    }
                }
            }
        };
        let passed = outcome.is_ok();
        if let Err(why) = &outcome {
            fail(r, "sql", format!("database {db}, check {q:?}"), why.clone());
        }
        r.sql_checks.push(SqlCheck { sql: q.clone(), database: db.to_string(), passed, problem: outcome.err() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_true_passes() {
        assert_eq!(verdict(1, "bool", 1, Some(true)), Ok(()));
        assert_eq!(verdict(1, "bool", 1, Some(false)).unwrap_err(), "returned false");
        assert_eq!(verdict(1, "bool", 1, None).unwrap_err(), "returned NULL");
        assert_eq!(verdict(1, "bool", 0, None).unwrap_err(), "returned 0 rows, not one");
        assert_eq!(verdict(1, "bool", 2, None).unwrap_err(), "returned 2 rows, not one");
        assert_eq!(verdict(1, "int4", 1, None).unwrap_err(), "returned a int4, not a boolean");
        assert_eq!(verdict(2, "bool", 1, None).unwrap_err(), "returned 2 columns, not one");
        assert_eq!(verdict(0, "", 0, None).unwrap_err(), "returned 0 columns, not one");
    }

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("public"), "\"public\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
