//! The API server as kubectl users meet it.

use crate::harness::{wait_for, Cluster};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

pub const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello
  labels: {app: hello}
spec:
  replicas: 2
  selector:
    matchLabels: {app: hello}
  template:
    metadata:
      labels: {app: hello}
    spec:
      containers:
      - name: hello
        image: 127.0.0.1:5000/hello:v1
        ports:
        - containerPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: hello
spec:
  selector: {app: hello}
  ports:
  - port: 80
    targetPort: 8080
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: hello-config
data:
  greeting: hi
---
apiVersion: v1
kind: Secret
metadata:
  name: hello-secret
data:
  token: c2VjcmV0
"#;

#[test]
fn namespaces_resources_and_version() {
    let (c, _dir) = Cluster::start();
    let ns = c.ok(&["get", "ns"]);
    for name in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(ns.lines().any(|l| l.starts_with(name) && l.contains("Active")), "{name} missing from:\n{ns}");
    }
    assert!(ns.starts_with("NAME") && ns.contains("STATUS") && ns.contains("AGE"), "{ns}");

    let resources = c.ok(&["api-resources"]);
    for (plural, short) in [
        ("pods", "po"), ("services", "svc"), ("deployments", "deploy"), ("replicasets", "rs"),
        ("statefulsets", "sts"), ("daemonsets", "ds"), ("configmaps", "cm"), ("namespaces", "ns"),
        ("nodes", "no"), ("endpoints", "ep"), ("events", "ev"), ("serviceaccounts", "sa"), ("cronjobs", "cj"),
    ] {
        assert!(resources.lines().any(|l| l.split_whitespace().take(2).eq([plural, short])), "{plural} ({short}) missing:\n{resources}");
    }
    for plural in ["secrets", "jobs", "leases", "endpointslices", "runtimeclasses"] {
        assert!(resources.lines().any(|l| l.starts_with(plural)), "{plural} missing");
    }
    let version = c.ok(&["version"]);
    assert!(version.contains("Server Version: v1.32"), "{version}");
    c.stop();
}

#[test]
fn apply_get_roundtrip_and_reapply() {
    let (c, _dir) = Cluster::start();
    let out = c.apply(APP);
    for line in ["deployment.apps/hello created", "service/hello created", "configmap/hello-config created", "secret/hello-secret created"] {
        assert!(out.contains(line), "{out}");
    }

    let table = c.ok(&["get", "deploy,svc,cm,secret"]);
    for header in ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "DATA"] {
        assert!(table.contains(header), "missing column {header}:\n{table}");
    }
    assert!(table.contains("deployment.apps/hello") && table.contains("service/hello") && table.contains("80/TCP"), "{table}");
    assert!(table.lines().any(|l| l.contains("secret/hello-secret") && l.contains("Opaque") && l.contains(" 1 ")), "{table}");

    // What was applied comes back, plus upstream defaults.
    let yaml = c.ok(&["get", "deploy", "hello", "-o", "yaml"]);
    for expected in [
        "replicas: 2", "image: 127.0.0.1:5000/hello:v1", "containerPort: 8080", "protocol: TCP",
        "revisionHistoryLimit: 10", "progressDeadlineSeconds: 600", "type: RollingUpdate", "maxSurge: 25%",
        "imagePullPolicy: IfNotPresent", "restartPolicy: Always", "dnsPolicy: ClusterFirst",
        "terminationGracePeriodSeconds: 30", "generation: 1", "uid: ", "creationTimestamp: ",
        "kubectl.kubernetes.io/last-applied-configuration",
    ] {
        assert!(yaml.contains(expected), "missing `{expected}` in:\n{yaml}");
    }
    let svc = c.ok(&["get", "svc", "hello", "-o", "yaml"]);
    assert!(svc.contains("targetPort: 8080") && svc.contains("sessionAffinity: None") && svc.contains("type: ClusterIP"), "{svc}");

    let again = c.apply(APP);
    assert_eq!(again.matches("unchanged").count(), 4, "{again}");

    let rv_before = c.jsonpath(&["deploy", "hello"], "{.metadata.resourceVersion}");
    let changed = c.apply(&APP.replace("hello:v1", "hello:v2"));
    assert!(changed.contains("deployment.apps/hello configured"), "{changed}");
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.spec.template.spec.containers[0].image}"), "127.0.0.1:5000/hello:v2");
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.metadata.generation}"), "2");
    let rv_after = c.jsonpath(&["deploy", "hello"], "{.metadata.resourceVersion}");
    assert!(rv_after.parse::<u64>().unwrap() > rv_before.parse::<u64>().unwrap());
    // The container port survived the strategic merge (merged by containerPort).
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.spec.template.spec.containers[0].ports[0].containerPort}"), "8080");
    c.stop();
}

