//! `wasmkube bench registry`: blob push and pull throughput and latency of the embedded
//! registry against Debian's CNCF distribution (`docker-registry`), side by side in one run.
//!
//! Both registries run as child processes on loopback with their own fresh storage; one
//! keep-alive HTTP/1.1 client pushes (POST + PUT `?digest=`, the monolithic upload every
//! client uses) and then pulls each blob back, one request at a time.

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use sha2::Digest as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;

#[derive(clap::Args)]
pub struct RegistryArgs {
    /// How many blobs of 1 KiB, 1 MiB and 100 MiB to push and pull
    #[arg(long, value_delimiter = ',', default_value = "500,100,5")]
    counts: Vec<usize>,
    /// Skip the docker-registry baseline
    #[arg(long)]
    no_baseline: bool,
}

const SIZES: [(&str, usize); 3] = [("1 KiB", 1 << 10), ("1 MiB", 1 << 20), ("100 MiB", 100 << 20)];

struct Target {
    name: &'static str,
    child: tokio::process::Child,
    addr: String,
    dir: PathBuf,
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch(tag: &str) -> PathBuf {
    std::env::temp_dir().join(format!("wasmkube-bench-{tag}-{}", std::process::id()))
}

async fn start_wasmkube() -> anyhow::Result<Target> {
    let dir = scratch("registry");
    let exe = std::env::current_exe().context("locating the wasmkube binary")?;
    let mut child = tokio::process::Command::new(exe)
        .args(["registry", "--addr", "127.0.0.1:0", "--data-dir"])
        .arg(&dir)
        .env("WASMKUBE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting wasmkube registry")?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.context("registry did not start")??.context("registry exited")?;
    let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http://")).context("no address in the ready line")?.to_owned();
    Ok(Target { name: "wasmkube", child, addr, dir })
}

async fn start_distribution() -> anyhow::Result<Target> {
    let dir = scratch("distribution");
    std::fs::create_dir_all(&dir)?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let addr = format!("127.0.0.1:{port}");
    let config = format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n", dir.join("data").display());
    std::fs::write(dir.join("config.yml"), config)?;
    let child = tokio::process::Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting docker-registry (Debian package docker-registry) for the baseline; pass --no-baseline to skip it")?;
    let target = Target { name: "distribution 2.8", child, addr, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Client::connect(&target.addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("docker-registry did not listen on {}", target.addr);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(target)
}

struct Client {
    sender: SendRequest<Full<Bytes>>,
    host: String,
}

impl Client {
    async fn connect(addr: &str) -> anyhow::Result<Self> {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await?;
        tokio::spawn(conn);
        Ok(Self { sender, host: addr.to_owned() })
    }

    async fn send(&mut self, method: hyper::Method, path: &str, body: Bytes, expect: u16) -> anyhow::Result<(hyper::HeaderMap, usize)> {
        let req = hyper::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", &self.host)
            .header("content-type", "application/octet-stream")
            .header("content-length", body.len())
            .body(Full::new(body))?;
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        // Count the body without keeping it: 100 MiB pulls should not measure a copy.
        let mut body = resp.into_body();
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                n += data.len();
            }
        }
        if status != expect {
            bail!("{method} {path}: expected {expect}, got {status}");
        }
        Ok((headers, n))
    }

    async fn push(&mut self, blob: Bytes, digest: &str) -> anyhow::Result<()> {
        let (headers, _) = self.send(hyper::Method::POST, "/v2/bench/blobs/uploads/", Bytes::new(), 202).await?;
        let location = headers.get("location").and_then(|v| v.to_str().ok()).context("upload without a Location")?;
        // distribution answers an absolute URL, wasmkube a path: keep the path and query.
        let path = match location.find("/v2/") {
            Some(i) => &location[i..],
            None => location,
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let put = format!("{path}{sep}digest={digest}");
        self.send(hyper::Method::PUT, &put, blob, 201).await?;
        Ok(())
    }
}

struct Measured {
    push_mbs: f64,
    push_p50: f64,
    push_p99: f64,
    pull_mbs: f64,
    pull_p50: f64,
    pull_p99: f64,
}

fn blobs(size: usize, count: usize, seed: u64) -> Vec<(Bytes, String)> {
    let mut x = seed | 1;
    (0..count)
        .map(|_| {
            let bytes: Vec<u8> = (0..size)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let digest = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&bytes)));
            (Bytes::from(bytes), digest)
        })
        .collect()
}

