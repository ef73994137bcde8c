//! Outgoing `wasi:http` requests of a pod's components. A Kubernetes pod's resolver asks
//! the cluster DNS with its namespace's search path; a component has no resolv.conf, so
//! the node resolves the request's host the same way in process, from the zone its DNS
//! server answers ([`crate::dns::resolve`]): `http://backend/` reaches the `backend`
//! Service of the pod's namespace through its ClusterIP (and so the node proxy), a
//! headless Service one of its ready pods in turn. Names outside the cluster domain go to
//! the host's resolvers, as the DNS server forwards them.

use crate::dns::{self, Resolved, SearchPath};
use crate::service_table::SharedTable;
use http_body_util::BodyExt;
use hyper::http;
use std::future::Future;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use wasmtime_wasi_http::{RequestOptions, WasiBody, WasiHttpHooks};

/// How one pod's outgoing requests name cluster hosts.
pub struct ClusterNames {
    pub services: SharedTable,
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// The pod's search path (its namespace first, for `dnsPolicy: ClusterFirst`).
    pub search: SearchPath,
    /// Turns for headless Services with several ready endpoints.
    next: AtomicUsize,
}

impl ClusterNames {
    pub fn new(services: SharedTable, domain: &str, search: SearchPath) -> Self {
        Self { services, domain: domain.to_owned(), search, next: AtomicUsize::new(0) }
    }

    /// Where `host` leads; IP literals lead to themselves.
    pub fn resolve(&self, host: &str) -> Resolved {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match ip {
                IpAddr::V4(v4) => Resolved::Address(v4),
                IpAddr::V6(_) => Resolved::Outside(host.to_owned()),
            };
        }
        let pick = self.next.fetch_add(1, Ordering::Relaxed);
        dns::resolve(&self.services.read(), &self.domain, &self.search, host, pick)
    }
}

/// The `wasi:http` hooks of one instance: the default sender, after cluster names are
/// swapped for addresses in the request's URI (the `Host` header keeps the name).
#[derive(Clone, Default)]
pub struct OutboundHttp {
    pub names: Option<Arc<ClusterNames>>,
}

type Sent = Box<dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>), wasmtime_wasi_http::Error>> + Send>;

impl WasiHttpHooks for OutboundHttp {
    fn send_request(&mut self, mut request: http::Request<WasiBody>, options: Option<RequestOptions>, fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>) -> Sent {
        _ = fut;
        let rewritten = match &self.names {
            Some(names) => to_address(names, request.uri()),
            None => Ok(None),
        };
        Box::new(async move {
            match rewritten? {
                Some(uri) => *request.uri_mut() = uri,
                None => {}
            }
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

/// The URI with its host replaced by the address the cluster gives it; `None` when the
/// host resolves outside the cluster (the default sender then looks it up). HTTPS keeps
/// its name, which certificate checks need.
fn to_address(names: &ClusterNames, uri: &http::Uri) -> Result<Option<http::Uri>, wasmtime_wasi_http::Error> {
    let Some(host) = uri.host() else { return Ok(None) };
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        return Ok(None);
    }
    let ip = match names.resolve(host) {
        Resolved::Address(ip) => ip,
        Resolved::Outside(name) if name == host => return Ok(None),
        Resolved::Outside(name) => {
            // An ExternalName: the target host, still on the asked port.
            let port = uri.port_u16().unwrap_or(80);
            return rebuild(uri, &format!("{name}:{port}")).map(Some);
        }
        Resolved::NotFound => return Err(wasmtime_wasi_http::Error::DnsError { rcode: Some("NXDOMAIN".into()), info_code: None }),
    };
    let port = uri.port_u16().unwrap_or(80);
    rebuild(uri, &format!("{ip}:{port}")).map(Some)
}

fn rebuild(uri: &http::Uri, authority: &str) -> Result<http::Uri, wasmtime_wasi_http::Error> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder().scheme(uri.scheme().cloned().unwrap_or(http::uri::Scheme::HTTP)).authority(authority).path_and_query(path).build().map_err(|_| wasmtime_wasi_http::Error::HttpRequestUriInvalid)
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
        ClusterNames::new(SharedTable::fixed(table), "cluster.local", SearchPath::cluster_first(ns, "cluster.local"))
    }

    fn rewrite(names: &ClusterNames, uri: &str) -> Result<Option<String>, String> {
        to_address(names, &uri.parse().unwrap()).map(|u| u.map(|u| u.to_string())).map_err(|e| format!("{e:?}"))
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
