//! The node agent: registers its Node, keeps its Lease fresh, watches the pods bound to it
//! and runs one worker per pod. It reaches the control plane only through the API.

use crate::images::ImageStore;
use crate::ipam::PodIps;
use crate::pod;
use crate::server::{self, ServerState};
use crate::service_table::SharedTable;
use crate::wasm::WasmRuntime;
use anyhow::Context;
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{watcher, WatchStreamExt};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// How the agent reaches the API server (re-exported for the binary).
pub use kube::Config as KubeConfig;

const LEASE_DURATION_SECONDS: i32 = 40;
/// How often the Node's conditions are re-posted with a fresh heartbeat.
const STATUS_EVERY: Duration = Duration::from_secs(60);
/// How often a followed container log (`kubectl logs -f`) is checked for new lines.
const LOG_FOLLOW_POLL: Duration = Duration::from_millis(100);
/// The wasmtime this node embeds (wasmtime exports no version constant; a test keeps
/// this in step with Cargo.toml).
pub const WASMTIME_VERSION: &str = "48.0.8";

pub struct NodeConfig {
    pub name: String,
    /// How to reach the API server.
    pub kube: kube::Config,
    /// The node's own files: image cache, compiled code, pod volumes, container logs.
    pub data_dir: PathBuf,
    /// The address other hosts (and the API server) reach this node on.
    pub host_ip: String,
    /// Used when the Node has no `spec.podCIDR` yet.
    pub pod_cidr: String,
    pub max_pods: u32,
    /// The first crash-loop back-off; it doubles up to five minutes.
    pub backoff_base: Duration,
    /// How often the node's Lease is renewed (kubelet's 10 s); the control plane marks the
    /// node Unknown when it hears nothing for its grace period.
    pub lease_renew: Duration,
    /// `host:port`s of registries reached over plain HTTP (loopback always is).
    pub insecure_registries: Vec<String>,
    /// Size at which a container's log file is rotated.
    pub log_max_bytes: u64,
    /// Where the node's HTTPS endpoint (container logs for the API server) listens; port
    /// 0 picks a free one. The bound port is posted in the Node's `daemonEndpoints`.
    pub server_addr: SocketAddr,
    /// The bearer token callers of that endpoint must present.
    pub server_token: String,
    /// The node's service table, shared with its proxy and DNS server.
    pub services: SharedTable,
    /// The cluster domain its DNS server answers for, e.g. `cluster.local`.
    pub cluster_domain: String,
}

/// An API client configuration from a kubeconfig file (the in-process node of `up`).
pub async fn kube_config_from_file(path: &std::path::Path) -> anyhow::Result<kube::Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
    kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default()).await.with_context(|| format!("using {}", path.display()))
}

/// An API client configuration for a node joining `server` with a bearer `token`. With no
/// CA certificate (PEM) the server's certificate is not verified.
pub fn kube_config_for(server: &str, token: &str, ca_pem: Option<&[u8]>) -> anyhow::Result<kube::Config> {
    let mut config = kube::Config::new(server.parse().with_context(|| format!("invalid server URL {server:?}"))?);
    config.auth_info.token = Some(token.to_owned().into());
    match ca_pem {
        Some(pem) => {
            let mut certs = Vec::new();
            for block in pem_blocks(pem) {
                certs.push(block);
            }
            anyhow::ensure!(!certs.is_empty(), "the CA file holds no PEM certificate");
            config.root_cert = Some(certs);
        }
        None => {
            tracing::warn!("no --ca-file: the API server's certificate is not verified");
            config.accept_invalid_certs = true;
        }
    }
    Ok(config)
}

/// The DER bytes of each `CERTIFICATE` block of a PEM file.
fn pem_blocks(pem: &[u8]) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let text = String::from_utf8_lossy(pem);
    let mut out = Vec::new();
    let mut body: Option<String> = None;
    for line in text.lines() {
        let line = line.trim();
        if line == "-----BEGIN CERTIFICATE-----" {
            body = Some(String::new());
        } else if line == "-----END CERTIFICATE-----" {
            if let Some(b) = body.take().and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok()) {
                out.push(b);
            }
        } else if let Some(b) = body.as_mut() {
            b.push_str(line);
        }
    }
    out
}

/// What every pod worker of this node shares.
pub struct NodeCtx {
    pub name: String,
    pub host_ip: String,
    pub client: kube::Client,
    pub runtime: Arc<WasmRuntime>,
    pub images: ImageStore,
    pub ips: PodIps,
    pub pods_dir: PathBuf,
    pub logs_dir: PathBuf,
    pub backoff_base: Duration,
    pub log_max_bytes: u64,
    /// Turns true when the agent stops: workers then stop their instances and leave the
    /// pods as they are for the next start.
    pub stopping: watch::Receiver<bool>,
    /// Log files of container runs in progress: `kubectl logs -f` follows a file while its
    /// run is in here. Shared with the node's HTTPS endpoint.
    pub running_logs: Arc<Mutex<HashSet<PathBuf>>>,
    /// Services and endpoints as the node's watches see them: service env vars and the
    /// cluster names components call.
    pub services: SharedTable,
    pub cluster_domain: String,
    /// Container runs in progress, for exec, attach and port-forward. Shared with the
    /// node's HTTPS endpoint.
    pub containers: Arc<crate::exec::Containers>,
}

