//! Exactly Kubernetes on the wire: kubectl's protobuf bodies, OpenAPI schemas
//! (`kubectl explain`), unserved kinds.

use crate::harness::Cluster;
use serde_json::Value;

/// What the server stores of an object, without what differs between two creations
/// of it (identity, time, allocations).
fn comparable(mut v: Value) -> Value {
    if let Some(m) = v["metadata"].as_object_mut() {
        for k in ["uid", "resourceVersion", "creationTimestamp", "namespace", "managedFields", "generation"] {
            m.remove(k);
        }
    }
    if let Some(spec) = v["spec"].as_object_mut() {
        for k in ["clusterIP", "clusterIPs"] {
            spec.remove(k);
        }
        if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
            for p in ports {
                p.as_object_mut().map(|p| p.remove("nodePort"));
            }
        }
    }
    // Job selectors carry the Job's own uid.
    strip_uid_labels(&mut v);
    // kubectl prints typed objects through Go, which writes a zero time as null.
    if let Some(m) = v.pointer_mut("/spec/template/metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
    }
    if let Some(m) = v.pointer_mut("/spec/jobTemplate/spec/template/metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
    }
    if let Some(m) = v.pointer_mut("/spec/jobTemplate/metadata").and_then(Value::as_object_mut) {
        m.remove("creationTimestamp");
    }
    v
}

fn strip_uid_labels(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.ends_with("controller-uid"));
            m.values_mut().for_each(strip_uid_labels);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_uid_labels),
        _ => {}
    }
}

fn json_of(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}):\n{s}"))
}