#[test]
fn selectors_and_everyday_verbs() {
    let (c, _dir) = Cluster::start();
    let pod = |name: &str, app: &str, tier: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {app}, tier: {tier}}}\nspec:\n  containers:\n  - name: main\n    image: example/{name}:1\n---\n")
    };
    let manifest = [pod("pa", "a", "web"), pod("pb", "b", "db"), pod("pc", "c", "web"), pod("pd", "b", "web")].concat();
    c.apply(&manifest);
    let names = c.ok(&["get", "pods", "-l", "app in (a,b),tier!=db", "-o", "name"]);
    assert_eq!(names.lines().collect::<Vec<_>>(), vec!["pod/pa", "pod/pd"]);
    let names = c.ok(&["get", "pods", "--field-selector", "metadata.name=pc", "-o", "name"]);
    assert_eq!(names.trim(), "pod/pc");
    let names = c.ok(&["get", "pods", "-l", "!tier", "-o", "name"]);
    assert_eq!(names.trim(), "");
    let names = c.ok(&["get", "pods", "-l", "app notin (a),tier", "-o", "name"]);
    assert_eq!(names.lines().count(), 3);
    let pods = c.ok(&["get", "pods"]);
    for col in ["NAME", "READY", "STATUS", "RESTARTS", "AGE"] {
        assert!(pods.contains(col), "{pods}");
    }
    // The node agent tries to run these pods: their images do not exist, so STATUS shows
    // the pull error while the phase stays Pending.
    assert_eq!(c.jsonpath(&["pod", "pa"], "{.status.phase}"), "Pending", "{pods}");

    c.apply(super::api::APP);
    c.ok(&["label", "deploy", "hello", "team=wasm"]);
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.metadata.labels.team}"), "wasm");
    c.ok(&["annotate", "deploy", "hello", "owner=me"]);
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.metadata.annotations.owner}"), "me");
    let out = c.ok(&["scale", "deploy/hello", "--replicas=5"]);
    assert!(out.contains("scaled"), "{out}");
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.spec.replicas}"), "5");

    // kubectl edit with a scripted editor.
    let editor = c.data_dir.join("editor.sh");
    std::fs::write(&editor, "#!/bin/sh\nsed -i 's/greeting: hi/greeting: edited/' \"$1\"\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&editor).status().unwrap();
    let out = c.kubectl_cmd(&["edit", "cm", "hello-config"]).env("EDITOR", &editor).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.jsonpath(&["cm", "hello-config"], "{.data.greeting}"), "edited");

    // Typed-client commands (protobuf bodies).
    c.ok(&["create", "deployment", "web", "--image=nginx:1.27", "--replicas=3"]);
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.spec.replicas}"), "3");
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.spec.template.spec.containers[0].image}"), "nginx:1.27");
    c.ok(&["create", "configmap", "lit", "--from-literal=a=1", "--from-literal=b=2"]);
    assert_eq!(c.jsonpath(&["cm", "lit"], "{.data.b}"), "2");
    c.ok(&["create", "secret", "generic", "sec", "--from-literal=password=s3cret"]);
    assert_eq!(c.jsonpath(&["secret", "sec"], "{.data.password}"), "czNjcmV0");
    c.ok(&["run", "runner", "--image=busybox:1.36", "--labels=run=me", "--", "sleep", "10"]);
    assert_eq!(c.jsonpath(&["pod", "runner"], "{.spec.containers[0].args[1]}"), "10");
    c.ok(&["create", "namespace", "scratch"]);
    c.ok(&["create", "configmap", "inside", "-n", "scratch", "--from-literal=x=y"]);

    let out = c.kubectl_stdin(&["delete", "-f", "-"], super::api::APP);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("deployment.apps \"hello\" deleted"));
    let err = c.fails(&["get", "deploy", "hello"]);
    assert!(err.contains("NotFound") || err.contains("not found"), "{err}");

    // Deleting a namespace removes what is in it, then the namespace.
    c.ok(&["delete", "ns", "scratch"]);
    let gone = c.fails(&["get", "ns", "scratch"]);
    assert!(gone.contains("not found"), "{gone}");
    let left = c.ok(&["get", "cm", "-n", "scratch", "-o", "name"]);
    assert_eq!(left.trim(), "");
    c.stop();
}

