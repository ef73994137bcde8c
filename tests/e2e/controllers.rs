//! The control loops as kubectl users see them: Deployments that roll out, roll back,
//! pause, stall on a bad image and heal; ReplicaSets that scale; deletion that cascades
//! to dependents or orphans them.

use crate::harness::{wait_for, Cluster};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Stdio;

/// A workload of `kind` running the WAGI hello module (Ready as soon as it serves), its
/// pods labelled `app: <app>`; `spec_extra` is YAML lines for its spec.
fn hello_workload(kind: &str, name: &str, app: &str, image: &str, spec_extra: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: {kind}
metadata: {{name: {name}}}
spec:
  selector: {{matchLabels: {{app: {app}}}}}
{spec_extra}  template:
    metadata:
      labels: {{app: {app}}}
      annotations: {{wasmkube.io/executor: wagi}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: "{image}"
        ports: [{{name: http, containerPort: 8080}}]
"#
    )
}

pub fn hello_deployment(name: &str, image: &str, replicas: u32, extra_spec: &str) -> String {
    hello_workload("Deployment", name, name, image, &format!("  replicas: {replicas}\n{extra_spec}"))
}

fn lines(s: &str) -> Vec<String> {
    s.split_whitespace().map(str::to_owned).collect()
}

/// Names of the pods selected by `selector` that are not being deleted.
/// Pods matching `selector` (and any further `kubectl get` arguments) not being deleted.
fn live_pods(c: &Cluster, selector: &str, more: &[&str]) -> Vec<String> {
    let mut args = vec!["get", "pods", "-l", selector, "-o", "json"];
    args.extend_from_slice(more);
    let out = c.ok(&args);
    let list: Value = serde_json::from_str(&out).unwrap();
    list["items"].as_array().unwrap().iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect()
}

#[track_caller]
fn rollout_status(c: &Cluster, deployment: &str) -> String {
    c.ok(&["rollout", "status", &format!("deployment/{deployment}"), "--timeout=120s"])
}

