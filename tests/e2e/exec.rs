//! Into the pod, end to end with real kubectl and the Python client: `exec` (the container's
//! module and the built-in tools), `cp`, `port-forward` to pods and Services, `attach` and
//! `run -it --rm`, and what each does with bad input.

use crate::harness::{lines_of, wait_for, Cluster, TempDir};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A pod running `job sleep 3600` (the `job` example) with a scratch emptyDir and a
/// read-only ConfigMap volume.
pub fn sleeper(name: &str, image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {{name: {name}-cfg}}
data: {{greeting: "hello from the configmap\n"}}
---
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: job
    image: "{image}"
    args: ["sleep", "3600"]
    env: [{{name: MESSAGE, value: exec-env}}]
    volumeMounts:
    - {{name: scratch, mountPath: /scratch}}
    - {{name: cfg, mountPath: /config}}
  volumes:
  - {{name: scratch, emptyDir: {{}}}}
  - {{name: cfg, configMap: {{name: {name}-cfg}}}}
"#
    )
}

/// kubectl's exit code, stdout and stderr.
fn run(c: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = c.kubectl(args);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn exec_runs_the_module_and_the_built_in_tools_with_exit_codes_stdin_and_cp() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("job");
    c.apply(&sleeper("box", &image));
    c.wait_jsonpath(&["pod", "box"], "{.status.phase}", "Running", 120);

    // The container's own module, a fresh instance with new args, its exit code passed on.
    let (code, out, err) = run(&c, &["exec", "box", "--", "job", "3"]);
    assert_eq!((code, out.as_str()), (3, "job: start\narg[0]=job\narg[1]=3\nmessage: exec-env\n"), "{err}");
    assert!(err.contains("command terminated with exit code 3"), "{err}");
    assert_eq!(c.ok(&["exec", "box", "-c", "job", "--", "/app/job.wasm", "0"]), "job: start\narg[0]=/app/job.wasm\narg[1]=0\nmessage: exec-env\n");
    // Built-in tools over the container's volumes and env.
    let env = c.ok(&["exec", "box", "--", "env"]);
    assert!(env.lines().any(|l| l == "MESSAGE=exec-env") && env.lines().any(|l| l == "HOSTNAME=box"), "{env}");
    assert_eq!(c.ok(&["exec", "box", "--", "ls", "/"]), "config\nscratch\n");
    assert_eq!(c.ok(&["exec", "box", "--", "cat", "/config/greeting"]), "hello from the configmap\n");
    // stdin passes through (`-i`).
    let piped = c.kubectl_stdin(&["exec", "-i", "box", "--", "cat"], "line one\nline two\n");
    assert_eq!(String::from_utf8_lossy(&piped.stdout), "line one\nline two\n", "{}", String::from_utf8_lossy(&piped.stderr));
    // A command the container does not have: 127 and the runtime's words.
    let (code, _, err) = run(&c, &["exec", "box", "--", "bash", "-c", "true"]);
    assert_eq!(code, 127, "{err}");
    assert!(err.contains("exec: \"bash\": executable file not found in $PATH"), "{err}");

    // kubectl cp both ways, a file and a directory, on the emptyDir.
    let local = TempDir::new("cp");
    let file = local.path().join("notes.txt");
    let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &big).unwrap();
    c.ok(&["cp", file.to_str().unwrap(), "box:/scratch/notes.txt"]);
    assert_eq!(c.ok(&["exec", "box", "--", "ls", "/scratch"]), "notes.txt\n");
    let back = local.path().join("back.txt");
    c.ok(&["cp", "box:/scratch/notes.txt", back.to_str().unwrap()]);
    assert_eq!(std::fs::read(&back).unwrap(), big);
    let tree = local.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    std::fs::write(tree.join("a.txt"), "a\n").unwrap();
    std::fs::write(tree.join("sub/b.txt"), "b\n").unwrap();
    c.ok(&["cp", tree.to_str().unwrap(), "box:/scratch/tree"]);
    assert_eq!(c.ok(&["exec", "box", "--", "cat", "/scratch/tree/sub/b.txt"]), "b\n");
    let tree_back = local.path().join("tree-back");
    c.ok(&["cp", "box:/scratch/tree", tree_back.to_str().unwrap()]);
    assert_eq!(std::fs::read_to_string(tree_back.join("a.txt")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(tree_back.join("sub/b.txt")).unwrap(), "b\n");
    // A read-only mount refuses writes, and nothing lands there.
    let (code, _, err) = run(&c, &["cp", file.to_str().unwrap(), "box:/config/notes.txt"]);
    assert_ne!(code, 0);
    assert!(err.contains("Read-only file system"), "{err}");
    assert_eq!(c.ok(&["exec", "box", "--", "ls", "/config"]), "greeting\n");

    // Bad input: an unknown container, a pod that is not running, a pod that does not exist.
    let (code, _, err) = run(&c, &["exec", "box", "-c", "nope", "--", "env"]);
    assert_ne!(code, 0);
    assert!(err.contains("container nope is not valid for pod box"), "{err}");
    c.apply(&format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: done}}\nspec:\n  restartPolicy: Never\n  containers:\n  - name: job\n    image: \"{image}\"\n"));
    c.wait_jsonpath(&["pod", "done"], "{.status.phase}", "Succeeded", 120);
    let (code, _, err) = run(&c, &["exec", "done", "--", "env"]);
    assert_ne!(code, 0);
    assert!(err.contains("cannot exec into a container in a completed pod; current phase is Succeeded"), "{err}");
    let (_, _, err) = run(&c, &["exec", "ghost", "--", "env"]);
    assert!(err.contains("pods \"ghost\" not found"), "{err}");
    c.stop();
}