#[test]
fn get_watch_prints_changes_from_another_client() {
    let (c, _dir) = Cluster::start();
    let mut watcher = c
        .kubectl_cmd(&["get", "pods", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let expect = |want: &str, seen: &mut Vec<String>| {
        wait_for(30, want, || {
            while let Ok(l) = rx.try_recv() {
                seen.push(l);
            }
            seen.iter().any(|l| l.starts_with(want) && l.contains("watched")).then_some(())
        })
    };
    // Each change is made only once the watch is known to be running, so no event
    // can fall before it.
    let apply_pod = || c.apply("apiVersion: v1\nkind: Pod\nmetadata:\n  name: watched\nspec:\n  containers:\n  - name: main\n    image: example/x:1\n");
    apply_pod();
    expect("ADDED", &mut seen);
    c.ok(&["label", "pod", "watched", "seen=yes"]);
    expect("MODIFIED", &mut seen);
    c.ok(&["delete", "pod", "watched"]);
    expect("DELETED", &mut seen);
    let _ = watcher.kill();
    let _ = watcher.wait();
    c.stop();
}

#[test]
fn restart_keeps_objects_uids_and_versions() {
    let dir = crate::harness::TempDir::new("restart");
    let c = Cluster::start_in(dir.path());
    c.apply(APP);
    let uid = c.jsonpath(&["deploy", "hello"], "{.metadata.uid}");
    let rv = c.jsonpath(&["deploy", "hello"], "{.metadata.resourceVersion}");
    let cm_rv = c.jsonpath(&["cm", "hello-config"], "{.metadata.resourceVersion}");
    c.stop();

    let c = Cluster::start_in(dir.path());
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.metadata.uid}"), uid);
    assert_eq!(c.jsonpath(&["deploy", "hello"], "{.metadata.resourceVersion}"), rv);
    assert_eq!(c.jsonpath(&["cm", "hello-config"], "{.metadata.resourceVersion}"), cm_rv);
    assert_eq!(c.jsonpath(&["secret", "hello-secret"], "{.data.token}"), "c2VjcmV0");
    c.ok(&["create", "configmap", "after-restart", "--from-literal=a=b"]);
    let new_rv: u64 = c.jsonpath(&["cm", "after-restart"], "{.metadata.resourceVersion}").parse().unwrap();
    assert!(new_rv > rv.parse::<u64>().unwrap() && new_rv > cm_rv.parse::<u64>().unwrap());
    c.stop();
}

/// Error bodies byte for byte as upstream writes them, and what kubectl and the Python
/// client make of them.
#[test]
fn status_bodies_details_and_what_clients_print() {
    let (c, _dir) = Cluster::start();
    c.ok(&["create", "configmap", "one", "--from-literal=a=b"]);

    // Upstream's field order, `details` as upstream fills them, the serializer's newline.
    let (code, body) = c.curl("GET", "/api/v1/namespaces/default/configmaps/missing", "application/json", None, true);
    assert_eq!(code, 404);
    assert_eq!(
        body,
        "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"missing\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"missing\",\"kind\":\"configmaps\"},\"code\":404}\n"
    );
    let (code, body) = c.curl("GET", "/apis/apps/v1/namespaces/default/deployments/missing", "application/json", None, true);
    assert_eq!(code, 404);
    assert!(body.ends_with("\"details\":{\"name\":\"missing\",\"group\":\"apps\",\"kind\":\"deployments\"},\"code\":404}\n"), "{body}");
    let (code, body) = c.curl("GET", "/api/v1/namespaces/default/widgets", "application/json", None, true);
    assert_eq!(code, 404);
    assert!(body.ends_with("\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"), "{body}");
    let cm = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"one"}}"#;
    let (code, body) = c.curl("POST", "/api/v1/namespaces/default/configmaps", "application/json", Some(cm), true);
    assert_eq!(code, 409);
    assert!(body.ends_with("\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"one\",\"kind\":\"configmaps\"},\"code\":409}\n"), "{body}");
    // Objects too end in the newline; kubectl's --raw shows the body as sent.
    let raw = c.ok(&["get", "--raw", "/api/v1/namespaces/default/configmaps/one"]);
    assert!(raw.starts_with('{') && raw.ends_with("}\n") && !raw.ends_with("}\n\n"), "{raw:?}");

    // The Python client reads the same details.
    let script = "import json, sys\nfrom kubernetes import client, config\nconfig.load_kube_config()\ntry:\n    client.CoreV1Api().read_namespaced_config_map('missing', 'default')\nexcept client.exceptions.ApiException as e:\n    d = json.loads(e.body)\n    print(e.status, d['reason'], d['details']['name'], d['details']['kind'], list(d))\n";
    let out = std::process::Command::new("python3").args(["-c", script]).env("KUBECONFIG", &c.kubeconfig).output().expect("python3");
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{printed}{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(printed.trim(), "404 NotFound missing configmaps ['kind', 'apiVersion', 'metadata', 'status', 'message', 'reason', 'details', 'code']");
    c.stop();
}

