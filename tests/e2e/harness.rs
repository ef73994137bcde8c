//! Start the real `wasmkube` binary and drive it with real clients.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A scratch directory removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("wasmkube-e2e-{tag}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&p).expect("create temp dir");
        Self(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// A running `wasmkube up`.
pub struct Cluster {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`
    pub api: String,
    /// `127.0.0.1:PORT` of the embedded OCI registry (plain HTTP)
    pub registry: String,
    /// `127.0.0.1:PORT` of the embedded DNS server (UDP and TCP)
    pub dns: String,
    cache: TempDir,
    stderr_log: PathBuf,
    /// Holds the log outside the data directory, whose guard a test may drop first.
    _log_dir: TempDir,
}

impl Cluster {
    /// A fresh cluster in its own data directory (kept alive by the returned guard).
    pub fn start() -> (Self, TempDir) {
        let dir = TempDir::new("cluster");
        let c = Self::start_in(dir.path());
        (c, dir)
    }

    /// A fresh cluster with extra `wasmkube up` flags.
    pub fn start_with(extra: &[&str]) -> (Self, TempDir) {
        let dir = TempDir::new("cluster");
        let c = Self::start_in_with(dir.path(), extra);
        (c, dir)
    }

    /// Start on `data_dir`, which may hold an earlier cluster's state.
    pub fn start_in(data_dir: &Path) -> Self {
        Self::start_in_with(data_dir, &[])
    }

    fn start_in_with(data_dir: &Path, extra: &[&str]) -> Self {
        let log_dir = TempDir::new("log");
        let stderr_log = log_dir.path().join("wasmkube.log");
        let log = std::fs::File::create(&stderr_log).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["up", "--data-dir"])
            .arg(data_dir)
            .args(["--api-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0"])
            // Short back-offs keep crash-loop and failing-Job tests quick; a pod CIDR of its own keeps
            // clusters of tests running side by side from binding the same pod addresses.
            .args(["--backoff-base", "200ms", "--job-backoff-base", "200ms", "--pod-cidr"])
            .arg(pod_cidr_for(data_dir))
            .arg("--service-cidr")
            .arg(service_cidr_for(data_dir))
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn wasmkube");
        let rx = lines_of(child.stdout.take().expect("stdout"));
        let deadline = Instant::now() + Duration::from_secs(60);
        let (api, registry, dns) = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) if line.contains("wasmkube ready") => {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    let url = words.iter().find(|w| w.starts_with("https://")).expect("API URL in ready line");
                    let after = |word: &str| words.windows(2).find(|w| w[0] == word).map(|w| w[1].to_string()).unwrap_or_else(|| panic!("{word} address in ready line: {line}"));
                    break (url.to_string(), after("registry"), after("dns"));
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = child.kill();
                    panic!("wasmkube did not become ready: {}", std::fs::read_to_string(&stderr_log).unwrap_or_default());
                }
            }
        };
        Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            kubeconfig: data_dir.join("kubeconfig"),
            api,
            registry,
            dns,
            cache: TempDir::new("kubectl-cache"),
            stderr_log,
            _log_dir: log_dir,
        }
    }

    /// The `wasmkube up` process (API server and node in one): what leak checks count.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// How many file descriptors the `wasmkube up` process holds.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid())).map_or(0, |d| d.count())
    }

    /// The admin bearer token (for raw HTTP clients).
    pub fn token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("pki/admin.token")).expect("token").trim().to_string()
    }

    pub fn ca_file(&self) -> PathBuf {
        self.data_dir.join("pki/ca.crt")
    }

    /// A kubectl command bound to this cluster.
    pub fn kubectl_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.env("KUBECONFIG", &self.kubeconfig).arg("--cache-dir").arg(self.cache.path()).args(args);
        c
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd(args).output().expect("run kubectl")
    }

    /// Run kubectl with `stdin` as its input.
    pub fn kubectl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = self.kubectl_cmd(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("run kubectl");
        child.stdin.take().expect("stdin").write_all(stdin.as_bytes()).expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Run kubectl and return stdout, failing the test with stderr if it fails.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(out.status.success(), "kubectl {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; return stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(!out.status.success(), "kubectl {args:?} unexpectedly succeeded:\n{}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    #[track_caller]
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(out.status.success(), "apply failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A JSON field of an object via `-o jsonpath`.
    #[track_caller]
    pub fn jsonpath(&self, what: &[&str], path: &str) -> String {
        let mut args = vec!["get"];
        args.extend_from_slice(what);
        let expr = format!("-o=jsonpath={path}");
        args.push(&expr);
        self.ok(&args)
    }

    /// Raw HTTPS request with curl; returns (status code, body).
    pub fn curl(&self, method: &str, path: &str, content_type: &str, body: Option<&[u8]>, auth: bool) -> (u16, String) {
        use std::io::Write;
        let mut c = Command::new("curl");
        c.args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--cacert"]).arg(self.ca_file()).args(["-X", method, "-H"]).arg(format!("Content-Type: {content_type}"));
        if auth {
            c.arg("-H").arg(format!("Authorization: Bearer {}", self.token()));
        }
        if body.is_some() {
            c.args(["--data-binary", "@-"]);
        }
        c.arg(format!("{}{}", self.api, path));
        let mut child = c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("curl");
        let mut stdin = child.stdin.take().expect("stdin");
        let data = body.map(|b| b.to_vec());
        let writer = std::thread::spawn(move || {
            if let Some(d) = data {
                // The server may answer (413) before reading everything; a broken pipe is fine.
                let _ = stdin.write_all(&d);
            }
        });
        let out = child.wait_with_output().expect("curl output");
        let _ = writer.join();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Stop with SIGTERM (a clean shutdown) and wait for the process to exit.
    pub fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        assert!(status.success(), "wasmkube exited with {status}: {}", std::fs::read_to_string(&self.stderr_log).unwrap_or_default());
                        return;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::park_timeout(Duration::from_millis(50)),
                    _ => {
                        let _ = child.kill();
                        panic!("wasmkube did not stop on SIGTERM");
                    }
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // A failed test shows what the server was doing, not only what the client saw.
            let log = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(200).collect();
            eprintln!("--- last {} lines of the wasmkube log ---", tail.len());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A /16 inside 127/8 chosen from the data directory, so a cluster keeps its pod CIDR
/// across restarts and clusters of concurrent tests rarely share one. The `up` node takes
/// its first quarter; nodes that join take the others ([`Cluster::join_node`]).
fn pod_cidr_for(data_dir: &Path) -> String {
    node_cidr(data_dir, 0)
}

fn node_cidr(data_dir: &Path, quarter: u8) -> String {
    format!("127.{}.{}.0/18", 2 + dir_hash(data_dir) % 200, quarter * 64)
}

/// A /24 for Service ClusterIPs, outside every test's pod CIDRs (127.2-201.x.x), so the
/// proxies of clusters running side by side do not bind the same addresses.
fn service_cidr_for(data_dir: &Path) -> String {
    let h = dir_hash(data_dir);
    format!("127.{}.{}.0/24", 202 + h % 50, (h >> 8) % 256)
}

fn dir_hash(data_dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    h.finish()
}

/// A `wasmkube node` process joined to a cluster; killed when dropped.
pub struct NodeAgent {
    child: Child,
    pub name: String,
    _dir: TempDir,
}

impl NodeAgent {
    /// Kills the agent at once, as a crashed machine would stop.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Cluster {
    /// Starts a second (`n` = 1), third (2) or fourth (3) node agent joining this cluster,
    /// and waits until its Node is Ready.
    #[track_caller]
    pub fn join_node(&self, n: u8, name: &str) -> NodeAgent {
        self.join_node_with(n, name, &[])
    }

    /// [`Cluster::join_node`] with extra `wasmkube node` flags.
    #[track_caller]
    pub fn join_node_with(&self, n: u8, name: &str, extra: &[&str]) -> NodeAgent {
        assert!((1..=3).contains(&n), "nodes 1 to 3 can join");
        let dir = TempDir::new("node");
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
        let log = std::fs::File::create(dir.path().join("node.log")).expect("node log");
        let child = Command::new(env!("CARGO_BIN_EXE_wasmkube"))
            .args(["node", "--server", &self.api, "--token", &self.token(), "--ca-file"])
            .arg(self.ca_file())
            .args(["--node-name", name, "--node-port", &port.to_string(), "--backoff-base", "200ms", "--pod-cidr", &node_cidr(&self.data_dir, n), "--dns-addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn wasmkube node");
        let agent = NodeAgent { child, name: name.to_owned(), _dir: dir };
        self.wait_jsonpath(&["node", name], "{.status.conditions[?(@.type==\"Ready\")].status}", "True", 60);
        agent
    }
}

impl Cluster {
    /// Pushes `wasm-examples/<name>.wasm` to the cluster's registry; returns the image reference.
    #[track_caller]
    pub fn push_example(&self, name: &str) -> String {
        self.push_example_as(name, "v1")
    }

    /// Pushes `wasm-examples/<name>.wasm` under `tag` (a second version of an image).
    #[track_caller]
    pub fn push_example_as(&self, name: &str, tag: &str) -> String {
        let image = format!("{}/examples/{name}:{tag}", self.registry);
        let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("wasm-examples").join(format!("{name}.wasm"));
        let out = Command::new(env!("CARGO_BIN_EXE_wasmkube")).arg("push").arg(&wasm).arg(&image).output().expect("run wasmkube push");
        assert!(out.status.success(), "push {name} failed: {}", String::from_utf8_lossy(&out.stderr));
        image
    }

    /// Waits until `jsonpath` of the object reads `want`; returns the last value read.
    #[track_caller]
    pub fn wait_jsonpath(&self, what: &[&str], path: &str, want: &str, secs: u64) -> String {
        let mut last = String::new();
        let found = wait_for_or_none(secs, || {
            let mut args = vec!["get"];
            args.extend_from_slice(what);
            let expr = format!("-o=jsonpath={path}");
            args.push(&expr);
            let out = self.kubectl(&args);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            (last == want).then_some(())
        });
        assert!(found.is_some(), "{what:?} {path}: wanted {want:?}, last saw {last:?}\n{}", self.ok(&["get", "pods", "-A", "-o", "wide"]));
        last
    }

    /// The wasmkube process's log so far (for assertions on what it logged).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

/// The lines a child process writes, as they come.
pub fn lines_of(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs a prepared curl command, returning (HTTP status, body); status 0 when nothing answered.
pub fn curl_with(mut c: Command) -> (u16, String) {
    let out = c.args(["-o", "-", "-w", "\n%{http_code}"]).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// Poll `f` until it returns `Some`, or return `None` after `secs` seconds.
pub fn wait_for_or_none<T>(secs: u64, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

/// Poll `f` until it returns `Some`, or fail after `secs` seconds.
#[track_caller]
pub fn wait_for<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}
