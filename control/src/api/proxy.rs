//! The proxy subresources: `pods/{id}/proxy`, `services/{id}/proxy` and `nodes/{id}/proxy`,
//! each with any path after it. As upstream's API server does, the request goes on to the
//! pod's address, a ready endpoint of the Service, or the node's endpoint, and the answer
//! streams back. A request that upgrades its connection (a WebSocket) is spliced through
//! once the backend has switched protocols.
//!
//! The id is `[scheme:]name[:port]` (scheme `http` or `https`); the port is a number, or
//! for a Service the name of one of its ports. Failures are upstream's `Status` objects,
//! word for word (`pkg/registry/core/{pod,service,node}` and apimachinery's proxy).
//!
//! ```text
//! GET /api/v1/namespaces/default/pods/web:8080/proxy/healthz?verbose=1
//!   -> GET http://{podIP}:8080/healthz?verbose=1
//! ```

use super::handlers::store_error;
use super::request::Query;
use super::resources;
use super::status::{json_response, ApiError, Status, Target};
use super::{logs, ApiState, SharedState};
use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode, Version};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The methods upstream's proxy subresources accept.
const PROXY_METHODS: [Method; 7] = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::HEAD, Method::OPTIONS];
/// How long a TCP connect to a backend may take (upstream's proxy dialer).
const DIAL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TLS handshake with a backend may take (Go's transport default).
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// Headers that belong to one connection, never forwarded (Go's `httputil.ReverseProxy`).
const HOP_BY_HOP: [&str; 9] = ["connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"];
/// CORS grants of a backend: upstream drops them so a pod cannot extend the API server's.
const CORS: [&str; 4] = ["access-control-allow-credentials", "access-control-allow-headers", "access-control-allow-methods", "access-control-allow-origin"];

/// What a proxy subresource belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxied {
    Pod,
    Service,
    Node,
}

/// Which object a proxy request goes to, and the rest of its path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyTarget {
    pub kind: Proxied,
    /// Empty for nodes.
    pub namespace: String,
    /// `[scheme:]name[:port]`, decoded.
    pub id: String,
    /// The path after `proxy`, decoded: empty when there is none, else starting with `/`
    /// and ending with one when the request's path does.
    pub path: String,
    /// The request's path up to and including `proxy`, decoded: what links and redirects
    /// of the backend are put under.
    pub prefix: String,
}

/// The target when `path` (as it came, percent-encoded) is a proxy subresource.
pub fn proxy_path(path: &str) -> Option<ProxyTarget> {
    let rest = path.strip_prefix("/api/v1/")?;
    let (kind, namespace, after) = if let Some(r) = rest.strip_prefix("namespaces/") {
        let (namespace, r) = r.split_once('/')?;
        let (plural, r) = r.split_once('/')?;
        let kind = match plural {
            "pods" => Proxied::Pod,
            "services" => Proxied::Service,
            _ => return None,
        };
        (kind, decode_segment(namespace)?, r)
    } else {
        (Proxied::Node, String::new(), rest.strip_prefix("nodes/")?)
    };
    let (id, r) = after.split_once('/')?;
    let remainder = r.strip_prefix("proxy").filter(|x| x.is_empty() || x.starts_with('/'))?;
    let id = decode_segment(id)?;
    let prefix = match kind {
        Proxied::Pod => format!("/api/v1/namespaces/{namespace}/pods/{id}/proxy"),
        Proxied::Service => format!("/api/v1/namespaces/{namespace}/services/{id}/proxy"),
        Proxied::Node => format!("/api/v1/nodes/{id}/proxy"),
    };
    Some(ProxyTarget { kind, namespace, id, path: subpath(&percent_decode(remainder)?), prefix })
}

/// One path segment, decoded; it must not be empty nor turn into more than one segment.
fn decode_segment(s: &str) -> Option<String> {
    percent_decode(s).filter(|d| !d.is_empty() && !d.contains('/'))
}

/// The path after `proxy` as upstream's request info reads it from the decoded path: the
/// segments after `proxy` joined, with a leading slash, and a trailing one if it had one.
fn subpath(remainder: &str) -> String {
    let inner = remainder.strip_prefix('/').unwrap_or(remainder).trim_end_matches('/');
    let mut p = if inner.is_empty() || inner.starts_with('/') { inner.to_owned() } else { format!("/{inner}") };
    if remainder.ends_with('/') && !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// `%XX` sequences decoded (a `+` stays a `+`, as in a path); `None` if one is malformed
/// or the result is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = |at: usize| bytes.get(at).and_then(|b| char::from(*b).to_digit(16));
            out.push((hex(i + 1)? * 16 + hex(i + 2)?) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A path escaped as Go's `url.URL` writes one: unreserved characters and `$&+,/:;=@`
/// as they are, every other byte as `%XX`.
fn escape_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Go's `path.Clean` for a rooted path: no empty or `.` segments, `..` applied.
fn clean(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    for s in path.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// Where on the backend the request goes: the subpath cleaned, keeping its trailing slash
/// (upstream's `JoinPreservingTrailingSlash`); empty when there is no subpath.
fn location_path(subpath: &str) -> String {
    if subpath.is_empty() {
        return String::new();
    }
    let mut p = clean(subpath);
    if subpath.ends_with('/') && !p.ends_with('/') {
        p.push('/');
    }
    p
}

/// Upstream's `SplitSchemeNamePort`: `name`, `name:port` or `scheme:name:port`, where the
/// name is not empty and the scheme, if any, is `http` or `https`.
fn split_scheme_name_port(id: &str) -> Option<(&str, &str, &str)> {
    let parts: Vec<&str> = id.split(':').collect();
    let (scheme, name, port) = match parts.as_slice() {
        [name] => ("", *name, ""),
        [name, port] => ("", *name, *port),
        [scheme, name, port] => (*scheme, *name, *port),
        _ => return None,
    };
    (!name.is_empty() && matches!(scheme, "" | "http" | "https")).then_some((scheme, name, port))
}

/// Why a proxy request got no answer from its backend.
#[derive(Debug, thiserror::Error)]
enum ProxyError {
    /// Boxed: an `ApiError` is large and this is returned on every path.
    #[error(transparent)]
    Api(Box<ApiError>),
    /// Upstream's `NewServiceUnavailable`: 503, reason `ServiceUnavailable`, no details.
    #[error("{0}")]
    Unavailable(String),
    /// An error upstream reports without a reason: 500, reason left empty.
    #[error("{0}")]
    Unknown(String),
}

impl From<ApiError> for ProxyError {
    fn from(e: ApiError) -> Self {
        Self::Api(Box::new(e))
    }
}

impl IntoResponse for ProxyError {
    fn into_response(self) -> Response {
        let (code, reason, message) = match self {
            Self::Api(e) => return (*e).into_response(),
            Self::Unavailable(m) => (StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", m),
            Self::Unknown(m) => (StatusCode::INTERNAL_SERVER_ERROR, "", m),
        };
        json_response(code, &Status { status: "Failure", message, reason, details: None, code: code.as_u16(), ..Status::success(0) })
    }
}

/// Where a request is sent.
#[derive(Debug, PartialEq, Eq)]
struct Backend {
    tls: bool,
    /// An IP address, or a node's host name.
    host: String,
    port: u16,
    /// `host[:port]` as the backend's URL names it (no port when the scheme's is implied).
    authority: String,
    /// The bearer token to present: the node's own endpoint wants the API server's.
    token: Option<String>,
}

impl Backend {
    fn new(tls: bool, host: &str, port: u16) -> Self {
        Self { tls, host: host.to_owned(), port, authority: join_host_port(host, port), token: None }
    }
}

/// `host:port`, with an IPv6 address in brackets.
fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") }
}

/// A port to dial, or the error Go's dialer gives for it.
fn dial_port(port: &str) -> Result<u16, ProxyError> {
    let failed = |why: String| ProxyError::Unavailable(format!("error trying to reach service: {why}"));
    if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) {
        return port.parse().map_err(|_| failed(format!("dial tcp: address {port}: invalid port")));
    }
    Err(failed(format!("dial tcp: lookup tcp/{port}: unknown port")))
}

/// Whether a pod's address may be proxied to. Upstream allows global unicast addresses
/// only; pods here live on the host's loopback range, so loopback is allowed as well.
fn proxyable(ip: &str) -> bool {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => !(a.is_unspecified() || a.is_multicast() || a.is_link_local() || a.is_broadcast()),
        Ok(IpAddr::V6(a)) => !(a.is_unspecified() || a.is_multicast() || (a.segments()[0] & 0xffc0) == 0xfe80),
        Err(_) => false,
    }
}

fn array<'a>(v: &'a Value, field: &str) -> &'a [Value] {
    v.get(field).and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default()
}

