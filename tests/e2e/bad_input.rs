//! Bad input gets the right `Status`, and the server keeps serving.

use crate::harness::Cluster;
use serde_json::Value;

fn status(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a Status ({e}): {body}"))
}

#[track_caller]
fn expect_status(got: (u16, String), code: u16, reason: &str) -> Value {
    let (c, body) = got;
    assert_eq!(c, code, "body: {body}");
    let s = status(&body);
    assert_eq!(s["kind"], "Status", "{body}");
    assert_eq!(s["reason"], reason, "{body}");
    assert_eq!(s["code"], code, "{body}");
    s
}

const CM_PATH: &str = "/api/v1/namespaces/default/configmaps";
const DEPLOY_PATH: &str = "/apis/apps/v1/namespaces/default/deployments";

#[test]
fn invalid_objects_are_rejected_with_field_causes() {
    let (c, _dir) = Cluster::start();
    let err = c.fails(&["create", "configmap", "Bad_Name", "--from-literal=a=b"]);
    assert!(err.contains("metadata.name: Invalid value: \"Bad_Name\"") && err.contains("RFC 1123"), "{err}");

    let deploy = |replicas: i64, template_app: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: bad\nspec:\n  replicas: {replicas}\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      labels: {{app: {template_app}}}\n    spec:\n      containers:\n      - name: web\n        image: example/web:1\n"
        )
    };
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &deploy(-1, "web"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("The Deployment \"bad\" is invalid: spec.replicas: Invalid value: -1: must be greater than or equal to 0"), "{err}");

    let out = c.kubectl_stdin(&["apply", "-f", "-"], &deploy(1, "other"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("spec.template.metadata.labels") && err.contains("`selector` does not match template `labels`"), "{err}");

    // Strict field validation, as kubectl asks for by default.
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &deploy(1, "web").replace("image: example/web:1", "image: example/web:1\n        imagee: typo"));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("unknown field \"spec.template.spec.containers[0].imagee\""), "{err}");

    // Nothing half-made was stored.
    let err = c.fails(&["get", "deploy", "bad"]);
    assert!(err.contains("not found"), "{err}");
    c.stop();
}

#[test]
fn http_errors_carry_the_right_status() {
    let (c, _dir) = Cluster::start();
    let cm = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"one"},"data":{"a":"1"}}"#;
    let (code, body) = c.curl("POST", CM_PATH, "application/json", Some(cm), true);
    assert_eq!(code, 201, "{body}");
    let created = status(&body);

    let s = expect_status(c.curl("POST", CM_PATH, "application/json", Some(cm), true), 409, "AlreadyExists");
    assert_eq!(s["message"], "configmaps \"one\" already exists");

    // Update with a stale resourceVersion.
    let mut stale = created.clone();
    stale["metadata"]["resourceVersion"] = Value::String("1".into());
    stale["data"]["a"] = Value::String("2".into());
    let body = serde_json::to_vec(&stale).unwrap();
    let s = expect_status(c.curl("PUT", &format!("{CM_PATH}/one"), "application/json", Some(&body), true), 409, "Conflict");
    assert!(s["message"].as_str().unwrap().contains("the object has been modified"), "{s}");

    expect_status(c.curl("POST", CM_PATH, "application/json", Some(b"{\"apiVersion\": \"v1\", \"kind\": "), true), 400, "BadRequest");
    expect_status(c.curl("POST", CM_PATH, "application/yaml", Some(b"metadata: [unclosed"), true), 400, "BadRequest");
    expect_status(c.curl("GET", "/apis/example.com/v1/namespaces/default/widgets", "application/json", None, true), 404, "NotFound");
    expect_status(c.curl("GET", "/api/v1/namespaces/default/widgets", "application/json", None, true), 404, "NotFound");
    let s = expect_status(c.curl("GET", &format!("{CM_PATH}/missing"), "application/json", None, true), 404, "NotFound");
    assert_eq!(s["details"]["name"], "missing");

    let big = format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"big"}},"data":{{"a":"{}"}}}}"#, "x".repeat(4 << 20));
    expect_status(c.curl("POST", CM_PATH, "application/json", Some(big.as_bytes()), true), 413, "RequestEntityTooLarge");

    expect_status(c.curl("GET", CM_PATH, "application/json", None, false), 401, "Unauthorized");
    let (code, _) = c.curl("GET", "/healthz", "application/json", None, false);
    assert_eq!(code, 200);

    expect_status(c.curl("PATCH", &format!("{CM_PATH}/one"), "application/merge-patch+json", Some(b"[1,2]"), true), 400, "BadRequest");
    expect_status(c.curl("PATCH", &format!("{CM_PATH}/one"), "text/plain", Some(b"{}"), true), 415, "UnsupportedMediaType");
    let s = expect_status(
        c.curl("POST", DEPLOY_PATH, "application/json", Some(br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"x"},"spec":{"replicas":"three"}}"#), true),
        400,
        "BadRequest",
    );
    assert!(s["message"].as_str().unwrap().contains("replicas"), "{s}");

    // Still serving, and the object survived every bad request.
    let (code, body) = c.curl("GET", &format!("{CM_PATH}/one"), "application/json", None, true);
    assert_eq!(code, 200);
    assert_eq!(status(&body)["data"]["a"], "1");
    c.stop();
}

