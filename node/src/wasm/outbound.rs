//! Outgoing `wasi:http` requests of a pod's components. A Kubernetes pod's resolver asks
//! the cluster DNS with its namespace's search path; a component has no resolv.conf, so
//! the node resolves the request's host the same way in process, from the zone its DNS
//! server answers ([`crate::dns::resolve`]): `http://backend/` reaches the `backend`
//! Service of the pod's namespace through its ClusterIP (and so the node proxy), a
//! headless Service one of its ready pods in turn. Names outside the cluster domain go to
//! the host's resolvers, as the DNS server forwards them.
//!
//! When the pod a request is for serves HTTP on this node, the request is answered in
//! process by that pod's server ([`LocalServers`]), with no TCP connection: a Service's
//! ready endpoints are taken in turn (as the proxy would), and a local one gets the
//! request directly. Services with `sessionAffinity: ClientIP` always go through the
//! proxy, which keeps the affinity.

use super::http::{LocalServers, Server};
use crate::dns::{self, Resolved, SearchPath};
use crate::service_table::{ServiceTable, SharedTable};
use http_body_util::BodyExt;
use hyper::http;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// How one pod's outgoing requests name cluster hosts, and reach pods of this node.
pub struct ClusterNames {
    pub services: SharedTable,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// The pod's search path (its namespace first, for `dnsPolicy: ClusterFirst`).
    pub search: SearchPath,
    /// This node's HTTP servers.
    local: Arc<LocalServers>,
    /// The pod's own address: the client address a local server sees.
    source: SocketAddr,
    /// Turns over a headless Service's addresses, and over a Service's ready endpoints
    /// (apart: one request may take a turn of each).
    next_address: AtomicUsize,
    next_endpoint: AtomicUsize,
}

impl ClusterNames {
    pub fn new(services: SharedTable, domain: &str, search: SearchPath, local: Arc<LocalServers>, pod_ip: IpAddr) -> Self {
        Self { services, domain: domain.to_owned(), search, local, source: SocketAddr::new(pod_ip, 0), next_address: AtomicUsize::new(0), next_endpoint: AtomicUsize::new(0) }
    }

    /// Where `host` leads in `table`; IP literals lead to themselves.
    fn resolve(&self, table: &ServiceTable, host: &str) -> Resolved {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match ip {
                IpAddr::V4(v4) => Resolved::Address(v4),
                IpAddr::V6(_) => Resolved::Outside(host.to_owned()),
            };
        }
        let pick = self.next_address.fetch_add(1, Ordering::Relaxed);
        dns::resolve(table, &self.domain, &self.search, host, pick)
    }

    /// The pod address a connection to `ip:port` would reach: for a Service's ClusterIP the
    /// next of its port's ready backends (unless the Service keeps client affinity, which
    /// only the proxy knows), else `ip:port` itself.
    fn endpoint(&self, table: &ServiceTable, ip: Ipv4Addr, port: u16) -> Option<SocketAddr> {
        let Some((ns, name, svc)) = table.service_by_ip(ip) else { return Some(SocketAddr::from((ip, port))) };
        let spec = svc.spec.as_ref()?;
        if spec.session_affinity.as_deref() == Some("ClientIP") {
            return None;
        }
        let tcp = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.as_deref().unwrap_or("TCP") == "TCP";
        let port_name = spec.ports.iter().flatten().find(|p| p.port == i32::from(port) && tcp(p))?.name.clone().unwrap_or_default();
        let backends = table.backends(ns, name, &port_name);
        if backends.is_empty() {
            return None;
        }
        Some(backends[self.next_endpoint.fetch_add(1, Ordering::Relaxed) % backends.len()])
    }
}

/// The `wasi:http` hooks of one instance: the default sender, after cluster names are
/// swapped for addresses in the request's URI (the `Host` header keeps the name), or a
/// server of this node answering in process.
#[derive(Clone, Default)]
pub struct OutboundHttp {
    pub names: Option<Arc<ClusterNames>>,
}

type SendError = wasmtime_wasi_http::Error;
type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), SendError>> + Send>), SendError>> + Send>;

/// Where one outgoing request goes.
enum Route {
    /// To a server of this node, in process.
    Local(Arc<Server>, SocketAddr),
    /// Over TCP, to this URI (the host swapped for its address) or, `None`, as it is.
    Remote(Option<http::Uri>),
}

