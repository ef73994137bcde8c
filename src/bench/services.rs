//! `wasmkube bench dns`: `dnsperf` against the embedded DNS server answering cluster names
//! and, in the same run, against `dnsmasq` serving the same names from a hosts file.
//! `wasmkube bench http`: `wrk` through a Service's ClusterIP to 3 hello pods, directly to
//! one pod, to a wasm frontend that calls those pods by Service name (two tiers), and to a
//! native Rust hello server.

use super::pods::{free_port, native_hello, pod_ip, push, wait_running, which, wrk, Load};
use super::{op, Server};
use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::Method;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct DnsArgs {
    /// Services whose names are queried
    #[arg(long, default_value_t = 100)]
    services: usize,
    /// Seconds of load per server
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// dnsperf clients (sockets)
    #[arg(long, default_value_t = 4)]
    clients: u32,
}

#[derive(clap::Args)]
pub struct HttpArgs {
    /// The WAGI hello module
    #[arg(long, default_value = "wasm-examples/hello-wagi.wasm")]
    wagi_module: PathBuf,
    /// The wasi:http frontend that calls the hello Service by name (two tiers)
    #[arg(long, default_value = "wasm-examples/frontend.wasm")]
    frontend_component: PathBuf,
    /// Seconds of load per target
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// wrk connections
    #[arg(long, default_value_t = 16)]
    connections: u32,
}

pub async fn dns(args: DnsArgs) -> anyhow::Result<()> {
    which("dnsperf").context("dnsperf is needed (apt-get install dnsperf)")?;
    which("dnsmasq").or_else(|| Some(PathBuf::from("/usr/sbin/dnsmasq")).filter(|p| p.is_file())).context("dnsmasq is needed (apt-get install dnsmasq-base)")?;
    let server = Server::start_with(None, &["--no-node"]).await?;
    let result = measure_dns(&server, &args).await;
    server.stop().await;
    let rows = result?;
    outln!("| DNS, {} cluster names (dnsperf -c {} -l {}) | queries/s | avg latency ms | lost |", args.services, args.clients, args.seconds)?;
    outln!("|---|---:|---:|---:|")?;
    for (name, qps, avg, lost) in rows {
        outln!("| {name} | {qps:.0} | {avg:.3} | {lost} |")?;
    }
    Ok(())
}

