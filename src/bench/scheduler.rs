//! `wasmkube bench scheduler`: scheduling throughput on hollow nodes, and the API at scale.
//!
//! Hollow nodes are what kubemark and KWOK use: Node objects with a Lease, kept alive by
//! heartbeats, whose "kubelet" marks each pod bound to them Running and Ready without
//! running anything. The control plane (API server, scheduler, controllers) is the real
//! `wasmkube up --no-node`, a child process; the hollow nodes live in this process.

use super::{op, phase, Client, Row, Server};
use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Method;
use serde_json::json;
use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct SchedulerArgs {
    /// Hollow nodes registered
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Pods scheduled in the throughput run
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Pods in the cluster for the scale run, all scheduled (0 skips it)
    #[arg(long, default_value_t = 150_000)]
    scale_pods: usize,
    /// Concurrent API clients
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Data directory for the server [default: a fresh temporary directory, removed afterwards]
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// How often a hollow node renews its Lease (kubelet's 10 s would be 500 writes/s for
/// 5,000 nodes; the server's grace period is raised to match).
const HEARTBEAT: Duration = Duration::from_secs(60);
const HEARTBEAT_CLIENTS: usize = 16;
/// Hollow nodes share two cores with the control plane they load, so under the scale run
/// their renewals can fall minutes behind; node lifecycle is not what this measures, so no
/// node may be declared dead (and its pods evicted) during a run.
const GRACE: &str = "1h";

pub async fn run(args: SchedulerArgs) -> anyhow::Result<()> {
    let server = Server::start_with(args.data_dir.clone(), &["--no-node", "--node-monitor-grace-period", GRACE]).await?;
    let result = measure(&server, &args).await;
    server.stop().await;
    let (rows, notes) = result?;
    super::print_table(&rows, &notes)?;
    Ok(())
}

async fn clients(server: &Server, n: usize) -> anyhow::Result<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        v.push(server.connect().await?);
    }
    Ok(v)
}

fn node_name(i: usize) -> String {
    format!("hollow-{i:05}")
}

fn lease(name: &str) -> Bytes {
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now}});
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

fn pod(name: &str, ns: &str) -> Bytes {
    let body = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"bench": "scheduler"}},
        "spec": {"containers": [{"name": "c", "image": "hollow/none:v1", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}});
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

