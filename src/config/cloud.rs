//! The `[repository.azure]` and `[repository.gcs]` sections. Secrets are named by file (or
//! left to the AZURE_* / GOOGLE_* variables object_store reads), never given inline, so
//! the file a restore writes for recovery names them without holding them.

use std::path::PathBuf;

use serde::Deserialize;
use toml::{Table, Value};

use super::usage;
use crate::error::Result;
use crate::store::{AzureOptions, GcsOptions, StoreOptions};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AzureSection {
    account: Option<String>,
    access_key_file: Option<PathBuf>,
    sas_token_file: Option<PathBuf>,
    endpoint: Option<String>,
    allow_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct GcsSection {
    service_account_file: Option<PathBuf>,
    endpoint: Option<String>,
    allow_http: Option<bool>,
    anonymous: Option<bool>,
}

pub(super) fn azure_options(a: AzureSection) -> Result<AzureOptions> {
    if a.access_key_file.is_some() && a.sas_token_file.is_some() {
        return Err(usage("repository.azure: set access_key_file or sas_token_file, not both".into()));
    }
    Ok(AzureOptions {
        account: a.account,
        access_key_file: a.access_key_file,
        sas_token_file: a.sas_token_file,
        endpoint: a.endpoint,
        allow_http: a.allow_http.unwrap_or(false),
    })
}

pub(super) fn gcs_options(g: GcsSection) -> Result<GcsOptions> {
    let anonymous = g.anonymous.unwrap_or(false);
    if anonymous && g.service_account_file.is_some() {
        return Err(usage("repository.gcs: anonymous = true sends no credentials; drop service_account_file".into()));
    }
    Ok(GcsOptions {
        service_account_file: g.service_account_file,
        endpoint: g.endpoint,
        allow_http: g.allow_http.unwrap_or(false),
        anonymous,
    })
}

/// The `azure` and `gcs` tables of the file a restore writes for recovery, where anything is
/// set (file paths made absolute, as recovery runs in the data directory).
pub(super) fn fetch_tables(o: &StoreOptions, repo: &mut Table) -> Result<()> {
    let abs = |p: &PathBuf| -> Result<Value> {
        let p = std::path::absolute(p).map_err(|e| usage(format!("{}: {e}", p.display())))?;
        Ok(Value::String(p.display().to_string()))
    };
    let a = &o.azure;
    let mut az = Table::new();
    for (k, v) in [("account", &a.account), ("endpoint", &a.endpoint)] {
        if let Some(v) = v {
            az.insert(k.into(), Value::String(v.clone()));
        }
    }
    for (k, v) in [("access_key_file", &a.access_key_file), ("sas_token_file", &a.sas_token_file)] {
        if let Some(v) = v {
            az.insert(k.into(), abs(v)?);
        }
    }
    if a.allow_http {
        az.insert("allow_http".into(), Value::Boolean(true));
    }
    if !az.is_empty() {
        repo.insert("azure".into(), Value::Table(az));
    }
    let g = &o.gcs;
    let mut gs = Table::new();
    if let Some(p) = &g.service_account_file {
        gs.insert("service_account_file".into(), abs(p)?);
    }
    if let Some(e) = &g.endpoint {
        gs.insert("endpoint".into(), Value::String(e.clone()));
    }
    for (k, v) in [("allow_http", g.allow_http), ("anonymous", g.anonymous)] {
        if v {
            gs.insert(k.into(), Value::Boolean(true));
        }
    }
    if !gs.is_empty() {
        repo.insert("gcs".into(), Value::Table(gs));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_file as load;

    #[test]
    fn azure_and_gcs_sections_reach_the_store_and_the_recovery_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("az.key");
        std::fs::write(&key, "c2VjcmV0LWtleQ==").unwrap();
        let t = format!(
            "[repository]\nurl = \"az://backups/pg1\"\n[repository.azure]\naccount = \"acct\"\naccess_key_file = {key:?}\n\
             endpoint = \"http://127.0.0.1:10000/acct\"\nallow_http = true\n[repository.gcs]\nendpoint = \"http://127.0.0.1:4443\"\n\
             anonymous = true\n"
        );
        let s = load(dir.path(), &t).unwrap();
        let a = &s.store.azure;
        assert_eq!(
            (a.account.as_deref(), a.access_key_file.as_deref(), a.allow_http),
            (Some("acct"), Some(key.as_path()), true)
        );
        assert!(s.store.gcs.anonymous && s.store.gcs.endpoint.as_deref() == Some("http://127.0.0.1:4443"));
        let written = s.fetch_config().unwrap();
        assert!(!written.contains("c2VjcmV0"), "no secret in the recovery file: {written}");
        let r = load(dir.path(), &written).unwrap();
        assert_eq!(r.store.azure.access_key_file.as_deref(), Some(key.as_path()));
        assert_eq!(r.store.azure.endpoint, a.endpoint);
        assert!(r.store.azure.allow_http && r.store.gcs.anonymous);
        assert_eq!(r.store.gcs.endpoint, s.store.gcs.endpoint);
        // Nothing set, nothing written.
        let plain = load(dir.path(), "[repository]\nurl = \"s3://b/p\"\n").unwrap().fetch_config().unwrap();
        assert!(!plain.contains("azure") && !plain.contains("gcs"), "{plain}");
    }

    #[test]
    fn contradictory_or_inline_credentials_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let t = "[repository.azure]\naccess_key_file = \"/k\"\nsas_token_file = \"/s\"\n";
        assert!(load(dir.path(), t).unwrap_err().message.contains("not both"));
        let t = "[repository.gcs]\nanonymous = true\nservice_account_file = \"/k.json\"\n";
        assert!(load(dir.path(), t).unwrap_err().message.contains("anonymous"));
        // No inline secrets: the key itself is not a setting.
        let e = load(dir.path(), "[repository.azure]\naccess_key = \"hunter2\"\n").unwrap_err();
        assert!(e.message.contains("access_key") && !e.message.contains("hunter2"), "{e}");
    }
}
