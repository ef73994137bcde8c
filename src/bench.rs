//! `wasmkube bench ...`: the measurements behind docs/benchmarks.md.
//!
//! Benchmarks start the real server as a child process and talk to it over
//! HTTPS as any client would, so the figures include TLS, HTTP and the store.

mod exec;
mod pods;
mod registry;
mod scheduler;
mod services;

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use rustls::pki_types::{pem::PemObject, CertificateDer};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// API throughput and latency: create, get, list and patch ConfigMaps over HTTPS.
    Api(ApiArgs),
    /// Registry push/pull throughput for 1 KiB, 1 MiB and 100 MiB blobs, against docker-registry.
    Registry(registry::RegistryArgs),
    /// Pod start-up to Running, HTTP hello throughput against wasmtime serve and native, idle memory per pod.
    Pods(pods::PodsArgs),
    /// Scheduling throughput on hollow nodes (10,000 pods on 5,000 nodes), then the API at scale.
    Scheduler(scheduler::SchedulerArgs),
    /// DNS queries/s for cluster names (dnsperf), against dnsmasq serving the same names.
    Dns(services::DnsArgs),
    /// HTTP through a Service's ClusterIP to 3 hello pods, against one pod and a native server.
    Http(services::HttpArgs),
    /// exec round trips (built-in no-op, fresh module instance, kubectl) and port-forward throughput beside a direct connection.
    Exec(exec::ExecArgs),
}

#[derive(clap::Args)]
pub struct ApiArgs {
    /// ConfigMaps created, read and patched in the main run
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Concurrent clients, each on its own TLS connection
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Objects in the store for the scale run (0 skips it)
    #[arg(long, default_value_t = 150_000)]
    scale_objects: usize,
    /// Data directory for the server [default: a fresh temporary directory, removed afterwards]
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

pub async fn run(what: BenchCommand) -> anyhow::Result<()> {
    match what {
        BenchCommand::Api(args) => api(args).await,
        BenchCommand::Registry(args) => registry::run(args).await,
        BenchCommand::Pods(args) => pods::run(args).await,
        BenchCommand::Scheduler(args) => scheduler::run(args).await,
        BenchCommand::Dns(args) => services::dns(args).await,
        BenchCommand::Http(args) => services::http(args).await,
        BenchCommand::Exec(args) => exec::run(args).await,
    }
}

/// The server under test, as a child process.
struct Server {
    child: tokio::process::Child,
    addr: String,
    /// `host:port` of the embedded registry.
    registry: String,
    /// `host:port` of the embedded DNS server.
    dns: String,
    data_dir: PathBuf,
    remove_dir: bool,
    token: String,
    tls: Arc<rustls::ClientConfig>,
}

impl Server {
    async fn start(data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::start_with(data_dir, &["--no-node"]).await
    }

    async fn start_with(data_dir: Option<PathBuf>, extra: &[&str]) -> anyhow::Result<Self> {
        let remove_dir = data_dir.is_none();
        let data_dir = data_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("wasmkube-bench-{}", std::process::id())));
        let exe = std::env::current_exe().context("locating the wasmkube binary")?;
        let mut child = tokio::process::Command::new(exe)
            .args(["up", "--api-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0", "--dns-addr", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .args(extra)
            .env("WASMKUBE_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting wasmkube up")?;
        let stdout = child.stdout.take().context("server stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if line.contains("wasmkube ready") {
                    return Ok::<_, std::io::Error>(Some(line));
                }
            }
            Ok(None)
        })
        .await
        .context("server did not get ready within 60 s")??
        .context("server exited before it was ready")?;
        let addr = ready.split_whitespace().find_map(|w| w.strip_prefix("https://")).context("no API URL in the ready line")?.to_string();
        let after = |word: &str| ready.split_whitespace().skip_while(|w| *w != word).nth(1).map(str::to_owned).with_context(|| format!("no {word} in the ready line"));
        let (registry, dns) = (after("registry")?, after("dns")?);
        let token = std::fs::read_to_string(data_dir.join("pki/admin.token"))?.trim().to_string();
        let ca = std::fs::read(data_dir.join("pki/ca.crt"))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&ca) {
            roots.add(cert?)?;
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self { child, addr, registry, dns, data_dir, remove_dir, token, tls: Arc::new(tls) })
    }

    fn rss_mib(&self) -> f64 {
        let Some(pid) = self.child.id() else { return 0.0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)).and_then(|kb| kb.parse::<f64>().ok()))
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    }

    fn store_mib(&self) -> f64 {
        std::fs::metadata(self.data_dir.join("store.redb")).map(|m| m.len() as f64 / (1024.0 * 1024.0)).unwrap_or(0.0)
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        let tcp = tokio::net::TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let host = self.addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.addr).to_string();
        let name = rustls::pki_types::ServerName::try_from(host)?;
        let tls = tokio_rustls::TlsConnector::from(self.tls.clone()).connect(name, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        Ok(Client { sender, auth: format!("Bearer {}", self.token), latencies: Vec::new() })
    }

    async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        }
        let _ = tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await;
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

