//! `kubectl logs` end to end: kubectl -> API server -> the node's HTTPS endpoint -> the
//! container's log file, with the `job` example (see wasm-examples/README.md).

use crate::harness::{wait_for, Cluster};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A pod running the `job` example once (`restartPolicy: Never`).
fn job_pod(name: &str, image: &str, args: &[&str], message: Option<&str>) -> String {
    let env = message.map(|m| format!("\n    env:\n    - name: MESSAGE\n      value: {m}")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: {name}\n    image: {image}\n    args: {args:?}{env}\n"
    )
}

/// The port the node posted for its endpoint.
fn node_port(cluster: &Cluster) -> String {
    let port = cluster.jsonpath(&["nodes"], "{.items[0].status.daemonEndpoints.kubeletEndpoint.Port}");
    assert!(port.parse::<u16>().is_ok_and(|p| p > 0), "the node posts its endpoint's port, got {port:?}");
    port
}

/// GET on the node's endpoint (its certificate is self-signed: not verified); (status, body).
fn node_get(port: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut c = Command::new("curl");
    c.args(["-sS", "-k"]);
    if let Some(t) = token {
        c.arg("-H").arg(format!("Authorization: Bearer {t}"));
    }
    c.arg(format!("https://127.0.0.1:{port}{path}"));
    crate::harness::curl_with(c)
}

#[test]
fn kubectl_logs_of_a_finished_pod_with_tail_timestamps_since_and_limit() {
    let (cluster, _dir) = Cluster::start();
    let image = cluster.push_example("job");
    cluster.apply(&job_pod("job", &image, &["a", "b c"], Some("hello")));
    cluster.wait_jsonpath(&["pod", "job"], "{.status.phase}", "Succeeded", 120);

    let all = "job: start\narg[0]=job\narg[1]=a\narg[2]=b c\nmessage: hello\n";
    assert_eq!(cluster.ok(&["logs", "job"]), all);
    assert_eq!(cluster.ok(&["logs", "pod/job", "-c", "job"]), all);
    assert_eq!(cluster.ok(&["logs", "job", "--tail=2"]), "arg[2]=b c\nmessage: hello\n");
    assert_eq!(cluster.ok(&["logs", "job", "--tail=0"]), "");
    assert_eq!(cluster.ok(&["logs", "job", "--since=1h"]), all);
    assert_eq!(cluster.ok(&["logs", "job", "--limit-bytes=12"]), "job: start\na");

    let stamped = cluster.ok(&["logs", "job", "--timestamps"]);
    let lines: Vec<&str> = stamped.lines().collect();
    assert_eq!(lines.len(), 5, "{stamped}");
    for (line, want) in lines.iter().zip(all.lines()) {
        let (time, text) = line.split_once(' ').unwrap_or_default();
        assert_eq!(text, want);
        // RFC 3339 in UTC with nanoseconds, as the CRI log records it.
        assert!(time.len() == 30 && time.as_bytes()[10] == b'T' && time.ends_with('Z'), "{line}");
    }
    // By label, as kubectl lists the pods first (its default --tail for a selector is 10).
    cluster.ok(&["label", "pod", "job", "app=demo"]);
    assert_eq!(cluster.ok(&["logs", "-l", "app=demo"]), all);
    let first_time = lines[0].split(' ').next().unwrap_or_default();
    assert_eq!(cluster.ok(&["logs", "job", &format!("--since-time={first_time}")]), all);

    let err = cluster.fails(&["logs", "job", "--previous"]);
    assert!(err.contains("previous terminated container \"job\" in pod \"job\" not found"), "{err}");
    let err = cluster.fails(&["logs", "job", "-c", "nope"]);
    assert!(err.contains("container nope is not valid for pod job"), "{err}");
    let err = cluster.fails(&["logs", "nosuchpod"]);
    assert!(err.contains("pods \"nosuchpod\" not found"), "{err}");
}

