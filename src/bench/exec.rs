//! `wasmkube bench exec`: exec round trips over the API server's WebSocket (a built-in
//! no-op and a fresh instance of the container's module), `kubectl exec` as a user runs it,
//! and `kubectl port-forward` throughput beside a direct connection to the pod's IP.

use super::pods::{pod_ip, push, wait_running, which, wrk, Load};
use super::{op, Server};
use anyhow::{bail, Context};
use bytes::Bytes;
use futures::StreamExt;
use hyper::Method;
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// The command module the exec pod runs (`job sleep 3600`)
    #[arg(long, default_value = "wasm-examples/job.wasm")]
    job_module: PathBuf,
    /// The WAGI hello module the port-forward pod serves
    #[arg(long, default_value = "wasm-examples/hello-wagi.wasm")]
    wagi_module: PathBuf,
    /// Exec round trips per command
    #[arg(long, default_value_t = 300)]
    execs: usize,
    /// Seconds of wrk load per port-forward target
    #[arg(long, default_value_t = 10)]
    seconds: u32,
    /// wrk connections
    #[arg(long, default_value_t = 8)]
    connections: u32,
}

pub async fn run(args: ExecArgs) -> anyhow::Result<()> {
    which("wrk").context("wrk is needed (apt-get install wrk)")?;
    which("kubectl").context("kubectl is needed")?;
    let server = Server::start_with(None, &[]).await?;
    let result = measure(&server, &args).await;
    server.stop().await;
    let (execs, forwards, bulk) = result?;
    outln!("| exec round trip ({} sequential) | p50 ms | p99 ms | execs/s |", args.execs)?;
    outln!("|---|---:|---:|---:|")?;
    for (name, p50, p99, rate) in execs {
        outln!("| {name} | {p50:.2} | {p99:.2} | {rate:.0} |")?;
    }
    outln!()?;
    outln!("| HTTP hello (wrk -t2 -c{} {}s) | requests/s | p50 ms | p99 ms |", args.connections, args.seconds)?;
    outln!("|---|---:|---:|---:|")?;
    for (name, rate, p50, p99) in forwards {
        outln!("| {name} | {rate:.0} | {p50:.2} | {p99:.2} |")?;
    }
    outln!()?;
    outln!("| 8 MiB POST echoed back (16 MiB moved), 10 times | MB/s |")?;
    outln!("|---|---:|")?;
    for (name, mbs) in bulk {
        outln!("| {name} | {mbs:.1} |")?;
    }
    Ok(())
}

type Rows = (Vec<(String, f64, f64, f64)>, Vec<(String, f64, f64, f64)>, Vec<(String, f64)>);