/// Runs the node until `shutdown` completes.
pub async fn run(cfg: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let client = kube::Client::try_from(cfg.kube.clone()).context("building the API client")?;
    let runtime = WasmRuntime::new(&cfg.data_dir.join("compiled"))?;
    let images = ImageStore::open(&cfg.data_dir.join("images"), cfg.insecure_registries.clone()).context("opening the image cache")?;
    // Bound before registering, so the Node names the port the API server will reach.
    let listener = tokio::net::TcpListener::bind(cfg.server_addr).await.with_context(|| format!("binding the node endpoint to {}", cfg.server_addr))?;
    let port = listener.local_addr().context("reading the node endpoint's address")?.port();
    let tls = server::tls_config(&cfg.data_dir, &cfg.name, &cfg.host_ip).context("setting up the node endpoint's TLS")?;
    let pod_cidr = register(&client, &cfg, port).await.with_context(|| format!("registering node {}", cfg.name))?;
    let ips = PodIps::new(&pod_cidr)?;
    let (stop, stopping) = watch::channel(false);
    let ctx = Arc::new(NodeCtx {
        name: cfg.name.clone(),
        host_ip: cfg.host_ip.clone(),
        client: client.clone(),
        runtime,
        images,
        ips,
        pods_dir: cfg.data_dir.join("pods"),
        logs_dir: cfg.data_dir.join("logs"),
        backoff_base: cfg.backoff_base,
        log_max_bytes: cfg.log_max_bytes,
        stopping,
        running_logs: Default::default(),
        services: cfg.services.clone(),
        cluster_domain: cfg.cluster_domain.clone(),
        containers: Default::default(),
    });
    tracing::info!(node = %cfg.name, pod_cidr = %pod_cidr, port, "node registered");

    let server_state = Arc::new(ServerState {
        node_name: cfg.name.clone(),
        token: cfg.server_token.clone(),
        logs_dir: ctx.logs_dir.clone(),
        running_logs: ctx.running_logs.clone(),
        pods: Arc::new(client.clone()),
        poll: LOG_FOLLOW_POLL,
        runtime: ctx.runtime.clone(),
        containers: ctx.containers.clone(),
    });
    let mut server_stop = ctx.stopping.clone();
    let server = tokio::spawn(server::serve(listener, tls, server_state, async move {
        let _ = server_stop.wait_for(|s| *s).await;
    }));
    let heartbeat = tokio::spawn(heartbeat(client.clone(), cfg.name.clone(), node_status(&cfg, port), cfg.lease_renew));
    let mut workers = tokio::task::JoinSet::new();
    tokio::select! {
        _ = sync_pods(ctx.clone(), &mut workers) => {}
        _ = shutdown => {}
    }
    heartbeat.abort();
    let _ = stop.send(true);
    while workers.join_next().await.is_some() {}
    let _ = server.await;
    let (hits, misses) = ctx.runtime.cache_stats();
    tracing::info!(compiled_cache_hits = hits, compiled_cache_misses = misses, "node agent stopped");
    Ok(())
}

/// Watches the pods bound to this node and keeps one worker per pod uid fed with the
/// latest version of its pod (`None` once it is gone).
async fn sync_pods(ctx: Arc<NodeCtx>, workers: &mut tokio::task::JoinSet<()>) {
    let api: Api<Pod> = Api::all(ctx.client.clone());
    let selector = format!("spec.nodeName={}", ctx.name);
    let mut events = watcher(api, watcher::Config::default().fields(&selector)).default_backoff().boxed();
    let mut feeds: HashMap<String, watch::Sender<Option<Arc<Pod>>>> = HashMap::new();
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods failed; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listed = Some(HashSet::new()),
            watcher::Event::InitApply(p) | watcher::Event::Apply(p) => {
                let Some(uid) = p.metadata.uid.clone() else { continue };
                if let Some(seen) = listed.as_mut() {
                    seen.insert(uid.clone());
                }
                let p = Arc::new(p);
                match feeds.get(&uid) {
                    Some(feed) if !feed.is_closed() => {
                        feed.send_replace(Some(p));
                    }
                    _ => {
                        let (tx, rx) = watch::channel(Some(p));
                        feeds.insert(uid, tx);
                        workers.spawn(pod::run(ctx.clone(), rx));
                    }
                }
            }
            watcher::Event::Delete(p) => {
                if let Some(feed) = p.metadata.uid.as_ref().and_then(|uid| feeds.remove(uid)) {
                    feed.send_replace(None);
                }
            }
            watcher::Event::InitDone => {
                let seen = listed.take().unwrap_or_default();
                feeds.retain(|uid, feed| {
                    let keep = seen.contains(uid);
                    if !keep {
                        feed.send_replace(None);
                    }
                    keep
                });
                pod::remove_leftovers(&ctx, &seen);
            }
        }
        // Reap finished workers so a long-lived node does not collect them.
        while workers.try_join_next().is_some() {}
        feeds.retain(|_, feed| !feed.is_closed());
    }
}

