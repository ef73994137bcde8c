//! A node's network services over one service table: the proxy (Service addresses to
//! endpoints) and the DNS server (Service names to addresses).

use crate::dns::{self, DnsConfig, DnsSockets};
use crate::{proxy, service_table};
use std::net::IpAddr;

pub struct NetworkConfig {
    /// The node's address, for NodePort and load-balancer listeners; `None` runs no proxy.
    pub node_ip: Option<IpAddr>,
    /// The DNS server's sockets and settings; `None` runs no DNS server.
    pub dns: Option<(DnsSockets, DnsConfig)>,
}

/// Runs the proxy and the DNS server until `shutdown` completes.
pub async fn run(config: kube::Config, cfg: NetworkConfig, shutdown: impl std::future::Future<Output = ()>) {
    let client = match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "the proxy and DNS server cannot reach the API");
            return;
        }
    };
    let mut feeds = tokio::task::JoinSet::new();
    let (table, changed) = service_table::watched(client, &mut feeds);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut services = tokio::task::JoinSet::new();
    if let Some(node_ip) = cfg.node_ip {
        services.spawn(proxy::run(table.clone(), changed, node_ip, wait(stopped.clone())));
    }
    if let Some((sockets, dns_cfg)) = cfg.dns {
        services.spawn(dns::serve(sockets, table, dns_cfg, wait(stopped)));
    }
    shutdown.await;
    let _ = stop.send(true);
    while services.join_next().await.is_some() {}
    feeds.abort_all();
}
