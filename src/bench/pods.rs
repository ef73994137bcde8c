//! `wasmkube bench pods`: how fast pods start, how fast the hello HTTP pod serves, and what
//! an idle HTTP pod costs, against `wasmtime serve` and a native Rust server in the same run.

use super::{op, Server};
use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::BodyExt;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct PodsArgs {
    /// Pods created for the start-up measurement
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    /// Concurrent API clients creating them
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// The WAGI hello module
    #[arg(long, default_value = "wasm-examples/hello-wagi.wasm")]
    wagi_module: PathBuf,
    /// The wasi:http hello component (also served by `wasmtime serve` when it is on PATH)
    #[arg(long, default_value = "wasm-examples/hello-http.wasm")]
    http_component: PathBuf,
    /// Seconds of load per HTTP target
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// wrk connections
    #[arg(long, default_value_t = 16)]
    connections: u32,
}

pub async fn run(args: PodsArgs) -> anyhow::Result<()> {
    which("wrk").context("wrk is needed (apt-get install wrk)")?;
    let server = Server::start_with(None, &["--max-pods", &(args.pods + 10).to_string()]).await?;
    let result = measure(&server, &args).await;
    server.stop().await;
    let (start_rows, http_rows, notes) = result?;
    outln!("| pod start (create → Running, seen by watch) | pods | wall s | pods/s | p50 ms | p99 ms |")?;
    outln!("|---|---:|---:|---:|---:|---:|")?;
    for r in &start_rows {
        outln!("| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} |", r.0, r.1, r.2, r.1 as f64 / r.2, r.3, r.4)?;
    }
    outln!()?;
    outln!("| HTTP hello (wrk -t2 -c{} {}s) | requests/s | p50 ms | p99 ms |", args.connections, args.seconds)?;
    outln!("|---|---:|---:|---:|")?;
    for r in &http_rows {
        outln!("| {} | {:.0} | {:.2} | {:.2} |", r.0, r.1, r.2, r.3)?;
    }
    outln!()?;
    for n in notes {
        outln!("{n}")?;
    }
    Ok(())
}

type StartRow = (String, usize, f64, f64, f64);

/// How hard `wrk` pushes: connections, for seconds.
#[derive(Clone, Copy)]
pub(super) struct Load {
    pub connections: u32,
    pub seconds: u32,
}
type HttpRow = (String, f64, f64, f64);