async fn measure(server: &Server, args: &SchedulerArgs) -> anyhow::Result<(Vec<Row>, Vec<String>)> {
    let mut rows = Vec::new();
    let mut notes = Vec::new();
    let mut cs = clients(server, args.clients).await?;

    // Register the hollow nodes: Node, its status, its Lease.
    let names: Vec<String> = (0..args.nodes).map(node_name).collect();
    let nodes: Vec<_> = names
        .iter()
        .map(|n| {
            let body = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": n, "labels": {"kubernetes.io/hostname": n, "kubernetes.io/os": "linux", "type": "hollow"}}});
            op(Method::POST, "/api/v1/nodes".into(), "application/json", Bytes::from(serde_json::to_vec(&body).unwrap_or_default()), 201)
        })
        .collect();
    rows.push(phase("register hollow nodes", 0, &mut cs, nodes).await?);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let status = json!({"status": {
        "capacity": {"cpu": "4", "memory": "16Gi", "pods": "110"},
        "allocatable": {"cpu": "4", "memory": "16Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "hollow", "lastHeartbeatTime": now, "lastTransitionTime": now}],
    }});
    let status = Bytes::from(serde_json::to_vec(&status)?);
    let statuses: Vec<_> = names.iter().map(|n| op(Method::PATCH, format!("/api/v1/nodes/{n}/status"), "application/merge-patch+json", status.clone(), 200)).collect();
    rows.push(phase("post hollow node status", args.nodes, &mut cs, statuses).await?);
    let leases: Vec<_> = names.iter().map(|n| op(Method::POST, "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases".into(), "application/json", lease(n), 201)).collect();
    rows.push(phase("create hollow node leases", args.nodes, &mut cs, leases).await?);
    let heartbeats = tokio::spawn(heartbeat(clients(server, HEARTBEAT_CLIENTS).await?, names.clone()));
    let kubelet = tokio::spawn(hollow_kubelet(server.connect().await?, server.connect().await?));

    // Throughput: create the pods as fast as the clients can, watch them get bound.
    let watch = tokio::spawn(watch_bound(server.connect().await?, "sched", args.pods));
    create_namespace(&mut cs[0], "sched").await?;
    let start = Instant::now();
    let creates: Vec<_> = (0..args.pods).map(|i| op(Method::POST, "/api/v1/namespaces/sched/pods".into(), "application/json", pod(&format!("p-{i:06}"), "sched"), 201)).collect();
    let create_row = phase("create pods (scheduler busy)", args.nodes, &mut cs, creates).await?;
    rows.push(create_row);
    let bound = tokio::time::timeout(Duration::from_secs(1800), watch).await.context("pods were not all bound within 30 min")???;
    let last = bound.values().max().copied().unwrap_or(start);
    let wall = last.duration_since(start).as_secs_f64();
    let mut lat: Vec<f64> = bound.values().map(|t| t.duration_since(start).as_secs_f64()).collect();
    lat.sort_by(f64::total_cmp);
    let spread = count_spread(&mut cs[0], "sched").await?;
    notes.push(format!(
        "Scheduling: {} pods on {} hollow nodes bound in {wall:.1} s from the first create: {:.0} pods/s (upstream's gate: 270 pods/s on this shape). \
         Bound by (s after start): p50 {:.1}, p99 {:.1}. Nodes used: {}, most pods on one node: {}.",
        args.pods,
        args.nodes,
        args.pods as f64 / wall,
        lat.get(lat.len() / 2).copied().unwrap_or(0.0),
        lat.get(lat.len() * 99 / 100).copied().unwrap_or(0.0),
        spread.0,
        spread.1,
    ));
    eprintln!("{}", notes.last().map(String::as_str).unwrap_or_default());

    // Scale: fill the cluster, then time the API.
    if args.scale_pods > args.pods {
        let extra = args.scale_pods - args.pods;
        create_namespace(&mut cs[0], "scale").await?;
        let watch = tokio::spawn(watch_bound(server.connect().await?, "scale", extra));
        let creates: Vec<_> = (0..extra).map(|i| op(Method::POST, "/api/v1/namespaces/scale/pods".into(), "application/json", pod(&format!("s-{i:06}"), "scale"), 201)).collect();
        rows.push(phase("create pods to scale", args.pods, &mut cs, creates).await?);
        tokio::time::timeout(Duration::from_secs(3600), watch).await.context("scale pods were not all bound within an hour")???;
        let total = args.scale_pods;
        let gets: Vec<_> = (0..10_000).map(|i| op(Method::GET, format!("/api/v1/namespaces/scale/pods/s-{:06}", i % extra), "application/json", Bytes::new(), 200)).collect();
        rows.push(phase("get pod at scale", total, &mut cs, gets).await?);
        let patch = Bytes::from_static(br#"{"metadata":{"labels":{"touched":"yes"}}}"#);
        let patches: Vec<_> = (0..10_000).map(|i| op(Method::PATCH, format!("/api/v1/namespaces/scale/pods/s-{:06}", i % extra), "application/merge-patch+json", patch.clone(), 200)).collect();
        rows.push(phase("patch pod at scale", total, &mut cs, patches).await?);
        let lists: Vec<_> = (0..200).map(|i| op(Method::GET, format!("/api/v1/pods?limit=500&fieldSelector=spec.nodeName%3D{}", node_name(i % args.nodes)), "application/json", Bytes::new(), 200)).collect();
        rows.push(phase("list a node's pods at scale", total, &mut cs, lists).await?);
        let node_gets: Vec<_> = (0..10_000).map(|i| op(Method::GET, format!("/api/v1/nodes/{}", node_name(i % args.nodes)), "application/json", Bytes::new(), 200)).collect();
        rows.push(phase("get node at scale", total, &mut cs, node_gets).await?);
        notes.push(format!("Scale run: {} nodes, {total} pods bound and Running: control plane RSS {:.0} MiB, store {:.0} MiB.", args.nodes, server.rss_mib(), server.store_mib()));
        eprintln!("{}", notes.last().map(String::as_str).unwrap_or_default());
    } else {
        notes.push(format!("After the run: control plane RSS {:.0} MiB, store {:.0} MiB.", server.rss_mib(), server.store_mib()));
    }
    heartbeats.abort();
    kubelet.abort();
    Ok((rows, notes))
}

async fn create_namespace(c: &mut Client, name: &str) -> anyhow::Result<()> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    c.send(&op(Method::POST, "/api/v1/namespaces".into(), "application/json", Bytes::from(serde_json::to_vec(&body)?), 201)).await?;
    Ok(())
}

/// Nodes that got pods, and the most pods on one node.
async fn count_spread(c: &mut Client, ns: &str) -> anyhow::Result<(usize, usize)> {
    let mut per_node: HashMap<String, usize> = HashMap::new();
    let mut cont = String::new();
    loop {
        let path = format!("/api/v1/namespaces/{ns}/pods?limit=500{}", if cont.is_empty() { String::new() } else { format!("&continue={cont}") });
        let body = c.send(&op(Method::GET, path, "application/json", Bytes::new(), 200)).await?;
        let list: serde_json::Value = serde_json::from_slice(&body)?;
        for p in list["items"].as_array().into_iter().flatten() {
            if let Some(n) = p.pointer("/spec/nodeName").and_then(|v| v.as_str()) {
                *per_node.entry(n.to_owned()).or_default() += 1;
            }
        }
        match list.pointer("/metadata/continue").and_then(|v| v.as_str()) {
            Some(c) if !c.is_empty() => cont = c.to_owned(),
            _ => break,
        }
    }
    Ok((per_node.len(), per_node.values().copied().max().unwrap_or(0)))
}

/// Lines of a watch response, as JSON events.
async fn watch_events(c: &mut Client, path: &str, mut on: impl FnMut(serde_json::Value) -> bool) -> anyhow::Result<()> {
    let req = hyper::Request::builder().uri(path).header("host", "127.0.0.1").header("authorization", &c.auth).body(http_body_util::Full::new(Bytes::new()))?;
    c.sender.ready().await?;
    let resp = c.sender.send_request(req).await?;
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    loop {
        let Some(frame) = body.frame().await else { bail!("the watch ended early") };
        let Ok(data) = frame?.into_data() else { continue };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let Ok(event) = serde_json::from_slice::<serde_json::Value>(&line) else { continue };
            if !on(event) {
                return Ok(());
            }
        }
    }
}