#[test]
fn the_node_endpoint_wants_the_token_and_the_api_checks_log_options() {
    let (cluster, _dir) = Cluster::start();
    let image = cluster.push_example("job");
    cluster.apply(&job_pod("job", &image, &[], None));
    cluster.wait_jsonpath(&["pod", "job"], "{.status.phase}", "Succeeded", 120);
    let want = "job: start\narg[0]=job\n";

    let port = node_port(&cluster);
    let path = "/containerLogs/default/job/job";
    assert_eq!(node_get(&port, path, None).0, 401);
    assert_eq!(node_get(&port, path, Some("not-the-token")).0, 401);
    assert_eq!(node_get(&port, path, Some(&cluster.token())), (200, want.to_owned()));
    assert_eq!(node_get(&port, &format!("{path}?tailLines=1"), Some(&cluster.token())), (200, "arg[0]=job\n".to_owned()));

    let log = |query: &str| cluster.curl("GET", &format!("/api/v1/namespaces/default/pods/job/log{query}"), "application/json", None, true);
    assert_eq!(log(""), (200, want.to_owned()));
    let (code, body) = log("?tailLines=abc");
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"reason\":\"BadRequest\"") && body.contains("tailLines"), "{body}");
    let (code, body) = log("?tailLines=-1");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("\"field\":\"tailLines\"") && body.contains("must be greater than or equal to 0"), "{body}");
    let (code, body) = log("?sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z");
    assert_eq!(code, 422, "{body}");
    assert_eq!(log("?container=nope").0, 400);
    assert_eq!(cluster.curl("GET", "/api/v1/namespaces/default/pods/job/log", "application/json", None, false).0, 401);
    // Client mistakes are answered, not logged as failures of the server.
    assert!(!cluster.log().contains("pod log request failed"), "{}", cluster.log());
}

#[test]
fn containers_are_picked_by_name_default_or_annotation_and_waiting_ones_say_why() {
    let (cluster, _dir) = Cluster::start();
    let image = cluster.push_example("job");
    let two = |name: &str, annotation: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{annotation}spec:\n  restartPolicy: Never\n  containers:\n  - name: a\n    image: {image}\n    env: [{{name: MESSAGE, value: from-a}}]\n  - name: b\n    image: {image}\n    env: [{{name: MESSAGE, value: from-b}}]\n"
        )
    };
    cluster.apply(&two("two", ""));
    cluster.apply(&two("picked", "  annotations:\n    kubectl.kubernetes.io/default-container: b\n"));
    cluster.wait_jsonpath(&["pod", "two"], "{.status.phase}", "Succeeded", 120);
    cluster.wait_jsonpath(&["pod", "picked"], "{.status.phase}", "Succeeded", 120);

    assert_eq!(cluster.ok(&["logs", "two", "-c", "b"]), "job: start\narg[0]=b\nmessage: from-b\n");
    assert_eq!(cluster.ok(&["logs", "two", "--container=a"]), "job: start\narg[0]=a\nmessage: from-a\n");
    // kubectl 1.32 itself picks the first container when none is named, and says so.
    let out = cluster.kubectl(&["logs", "two"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "job: start\narg[0]=a\nmessage: from-a\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("Defaulted container \"a\" out of: a, b"), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(cluster.ok(&["logs", "picked"]), "job: start\narg[0]=b\nmessage: from-b\n");
    let every = cluster.ok(&["logs", "two", "--all-containers", "--prefix"]);
    assert!(every.contains("[pod/two/a] message: from-a\n") && every.contains("[pod/two/b] message: from-b\n"), "{every}");
    // The API itself wants a container named when there are several, as upstream's does.
    let (code, body) = cluster.curl("GET", "/api/v1/namespaces/default/pods/two/log", "application/json", None, true);
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("a container name must be specified for pod two, choose one of: [a b]"), "{body}");
    assert_eq!(cluster.curl("GET", "/api/v1/namespaces/default/pods/picked/log", "application/json", None, true).1, "job: start\narg[0]=b\nmessage: from-b\n");

    // A container whose image cannot be pulled has no log yet, and the error says why.
    cluster.apply(&job_pod("unpulled", &format!("{}/examples/missing:v1", cluster.registry), &[], None));
    wait_for(60, "the image pull to fail", || {
        let reason = cluster.jsonpath(&["pod", "unpulled"], "{.status.containerStatuses[0].state.waiting.reason}");
        matches!(reason.as_str(), "ErrImagePull" | "ImagePullBackOff").then_some(())
    });
    let err = cluster.fails(&["logs", "unpulled"]);
    assert!(err.contains("container \"unpulled\" in pod \"unpulled\" is waiting to start"), "{err}");

    // A pod no node has taken has no logs: nothing, as upstream (no content).
    let unschedulable = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: nowhere\nspec:\n  nodeSelector:\n    no-such-label: x\n  containers:\n  - name: c\n    image: {image}\n");
    cluster.apply(&unschedulable);
    assert_eq!(cluster.ok(&["logs", "nowhere"]), "");
}