fn str_of<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// A core/v1 object from the store, or upstream's NotFound for it.
fn read(state: &ApiState, plural: &str, kind: &str, namespace: &str, name: &str) -> Result<Arc<Value>, ApiError> {
    let resource = resources::find("", "v1", plural).ok_or(ApiError::UnknownPath)?;
    let target = Target { group: String::new(), resource: plural.into(), kind: kind.into(), name: name.into() };
    state.store.get(&resource.key(namespace, name)).map_err(|e| store_error(target.clone(), e))?.ok_or(ApiError::NotFound(target))
}

fn locate(state: &ApiState, target: &ProxyTarget) -> Result<Backend, ProxyError> {
    let id = target.id.as_str();
    let invalid = |what: &str| ApiError::BadRequest(format!("invalid {what} request {id:?}"));
    match target.kind {
        Proxied::Pod => {
            let (scheme, name, port) = split_scheme_name_port(id).ok_or_else(|| invalid("pod"))?;
            pod_backend(&*read(state, "pods", "Pod", &target.namespace, name)?, scheme, port)
        }
        Proxied::Service => {
            let (scheme, name, port) = split_scheme_name_port(id).ok_or_else(|| invalid("service"))?;
            service_backend(state, &target.namespace, id, scheme, name, port)
        }
        Proxied::Node => {
            let (scheme, name, port) = split_scheme_name_port(id).ok_or_else(|| invalid("node"))?;
            let node = read(state, "nodes", "Node", "", name)?;
            let (host, own_port) = logs::node_endpoint(&node)?;
            // The node's own endpoint, over TLS with the API server's credential; any other
            // port of the node is plain traffic, as upstream's.
            if port.is_empty() || port == own_port.to_string() {
                return Ok(Backend { token: Some(state.admin_token.clone()), ..Backend::new(true, &host, own_port) });
            }
            Ok(Backend::new(scheme == "https", &host, dial_port(port)?))
        }
    }
}

/// Upstream's pod `ResourceLocation`: the pod's first address, at the port asked for, else
/// at the first port its containers declare, else at the scheme's. A port may also name a
/// container port (upstream would look the name up as a well-known service instead).
fn pod_backend(pod: &Value, scheme: &str, port: &str) -> Result<Backend, ProxyError> {
    let ports: Vec<&Value> = array(pod.get("spec").unwrap_or(&Value::Null), "containers").iter().flat_map(|c| array(c, "ports")).collect();
    let declared = |p: &Value| p.get("containerPort").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok());
    let ip = pod.pointer("/status/podIPs/0/ip").or_else(|| pod.pointer("/status/podIP")).and_then(Value::as_str).unwrap_or_default();
    if !proxyable(ip) {
        return Err(ApiError::BadRequest("address not allowed".into()).into());
    }
    let tls = scheme == "https";
    let number = match port {
        "" => match ports.first().and_then(|p| declared(p)) {
            Some(n) => n,
            None => return Ok(Backend { authority: if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() }, ..Backend::new(tls, ip, if tls { 443 } else { 80 }) }),
        },
        name => match ports.iter().find(|p| p.get("name").and_then(Value::as_str) == Some(name)).and_then(|p| declared(p)) {
            Some(n) => n,
            None => dial_port(name)?,
        },
    };
    Ok(Backend::new(tls, ip, number))
}

/// Upstream's Service `ResourceLocation`: a port given by number is the Service's port of
/// that number, known by its name; the Endpoints of the Service then give a ready address
/// of a pod that still has it, and the target port of that name.
fn service_backend(state: &ApiState, namespace: &str, id: &str, scheme: &str, name: &str, port: &str) -> Result<Backend, ProxyError> {
    let mut port_name = port.to_owned();
    if let Ok(number) = port.parse::<i64>() {
        let svc = read(state, "services", "Service", namespace, name)?;
        let found = array(svc.get("spec").unwrap_or(&Value::Null), "ports").iter().find(|p| p.get("port").and_then(Value::as_i64) == Some(number));
        port_name = found.map(|p| str_of(p, "/name").to_owned()).ok_or_else(|| ProxyError::Unavailable(format!("no service port {number} found for service {name:?}")))?;
    }
    let endpoints = read(state, "endpoints", "Endpoints", namespace, name)?;
    pick_endpoint(&endpoints, name, id, &port_name, scheme == "https", |address| endpoint_is_current(state, namespace, address))
}