/// `kubectl port-forward TARGET :PORT` in the background; returns it and the local port.
fn port_forward(c: &Cluster, target: &str, remote: &str) -> (std::process::Child, u16) {
    let mut child = c.kubectl_cmd(&["port-forward", target, &format!(":{remote}")]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kubectl port-forward");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Read to the end: kubectl prints a line per connection and dies of a closed stdout.
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            // "Forwarding from 127.0.0.1:43125 -> 8080"
            if let Some(port) = line.strip_prefix("Forwarding from 127.0.0.1:").and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse::<u16>().ok()) {
                let _ = tx.send(port);
            }
        }
    });
    let port = rx.recv_timeout(Duration::from_secs(60)).unwrap_or_else(|_| {
        let _ = child.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err);
        panic!("port-forward did not start: {err}")
    });
    (child, port)
}

fn curl_local(port: u16, path: &str, body: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "-m", "20"]);
    if let Some(b) = body {
        cmd.args(["--data-binary", b]);
    }
    cmd.arg(format!("http://127.0.0.1:{port}{path}"));
    crate::harness::curl_with(cmd)
}

#[test]
fn port_forward_carries_requests_to_pods_and_services_and_nothing_leaks() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("hello-wagi");
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  labels: {{app: web}}\n  annotations: {{wasmkube.io/executor: wagi}}\nspec:\n  containers:\n  - name: web\n    image: \"{image}\"\n    ports: [{{containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    ));
    c.wait_jsonpath(&["pod", "web"], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 120);
    let fds_before = c.open_fds();

    let (mut pod_pf, pod_port) = port_forward(&c, "pod/web", "8080");
    assert_eq!(curl_local(pod_port, "/", None), (200, "hello from web\n".into()));
    assert_eq!(curl_local(pod_port, "/echo", Some("posted body")), (200, "hello from web\nposted body".into()));
    // Many connections at once, each its own stream pair.
    let parallel: Vec<_> = (0..24).map(|i| std::thread::spawn(move || curl_local(pod_port, &format!("/echo?{i}"), Some(&format!("req {i}"))))).collect();
    for (i, t) in parallel.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), (200, format!("hello from web\nreq {i}")));
    }
    // A client that goes away mid-request: the forward keeps serving others.
    {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", pod_port)).unwrap();
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\npartial").unwrap();
    }
    assert_eq!(curl_local(pod_port, "/", None).0, 200);

    // A Service target: kubectl picks a pod behind it and forwards to its target port.
    let (mut svc_pf, svc_port) = port_forward(&c, "svc/web", "80");
    assert_eq!(curl_local(svc_port, "/", None), (200, "hello from web\n".into()));

    // A port nothing listens on: the connection fails, the forward says why and lives on.
    let (mut bad_pf, bad_port) = port_forward(&c, "pod/web", "9999");
    let (code, _) = curl_local(bad_port, "/", None);
    assert_eq!(code, 0, "nothing answers on 9999");
    for pf in [&mut pod_pf, &mut svc_pf, &mut bad_pf] {
        let _ = pf.kill();
        let _ = pf.wait();
    }
    // Once the forwards are gone, the process holds no more descriptors than before.
    wait_for(30, "file descriptors to be released", || (c.open_fds() <= fds_before + 2).then_some(()));
    assert_eq!(c.jsonpath(&["nodes"], "{.items[0].status.conditions[?(@.type==\"Ready\")].status}"), "True");
    c.stop();
}

