//! Imports point down: `cmd` and `daemon` at the top (with `config`, read there), then the
//! operations layer, then `repo`, `store`, `codec`, `pg`. This test reads the sources and
//! fails on any import that points up.

use std::path::{Path, PathBuf};

/// Modules that only the top (`cmd/`, `daemon/`, `main.rs`, `lib.rs`) may import.
const TOP: [&str; 3] = ["cmd", "daemon", "config"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The `crate::` modules a source file names, in paths (`crate::x::…`) and grouped
/// imports (`use crate::{x, y::z}`); code only, comments skipped.
fn crate_modules(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                    found.push(name);
                }
            } else {
                found.push(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
            }
        }
    }
    found
}

/// (file, module) pairs where a file imports a module above it.
fn upward_imports(src: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut bad = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap().to_string_lossy().replace('\\', "/");
        let top_level = rel.starts_with("cmd/") || rel == "main.rs" || rel == "lib.rs" || rel == "config.rs";
        if top_level {
            continue;
        }
        // The daemon may read its configuration, but not borrow from the verbs.
        let forbidden: &[&str] = if rel.starts_with("daemon/") { &["cmd"] } else { &TOP };
        let text = std::fs::read_to_string(&f).unwrap();
        for m in crate_modules(&text) {
            if forbidden.contains(&m.as_str()) {
                bad.push((rel.clone(), m));
            }
        }
    }
    bad.sort();
    bad.dedup();
    bad
}

#[test]
fn imports_point_down() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let bad = upward_imports(&src);
    assert!(bad.is_empty(), "modules importing upward (file, module): {bad:?}");
}

#[test]
fn the_check_sees_upward_imports() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let p = dir.path().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("repo/a.rs", "use crate::{codec, config::Settings};\n// crate::cmd in a comment is fine\n");
    write("daemon/b.rs", "use crate::config::Settings;\nfn f() { crate::cmd::open_repo(); }\n");
    write("ops/c.rs", "use crate::daemon::socket;\n");
    write("cmd/d.rs", "use crate::config::Settings;\nuse crate::daemon;\n");
    let bad = upward_imports(dir.path());
    let want: Vec<(String, String)> = [("daemon/b.rs", "cmd"), ("ops/c.rs", "daemon"), ("repo/a.rs", "config")]
        .iter()
        .map(|(f, m)| (f.to_string(), m.to_string()))
        .collect();
    assert_eq!(bad, want);
}
