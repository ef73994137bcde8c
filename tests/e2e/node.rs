//! The node agent as kubectl users see it: a Ready node, pods of wasm modules that run,
//! exit, crash-loop, read their env and mounts, misbehave, get probed and deleted.

use crate::harness::{wait_for, Cluster};

/// What the container printed, as `kubectl logs` shows it.
fn logs(c: &Cluster, pod: &str, extra: &[&str]) -> String {
    let mut args = vec!["logs", pod];
    args.extend_from_slice(extra);
    c.ok(&args)
}

fn pod(name: &str, image: &str, policy: &str, args: &[&str]) -> String {
    pod_with(name, image, policy, "", args, "")
}

/// A one-container pod; `spec_extra` and `container_extra` are YAML lines for the pod spec
/// and the container.
fn pod_with(name: &str, image: &str, policy: &str, spec_extra: &str, args: &[&str], container_extra: &str) -> String {
    let args = serde_json::to_string(args).unwrap();
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n{spec_extra}  containers:\n  - name: main\n    image: \"{image}\"\n    args: {args}\n{container_extra}")
}

#[test]
fn the_node_registers_ready_with_capacity_and_a_lease() {
    let (c, _dir) = Cluster::start();
    let node = wait_for(30, "a node", || {
        let name = c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
        (!name.is_empty()).then_some(name)
    });
    c.wait_jsonpath(&["node", &node], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 30);
    let table = c.ok(&["get", "nodes"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains(" Ready ")), "{table}");
    let described = c.ok(&["describe", "node", &node]);
    for want in ["Capacity:", "cpu:", "memory:", "pods:", "1k", "Allocatable:", "InternalIP:", "kubernetes.io/arch=", "kubernetes.io/os=linux", "Container Runtime Version:  wasmtime://", "PodCIDR:"] {
        assert!(described.contains(want), "describe node lacks {want:?}:\n{described}");
    }
    let holder = c.ok(&["get", "lease", "-n", "kube-node-lease", &node, "-o", "jsonpath={.spec.holderIdentity}"]);
    assert_eq!(holder, node);
}

#[test]
fn jobs_succeed_fail_and_crash_loop_by_restart_policy() {
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    c.apply(&pod("ok", &job, "Never", &["0"]));
    c.apply(&pod("three", &job, "Never", &["3"]));
    c.apply(&pod("onfailure", &job, "OnFailure", &["0"]));
    c.apply(&pod("crash", &job, "Always", &["3"]));

    c.wait_jsonpath(&["pod", "ok"], "{.status.phase}", "Succeeded", 60);
    assert_eq!(c.jsonpath(&["pod", "ok"], "{.status.containerStatuses[0].state.terminated.reason}"), "Completed");
    assert!(logs(&c, "ok", &[]).contains("job: start\narg[0]=main\narg[1]=0\n"));
    c.wait_jsonpath(&["pod", "three"], "{.status.phase}", "Failed", 60);
    let term = c.jsonpath(&["pod", "three"], "{.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}");
    assert_eq!(term, "3 Error");
    c.wait_jsonpath(&["pod", "onfailure"], "{.status.phase}", "Succeeded", 60);

    // Always: restarted again and again, with the back-off showing as CrashLoopBackOff.
    let mut saw_backoff = false;
    wait_for(60, "crash loop with 3 restarts", || {
        let state = c.jsonpath(&["pod", "crash"], "{.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.waiting.reason}");
        saw_backoff |= state.contains("CrashLoopBackOff");
        let restarts: u32 = state.split(' ').next().unwrap_or("0").parse().unwrap_or(0);
        (restarts >= 3 && saw_backoff).then_some(())
    });
    let table = c.ok(&["get", "pod", "crash"]);
    assert!(table.contains("CrashLoopBackOff") || table.contains("Error") || table.contains("Running"), "{table}");
    assert_eq!(c.jsonpath(&["pod", "crash"], "{.status.containerStatuses[0].lastState.terminated.exitCode}"), "3");
    assert_eq!(c.jsonpath(&["pod", "crash"], "{.status.phase}"), "Running");
    let message = c.jsonpath(&["pod", "crash"], "{.status.containerStatuses[0].state.waiting.message}");
    assert!(message.is_empty() || message.starts_with("back-off "), "{message}");
}