async fn measure_dns(server: &Server, args: &DnsArgs) -> anyhow::Result<Vec<(String, f64, f64, u64)>> {
    let mut c = server.connect().await?;
    let mut hosts = String::new();
    let mut queries = String::new();
    for i in 0..args.services {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": format!("svc-{i}")}, "spec": {"ports": [{"port": 80}]}});
        let body = c.send(&op(Method::POST, "/api/v1/namespaces/default/services".into(), "application/json", Bytes::from(serde_json::to_vec(&svc)?), 201)).await?;
        let created: serde_json::Value = serde_json::from_slice(&body)?;
        let ip = created.pointer("/spec/clusterIP").and_then(|v| v.as_str()).context("a Service without a ClusterIP")?;
        hosts.push_str(&format!("{ip} svc-{i}.default.svc.cluster.local\n"));
        queries.push_str(&format!("svc-{i}.default.svc.cluster.local A\n"));
    }
    let dir = std::env::temp_dir().join(format!("wasmkube-bench-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (hosts_file, query_file) = (dir.join("hosts"), dir.join("queries"));
    std::fs::write(&hosts_file, hosts)?;
    std::fs::write(&query_file, queries)?;
    let last = format!("svc-{}.default.svc.cluster.local", args.services.saturating_sub(1));
    wait_answer(&server.dns, &last).await.context("the embedded DNS server did not learn the Services")?;

    let mut rows = Vec::new();
    let ours = dnsperf(&server.dns, &query_file, args).await?;
    rows.push(("wasmkube embedded DNS (from watches)".to_owned(), ours.0, ours.1, ours.2));

    let port = free_port()?;
    let mut dnsmasq = tokio::process::Command::new("dnsmasq")
        .args(["--no-daemon", "--no-resolv", "--no-hosts", "--bind-interfaces", "--listen-address=127.0.0.1", "--user=root", "--cache-size=10000"])
        .arg(format!("--port={port}"))
        .arg(format!("--addn-hosts={}", hosts_file.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting dnsmasq")?;
    let theirs_addr = format!("127.0.0.1:{port}");
    wait_answer(&theirs_addr, &last).await.context("dnsmasq did not answer")?;
    let theirs = dnsperf(&theirs_addr, &query_file, args).await;
    let _ = dnsmasq.kill().await;
    let theirs = theirs?;
    rows.push(("dnsmasq, same names from a hosts file".to_owned(), theirs.0, theirs.1, theirs.2));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// A question for the A record of `name`, as bytes.
fn question(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.trim_end_matches('.').split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Waits until `server` answers `name` with at least one record.
async fn wait_answer(server: &str, name: &str) -> anyhow::Result<()> {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        sock.send_to(&question(name), server).await?;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), sock.recv(&mut buf)).await {
            // ANCOUNT, bytes 6-7 of the header.
            if n >= 12 && u16::from_be_bytes([buf[6], buf[7]]) > 0 {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no answer for {name} from {server}")
}

/// Queries/s, average latency (ms) and lost queries from one dnsperf run.
async fn dnsperf(server: &str, queries: &std::path::Path, args: &DnsArgs) -> anyhow::Result<(f64, f64, u64)> {
    let (host, port) = server.rsplit_once(':').context("server address")?;
    let out = tokio::process::Command::new("dnsperf")
        .args(["-s", host, "-p", port, "-c", &args.clients.to_string(), "-l", &args.seconds.to_string(), "-q", "200", "-d"])
        .arg(queries)
        .output()
        .await
        .context("running dnsperf")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |label: &str| text.lines().find_map(|l| l.trim().strip_prefix(label)).map(|v| v.trim().to_owned());
    let qps: f64 = field("Queries per second:").and_then(|v| v.parse().ok()).with_context(|| format!("dnsperf output without a rate:\n{text}"))?;
    let avg = field("Average Latency (s):").and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok()).unwrap_or(0.0) * 1000.0;
    let lost = field("Queries lost:").and_then(|v| v.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    eprintln!("{server}: {qps:.0} queries/s, average {avg:.3} ms, {lost} lost");
    Ok((qps, avg, lost))
}

pub async fn http(args: HttpArgs) -> anyhow::Result<()> {
    which("wrk").context("wrk is needed (apt-get install wrk)")?;
    let server = Server::start_with(None, &[]).await?;
    let result = measure_http(&server, &args).await;
    server.stop().await;
    let rows = result?;
    outln!("| HTTP hello (wrk -t2 -c{} {}s) | requests/s | p50 ms | p99 ms |", args.connections, args.seconds)?;
    outln!("|---|---:|---:|---:|")?;
    for (name, rate, p50, p99) in rows {
        outln!("| {name} | {rate:.0} | {p50:.2} | {p99:.2} |")?;
    }
    Ok(())
}

async fn measure_http(server: &Server, args: &HttpArgs) -> anyhow::Result<Vec<(String, f64, f64, f64)>> {
    let load = Load { connections: args.connections, seconds: args.seconds };
    let image = push(server, &args.wagi_module, "bench/hello-wagi:v1").await?;
    let mut c = server.connect().await?;
    let names = ["hello-0", "hello-1", "hello-2"];
    for name in names {
        let pod = json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "hello"}, "annotations": {"wasmkube.io/executor": "wagi"}},
            "spec": {"containers": [{"name": "hello", "image": image, "ports": [{"name": "http", "containerPort": 8080}]}]}});
        c.send(&op(Method::POST, "/api/v1/namespaces/default/pods".into(), "application/json", Bytes::from(serde_json::to_vec(&pod)?), 201)).await?;
    }
    wait_running(server, &names).await?;
    // Port 8080 (not 80) so the proxy needs no privilege to listen.
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello"}, "spec": {"selector": {"app": "hello"}, "ports": [{"port": 8080, "targetPort": "http"}]}});
    let body = c.send(&op(Method::POST, "/api/v1/namespaces/default/services".into(), "application/json", Bytes::from(serde_json::to_vec(&svc)?), 201)).await?;
    let created: serde_json::Value = serde_json::from_slice(&body)?;
    let ip = created.pointer("/spec/clusterIP").and_then(|v| v.as_str()).context("a Service without a ClusterIP")?.to_owned();
    wait_serving(&format!("{ip}:8080"), 3).await?;

    let mut rows = Vec::new();
    let r = wrk(&format!("http://{ip}:8080/"), load).await?;
    rows.push(("ClusterIP through the node proxy, 3 WAGI pods".to_owned(), r.0, r.1, r.2));
    let pod = pod_ip(&mut c, "hello-0").await?;
    let r = wrk(&format!("http://{pod}:8080/"), load).await?;
    rows.push(("one WAGI pod, directly on its pod IP".to_owned(), r.0, r.1, r.2));
    // Two tiers: a wasi:http frontend calling the hello pods by Service name for each
    // request, answered in process (the pods are on this node); and the same through a
    // Service with client affinity, which only the proxy keeps, so over TCP.
    let sticky = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hello-sticky"}, "spec": {"selector": {"app": "hello"}, "sessionAffinity": "ClientIP", "ports": [{"port": 8080, "targetPort": "http"}]}});
    c.send(&op(Method::POST, "/api/v1/namespaces/default/services".into(), "application/json", Bytes::from(serde_json::to_vec(&sticky)?), 201)).await?;
    let frontend = push(server, &args.frontend_component, "bench/frontend:v1").await?;
    let tiers = [("frontend", "http://hello:8080/", 3, "wasi:http frontend calling `http://hello:8080/` (3 WAGI pods, in process)"), ("frontend-tcp", "http://hello-sticky:8080/", 1, "the same calling a ClientIP-affinity Service (over TCP through the proxy)")];
    for (name, url, _, _) in tiers {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "frontend", "image": frontend, "env": [{"name": "BACKEND_URL", "value": url}], "ports": [{"containerPort": 8080}]}]}});
        c.send(&op(Method::POST, "/api/v1/namespaces/default/pods".into(), "application/json", Bytes::from(serde_json::to_vec(&pod)?), 201)).await?;
    }
    wait_running(server, &tiers.map(|t| t.0)).await?;
    for (name, _, backends, row) in tiers {
        let front = pod_ip(&mut c, name).await?;
        wait_serving(&format!("{front}:8080"), backends).await?;
        let r = wrk(&format!("http://{front}:8080/"), load).await?;
        rows.push((row.to_owned(), r.0, r.1, r.2));
    }
    let r = native_hello(load).await?;
    rows.push(("native Rust (hyper) hello server".to_owned(), r.0, r.1, r.2));
    Ok(rows)
}

/// Waits until the proxy at `addr` has answered from `pods` different pods.
async fn wait_serving(addr: &str, pods: usize) -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = std::collections::HashSet::new();
    while seen.len() < pods {
        if Instant::now() > deadline {
            bail!("{addr} answered from {} of {pods} pods", seen.len());
        }
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let mut out = String::new();
            if s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_ok() && s.read_to_string(&mut out).await.is_ok() {
                if let Some((_, body)) = out.split_once("\r\n\r\n") {
                    seen.insert(body.trim().to_owned());
                    continue;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}