impl WasiHttpHooks for OutboundHttp {
    fn send_request(&mut self, mut request: http::Request<WasiBody>, options: Option<RequestOptions>, fut: Box<dyn Future<Output = Result<(), SendError>> + Send>) -> Sent {
        _ = fut;
        let route = match &self.names {
            Some(names) => route(names, request.uri()),
            None => Ok(Route::Remote(None)),
        };
        Box::new(async move {
            match route? {
                Route::Local(server, source) => {
                    // As it would arrive on a connection: origin-form, the Host header naming the authority.
                    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
                    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| SendError::HttpRequestUriInvalid)?;
                    let response = server.handle(request, source).await;
                    Ok((response, Box::new(async { Ok(()) }) as Box<dyn Future<Output = _> + Send>))
                }
                Route::Remote(uri) => {
                    if let Some(uri) = uri {
                        *request.uri_mut() = uri;
                    }
                    let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
                    Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
                }
            }
        })
    }
}

/// The route of a request to `uri`. A host outside the cluster is sent as it is (the
/// default sender looks it up); HTTPS keeps its name, which certificate checks need.
fn route(names: &ClusterNames, uri: &http::Uri) -> Result<Route, SendError> {
    let Some(host) = uri.host() else { return Ok(Route::Remote(None)) };
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        return Ok(Route::Remote(None));
    }
    let port = uri.port_u16().unwrap_or(80);
    // One look at the table for the name and, below, the endpoint.
    let table = names.services.read();
    let ip = match names.resolve(&table, host) {
        Resolved::Address(ip) => ip,
        Resolved::Outside(name) if name == host => return Ok(Route::Remote(None)),
        // An ExternalName: the target host, still on the asked port.
        Resolved::Outside(name) => return rebuild(uri, &format!("{name}:{port}")).map(|u| Route::Remote(Some(u))),
        Resolved::NotFound => return Err(SendError::DnsError { rcode: Some("NXDOMAIN".into()), info_code: None }),
    };
    if let Some(server) = names.endpoint(&table, ip, port).and_then(|addr| names.local.get(addr)) {
        return Ok(Route::Local(server, names.source));
    }
    rebuild(uri, &format!("{ip}:{port}")).map(|u| Route::Remote(Some(u)))
}

fn rebuild(uri: &http::Uri, authority: &str) -> Result<http::Uri, SendError> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder().scheme(uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP)).authority(authority).path_and_query(path).build().map_err(|_| SendError::HttpRequestUriInvalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service_table::ServiceTable;

    fn names(ns: &str) -> ClusterNames {
        let mut table = ServiceTable::default();
        let svc: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({"metadata": {"name": "backend", "namespace": "shop"}, "spec": {"clusterIP": "127.96.0.7", "ports": [{"port": 80}]}})).unwrap();
        table.apply_service(Arc::new(svc));
        let ext: k8s_openapi::api::core::v1::Service = serde_json::from_value(serde_json::json!({"metadata": {"name": "search", "namespace": "shop"}, "spec": {"type": "ExternalName", "externalName": "search.example.org"}})).unwrap();
        table.apply_service(Arc::new(ext));
        ClusterNames::new(SharedTable::fixed(table), "cluster.local", SearchPath::cluster_first(ns, "cluster.local"), Default::default(), IpAddr::from([127, 1, 0, 9]))
    }

    /// Where a request to `uri` is sent (no server runs here, so never in process).
    fn rewrite(names: &ClusterNames, uri: &str) -> Result<Option<String>, String> {
        match route(names, &uri.parse().unwrap()) {
            Ok(Route::Remote(u)) => Ok(u.map(|u| u.to_string())),
            Ok(Route::Local(..)) => Err("local".into()),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    #[test]
    fn cluster_hosts_become_addresses_and_others_stay_names() {
        let shop = names("shop");
        assert_eq!(rewrite(&shop, "http://backend/x?y=1"), Ok(Some("http://127.96.0.7:80/x?y=1".into())));
        assert_eq!(rewrite(&shop, "http://backend:8080/"), Ok(Some("http://127.96.0.7:8080/".into())));
        assert_eq!(rewrite(&shop, "http://search/q"), Ok(Some("http://search.example.org:80/q".into())));
        assert_eq!(rewrite(&shop, "http://example.com/"), Ok(None));
        assert_eq!(rewrite(&shop, "https://backend/"), Ok(None));
        assert_eq!(rewrite(&shop, "http://127.0.0.1:9/"), Ok(Some("http://127.0.0.1:9/".into())));
        let other = names("other");
        assert_eq!(rewrite(&other, "http://backend.shop/"), Ok(Some("http://127.96.0.7:80/".into())));
        assert_eq!(rewrite(&other, "http://backend/"), Ok(None));
        assert!(rewrite(&other, "http://nope.shop.svc.cluster.local./").unwrap_err().contains("NXDOMAIN"));
    }
}