/// Upstream's `isValidAddress`: the address is of a pod in the namespace that still has it.
fn endpoint_is_current(state: &ApiState, namespace: &str, address: &Value) -> bool {
    let pod_name = str_of(address, "/targetRef/name");
    if pod_name.is_empty() || str_of(address, "/targetRef/namespace") != namespace {
        return false;
    }
    let Ok(pod) = read(state, "pods", "Pod", namespace, pod_name) else { return false };
    let ip = str_of(address, "/ip");
    array(pod.get("status").unwrap_or(&Value::Null), "podIPs").iter().any(|p| str_of(p, "/ip") == ip) || str_of(&pod, "/status/podIP") == ip
}

/// Spreads requests over a Service's endpoints, where upstream picks at random.
static NEXT_ENDPOINT: AtomicUsize = AtomicUsize::new(0);

/// A ready address of the Endpoints' subsets that serves the port named `port_name`
/// (`""`: the unnamed port), for which `current` holds.
fn pick_endpoint(endpoints: &Value, name: &str, id: &str, port_name: &str, tls: bool, current: impl Fn(&Value) -> bool) -> Result<Backend, ProxyError> {
    let subsets = array(endpoints, "subsets");
    if subsets.is_empty() {
        return Err(ProxyError::Unavailable(format!("no endpoints available for service {name:?}")));
    }
    let seed = NEXT_ENDPOINT.fetch_add(1, Ordering::Relaxed);
    for i in 0..subsets.len() {
        let subset = &subsets[(seed + i) % subsets.len()];
        let addresses = array(subset, "addresses");
        if addresses.is_empty() {
            continue;
        }
        for port in array(subset, "ports").iter().filter(|p| str_of(p, "/name") == port_name) {
            let Some(number) = port.get("port").and_then(Value::as_u64).and_then(|n| u16::try_from(n).ok()) else { continue };
            for j in 0..addresses.len() {
                let address = &addresses[(seed + j) % addresses.len()];
                let ip = str_of(address, "/ip");
                if ip.is_empty() || !current(address) {
                    tracing::debug!(service = name, ip, "skipping an endpoint whose pod no longer has its address");
                    continue;
                }
                return Ok(Backend::new(tls, ip, number));
            }
        }
    }
    Err(ProxyError::Unavailable(format!("no endpoints available for service {id:?}")))
}

/// Whether the request asks to switch protocols (`Connection: upgrade`), which only an
/// HTTP/1.1 connection can.
fn is_upgrade(req: &Request) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Serves a proxy request: resolves the backend, then passes the request through.
pub async fn serve(state: SharedState, mut req: Request, target: ProxyTarget) -> Response {
    if !PROXY_METHODS.contains(req.method()) {
        return ApiError::MethodNotAllowed.into_response();
    }
    // With no path after `proxy`, upstream reads the path from the `path` option.
    let subpath = match target.path.as_str() {
        "" => Query::parse(req.uri().query()).get("path").map(|p| if p.starts_with('/') { p.to_owned() } else { format!("/{p}") }).unwrap_or_default(),
        p => p.to_owned(),
    };
    let location = location_path(&subpath);
    let backend = {
        // Store reads may wait for the disk: off the async workers.
        let (state, target) = (state.clone(), target.clone());
        match tokio::task::spawn_blocking(move || locate(&state, &target)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return e.into_response(),
            Err(_) => return ApiError::Internal("the request could not be completed".into()).into_response(),
        }
    };
    let upgrade = is_upgrade(&req);
    // Upstream sends a browser that asked for the bare subresource to its root.
    if location.is_empty() && !upgrade && matches!(*req.method(), Method::GET | Method::HEAD) {
        let query = req.uri().query().filter(|q| !q.is_empty()).map(|q| format!("?{q}")).unwrap_or_default();
        let to = format!("{}/{query}", req.uri().path());
        return match HeaderValue::from_str(&to) {
            Ok(v) => (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, v)]).into_response(),
            Err(_) => ApiError::BadRequest("the request path cannot be redirected".into()).into_response(),
        };
    }
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let request_host = request_host(&req);
    let outgoing = match outgoing_request(req, &request_host, &backend, &target.prefix, &location, upgrade) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let sent = round_trip(&backend, outgoing).await;
    match client_upgrade {
        Some(client) => upgrade_response(sent, client),
        None => match sent {
            Ok(resp) => plain_response(resp, &backend, &request_host, &target.prefix),
            Err(e) => {
                tracing::debug!(backend = %backend.authority, error = %e, "proxy request failed");
                ProxyError::Unavailable(format!("error trying to reach service: {e}")).into_response()
            }
        },
    }
}

/// The host the client addressed: its `Host` header, or an HTTP/2 request's authority.
fn request_host(req: &Request) -> String {
    let header = req.headers().get(header::HOST).and_then(|v| v.to_str().ok());
    header.map(str::to_owned).or_else(|| req.uri().authority().map(|a| a.as_str().to_owned())).unwrap_or_default()
}

/// Removes the headers that belong to one connection, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> =
        headers.get_all(header::CONNECTION).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|t| t.trim().to_ascii_lowercase()).filter(|t| !t.is_empty()).collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The request for the backend: the location and the caller's query, every header but the
