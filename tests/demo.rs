//! The README's quick start, `scripts/demo.sh`, end to end with the binary under test: it must
//! finish, print the commands it runs, and show the dropped table's rows back in the restored
//! copy, as many as were committed before the DROP.

use std::process::Command;

#[test]
fn demo_restores_the_dropped_table() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .env("TIDEWAL_BIN", env!("CARGO_BIN_EXE_tidewal"))
        .env("SECONDS_OF_LOAD", "3")
        .env("SCALE", "1")
        .env_remove("KEEP")
        .output()
        .expect("run scripts/demo.sh");
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo.sh failed ({}):\n{text}\n{err}", out.status);
    // Each step of the payoff, as the user sees it typed.
    for needle in ["+ psql -c \"DROP TABLE orders\"", "+ tidewal restore --to ", " --target-time ", "+ pg_ctl -D "] {
        assert!(text.contains(needle), "the demo does not show {needle:?}:\n{text}");
    }
    let line = text.lines().find(|l| l.starts_with("== the rows came back: ")).unwrap_or_else(|| panic!("{text}"));
    // "== the rows came back: N orders before the DROP, M in the restored copy"
    let numbers: Vec<u64> = line.split(' ').filter_map(|w| w.trim_end_matches(',').parse().ok()).collect();
    assert_eq!(numbers.len(), 2, "{line}");
    assert_eq!(numbers[0], numbers[1], "{line}");
    assert!(numbers[0] > 0, "no orders were written before the DROP: {line}");
    // The script cleaned up after itself.
    let dir = text.lines().find_map(|l| l.split("--config ").nth(1)).and_then(|r| r.split("/tidewal.toml").next());
    let dir = dir.unwrap_or_else(|| panic!("no work directory in the output:\n{text}"));
    assert!(!std::path::Path::new(dir).exists(), "{dir} is left behind");
}
