//! What a node knows about Services: every Service and its EndpointSlices, kept current by
//! watches and indexed by (namespace, name). The DNS server answers from it and the node
//! proxy picks backends from it, both at the moment of each question or connection.

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::runtime::watcher;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

#[derive(Default)]
pub struct ServiceTable {
    pub services: HashMap<(String, String), Arc<Service>>,
    slices: HashMap<(String, String), HashMap<String, Arc<EndpointSlice>>>,
    /// Bumped on every change (the DNS zone's SOA serial).
    pub serial: u32,
    /// Which kinds have been listed once (`SERVICES_LISTED`, `SLICES_LISTED`).
    listed: u8,
    /// Services by ClusterIP.
    by_ip: HashMap<Ipv4Addr, (String, String)>,
}

const SERVICES_LISTED: u8 = 1;
const SLICES_LISTED: u8 = 2;

/// One ready address of a Service, with the name of its host (for headless Services:
/// the pod's hostname, or its address with dashes).
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub hostname: String,
    /// The port number each named Service port has on this endpoint.
    pub ports: Vec<(String, u16)>,
}

fn key_of(meta: &kube::api::ObjectMeta, name: Option<&String>) -> Option<(String, String)> {
    Some((meta.namespace.clone().unwrap_or_default(), name?.clone()))
}

impl ServiceTable {
    pub fn apply_service(&mut self, svc: Arc<Service>) {
        if let Some(key) = key_of(&svc.metadata, svc.metadata.name.as_ref()) {
            if let Some(old) = self.services.get(&key).cloned() {
                self.forget_ip(&old, &key);
            }
            if let Some(ip) = cluster_ip(&svc) {
                self.by_ip.insert(ip, key.clone());
            }
            self.services.insert(key, svc);
            self.serial = self.serial.wrapping_add(1);
        }
    }

    pub fn delete_service(&mut self, svc: &Service) {
        if let Some(key) = key_of(&svc.metadata, svc.metadata.name.as_ref()) {
            if let Some(old) = self.services.remove(&key) {
                self.forget_ip(&old, &key);
            }
            self.serial = self.serial.wrapping_add(1);
        }
    }

    /// Drops the ClusterIP index entry of `old`, stored under `key`, if it still names it.
    fn forget_ip(&mut self, old: &Service, key: &(String, String)) {
        if let Some(ip) = cluster_ip(old).filter(|ip| self.by_ip.get(ip) == Some(key)) {
            self.by_ip.remove(&ip);
        }
    }

    fn clear_services(&mut self) {
        self.services.clear();
        self.by_ip.clear();
    }

    /// The Service whose ClusterIP is `ip`, with its namespace and name.
    pub fn service_by_ip(&self, ip: Ipv4Addr) -> Option<(&str, &str, &Arc<Service>)> {
        let (ns, name) = self.by_ip.get(&ip)?;
        Some((ns, name, self.services.get(&(ns.clone(), name.clone()))?))
    }

    pub fn apply_slice(&mut self, slice: Arc<EndpointSlice>) {
        let Some(key) = key_of(&slice.metadata, slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))) else { return };
        self.slices.entry(key).or_default().insert(slice.metadata.name.clone().unwrap_or_default(), slice);
        self.serial = self.serial.wrapping_add(1);
    }

    pub fn delete_slice(&mut self, slice: &EndpointSlice) {
        let Some(key) = key_of(&slice.metadata, slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))) else { return };
        if let Some(m) = self.slices.get_mut(&key) {
            m.remove(slice.metadata.name.as_deref().unwrap_or_default());
            if m.is_empty() {
                self.slices.remove(&key);
            }
        }
        self.serial = self.serial.wrapping_add(1);
    }

    pub fn service(&self, ns: &str, name: &str) -> Option<&Arc<Service>> {
        self.services.get(&(ns.to_owned(), name.to_owned()))
    }

    /// A Service's ready endpoints, in address order.
    pub fn endpoints(&self, ns: &str, svc: &str) -> Vec<Endpoint> {
        let mut out: Vec<Endpoint> = Vec::new();
        let slices = self.slices.get(&(ns.to_owned(), svc.to_owned()));
        for slice in slices.into_iter().flat_map(|m| m.values()) {
            let ports: Vec<(String, u16)> = slice.ports.iter().flatten().filter_map(|p| Some((p.name.clone().unwrap_or_default(), u16::try_from(p.port?).ok()?))).collect();
            for ep in slice.endpoints.iter().flatten() {
                // Upstream: a missing ready condition counts as ready.
                if ep.conditions.as_ref().and_then(|c| c.ready) == Some(false) {
                    continue;
                }
                for ip in ep.addresses.iter().filter_map(|a| a.parse::<Ipv4Addr>().ok()) {
                    if out.iter().any(|e| e.ip == ip) {
                        continue;
                    }
                    let hostname = ep.hostname.clone().unwrap_or_else(|| dashed(ip));
                    out.push(Endpoint { ip, hostname, ports: ports.clone() });
                }
            }
        }
        out.sort_by_key(|e| e.ip);
        out
    }

    /// The ready endpoints of a Service port (by its name), at the port each serves it on.
    pub fn backends(&self, ns: &str, svc: &str, port_name: &str) -> Vec<std::net::SocketAddr> {
        self.endpoints(ns, svc).into_iter().filter_map(|e| e.ports.iter().find(|(name, _)| name == port_name).map(|(_, port)| std::net::SocketAddr::from((e.ip, *port)))).collect()
    }

    /// The DNS name (below the cluster domain) of a Service or endpoint address.
    pub fn name_of(&self, ip: Ipv4Addr) -> Option<String> {
        if let Some((ns, name, _)) = self.service_by_ip(ip) {
            return Some(format!("{name}.{ns}.svc"));
        }
        let text = ip.to_string();
        for ((ns, name), slices) in &self.slices {
            for slice in slices.values() {
                for ep in slice.endpoints.iter().flatten() {
                    if ep.addresses.contains(&text) {
                        let host = ep.hostname.clone().unwrap_or_else(|| dashed(ip));
                        return Some(format!("{host}.{name}.{ns}.svc"));
                    }
                }
            }
        }
        None
    }

    /// Whether any Service lives in `ns`.
    pub fn has_namespace(&self, ns: &str) -> bool {
        self.services.keys().any(|(n, _)| n == ns)
    }

    /// The Services of one namespace.
    pub fn services_in<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = &'a Arc<Service>> + 'a {
        self.services.iter().filter(move |((n, _), _)| n == ns).map(|(_, s)| s)
    }

    /// Whether Services and EndpointSlices have both been listed once, so what the table
    /// lacks does not exist (kubelet's `serviceHasSynced`).
    pub fn is_synced(&self) -> bool {
        self.listed == SERVICES_LISTED | SLICES_LISTED
    }
}