/// hop-by-hop ones (kept for an upgrade, which needs them) and the caller's credential,
/// the backend's own credential if it has one, `X-Forwarded-Uri`, and the body as it comes.
fn outgoing_request(req: Request, host: &str, backend: &Backend, prefix: &str, location: &str, upgrade: bool) -> Result<axum::http::Request<Body>, ApiError> {
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    if !upgrade {
        // Go's proxy keeps `TE: trailers`, which says the client reads trailers.
        let trailers = headers.get_all(header::TE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        strip_hop_by_hop(&mut headers);
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    headers.remove(header::AUTHORIZATION);
    if let Some(token) = &backend.token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ApiError::Internal("the node credential is not a valid header".into()))?;
        headers.insert(header::AUTHORIZATION, value);
    }
    let mut forwarded = clean(&format!("{prefix}/{location}"));
    if location.ends_with('/') && !forwarded.ends_with('/') {
        forwarded.push('/');
    }
    if let Ok(v) = HeaderValue::from_bytes(forwarded.as_bytes()) {
        headers.insert(HeaderName::from_static("x-forwarded-uri"), v);
    }
    let host = if host.is_empty() { backend.authority.as_str() } else { host };
    headers.insert(header::HOST, HeaderValue::from_str(host).map_err(|_| ApiError::BadRequest(format!("invalid host {host:?}")))?);
    let path = escape_path(if location.is_empty() { "/" } else { location });
    let target = match parts.uri.query().filter(|q| !q.is_empty()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut out = axum::http::Request::builder().method(parts.method).uri(target).body(body).map_err(|e| ApiError::BadRequest(format!("the request cannot be proxied: {e}")))?;
    *out.headers_mut() = headers;
    Ok(out)
}

/// Why no answer came from the backend, worded as Go's HTTP client words it.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error("{0}")]
    Dial(String),
    #[error("{0}")]
    Exchange(String),
}

/// A connection to a backend.
enum Conn {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Connects to the backend, as Go's dialer would: each of its addresses in turn.
async fn dial(backend: &Backend) -> Result<Conn, Failure> {
    let addresses: Vec<SocketAddr> = match backend.host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, backend.port)],
        Err(_) => match tokio::net::lookup_host((backend.host.as_str(), backend.port)).await {
            Ok(found) => found.collect(),
            Err(_) => Vec::new(),
        },
    };
    let mut failure = format!("dial tcp: lookup {}: no such host", backend.host);
    for address in addresses {
        let tcp = match tokio::time::timeout(DIAL_TIMEOUT, TcpStream::connect(address)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                failure = format!("dial tcp {address}: connect: {}", errno_text(&e));
                continue;
            }
            Err(_) => {
                failure = format!("dial tcp {address}: i/o timeout");
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        if !backend.tls {
            return Ok(Conn::Plain(tcp));
        }
        // Backends' certificates go unchecked, as with upstream's proxy transport; the
        // node's endpoint uses the client it serves logs with.
        let config = logs::node_tls().map_err(|e| Failure::Dial(e.to_string()))?;
        let name = rustls::pki_types::ServerName::try_from(backend.host.clone()).map_err(|_| Failure::Dial(format!("invalid server name {:?}", backend.host)))?;
        return match tokio::time::timeout(TLS_TIMEOUT, tokio_rustls::TlsConnector::from(config).connect(name, tcp)).await {
            Ok(Ok(tls)) => Ok(Conn::Tls(Box::new(tls))),
            Ok(Err(e)) => Err(Failure::Dial(e.to_string())),
            Err(_) => Err(Failure::Dial("net/http: TLS handshake timeout".into())),
        };
    }
    Err(Failure::Dial(failure))
}

/// An OS error as Go prints it: the C library's text in lower case, without the number.
fn errno_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match (e.raw_os_error(), text.rfind(" (os error ")) {
        (Some(_), Some(at)) => text[..at].to_owned(),
        _ => text,
    };
    let mut chars = text.chars();
    chars.next().map(|c| c.to_lowercase().chain(chars).collect()).unwrap_or_default()
}

async fn round_trip(backend: &Backend, req: axum::http::Request<Body>) -> Result<axum::http::Response<hyper::body::Incoming>, Failure> {
    match dial(backend).await? {
        Conn::Plain(io) => exchange(io, req).await,
        Conn::Tls(io) => exchange(io, req).await,
    }
}

/// One request over a fresh HTTP/1.1 connection, which lives until the response body is
/// read or dropped, or for as long as an upgraded connection is in use.
async fn exchange<S>(io: S, req: axum::http::Request<Body>) -> Result<axum::http::Response<hyper::body::Incoming>, Failure>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(|e| Failure::Exchange(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "proxied connection ended with an error");
        }
    });
    sender.send_request(req).await.map_err(|e| {
        // A backend that hangs up before answering: what Go's client reports then.
        Failure::Exchange(if e.is_incomplete_message() || e.is_canceled() { "EOF".into() } else { e.to_string() })
    })
}

/// The backend's answer for the client: without hop-by-hop headers and CORS grants, a
/// redirect within the backend kept under the proxy path, the body streaming.
fn plain_response(resp: axum::http::Response<hyper::body::Incoming>, backend: &Backend, request_host: &str, prefix: &str) -> Response {
    let (mut parts, body) = resp.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    for name in CORS {
        parts.headers.remove(name);
    }
    let moved = parts.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).map(|l| rewrite_location(l, &backend.authority, request_host, prefix));
    if let Some(v) = moved.and_then(|l| HeaderValue::from_str(&l).ok()) {
        parts.headers.insert(header::LOCATION, v);
    }
    Response::from_parts(parts, Body::new(body))
}

/// Upstream's `rewriteURL` for a `Location` the backend sent: a URL with an absolute path
/// on the backend itself (or on the host the client used) is put under the proxy prefix,
/// without the backend's scheme and host; any other URL is left alone.
fn rewrite_location(location: &str, backend: &str, request_host: &str, prefix: &str) -> String {
    let scheme_end = location.find("://").filter(|&i| i > 0 && location[..i].bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)));
    let after_host = match scheme_end {
        Some(i) => Some(i + 3),
        None => location.starts_with("//").then_some(2),
    };
    let (head, host, rest) = match after_host {
        Some(start) => {
            let end = location[start..].find(['/', '?', '#']).map_or(location.len(), |e| start + e);
            (&location[..end], &location[start..end], &location[end..])
        }
        None => ("", "", location),
    };
    let path_end = rest.find(['?', '#']).unwrap_or(rest.len());
    let (raw_path, tail) = rest.split_at(path_end);
    let elsewhere = !host.is_empty() && host != backend && host != request_host;
    let Some(path) = percent_decode(raw_path) else { return location.to_owned() };
    if elsewhere || !path.starts_with('/') {
        return location.to_owned();
    }
    // The client's own host stays; the backend's goes, leaving a path on the API server.
    let head = if !host.is_empty() && host == request_host { head } else { "" };
    if path.starts_with(prefix) {
        return format!("{head}{raw_path}{tail}");
    }
    let mut joined = clean(&format!("{prefix}/{path}"));
    if path.ends_with('/') && !joined.ends_with('/') {
        joined.push('/');
    }
    format!("{head}{}{tail}", escape_path(&joined))
}

