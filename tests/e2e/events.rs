//! The Events the node posts about its pods, as `kubectl describe pod`, `kubectl events
//! --for` and `kubectl get events` show them: kubelet's reasons and messages, one Event
//! per repeat with its `count` bumped.

use crate::harness::{wait_for, Cluster};
use serde_json::Value;

/// One Event as `kubectl get events -o json` lists it.
#[derive(Clone, Debug)]
struct Ev {
    kind: String,
    reason: String,
    message: String,
    count: u64,
    source: String,
    field_path: String,
}

/// The Events about the pod `pod`, in the order the API server lists them.
fn events_of(c: &Cluster, pod: &str) -> Vec<Ev> {
    let selector = format!("--field-selector=involvedObject.kind=Pod,involvedObject.name={pod}");
    let list: Value = serde_json::from_str(&c.ok(&["get", "events", &selector, "-o", "json"])).expect("event list");
    let text = |e: &Value, p: &str| e.pointer(p).and_then(Value::as_str).unwrap_or_default().to_owned();
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| Ev {
            kind: text(e, "/type"),
            reason: text(e, "/reason"),
            message: text(e, "/message"),
            count: e["count"].as_u64().unwrap_or(1),
            source: text(e, "/source/component"),
            field_path: text(e, "/involvedObject/fieldPath"),
        })
        .collect()
}

/// Waits until an Event about `pod` with `reason` satisfies `ok`; returns it.
#[track_caller]
fn wait_event(c: &Cluster, pod: &str, reason: &str, ok: impl Fn(&Ev) -> bool) -> Ev {
    let mut last = Vec::new();
    let found = crate::harness::wait_for_or_none(90, || {
        last = events_of(c, pod);
        last.iter().find(|e| e.reason == reason && ok(e)).cloned()
    });
    found.unwrap_or_else(|| panic!("no {reason} Event as wanted about {pod}; saw {last:#?}"))
}

/// A one-container pod named `name` whose container is `main`; `container_extra` are YAML
/// lines for the container.
fn pod(name: &str, image: &str, policy: &str, args: &[&str], container_extra: &str) -> String {
    let args = serde_json::to_string(args).unwrap();
    format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  restartPolicy: {policy}\n  containers:\n  - name: main\n    image: \"{image}\"\n    args: {args}\n{container_extra}---\n")
}