async fn measure(server: &Server, args: &ExecArgs) -> anyhow::Result<Rows> {
    let job = push(server, &args.job_module, "bench/job:v1").await?;
    let wagi = push(server, &args.wagi_module, "bench/hello-wagi:v1").await?;
    let mut c = server.connect().await?;
    let pods = [
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "box"}, "spec": {"containers": [{"name": "job", "image": job, "args": ["sleep", "3600"]}]}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "annotations": {"wasmkube.io/executor": "wagi"}},
            "spec": {"containers": [{"name": "web", "image": wagi, "ports": [{"containerPort": 8080}]}]}}),
    ];
    for pod in &pods {
        c.send(&op(Method::POST, "/api/v1/namespaces/default/pods".into(), "application/json", Bytes::from(serde_json::to_vec(pod)?), 201)).await?;
    }
    wait_running(server, &["box", "web"]).await?;

    let mut execs = Vec::new();
    for (name, command) in [("built-in no-op (`true`)", vec!["true"]), ("fresh module instance (`job 0`)", vec!["job", "0"])] {
        exec_once(server, &command).await?;
        let mut times = Vec::with_capacity(args.execs);
        let start = Instant::now();
        for _ in 0..args.execs {
            let t = Instant::now();
            exec_once(server, &command).await?;
            times.push(t.elapsed());
        }
        let rate = args.execs as f64 / start.elapsed().as_secs_f64();
        let (p50, p99) = percentiles(&mut times);
        execs.push((format!("WebSocket client, {name}"), p50, p99, rate));
    }
    let kubeconfig = server.data_dir.join("kubeconfig");
    let mut times = Vec::new();
    let start = Instant::now();
    for _ in 0..20 {
        let t = Instant::now();
        let out = tokio::process::Command::new("kubectl").env("KUBECONFIG", &kubeconfig).args(["exec", "box", "--", "true"]).output().await?;
        if !out.status.success() {
            bail!("kubectl exec failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        times.push(t.elapsed());
    }
    let rate = 20.0 / start.elapsed().as_secs_f64();
    let (p50, p99) = percentiles(&mut times);
    execs.push(("`kubectl exec box -- true` (20 runs, kubectl start-up included)".into(), p50, p99, rate));

    let ip = pod_ip(&mut c, "web").await?;
    let (mut forward, local) = port_forward(&kubeconfig).await?;
    let load = Load { connections: args.connections, seconds: args.seconds };
    let mut forwards = Vec::new();
    let r = wrk(&format!("http://{ip}:8080/"), load).await?;
    forwards.push(("direct to the pod IP".to_owned(), r.0, r.1, r.2));
    let load = Load { connections: args.connections, seconds: args.seconds };
    let r = wrk(&format!("http://127.0.0.1:{local}/"), load).await?;
    forwards.push(("through `kubectl port-forward pod/web` (SPDY in WebSocket)".to_owned(), r.0, r.1, r.2));
    let bulk = vec![("direct to the pod IP".to_owned(), echo_rate(&format!("{ip}:8080")).await?), ("through `kubectl port-forward`".to_owned(), echo_rate(&format!("127.0.0.1:{local}")).await?)];
    let _ = forward.kill().await;
    Ok((execs, forwards, bulk))
}

/// Milliseconds at the 50th and 99th percentiles.
fn percentiles(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    let at = |q: f64| times.get(((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1))).map_or(0.0, |d| d.as_secs_f64() * 1000.0);
    (at(0.50), at(0.99))
}

/// One exec over a fresh TLS connection and WebSocket (v5), read to its Status.
async fn exec_once(server: &Server, command: &[&str]) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpStream::connect(&server.addr).await?;
    tcp.set_nodelay(true)?;
    let host = server.addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&server.addr).to_string();
    let name = rustls::pki_types::ServerName::try_from(host)?;
    let tls = tokio_rustls::TlsConnector::from(server.tls.clone()).connect(name, tcp).await?;
    let query: String = command.iter().map(|c| format!("command={c}&")).collect();
    let mut req = format!("wss://{}/api/v1/namespaces/default/pods/box/exec?{query}stdout=true&stderr=true", server.addr).into_client_request()?;
    req.headers_mut().insert("authorization", format!("Bearer {}", server.token).parse()?);
    req.headers_mut().insert("sec-websocket-protocol", "v5.channel.k8s.io".parse()?);
    let (mut ws, _) = tokio_tungstenite::client_async(req, tls).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Binary(b) = msg? {
            if b.first() == Some(&3) {
                if !b.ends_with(br#""status":"Success"}"#) {
                    bail!("exec {command:?} failed: {}", String::from_utf8_lossy(&b[1..]));
                }
                return Ok(());
            }
        }
    }
    bail!("exec {command:?} ended without a status")
}

/// `kubectl port-forward pod/web :8080`; returns it and its local port.
async fn port_forward(kubeconfig: &std::path::Path) -> anyhow::Result<(tokio::process::Child, u16)> {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("kubectl")
        .env("KUBECONFIG", kubeconfig)
        .args(["port-forward", "pod/web", ":8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().context("stdout")?).lines();
    let port = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(p) = line.strip_prefix("Forwarding from 127.0.0.1:").and_then(|r| r.split_whitespace().next()).and_then(|p| p.parse::<u16>().ok()) {
                return Ok::<_, anyhow::Error>(p);
            }
        }
        bail!("port-forward ended before forwarding")
    })
    .await
    .context("port-forward did not start in 30 s")??;
    // kubectl prints a line per connection: keep reading so it never blocks on stdout.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

/// MB/s of 8 MiB POSTs to `/echo` answered with the same bytes, ten in a row.
async fn echo_rate(addr: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = vec![b'x'; 8 << 20];
    let start = Instant::now();
    let mut moved = 0usize;
    for _ in 0..10 {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let head = format!("POST /echo HTTP/1.0\r\nHost: web\r\nContent-Length: {}\r\n\r\n", body.len());
        let (mut r, mut w) = s.split();
        let send = async {
            w.write_all(head.as_bytes()).await?;
            w.write_all(&body).await?;
            Ok::<_, std::io::Error>(())
        };
        let mut reply = Vec::with_capacity(body.len() + 1024);
        let recv = r.read_to_end(&mut reply);
        let (sent, read) = tokio::join!(send, recv);
        sent?;
        read?;
        if reply.len() < body.len() {
            bail!("{addr} echoed {} of {} bytes", reply.len(), body.len());
        }
        moved += body.len() + reply.len();
    }
    let mbs = moved as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64();
    eprintln!("{addr}: {mbs:.1} MB/s echoed");
    Ok(mbs)
}