/// The answer to an upgrade request: once the backend has switched protocols, both
/// connections are spliced together for as long as either side keeps them.
fn upgrade_response(sent: Result<axum::http::Response<hyper::body::Incoming>, Failure>, client: hyper::upgrade::OnUpgrade) -> Response {
    let mut resp = match sent {
        Ok(r) => r,
        Err(Failure::Dial(e)) => return ProxyError::Unknown(format!("error dialing backend: {e}")).into_response(),
        Err(Failure::Exchange(e)) => return ProxyError::Unknown(e).into_response(),
    };
    let code = resp.status();
    if code != StatusCode::SWITCHING_PROTOCOLS {
        // A refusal is the backend's to explain; anything else is no answer to an upgrade.
        if code.as_u16() >= 400 {
            return resp.map(Body::new);
        }
        return ProxyError::Unknown(format!("invalid upgrade response: status code {}", code.as_u16())).into_response();
    }
    let backend = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, backend) = match tokio::try_join!(client, backend) {
            Ok(both) => both,
            Err(e) => {
                tracing::debug!(error = %e, "a proxied upgrade did not complete");
                return;
            }
        };
        if let Err(e) = tokio::io::copy_bidirectional(&mut TokioIo::new(client), &mut TokioIo::new(backend)).await {
            tracing::debug!(error = %e, "a proxied upgraded connection ended with an error");
        }
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Body::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use serde_json::json;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "test-token";

    fn state() -> SharedState {
        Arc::new(ApiState {
            store: Arc::new(LocalStore::in_memory()),
            admin_token: TOKEN.into(),
            namespace_deleted: Default::default(),
            evictions: Default::default(),
            services: super::super::services::ServiceAllocator::new("10.96.0.0/16".parse().expect("cidr")),
        })
    }

    fn put(state: &ApiState, plural: &str, namespace: &str, obj: Value) {
        let name = obj["metadata"]["name"].as_str().expect("name").to_owned();
        let resource = resources::find("", "v1", plural).expect("resource");
        state.store.create(&resource.key(namespace, &name), obj).expect("stored");
    }

    fn pod(name: &str, ip: &str, ports: Value) -> Value {
        let ips = if ip.is_empty() { json!([]) } else { json!([{"ip": ip}]) };
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
               "spec": {"containers": [{"name": "c", "image": "i", "ports": ports}]}, "status": {"podIP": ip, "podIPs": ips}})
    }

    fn target(kind: Proxied, namespace: &str, id: &str, path: &str, prefix: &str) -> ProxyTarget {
        ProxyTarget { kind, namespace: namespace.into(), id: id.into(), path: path.into(), prefix: prefix.into() }
    }

    #[test]
    fn proxy_paths_are_recognised_as_upstream_routes_them() {
        let pods = "/api/v1/namespaces/default/pods";
        assert_eq!(proxy_path(&format!("{pods}/web:8080/proxy/")), Some(target(Proxied::Pod, "default", "web:8080", "/", &format!("{pods}/web:8080/proxy"))));
        assert_eq!(proxy_path(&format!("{pods}/web/proxy")).map(|t| (t.id, t.path)), Some(("web".into(), "".into())), "no slash: no path");
        assert_eq!(proxy_path(&format!("{pods}/https:web.v1.example:443/proxy/a/b")).map(|t| (t.id, t.path)), Some(("https:web.v1.example:443".into(), "/a/b".into())));
        assert_eq!(proxy_path(&format!("{pods}/web%3A8080/proxy/a%20b/c%2Fd/")).map(|t| (t.id, t.path)), Some(("web:8080".into(), "/a b/c/d/".into())));
        assert_eq!(proxy_path(&format!("{pods}/web/proxy/a/")).map(|t| t.path), Some("/a/".into()), "a trailing slash is kept");
        assert_eq!(proxy_path(&format!("{pods}/web/proxy//a//")).map(|t| t.path), Some("/a/".into()), "the first empty segment goes, as upstream splits");
        assert_eq!(proxy_path(&format!("{pods}/web/proxy/a+b")).map(|t| t.path), Some("/a+b".into()), "a plus is no space in a path");
        assert_eq!(
            proxy_path("/api/v1/namespaces/kube-system/services/http:dns:53/proxy/x"),
            Some(target(Proxied::Service, "kube-system", "http:dns:53", "/x", "/api/v1/namespaces/kube-system/services/http:dns:53/proxy"))
        );
        assert_eq!(proxy_path("/api/v1/nodes/n1.example:10250/proxy/containerLogs/ns/p/c"), Some(target(Proxied::Node, "", "n1.example:10250", "/containerLogs/ns/p/c", "/api/v1/nodes/n1.example:10250/proxy")));
        for other in [
            format!("{pods}/web"),
            format!("{pods}/web/proxyx/"),
            format!("{pods}/web/log"),
            format!("{pods}//proxy/"),
            format!("{pods}/a%2Fb/proxy/"),
            format!("{pods}/web/proxy/%zz"),
            "/api/v1/namespaces/default/configmaps/x/proxy/".into(),
            "/api/v1/pods/web/proxy/".into(),
            "/apis/apps/v1/namespaces/default/deployments/x/proxy/".into(),
            "/api/v1/nodes/n1".into(),
        ] {
            assert_eq!(proxy_path(&other), None, "{other}");
        }
    }

    #[test]
    fn ids_split_as_upstream_splits_them() {
        assert_eq!(split_scheme_name_port("web"), Some(("", "web", "")));
        assert_eq!(split_scheme_name_port("web:8080"), Some(("", "web", "8080")));
        assert_eq!(split_scheme_name_port("web:"), Some(("", "web", "")));
        assert_eq!(split_scheme_name_port("https:web:443"), Some(("https", "web", "443")));
        assert_eq!(split_scheme_name_port("http:web.v1:http"), Some(("http", "web.v1", "http")));
        for bad in ["", ":80", "ftp:web:21", "a:b:c:d", "https::443"] {
            assert_eq!(split_scheme_name_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn locations_are_cleaned_and_escaped_as_go_writes_them() {
        assert_eq!(location_path(""), "");
        assert_eq!(location_path("/"), "/");
        assert_eq!(location_path("/a//b/"), "/a/b/");
        assert_eq!(location_path("/a/./b"), "/a/b");
        assert_eq!(location_path("/a/../../etc/passwd"), "/etc/passwd", "no climbing out of the root");
        assert_eq!(escape_path("/a b/é?#%(x)!"), "/a%20b/%C3%A9%3F%23%25%28x%29%21");
        assert_eq!(escape_path("/a:b@c;d=e,f+g$h&i~j-k_l.m"), "/a:b@c;d=e,f+g$h&i~j-k_l.m");
    }

    #[test]
    fn pods_are_reached_at_the_port_asked_for_else_the_first_declared_one() {
        let p = pod("p", "127.0.2.5", json!([{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9090}]));
        assert_eq!(pod_backend(&p, "", "").unwrap(), Backend::new(false, "127.0.2.5", 8080));
        assert_eq!(pod_backend(&p, "", "9000").unwrap(), Backend::new(false, "127.0.2.5", 9000));
        assert_eq!(pod_backend(&p, "https", "admin").unwrap(), Backend::new(true, "127.0.2.5", 9090), "a named container port");
        let none = pod("p", "127.0.2.5", json!([]));
        let bare = pod_backend(&none, "", "").unwrap();
        assert_eq!((bare.port, bare.authority.as_str()), (80, "127.0.2.5"), "no port: the scheme's, not named in the URL");
        assert_eq!(pod_backend(&none, "https", "").unwrap().port, 443);
        let unknown = pod_backend(&p, "", "nosuch").unwrap_err();
        assert_eq!(unknown.to_string(), "error trying to reach service: dial tcp: lookup tcp/nosuch: unknown port");
        assert_eq!(pod_backend(&p, "", "70000").unwrap_err().to_string(), "error trying to reach service: dial tcp: address 70000: invalid port");
        let v6 = pod("p", "fd00::5", json!([{"containerPort": 80}]));
        assert_eq!(pod_backend(&v6, "", "").unwrap().authority, "[fd00::5]:80");
    }

    #[test]
    fn only_addresses_a_proxy_may_dial_are_proxied() {
        for ok in ["127.0.2.5", "10.1.2.3", "fd00::1", "::1"] {
            assert!(proxyable(ok), "{ok}");
        }
        for bad in ["", "0.0.0.0", "224.0.0.1", "169.254.1.1", "255.255.255.255", "::", "fe80::1", "ff02::1", "web"] {
            assert!(!proxyable(bad), "{bad}");
        }
        let e = pod_backend(&pod("p", "", json!([])), "", "80").unwrap_err();
        assert_eq!((e.to_string().as_str(), e.into_response().status()), ("address not allowed", StatusCode::BAD_REQUEST));
    }

    #[test]
    fn endpoints_are_picked_as_upstream_picks_them() {
        let address = |ip: &str| json!({"ip": ip, "targetRef": {"kind": "Pod", "namespace": "default", "name": format!("pod-{ip}")}});
        let eps = json!({"subsets": [
            {"notReadyAddresses": [address("127.0.0.9")], "ports": [{"name": "web", "port": 8080}]},
            {"addresses": [address("127.0.0.1"), address("127.0.0.2")], "ports": [{"name": "web", "port": 8080}, {"name": "admin", "port": 9090}]},
        ]});
        let all = |_: &Value| true;
        let picked: std::collections::BTreeSet<String> = (0..4).map(|_| pick_endpoint(&eps, "s", "s:80", "web", false, all).unwrap().authority).collect();
        assert_eq!(picked, ["127.0.0.1:8080".to_owned(), "127.0.0.2:8080".to_owned()].into(), "ready addresses only, spread");
        assert_eq!(pick_endpoint(&eps, "s", "s:admin", "admin", true, all).unwrap().port, 9090);
        let only_second = |a: &Value| a["ip"] == "127.0.0.2";
        assert!((0..4).all(|_| pick_endpoint(&eps, "s", "s:80", "web", false, only_second).unwrap().host == "127.0.0.2"), "addresses whose pod moved on are skipped");
        assert_eq!(pick_endpoint(&eps, "s", "s", "", false, all).unwrap_err().to_string(), "no endpoints available for service \"s\"");
        assert_eq!(pick_endpoint(&eps, "s", "s:80", "web", false, |_| false).unwrap_err().to_string(), "no endpoints available for service \"s:80\"", "upstream names the id here");
        assert_eq!(pick_endpoint(&json!({"subsets": []}), "s", "s:80", "web", false, all).unwrap_err().to_string(), "no endpoints available for service \"s\"");
        let unnamed = json!({"subsets": [{"addresses": [address("127.0.0.1")], "ports": [{"port": 8080}]}]});
        assert_eq!(pick_endpoint(&unnamed, "s", "s", "", false, all).unwrap().authority, "127.0.0.1:8080", "the unnamed port");
    }

    #[test]
    fn redirects_within_the_backend_stay_under_the_proxy_path() {
        let prefix = "/api/v1/namespaces/default/pods/web:8080/proxy";
        let rewrite = |l: &str| rewrite_location(l, "127.0.2.5:8080", "127.0.0.1:6443", prefix);
        assert_eq!(rewrite("/login?next=%2F#top"), format!("{prefix}/login?next=%2F#top"));
        assert_eq!(rewrite("http://127.0.2.5:8080/a b/"), format!("{prefix}/a%20b/"), "the backend's own host goes");
        assert_eq!(rewrite("https://127.0.0.1:6443/x"), format!("https://127.0.0.1:6443{prefix}/x"), "the client's host stays");
        assert_eq!(rewrite(&format!("{prefix}/already")), format!("{prefix}/already"));
        assert_eq!(rewrite("http://example.com/x"), "http://example.com/x", "another host");
        assert_eq!(rewrite("relative/x"), "relative/x");
    }

    /// A backend on 127.0.0.1 that answers with what it received (the request line, the
    /// headers one a line, a blank line, the body) with a few headers of its own, except:
    /// `/moved?to=URL` redirects there, and `/upgrade` switches to echoing bytes.
    async fn backend() -> u16 {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), hyper::service::service_fn(answer)).with_upgrades());
            }
        });
        port
    }

    async fn answer<B>(mut req: hyper::Request<B>) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible>
    where
        B: hyper::body::Body,
    {
        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
        if req.uri().path() == "/upgrade" {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let (mut r, mut w) = tokio::io::split(TokioIo::new(upgraded));
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static("echo"));
            return Ok(resp);
        }
        if req.uri().path() == "/moved" {
            let to = req.uri().query().and_then(|q| q.strip_prefix("to=")).unwrap_or("/").to_owned();
            *resp.status_mut() = StatusCode::FOUND;
            resp.headers_mut().insert(header::LOCATION, HeaderValue::from_str(&to).expect("location"));
            return Ok(resp);
        }
        let mut text = format!("{} {}\n", req.method(), req.uri());
        for (k, v) in req.headers() {
            text.push_str(&format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())));
        }
        let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        text.push('\n');
        text.push_str(&String::from_utf8_lossy(&body));
        *resp.body_mut() = Full::new(Bytes::from(text));
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        Ok(resp)
    }

    /// One request through the proxy handler; returns the status, headers and body.
    async fn call(state: &SharedState, method: &str, uri: &str, headers: &[(&str, &str)], body: &str) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body.to_owned())).expect("request");
        let target = proxy_path(req.uri().path()).expect("a proxy path");
        let (parts, body) = serve(state.clone(), req, target).await.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.expect("body");
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `(code, reason, message)` of a Status body.
    fn status_of(body: &str) -> (u64, String, String) {
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!((&v["kind"], &v["apiVersion"], &v["status"]), (&json!("Status"), &json!("v1"), &json!("Failure")), "{body}");
        (v["code"].as_u64().unwrap_or(0), v["reason"].as_str().unwrap_or("").into(), v["message"].as_str().unwrap_or("").into())
    }

    #[tokio::test]
    async fn requests_pass_through_with_body_query_and_headers_but_not_the_callers_credential() {
        let s = state();
        let port = backend().await;
        put(&s, "pods", "default", pod("p", "127.0.0.1", json!([{"containerPort": port}])));
        let headers = [("authorization", "Bearer caller-secret"), ("host", "api.example:6443"), ("connection", "x-private"), ("x-private", "1"), ("x-test", "yes"), ("content-type", "text/plain")];
        let (code, got, body) = call(&s, "POST", "/api/v1/namespaces/default/pods/p/proxy/a%20b/c/?x=1&y=%2F", &headers, "the body").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        let (head, sent) = body.split_once("\n\n").expect("head and body");
        let lines: Vec<&str> = head.lines().collect();
        assert_eq!(lines[0], "POST /a%20b/c/?x=1&y=%2F");
        for want in ["x-test: yes", "content-type: text/plain", "host: api.example:6443", "x-forwarded-uri: /api/v1/namespaces/default/pods/p/proxy/a b/c/"] {
            assert!(lines.contains(&want), "{want} in {lines:?}");
        }
        assert!(!lines.iter().any(|l| l.starts_with("authorization:") || l.starts_with("x-private:") || l.starts_with("connection:")), "{lines:?}");
        assert_eq!(sent, "the body");
        assert_eq!(got.get("x-kept").map(|v| v.as_bytes()), Some(&b"yes"[..]));
        for gone in ["x-hop", "connection", "access-control-allow-origin"] {
            assert!(got.get(gone).is_none(), "{gone}: {got:?}");
        }

        for method in ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"] {
            let (code, _, body) = call(&s, method, &format!("/api/v1/namespaces/default/pods/p:{port}/proxy/m"), &[], "").await;
            assert_eq!((code, body.lines().next()), (StatusCode::OK, Some(format!("{method} /m").as_str())));
        }
        let (code, _, body) = call(&s, "HEAD", &format!("/api/v1/namespaces/default/pods/p:{port}/proxy/m"), &[], "").await;
        assert_eq!((code, body.as_str()), (StatusCode::OK, ""));

        let prefix = format!("/api/v1/namespaces/default/pods/p:{port}/proxy");
        let (code, got, _) = call(&s, "GET", &format!("{prefix}/moved?to=/login"), &[], "").await;
        assert_eq!(code, StatusCode::FOUND);
        assert_eq!(got.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some(format!("{prefix}/login").as_str()));
    }

    #[tokio::test]
    async fn a_bare_subresource_redirects_to_its_root_unless_the_path_option_names_one() {
        let s = state();
        let port = backend().await;
        put(&s, "pods", "default", pod("p", "127.0.0.1", json!([{"containerPort": port}])));
        let (code, got, _) = call(&s, "GET", "/api/v1/namespaces/default/pods/p/proxy?q=1", &[], "").await;
        assert_eq!(code, StatusCode::MOVED_PERMANENTLY);
        assert_eq!(got.get(header::LOCATION).and_then(|v| v.to_str().ok()), Some("/api/v1/namespaces/default/pods/p/proxy/?q=1"));
        let (code, _, body) = call(&s, "POST", "/api/v1/namespaces/default/pods/p/proxy", &[], "").await;
        assert_eq!((code, body.lines().next()), (StatusCode::OK, Some("POST /")), "only a browser's GET is redirected");
        let (code, _, body) = call(&s, "GET", "/api/v1/namespaces/default/pods/p/proxy?path=%2Fhealthz", &[], "").await;
        assert_eq!((code, body.lines().next()), (StatusCode::OK, Some("GET /healthz?path=%2Fhealthz")));
    }

    #[tokio::test]
    async fn failures_are_upstreams_status_objects() {
        let s = state();
        put(&s, "pods", "default", pod("pending", "", json!([{"containerPort": 80}])));
        // A port nothing listens on: bound for a moment, then let go.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        put(&s, "pods", "default", pod("deaf", "127.0.0.1", json!([{"containerPort": closed}])));
        let (code, _, body) = call(&s, "GET", "/api/v1/namespaces/default/pods/nosuch:80/proxy/", &[], "").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"nosuch\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nosuch\",\"kind\":\"pods\"},\"code\":404}\n"
        );
        let (_, _, body) = call(&s, "GET", "/api/v1/namespaces/default/pods/pending/proxy/", &[], "").await;
        assert_eq!(status_of(&body), (400, "BadRequest".into(), "address not allowed".into()));
        let (_, _, body) = call(&s, "GET", "/api/v1/namespaces/default/pods/a:b:c:d/proxy/", &[], "").await;
        assert_eq!(status_of(&body), (400, "BadRequest".into(), "invalid pod request \"a:b:c:d\"".into()));
        let (code, _, body) = call(&s, "GET", "/api/v1/namespaces/default/pods/deaf/proxy/", &[], "").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            body,
            format!("{{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{{}},\"status\":\"Failure\",\"message\":\"error trying to reach service: dial tcp 127.0.0.1:{closed}: connect: connection refused\",\"reason\":\"ServiceUnavailable\",\"code\":503}}\n")
        );
        let (code, _, body) = call(&s, "TRACE", "/api/v1/namespaces/default/pods/deaf/proxy/", &[], "").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED, "{body}");
        let (_, _, body) = call(&s, "GET", "/api/v1/nodes/nosuch/proxy/", &[], "").await;
        assert_eq!(status_of(&body), (404, "NotFound".into(), "nodes \"nosuch\" not found".into()));
        let (_, _, body) = call(&s, "GET", "/api/v1/nodes/ftp:n:1/proxy/", &[], "").await;
        assert_eq!(status_of(&body), (400, "BadRequest".into(), "invalid node request \"ftp:n:1\"".into()));
    }

    #[tokio::test]
    async fn services_are_reached_through_a_ready_endpoint_of_the_port_asked_for() {
        let s = state();
        let port = backend().await;
        put(&s, "pods", "default", pod("p", "127.0.0.1", json!([{"containerPort": port}])));
        let service = |name: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": {"ports": [{"name": "web", "port": 80, "targetPort": port}]}});
        let endpoints = |name: &str, pod: &str| {
            json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name},
                   "subsets": [{"addresses": [{"ip": "127.0.0.1", "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}], "ports": [{"name": "web", "port": port}]}]})
        };
        put(&s, "services", "default", service("s"));
        put(&s, "endpoints", "default", endpoints("s", "p"));
        put(&s, "services", "default", service("stale"));
        put(&s, "endpoints", "default", endpoints("stale", "gone"));
        put(&s, "services", "default", service("idle"));
        put(&s, "endpoints", "default", json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "idle"}, "subsets": []}));
        put(&s, "services", "default", service("manual"));
        for id in ["s:80", "s:web", "http:s:80"] {
            let (code, _, body) = call(&s, "GET", &format!("/api/v1/namespaces/default/services/{id}/proxy/x?y=1"), &[("authorization", "Bearer caller-secret")], "").await;
            assert_eq!((code, body.lines().next()), (StatusCode::OK, Some("GET /x?y=1")), "{id}: {body}");
            assert!(!body.contains("authorization"), "{body}");
        }
        let failures = [
            ("s", 503, "ServiceUnavailable", "no endpoints available for service \"s\""),
            ("s:81", 503, "ServiceUnavailable", "no service port 81 found for service \"s\""),
            ("stale:80", 503, "ServiceUnavailable", "no endpoints available for service \"stale:80\""),
            ("idle:80", 503, "ServiceUnavailable", "no endpoints available for service \"idle\""),
            ("manual:80", 404, "NotFound", "endpoints \"manual\" not found"),
            ("nosuch:80", 404, "NotFound", "services \"nosuch\" not found"),
            ("nosuch:web", 404, "NotFound", "endpoints \"nosuch\" not found"),
            ("a:b:c:d", 400, "BadRequest", "invalid service request \"a:b:c:d\""),
        ];
        for (id, code, reason, message) in failures {
            let (_, _, body) = call(&s, "GET", &format!("/api/v1/namespaces/default/services/{id}/proxy/"), &[], "").await;
            assert_eq!(status_of(&body), (code, reason.into(), message.into()), "{id}");
        }
    }

    /// A TLS backend with a self-signed certificate, answering as [`backend`] does.
    async fn tls_backend() -> u16 {
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).and_then(|p| p.self_signed(&key)).expect("certificate");
        let der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(vec![cert.der().clone()], der))
            .expect("TLS config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), hyper::service::service_fn(answer)).await;
                    }
                });
            }
        });
        port
    }

    #[tokio::test]
    async fn nodes_are_reached_on_their_endpoint_with_the_api_servers_credential() {
        let s = state();
        let (own, other) = (tls_backend().await, backend().await);
        put(&s, "nodes", "", json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": own}}}}));
        for id in ["n1".to_owned(), format!("n1:{own}")] {
            let (code, _, body) = call(&s, "GET", &format!("/api/v1/nodes/{id}/proxy/containerLogs/default/p/c?tailLines=1"), &[("authorization", "Bearer caller-secret")], "").await;
            assert_eq!(code, StatusCode::OK, "{body}");
            assert!(body.starts_with("GET /containerLogs/default/p/c?tailLines=1\n"), "{body}");
            assert!(body.lines().any(|l| l == format!("authorization: Bearer {TOKEN}")), "{body}");
        }
        // Another port of the node is plain HTTP, and gets no credential.
        let (code, _, body) = call(&s, "GET", &format!("/api/v1/nodes/n1:{other}/proxy/metrics"), &[("authorization", "Bearer caller-secret")], "").await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert!(body.starts_with("GET /metrics\n") && !body.contains("authorization"), "{body}");
    }

    #[tokio::test]
    async fn an_upgraded_connection_is_spliced_through() {
        let s = state();
        let port = backend().await;
        put(&s, "pods", "default", pod("p", "127.0.0.1", json!([{"containerPort": port}])));
        // The API server's router over plain TCP: upgrades need a real connection.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let api = listener.local_addr().expect("address");
        let app = super::super::router(s.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = hyper_util::service::TowerToHyperService::new(app.clone());
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
                    let _ = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service).await;
                });
            }
        });
        let exchange = async {
            let mut tcp = tokio::io::BufReader::new(TcpStream::connect(api).await.expect("connect"));
            let req = format!("GET /api/v1/namespaces/default/pods/p/proxy/upgrade HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer {TOKEN}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
            tcp.get_mut().write_all(req.as_bytes()).await.expect("write");
            let mut head = Vec::new();
            loop {
                let mut line = String::new();
                if tcp.read_line(&mut line).await.expect("read") == 0 || line == "\r\n" {
                    break;
                }
                head.push(line.trim_end().to_ascii_lowercase());
            }
            assert_eq!(head.first().map(String::as_str), Some("http/1.1 101 switching protocols"), "{head:?}");
            assert!(head.contains(&"upgrade: echo".to_owned()), "{head:?}");
            tcp.get_mut().write_all(b"ping").await.expect("write");
            let mut echoed = [0u8; 4];
            tcp.read_exact(&mut echoed).await.expect("echo");
            assert_eq!(&echoed, b"ping");
        };
        // A bound on a broken splice, not a wait for it: the exchange ends as soon as it can.
        tokio::time::timeout(Duration::from_secs(30), exchange).await.expect("the upgraded exchange finished");
    }
}
