//! Startup, liveness and readiness probes: httpGet and tcpSocket against the pod IP, and
//! exec probes that run a fresh instance of the container's module.

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::future::Future;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Which of a container's probes, in kubelet's words for its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Until it passes, the other probes wait; failing it kills the container.
    Startup,
    /// Failing it kills the container.
    Liveness,
    /// Failing it takes the container out of its Services' endpoints.
    Readiness,
}

impl Kind {
    /// `Startup`, `Liveness` or `Readiness`, as kubelet's `Unhealthy` Events begin.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    /// The `Unhealthy` Event's message for a failed check: `Liveness probe failed: ...`.
    pub fn failed(self, output: &str) -> String {
        format!("{} probe failed: {output}", self.as_str())
    }
}

/// One probe's settings with Kubernetes' defaults filled in.
pub struct Schedule {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Schedule {
    pub fn of(p: &Probe) -> Self {
        let secs = |v: Option<i32>, default: u64| Duration::from_secs(v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default));
        let count = |v: Option<i32>, default: u32| v.and_then(|v| u32::try_from(v).ok()).filter(|v| *v > 0).unwrap_or(default);
        Self {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: count(p.success_threshold, 1),
            failure_threshold: count(p.failure_threshold, 3),
        }
    }
}

/// Runs one check of `probe`. `exec` runs the container's module with the given argv and
/// returns its exit code. `Err` carries the output kubelet would put in an event (for
/// httpGet and tcpSocket, the words of Go's HTTP client and dialer).
pub async fn check<F, Fut>(probe: &Probe, container: &Container, pod_ip: &str, exec: F) -> Result<(), String>
where
    F: FnOnce(Vec<String>) -> Fut,
    Fut: Future<Output = Result<i32, String>>,
{
    let timeout = Schedule::of(probe).timeout;
    if let Some(h) = &probe.http_get {
        let port = port(&h.port, container)?;
        let host = h.host.as_deref().filter(|h| !h.is_empty()).unwrap_or(pod_ip);
        let path = h.path.as_deref().filter(|p| !p.is_empty()).unwrap_or("/");
        let headers: Vec<(String, String)> = h.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
        let timed_out = format!("Get \"http://{host}:{port}{path}\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)");
        within(timeout, timed_out, http_get(host, port, path, &headers)).await
    } else if let Some(t) = &probe.tcp_socket {
        let port = port(&t.port, container)?;
        let host = t.host.as_deref().filter(|h| !h.is_empty()).unwrap_or(pod_ip);
        let dial = async { tokio::net::TcpStream::connect((host, port)).await.map(drop).map_err(|e| format!("dial tcp {host}:{port}: {}", io_words(&e, "connect"))) };
        within(timeout, format!("dial tcp {host}:{port}: i/o timeout"), dial).await
    } else if let Some(e) = &probe.exec {
        let argv = e.command.clone().unwrap_or_default();
        let timed_out = format!("command {:?} timed out", argv.join(" "));
        let run = async {
            match exec(argv).await? {
                0 => Ok(()),
                code => Err(format!("command exited with {code}")),
            }
        };
        within(timeout, timed_out, run).await
    } else {
        Err("probe has no handler wasmkube supports (httpGet, tcpSocket, exec)".into())
    }
}

/// The check's result, or `timed_out` when it takes longer than the probe's timeout.
async fn within(timeout: Duration, timed_out: String, check: impl Future<Output = Result<(), String>>) -> Result<(), String> {
    tokio::time::timeout(timeout, check).await.unwrap_or(Err(timed_out))
}

/// An I/O error as Go's net package words it (`connect: connection refused`), for what
/// people search for; others keep the system's words.
fn io_words(e: &std::io::Error, op: &str) -> String {
    use std::io::ErrorKind;
    match e.kind() {
        ErrorKind::ConnectionRefused => format!("{op}: connection refused"),
        ErrorKind::ConnectionReset => format!("{op}: connection reset by peer"),
        ErrorKind::TimedOut => "i/o timeout".into(),
        ErrorKind::HostUnreachable => format!("{op}: no route to host"),
        ErrorKind::NetworkUnreachable => format!("{op}: network is unreachable"),
        _ => format!("{op}: {e}"),
    }
}

