//! Configuration files of any content, and of every known key with values of any shape:
//! loaded or refused with a usage error, never a panic.

use proptest::prelude::*;

use super::*;

fn load_text(text: &str) -> Result<Settings> {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("tidewal.toml");
    std::fs::write(&p, text).unwrap();
    Settings::load(&Flags { config: Some(p), repo: None, key_file: None }, &|_| None)
}

/// A TOML value of a few shapes, as text.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,24}".prop_map(|s| format!("{s:?}")),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[0-9]{1,4}(ms|s|m|h|d|x)?".prop_map(|s| format!("{s:?}")),
        "(file|s3|http)://\\PC{0,16}".prop_map(|s| format!("{s:?}")),
        "(host|port|user|sslmode|password|dbname)=\\PC{0,8}( [a-z]{1,6}=\\PC{0,6}){0,2}".prop_map(|s| format!("{s:?}")),
        Just("[]".to_string()),
        Just("[\"a\", 1]".to_string()),
        Just("{}".to_string()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_loads_or_is_a_usage_error(text in "\\PC{0,300}") {
        if let Err(e) = load_text(&text) {
            prop_assert_eq!(e.code, Code::Usage, "{}", e);
        }
    }

    /// Every section and key the file knows, with values of any shape.
    #[test]
    fn known_keys_with_any_values_load_or_are_refused(
        entries in prop::collection::vec((0usize..8, "[a-z_]{1,20}", value()), 0..10),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 10),
    ) {
        let sections = ["repository", "repository.s3", "postgres", "restore", "retention", "daemon", "verify", "bogus"];
        let keys: Vec<&str> = KNOWN_KEYS.split_whitespace().collect();
        // Each section once, each key once in it: TOML refuses repeats before tidewal sees them.
        let mut by_section: std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, &str>> = Default::default();
        for (i, ((section, other, v), pick)) in entries.iter().zip(&picks).enumerate() {
            let key = if i % 3 == 2 { other.as_str() } else { keys[pick.index(keys.len())] };
            by_section.entry(sections[*section]).or_default().insert(key, v);
        }
        let mut text = String::new();
        for (section, kv) in by_section {
            text.push_str(&format!("[{section}]\n"));
            for (k, v) in kv {
                text.push_str(&format!("{k} = {v}\n"));
            }
        }
        if let Err(e) = load_text(&text) {
            prop_assert!(matches!(e.code, Code::Usage | Code::Storage | Code::BadInput), "{}: {}", e.code as u8, e);
        }
    }
}