/// Creates or updates the Node; returns its pod CIDR.
async fn register(client: &kube::Client, cfg: &NodeConfig, port: u16) -> anyhow::Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let labels = json!({
        "kubernetes.io/hostname": cfg.name,
        "kubernetes.io/os": std::env::consts::OS,
        "kubernetes.io/arch": go_arch(),
        "wasmkube.io/wasm": "true",
    });
    let existing = nodes.get_opt(&cfg.name).await.context("reading the Node")?;
    let pod_cidr = existing.as_ref().and_then(|n| n.spec.as_ref()?.pod_cidr.clone()).unwrap_or_else(|| cfg.pod_cidr.clone());
    let spec = json!({"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]});
    if existing.is_none() {
        let node: Node = serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": cfg.name, "labels": labels}, "spec": spec}))?;
        match nodes.create(&PostParams::default(), &node).await {
            Ok(_) => {}
            // Another start raced us to it: fine, patch below.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("creating the Node"),
        }
    }
    nodes.patch(&cfg.name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": labels}, "spec": spec}))).await.context("updating the Node")?;
    nodes.patch_status(&cfg.name, &PatchParams::default(), &Patch::Merge(json!({"status": node_status(cfg, port)}))).await.context("posting the Node status")?;
    Ok(pod_cidr)
}

/// Renews the Lease every few seconds and re-posts the Node conditions now and then.
async fn heartbeat(client: kube::Client, name: String, mut status: serde_json::Value, every: Duration) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let nodes: Api<Node> = Api::all(client);
    let mut last_status = tokio::time::Instant::now();
    loop {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let spec = json!({"holderIdentity": name, "leaseDurationSeconds": LEASE_DURATION_SECONDS, "renewTime": now});
        let renewed = match leases.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await {
            Err(kube::Error::Api(e)) if e.code == 404 => {
                let lease: Result<Lease, _> = serde_json::from_value(json!({"metadata": {"name": name, "namespace": "kube-node-lease"}, "spec": spec}));
                match lease {
                    Ok(l) => leases.create(&PostParams::default(), &l).await.map(drop),
                    Err(e) => Err(kube::Error::SerdeError(e)),
                }
            }
            other => other.map(drop),
        };
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        if last_status.elapsed() >= STATUS_EVERY {
            refresh_heartbeats(&mut status);
            if let Err(e) = nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await {
                tracing::warn!(error = %e, "posting the node status failed");
            }
            last_status = tokio::time::Instant::now();
        }
        tokio::time::sleep(every).await;
    }
}

fn refresh_heartbeats(status: &mut serde_json::Value) {
    let now = crate::status::now();
    if let Some(conds) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds {
            c["lastHeartbeatTime"] = json!(now);
        }
    }
}

/// Capacity, addresses, conditions, versions and the port of the node's endpoint, as
/// `kubectl describe node` shows them.
fn node_status(cfg: &NodeConfig, port: u16) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let memory_ki = host_memory_bytes() / 1024;
    let capacity = json!({"cpu": cpus.to_string(), "memory": format!("{memory_ki}Ki"), "pods": cfg.max_pods.to_string()});
    let now = crate::status::now();
    let condition = |kind: &str, status: &str, reason: &str, message: &str| {
        json!({"type": kind, "status": status, "reason": reason, "message": message, "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "capacity": capacity,
        "allocatable": capacity,
        "addresses": [{"type": "InternalIP", "address": cfg.host_ip}, {"type": "Hostname", "address": cfg.name}],
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "wasmkube node agent has sufficient memory available"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "wasmkube node agent has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "wasmkube node agent has sufficient PID available"),
            condition("Ready", "True", "KubeletReady", "wasmkube node agent is posting ready status"),
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
        "nodeInfo": {
            "machineID": read_trimmed("/etc/machine-id"),
            "systemUUID": read_trimmed("/sys/class/dmi/id/product_uuid"),
            "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
            "osImage": os_image(),
            "containerRuntimeVersion": format!("wasmtime://{WASMTIME_VERSION}"),
            "kubeletVersion": format!("v1.32.0-wasmkube.{}", env!("CARGO_PKG_VERSION")),
            "kubeProxyVersion": "",
            "operatingSystem": std::env::consts::OS,
            "architecture": go_arch(),
        },
    })
}

/// Architecture names as Kubernetes (Go) spells them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_owned()).unwrap_or_default()
}

fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=")).map(|v| v.trim_matches('"').to_owned()).unwrap_or_else(|| "Linux".into())
}

/// Total memory of the host (`MemTotal`), in bytes.
pub fn host_memory_bytes() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let kib = info.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(1 << 20) * 1024
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reported_wasmtime_version_is_the_one_built_in() {
        let manifest = include_str!("../Cargo.toml");
        assert!(manifest.contains(&format!("wasmtime = \"{}\"", super::WASMTIME_VERSION)), "update WASMTIME_VERSION with node/Cargo.toml");
    }
}