/// A numeric port, or a named one looked up in the container's ports.
fn port(p: &IntOrString, container: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => {
            let found = container.ports.iter().flatten().find(|cp| cp.name.as_deref() == Some(name.as_str()));
            found.and_then(|cp| u16::try_from(cp.container_port).ok()).ok_or_else(|| format!("port {name:?} is not a named port of container {}", container.name))
        }
    }
}

/// An HTTP/1.1 GET that succeeds on 2xx and 3xx, as kubelet's prober does.
async fn http_get(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> Result<(), String> {
    let url = format!("http://{host}:{port}{path}");
    let mut stream = tokio::net::TcpStream::connect((host, port)).await.map_err(|e| format!("Get \"{url}\": dial tcp {host}:{port}: {}", io_words(&e, "connect")))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\nAccept: */*\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(|e| format!("Get \"{url}\": {e}"))?;
    // The status line is all a probe needs.
    let mut head = Vec::new();
    let mut buf = [0u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 4096 {
        let n = stream.read(&mut buf).await.map_err(|e| format!("Get \"{url}\": {}", io_words(&e, "read")))?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let code: u16 = line.split_whitespace().nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("Get \"{url}\": malformed HTTP response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[tokio::test]
    async fn http_tcp_and_exec_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let status = if req.starts_with("GET /healthz ") { "200 OK" } else { "500 Internal Server Error" };
                    let _ = s.write_all(format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let container: Container = serde_json::from_value(serde_json::json!({"name": "c", "ports": [{"name": "http", "containerPort": port}]})).unwrap();
        let never = |_argv: Vec<String>| async { Err::<i32, String>("no exec".into()) };
        let ok = probe(serde_json::json!({"httpGet": {"path": "/healthz", "port": "http"}}));
        assert_eq!(check(&ok, &container, "127.0.0.1", never).await, Ok(()));
        let bad = probe(serde_json::json!({"httpGet": {"path": "/other", "port": port}}));
        assert_eq!(check(&bad, &container, "127.0.0.1", never).await, Err("HTTP probe failed with statuscode: 500".into()));
        let tcp = probe(serde_json::json!({"tcpSocket": {"port": port}}));
        assert_eq!(check(&tcp, &container, "127.0.0.1", never).await, Ok(()));
        let closed = probe(serde_json::json!({"tcpSocket": {"port": 1}}));
        assert_eq!(check(&closed, &container, "127.0.0.1", never).await, Err("dial tcp 127.0.0.1:1: connect: connection refused".into()));
        let refused = probe(serde_json::json!({"httpGet": {"path": "/healthz", "port": 1}}));
        assert_eq!(check(&refused, &container, "127.0.0.1", never).await, Err("Get \"http://127.0.0.1:1/healthz\": dial tcp 127.0.0.1:1: connect: connection refused".into()));
        assert_eq!(Kind::Readiness.failed("HTTP probe failed with statuscode: 500"), "Readiness probe failed: HTTP probe failed with statuscode: 500");
        let exec = probe(serde_json::json!({"exec": {"command": ["check", "x"]}}));
        assert_eq!(check(&exec, &container, "", |argv: Vec<String>| async move { Ok(if argv == ["check", "x"] { 0 } else { 1 }) }).await, Ok(()));
        assert_eq!(check(&exec, &container, "", |_| async { Ok(2) }).await, Err("command exited with 2".into()));
        let s = Schedule::of(&probe(serde_json::json!({"periodSeconds": 2})));
        assert_eq!((s.period, s.timeout, s.failure_threshold, s.success_threshold), (Duration::from_secs(2), Duration::from_secs(1), 3, 1));
    }
}