async fn measure(server: &Server, args: &PodsArgs) -> anyhow::Result<(Vec<StartRow>, Vec<HttpRow>, Vec<String>)> {
    let load = Load { connections: args.connections, seconds: args.seconds };
    let mut notes = Vec::new();
    let wagi_image = push(server, &args.wagi_module, "bench/hello-wagi:v1").await?;
    let has_component = args.http_component.exists();
    let http_image = if has_component { Some(push(server, &args.http_component, "bench/hello-http:v1").await?) } else { None };

    // Warm up: one pod pulls the image and compiles the module, then goes.
    let mut client = server.connect().await?;
    create_pod(&mut client, "warmup", &wagi_image, true).await?;
    wait_running(server, &["warmup"]).await?;
    let warm_ip = pod_ip(&mut client, "warmup").await?;
    let wagi_rate = wrk(&format!("http://{warm_ip}:8080/"), load).await?;
    let mut http_rows = vec![("wasmkube, WAGI module (fresh instance per request)".to_owned(), wagi_rate.0, wagi_rate.1, wagi_rate.2)];
    if let Some(image) = &http_image {
        create_pod(&mut client, "warmup-http", image, false).await?;
        wait_running(server, &["warmup-http"]).await?;
        let ip = pod_ip(&mut client, "warmup-http").await?;
        let r = wrk(&format!("http://{ip}:8080/"), load).await?;
        http_rows.push(("wasmkube, wasi:http component (fresh instance per request)".into(), r.0, r.1, r.2));
        delete_pod(&mut client, "warmup-http").await?;
        if which("wasmtime").is_some() {
            let r = wasmtime_serve(&args.http_component, load).await?;
            http_rows.push(("wasmtime serve, same component (-O pooling-allocator)".into(), r.0, r.1, r.2));
        } else {
            notes.push("- `wasmtime` is not on PATH: no `wasmtime serve` row (`cargo install wasmtime-cli`)".into());
        }
    }
    let native = native_hello(load).await?;
    http_rows.push(("native Rust (hyper) hello server".into(), native.0, native.1, native.2));
    delete_pod(&mut client, "warmup").await?;

    let rss_before = server.rss_mib();
    let names: Vec<String> = (0..args.pods).map(|i| format!("hello-{i}")).collect();
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watcher = tokio::spawn(watch_running(server.connect().await?, names.len()));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..args.clients.max(1) {
        let mut c = server.connect().await?;
        let mine: Vec<String> = names.iter().skip(k).step_by(args.clients.max(1)).cloned().collect();
        let (image, created) = (wagi_image.clone(), created.clone());
        tasks.push(tokio::spawn(async move {
            for name in mine {
                created.lock().unwrap_or_else(|e| e.into_inner()).insert(name.clone(), Instant::now());
                create_pod(&mut c, &name, &image, true).await?;
            }
            Ok::<_, anyhow::Error>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let running = tokio::time::timeout(Duration::from_secs(600), watcher).await.context("pods did not all reach Running within 10 minutes")???;
    let wall = start.elapsed().as_secs_f64();
    let created = created.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut latencies: Vec<f64> = running.iter().filter_map(|(name, at)| Some(at.duration_since(*created.get(name)?).as_secs_f64() * 1000.0)).collect();
    latencies.sort_by(f64::total_cmp);
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0.0);
    let start_rows = vec![(format!("{} WAGI hello pods, image cached", args.pods), latencies.len(), wall, pct(0.5), pct(0.99))];
    // Let the status writes settle before reading memory.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_after = server.rss_mib();
    notes.push(format!(
        "- idle memory: wasmkube RSS {rss_before:.0} MiB before, {rss_after:.0} MiB with {} Running HTTP pods: {:.1} KiB per pod (control plane, store and node in one process)",
        args.pods,
        (rss_after - rss_before) * 1024.0 / args.pods as f64
    ));
    Ok((start_rows, http_rows, notes))
}

pub(super) fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| std::env::split_paths(&p).map(|d| d.join(tool)).find(|p| p.is_file()))
}

pub(super) async fn push(server: &Server, module: &std::path::Path, repo: &str) -> anyhow::Result<String> {
    let image = format!("{}/{repo}", server.registry);
    let exe = std::env::current_exe()?;
    let out = tokio::process::Command::new(exe).arg("push").arg(module).arg(&image).output().await?;
    if !out.status.success() {
        bail!("pushing {}: {}", module.display(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(image)
}

async fn create_pod(c: &mut super::Client, name: &str, image: &str, wagi: bool) -> anyhow::Result<()> {
    let annotations = if wagi { serde_json::json!({"wasmkube.io/executor": "wagi"}) } else { serde_json::json!({}) };
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "pods"}, "annotations": annotations},
        "spec": {"containers": [{"name": "hello", "image": image, "ports": [{"containerPort": 8080}]}]},
    });
    c.send(&op(hyper::Method::POST, "/api/v1/namespaces/default/pods".into(), "application/json", Bytes::from(serde_json::to_vec(&pod)?), 201)).await?;
    Ok(())
}

async fn delete_pod(c: &mut super::Client, name: &str) -> anyhow::Result<()> {
    c.send(&op(hyper::Method::DELETE, format!("/api/v1/namespaces/default/pods/{name}?gracePeriodSeconds=0"), "application/json", Bytes::new(), 200)).await?;
    Ok(())
}

pub(super) async fn pod_ip(c: &mut super::Client, name: &str) -> anyhow::Result<String> {
    let body = c.send(&op(hyper::Method::GET, format!("/api/v1/namespaces/default/pods/{name}"), "application/json", Bytes::new(), 200)).await?;
    let pod: serde_json::Value = serde_json::from_slice(&body)?;
    pod.pointer("/status/podIP").and_then(|v| v.as_str()).map(str::to_owned).context("pod has no IP")
}

