//! The shipped systemd units pass `systemd-analyze verify` (where it is installed), and the
//! alert rules and dashboard only use metrics the daemon exports.

use std::path::Path;
use std::process::Command;

const UNITS: [&str; 3] = ["tidewal.service", "tidewal-verify.service", "tidewal-verify.timer"];

#[test]
fn units_verify() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        println!("systemd-analyze is not installed; skipping");
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = tempfile::tempdir().unwrap();
    // Point ExecStart at the binary under test, so that verify can check it.
    let bin = env!("CARGO_BIN_EXE_tidewal");
    let mut paths = Vec::new();
    for unit in UNITS {
        let text = std::fs::read_to_string(src.join(unit)).unwrap().replace("/usr/local/bin/tidewal", bin);
        let p = dir.path().join(unit);
        std::fs::write(&p, text).unwrap();
        paths.push(p);
    }
    let out = Command::new("systemd-analyze").args(["verify", "--man=no"]).args(&paths).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Messages about the machine's own units (not ours) are not our business.
    let ours: Vec<&str> = err.lines().filter(|l| UNITS.iter().any(|u| l.contains(u))).collect();
    assert!(out.status.success() && ours.is_empty(), "systemd-analyze verify:\n{err}");
}

#[test]
fn alerts_and_dashboard_use_exported_metrics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let exported: String = std::fs::read_dir(root.join("src/daemon"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let dashboard = std::fs::read_to_string(root.join("systemd/tidewal-dashboard.json")).unwrap();
    let _: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is valid JSON");
    let alerts = std::fs::read_to_string(root.join("systemd/tidewal-alerts.yml")).unwrap();
    for text in [&dashboard, &alerts] {
        for word in text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if let Some(name) = word.strip_prefix("tidewal_") {
                let base = name.trim_end_matches("_bucket");
                assert!(
                    exported.contains(&format!("\"tidewal_{base}\"")),
                    "tidewal_{name} is not exported by the daemon"
                );
            }
        }
    }
}
