//! The node proxy (kube-proxy's role, without iptables): a listener on every Service's
//! ClusterIP:port, on the node address at each NodePort, and for LoadBalancer Services on
//! the node address at the Service port (as k3s's service load balancer serves them).
//! TCP: each connection goes to the next ready endpoint (round robin, or the client's last
//! one with `sessionAffinity: ClientIP`); an endpoint that refuses is skipped for the next.
//! UDP: each client address gets a session with one endpoint, ended after it is idle.
//! Backends are read from the service table at connect time, so an endpoint removed from
//! its EndpointSlice gets no new connection from then on.

use crate::service_table::ServiceTable;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Upstream's default `sessionAffinityConfig.clientIP.timeoutSeconds`.
const DEFAULT_AFFINITY: Duration = Duration::from_secs(10800);
/// A UDP session with no answer from its endpoint for this long ends (kube-proxy's
/// conntrack timeout for UDP is 30 s too).
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Which Service port a listener serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Target {
    ns: String,
    svc: String,
    /// The Service port's name (how EndpointSlices name the port too).
    port_name: String,
    udp: bool,
}

struct Listener {
    target: Target,
    task: JoinHandle<()>,
}

/// Runs the proxy for the node at `node_ip` until `shutdown` completes.
pub async fn run(table: Arc<RwLock<ServiceTable>>, mut changed: watch::Receiver<u64>, node_ip: IpAddr, shutdown: impl std::future::Future<Output = ()>) {
    // Keyed by address and protocol: a Service may serve TCP and UDP on one port.
    let mut listeners: HashMap<(SocketAddr, bool), Listener> = HashMap::new();
    // Addresses that could not be bound, so each is reported once.
    let mut reported: HashMap<(SocketAddr, bool), String> = HashMap::new();
    tokio::pin!(shutdown);
    loop {
        let wanted = wanted_listeners(&table.read().unwrap_or_else(|e| e.into_inner()), node_ip);
        listeners.retain(|key, l| {
            let keep = wanted.get(key) == Some(&l.target);
            if !keep {
                l.task.abort();
                tracing::debug!(addr = %key.0, udp = key.1, "proxy: stopped listening");
            }
            keep
        });
        reported.retain(|key, _| wanted.contains_key(key));
        for (key, target) in wanted {
            if listeners.contains_key(&key) {
                continue;
            }
            let (addr, udp) = key;
            let bound = if udp {
                UdpSocket::bind(addr).await.map(|sock| tokio::spawn(serve_udp(sock, table.clone(), target.clone())))
            } else {
                TcpListener::bind(addr).await.map(|listener| tokio::spawn(serve(listener, table.clone(), target.clone())))
            };
            match bound {
                Ok(task) => {
                    reported.remove(&key);
                    tracing::debug!(%addr, udp, ns = target.ns, svc = target.svc, "proxy: listening");
                    listeners.insert(key, Listener { target, task });
                }
                Err(e) => {
                    let msg = e.to_string();
                    if reported.get(&key) != Some(&msg) {
                        tracing::warn!(%addr, udp, ns = target.ns, svc = target.svc, error = %msg, "proxy: cannot listen for the service");
                        reported.insert(key, msg);
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut shutdown => break,
            r = changed.changed() => if r.is_err() { break },
        }
    }
    for (_, l) in listeners {
        l.task.abort();
    }
}

/// Every address (and protocol: UDP or not) the node should listen on, and the Service
/// port behind it.
fn wanted_listeners(table: &ServiceTable, node_ip: IpAddr) -> HashMap<(SocketAddr, bool), Target> {
    let mut out = HashMap::new();
    for ((ns, name), svc) in &table.services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let ty = spec.type_.as_deref().unwrap_or("ClusterIP");
        if ty == "ExternalName" {
            continue;
        }
        let cluster_ip = spec.cluster_ip.as_deref().and_then(|ip| ip.parse::<Ipv4Addr>().ok());
        for p in spec.ports.iter().flatten() {
            let udp = match p.protocol.as_deref().unwrap_or("TCP") {
                "TCP" => false,
                "UDP" => true,
                _ => continue, // SCTP: not proxied
            };
            let target = Target { ns: ns.clone(), svc: name.clone(), port_name: p.name.clone().unwrap_or_default(), udp };
            let Ok(port) = u16::try_from(p.port) else { continue };
            if let Some(ip) = cluster_ip {
                out.insert((SocketAddr::new(IpAddr::V4(ip), port), udp), target.clone());
            }
            if ty == "NodePort" || ty == "LoadBalancer" {
                if let Some(np) = p.node_port.and_then(|n| u16::try_from(n).ok()) {
                    out.insert((SocketAddr::new(node_ip, np), udp), target.clone());
                }
            }
            if ty == "LoadBalancer" {
                out.insert((SocketAddr::new(node_ip, port), udp), target);
            }
        }
    }
    out
}

async fn serve(listener: TcpListener, table: Arc<RwLock<ServiceTable>>, target: Target) {
    let next = Arc::new(AtomicUsize::new(0));
    let affinity: Arc<Mutex<HashMap<IpAddr, (SocketAddr, Instant)>>> = Arc::default();
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "proxy: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = client.set_nodelay(true);
        let (table, target, next, affinity) = (table.clone(), target.clone(), next.clone(), affinity.clone());
        tokio::spawn(async move {
            let (backends, sticky) = {
                let t = table.read().unwrap_or_else(|e| e.into_inner());
                (backends(&t, &target), sticky_for(&t, &target))
            };
            if backends.is_empty() {
                // Nothing ready: the client sees the connection closed, as upstream's
                // reject rule makes it see a refusal.
                return;
            }
            let remembered = sticky.and_then(|_| affinity.lock().unwrap_or_else(|e| e.into_inner()).get(&peer.ip()).filter(|(_, until)| *until > Instant::now()).map(|(b, _)| *b));
            let start = remembered.and_then(|b| backends.iter().position(|x| *x == b)).unwrap_or_else(|| next.fetch_add(1, Ordering::Relaxed) % backends.len());
            for i in 0..backends.len() {
                let backend = backends[(start + i) % backends.len()];
                match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(backend)).await {
                    Ok(Ok(mut upstream)) => {
                        if let Some(timeout) = sticky {
                            affinity.lock().unwrap_or_else(|e| e.into_inner()).insert(peer.ip(), (backend, Instant::now() + timeout));
                        }
                        let _ = upstream.set_nodelay(true);
                        let mut client = client;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        return;
                    }
                    Ok(Err(e)) => tracing::debug!(%backend, error = %e, "proxy: backend refused; trying the next"),
                    Err(_) => tracing::debug!(%backend, "proxy: backend did not answer; trying the next"),
                }
            }
        });
    }
}

