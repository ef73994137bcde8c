//! The official Python client's own end-to-end suite (`kubernetes/e2e_test` of the pinned
//! release) run with pytest against a fresh cluster, and the ReplicationControllers it
//! drives as kubectl users see them.

use crate::harness::{wait_for, Cluster, TempDir};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `kubernetes` release on PyPI whose suite runs (the client for Kubernetes 1.32);
/// scripts/test installs it.
const CLIENT_VERSION: &str = "32.0.1";

/// Where the suite is: a directory holding `kubernetes/e2e_test/` from the client's
/// source at `v32.0.1` (the PyPI wheel and sdist do not ship it).
const SUITE_ENV: &str = "WASMKUBE_PYTHON_E2E_SUITE";

fn suite_dir() -> PathBuf {
    let Some(dir) = std::env::var_os(SUITE_ENV).map(PathBuf::from) else {
        panic!("{SUITE_ENV} must name a directory holding kubernetes/e2e_test/ of the Python client's source at v{CLIENT_VERSION}");
    };
    let suite = dir.join("kubernetes/e2e_test");
    assert!(suite.join("base.py").is_file(), "{SUITE_ENV}={}: no kubernetes/e2e_test/base.py there", dir.display());
    suite
}

/// The installed client must be the pinned one, with pytest beside it.
fn check_python() {
    let out = Command::new("python3").args(["-c", "import kubernetes, pytest; print(kubernetes.__version__)"]).output().expect("run python3");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success() && version == CLIENT_VERSION, "python3 needs kubernetes=={CLIENT_VERSION} and pytest (scripts/test installs them); found {version:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_python_clients_own_e2e_suite_passes() {
    check_python();
    let suite = suite_dir();
    let (c, _dir) = Cluster::start();
    // The suite's tests read their YAML files as `kubernetes/e2e_test/test_yaml/...`, so
    // pytest runs where that path leads to the suite.
    let work = TempDir::new("python-e2e");
    std::fs::create_dir(work.path().join("kubernetes")).expect("mkdir");
    std::os::unix::fs::symlink(&suite, work.path().join("kubernetes/e2e_test")).expect("link the suite");
    let plugin_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/python");
    let out = Command::new("python3")
        .args(["-m", "pytest", "-p", "suite_plugin", "-p", "no:cacheprovider", "-v", "-rA", "kubernetes/e2e_test"])
        .current_dir(work.path())
        .env("PYTHONPATH", &plugin_dir)
        .env("KUBECONFIG", &c.kubeconfig)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the Python client's e2e suite failed:\n{stdout}\n{}\nwasmkube log:\n{}", String::from_utf8_lossy(&out.stderr), c.log());
    // pytest's closing line, e.g. "== 28 passed, 4 deselected, 3 xfailed in 9.1s ==":
    // something passed, and nothing failed, erred, was skipped or passed unexpectedly.
    let summary = stdout.lines().rev().find(|l| l.contains(" passed")).unwrap_or_default();
    let counts: Vec<(u32, &str)> = summary
        .trim_matches(|ch: char| ch == '=' || ch.is_whitespace())
        .split(", ")
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            Some((words.next()?.parse().ok()?, words.next()?))
        })
        .collect();
    assert!(counts.iter().any(|&(n, what)| what == "passed" && n > 0), "{stdout}");
    assert!(counts.iter().all(|(_, what)| ["passed", "deselected", "xfailed"].contains(what)), "{summary}\n{stdout}");
    c.stop();
}

/// A ReplicationController running the WAGI hello module, with no selector of its own:
/// the API server takes it from the template's labels.
fn hello_rc(name: &str, image: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: v1
kind: ReplicationController
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  template:
    metadata:
      labels: {{app: {name}}}
      annotations: {{wasmkube.io/executor: wagi}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: "{image}"
        ports: [{{containerPort: 8080}}]
"#
    )
}

