//! Repository keys: 32 random bytes, kept as hex text in a key file or an env var.
//! Each key has an 8-byte id (derived, not secret) that objects carry in their header, so a
//! reader can say *which* key an object needs, and several keys can be held for rotation.

use std::fmt;
use std::path::Path;

use zeroize_like::Secret;

/// Derivation contexts: one master key gives independent AEAD, MAC and id values.
const CTX_ID: &str = "tidewal 2026 key id v1";
const CTX_AEAD: &str = "tidewal 2026 aead key v1";
const CTX_MAC: &str = "tidewal 2026 header mac key v1";

/// The AEAD that seals new objects, chosen at `init` and recorded in `tidewal.json`. Every
/// object's header names its own, so a reader needs no setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
pub enum Cipher {
    /// XChaCha20-Poly1305: fast everywhere, no hardware support needed
    #[default]
    #[serde(rename = "xchacha20-poly1305")]
    #[value(name = "xchacha20-poly1305")]
    XChaCha20Poly1305,
    /// AES-256-GCM: hardware-accelerated on x86-64 and ARMv8, the FIPS-approved choice
    #[serde(rename = "aes-256-gcm")]
    #[value(name = "aes-256-gcm")]
    Aes256Gcm,
}

impl Cipher {
    pub fn name(self) -> &'static str {
        match self {
            Cipher::XChaCha20Poly1305 => "XChaCha20-Poly1305",
            Cipher::Aes256Gcm => "AES-256-GCM",
        }
    }
}

#[derive(Clone)]
pub struct Key {
    id: [u8; 8],
    aead: Secret,
    mac: Secret,
    /// What this key seals new objects with.
    cipher: Cipher,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({})", self.id_hex())
    }
}

impl Key {
    pub fn from_bytes(master: &[u8; 32]) -> Key {
        let id = blake3::derive_key(CTX_ID, master);
        Key {
            id: id[..8].try_into().expect("8 bytes"),
            aead: Secret(blake3::derive_key(CTX_AEAD, master)),
            mac: Secret(blake3::derive_key(CTX_MAC, master)),
            cipher: Cipher::default(),
        }
    }

    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// Parse the text form: 64 hex digits, surrounding whitespace ignored.
    pub fn from_text(text: &str, origin: &str) -> Result<Key, String> {
        let t = text.trim();
        let bytes = hex::decode(t).map_err(|_| {
            format!("{origin}: a tidewal key is 64 hexadecimal digits (make one with `tidewal keygen`)")
        })?;
        let master: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{origin}: a tidewal key is 64 hexadecimal digits, found {}", t.len()))?;
        Ok(Key::from_bytes(&master))
    }

    /// Read a key file, refusing one that others can read, as ssh and libpq do.
    pub fn from_file(path: &Path) -> Result<Key, String> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "key file {} has mode {:04o}: it must not be readable by group or others; run `chmod 600 {}`",
                path.display(),
                mode & 0o7777,
                path.display()
            ));
        }
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
        Key::from_text(&text, &format!("key file {}", path.display()))
    }

    pub fn generate() -> String {
        let mut master = [0u8; 32];
        rand::fill(&mut master);
        hex::encode(master)
    }

    pub fn id(&self) -> [u8; 8] {
        self.id
    }

    pub fn id_hex(&self) -> String {
        hex::encode(self.id)
    }

    pub(crate) fn aead_key(&self) -> &[u8; 32] {
        &self.aead.0
    }

    pub(crate) fn mac_key(&self) -> &[u8; 32] {
        &self.mac.0
    }
}

/// The keys a process holds: one to write with, any number to read with.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    write: Option<Key>,
    read: Vec<Key>,
}

impl Keyring {
    /// No keys: objects are written in plaintext mode (integrity only).
    pub fn plaintext() -> Self {
        Keyring::default()
    }

    pub fn new(write: Key, older: Vec<Key>) -> Self {
        let mut read = vec![write.clone()];
        read.extend(older);
        Keyring { write: Some(write), read }
    }

    pub fn write_key(&self) -> Option<&Key> {
        self.write.as_ref()
    }

    /// The same keys, sealing new objects with `cipher` (the repository's).
    pub fn with_cipher(mut self, cipher: Cipher) -> Keyring {
        if let Some(w) = &mut self.write {
            w.cipher = cipher;
        }
        self
    }

    pub fn find(&self, id: &[u8; 8]) -> Option<&Key> {
        self.read.iter().find(|k| &k.id == id)
    }

    pub fn ids_hex(&self) -> Vec<String> {
        self.read.iter().map(Key::id_hex).collect()
    }
}

mod zeroize_like {
    /// Key bytes that are wiped on drop and never printed.
    #[derive(Clone)]
    pub struct Secret(pub [u8; 32]);

    impl Drop for Secret {
        fn drop(&mut self) {
            // Volatile writes so the compiler keeps the wipe.
            for b in self.0.iter_mut() {
                unsafe { std::ptr::write_volatile(b, 0) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_text_and_ids() {
        let text = Key::generate();
        assert_eq!(text.len(), 64);
        let a = Key::from_text(&text, "test").unwrap();
        let b = Key::from_text(&format!("  {text}\n"), "test").unwrap();
        assert_eq!(a.id(), b.id());
        assert_ne!(a.aead_key(), a.mac_key());
        assert!(Key::from_text("abcd", "test").unwrap_err().contains("64 hexadecimal"));
        assert!(Key::from_text(&"zz".repeat(32), "test").is_err());
        let other = Key::from_text(&Key::generate(), "t").unwrap();
        let ring = Keyring::new(a.clone(), vec![other.clone()]);
        assert!(ring.find(&other.id()).is_some());
        assert_eq!(ring.write_key().unwrap().id(), a.id());
    }

    #[test]
    fn key_file_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("key");
        std::fs::write(&p, Key::generate()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(Key::from_file(&p).unwrap_err().contains("chmod 600"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(Key::from_file(&p).is_ok());
    }
}