#[test]
fn env_and_volumes_are_what_kubernetes_gives() {
    let (c, _dir) = Cluster::start();
    let envdump = c.push_example("envdump");
    c.apply(&format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: app-config}}
data: {{app.conf: "x=1\n", greeting: hello, color: blue}}
---
apiVersion: v1
kind: Secret
metadata: {{name: creds}}
stringData: {{password: hunter2}}
---
apiVersion: v1
kind: Pod
metadata: {{name: envdump, labels: {{app: dump}}}}
spec:
  restartPolicy: Never
  containers:
  - name: main
    image: "{envdump}"
    args: ["/config", "/config/app.conf", "/secret/password", "/info/labels", "write:/data/out.txt", "/data", "write:/config/x", "write:/ro/y", "/etc/passwd"]
    envFrom:
    - configMapRef: {{name: app-config}}
      prefix: CFG_
    env:
    - {{name: GREETING, valueFrom: {{configMapKeyRef: {{name: app-config, key: greeting}}}}}}
    - {{name: PASSWORD, valueFrom: {{secretKeyRef: {{name: creds, key: password}}}}}}
    - {{name: POD_NAME, valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}}}
    - {{name: POD_NAMESPACE, valueFrom: {{fieldRef: {{fieldPath: metadata.namespace}}}}}}
    - {{name: POD_IP, valueFrom: {{fieldRef: {{fieldPath: status.podIP}}}}}}
    - {{name: NODE_NAME, valueFrom: {{fieldRef: {{fieldPath: spec.nodeName}}}}}}
    - {{name: MESSAGE, value: "$(GREETING) from $(POD_NAME)"}}
    volumeMounts:
    - {{name: config, mountPath: /config}}
    - {{name: secret, mountPath: /secret}}
    - {{name: info, mountPath: /info}}
    - {{name: data, mountPath: /data}}
    - {{name: scratch, mountPath: /ro, readOnly: true}}
  volumes:
  - {{name: config, configMap: {{name: app-config, items: [{{key: app.conf, path: app.conf}}]}}}}
  - {{name: secret, secret: {{secretName: creds}}}}
  - {{name: info, downwardAPI: {{items: [{{path: labels, fieldRef: {{fieldPath: metadata.labels}}}}]}}}}
  - {{name: data, emptyDir: {{}}}}
  - {{name: scratch, emptyDir: {{}}}}
"#
    ));
    c.wait_jsonpath(&["pod", "envdump"], "{.status.phase}", "Succeeded", 60);
    let out = logs(&c, "envdump", &[]);
    let ip = c.jsonpath(&["pod", "envdump"], "{.status.podIP}");
    let node = c.jsonpath(&["pod", "envdump"], "{.spec.nodeName}");
    assert!(ip.starts_with("127."), "pod IP {ip:?} comes from the node's 127/8 pod CIDR");
    for want in [
        "CFG_app.conf=x=1".to_owned(),
        "CFG_color=blue".into(),
        "CFG_greeting=hello".into(),
        "GREETING=hello".into(),
        "HOSTNAME=envdump".into(),
        "PASSWORD=hunter2".into(),
        "POD_NAME=envdump".into(),
        "POD_NAMESPACE=default".into(),
        format!("POD_IP={ip}"),
        format!("NODE_NAME={node}"),
        "MESSAGE=hello from envdump".into(),
        "== dir /config\napp.conf\n== file /config/app.conf\nx=1\n".into(),
        "== file /secret/password\nhunter2\n".into(),
        "== file /info/labels\napp=\"dump\"\n".into(),
        "== wrote /data/out.txt\n== dir /data\nout.txt\n".into(),
        "== error /config/x: Operation not permitted".into(),
        "== error /ro/y: Operation not permitted".into(),
        "== error /etc/passwd: Capabilities insufficient".into(),
    ] {
        assert!(out.contains(&want), "missing {want:?} in:\n{out}");
    }
    assert!(!out.contains("CFG_x"), "{out}");

    // A missing ConfigMap holds the container in CreateContainerConfigError until it appears.
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: needs-cm}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: main\n    image: \"{envdump}\"\n    env:\n    - {{name: X, valueFrom: {{configMapKeyRef: {{name: later, key: x}}}}}}\n"
    ));
    c.wait_jsonpath(&["pod", "needs-cm"], "{.status.containerStatuses[0].state.waiting.reason}", "CreateContainerConfigError", 60);
    let message = c.jsonpath(&["pod", "needs-cm"], "{.status.containerStatuses[0].state.waiting.message}");
    assert_eq!(message, "configmap \"later\" not found");
    c.ok(&["create", "configmap", "later", "--from-literal=x=now"]);
    c.wait_jsonpath(&["pod", "needs-cm"], "{.status.phase}", "Succeeded", 60);
    assert!(logs(&c, "needs-cm", &[]).contains("X=now"));
}