fn live_pods(c: &Cluster, selector: &str) -> Vec<String> {
    let list: Value = serde_json::from_str(&c.ok(&["get", "pods", "-l", selector, "-o", "json"])).unwrap();
    list["items"].as_array().unwrap().iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn replication_controllers_keep_scale_and_take_their_pods_with_them() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    c.apply(&hello_rc("old", &image, 2));
    assert_eq!(c.jsonpath(&["rc", "old"], "{.spec.selector}"), r#"{"app":"old"}"#);
    assert_eq!(c.jsonpath(&["rc", "old"], "{.metadata.labels}"), r#"{"app":"old"}"#);
    c.wait_jsonpath(&["rc", "old"], "{.status.readyReplicas}", "2", 60);
    c.wait_jsonpath(&["rc", "old"], "{.status.availableReplicas}", "2", 30);
    assert_eq!(c.jsonpath(&["rc", "old"], "{.status.fullyLabeledReplicas}"), "2");
    assert_eq!(c.jsonpath(&["rc", "old"], "{.status.observedGeneration}"), c.jsonpath(&["rc", "old"], "{.metadata.generation}"));
    let pods = live_pods(&c, "app=old");
    assert_eq!(pods.len(), 2);
    let owner = c.jsonpath(&["pod", &pods[0]], "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}/{.metadata.ownerReferences[0].controller}");
    assert_eq!(owner, "ReplicationController/old/true");

    // kubectl's columns, as upstream prints them.
    let table = c.ok(&["get", "rc", "-o", "wide"]);
    let mut rows = table.lines();
    let header: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DESIRED", "CURRENT", "READY", "AGE", "CONTAINERS", "IMAGES", "SELECTOR"], "{table}");
    let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
    assert_eq!((row[..4].to_vec(), row[5..].to_vec()), (vec!["old", "2", "2", "2"], vec!["web", image.as_str(), "app=old"]), "{table}");
    assert!(c.ok(&["get", "all"]).contains("replicationcontroller/old"));

    // A deleted pod is replaced; scale goes both ways.
    c.ok(&["delete", "pod", &pods[0], "--wait=false"]);
    wait_for(60, "a replacement pod", || {
        let live = live_pods(&c, "app=old");
        (live.len() == 2 && !live.contains(&pods[0])).then_some(())
    });
    c.ok(&["scale", "rc", "old", "--replicas=3"]);
    c.wait_jsonpath(&["rc", "old"], "{.status.readyReplicas}", "3", 60);
    c.ok(&["scale", "rc/old", "--replicas=1"]);
    c.wait_jsonpath(&["rc", "old"], "{.status.replicas}", "1", 60);
    wait_for(60, "one pod left", || (live_pods(&c, "app=old").len() == 1).then_some(()));

    // An invalid one is refused as upstream refuses it.
    let bad = hello_rc("bad", &image, 1).replace("  replicas: 1\n", "  replicas: 1\n  selector: {app: other}\n");
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("spec.template.metadata.labels: Invalid value") && err.contains("`selector` does not match template `labels`"), "{err}");

    // `cluster-info dump` reads every kind it knows, ReplicationControllers among them.
    let dump = c.ok(&["cluster-info", "dump", "--namespaces", "default"]);
    assert!(dump.contains("\"kind\": \"ReplicationControllerList\""), "{dump}");

    // Background deletion takes the pods along (the garbage collector follows the kind);
    // foreground waits for them.
    c.ok(&["delete", "rc", "old"]);
    wait_for(60, "old's pods gone", || c.ok(&["get", "pods", "-l", "app=old", "-o", "name"]).trim().is_empty().then_some(()));
    c.apply(&hello_rc("fg", &image, 2));
    c.wait_jsonpath(&["rc", "fg"], "{.status.readyReplicas}", "2", 60);
    c.ok(&["delete", "rc", "fg", "--cascade=foreground"]);
    assert_eq!(c.ok(&["get", "pods", "-l", "app=fg", "-o", "name"]).trim(), "");
    c.stop();
}