struct Client {
    sender: SendRequest<Full<Bytes>>,
    auth: String,
    latencies: Vec<Duration>,
}

/// One request of a phase.
#[derive(Clone)]
struct Op {
    method: hyper::Method,
    path: String,
    content_type: &'static str,
    body: Bytes,
    expect: u16,
}

impl Client {
    async fn send(&mut self, op: &Op) -> anyhow::Result<Bytes> {
        let req = hyper::Request::builder()
            .method(op.method.clone())
            .uri(&op.path)
            .header("host", "127.0.0.1")
            .header("authorization", &self.auth)
            .header("content-type", op.content_type)
            .header("accept", "application/json")
            .body(Full::new(op.body.clone()))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != op.expect {
            bail!("{} {} answered {status}, not {}: {}", op.method, op.path, op.expect, String::from_utf8_lossy(&body[..body.len().min(300)]));
        }
        Ok(body)
    }
}

struct Row {
    phase: String,
    in_store: usize,
    ops: usize,
    per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Run `ops` spread over all clients; every client sends its share one by one.
async fn phase(name: &str, in_store: usize, clients: &mut Vec<Client>, ops: Vec<Op>) -> anyhow::Result<Row> {
    let n = clients.len().max(1);
    let mut shares: Vec<Vec<Op>> = vec![Vec::new(); n];
    let count = ops.len();
    for (i, op) in ops.into_iter().enumerate() {
        shares[i % n].push(op);
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (mut client, share) in clients.drain(..).zip(shares) {
        tasks.push(tokio::spawn(async move {
            client.latencies.clear();
            for op in &share {
                let t = Instant::now();
                client.send(op).await?;
                client.latencies.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(client)
        }));
    }
    let mut all = Vec::with_capacity(count);
    for t in tasks {
        let client = t.await??;
        all.extend_from_slice(&client.latencies);
        clients.push(client);
    }
    let wall = start.elapsed();
    all.sort();
    let pct = |p: f64| all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1))).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    let row = Row { phase: name.into(), in_store, ops: count, per_sec: count as f64 / wall.as_secs_f64(), p50_ms: pct(0.50), p99_ms: pct(0.99) };
    eprintln!("{:<28} {:>8} ops {:>9.0}/s p50 {:>7.2} ms p99 {:>7.2} ms", row.phase, row.ops, row.per_sec, row.p50_ms, row.p99_ms);
    Ok(row)
}

fn configmap(name: &str, i: usize) -> Bytes {
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"bench": "api"}},
        "data": {"index": i.to_string(), "payload": "x".repeat(80)},
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

fn op(method: hyper::Method, path: String, content_type: &'static str, body: Bytes, expect: u16) -> Op {
    Op { method, path, content_type, body, expect }
}

/// Full listings, each paging through the namespace with `limit=500`.
async fn paged_lists(name: &str, in_store: usize, clients: &mut [Client], ns: &str, listings: usize) -> anyhow::Result<Row> {
    let mut times = Vec::new();
    let start = Instant::now();
    let client = clients.first_mut().context("no client")?;
    for _ in 0..listings {
        let t = Instant::now();
        let mut cont = String::new();
        loop {
            let path = if cont.is_empty() {
                format!("/api/v1/namespaces/{ns}/configmaps?limit=500")
            } else {
                format!("/api/v1/namespaces/{ns}/configmaps?limit=500&continue={cont}")
            };
            let body = client.send(&op(hyper::Method::GET, path, "application/json", Bytes::new(), 200)).await?;
            let list: serde_json::Value = serde_json::from_slice(&body)?;
            match list.pointer("/metadata/continue").and_then(|c| c.as_str()) {
                Some(c) if !c.is_empty() => cont = c.to_string(),
                _ => break,
            }
        }
        times.push(t.elapsed());
    }
    let wall = start.elapsed();
    times.sort();
    let pct = |p: f64| times.get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1))).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    let row = Row { phase: name.into(), in_store, ops: listings, per_sec: listings as f64 / wall.as_secs_f64(), p50_ms: pct(0.5), p99_ms: pct(0.99) };
    eprintln!("{:<28} {:>8} ops {:>9.1}/s p50 {:>7.2} ms p99 {:>7.2} ms", row.phase, row.ops, row.per_sec, row.p50_ms, row.p99_ms);
    Ok(row)
}