#[test]
fn hostile_modules_end_in_clear_states_and_the_node_stays_ready() {
    let (c, _dir) = Cluster::start();
    let hostile = c.push_example("hostile");
    let job = c.push_example("job");
    c.apply(&pod("bystander", &job, "Never", &["sleep", "600"]));
    c.wait_jsonpath(&["pod", "bystander"], "{.status.phase}", "Running", 60);

    let limited = |name: &str, mode: &str, extra: &str| {
        pod_with(name, &hostile, "Never", extra, &[mode], "    resources: {limits: {memory: 32Mi, cpu: 100m}}\n")
    };
    c.apply(&limited("spin", "loop", "  activeDeadlineSeconds: 3\n"));
    c.apply(&limited("hog", "memory", ""));
    c.apply(&limited("recurse", "recurse", ""));
    c.apply(&limited("trap", "trap", ""));
    c.apply(&limited("flood", "flood", ""));
    c.apply(&limited("passwd", "passwd", ""));

    let state = |pod: &str| c.jsonpath(&["pod", pod], "{.status.phase} {.status.containerStatuses[0].state.terminated.exitCode} {.status.containerStatuses[0].state.terminated.reason}");
    c.wait_jsonpath(&["pod", "hog"], "{.status.phase}", "Failed", 120);
    assert_eq!(state("hog"), "Failed 137 OOMKilled");
    c.wait_jsonpath(&["pod", "recurse"], "{.status.phase}", "Failed", 120);
    assert_eq!(state("recurse"), "Failed 134 Error");
    assert!(c.jsonpath(&["pod", "recurse"], "{.status.containerStatuses[0].state.terminated.message}").contains("stack"));
    c.wait_jsonpath(&["pod", "trap"], "{.status.phase}", "Failed", 120);
    assert_eq!(state("trap"), "Failed 134 Error");
    assert!(c.jsonpath(&["pod", "trap"], "{.status.containerStatuses[0].state.terminated.message}").contains("unreachable"));
    c.wait_jsonpath(&["pod", "passwd"], "{.status.phase}", "Succeeded", 120);
    assert!(logs(&c, "passwd", &[]).contains("== error /etc/passwd: Capabilities insufficient"));
    c.wait_jsonpath(&["pod", "spin"], "{.status.phase}", "Failed", 120);
    assert_eq!(c.jsonpath(&["pod", "spin"], "{.status.reason}"), "DeadlineExceeded");
    c.wait_jsonpath(&["pod", "flood"], "{.status.phase}", "Succeeded", 300);
    // 100 MiB of output, but the node keeps a bounded log (10 MiB files, one rotated).
    let kept: u64 = std::fs::read_dir(c.data_dir.join("node/logs"))
        .unwrap()
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().starts_with("default_flood_"))
        .flat_map(|d| std::fs::read_dir(d.path().join("main")).unwrap().flatten())
        .map(|f| f.metadata().unwrap().len())
        .sum();
    assert!(kept > 0 && kept <= 21 << 20, "flood log kept {kept} bytes");

    // Through all of it, the other pod kept running and the node stayed Ready.
    assert_eq!(c.jsonpath(&["pod", "bystander"], "{.status.phase} {.status.containerStatuses[0].restartCount}"), "Running 0");
    assert_eq!(c.jsonpath(&["nodes"], "{.items[0].status.conditions[?(@.type==\"Ready\")].status}"), "True");
}