/// A Service's ClusterIP; `None` when headless or not yet given one.
pub fn cluster_ip(svc: &Service) -> Option<Ipv4Addr> {
    svc.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()
}

pub fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

/// One node's service table, kept current by watches and shared by the proxy, the DNS
/// server and the pod workers (service env vars, cluster names of outgoing requests).
/// Cheap to clone; the watches stop when the last clone is dropped.
#[derive(Clone)]
pub struct SharedTable {
    pub table: Arc<RwLock<ServiceTable>>,
    /// Ticks on every change.
    pub changed: watch::Receiver<u64>,
    _feeds: Arc<tokio::task::JoinSet<()>>,
}

impl SharedTable {
    /// A table fed by watches through a client made from `config` (must be called inside
    /// the runtime).
    pub fn connect(config: kube::Config) -> Result<Self, kube::Error> {
        let client = kube::Client::try_from(config)?;
        let table = Arc::new(RwLock::new(ServiceTable::default()));
        let (tx, rx) = watch::channel(0u64);
        let tx = Arc::new(tx);
        let mut feeds = tokio::task::JoinSet::new();
        feeds.spawn(feed::<Service>(Api::all(client.clone()), table.clone(), tx.clone(), ServiceTable::apply_service, ServiceTable::delete_service, |t| {
            t.clear_services();
            t.listed |= SERVICES_LISTED;
        }));
        feeds.spawn(feed::<EndpointSlice>(Api::all(client), table.clone(), tx, ServiceTable::apply_slice, ServiceTable::delete_slice, |t| {
            t.slices.clear();
            t.listed |= SLICES_LISTED;
        }));
        Ok(Self { table, changed: rx, _feeds: Arc::new(feeds) })
    }

    /// A table that only changes by hand (tests).
    pub fn fixed(table: ServiceTable) -> Self {
        let (tx, rx) = watch::channel(0u64);
        // No sender: `changed` never ticks, and waiting on it ends at once.
        drop(tx);
        Self { table: Arc::new(RwLock::new(table)), changed: rx, _feeds: Arc::new(tokio::task::JoinSet::new()) }
    }

    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, ServiceTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the table has listed both kinds once, at most `limit`; whether it has.
    pub async fn synced(&self, limit: Duration) -> bool {
        let mut changed = self.changed.clone();
        let synced = async {
            loop {
                if self.read().is_synced() {
                    return true;
                }
                if changed.changed().await.is_err() {
                    return self.read().is_synced();
                }
            }
        };
        tokio::time::timeout(limit, synced).await.unwrap_or(false)
    }
}

/// Follows one kind into the table; a relist replaces what the table held of it.
async fn feed<K>(
    api: Api<K>,
    table: Arc<RwLock<ServiceTable>>,
    changed: Arc<watch::Sender<u64>>,
    apply: fn(&mut ServiceTable, Arc<K>),
    delete: fn(&mut ServiceTable, &K),
    clear: fn(&mut ServiceTable),
) where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()));
    let mut fresh: Vec<Arc<K>> = Vec::new();
    while let Some(event) = events.next().await {
        {
            let mut t = table.write().unwrap_or_else(|e| e.into_inner());
            match event {
                Ok(watcher::Event::Apply(o)) => apply(&mut t, Arc::new(o)),
                Ok(watcher::Event::Delete(o)) => delete(&mut t, &o),
                Ok(watcher::Event::Init) => fresh.clear(),
                Ok(watcher::Event::InitApply(o)) => {
                    fresh.push(Arc::new(o));
                    continue;
                }
                Ok(watcher::Event::InitDone) => {
                    clear(&mut t);
                    for o in fresh.drain(..) {
                        apply(&mut t, o);
                    }
                    t.serial = t.serial.wrapping_add(1);
                }
                Err(e) => {
                    drop(t);
                    tracing::warn!(kind = %K::kind(&()), error = %e, "watching for the service table failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        changed.send_modify(|n| *n += 1);
    }
}
