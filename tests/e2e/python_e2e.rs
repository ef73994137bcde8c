//! The official Python client (the pinned release) against a fresh cluster: typed API
//! calls for the workload and core kinds, `kubernetes.utils`' objects-from-YAML helpers
//! on the files in tests/e2e/python/yaml/, and its quantity helpers
//! (tests/e2e/python/client_e2e.py).
//!
//! The client's own upstream e2e suite is not distributed on PyPI; scripts/python-client-suite
//! runs it by hand (docs/compatibility.md, "Python client e2e suite").

use crate::harness::Cluster;
use std::process::Command;

/// The `kubernetes` release on PyPI the tests use (the client for Kubernetes 1.32);
/// scripts/test installs it.
const CLIENT_VERSION: &str = "32.0.1";

/// The installed client must be the pinned one.
pub fn check_python() {
    let out = Command::new("python3").args(["-c", "import kubernetes; print(kubernetes.__version__)"]).output().expect("run python3");
    let version = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success() && version == CLIENT_VERSION, "python3 needs kubernetes=={CLIENT_VERSION} (scripts/test installs it); found {version:?}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn the_python_client_drives_typed_apis_yaml_helpers_and_quantities() {
    check_python();
    let (c, _dir) = Cluster::start();
    let web = c.push_example("hello-wagi");
    let job = c.push_example("job");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python/client_e2e.py");
    let out = Command::new("python3").arg(script).env("KUBECONFIG", &c.kubeconfig).env("WEB_IMAGE", &web).env("JOB_IMAGE", &job).output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client_e2e.py failed:\n{stdout}\n{stderr}");
    println!("{stdout}");
    // Its closing line, e.g. "16 passed, 0 failed".
    let summary = stdout.lines().last().unwrap_or_default();
    let counts: Vec<u32> = summary.split([' ', ',']).filter_map(|w| w.parse().ok()).collect();
    assert!(summary.ends_with(" passed, 0 failed") && counts.first().is_some_and(|&n| n > 0), "{summary}\n{stdout}\n{stderr}");
    c.stop();
}