#[test]
fn probes_restart_on_liveness_and_gate_readiness() {
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    // Exec probes run a fresh instance of the container's module: `job 0` passes, `job 1` fails.
    let probed = |name: &str, kind: &str, code: &str| {
        pod_with(name, &job, "Always", "", &["sleep", "600"], &format!("    {kind}: {{exec: {{command: [job, \"{code}\"]}}, periodSeconds: 1, failureThreshold: 2}}\n"))
    };
    c.apply(&probed("live-ok", "livenessProbe", "0"));
    c.apply(&probed("live-bad", "livenessProbe", "1"));
    c.apply(&probed("ready-ok", "readinessProbe", "0"));
    c.apply(&probed("ready-bad", "readinessProbe", "1"));

    c.wait_jsonpath(&["pod", "ready-ok"], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 60);
    wait_for(60, "a liveness restart", || {
        let n: u32 = c.jsonpath(&["pod", "live-bad"], "{.status.containerStatuses[0].restartCount}").parse().unwrap_or(0);
        (n >= 1).then_some(())
    });
    let last = c.jsonpath(&["pod", "live-bad"], "{.status.containerStatuses[0].lastState.terminated.exitCode} {.status.containerStatuses[0].lastState.terminated.message}");
    assert!(last.starts_with("137 Liveness probe failed: command exited with 1"), "{last}");
    // The failing readiness probe has had several periods to fail: NotReady, never restarted.
    c.wait_jsonpath(&["pod", "ready-bad"], "{.status.phase}", "Running", 30);
    assert_eq!(c.jsonpath(&["pod", "ready-bad"], "{.status.conditions[?(@.type==\"Ready\")].status}"), "False");
    assert_eq!(c.jsonpath(&["pod", "ready-bad"], "{.status.containerStatuses[0].ready} {.status.containerStatuses[0].restartCount}"), "false 0");
    assert_eq!(c.jsonpath(&["pod", "live-ok"], "{.status.containerStatuses[0].restartCount}"), "0");
    assert_eq!(c.jsonpath(&["pod", "live-ok"], "{.status.conditions[?(@.type==\"Ready\")].status}"), "True");
}

#[test]
fn deletion_stops_pods_and_a_restarted_node_brings_them_back_without_recompiling() {
    let dir = crate::harness::TempDir::new("node-restart");
    let c = Cluster::start_in(dir.path());
    let job = c.push_example("job");
    c.apply(&pod("keeper", &job, "Always", &["sleep", "600"]));
    c.apply(&pod("goner", &job, "Always", &["sleep", "600"]));
    c.wait_jsonpath(&["pod", "keeper"], "{.status.phase}", "Running", 60);
    c.wait_jsonpath(&["pod", "goner"], "{.status.phase}", "Running", 60);
    let uid = c.jsonpath(&["pod", "goner"], "{.metadata.uid}");
    // kubectl waits for the pod to be gone: the node stops it and finishes the deletion.
    c.ok(&["delete", "pod", "goner", "--timeout=30s"]);
    assert!(c.fails(&["get", "pod", "goner"]).contains("NotFound"));
    assert!(!c.data_dir.join("node/pods").join(&uid).exists(), "the pod's volumes are removed");
    c.stop();

    let c = Cluster::start_in(dir.path());
    wait_for(60, "keeper running again after the restart", || {
        let s = c.jsonpath(&["pod", "keeper"], "{.status.phase} {.status.containerStatuses[0].restartCount} {.status.containerStatuses[0].state.running.startedAt}");
        (s.starts_with("Running 1 ") && s.len() > "Running 1 ".len()).then_some(())
    });
    let log = c.log();
    let ready = log.lines().find(|l| l.contains("wasm artifact ready")).unwrap_or_else(|| panic!("no module load logged:\n{log}"));
    assert!(ready.contains("cache_hits=1") && ready.contains("cache_misses=0"), "the module came from the compiled-code cache: {ready}");
    c.stop();
}