#[test]
fn a_pods_life_reads_as_kubelet_tells_it_in_describe_and_kubectl_events() {
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    c.apply(&pod("life", &job, "Always", &["sleep", "600"], ""));
    c.wait_jsonpath(&["pod", "life"], "{.status.phase}", "Running", 60);

    let started = wait_event(&c, "life", "Started", |_| true);
    assert_eq!((started.kind.as_str(), started.message.as_str()), ("Normal", "Started container main"));
    assert_eq!((started.source.as_str(), started.field_path.as_str()), ("kubelet", "spec.containers{main}"));
    let pulling = wait_event(&c, "life", "Pulling", |_| true);
    assert_eq!((pulling.kind.as_str(), pulling.message.as_str()), ("Normal", format!("Pulling image \"{job}\"").as_str()));
    let pulled = wait_event(&c, "life", "Pulled", |_| true);
    let prefix = format!("Successfully pulled image \"{job}\" in ");
    let (took, size) = pulled
        .message
        .strip_prefix(&prefix)
        .and_then(|rest| rest.split_once(" including waiting). Image size: "))
        .unwrap_or_else(|| panic!("{pulled:?}"));
    let (pull_time, total) = took.split_once(" (").unwrap_or_else(|| panic!("{pulled:?}"));
    assert!(pull_time.ends_with('s') && total.ends_with('s'), "Go durations: {pulled:?}");
    let bytes: u64 = size.strip_suffix(" bytes.").and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("{pulled:?}"));
    let module = std::fs::metadata(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-examples/job.wasm")).unwrap().len();
    assert!(bytes > module, "the image's blobs are the module and its config: {bytes} bytes");
    let created = wait_event(&c, "life", "Created", |_| true);
    assert_eq!(created.message, "Created container: main");
    wait_event(&c, "life", "Scheduled", |e| e.source == "default-scheduler");

    // What a user reads: describe's Events table, and kubectl events in the order it all happened.
    let described = c.ok(&["describe", "pod", "life"]);
    let events_table = described.split("Events:").nth(1).unwrap_or_else(|| panic!("no Events in describe:\n{described}"));
    for want in ["Scheduled", "default-scheduler", &format!("Pulling image \"{job}\""), &prefix, "Created container: main", "Started container main", "kubelet"] {
        assert!(events_table.contains(want), "describe pod lacks {want:?}:\n{described}");
    }
    let listed = c.ok(&["events", "--for", "pod/life"]);
    let at = |text: &str| listed.find(text).unwrap_or_else(|| panic!("kubectl events lacks {text:?}:\n{listed}"));
    assert!(at("Pulling image") < at("Successfully pulled image") && at("Successfully pulled image") < at("Created container: main") && at("Created container: main") < at("Started container main"), "{listed}");

    // The image is in the node's cache now: a second pod is told so, and nothing is pulled.
    c.apply(&pod("again", &job, "Always", &["sleep", "600"], ""));
    let present = wait_event(&c, "again", "Pulled", |_| true);
    assert_eq!(present.message, format!("Container image \"{job}\" already present on machine"));
    wait_event(&c, "again", "Started", |_| true);
    assert!(events_of(&c, "again").iter().all(|e| e.reason != "Pulling"), "{:?}", events_of(&c, "again"));

    // Deleting a pod stops its container: Killing, as kubectl events still lists it.
    c.ok(&["delete", "pod", "life", "--timeout=30s"]);
    let killing = wait_event(&c, "life", "Killing", |_| true);
    assert_eq!((killing.kind.as_str(), killing.message.as_str(), killing.field_path.as_str()), ("Normal", "Stopping container main", "spec.containers{main}"));
    let listed = c.ok(&["events", "--for", "pod/life"]);
    assert!(listed.contains("Killing") && listed.contains("Stopping container main"), "{listed}");
}

