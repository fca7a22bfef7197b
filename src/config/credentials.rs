//! S3 credentials read from files (`repository.s3.access_key_id_file`,
//! `secret_access_key_file`): a Kubernetes Secret volume or a systemd credential, so that
//! they appear in neither the environment nor the configuration file.

use std::path::{Path, PathBuf};

use super::usage;
use crate::error::Result;

/// Where each S3 credential was read from, when it came from a file: a restore's file for
/// recovery names the file again instead of copying the secret.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CredentialFiles {
    pub access_key_id: Option<PathBuf>,
    pub secret_access_key: Option<PathBuf>,
}

/// The credential from the environment, else the configuration file's value, else the file
/// it names (surrounding whitespace, such as a trailing newline, dropped). `key` is the TOML
/// key without `_file`. A value and a file in the same configuration file are refused.
pub(super) fn credential(
    env: Option<String>,
    inline: Option<String>,
    file: Option<PathBuf>,
    key: &str,
) -> Result<(Option<String>, Option<PathBuf>)> {
    if inline.is_some() && file.is_some() {
        return Err(usage(format!("{key} and {key}_file are both set: keep one")));
    }
    if let Some(v) = env.or(inline) {
        return Ok((Some(v), None));
    }
    let Some(path) = file else { return Ok((None, None)) };
    Ok((Some(read(&path, key)?), Some(path)))
}

fn read(path: &Path, key: &str) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| usage(format!("{key}_file = {}: {e}", path.display())))?;
    match text.trim() {
        "" => Err(usage(format!("{key}_file = {}: the file is empty", path.display()))),
        v => Ok(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "repository.s3.secret_access_key";

    #[test]
    fn file_read_and_trimmed_and_outranked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        std::fs::write(&p, "s3cr3t/value\n").unwrap();
        let (v, from) = credential(None, None, Some(p.clone()), KEY).unwrap();
        assert_eq!(v.as_deref(), Some("s3cr3t/value"));
        assert_eq!(from.as_deref(), Some(p.as_path()));
        // The environment wins over the file, which is then not even read.
        let (v, from) = credential(Some("env".into()), None, Some(dir.path().join("absent")), KEY).unwrap();
        assert_eq!((v.as_deref(), from), (Some("env"), None));
        assert_eq!(credential(None, Some("inline".into()), None, KEY).unwrap().0.as_deref(), Some("inline"));
        assert_eq!(credential(None, None, None, KEY).unwrap(), (None, None));
    }

    #[test]
    fn missing_empty_or_doubled_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = credential(None, None, Some(dir.path().join("absent")), KEY).unwrap_err();
        assert!(e.message.starts_with("repository.s3.secret_access_key_file = "), "{e}");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = credential(None, None, Some(empty), KEY).unwrap_err();
        assert!(e.message.contains("the file is empty"), "{e}");
        let e = credential(None, Some("x".into()), Some(dir.path().join("f")), KEY).unwrap_err();
        assert!(e.message.contains("both set"), "{e}");
    }

    #[test]
    fn settings_read_the_files_and_a_restore_names_them_again() {
        use super::super::{Flags, Settings};
        let dir = tempfile::tempdir().unwrap();
        let (id, secret) = (dir.path().join("id"), dir.path().join("secret"));
        std::fs::write(&id, "AKIDEXAMPLE\n").unwrap();
        std::fs::write(&secret, "the-secret-value\n").unwrap();
        let conf = dir.path().join("tidewal.toml");
        let text = format!(
            "[repository]\nurl = \"s3://bucket/p\"\n[repository.s3]\nregion = \"r\"\n\
             access_key_id_file = {:?}\nsecret_access_key_file = {:?}\n",
            id.display().to_string(),
            secret.display().to_string()
        );
        std::fs::write(&conf, text).unwrap();
        let load = |p: &Path| Settings::load(&Flags { config: Some(p.into()), ..Flags::default() }, &|_| None);
        let s = load(&conf).unwrap();
        assert_eq!(s.store.s3.access_key_id.as_deref(), Some("AKIDEXAMPLE"));
        assert_eq!(s.store.s3.secret_access_key.as_deref(), Some("the-secret-value"));
        let written = s.fetch_config().unwrap();
        assert!(!written.contains("the-secret-value") && written.contains("secret_access_key_file"), "{written}");
        let again = dir.path().join("tidewal-restore.toml");
        std::fs::write(&again, written).unwrap();
        let r = load(&again).unwrap();
        assert_eq!(r.store.s3.secret_access_key, s.store.s3.secret_access_key);
        assert_eq!(r.store.s3.access_key_id, s.store.s3.access_key_id);
    }
}
