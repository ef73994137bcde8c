//! `wasmkube node` and the node settings `wasmkube up` shares with it.

use anyhow::Context;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use wasmkube_node::agent::{self, NodeConfig};
use wasmkube_node::dns::{self, DnsConfig, DnsSockets};
use wasmkube_node::network::{self, NetworkConfig};
use wasmkube_node::service_table::SharedTable;

/// Settings of a node agent.
#[derive(clap::Args, Clone)]
pub struct NodeArgs {
    /// Name of the Node object [default: the host name]
    #[arg(long)]
    pub node_name: Option<String>,
    /// Pod addresses come from this CIDR unless the Node already has spec.podCIDR
    #[arg(long, default_value = "127.1.0.0/16")]
    pub pod_cidr: String,
    /// Most pods this node accepts (its `pods` capacity)
    #[arg(long, default_value_t = 1000)]
    pub max_pods: u32,
    /// First crash-loop back-off; it doubles up to 5m (kubelet's is 10s)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub backoff_base: Duration,
    /// How often the node renews its Lease (its heartbeat; kubelet's is 10s)
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_renew_interval: Duration,
    /// A registry (`host:port`) to pull from over plain HTTP; loopback registries always are (repeatable)
    #[arg(long = "insecure-registry")]
    pub insecure_registries: Vec<String>,
    /// Size at which a container's log file is rotated (one older file is kept)
    #[arg(long, default_value = "10Mi")]
    pub container_log_max_size: String,
    /// Address of the embedded DNS server, UDP and TCP (port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:1053")]
    pub dns_addr: String,
    /// The cluster domain the DNS server answers for
    #[arg(long, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Resolver (`ip:port`) for names outside the cluster domain (repeatable)
    /// [default: the nameservers of /etc/resolv.conf]
    #[arg(long = "dns-upstream")]
    pub dns_upstreams: Vec<SocketAddr>,
}

#[derive(clap::Args)]
pub struct JoinArgs {
    /// URL of the API server to join, e.g. https://10.0.0.1:6443
    #[arg(long)]
    pub server: String,
    /// Bearer token the node authenticates with
    #[arg(long, env = "WASMKUBE_TOKEN")]
    pub token: String,
    /// PEM file of the cluster CA; without it the server certificate is not verified
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The node's address as the control plane reaches it; its HTTPS endpoint listens here
    #[arg(long, default_value = "127.0.0.1")]
    pub node_ip: std::net::IpAddr,
    /// Port of the node's HTTPS endpoint (container logs for the API server; kubelet's port)
    #[arg(long, default_value_t = 10250)]
    pub node_port: u16,
    /// Where images, compiled code, volumes and logs live [default: $WASMKUBE_HOME/node or ~/.wasmkube/node]
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// `10s`, `200ms`, `1m`, `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("invalid duration {s:?}: use e.g. 10s, 200ms, 1m"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration {s:?}: use e.g. 10s, 200ms, 1m")),
    };
    Ok(Duration::from_secs_f64(secs))
}

impl NodeArgs {
    /// Binds the DNS server's sockets (before the process says it is ready).
    pub async fn dns(&self) -> anyhow::Result<(DnsSockets, DnsConfig)> {
        let sockets = DnsSockets::bind(&self.dns_addr).await?;
        let upstreams = if self.dns_upstreams.is_empty() {
            let ours = sockets.local_addr()?;
            dns::upstreams_from_resolv_conf(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(), ours)
        } else {
            self.dns_upstreams.clone()
        };
        Ok((sockets, DnsConfig { domain: self.cluster_domain.clone(), upstreams }))
    }

    /// The node's settings; its HTTPS endpoint listens on `server_addr` and wants `server_token`.
    pub fn config(&self, kube: agent::KubeConfig, data_dir: PathBuf, host_ip: String, server_addr: SocketAddr, server_token: String, services: SharedTable) -> anyhow::Result<NodeConfig> {
        let name = match &self.node_name {
            Some(n) => n.clone(),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_lowercase()).unwrap_or_else(|_| "wasmkube".into()),
        };
        let log_max = wasmkube_node::quantity::bytes(&self.container_log_max_size).with_context(|| format!("invalid --container-log-max-size {:?}", self.container_log_max_size))?;
        Ok(NodeConfig {
            name,
            kube,
            data_dir,
            host_ip,
            pod_cidr: self.pod_cidr.clone(),
            max_pods: self.max_pods,
            backoff_base: self.backoff_base,
            lease_renew: self.lease_renew_interval,
            insecure_registries: self.insecure_registries.clone(),
            log_max_bytes: log_max,
            server_addr,
            server_token,
            services,
            cluster_domain: self.cluster_domain.clone(),
        })
    }
}

pub async fn run(args: JoinArgs) -> anyhow::Result<()> {
    let ca = match &args.ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let kube = agent::kube_config_for(&args.server, &args.token, ca.as_deref())?;
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => crate::home_dir()?.join("node"),
    };
    // The API server calls back with the token the node joined with.
    let server_addr = SocketAddr::new(args.node_ip, args.node_port);
    let dns = args.node.dns().await?;
    tracing::info!(dns = %dns.0.local_addr()?, "DNS server listening");
    // One service table for the proxy, the DNS server and the pods.
    let services = SharedTable::connect(kube.clone()).context("building the API client")?;
    let cfg = args.node.config(kube, data_dir, args.node_ip.to_string(), server_addr, args.token.clone(), services.clone())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let net = tokio::spawn(network::run(services, NetworkConfig { node_ip: Some(args.node_ip), dns: Some(dns) }, async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|s| *s).await;
    }));
    let result = agent::run(cfg, async {
        let _ = crate::wait_for_signal().await;
    })
    .await;
    let _ = stop.send(true);
    let _ = net.await;
    result
}