/// `curl -s` of a URL: (HTTP status, body); status 0 when nothing answers.
fn curl(url: &str) -> (u16, String) {
    let mut c = std::process::Command::new("curl");
    c.args(["-s", "-m", "10", url]);
    crate::harness::curl_with(c)
}

#[test]
fn http_pods_serve_on_their_pod_ip_next_to_a_busy_neighbour() {
    let (c, _dir) = Cluster::start();
    let wagi = c.push_example("hello-wagi");
    let component = c.push_example("hello-http");
    let hostile = c.push_example("hostile");
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hello
  annotations: {{wasmkube.io/executor: wagi}}
spec:
  containers:
  - name: hello
    image: "{wagi}"
    ports: [{{containerPort: 8080, name: http}}]
    readinessProbe: {{httpGet: {{path: /, port: http}}, periodSeconds: 1}}
    livenessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}
---
apiVersion: v1
kind: Pod
metadata: {{name: component}}
spec:
  containers:
  - name: hello
    image: "{component}"
    ports: [{{containerPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: spinner}}
spec:
  containers:
  - name: spin
    image: "{hostile}"
    args: ["loop"]
"#
    ));
    c.wait_jsonpath(&["pod", "hello"], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 60);
    c.wait_jsonpath(&["pod", "spinner"], "{.status.phase}", "Running", 60);
    let ip = c.jsonpath(&["pod", "hello"], "{.status.podIP}");
    assert!(ip.starts_with("127.") && ip != "127.0.0.1", "pod IP {ip}");
    let (status, body) = curl(&format!("http://{ip}:8080/"));
    assert_eq!((status, body.as_str()), (200, "hello from hello\n"));
    let (status, _) = curl(&format!("http://{ip}:8080/status/404"));
    assert_eq!(status, 404);
    // Per-request handlers' stderr is the container log.
    let log = wait_for(30, "the request in the log", || {
        let l = logs(&c, "hello", &[]);
        l.contains("hello-wagi: GET /").then_some(l)
    });
    assert!(log.contains("hello-wagi: GET /status/404"), "{log}");

    c.wait_jsonpath(&["pod", "component"], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 60);
    let cip = c.jsonpath(&["pod", "component"], "{.status.podIP}");
    assert_ne!(cip, ip);
    let (status, body) = wait_for(30, "the wasi:http component to answer", || {
        let r = curl(&format!("http://{cip}:8080/"));
        (r.0 != 0).then_some(r)
    });
    assert_eq!(status, 200);
    assert!(body.contains("hello from wasi:http"), "{body}");

    // A module spinning with no CPU limit does not starve the HTTP pods.
    for _ in 0..20 {
        assert_eq!(curl(&format!("http://{ip}:8080/")).0, 200);
    }
    assert_eq!(c.jsonpath(&["pod", "hello"], "{.status.containerStatuses[0].restartCount}"), "0");

    // Deleting the pod stops its server: the address stops answering.
    c.ok(&["delete", "pod", "hello", "--timeout=30s"]);
    assert_eq!(curl(&format!("http://{ip}:8080/")).0, 0, "nothing listens on a deleted pod's address");
    assert_eq!(c.jsonpath(&["nodes"], "{.items[0].status.conditions[?(@.type==\"Ready\")].status}"), "True");
}

/// The Deployment of the Kubernetes documentation's "Creating a Deployment", word for word
/// but for the image.
const NGINX_DEPLOYMENT: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: nginx-deployment
  labels:
    app: nginx
spec:
  replicas: 3
  selector:
    matchLabels:
      app: nginx
  template:
    metadata:
      labels:
        app: nginx
    spec:
      containers:
      - name: nginx
        image: nginx:1.14.2
        ports:
        - containerPort: 80
"#;