pub(super) async fn wait_running(server: &Server, names: &[&str]) -> anyhow::Result<()> {
    let mut c = server.connect().await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    for name in names {
        loop {
            let body = c.send(&op(hyper::Method::GET, format!("/api/v1/namespaces/default/pods/{name}"), "application/json", Bytes::new(), 200)).await?;
            let pod: serde_json::Value = serde_json::from_slice(&body)?;
            let ready = pod.pointer("/status/conditions").and_then(|c| c.as_array()).is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            if ready {
                break;
            }
            if Instant::now() > deadline {
                bail!("pod {name} is not Ready: {}", pod["status"]);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Follows a pod watch until `count` bench pods have been seen Running; returns when each was.
async fn watch_running(mut c: super::Client, count: usize) -> anyhow::Result<HashMap<String, Instant>> {
    let req = hyper::Request::builder()
        .uri("/api/v1/namespaces/default/pods?watch=true&labelSelector=bench%3Dpods")
        .header("host", "127.0.0.1")
        .header("authorization", &c.auth)
        .body(http_body_util::Full::new(Bytes::new()))?;
    c.sender.ready().await?;
    let resp = c.sender.send_request(req).await?;
    let mut body = resp.into_body();
    let mut seen: HashMap<String, Instant> = HashMap::new();
    let mut buf = Vec::new();
    while seen.len() < count {
        let Some(frame) = body.frame().await else { bail!("the watch ended early") };
        let Ok(data) = frame?.into_data() else { continue };
        let now = Instant::now();
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            let obj = &event["object"];
            let name = obj.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default();
            if obj.pointer("/status/phase").and_then(|v| v.as_str()) == Some("Running") && name.starts_with("hello-") {
                seen.entry(name.to_owned()).or_insert(now);
            }
        }
    }
    Ok(seen)
}

/// Requests/s, p50 ms and p99 ms from `wrk --latency`.
pub(super) async fn wrk(url: &str, load: Load) -> anyhow::Result<(f64, f64, f64)> {
    let out = tokio::process::Command::new("wrk")
        .args(["-t2", &format!("-c{}", load.connections), &format!("-d{}s", load.seconds), "--latency", url])
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rate = text.lines().find_map(|l| l.trim().strip_prefix("Requests/sec:")).and_then(|v| v.trim().parse::<f64>().ok()).with_context(|| format!("wrk output without a rate:\n{text}"))?;
    if text.contains("Non-2xx or 3xx responses") || text.contains("Socket errors") {
        eprintln!("wrk against {url} saw errors:\n{text}");
    }
    let latency = |pct: &str| {
        text.lines().find_map(|l| l.trim().strip_prefix(pct)).map(|v| v.trim()).and_then(|v| {
            let split = v.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(v.len());
            let n: f64 = v[..split].parse().ok()?;
            Some(match &v[split..] {
                "us" => n / 1000.0,
                "ms" => n,
                "s" => n * 1000.0,
                _ => n,
            })
        })
    };
    let (p50, p99) = (latency("50%").unwrap_or(0.0), latency("99%").unwrap_or(0.0));
    eprintln!("{url}: {rate:.0} requests/s, p50 {p50:.2} ms, p99 {p99:.2} ms");
    Ok((rate, p50, p99))
}

/// The same load against `wasmtime serve` running the component.
async fn wasmtime_serve(component: &std::path::Path, load: Load) -> anyhow::Result<(f64, f64, f64)> {
    let port = free_port()?;
    let mut child = tokio::process::Command::new("wasmtime")
        .args(["serve", "-O", "pooling-allocator", "--addr", &format!("127.0.0.1:{port}")])
        .arg(component)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("starting wasmtime serve")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        if Instant::now() > deadline {
            bail!("wasmtime serve did not listen");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = wrk(&format!("http://127.0.0.1:{port}/"), load).await;
    let _ = child.kill().await;
    r
}

pub(super) fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// The floor: a native hyper server answering the same text, in this process.
pub(super) async fn native_hello(load: Load) -> anyhow::Result<(f64, f64, f64)> {
    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            tokio::spawn(async move {
                let service = service_fn(|_req| async { Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(Bytes::from_static(b"hello from native\n")))) });
                let _ = http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service).await;
            });
        }
    });
    let r = wrk(&format!("http://127.0.0.1:{port}/"), load).await;
    server.abort();
    r
}
