//! A backup's file index (`backups/<id>/file_index`): for each relation file, the digest of
//! every 1 MiB piece as the server sent it. A client-side incremental backup compares the
//! files it receives with its parent's index, so only what changed is stored (pure:
//! digests, encoding, decoding).

use std::collections::HashMap;

/// The unit compared: 128 blocks of 8 KiB.
pub const CHUNK: usize = 1 << 20;
/// The object's name in a backup's directory.
pub const NAME: &str = "file_index";
const MAGIC: &[u8; 8] = b"TWFIDX01";

/// The first 16 bytes of a piece's BLAKE3 hash. The index is sealed with the backup, so the
/// digests are as private as the data.
pub type Digest = [u8; 16];

pub fn digest_of(hasher: &blake3::Hasher) -> Digest {
    let mut d = [0u8; 16];
    d.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    d
}

/// File (as the manifest names it: `base/5/16384`, `pg_tblspc/16390/PG_…/5/16391`) →
/// the digests of its pieces, in order.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FileIndex {
    files: HashMap<String, Vec<Digest>>,
}

impl FileIndex {
    pub fn insert(&mut self, key: String, chunks: Vec<Digest>) {
        self.files.insert(key, chunks);
    }

    pub fn chunks(&self, key: &str) -> Option<&[Digest]> {
        self.files.get(key).map(Vec::as_slice)
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// Another archive's files into this index.
    pub fn extend(&mut self, other: FileIndex) {
        self.files.extend(other.files);
    }

    /// Magic, file count, then per file (sorted by name): name length (u16), name, piece
    /// count (u32), digests; little-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut keys: Vec<&String> = self.files.keys().collect();
        keys.sort();
        let mut out = Vec::with_capacity(16 + self.files.values().map(|c| 40 + 16 * c.len()).sum::<usize>());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(keys.len() as u32).to_le_bytes());
        for k in keys {
            let chunks = &self.files[k];
            out.extend_from_slice(&(k.len() as u16).to_le_bytes());
            out.extend_from_slice(k.as_bytes());
            out.extend_from_slice(&(chunks.len() as u32).to_le_bytes());
            for d in chunks {
                out.extend_from_slice(d);
            }
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<FileIndex, String> {
        let mut r = Cursor { bytes, at: 0 };
        if r.take(8)? != MAGIC {
            return Err("not a tidewal file index".into());
        }
        let n = r.u32()?;
        let mut files = HashMap::with_capacity((n as usize).min(1 << 20));
        for _ in 0..n {
            let len = u16::from_le_bytes(r.take(2)?.try_into().map_err(|_| "short")?) as usize;
            let key = std::str::from_utf8(r.take(len)?).map_err(|_| "a file name is not UTF-8".to_string())?;
            let count = r.u32()? as usize;
            let raw = r.take(count.checked_mul(16).ok_or("piece count overflows")?)?;
            let chunks = raw.chunks_exact(16).map(|c| c.try_into().unwrap_or_default()).collect();
            files.insert(key.to_string(), chunks);
        }
        if r.at != bytes.len() {
            return Err(format!("{} bytes after the last file", bytes.len() - r.at));
        }
        Ok(FileIndex { files })
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or("the file index is cut short")?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().map_err(|_| "short")?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn encodes_and_decodes(files in proptest::collection::hash_map("[a-z0-9/_.]{1,40}", proptest::collection::vec(proptest::array::uniform16(0u8..), 0..5), 0..20)) {
            let mut idx = FileIndex::default();
            for (k, v) in files {
                idx.insert(k, v);
            }
            let bytes = idx.encode();
            proptest::prop_assert_eq!(FileIndex::decode(&bytes).unwrap(), idx);
            if bytes.len() > 12 {
                proptest::prop_assert!(FileIndex::decode(&bytes[..bytes.len() - 1]).is_err());
            }
        }
    }

    #[test]
    fn damage_is_an_error() {
        assert!(FileIndex::decode(b"TWFIDX02\0\0\0\0").unwrap_err().contains("not a tidewal file index"));
        let mut idx = FileIndex::default();
        idx.insert("base/5/1".into(), vec![[7; 16]]);
        let mut bytes = idx.encode();
        bytes.push(0);
        assert!(FileIndex::decode(&bytes).unwrap_err().contains("after the last file"));
    }
}