#[test]
fn fuzzed_bodies_never_break_the_server() {
    let (c, _dir) = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python/fuzz_api.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .args([&c.api, c.ca_file().to_str().unwrap(), &c.token(), "3000"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "fuzz run failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("fuzz: 3000 requests"), "{stdout}");
    c.stop();
}

#[test]
fn python_client_lists_creates_patches_watches_and_deletes() {
    let (c, _dir) = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python/client.py");
    let out = std::process::Command::new("python3").arg(script).env("KUBECONFIG", &c.kubeconfig).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("python client: ok"), "{stdout}");
    c.stop();
}

#[test]
fn subresources_and_collection_verbs() {
    let (c, _dir) = Cluster::start();
    let pods = "/api/v1/namespaces/default/pods";
    // Bound by hand below: the default scheduler leaves pods of another scheduler alone.
    for name in ["b1", "b2", "b3"] {
        let pod = format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{{"batch":"x"}}}},"spec":{{"schedulerName":"by-hand","containers":[{{"name":"c","image":"i:1"}}]}}}}"#);
        let (code, body) = c.curl("POST", pods, "application/json", Some(pod.as_bytes()), true);
        assert_eq!(code, 201, "{body}");
    }

    // pods/binding assigns the node once, and only once.
    let binding = br#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"b1"},"target":{"kind":"Node","name":"node-a"}}"#;
    let (code, body) = c.curl("POST", &format!("{pods}/b1/binding"), "application/json", Some(binding), true);
    assert_eq!(code, 201, "{body}");
    assert_eq!(c.jsonpath(&["pod", "b1"], "{.spec.nodeName}"), "node-a");
    assert_eq!(c.jsonpath(&["pod", "b1"], "{.status.conditions[?(@.type==\"PodScheduled\")].status}"), "True");
    expect_status(c.curl("POST", &format!("{pods}/b1/binding"), "application/json", Some(binding), true), 409, "Conflict");

    // /status writes change only status; the spec stays.
    let status_patch = br#"{"status":{"phase":"Running","podIP":"127.1.0.9"},"spec":{"nodeName":"elsewhere"}}"#;
    let (code, body) = c.curl("PATCH", &format!("{pods}/b1/status"), "application/merge-patch+json", Some(status_patch), true);
    assert_eq!(code, 200, "{body}");
    assert_eq!(c.jsonpath(&["pod", "b1"], "{.status.phase} {.status.podIP} {.spec.nodeName}"), "Running 127.1.0.9 node-a");

    // pods/eviction deletes an unbound pod.
    let eviction = br#"{"apiVersion":"policy/v1","kind":"Eviction","metadata":{"name":"b2"}}"#;
    let (code, body) = c.curl("POST", &format!("{pods}/b2/eviction"), "application/json", Some(eviction), true);
    assert_eq!(code, 201, "{body}");
    expect_status(c.curl("GET", &format!("{pods}/b2"), "application/json", None, true), 404, "NotFound");

    // deletecollection with a selector.
    let (code, body) = c.curl("DELETE", &format!("{pods}?labelSelector=batch%3Dx"), "application/json", None, true);
    assert_eq!(code, 200, "{body}");
    assert_eq!(c.ok(&["get", "pods", "-o", "name"]).trim(), "");

    // /scale is an autoscaling/v1 Scale view.
    c.apply(crate::api::APP);
    let (code, body) = c.curl("GET", "/apis/apps/v1/namespaces/default/deployments/hello/scale", "application/json", None, true);
    assert_eq!(code, 200, "{body}");
    let scale = status(&body);
    assert_eq!((scale["kind"].as_str(), scale["apiVersion"].as_str(), scale["spec"]["replicas"].as_i64()), (Some("Scale"), Some("autoscaling/v1"), Some(2)));
    assert_eq!(scale["status"]["selector"], "app=hello");
    c.stop();
}

#[test]
fn watch_from_a_revision_before_restart_is_expired() {
    let dir = crate::harness::TempDir::new("expired");
    let c = Cluster::start_in(dir.path());
    c.ok(&["create", "configmap", "a", "--from-literal=x=y"]);
    c.stop();
    let c = Cluster::start_in(dir.path());
    let (code, body) = c.curl("GET", "/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=2", "application/json", None, true);
    assert_eq!(code, 200, "{body}");
    let first: Value = serde_json::from_str(body.lines().next().unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(first["type"], "ERROR", "{body}");
    assert_eq!((first["object"]["code"].as_i64(), first["object"]["reason"].as_str()), (Some(410), Some("Expired")));
    // From the current revision the watch works and ends at its timeout. (Not the
    // ConfigMap's own revision: the node agent may have written since.)
    let (code, list) = c.curl("GET", "/api/v1/namespaces/default/configmaps", "application/json", None, true);
    assert_eq!(code, 200, "{list}");
    let rv = status(&list)["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned();
    let (code, body) = c.curl("GET", &format!("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}&timeoutSeconds=1"), "application/json", None, true);
    assert_eq!((code, body.trim()), (200, ""));
    c.stop();
}
