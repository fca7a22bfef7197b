//! `[[repository.copy]]`: further repositories (another region, another provider) that the
//! daemon keeps a copy of the repository in. Each inherits the repository's store settings;
//! its own `s3`, `azure` or `gcs` table overrides them (an S3 table field by field, with
//! the credentials as a pair). Commands reach copy N (the repository is 1, the first copy 2)
//! with `--from-repo N`, which hands them the same settings with that copy as the repository.

use std::time::Duration;

use serde::Deserialize;

use super::{cloud, credentials, parse_duration, usage, CredentialFiles, S3Section, Settings};
use crate::error::Result;
use crate::store::{S3Options, StoreOptions};

/// How often the daemon brings a copy up to date by default.
pub const DEFAULT_COPY_INTERVAL: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CopySection {
    url: String,
    interval: Option<String>,
    max_lag: Option<String>,
    s3: Option<S3Section>,
    azure: Option<cloud::AzureSection>,
    gcs: Option<cloud::GcsSection>,
}

/// One further repository the daemon copies every object into, as sealed.
#[derive(Clone, Debug)]
pub struct CopySettings {
    /// 2 for the first `[[repository.copy]]` (the repository itself is 1).
    pub number: usize,
    pub url: String,
    pub store: StoreOptions,
    pub s3_files: CredentialFiles,
    /// The longest the daemon waits between two rounds of copying.
    pub interval: Duration,
    /// Health is degraded when the copy is further behind than this (default: three rounds,
    /// at least 5 minutes).
    pub max_lag: Duration,
}

fn same_place(a: &str, b: &str) -> bool {
    a.trim_end_matches('/') == b.trim_end_matches('/')
}

pub(super) fn copy_settings(
    sections: Vec<CopySection>,
    repo_url: &str,
    main: &StoreOptions,
    main_files: &CredentialFiles,
) -> Result<Vec<CopySettings>> {
    let mut out: Vec<CopySettings> = Vec::new();
    for (i, c) in sections.into_iter().enumerate() {
        let number = i + 2;
        let key = |k: &str| format!("repository.copy (copy {number}).{k}");
        if same_place(&c.url, repo_url) || out.iter().any(|o| same_place(&o.url, &c.url)) {
            return Err(usage(format!(
                "{} = {:?}: already a repository; each copy needs its own place",
                key("url"),
                c.url
            )));
        }
        let interval = match c.interval {
            Some(v) => parse_duration(&key("interval"), &v)?,
            None => DEFAULT_COPY_INTERVAL,
        };
        if interval < Duration::from_secs(1) {
            return Err(usage(format!("{}: at least 1s", key("interval"))));
        }
        let max_lag = match c.max_lag {
            Some(v) => parse_duration(&key("max_lag"), &v)?,
            None => (3 * interval).max(Duration::from_secs(300)),
        };
        let mut store = main.clone();
        let mut s3_files = main_files.clone();
        if let Some(s) = c.s3 {
            (store.s3, s3_files) = s3_override(s, &main.s3, main_files, number)?;
        }
        if let Some(a) = c.azure {
            store.azure = cloud::azure_options(a)?;
        }
        if let Some(g) = c.gcs {
            store.gcs = cloud::gcs_options(g)?;
        }
        // Validate the URL now, not at the first round an hour into the daemon's life; a
        // file:// directory is only made by the daemon (as its user), never here.
        let checked = match crate::store::Store::local_path(&c.url) {
            Some(path) => path.map(|_| ()),
            None => crate::store::Store::open(&c.url, &store).map(|_| ()),
        };
        checked.map_err(|e| usage(format!("{}: {e}", key("url"))))?;
        out.push(CopySettings { number, url: c.url, store, s3_files, interval, max_lag });
    }
    Ok(out)
}

/// A copy's S3 table: unset fields are the repository's; credentials are given as a pair or
/// not at all (half of one pair and half of another signs nothing).
fn s3_override(
    s: S3Section,
    main: &S3Options,
    main_files: &CredentialFiles,
    number: usize,
) -> Result<(S3Options, CredentialFiles)> {
    let key = |k: &str| format!("repository.copy (copy {number}).s3.{k}");
    let (id, id_file) = credentials::credential(None, s.access_key_id, s.access_key_id_file, &key("access_key_id"))?;
    let (secret, secret_file) =
        credentials::credential(None, s.secret_access_key, s.secret_access_key_file, &key("secret_access_key"))?;
    let (access_key_id, secret_access_key, files) = match (id, secret) {
        (None, None) => (main.access_key_id.clone(), main.secret_access_key.clone(), main_files.clone()),
        (Some(i), Some(k)) => {
            (Some(i), Some(k), CredentialFiles { access_key_id: id_file, secret_access_key: secret_file })
        }
        _ => {
            return Err(usage(format!(
                "{}: give both access_key_id and secret_access_key (or their _file forms), or neither to use the repository's",
                key("*")
            )))
        }
    };
    let opts = S3Options {
        endpoint: s.endpoint.or_else(|| main.endpoint.clone()),
        region: s.region.or_else(|| main.region.clone()),
        access_key_id,
        secret_access_key,
        allow_http: s.allow_http.unwrap_or(main.allow_http),
    };
    Ok((opts, files))
}