#[test]
fn deployments_roll_out_within_max_unavailable_roll_back_pause_and_stall() {
    let (c, _dir) = Cluster::start();
    let v1 = c.push_example_as("hello-wagi", "v1");
    let v2 = c.push_example_as("hello-wagi", "v2");
    let strategy = "  strategy: {type: RollingUpdate, rollingUpdate: {maxUnavailable: 1, maxSurge: 1}}\n";
    c.apply(&hello_deployment("web", &v1, 3, strategy));
    let done = rollout_status(&c, "web");
    assert!(done.contains("successfully rolled out"), "{done}");
    assert_eq!(live_pods(&c, "app=web", &[]).len(), 3);
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.status.readyReplicas}/{.status.updatedReplicas}/{.status.availableReplicas}"), "3/3/3");
    let table = c.ok(&["get", "deploy", "web"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.contains("3/3")), "{table}");
    let hash = c.jsonpath(&["rs", "-l", "app=web"], "{.items[0].metadata.labels.pod-template-hash}");
    assert_eq!(c.jsonpath(&["rs", &format!("web-{hash}")], "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"), "1");

    // A watcher counts ready pods (not being deleted) through the whole rollout.
    let mut watch = c
        .kubectl_cmd(&["get", "pods", "-l", "app=web", "--watch", "--output-watch-events", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let events = {
        let out = watch.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        std::thread::spawn(move || {
            for v in serde_json::Deserializer::from_reader(out).into_iter::<Value>().map_while(Result::ok) {
                if tx.send(v).is_err() {
                    break;
                }
            }
        });
        rx
    };
    c.ok(&["set", "image", "deployment/web", &format!("web={v2}")]);
    let done = rollout_status(&c, "web");
    assert!(done.contains("successfully rolled out"), "{done}");
    let _ = watch.kill();
    let _ = watch.wait();
    let mut ready = BTreeMap::<String, bool>::new();
    let mut lowest = usize::MAX;
    let mut saw_v2_ready = false;
    for e in events.try_iter() {
        let pod = &e["object"];
        let name = pod["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        let is_ready = e["type"] != "DELETED"
            && pod["metadata"]["deletionTimestamp"].is_null()
            && pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
        saw_v2_ready |= is_ready && pod["spec"]["containers"][0]["image"] == v2.as_str();
        ready.insert(name, is_ready);
        let now = ready.values().filter(|r| **r).count();
        // Counting starts once the watch's initial list has shown all three.
        if now >= 3 || lowest != usize::MAX {
            lowest = lowest.min(now);
        }
    }
    assert!(saw_v2_ready, "the watcher never saw a ready v2 pod");
    assert!(lowest >= 2, "with maxUnavailable 1 of 3, ready pods fell to {lowest}");
    let images = c.jsonpath(&["pods", "-l", "app=web"], "{range .items[*]}{.spec.containers[0].image}{\"\\n\"}{end}");
    let live = live_pods(&c, "app=web", &[]);
    assert_eq!(live.len(), 3, "{images}");
    for p in &live {
        assert_eq!(c.jsonpath(&["pod", p], "{.spec.containers[0].image}"), v2);
    }

    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");

    // Undo returns to v1 as revision 3.
    c.ok(&["rollout", "undo", "deployment/web"]);
    rollout_status(&c, "web");
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.spec.template.spec.containers[0].image}"), v1);
    wait_for(60, "only v1 pods", || {
        let live = live_pods(&c, "app=web", &[]);
        (live.len() == 3 && live.iter().all(|p| c.jsonpath(&["pod", p], "{.spec.containers[0].image}") == v1)).then_some(())
    });
    let history = c.ok(&["rollout", "history", "deployment/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.metadata.annotations.deployment\\.kubernetes\\.io/revision}"), "3");
    // And to a named revision.
    c.ok(&["rollout", "undo", "deployment/web", "--to-revision=2"]);
    rollout_status(&c, "web");
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.spec.template.spec.containers[0].image}"), v2);

    // Paused: a change is recorded but not rolled out until resumed.
    c.ok(&["rollout", "pause", "deployment/web"]);
    let rs_before = lines(&c.jsonpath(&["rs", "-l", "app=web"], "{.items[*].metadata.name}"));
    c.ok(&["set", "image", "deployment/web", &format!("web={v1}")]);
    let generation = c.jsonpath(&["deploy", "web"], "{.metadata.generation}");
    c.wait_jsonpath(&["deploy", "web"], "{.status.observedGeneration}", &generation, 30);
    assert_eq!(c.jsonpath(&["deploy", "web"], "{.status.conditions[?(@.type==\"Progressing\")].reason}"), "DeploymentPaused");
    assert_eq!(lines(&c.jsonpath(&["rs", "-l", "app=web"], "{.items[*].metadata.name}")), rs_before);
    for p in live_pods(&c, "app=web", &[]) {
        assert_eq!(c.jsonpath(&["pod", &p], "{.spec.containers[0].image}"), v2);
    }
    c.ok(&["rollout", "resume", "deployment/web"]);
    rollout_status(&c, "web");
    wait_for(60, "v1 pods after resume", || {
        let live = live_pods(&c, "app=web", &[]);
        (live.len() == 3 && live.iter().all(|p| c.jsonpath(&["pod", p], "{.spec.containers[0].image}") == v1)).then_some(())
    });

    // A restart replaces every pod.
    let before = live_pods(&c, "app=web", &[]);
    c.ok(&["rollout", "restart", "deployment/web"]);
    rollout_status(&c, "web");
    wait_for(60, "three new pods", || {
        let live = live_pods(&c, "app=web", &[]);
        (live.len() == 3 && live.iter().all(|p| !before.contains(p))).then_some(())
    });

    // An image that does not exist stalls the rollout past its deadline (shortened to 3 s
    // once the first rollout is done).
    c.apply(&hello_deployment("stuck", &v1, 2, ""));
    rollout_status(&c, "stuck");
    c.ok(&["patch", "deployment/stuck", "-p", r#"{"spec":{"progressDeadlineSeconds":3}}"#]);
    let missing = format!("{}/examples/nothing-here:v9", c.registry);
    c.ok(&["set", "image", "deployment/stuck", &format!("web={missing}")]);
    let out = c.kubectl(&["rollout", "status", "deployment/stuck", "--timeout=120s"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "rollout status of a stuck rollout succeeded");
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    assert_eq!(c.jsonpath(&["deploy", "stuck"], "{.status.conditions[?(@.type==\"Progressing\")].status} {.status.conditions[?(@.type==\"Progressing\")].reason}"), "False ProgressDeadlineExceeded");
    // The old pods keep serving: the bad rollout never took more than maxUnavailable.
    assert_eq!(c.jsonpath(&["deploy", "stuck"], "{.status.availableReplicas}"), "2");
}

#[test]
fn replicas_heal_scale_and_deletion_cascades_or_orphans() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    c.apply(&hello_deployment("web", &image, 3, ""));
    rollout_status(&c, "web");

    // A deleted pod is replaced.
    let before = live_pods(&c, "app=web", &[]);
    c.ok(&["delete", "pod", &before[0], "--wait=false"]);
    wait_for(60, "a replacement pod", || {
        let live = live_pods(&c, "app=web", &[]);
        (live.len() == 3 && !live.contains(&before[0])).then_some(())
    });
    rollout_status(&c, "web");

    // Scale up and down.
    c.ok(&["scale", "deployment/web", "--replicas=5"]);
    c.wait_jsonpath(&["deploy", "web"], "{.status.readyReplicas}", "5", 60);
    c.ok(&["scale", "deployment/web", "--replicas=1"]);
    c.wait_jsonpath(&["deploy", "web"], "{.status.replicas}", "1", 60);
    wait_for(60, "one pod left", || (live_pods(&c, "app=web", &[]).len() == 1).then_some(()));
    // A ReplicaSet of its own adopts a matching orphan pod and makes only the rest.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: stray
  labels: {{app: solo}}
  annotations: {{wasmkube.io/executor: wagi}}
spec:
  containers:
  - name: web
    image: "{image}"
    ports: [{{containerPort: 8080}}]
"#
    ));
    c.wait_jsonpath(&["pod", "stray"], "{.status.phase}", "Running", 60);
    c.apply(&hello_workload("ReplicaSet", "solo", "solo", &image, "  replicas: 2\n"));
    c.wait_jsonpath(&["rs", "solo"], "{.status.readyReplicas}", "2", 60);
    wait_for(30, "the stray pod adopted", || (c.jsonpath(&["pod", "stray"], "{.metadata.ownerReferences[0].name}") == "solo").then_some(()));
    assert_eq!(live_pods(&c, "app=solo", &[]).len(), 2);

    // Every namespace gets its default ServiceAccount, and gets it back when it is deleted.
    c.ok(&["create", "namespace", "team"]);
    wait_for(30, "the default service account", || c.kubectl(&["get", "sa", "default", "-n", "team"]).status.success().then_some(()));
    let uid = c.jsonpath(&["sa", "default", "-n", "team"], "{.metadata.uid}");
    c.ok(&["delete", "sa", "default", "-n", "team"]);
    wait_for(30, "a new default service account", || (c.kubectl(&["get", "sa", "default", "-n", "team", "-o", "jsonpath={.metadata.uid}"]).stdout != uid.as_bytes() && c.kubectl(&["get", "sa", "default", "-n", "team"]).status.success()).then_some(()));

    // Default (background) propagation: the ReplicaSets and pods go with the Deployment.
    c.ok(&["delete", "deployment", "web"]);
    wait_for(60, "web's ReplicaSets and pods gone", || {
        let rs = c.ok(&["get", "rs", "-l", "app=web", "-o", "name"]);
        let pods = c.ok(&["get", "pods", "-l", "app=web", "-o", "name"]);
        (rs.trim().is_empty() && pods.trim().is_empty()).then_some(())
    });

    // Orphan: the Deployment goes, its ReplicaSet and pods stay, unowned.
    c.apply(&hello_deployment("keep", &image, 2, ""));
    rollout_status(&c, "keep");
    let pods = live_pods(&c, "app=keep", &[]);
    c.ok(&["delete", "deployment", "keep", "--cascade=orphan"]);
    wait_for(30, "the deployment gone", || c.ok(&["get", "deploy", "-o", "name"]).trim().is_empty().then_some(()));
    let rs = c.ok(&["get", "rs", "-l", "app=keep", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(lines(&rs).len(), 1, "{rs}");
    assert_eq!(c.jsonpath(&["rs", rs.trim()], "{.metadata.ownerReferences}"), "");
    assert_eq!(live_pods(&c, "app=keep", &[]), pods);
    // The ReplicaSet still owns its pods and keeps them: orphaning went one level only.
    assert_eq!(c.jsonpath(&["rs", rs.trim()], "{.status.readyReplicas}"), "2");

    // Foreground: the owner waits for its dependents, then goes.
    let out = c.ok(&["delete", "rs", rs.trim(), "--cascade=foreground"]);
    assert!(out.contains("deleted"), "{out}");
    // kubectl waited for the ReplicaSet to go, which it did only after its pods.
    assert_eq!(c.ok(&["get", "pods", "-l", "app=keep", "-o", "name"]).trim(), "");
}

fn job_manifest(name: &str, image: &str, spec_extra: &str, args: &[&str]) -> String {
    let args = serde_json::to_string(args).unwrap();
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata: {{name: {name}}}
spec:
{spec_extra}  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: "{image}"
        args: {args}
"#
    )
}

#[test]
fn jobs_complete_in_parallel_stop_at_the_backoff_limit_and_index_their_pods() {
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    let envdump = c.push_example("envdump");
    c.apply(&job_manifest("five", &job, "  completions: 5\n  parallelism: 2\n", &["sleep", "1"]));
    c.apply(&job_manifest("doomed", &job, "  backoffLimit: 2\n", &["3"]));
    c.apply(&job_manifest("indexed", &envdump, "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n", &[]));

    // Never more than `parallelism` pods at once.
    let mut most = 0;
    wait_for(120, "job five complete", || {
        let pods = c.jsonpath(&["pods", "-l", "job-name=five"], "{range .items[*]}{.status.phase}{\"\\n\"}{end}");
        most = most.max(pods.lines().filter(|p| *p == "Running" || *p == "Pending").count());
        (c.jsonpath(&["job", "five"], "{.status.conditions[?(@.type==\"Complete\")].status}") == "True").then_some(())
    });
    assert!(most <= 2, "{most} pods ran at once with parallelism 2");
    assert_eq!(c.jsonpath(&["job", "five"], "{.status.succeeded}"), "5");
    assert!(!c.jsonpath(&["job", "five"], "{.status.completionTime}").is_empty());
    let table = c.ok(&["get", "job", "five"]);
    assert!(table.contains("5/5"), "{table}");
    c.ok(&["wait", "--for=condition=complete", "job/five", "--timeout=10s"]);

    c.ok(&["wait", "--for=condition=failed", "job/doomed", "--timeout=120s"]);
    assert_eq!(c.jsonpath(&["job", "doomed"], "{.status.conditions[?(@.type==\"Failed\")].reason}"), "BackoffLimitExceeded");
    assert_eq!(c.jsonpath(&["job", "doomed"], "{.status.failed}"), "3");
    let failed_pods = c.jsonpath(&["pods", "-l", "job-name=doomed"], "{.items[*].status.phase}");
    assert_eq!(failed_pods, "Failed Failed Failed");

    c.ok(&["wait", "--for=condition=complete", "job/indexed", "--timeout=120s"]);
    assert_eq!(c.jsonpath(&["job", "indexed"], "{.status.completedIndexes}"), "0-2");
    let mut seen = Vec::new();
    for pod in lines(&c.jsonpath(&["pods", "-l", "job-name=indexed"], "{.items[*].metadata.name}")) {
        let index = c.jsonpath(&["pod", &pod], "{.metadata.annotations.batch\\.kubernetes\\.io/job-completion-index}");
        let log = c.ok(&["logs", &pod]);
        assert!(log.contains(&format!("JOB_COMPLETION_INDEX={index}\n")), "{pod}: {log}");
        assert!(pod.starts_with(&format!("indexed-{index}-")), "{pod}");
        seen.push(index);
    }
    seen.sort();
    assert_eq!(seen, ["0", "1", "2"]);

    // Deleting a Job takes its pods with it.
    c.ok(&["delete", "job", "five"]);
    wait_for(60, "job five's pods gone", || c.ok(&["get", "pods", "-l", "job-name=five", "-o", "name"]).trim().is_empty().then_some(()));
}

#[test]
fn a_cronjob_starts_a_job_every_minute() {
    // Schedules have minute resolution, as upstream: this waits for the next minute.
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    c.apply(&format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata: {{name: tick}}
spec:
  schedule: "*/1 * * * *"
  successfulJobsHistoryLimit: 1
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: main
            image: "{job}"
            args: ["0"]
"#
    ));
    let first = wait_for(75, "a job from the cronjob", || {
        let names = c.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"]);
        names.split_whitespace().next().map(str::to_owned)
    });
    assert!(first.starts_with("tick-"), "{first}");
    let minutes: i64 = first["tick-".len()..].parse().expect("minutes since the epoch");
    assert_eq!(c.jsonpath(&["job", &first], "{.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}"), "CronJob/tick");
    let scheduled = c.jsonpath(&["job", &first], "{.metadata.annotations.batch\\.kubernetes\\.io/cronjob-scheduled-timestamp}");
    assert!(scheduled.ends_with(":00Z"), "{scheduled}");
    c.ok(&["wait", "--for=condition=complete", &format!("job/{first}"), "--timeout=60s"]);
    c.wait_jsonpath(&["cronjob", "tick"], "{.status.lastScheduleTime}", &scheduled, 30);
    wait_for(30, "lastSuccessfulTime", || (!c.jsonpath(&["cronjob", "tick"], "{.status.lastSuccessfulTime}").is_empty()).then_some(()));
    let table = c.ok(&["get", "cronjob", "tick"]);
    assert!(table.contains("*/1 * * * *"), "{table}");

    // The next minute brings the next Job, and the history limit of 1 removes the first.
    let second = wait_for(75, "the next job", || {
        let names = c.ok(&["get", "jobs", "-o", "jsonpath={.items[*].metadata.name}"]);
        names.split_whitespace().find(|n| *n != first).map(str::to_owned)
    });
    assert_eq!(second, format!("tick-{}", minutes + 1));
    c.ok(&["wait", "--for=condition=complete", &format!("job/{second}"), "--timeout=60s"]);
    wait_for(30, "the first job cleaned up", || (!c.kubectl(&["get", "job", &first]).status.success()).then_some(()));
    // kubectl's one-off run from the template (owned by the CronJob, so its history
    // limit applies: raised first, or the finished run could be cleaned up at once).
    c.ok(&["patch", "cronjob/tick", "-p", r#"{"spec":{"successfulJobsHistoryLimit":3}}"#]);
    c.ok(&["create", "job", "now", "--from=cronjob/tick"]);
    c.ok(&["wait", "--for=condition=complete", "job/now", "--timeout=60s"]);
}

/// Pod watch events (`kubectl get pods -w`) as JSON values, as they come.
fn watch_pods(c: &Cluster, selector: &str) -> (std::process::Child, std::sync::mpsc::Receiver<Value>) {
    let mut child = c
        .kubectl_cmd(&["get", "pods", "-l", selector, "--watch", "--output-watch-events", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl watch");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    std::thread::spawn(move || {
        for v in serde_json::Deserializer::from_reader(out).into_iter::<Value>().map_while(Result::ok) {
            if tx.send(v).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// `<name> <what>` lines from watch events: `added`, `ready` (first time Ready),
/// `deleting` (first time with a deletionTimestamp) and `gone`.
fn milestones(events: impl Iterator<Item = Value>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for e in events {
        let pod = &e["object"];
        let name = pod["metadata"]["name"].as_str().unwrap_or_default();
        let ready = pod["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True");
        for (what, now) in [("added", true), ("ready", ready), ("deleting", !pod["metadata"]["deletionTimestamp"].is_null() || e["type"] == "DELETED"), ("gone", e["type"] == "DELETED")] {
            let m = format!("{name} {what}");
            if now && seen.insert(m.clone()) {
                out.push(m);
            }
        }
    }
    out
}

#[test]
fn statefulset_pods_start_in_order_and_scale_down_in_reverse() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    let (mut watch, events) = watch_pods(&c, "app=db");
    c.apply(&hello_workload("StatefulSet", "web", "db", &image, "  serviceName: web\n  replicas: 3\n"));
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    assert_eq!(lines(&c.jsonpath(&["pods", "-l", "app=db"], "{.items[*].metadata.name}")), ["web-0", "web-1", "web-2"]);
    assert_eq!(c.jsonpath(&["pod", "web-1"], "{.spec.hostname}.{.spec.subdomain}"), "web-1.web");
    assert_eq!(c.jsonpath(&["pod", "web-2"], "{.metadata.labels.apps\\.kubernetes\\.io/pod-index}"), "2");
    let ip = c.jsonpath(&["pod", "web-2"], "{.status.podIP}");
    let (status, body) = crate::harness::curl_with({
        let mut cmd = std::process::Command::new("curl");
        cmd.args(["-s", "--max-time", "5", &format!("http://{ip}:8080/")]);
        cmd
    });
    assert_eq!((status, body.as_str()), (200, "hello from web-2\n"));

    c.ok(&["scale", "statefulset/web", "--replicas=1"]);
    wait_for(60, "web-1 and web-2 gone", || (c.jsonpath(&["pods", "-l", "app=db"], "{.items[*].metadata.name}") == "web-0").then_some(()));
    c.wait_jsonpath(&["statefulset", "web"], "{.status.replicas}", "1", 30);
    let _ = watch.kill();
    let _ = watch.wait();
    let seen = milestones(events.try_iter());
    let at = |m: &str| seen.iter().position(|s| s == m).unwrap_or_else(|| panic!("never saw {m:?} in {seen:?}"));
    // Each pod is made only once the one before it is Ready ...
    assert!(at("web-0 ready") < at("web-1 added"), "{seen:?}");
    assert!(at("web-1 ready") < at("web-2 added"), "{seen:?}");
    // ... and removed from the top down, one at a time.
    assert!(at("web-2 gone") < at("web-1 deleting"), "{seen:?}");
    assert!(!seen.iter().any(|s| s == "web-0 deleting"), "{seen:?}");

    // RollingUpdate with a partition: only ordinals at or above it move to the new template.
    c.ok(&["scale", "statefulset/web", "--replicas=3"]);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    let v2 = c.push_example_as("hello-wagi", "v2");
    c.ok(&["patch", "statefulset/web", "-p", r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}"#]);
    c.ok(&["set", "image", "statefulset/web", &format!("web={v2}")]);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    let images = || lines(&c.jsonpath(&["pods", "-l", "app=db"], "{range .items[*]}{.metadata.name}={.spec.containers[0].image} {end}"));
    wait_for(60, "web-2 on v2 only", || (images() == [format!("web-0={image}"), format!("web-1={image}"), format!("web-2={v2}")]).then_some(()));
    c.ok(&["patch", "statefulset/web", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#]);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    wait_for(60, "all on v2", || (images() == [format!("web-0={v2}"), format!("web-1={v2}"), format!("web-2={v2}")]).then_some(()));

    // The template history is kept as ControllerRevisions: kubectl lists and undoes it.
    let history = c.ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["1", "2"], "{history}");
    c.ok(&["rollout", "undo", "statefulset/web"]);
    c.ok(&["rollout", "status", "statefulset/web", "--timeout=120s"]);
    wait_for(60, "all back on v1", || (images() == [format!("web-0={image}"), format!("web-1={image}"), format!("web-2={image}")]).then_some(()));
    let history = c.ok(&["rollout", "history", "statefulset/web"]);
    let revisions: Vec<&str> = history.lines().skip(2).filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(revisions, ["2", "3"], "{history}");
    // Deleting the set takes its pods and revisions along.
    c.ok(&["delete", "statefulset", "web"]);
    wait_for(60, "pods and revisions gone", || {
        let left = c.ok(&["get", "pods,controllerrevisions", "-l", "app=db", "-o", "name"]);
        left.trim().is_empty().then_some(())
    });
}

#[test]
fn a_daemonset_runs_one_pod_per_node_and_follows_nodes_joining_and_leaving() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    let _two = c.join_node(1, "node-two");
    let three = c.join_node(2, "node-three");
    let nodes = lines(&c.jsonpath(&["nodes"], "{.items[*].metadata.name}"));
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    c.apply(&hello_workload("DaemonSet", "agent", "agent", &image, ""));
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=120s"]);
    let placed = |c: &Cluster| {
        let mut v = lines(&c.jsonpath(&["pods", "-l", "app=agent", "--field-selector=status.phase=Running"], "{.items[*].spec.nodeName}"));
        v.sort();
        v
    };
    let mut want = nodes.clone();
    want.sort();
    assert_eq!(placed(&c), want);
    assert_eq!(c.jsonpath(&["ds", "agent"], "{.status.desiredNumberScheduled} {.status.numberReady}"), "3 3");

    // A new template rolls out node by node.
    let v2 = c.push_example_as("hello-wagi", "v2");
    c.ok(&["set", "image", "daemonset/agent", &format!("web={v2}")]);
    c.ok(&["rollout", "status", "daemonset/agent", "--timeout=120s"]);
    wait_for(60, "every daemon pod on v2", || {
        let images = lines(&c.jsonpath(&["pods", "-l", "app=agent", "--field-selector=status.phase=Running"], "{.items[*].spec.containers[0].image}"));
        (images.len() == 3 && images.iter().all(|i| *i == v2)).then_some(())
    });

    // A fourth node gets its pod.
    let _four = c.join_node(3, "node-four");
    wait_for(60, "a pod on node-four", || placed(&c).contains(&"node-four".to_owned()).then_some(()));
    c.wait_jsonpath(&["ds", "agent"], "{.status.numberReady}", "4", 60);

    // A node that leaves takes its pod with it.
    three.kill();
    c.ok(&["delete", "node", "node-three"]);
    wait_for(60, "node-three's pod gone", || (!c.jsonpath(&["pods", "-l", "app=agent"], "{.items[*].spec.nodeName}").contains("node-three")).then_some(()));
    c.wait_jsonpath(&["ds", "agent"], "{.status.desiredNumberScheduled}", "3", 30);
}

#[test]
fn pods_leave_a_dead_node_and_drain_respects_a_disruption_budget() {
    // Shortened timeouts (documented flags): a node silent for 3 s is Unknown, and pods
    // tolerate an unreachable node for 2 s.
    let fast = ["--lease-renew-interval", "500ms"];
    let (c, _dir) = Cluster::start_with(&["--lease-renew-interval", "500ms", "--node-monitor-grace-period", "3s", "--default-unreachable-toleration-seconds", "2"]);
    let image = c.push_example("hello-wagi");
    let first = c.jsonpath(&["nodes"], "{.items[0].metadata.name}");
    let doomed = c.join_node_with(1, "doomed", &fast);
    // Everything lands on the new node: the first one is cordoned for now.
    c.ok(&["cordon", &first]);
    assert_eq!(c.jsonpath(&["node", &first], "{.spec.unschedulable}"), "true");
    c.apply(&hello_deployment("web", &image, 2, ""));
    rollout_status(&c, "web");
    assert_eq!(c.jsonpath(&["pods", "-l", "app=web"], "{.items[*].spec.nodeName}"), "doomed doomed");
    c.ok(&["uncordon", &first]);

    // The node agent dies: the node goes Unknown and tainted, its pods are replaced elsewhere.
    doomed.kill();
    c.wait_jsonpath(&["node", "doomed"], "{.status.conditions[?(@.type==\"Ready\")].status}", "Unknown", 30);
    wait_for(30, "the unreachable taint", || c.jsonpath(&["node", "doomed"], "{.spec.taints[*].key}").contains("node.kubernetes.io/unreachable").then_some(()));
    wait_for(60, "two ready pods on the live node", || {
        let out = c.ok(&["get", "pods", "-l", "app=web", "-o", "json"]);
        let list: Value = serde_json::from_str(&out).unwrap();
        let ready_here = list["items"].as_array().unwrap().iter().filter(|p| {
            p["spec"]["nodeName"] == first.as_str() && p["metadata"]["deletionTimestamp"].is_null() && p["status"]["conditions"].as_array().into_iter().flatten().any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
        (ready_here.count() == 2).then_some(())
    });
    c.ok(&["delete", "node", "doomed"]);

    // Drain with a budget of minAvailable 2 over 3 replicas: one pod at a time.
    let second = c.join_node_with(2, "second", &fast);
    c.ok(&["scale", "deployment/web", "--replicas=3"]);
    rollout_status(&c, "web");
    c.apply("apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: web}\nspec:\n  minAvailable: 2\n  selector: {matchLabels: {app: web}}\n");
    c.wait_jsonpath(&["pdb", "web"], "{.status.expectedPods} {.status.currentHealthy} {.status.disruptionsAllowed}", "3 3 1", 30);
    let table = c.ok(&["get", "pdb", "web"]);
    assert!(table.lines().nth(1).is_some_and(|l| l.split_whitespace().take(4).collect::<Vec<_>>() == ["web", "2", "N/A", "1"]), "{table}");
    // Evicting with the budget exhausted is refused with 429.
    c.ok(&["cordon", &first, &second.name]);
    let victims = live_pods(&c, "app=web", &[]);
    let evict = |pod: &str| {
        let body = format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{pod}","namespace":"default"}}}}"#);
        c.curl("POST", &format!("/api/v1/namespaces/default/pods/{pod}/eviction"), "application/json", Some(body.as_bytes()), true)
    };
    assert_eq!(evict(&victims[0]).0, 201);
    let (code, body) = evict(&victims[1]);
    assert_eq!(code, 429, "{body}");
    assert!(body.contains("disruption budget web needs 2 healthy pods and has 2 currently"), "{body}");
    c.ok(&["uncordon", &first, &second.name]);
    rollout_status(&c, "web");

    // kubectl drain evicts through the API, waiting on the budget between pods.
    // (A pod evicted above may still be finishing on it; drain does not evict it again.)
    let on_first = live_pods(&c, "app=web", &["--field-selector", &format!("spec.nodeName={first}")]);
    let out = c.ok(&["drain", &first, "--ignore-daemonsets", "--delete-emptydir-data", "--timeout=120s"]);
    for pod in on_first {
        assert!(out.contains(&format!("pod/{pod} evicted")), "{out}");
    }
    assert_eq!(c.jsonpath(&["node", &first], "{.spec.unschedulable}"), "true");
    rollout_status(&c, "web");
    // The drained pods finish terminating after the rollout is already complete.
    c.wait_jsonpath(&["pods", "-l", "app=web", "--field-selector=status.phase=Running"], "{.items[*].spec.nodeName}", "second second second", 30);
}

#[test]
fn the_scheduler_explains_what_fits_nowhere_and_places_by_selector_taint_and_anti_affinity() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    let first = c.jsonpath(&["nodes"], "{.items[0].metadata.name}");
    let _two = c.join_node(1, "node-two");
    let _three = c.join_node(2, "node-three");
    let pod = |name: &str, spec_extra: &str, resources: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\n  annotations: {{wasmkube.io/executor: wagi}}\nspec:\n{spec_extra}  containers:\n  - name: web\n    image: \"{image}\"\n    ports: [{{containerPort: 8080}}]\n{resources}"
        )
    };

    // Anti-affinity on the hostname: one replica per node, and a fourth fits nowhere.
    c.apply(&hello_deployment(
        "spread",
        &image,
        3,
        "",
    ).replace("    spec:\n      terminationGracePeriodSeconds: 1\n", "    spec:\n      terminationGracePeriodSeconds: 1\n      affinity:\n        podAntiAffinity:\n          requiredDuringSchedulingIgnoredDuringExecution:\n          - labelSelector: {matchLabels: {app: spread}}\n            topologyKey: kubernetes.io/hostname\n"));
    rollout_status(&c, "spread");
    let mut nodes = lines(&c.jsonpath(&["pods", "-l", "app=spread"], "{.items[*].spec.nodeName}"));
    nodes.sort();
    let mut want = vec![first.clone(), "node-three".to_owned(), "node-two".to_owned()];
    want.sort();
    assert_eq!(nodes, want);
    c.ok(&["scale", "deployment/spread", "--replicas=4"]);
    let pending = wait_for(60, "a pending fourth replica", || {
        let out = c.ok(&["get", "pods", "-l", "app=spread", "--field-selector=status.phase=Pending", "-o", "jsonpath={.items[*].metadata.name}"]);
        out.split_whitespace().next().map(str::to_owned)
    });
    wait_for(30, "the anti-affinity reason", || {
        let message = c.jsonpath(&["pod", &pending], "{.status.conditions[?(@.type==\"PodScheduled\")].message}");
        (message == "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.").then_some(())
    });
    c.ok(&["delete", "deployment", "spread"]);

    // Requests that fit nowhere: Pending, with the reasons in a FailedScheduling event.
    c.apply(&pod("huge", "", "    resources: {requests: {memory: 100Ti}}\n"));
    let message = "0/3 nodes are available: 3 Insufficient memory.";
    c.wait_jsonpath(&["pod", "huge"], "{.status.conditions[?(@.type==\"PodScheduled\")].message}", message, 30);
    assert_eq!(c.jsonpath(&["pod", "huge"], "{.status.phase}"), "Pending");
    let events = wait_for(30, "a FailedScheduling event", || {
        let e = c.ok(&["get", "events", "--field-selector", "involvedObject.name=huge,reason=FailedScheduling", "-o", "jsonpath={.items[*].message}"]);
        (!e.is_empty()).then_some(e)
    });
    assert_eq!(events, message);
    let described = c.ok(&["describe", "pod", "huge"]);
    assert!(described.contains("FailedScheduling") && described.contains("Insufficient memory"), "{described}");

    // nodeSelector.
    c.ok(&["label", "node", "node-two", "disk=ssd"]);
    c.apply(&pod("picky", "  nodeSelector: {disk: ssd}\n", ""));
    c.wait_jsonpath(&["pod", "picky"], "{.spec.nodeName}", "node-two", 30);

    // Taints: only a pod that tolerates the taint lands on the tainted node.
    c.ok(&["taint", "node", "node-three", "gpu=yes:NoSchedule"]);
    let on_three = "  nodeSelector: {kubernetes.io/hostname: node-three}\n";
    c.apply(&pod("tolerant", &format!("{on_three}  tolerations: [{{key: gpu, operator: Equal, value: \"yes\", effect: NoSchedule}}]\n"), ""));
    c.apply(&pod("intolerant", on_three, ""));
    c.wait_jsonpath(&["pod", "tolerant"], "{.spec.nodeName}", "node-three", 30);
    c.wait_jsonpath(
        &["pod", "intolerant"],
        "{.status.conditions[?(@.type==\"PodScheduled\")].message}",
        "0/3 nodes are available: 1 node(s) had untolerated taint {gpu: yes}, 2 node(s) didn't match Pod's node affinity/selector.",
        30,
    );
    // Removing the taint lets the waiting pod in.
    c.ok(&["taint", "node", "node-three", "gpu=yes:NoSchedule-"]);
    c.wait_jsonpath(&["pod", "intolerant"], "{.spec.nodeName}", "node-three", 30);
    let scheduled = c.ok(&["get", "events", "--field-selector", "involvedObject.name=intolerant,reason=Scheduled", "-o", "jsonpath={.items[*].message}"]);
    assert_eq!(scheduled, "Successfully assigned default/intolerant to node-three");
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
    let pods = live_pods(&c, "app=old", &[]);
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
        let live = live_pods(&c, "app=old", &[]);
        (live.len() == 2 && !live.contains(&pods[0])).then_some(())
    });
    c.ok(&["scale", "rc", "old", "--replicas=3"]);
    c.wait_jsonpath(&["rc", "old"], "{.status.readyReplicas}", "3", 60);
    c.ok(&["scale", "rc/old", "--replicas=1"]);
    c.wait_jsonpath(&["rc", "old"], "{.status.replicas}", "1", 60);
    wait_for(60, "one pod left", || (live_pods(&c, "app=old", &[]).len() == 1).then_some(()));

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
