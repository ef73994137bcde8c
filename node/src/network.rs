//! A node's network services over one service table: the proxy (Service addresses to
//! endpoints) and the DNS server (Service names to addresses).

use crate::dns::{self, DnsConfig, DnsSockets};
use crate::proxy;
use crate::service_table::SharedTable;
use std::net::IpAddr;

pub struct NetworkConfig {
    /// The node's address, for NodePort and load-balancer listeners; `None` runs no proxy.
    pub node_ip: Option<IpAddr>,
    /// The DNS server's sockets and settings; `None` runs no DNS server.
    pub dns: Option<(DnsSockets, DnsConfig)>,
}

/// Runs the proxy and the DNS server over `services` until `shutdown` completes.
pub async fn run(services: SharedTable, cfg: NetworkConfig, shutdown: impl std::future::Future<Output = ()>) {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(node_ip) = cfg.node_ip {
        tasks.spawn(proxy::run(services.table.clone(), services.changed.clone(), node_ip, wait(stopped.clone())));
    }
    if let Some((sockets, dns_cfg)) = cfg.dns {
        tasks.spawn(dns::serve(sockets, services.table.clone(), dns_cfg, wait(stopped)));
    }
    shutdown.await;
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
}