/// (p50, p99) in milliseconds.
fn percentiles(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let at = |q: f64| v.get(((v.len() as f64 * q) as usize).min(v.len().saturating_sub(1))).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
    (at(0.5), at(0.99))
}

async fn measure(target: &Target, blobs: &[(Bytes, String)]) -> anyhow::Result<Measured> {
    let mut client = Client::connect(&target.addr).await?;
    let total: usize = blobs.iter().map(|(b, _)| b.len()).sum();
    let mb = total as f64 / (1024.0 * 1024.0);
    let mut push = Vec::new();
    let start = Instant::now();
    for (blob, digest) in blobs {
        let t = Instant::now();
        client.push(blob.clone(), digest).await.with_context(|| format!("pushing to {}", target.name))?;
        push.push(t.elapsed());
    }
    let push_secs = start.elapsed().as_secs_f64();
    let mut pull = Vec::new();
    let start = Instant::now();
    for (blob, digest) in blobs {
        let t = Instant::now();
        let (_, n) = client.send(hyper::Method::GET, &format!("/v2/bench/blobs/{digest}"), Bytes::new(), 200).await?;
        if n != blob.len() {
            bail!("{} served {n} bytes of a {}-byte blob", target.name, blob.len());
        }
        pull.push(t.elapsed());
    }
    let pull_secs = start.elapsed().as_secs_f64();
    let ((push_p50, push_p99), (pull_p50, pull_p99)) = (percentiles(push), percentiles(pull));
    Ok(Measured { push_mbs: mb / push_secs, push_p50, push_p99, pull_mbs: mb / pull_secs, pull_p50, pull_p99 })
}

pub async fn run(args: RegistryArgs) -> anyhow::Result<()> {
    if args.counts.len() != SIZES.len() {
        bail!("--counts takes {} numbers (for 1 KiB, 1 MiB and 100 MiB)", SIZES.len());
    }
    let mut targets = vec![start_wasmkube().await?];
    if !args.no_baseline {
        targets.push(start_distribution().await?);
    }
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for (i, ((label, size), count)) in SIZES.iter().zip(&args.counts).enumerate() {
        // Fresh random blobs per registry so neither sees content the other already has.
        let mut results = Vec::new();
        for (t, target) in targets.iter().enumerate() {
            let data = blobs(*size, *count, 1 + (i * 10 + t) as u64);
            let m = measure(target, &data).await?;
            rows.push(format!(
                "| {label} | {} | {count} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
                target.name, m.push_mbs, m.push_p50, m.push_p99, m.pull_mbs, m.pull_p50, m.pull_p99
            ));
            results.push(m);
        }
        if let [ours, theirs] = results.as_slice() {
            ratios.push(format!("| {label} | {:.2}x | {:.2}x |", ours.push_mbs / theirs.push_mbs, ours.pull_mbs / theirs.pull_mbs));
        }
    }
    outln!("| blob | registry | blobs | push MB/s | push p50 ms | push p99 ms | pull MB/s | pull p50 ms | pull p99 ms |")?;
    outln!("|---|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for r in &rows {
        outln!("{r}")?;
    }
    if !ratios.is_empty() {
        outln!("\n| blob | push: wasmkube / distribution | pull: wasmkube / distribution |")?;
        outln!("|---|---:|---:|")?;
        for r in &ratios {
            outln!("{r}")?;
        }
    }
    Ok(())
}