/// When each pod of `ns` was first seen bound to a node.
async fn watch_bound(mut c: Client, ns: &str, count: usize) -> anyhow::Result<HashMap<String, Instant>> {
    let mut seen: HashMap<String, Instant> = HashMap::new();
    watch_events(&mut c, &format!("/api/v1/namespaces/{ns}/pods?watch=true"), |event| {
        let obj = &event["object"];
        if obj.pointer("/spec/nodeName").and_then(|v| v.as_str()).is_some_and(|n| !n.is_empty()) {
            let name = obj.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default();
            seen.entry(name.to_owned()).or_insert_with(Instant::now);
        }
        seen.len() < count
    })
    .await?;
    Ok(seen)
}

/// Renews every hollow node's Lease once per [`HEARTBEAT`], spread evenly over several
/// clients; each renewal has its due time and a client that falls behind does not sleep,
/// so a loaded server never makes a node look dead.
async fn heartbeat(clients: Vec<Client>, names: Vec<String>) -> anyhow::Result<()> {
    let per_client = names.len().div_ceil(clients.len().max(1)).max(1);
    let mut tasks = tokio::task::JoinSet::new();
    for (mut c, chunk) in clients.into_iter().zip(names.chunks(per_client).map(<[String]>::to_vec)) {
        tasks.spawn(async move {
            let gap = HEARTBEAT / u32::try_from(chunk.len().max(1)).unwrap_or(u32::MAX);
            loop {
                let round = tokio::time::Instant::now();
                for (i, n) in chunk.iter().enumerate() {
                    tokio::time::sleep_until(round + gap * u32::try_from(i).unwrap_or(u32::MAX)).await;
                    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                    let body = Bytes::from(serde_json::to_vec(&json!({"spec": {"renewTime": now}}))?);
                    c.send(&op(Method::PATCH, format!("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{n}"), "application/merge-patch+json", body, 200)).await?;
                }
                tokio::time::sleep_until(round + HEARTBEAT).await;
            }
            #[allow(unreachable_code)]
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}

/// The hollow kubelet: every pod bound to a hollow node is marked Running and Ready.
async fn hollow_kubelet(mut watch: Client, mut writer: Client) -> anyhow::Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    // Aborted with this task (when the run ends), not left writing to a stopped server.
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _patcher = AbortOnDrop(tokio::spawn(async move {
        while let Some((ns, name)) = rx.recv().await {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let status = json!({"status": {"phase": "Running", "podIP": "127.250.0.1", "startTime": now, "conditions": [
                {"type": "PodScheduled", "status": "True"}, {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": "True"}, {"type": "Ready", "status": "True", "lastTransitionTime": now}]}});
            let body = Bytes::from(serde_json::to_vec(&status).unwrap_or_default());
            if let Err(e) = writer.send(&op(Method::PATCH, format!("/api/v1/namespaces/{ns}/pods/{name}/status"), "application/merge-patch+json", body, 200)).await {
                eprintln!("hollow kubelet: {e:#}");
            }
        }
    }));
    let result = watch_events(&mut watch, "/api/v1/pods?watch=true", |event| {
        let obj = &event["object"];
        let bound = obj.pointer("/spec/nodeName").and_then(|v| v.as_str()).is_some_and(|n| n.starts_with("hollow-"));
        let running = obj.pointer("/status/phase").and_then(|v| v.as_str()) == Some("Running");
        if bound && !running && event["type"] != "DELETED" {
            let ns = obj.pointer("/metadata/namespace").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let name = obj.pointer("/metadata/name").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
            let _ = tx.send((ns, name));
        }
        true
    })
    .await;
    result
}