#[test]
fn failures_are_recorded_with_kubelets_reasons_and_repeats_are_counted() {
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    let wagi = c.push_example("hello-wagi");
    let hostile = c.push_example("hostile");
    let missing = format!("{}/examples/missing:v1", c.registry);
    let absent = format!("{}/examples/absent:v1", c.registry);
    let mut manifest = pod("crash", &job, "Always", &["3"], "");
    // Exec probes run the container's module: `job 1` exits 1.
    manifest += &pod("live-bad", &job, "Always", &["sleep", "600"], "    livenessProbe: {exec: {command: [job, \"1\"]}, periodSeconds: 1, failureThreshold: 2}\n");
    manifest += &pod("ready-bad", &wagi, "Always", &[], "    ports: [{containerPort: 8080}]\n    readinessProbe: {httpGet: {path: /status/500, port: 8080}, periodSeconds: 1}\n");
    // Nothing listens on port 9 of the pod's address.
    manifest += &pod("tcp-bad", &job, "Always", &["sleep", "600"], "    readinessProbe: {tcpSocket: {port: 9}, periodSeconds: 1}\n");
    manifest += &pod("no-image", &missing, "Always", &[], "");
    manifest += &pod("never", &absent, "Always", &[], "    imagePullPolicy: Never\n");
    manifest += &pod("hog", &hostile, "Never", &["memory"], "    resources: {limits: {memory: 32Mi}}\n");
    c.apply(&manifest);

    // A crash loop: one BackOff Event, counted at every back-off, in kubelet's words.
    let uid = wait_for(60, "crash's uid", || Some(c.jsonpath(&["pod", "crash"], "{.metadata.uid}")).filter(|u| !u.is_empty()));
    let back_off = wait_event(&c, "crash", "BackOff", |e| e.count >= 2);
    assert_eq!(back_off.kind, "Warning");
    assert_eq!(back_off.message, format!("Back-off restarting failed container main in pod crash_default({uid})"));
    let crash = events_of(&c, "crash");
    assert_eq!(crash.iter().filter(|e| e.reason == "BackOff").count(), 1, "repeats count on one Event: {crash:#?}");
    // Every start is a Created and a Started; restarts find the image present.
    wait_event(&c, "crash", "Started", |e| e.count >= 2);
    wait_event(&c, "crash", "Pulled", |e| e.message.ends_with("already present on machine"));
    let described = c.ok(&["describe", "pod", "crash"]);
    assert!(described.lines().any(|l| l.contains("BackOff") && l.contains("(x")), "describe shows the count:\n{described}");
    let warnings = c.ok(&["events", "--for", "pod/crash", "--types=Warning"]);
    assert!(warnings.contains("Back-off restarting failed container main") && !warnings.contains("Started container"), "{warnings}");

    // A failing liveness probe: Unhealthy at each failure, then Killing, then a restart.
    let unhealthy = wait_event(&c, "live-bad", "Unhealthy", |e| e.count >= 2);
    assert_eq!((unhealthy.kind.as_str(), unhealthy.message.as_str()), ("Warning", "Liveness probe failed: command exited with 1"));
    let killing = wait_event(&c, "live-bad", "Killing", |_| true);
    assert_eq!(killing.message, "Container main failed liveness probe, will be restarted");

    // Failing readiness probes, over HTTP and TCP, as kubelet words them.
    let unhealthy = wait_event(&c, "ready-bad", "Unhealthy", |e| e.count >= 2);
    assert_eq!(unhealthy.message, "Readiness probe failed: HTTP probe failed with statuscode: 500");
    assert!(events_of(&c, "ready-bad").iter().all(|e| e.reason != "Killing"), "readiness never kills");
    let ip = wait_for(60, "tcp-bad's address", || Some(c.jsonpath(&["pod", "tcp-bad"], "{.status.podIP}")).filter(|ip| !ip.is_empty()));
    let unhealthy = wait_event(&c, "tcp-bad", "Unhealthy", |_| true);
    assert_eq!(unhealthy.message, format!("Readiness probe failed: dial tcp {ip}:9: connect: connection refused"));

    // An image the registry does not have: the pull error, then the back-off.
    let failed = wait_event(&c, "no-image", "Failed", |e| e.message.starts_with("Failed to pull image"));
    assert!(failed.message.starts_with(&format!("Failed to pull image \"{missing}\": ")) && failed.kind == "Warning", "{failed:?}");
    wait_event(&c, "no-image", "Failed", |e| e.message == "Error: ErrImagePull");
    let back_off = wait_event(&c, "no-image", "BackOff", |_| true);
    assert_eq!((back_off.kind.as_str(), back_off.message.as_str()), ("Normal", format!("Back-off pulling image \"{missing}\"").as_str()));
    wait_event(&c, "no-image", "Failed", |e| e.message == "Error: ImagePullBackOff");
    wait_event(&c, "no-image", "Pulling", |e| e.count >= 2);

    // pullPolicy Never with the image absent: never pulled, and the status says why.
    let never = wait_event(&c, "never", "ErrImageNeverPull", |_| true);
    assert_eq!((never.kind.as_str(), never.message.as_str()), ("Warning", format!("Container image \"{absent}\" is not present with pull policy of Never").as_str()));
    wait_event(&c, "never", "Failed", |e| e.message == "Error: ErrImageNeverPull");
    c.wait_jsonpath(&["pod", "never"], "{.status.containerStatuses[0].state.waiting.reason}", "ErrImageNeverPull", 60);
    assert!(events_of(&c, "never").iter().all(|e| e.reason != "Pulling"));

    // A module that outgrows its memory limit.
    c.wait_jsonpath(&["pod", "hog"], "{.status.containerStatuses[0].state.terminated.reason}", "OOMKilled", 120);
    let oom = wait_event(&c, "hog", "OOMKilling", |_| true);
    assert_eq!(oom.kind, "Warning");
    assert!(oom.message.contains("Container main") && oom.message.contains("limits.memory (33554432 bytes)"), "{oom:?}");
}