#[test]
fn previous_shows_the_run_before_a_crash_loop_restart() {
    let (cluster, _dir) = Cluster::start();
    let image = cluster.push_example("job");
    let manifest = format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: crash\nspec:\n  restartPolicy: Always\n  containers:\n  - name: crash\n    image: {image}\n    args: [\"3\"]\n");
    cluster.apply(&manifest);
    wait_for(120, "a restart", || {
        let restarts = cluster.jsonpath(&["pod", "crash"], "{.status.containerStatuses[0].restartCount}");
        restarts.parse::<u32>().is_ok_and(|n| n >= 1).then_some(())
    });
    let exit_code = cluster.jsonpath(&["pod", "crash"], "{.status.containerStatuses[0].lastState.terminated.exitCode}");
    assert_eq!(exit_code, "3");
    let want = "job: start\narg[0]=crash\narg[1]=3\n";
    assert_eq!(cluster.ok(&["logs", "crash", "--previous"]), want);
    assert_eq!(cluster.ok(&["logs", "crash", "-p", "--tail=1"]), "arg[1]=3\n");
    // The current run (or, during a back-off, the one that just ended) reads the same.
    assert_eq!(cluster.ok(&["logs", "crash"]), want);
}

#[test]
fn follow_streams_live_and_ends_when_the_container_exits() {
    let (cluster, _dir) = Cluster::start();
    let image = cluster.push_example("job");
    cluster.apply(&job_pod("sleeper", &image, &["sleep", "3"], None));
    cluster.wait_jsonpath(&["pod", "sleeper"], "{.status.phase}", "Running", 120);

    let mut child = cluster.kubectl_cmd(&["logs", "-f", "sleeper"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run kubectl logs -f");
    let stdout = child.stdout.take().expect("stdout");
    let rx = crate::harness::lines_of(stdout);
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    // The first tick arrives while the container still runs: the log is streamed, not
    // read once at the end.
    loop {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).expect("a line from kubectl logs -f");
        let tick = line == "tick";
        lines.push(line);
        if tick {
            let running = cluster.jsonpath(&["pod", "sleeper"], "{.status.containerStatuses[0].state.running.startedAt}");
            assert!(!running.is_empty(), "the container is still running when its first tick arrives");
            break;
        }
    }
    // kubectl ends by itself once the container has exited and everything is sent.
    let status = wait_for(60, "kubectl logs -f to end", || child.try_wait().expect("kubectl status"));
    assert!(status.success(), "{status}");
    lines.extend(rx.iter());
    assert_eq!(lines.join("\n"), "job: start\narg[0]=sleeper\narg[1]=sleep\narg[2]=3\ntick\ntick\ntick");
    cluster.wait_jsonpath(&["pod", "sleeper"], "{.status.phase}", "Succeeded", 60);
}
