//! `kubectl debug`: an ephemeral container added to a running pod runs once beside the
//! pod's own container, attachable while it runs, with its status and logs; `--copy-to`
//! makes a new pod; the API refuses what upstream refuses.

use crate::exec::sleeper;
use crate::harness::{wait_for, Cluster};

#[test]
fn debug_runs_an_ephemeral_container_once_and_refuses_a_changed_one() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("job");
    c.apply(&sleeper("box", &image));
    c.wait_jsonpath(&["pod", "box"], "{.status.phase}", "Running", 120);

    // Attached from its start (or its log once it has ended), so all of its output shows.
    let out = c.kubectl_stdin(&["debug", "-i", "pod/box", &format!("--image={image}"), "--container=dbg", "--", "job", "7", "hello"], "");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("arg[1]=7") && stdout.contains("arg[2]=hello"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    c.wait_jsonpath(&["pod", "box"], "{.status.ephemeralContainerStatuses[0].state.terminated.exitCode}", "7", 60);
    assert_eq!(c.jsonpath(&["pod", "box"], "{.status.ephemeralContainerStatuses[0].name}"), "dbg");
    assert_eq!(c.jsonpath(&["pod", "box"], "{.status.ephemeralContainerStatuses[0].restartCount}"), "0");
    let logs = c.ok(&["logs", "box", "-c", "dbg"]);
    assert!(logs.starts_with("job: start\n") && logs.contains("arg[0]=job\narg[1]=7\narg[2]=hello\n"), "{logs}");

    // A changed existing debug container is refused with upstream's words.
    let changed = r#"{"spec":{"ephemeralContainers":[{"name":"dbg","image":"other"}]}}"#;
    let (code, body) = c.curl("PATCH", "/api/v1/namespaces/default/pods/box/ephemeralcontainers", "application/strategic-merge-patch+json", Some(changed.as_bytes()), true);
    assert_eq!(code, 422, "{body}");
    assert!(body.contains(r#"spec.ephemeralContainers[dbg]: Forbidden: existing ephemeral containers \"dbg\" may not be changed"#), "{body}");
    // kubectl's patch for the same name again merges back into the first: nothing changes
    // and nothing runs again.
    c.ok(&["debug", "pod/box", &format!("--image={image}"), "--container=dbg", "--", "job", "8"]);
    assert_eq!(c.jsonpath(&["pod", "box"], "{.spec.ephemeralContainers[0].command}"), r#"["job","7","hello"]"#);
    assert_eq!(c.jsonpath(&["pod", "box"], "{.status.ephemeralContainerStatuses[0].state.terminated.exitCode}"), "7");
    // A name the pod's own container has is a duplicate.
    let err = c.fails(&["debug", "pod/box", &format!("--image={image}"), "--container=job", "--", "job", "1"]);
    assert!(err.contains(r#".name: Duplicate value: "job""#), "{err}");
    assert_eq!(c.jsonpath(&["pod", "box"], "{.spec.ephemeralContainers[*].name}"), "dbg");

    // The pod's own container kept running throughout.
    assert_eq!(c.jsonpath(&["pod", "box"], "{.status.phase}"), "Running");
    assert_eq!(c.jsonpath(&["pod", "box"], "{.status.containerStatuses[0].restartCount}"), "0");
    assert!(c.jsonpath(&["pod", "box"], "{.status.containerStatuses[0].state.running.startedAt}").len() > 0);

    // `--copy-to` makes a new pod with the debug container as a regular one.
    c.ok(&["debug", "pod/box", &format!("--image={image}"), "--copy-to=box-copy", "--container=dbg2", "--", "job", "0", "copied"]);
    assert_eq!(c.jsonpath(&["pod", "box-copy"], "{.spec.containers[*].name}"), "job dbg2");
    wait_for(60, "the copy's debug container to have run", || {
        let out = c.kubectl(&["logs", "box-copy", "-c", "dbg2"]);
        String::from_utf8_lossy(&out.stdout).contains("arg[2]=copied").then_some(())
    });
}
