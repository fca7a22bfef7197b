//! The cloud stores, built with object_store's own backends from a URL and the settings:
//! `s3://bucket/prefix`, `az://container/prefix` and `gs://bucket/prefix`. All share one
//! retry policy and client options; credentials not given fall back to the backend's own
//! environment variables (AWS_*, AZURE_*, GOOGLE_*) and files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::s3_uploads::S3Uploads;
use super::StoreOptions;

/// S3 settings; unset values fall back to the standard AWS_* environment.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub allow_http: bool,
}

/// Azure Blob Storage settings; unset values fall back to AZURE_STORAGE_ACCOUNT_NAME,
/// AZURE_STORAGE_ACCOUNT_KEY, AZURE_STORAGE_SAS_TOKEN and the other AZURE_* variables.
/// Secrets are named by file, so a restore's recovery file never holds them.
#[derive(Clone, Debug, Default)]
pub struct AzureOptions {
    pub account: Option<String>,
    pub access_key_file: Option<PathBuf>,
    pub sas_token_file: Option<PathBuf>,
    /// The account's blob URL, for an emulator (`http://127.0.0.1:10000/devstoreaccount1`).
    pub endpoint: Option<String>,
    pub allow_http: bool,
}

/// Google Cloud Storage settings; unset values fall back to GOOGLE_SERVICE_ACCOUNT,
/// GOOGLE_APPLICATION_CREDENTIALS, the gcloud default credentials and the instance metadata.
#[derive(Clone, Debug, Default)]
pub struct GcsOptions {
    pub service_account_file: Option<PathBuf>,
    /// The storage URL, for an emulator (`http://127.0.0.1:4443`).
    pub endpoint: Option<String>,
    pub allow_http: bool,
    /// Send requests unsigned (an emulator, or a public bucket).
    pub anonymous: bool,
}

/// A cloud store, and what the S3 backend also lists of its incomplete uploads.
pub(super) struct Built {
    pub inner: Arc<dyn ObjectStore>,
    pub uploads: Option<S3Uploads>,
}

type Builder = fn(&str, &StoreOptions) -> Result<Built, String>;

/// The builder for a cloud store's URL, by its scheme.
pub(super) fn builder(url: &str) -> Option<Builder> {
    match url.split_once("://")?.0 {
        "s3" => Some(s3),
        "az" => Some(azure),
        "gs" => Some(gcs),
        _ => None,
    }
}

/// `(bucket, prefix)` of `scheme://bucket[/prefix]` (pure).
pub(super) fn split_url<'a>(url: &'a str, scheme: &str, what: &str) -> Result<(&'a str, &'a str), String> {
    let rest = url.strip_prefix(scheme).unwrap_or(url);
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(format!("expected {scheme}{what}[/prefix]"));
    }
    Ok((bucket, prefix.trim_matches('/')))
}

fn retry(opts: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            base: 2.0,
        },
        max_retries: opts.max_retries,
        retry_timeout: opts.retry_timeout,
    }
}

fn client(opts: &StoreOptions, allow_http: bool) -> ClientOptions {
    ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(Duration::from_secs(10).min(opts.retry_timeout.max(Duration::from_secs(1))))
}

fn prefixed<T: ObjectStore>(store: T, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    }
}

/// A secret from a file, without the trailing newline an editor adds.
fn read_secret(key: &str, path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{key} {}: {e}", path.display()))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(format!("{key} {} is empty", path.display()));
    }
    Ok(text.to_string())
}

pub(super) fn s3(url: &str, opts: &StoreOptions) -> Result<Built, String> {
    let (bucket, prefix) = split_url(url, "s3://", "bucket")?;
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let s3 = &opts.s3;
    if let Some(e) = &s3.endpoint {
        b = b.with_endpoint(e).with_virtual_hosted_style_request(false);
    }
    if let Some(r) = &s3.region {
        b = b.with_region(r);
    }
    if let Some(k) = &s3.access_key_id {
        b = b.with_access_key_id(k);
    }
    if let Some(k) = &s3.secret_access_key {
        b = b.with_secret_access_key(k);
    }
    let client = client(opts, s3.allow_http);
    let store = b.with_retry(retry(opts)).with_client_options(client.clone()).build().map_err(|e| e.to_string())?;
    let uploads = S3Uploads::new(store.clone(), prefix, &client)?;
    Ok(Built { inner: prefixed(store, prefix), uploads: Some(uploads) })
}