/// A created object carries its kind's empty status (Go never omits a struct), and
/// keeps it on reads; kinds without a status get none.
#[test]
fn created_objects_carry_their_kinds_empty_status() {
    let (c, _dir) = Cluster::start();
    // Dry-run: the answer is the object as created, before any controller touches it.
    let out = c.ok(&["create", "deployment", "web", "--image=example/web:1", "--dry-run=server", "-o", "json"]);
    let deploy: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(deploy["status"], serde_json::json!({}), "{out}");
    let out = c.ok(&["create", "service", "clusterip", "web", "--tcp=80", "-o", "json"]);
    let svc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(svc["status"], serde_json::json!({"loadBalancer": {}}), "{out}");
    let raw = c.ok(&["get", "--raw", "/api/v1/namespaces/default/services/web"]);
    assert!(raw.contains("\"status\":{\"loadBalancer\":{}}"), "{raw}");
    let out = c.ok(&["create", "configmap", "plain", "--from-literal=a=b", "-o", "json"]);
    let cm: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert!(cm.get("status").is_none(), "{out}");
    c.stop();
}

/// `kubectl patch --type=json` with a `test` that does not hold fails as against
/// upstream (422 Invalid) and changes nothing.
#[test]
fn json_patch_test_failure_is_invalid() {
    let (c, _dir) = Cluster::start();
    c.ok(&["create", "configmap", "guarded", "--from-literal=a=b"]);
    let patch = r#"[{"op":"test","path":"/data/a","value":"other"},{"op":"replace","path":"/data/a","value":"c"}]"#;
    let err = c.fails(&["patch", "configmap", "guarded", "--type=json", "-p", patch]);
    assert_eq!(err.trim(), "The request is invalid: the server rejected our request due to an error in our request", "{err}");
    assert_eq!(c.jsonpath(&["cm", "guarded"], "{.data.a}"), "b");
    let (code, body) = c.curl("PATCH", "/api/v1/namespaces/default/configmaps/guarded", "application/json-patch+json", Some(patch.as_bytes()), true);
    assert_eq!(code, 422);
    assert!(body.ends_with("\"message\":\"the server rejected our request due to an error in our request\",\"reason\":\"Invalid\",\"details\":{},\"code\":422}\n"), "{body}");
    let holds = patch.replace("\"other\"", "\"b\"");
    c.ok(&["patch", "configmap", "guarded", "--type=json", "-p", &holds]);
    assert_eq!(c.jsonpath(&["cm", "guarded"], "{.data.a}"), "c");
    c.stop();
}