async fn api(args: ApiArgs) -> anyhow::Result<()> {
    let server = Server::start(args.data_dir.clone()).await?;
    let result = api_phases(&server, &args).await;
    let (rss, store) = (server.rss_mib(), server.store_mib());
    server.stop().await;
    let (rows, notes) = result?;
    let mut notes = notes;
    notes.push(format!("- at the end: store file {store:.1} MiB, server RSS {rss:.1} MiB"));
    print_table(&rows, &notes)?;
    Ok(())
}

/// The results as the markdown table docs/benchmarks.md keeps, then the notes.
fn print_table(rows: &[Row], notes: &[String]) -> std::io::Result<()> {
    outln!("| phase | objects in store | ops | ops/s | p50 ms | p99 ms |")?;
    outln!("|---|---:|---:|---:|---:|---:|")?;
    for r in rows {
        outln!("| {} | {} | {} | {:.0} | {:.2} | {:.2} |", r.phase, r.in_store, r.ops, r.per_sec, r.p50_ms, r.p99_ms)?;
    }
    outln!()?;
    for n in notes {
        outln!("{n}")?;
    }
    Ok(())
}

async fn api_phases(server: &Server, args: &ApiArgs) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    use hyper::Method;
    let mut clients = Vec::new();
    for _ in 0..args.clients.max(1) {
        clients.push(server.connect().await?);
    }
    let n = args.objects;
    let base = "/api/v1/namespaces/default/configmaps";
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let creates = (0..n).map(|i| op(Method::POST, base.into(), "application/json", configmap(&format!("bench-{i}"), i), 201)).collect();
    rows.push(phase("create", n, &mut clients, creates).await?);
    let gets = (0..n).map(|i| op(Method::GET, format!("{base}/bench-{i}"), "application/json", Bytes::new(), 200)).collect();
    rows.push(phase("get", n, &mut clients, gets).await?);
    rows.push(paged_lists("list (all, pages of 500)", n, &mut clients, "default", 20).await?);
    let full = (0..5).map(|_| op(Method::GET, base.into(), "application/json", Bytes::new(), 200)).collect();
    // One client: a full listing is a single large response.
    let mut one = vec![clients.remove(0)];
    rows.push(phase("list (all, one response)", n, &mut one, full).await?);
    clients.append(&mut one);
    let patches = (0..n).map(|i| op(Method::PATCH, format!("{base}/bench-{i}"), "application/merge-patch+json", Bytes::from(format!("{{\"data\":{{\"n\":\"{i}\"}}}}")), 200)).collect();
    rows.push(phase("patch (merge)", n, &mut clients, patches).await?);
    notes.push(format!("- after the main run: store file {:.1} MiB, server RSS {:.1} MiB", server.store_mib(), server.rss_mib()));

    if args.scale_objects > n {
        const NAMESPACES: usize = 50;
        let ns_ops = (0..NAMESPACES)
            .map(|i| op(Method::POST, "/api/v1/namespaces".into(), "application/json", Bytes::from(format!("{{\"metadata\":{{\"name\":\"bench-{i}\"}}}}")), 201))
            .collect();
        phase("create namespaces", n, &mut clients, ns_ops).await?;
        let extra = args.scale_objects - n;
        let fill = (0..extra)
            .map(|i| op(Method::POST, format!("/api/v1/namespaces/bench-{}/configmaps", i % NAMESPACES), "application/json", configmap(&format!("scale-{i}"), i), 201))
            .collect();
        let total = args.scale_objects;
        rows.push(phase("fill (create)", total, &mut clients, fill).await?);
        let sample = 10_000.min(extra);
        let gets = (0..sample).map(|i| op(Method::GET, format!("/api/v1/namespaces/bench-{}/configmaps/scale-{i}", i % NAMESPACES), "application/json", Bytes::new(), 200)).collect();
        rows.push(phase("get at scale", total, &mut clients, gets).await?);
        rows.push(paged_lists("list one namespace at scale", total, &mut clients, "bench-0", 20).await?);
        let patches = (0..sample)
            .map(|i| op(Method::PATCH, format!("/api/v1/namespaces/bench-{}/configmaps/scale-{i}", i % NAMESPACES), "application/merge-patch+json", Bytes::from(format!("{{\"data\":{{\"n\":\"{i}\"}}}}")), 200))
            .collect();
        rows.push(phase("patch at scale", total, &mut clients, patches).await?);
        notes.push(format!("- after the scale run: store file {:.1} MiB, server RSS {:.1} MiB", server.store_mib(), server.rss_mib()));
    }
    Ok((rows, notes))
}