/// `name podIP` of every pod the selector matches.
fn pods_and_ips(c: &Cluster, selector: &str) -> Vec<(String, String)> {
    let out = c.ok(&["get", "pods", "-l", selector, "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.podIP}{\"\\n\"}{end}"]);
    out.lines().filter_map(|l| l.split_once(' ')).map(|(n, ip)| (n.to_owned(), ip.to_owned())).collect()
}

/// Waits until `url` answers (the pod's server may still be binding when it turns Ready).
#[track_caller]
fn curl_until_answered(url: &str) -> (u16, String) {
    wait_for(30, &format!("an answer from {url}"), || {
        let r = curl(url);
        (r.0 != 0).then_some(r)
    })
}

#[test]
fn deployments_written_for_kubernetes_serve_a_wagi_module_without_an_annotation() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");

    // The documentation's manifest: three replicas, each answering on port 80 of its pod IP.
    c.apply(&NGINX_DEPLOYMENT.replace("nginx:1.14.2", &image));
    c.ok(&["rollout", "status", "deployment/nginx-deployment", "--timeout=120s"]);
    let pods = pods_and_ips(&c, "app=nginx");
    assert_eq!(pods.len(), 3, "{pods:?}");
    for (name, ip) in &pods {
        let (status, body) = curl_until_answered(&format!("http://{ip}:80/"));
        assert_eq!((status, body.as_str()), (200, format!("hello from {name}\n").as_str()));
    }
    let pod = &pods[0].0;
    assert_eq!(c.jsonpath(&["pod", pod], "{.metadata.annotations}"), "");
    assert_eq!(c.jsonpath(&["pod", pod], "{.status.containerStatuses[0].restartCount}"), "0");

    // `kubectl create deployment` with a port.
    c.ok(&["create", "deployment", "web", &format!("--image={image}"), "--port=8080"]);
    c.ok(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let pods = pods_and_ips(&c, "app=web");
    assert_eq!(pods.len(), 1, "{pods:?}");
    let (name, ip) = &pods[0];
    let (status, body) = curl_until_answered(&format!("http://{ip}:8080/"));
    assert_eq!((status, body.as_str()), (200, format!("hello from {name}\n").as_str()));
    let log = wait_for(30, "the request in the log", || {
        let l = logs(&c, name, &[]);
        l.contains("hello-wagi: GET /").then_some(l)
    });
    assert!(!log.contains("Content-Type"), "served per request, not run as a command: {log}");
}

/// The messages of the `ServerExited` Events about `pod`, and their counts.
fn server_exited(c: &Cluster, pod: &str) -> (String, String) {
    let selector = format!("--field-selector=reason=ServerExited,involvedObject.name={pod}");
    let out = c.ok(&["get", "events", &selector, "-o", "jsonpath={range .items[*]}{.type} {.source.component} {.involvedObject.fieldPath}: {.message}{\"\\n\"}{end}"]);
    let counts = c.ok(&["get", "events", &selector, "-o", "jsonpath={.items[*].count}"]);
    (out, counts)
}