/// UDP: the first datagram from a client address picks an endpoint (round robin) and
/// opens a session to it; its answers go back to the client from the Service address.
async fn serve_udp(sock: UdpSocket, table: Arc<RwLock<ServiceTable>>, target: Target) {
    let sock = Arc::new(sock);
    let sessions: Arc<Mutex<HashMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let next = AtomicUsize::new(0);
    let mut buf = vec![0u8; 65_535];
    loop {
        let Ok((n, client)) = sock.recv_from(&mut buf).await else { continue };
        let existing = sessions.lock().unwrap_or_else(|e| e.into_inner()).get(&client).cloned();
        let upstream = match existing {
            Some(u) => u,
            None => {
                let backends = backends(&table.read().unwrap_or_else(|e| e.into_inner()), &target);
                if backends.is_empty() {
                    continue;
                }
                let backend = backends[next.fetch_add(1, Ordering::Relaxed) % backends.len()];
                let Ok(u) = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).await else { continue };
                if u.connect(backend).await.is_err() {
                    continue;
                }
                let u = Arc::new(u);
                sessions.lock().unwrap_or_else(|e| e.into_inner()).insert(client, u.clone());
                let (u2, sock, sessions) = (u.clone(), sock.clone(), sessions.clone());
                tokio::spawn(async move {
                    let mut reply = vec![0u8; 65_535];
                    while let Ok(Ok(n)) = tokio::time::timeout(UDP_IDLE, u2.recv(&mut reply)).await {
                        let _ = sock.send_to(&reply[..n], client).await;
                    }
                    sessions.lock().unwrap_or_else(|e| e.into_inner()).remove(&client);
                });
                u
            }
        };
        let _ = upstream.send(&buf[..n]).await;
    }
}

/// The ready endpoints of a Service port, as socket addresses.
fn backends(table: &ServiceTable, target: &Target) -> Vec<SocketAddr> {
    table.backends(&target.ns, &target.svc, &target.port_name)
}

/// The affinity timeout when the Service pins clients to one endpoint.
fn sticky_for(table: &ServiceTable, target: &Target) -> Option<Duration> {
    let spec = table.service(&target.ns, &target.svc)?.spec.as_ref()?;
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let secs = spec.session_affinity_config.as_ref().and_then(|c| c.client_ip.as_ref()?.timeout_seconds).and_then(|s| u64::try_from(s).ok());
    Some(secs.map_or(DEFAULT_AFFINITY, Duration::from_secs))
}