pub(super) fn azure(url: &str, opts: &StoreOptions) -> Result<Built, String> {
    let (container, prefix) = split_url(url, "az://", "container")?;
    let az = &opts.azure;
    let mut b = MicrosoftAzureBuilder::from_env().with_container_name(container);
    if let Some(a) = &az.account {
        b = b.with_account(a);
    }
    if let Some(p) = &az.access_key_file {
        b = b.with_access_key(read_secret("repository.azure.access_key_file", p)?);
    }
    if let Some(p) = &az.sas_token_file {
        let sas = read_secret("repository.azure.sas_token_file", p)?;
        b = b.with_config(AzureConfigKey::SasKey, sas.trim_start_matches('?'));
    }
    if let Some(e) = &az.endpoint {
        b = b.with_endpoint(e.trim_end_matches('/').to_string());
    }
    let store = b
        .with_retry(retry(opts))
        .with_client_options(client(opts, az.allow_http))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Built { inner: prefixed(store, prefix), uploads: None })
}

pub(super) fn gcs(url: &str, opts: &StoreOptions) -> Result<Built, String> {
    let (bucket, prefix) = split_url(url, "gs://", "bucket")?;
    let gs = &opts.gcs;
    let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    if let Some(p) = &gs.service_account_file {
        b = b.with_service_account_path(p.display().to_string());
    }
    if let Some(e) = &gs.endpoint {
        b = b.with_base_url(e.trim_end_matches('/'));
    }
    if gs.anonymous {
        // Unsigned requests need no credentials: a placeholder keeps the builder from
        // reading gcloud's default credentials file.
        b = b.with_skip_signature(true).with_bearer_token("");
    }
    let store = b
        .with_retry(retry(opts))
        .with_client_options(client(opts, gs.allow_http))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(Built { inner: prefixed(store, prefix), uploads: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_bucket_and_prefix() {
        assert_eq!(split_url("az://c/a/b/", "az://", "container").unwrap(), ("c", "a/b"));
        assert_eq!(split_url("gs://b", "gs://", "bucket").unwrap(), ("b", ""));
        let e = split_url("gs:///x", "gs://", "bucket").unwrap_err();
        assert_eq!(e, "expected gs://bucket[/prefix]");
        assert!(builder("az://c").is_some() && builder("gs://b").is_some() && builder("abfs://c").is_none());
    }

    #[test]
    fn secrets_come_from_files_and_are_named_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        std::fs::write(&key, "c2VjcmV0\n").unwrap();
        assert_eq!(read_secret("k", &key).unwrap(), "c2VjcmV0");
        std::fs::write(&key, "\n").unwrap();
        assert!(read_secret("repository.azure.access_key_file", &key).unwrap_err().contains("is empty"));
        let e = read_secret("repository.azure.sas_token_file", &dir.path().join("none")).unwrap_err();
        assert!(e.starts_with("repository.azure.sas_token_file "), "{e}");
    }

    #[test]
    fn builders_take_the_settings() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key");
        // The emulator's well-known key is base64; a wrong one is refused at build.
        std::fs::write(&key, "not base64!").unwrap();
        let azure_opts = AzureOptions {
            account: Some("acct".into()),
            access_key_file: Some(key.clone()),
            endpoint: Some("http://127.0.0.1:1/acct/".into()),
            allow_http: true,
            ..Default::default()
        };
        let mut opts = StoreOptions { azure: azure_opts, ..Default::default() };
        assert!(azure("az://c/p", &opts).is_err(), "a key that is not base64");
        std::fs::write(&key, "c2VjcmV0").unwrap();
        let built = azure("az://c/p", &opts).unwrap();
        assert!(built.uploads.is_none());
        opts.gcs = GcsOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            allow_http: true,
            anonymous: true,
            ..Default::default()
        };
        assert!(gcs("gs://b/p", &opts).is_ok());
        opts.gcs.service_account_file = Some(dir.path().join("missing.json"));
        opts.gcs.anonymous = false;
        let e = gcs("gs://b/p", &opts).err().unwrap();
        assert!(e.contains("missing.json"), "{e}");
    }
}