#[test]
fn attach_streams_a_running_container_and_run_it_rm_prints_and_cleans_up() {
    let (c, _dir) = Cluster::start();
    let image = c.push_example("job");
    // `kubectl run -it --rm`: the output arrives, then the pod is deleted.
    let out = c.kubectl(&["run", "once", "-i", "--rm", "--restart=Never", &format!("--image={image}"), "--", "hello", "there"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("arg[1]=hello") && stdout.contains("arg[2]=there"), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    wait_for(60, "the --rm pod to be deleted", || c.kubectl(&["get", "pod", "once"]).status.code().filter(|&code| code != 0).map(drop));

    // attach to a running container streams what it writes; stdin reaches a `stdin: true` container.
    c.apply(&sleeper("attached", &image));
    c.wait_jsonpath(&["pod", "attached"], "{.status.phase}", "Running", 120);
    let mut attach = c.kubectl_cmd(&["attach", "attached", "-c", "job"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("kubectl attach");
    let lines = lines_of(attach.stdout.take().unwrap());
    let first = lines.recv_timeout(Duration::from_secs(60)).expect("attach prints the container's output");
    assert_eq!(first, "job: start");
    let _ = attach.kill();
    let _ = attach.wait();
    let (code, _, err) = run(&c, &["attach", "ghost"]);
    assert!(code != 0 && err.contains("pods \"ghost\" not found"), "{err}");
    c.stop();
}

#[test]
fn the_python_client_execs_streams_stdin_and_port_forwards_and_nothing_leaks() {
    crate::python_e2e::check_python();
    let (c, _dir) = Cluster::start();
    let job = c.push_example("job");
    let web = c.push_example("hello-wagi");
    c.apply(&sleeper("box", &job));
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n  annotations: {{wasmkube.io/executor: wagi}}\nspec:\n  containers:\n  - name: web\n    image: \"{web}\"\n    ports: [{{containerPort: 8080}}]\n    readinessProbe: {{httpGet: {{path: /, port: 8080}}, periodSeconds: 1}}\n"
    ));
    c.wait_jsonpath(&["pod", "box"], "{.status.phase}", "Running", 120);
    c.wait_jsonpath(&["pod", "web"], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 120);
    let fds_before = c.open_fds();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/e2e/python/stream_e2e.py");
    let out = Command::new("python3").arg(script).env("KUBECONFIG", &c.kubeconfig).env("EXEC_POD", "box").env("WEB_POD", "web").output().expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "stream_e2e.py failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.lines().last().is_some_and(|l| l.ends_with(" passed, 0 failed")), "{stdout}");
    // 200 sessions later: descriptors back to where they were, the node still Ready.
    wait_for(30, "file descriptors to be released", || (c.open_fds() <= fds_before + 2).then_some(()));
    assert_eq!(c.jsonpath(&["nodes"], "{.items[0].status.conditions[?(@.type==\"Ready\")].status}"), "True");
    c.stop();
}