#[test]
fn a_container_expected_to_serve_that_ends_gets_a_warning_event_and_says_why() {
    let (c, _dir) = Cluster::start();
    let wagi = c.push_example("hello-wagi");
    let component = c.push_example("job-component");
    let server = |name: &str, annotations: &str, image: &str, policy: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, annotations: {{{annotations}}}}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - name: web\n    image: \"{image}\"\n    ports: [{{containerPort: 8080}}]\n---\n")
    };
    let mut manifest = server("idle", "wasmkube.io/executor: command", &wagi, "Always");
    manifest += &server("cli", "", &component, "Always");
    manifest += &server("once", "", &wagi, "Never");
    manifest += &server("typo", "wasmkube.io/executor: wagl", &wagi, "Always");
    // Two servers on one port of one pod: the second cannot bind.
    manifest += &format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: clash}}\nspec:\n  containers:\n  - name: first\n    image: \"{wagi}\"\n    ports: [{{containerPort: 8080}}]\n  - name: second\n    image: \"{wagi}\"\n    ports: [{{containerPort: 8080}}]\n"
    );
    c.apply(&manifest);

    // Annotated `command`, the module runs to its end and exits 0: Completed, then
    // CrashLoopBackOff as in Kubernetes, a message in its state and a Warning Event.
    let mut saw_backoff = false;
    let last = wait_for(60, "idle restarted in a crash loop", || {
        let s = c.jsonpath(&["pod", "idle"], "{.status.containerStatuses[0].restartCount}|{.status.containerStatuses[0].state.waiting.reason}|{.status.containerStatuses[0].lastState.terminated.reason}|{.status.containerStatuses[0].lastState.terminated.message}");
        saw_backoff |= s.contains("|CrashLoopBackOff|");
        let restarts: u32 = s.split('|').next().unwrap_or("0").parse().unwrap_or(0);
        (restarts >= 3 && saw_backoff).then_some(s)
    });
    let why = "container web exited with code 0, but it declares containerPort 8080 and restartPolicy Always, so it was expected to keep serving";
    let (_, reason_and_message) = last.split_once('|').unwrap();
    let (_, reason_and_message) = reason_and_message.split_once('|').unwrap();
    assert!(reason_and_message.starts_with(&format!("Completed|{why}")), "{last}");
    assert!(reason_and_message.contains("wasmkube.io/executor: command") && reason_and_message.contains("served as WAGI"), "{last}");
    let (events, counts) = wait_for(30, "repeats counted on idle's event", || {
        let (events, counts) = server_exited(&c, "idle");
        counts.split_whitespace().any(|n| n.parse::<u32>().unwrap_or(0) >= 2).then_some((events, counts))
    });
    assert_eq!(events.lines().count(), 1, "one Event, its repeats counted: {events} {counts}");
    assert!(events.starts_with(&format!("Warning kubelet spec.containers{{web}}: {why}")), "{events}");
    let described = c.ok(&["describe", "pod", "idle"]);
    for want in ["ServerExited", why, "Completed"] {
        assert!(described.contains(want), "describe lacks {want:?}:\n{described}");
    }
    assert!(logs(&c, "idle", &["--previous"]).contains(why), "the container log says why too");

    // A wasi:cli/run component cannot serve a port: build it for wasi:http.
    let (events, _) = wait_for(60, "cli's event", || {
        let e = server_exited(&c, "cli");
        (!e.0.is_empty()).then_some(e)
    });
    assert!(events.contains("container web exited with code 0") && events.contains("wasi:http/incoming-handler"), "{events}");

    // A server that cannot bind says so, in its state and an Event.
    let (events, _) = wait_for(60, "clash's event", || {
        let e = server_exited(&c, "clash");
        (!e.0.is_empty()).then_some(e)
    });
    assert!(events.contains("is served as WAGI on containerPort 8080 but stopped serving: binding "), "{events}");
    wait_for(30, "clash's state to say why", || {
        let states = c.jsonpath(&["pod", "clash"], "{.status.containerStatuses[*].lastState.terminated.reason} {.status.containerStatuses[*].lastState.terminated.message}");
        (states.contains("StartError") && states.contains("stopped serving: binding ")).then_some(())
    });

    // A pod meant to finish runs the module as a command: Succeeded, and no Event.
    c.wait_jsonpath(&["pod", "once"], "{.status.phase}", "Succeeded", 60);
    assert_eq!(c.jsonpath(&["pod", "once"], "{.status.containerStatuses[0].state.terminated.reason}|{.status.containerStatuses[0].state.terminated.message}"), "Completed|");
    assert!(logs(&c, "once", &[]).contains("Content-Type: text/plain"), "run once as a command");
    assert_eq!(server_exited(&c, "once").0, "");

    // An annotation value the node does not know holds the pod with a clear message.
    c.wait_jsonpath(&["pod", "typo"], "{.status.containerStatuses[0].state.waiting.reason}", "CreateContainerConfigError", 60);
    let message = c.jsonpath(&["pod", "typo"], "{.status.containerStatuses[0].state.waiting.message}");
    assert_eq!(message, "unknown value \"wagl\" of the annotation wasmkube.io/executor: use \"wagi\" or \"command\"");
}
