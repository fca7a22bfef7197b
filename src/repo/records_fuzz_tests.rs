//! The repository's own records read back from arbitrary bytes: `tidewal.json`,
//! `backup.json` and `backup_manifest` are refused with an error, never a panic, and a
//! record that parses yields values every reader can use.

use proptest::prelude::*;

use super::catalog::BackupInfo;
use super::*;
use crate::codec::{seal_to_vec, Keyring, SealOptions};
use crate::pg::lsn::SegmentId;

fn sealed_plain(plain: &[u8], name: &str) -> Vec<u8> {
    seal_to_vec(plain, None, name, SealOptions { lz4: false, digest: None, chain: false }).unwrap().out
}

/// A JSON value of any shape, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        "\\PC{0,30}".prop_map(serde_json::Value::from),
        "[0-9A-F]{8,24}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,20}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn any_bytes_as_tidewal_json_are_refused(raw in prop::collection::vec(any::<u8>(), 0..512)) {
        prop_assert!(decode_identity(&raw, &Keyring::plaintext()).is_err());
    }

    /// An identity that opens and parses has a segment size WAL names can be computed with.
    #[test]
    fn a_tidewal_json_that_parses_is_usable(
        seg in prop_oneof![any::<u64>(), (0u32..64).prop_map(|s| 1u64 << s)],
        sysid in prop_oneof!["[0-9]{1,20}", "\\PC{0,12}"],
        version in any::<u32>(),
    ) {
        let id = serde_json::json!({
            "format": 1, "system_identifier": sysid, "pg_version_num": version, "wal_segment_size": seg,
            "encrypted": false, "key_id": null, "conditional_writes": true, "created_at": "", "created_by": ""
        });
        let raw = sealed_plain(&serde_json::to_vec(&id).unwrap(), layout::IDENTITY);
        if let Ok(identity) = decode_identity(&raw, &Keyring::plaintext()) {
            let seg = identity.wal_segment_size;
            let s = SegmentId::parse("00000001FFFFFFFF00000000", seg).unwrap();
            prop_assert_eq!(SegmentId::parse(&s.file_name(seg), seg).unwrap(), s);
            prop_assert_eq!(Ok(identity.system_id()), identity.system_identifier.parse::<u64>());
        }
    }

    #[test]
    fn any_json_as_tidewal_json_never_panics(v in json()) {
        let raw = sealed_plain(&serde_json::to_vec(&v).unwrap(), layout::IDENTITY);
        let _ = decode_identity(&raw, &Keyring::plaintext());
    }

    /// backup.json: arbitrary bytes and arbitrary JSON are refused; a record that parses,
    /// whatever its strings say, is read without a panic by what uses them.
    #[test]
    fn any_backup_json_is_refused_or_usable(raw in prop::collection::vec(any::<u8>(), 0..512), v in json()) {
        prop_assert!(serde_json::from_slice::<BackupInfo>(&raw).is_err());
        let _ = serde_json::from_value::<BackupInfo>(v);
    }

    #[test]
    fn backup_json_with_any_field_values_is_read_without_panic(
        id in "\\PC{0,30}", lsn in "\\PC{0,20}", wal in "[0-9A-F]{0,26}", time in "\\PC{0,30}",
        seg in (20u32..=30).prop_map(|s| 1u64 << s),
    ) {
        let v = serde_json::json!({
            "id": id, "label": "", "system_identifier": "1", "pg_version": "15", "timescaledb_version": null,
            "timeline": 1, "start_lsn": lsn, "end_lsn": lsn, "start_wal": wal, "end_wal": wal,
            "started_at": time, "finished_at": time, "duration_seconds": 1.0, "tablespaces": [], "objects": []
        });
        let info: BackupInfo = serde_json::from_value(v).unwrap();
        let _ = (info.end(), info.finished(), layout::parse_backup_id(&info.id));
        let _ = SegmentId::parse(&info.start_wal, seg).map(|s| s.file_name(seg));
    }

    #[test]
    fn any_backup_manifest_is_refused_or_checked(raw in prop::collection::vec(any::<u8>(), 0..512), v in json(),
        path in "\\PC{0,20}", algo in prop_oneof![Just("CRC32C".to_string()), Just("SHA256".to_string()), "\\PC{0,8}"],
        sum in "\\PC{0,70}", size in any::<u64>())
    {
        prop_assert!(manifest::parse(&raw).is_err());
        if let Ok(m) = manifest::parse(&serde_json::to_vec(&v).unwrap()) {
            let _ = manifest::Checker::new(m);
        }
        let text = serde_json::json!({"Files": [{"Path": path, "Size": size, "Checksum-Algorithm": algo, "Checksum": sum}]});
        if let Ok(c) = manifest::parse(&serde_json::to_vec(&text).unwrap()).and_then(manifest::Checker::new) {
            let mut s = c.start(&path);
            s.update(b"data");
            let _ = c.finish(&path, 4, s);
            let _ = c.complete();
        }
    }
}