#[test]
fn kubectl_create_subcommands_store_what_the_same_json_stores() {
    let (c, dir) = Cluster::start();
    let crt = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let openssl = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=example.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("openssl");
    assert!(openssl.status.success(), "{}", String::from_utf8_lossy(&openssl.stderr));
    let (crt, key) = (crt.to_str().unwrap().to_string(), key.to_str().unwrap().to_string());
    c.ok(&["create", "namespace", "viajson"]);
    let commands: Vec<Vec<&str>> = vec![
        vec!["service", "clusterip", "s", "--tcp=80:8080"],
        vec!["service", "nodeport", "n", "--tcp=80:8080"],
        vec!["service", "loadbalancer", "l", "--tcp=80:8080"],
        vec!["pdb", "p", "--selector=app=x", "--min-available=1"],
        vec!["deployment", "d", "--image=127.0.0.1:5000/hello:v1", "--replicas=0", "--port=8080"],
        vec!["job", "j", "--image=127.0.0.1:5000/hello:v1"],
        vec!["cronjob", "cj", "--image=127.0.0.1:5000/hello:v1", "--schedule=*/5 * * * *"],
        vec!["configmap", "cm", "--from-literal=a=b", "--from-literal=empty="],
        vec!["secret", "generic", "sg", "--from-literal=password=s3cret"],
        vec!["secret", "tls", "t", "--cert", &crt, "--key", &key],
    ];
    for cmd in &commands {
        let mut args = vec!["create"];
        args.extend(cmd);
        // What kubectl would send, as JSON...
        let mut client = args.clone();
        client.extend(["--dry-run=client", "-o", "json"]);
        let sent = c.ok(&client);
        // ...created from that JSON in one namespace, and by the subcommand (a protobuf
        // body) in another.
        let out = c.kubectl_stdin(&["create", "-n", "viajson", "-f", "-", "-o", "json"], &sent);
        assert!(out.status.success(), "create -f of {cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        let from_json = json_of(&String::from_utf8_lossy(&out.stdout));
        let mut typed = args.clone();
        typed.extend(["-o", "json"]);
        let from_protobuf = json_of(&c.ok(&typed));
        let kind = from_json["kind"].as_str().unwrap().to_string();
        let name = from_json["metadata"]["name"].as_str().unwrap().to_string();
        assert_eq!(comparable(from_protobuf.clone()), comparable(from_json), "kubectl create {cmd:?}: the protobuf body stored something else than its JSON");
        // And it reads back as created.
        let read = json_of(&c.ok(&["get", &kind.to_lowercase(), &name, "-o", "json"]));
        assert_eq!(comparable(read)["spec"], comparable(from_protobuf)["spec"], "{kind}/{name} reads back differently");
    }
    // The ClusterIP Service has no node ports; the NodePort one got one allocated.
    assert_eq!(c.jsonpath(&["svc", "s"], "{.spec.ports[0].nodePort}"), "");
    assert!(c.jsonpath(&["svc", "n"], "{.spec.ports[0].nodePort}").parse::<u16>().is_ok_and(|p| p >= 30000));
    assert_eq!(c.jsonpath(&["pdb", "p"], "{.spec.minAvailable}"), "1");
    assert_eq!(c.jsonpath(&["deploy", "d"], "{.spec.replicas}"), "0", "an explicit zero survives protobuf");
    assert_eq!(c.jsonpath(&["cm", "cm"], "{.data.empty}"), "");
    c.stop();
}

#[test]
fn json_zero_values_mean_what_they_mean_upstream() {
    let (c, _dir) = Cluster::start();
    // Upstream decodes `nodePort: 0` into "no node port", and `paused: false` into nothing;
    // a pointer such as `replicas` keeps its zero.
    let manifest = "apiVersion: v1\nkind: Service\nmetadata: {name: zero}\nspec:\n  type: ClusterIP\n  clusterIP: \"\"\n  ports: [{port: 80, targetPort: 8080, nodePort: 0, name: \"\"}]\n---\n\
apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: zero}\nspec:\n  replicas: 0\n  paused: false\n  selector: {matchLabels: {app: zero}}\n  template:\n    metadata: {labels: {app: zero}}\n    spec:\n      automountServiceAccountToken: false\n      containers: [{name: c, image: 127.0.0.1:5000/hello:v1, ports: [{containerPort: 8080, hostPort: 0}]}]\n";
    c.apply(manifest);
    let svc = json_of(&c.ok(&["get", "svc", "zero", "-o", "json"]));
    assert_eq!(svc["spec"]["ports"][0].get("nodePort"), None, "{svc}");
    assert_eq!(svc["spec"]["ports"][0].get("name"), None, "{svc}");
    let d = json_of(&c.ok(&["get", "deploy", "zero", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(d["spec"].get("paused"), None, "{d}");
    assert_eq!(d["spec"]["template"]["spec"]["automountServiceAccountToken"], false);
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0], serde_json::json!({"containerPort": 8080, "protocol": "TCP"}));
    // Re-applying the same file works, and still stores no zeros.
    c.apply(manifest);
    assert_eq!(c.jsonpath(&["svc", "zero"], "{.spec.ports[0].nodePort}"), "");
    c.stop();
}

#[test]
fn explain_prints_upstream_field_docs() {
    let (c, _dir) = Cluster::start();
    let out = c.ok(&["explain", "deployment.spec.strategy.rollingUpdate"]);
    for want in [
        "GROUP:      apps",
        "KIND:       Deployment",
        "VERSION:    v1",
        "FIELD: rollingUpdate <RollingUpdateDeployment>",
        "Rolling update config params. Present only if DeploymentStrategyType =",
        "maxSurge\t<IntOrString>",
        "maxUnavailable\t<IntOrString>",
        "The maximum number of pods that can be scheduled above the desired number of",
    ] {
        assert!(out.contains(want), "explain lacks {want:?}:\n{out}");
    }
    let pod = c.ok(&["explain", "pod.spec.restartPolicy"]);
    assert!(pod.contains("FIELD: restartPolicy <string>") && pod.contains("Possible enum values:") && pod.contains("\"OnFailure\""), "{pod}");
    let svc = c.ok(&["explain", "svc.spec.ports", "--recursive"]);
    assert!(svc.contains("targetPort\t<IntOrString>") && svc.contains("nodePort\t<integer>"), "{svc}");
    c.stop();
}

#[test]
fn an_unserved_kind_is_named_as_such() {
    let (c, _dir) = Cluster::start();
    let hpa = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: web\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  minReplicas: 1\n  maxReplicas: 3\n";
    let out = c.kubectl_stdin(&["apply", "-f", "-"], hpa);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("no matches for kind \"HorizontalPodAutoscaler\" in version \"autoscaling/v2\""), "{err}");
    let widget = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n";
    let out = c.kubectl_stdin(&["create", "-f", "-"], widget);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no matches for kind \"Widget\" in version \"example.com/v1\""), "{err}");
    c.stop();
}

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(out: &mut Vec<u8>, tag: u64, bytes: &[u8]) {
    varint(out, (tag << 3) | 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// A Kubernetes protobuf body: the magic, then `runtime.Unknown{typeMeta, raw}`.
fn envelope(api_version: &str, kind: &str, raw: &[u8]) -> Vec<u8> {
    let mut tm = Vec::new();
    field(&mut tm, 1, api_version.as_bytes());
    field(&mut tm, 2, kind.as_bytes());
    let mut env = Vec::new();
    field(&mut env, 1, &tm);
    field(&mut env, 2, raw);
    let mut out = b"k8s\0".to_vec();
    out.extend(env);
    out
}

#[test]
fn bad_protobuf_bodies_get_a_status_and_store_nothing() {
    let (c, _dir) = Cluster::start();
    let pb = "application/vnd.kubernetes.protobuf";
    let path = "/api/v1/namespaces/default/configmaps";
    // ConfigMap{metadata: {name: "good"}, data: {"a": "b"}}
    let mut meta = Vec::new();
    field(&mut meta, 1, b"good");
    let mut entry = Vec::new();
    field(&mut entry, 1, b"a");
    field(&mut entry, 2, b"b");
    let mut cm = Vec::new();
    field(&mut cm, 1, &meta);
    field(&mut cm, 2, &entry);
    let good = envelope("v1", "ConfigMap", &cm);

    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("truncated", good[..good.len() - 3].to_vec(), 400),
        ("no magic", good[4..].to_vec(), 400),
        ("unregistered kind", envelope("example.com/v1", "Widget", &cm), 400),
        ("another kind than the path's", envelope("apps/v1", "Deployment", &[]), 400),
        ("a varint where the metadata belongs", envelope("v1", "ConfigMap", &[0x08, 0x01]), 400),
    ];
    for (what, body, code) in cases {
        let (got, text) = c.curl("POST", path, pb, Some(&body), true);
        assert_eq!(got, code, "{what}: {text}");
        let status: Value = json_of(&text);
        assert_eq!((status["kind"].as_str(), status["status"].as_str()), (Some("Status"), Some("Failure")), "{what}: {text}");
    }
    assert_eq!(c.kubectl(&["get", "cm", "good"]).status.code(), Some(1), "nothing was stored");
    // Unknown fields are skipped, as upstream's decoder does; the rest is stored.
    let mut with_unknown = cm.clone();
    field(&mut with_unknown, 99, b"from a newer client");
    let (got, text) = c.curl("POST", path, pb, Some(&envelope("v1", "ConfigMap", &with_unknown)), true);
    assert_eq!(got, 201, "{text}");
    assert_eq!(c.jsonpath(&["cm", "good"], "{.data.a}"), "b");
    c.stop();
}