impl Settings {
    /// The same settings with repository `n` as the repository: 1 is the repository itself,
    /// 2 and up the `[[repository.copy]]` entries in order. Keys are shared (copies hold the
    /// objects as sealed); so are the other sections.
    pub fn for_repo(&self, n: usize) -> Result<Settings> {
        if n == 1 {
            return Ok(self.clone());
        }
        let Some(c) = self.copies.iter().find(|c| c.number == n) else {
            let have = match self.copies.len() {
                0 => "no [[repository.copy]] is configured, so only repository 1 exists".to_string(),
                k => format!("the configuration has repositories 1 to {}", k + 1),
            };
            return Err(usage(format!("--from-repo {n}: {have}")));
        };
        let mut s = self.clone();
        s.repo_url = c.url.clone();
        s.store = c.store.clone();
        s.s3_files = c.s3_files.clone();
        // The copy has no copies of its own (check and the like look at it alone).
        s.copies.clear();
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_file as load;
    use super::*;

    #[test]
    fn copies_inherit_and_override_the_store_settings() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("eu-secret");
        std::fs::write(&secret, "eu-key\n").unwrap();
        let s = load(
            dir.path(),
            &format!(
                r#"
[repository]
url = "s3://main/db"
[repository.s3]
region = "us-east-1"
endpoint = "http://127.0.0.1:9000"
access_key_id = "main-id"
secret_access_key = "main-key"

[[repository.copy]]
url = "s3://eu/db"
interval = "30s"
[repository.copy.s3]
region = "eu-central-1"
access_key_id = "eu-id"
secret_access_key_file = "{}"

[[repository.copy]]
url = "file:///srv/tidewal-copy"
interval = "10m"
"#,
                secret.display()
            ),
        )
        .unwrap();
        assert_eq!(s.copies.len(), 2);
        let eu = &s.copies[0];
        assert_eq!((eu.number, eu.url.as_str(), eu.interval), (2, "s3://eu/db", Duration::from_secs(30)));
        assert_eq!(eu.store.s3.region.as_deref(), Some("eu-central-1"));
        assert_eq!(eu.store.s3.endpoint.as_deref(), Some("http://127.0.0.1:9000"), "inherited");
        assert_eq!(eu.store.s3.access_key_id.as_deref(), Some("eu-id"));
        assert_eq!(eu.store.s3.secret_access_key.as_deref(), Some("eu-key"));
        assert_eq!(eu.s3_files.secret_access_key.as_ref(), Some(&secret));
        assert_eq!(eu.s3_files.access_key_id, None, "given inline");
        assert_eq!(eu.max_lag, Duration::from_secs(300), "three rounds are less than 5 minutes");
        assert_eq!((s.copies[1].interval, s.copies[1].max_lag), (Duration::from_secs(600), Duration::from_secs(1800)));
        assert_eq!(s.copies[1].store.s3.access_key_id.as_deref(), Some("main-id"), "inherited");

        // --from-repo: the copy becomes the repository, and a restore's recovery file names it.
        let two = s.for_repo(2).unwrap();
        assert_eq!(two.repo_url, "s3://eu/db");
        assert_eq!(two.store.s3.region.as_deref(), Some("eu-central-1"));
        assert!(two.copies.is_empty());
        let conf = two.fetch_config().unwrap();
        assert!(conf.contains("url = \"s3://eu/db\""), "{conf}");
        assert!(conf.contains(&format!("secret_access_key_file = \"{}\"", secret.display())), "{conf}");
        assert!(!conf.contains("eu-key"), "{conf}");
        assert_eq!(s.for_repo(3).unwrap().repo_url, "file:///srv/tidewal-copy");
        assert_eq!(s.for_repo(1).unwrap().repo_url, "s3://main/db");
        let e = s.for_repo(4).unwrap_err();
        assert!(e.message.contains("repositories 1 to 3"), "{e}");
    }

    #[test]
    fn bad_copies_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("[repository]\nurl = \"file:///a\"\n[[repository.copy]]\nurl = \"file:///a/\"\n", "already a repository"),
            ("[[repository.copy]]\nurl = \"file:///b\"\n[[repository.copy]]\nurl = \"file:///b\"\n", "copy 3"),
            ("[[repository.copy]]\nurl = \"file:///b\"\ninterval = \"0s\"\n", "interval: at least 1s"),
            ("[[repository.copy]]\nurl = \"ftp://b\"\n", "copy 2).url"),
            ("[[repository.copy]]\ninterval = \"1m\"\n", "url"),
            (
                "[[repository.copy]]\nurl = \"s3://b/p\"\n[repository.copy.s3]\naccess_key_id = \"x\"\n",
                "give both access_key_id and secret_access_key",
            ),
        ];
        for (text, expected) in cases {
            let e = load(dir.path(), text).unwrap_err();
            assert!(e.message.contains(expected), "{text}: {e}");
        }
        let none = load(dir.path(), "").unwrap();
        assert!(none.copies.is_empty());
        assert!(none.for_repo(2).unwrap_err().message.contains("no [[repository.copy]]"));
    }
}
