//! `GET /api/v1/namespaces/{ns}/pods/{name}/log`: the API server checks the options,
//! resolves the container and the pod's node, then streams the log from the node's
//! endpoint (kubelet's `/containerLogs/{ns}/{pod}/{container}`) through to the client,
//! as upstream's API server does.

use super::request::Query;
use super::resources;
use super::status::{ApiError, ApiResult, FieldError, Target};
use super::SharedState;
use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use serde_json::Value;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// The port a node's endpoint is on when its Node does not say (kubelet's default).
const DEFAULT_NODE_PORT: i64 = 10250;
/// How long reaching a node (TCP and TLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How much of a node's error answer is read.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// kubectl's annotation naming the container its commands pick by default.
pub const DEFAULT_CONTAINER_ANNOTATION: &str = "kubectl.kubernetes.io/default-container";

/// `(namespace, pod)` when `path` is a pod's `log` subresource.
pub fn log_path(path: &str) -> Option<(String, String)> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    match segs.as_slice() {
        ["api", "v1", "namespaces", ns, "pods", name, "log"] if !ns.is_empty() && !name.is_empty() => Some((ns.to_string(), name.to_string())),
        _ => None,
    }
}

/// `PodLogOptions` as the query carries them.
#[derive(Debug, Default, PartialEq)]
pub struct LogOptions {
    pub container: Option<String>,
    pub follow: bool,
    pub previous: bool,
    pub timestamps: bool,
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<chrono::DateTime<chrono::Utc>>,
    pub limit_bytes: Option<i64>,
}

impl LogOptions {
    /// Decodes the query (a value that does not parse is a 400) and validates it as
    /// upstream does (out of range is a 422 `Invalid` on `PodLogOptions`).
    pub fn from_query(pod: &str, query: &Query) -> ApiResult<Self> {
        // Query booleans decode as upstream's: present and not "0"/"false" means true.
        let flag = |k: &str| query.0.get(k).is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
        let since_time = match query.get("sinceTime") {
            Some(t) => Some(
                chrono::DateTime::parse_from_rfc3339(t)
                    .map_err(|_| ApiError::BadRequest(format!("invalid value for sinceTime: {t:?}: must be an RFC 3339 time")))?
                    .with_timezone(&chrono::Utc),
            ),
            None => None,
        };
        let o = Self {
            container: query.get("container").map(String::from),
            follow: flag("follow"),
            previous: flag("previous"),
            timestamps: flag("timestamps"),
            tail_lines: query.int("tailLines")?,
            since_seconds: query.int("sinceSeconds")?,
            since_time,
            limit_bytes: query.int("limitBytes")?,
        };
        let mut errors = Vec::new();
        if let Some(t) = o.tail_lines.filter(|t| *t < 0) {
            errors.push(FieldError::invalid("tailLines", t, "must be greater than or equal to 0"));
        }
        if let Some(l) = o.limit_bytes.filter(|l| *l < 1) {
            errors.push(FieldError::invalid("limitBytes", l, "must be greater than 0"));
        }
        match (o.since_seconds, o.since_time) {
            (Some(_), Some(_)) => errors.push(FieldError::forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified")),
            (Some(s), None) if s < 1 => errors.push(FieldError::invalid("sinceSeconds", s, "must be greater than 0")),
            _ => {}
        }
        if !errors.is_empty() {
            return Err(ApiError::Invalid(Target { kind: "PodLogOptions".into(), name: pod.into(), ..Target::default() }, errors));
        }
        Ok(o)
    }

    /// The node's query: kubelet's names, only what is set.
    fn node_query(&self) -> String {
        let mut q = Vec::new();
        for (name, on) in [("follow", self.follow), ("previous", self.previous), ("timestamps", self.timestamps)] {
            if on {
                q.push(format!("{name}=true"));
            }
        }
        for (name, value) in [("sinceSeconds", self.since_seconds), ("tailLines", self.tail_lines), ("limitBytes", self.limit_bytes)] {
            if let Some(v) = value {
                q.push(format!("{name}={v}"));
            }
        }
        if let Some(t) = self.since_time {
            q.push(format!("sinceTime={}", t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        }
        q.join("&")
    }
}

/// Every container name of a pod, in upstream's order: init, regular, ephemeral.
fn container_names(pod: &Value) -> Vec<&str> {
    ["initContainers", "containers", "ephemeralContainers"]
        .iter()
        .flat_map(|field| pod.pointer(&format!("/spec/{field}")).and_then(Value::as_array).into_iter().flatten())
        .filter_map(|c| c.get("name").and_then(Value::as_str))
        .collect()
}

/// The container whose log is wanted: the one asked for, which must exist; else the only
/// one; else the one the `kubectl.kubernetes.io/default-container` annotation names.
/// Upstream's API server leaves that annotation to kubectl (which sends `container`);
/// honouring it here too serves other clients the same container kubectl would pick.
pub fn resolve_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let all = container_names(pod);
    if let Some(c) = requested {
        return if all.contains(&c) { Ok(c.to_owned()) } else { Err(ApiError::BadRequest(format!("container {c} is not valid for pod {name}"))) };
    }
    let regular: Vec<&str> = pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten().filter_map(|c| c.get("name")?.as_str()).collect();
    if let [only] = regular.as_slice() {
        return Ok((*only).to_owned());
    }
    let annotated = pod.pointer("/metadata/annotations").and_then(|a| a.get(DEFAULT_CONTAINER_ANNOTATION)).and_then(Value::as_str);
    if let Some(c) = annotated.filter(|c| all.contains(c)) {
        return Ok(c.to_owned());
    }
    if all.is_empty() {
        return Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}")));
    }
    Err(ApiError::BadRequest(format!("a container name must be specified for pod {name}, choose one of: [{}]", all.join(" "))))
}

/// Where a node's endpoint is: its InternalIP (else Hostname, else ExternalIP) and the port
/// it posted in `status.daemonEndpoints.kubeletEndpoint.Port`.
pub fn node_endpoint(node: &Value) -> ApiResult<(String, u16)> {
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
    let of_type = |t: &str| addresses.iter().find(|a| a["type"] == t).and_then(|a| a["address"].as_str()).filter(|a| !a.is_empty()).map(String::from);
    let host = ["InternalIP", "Hostname", "ExternalIP"].into_iter().find_map(of_type).ok_or_else(|| {
        let known: Vec<String> = addresses.iter().map(|a| format!("{{{} {}}}", a["type"].as_str().unwrap_or(""), a["address"].as_str().unwrap_or(""))).collect();
        ApiError::Internal(format!("no preferred addresses found; known addresses: [{}]", known.join(" ")))
    })?;
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_i64).filter(|p| *p > 0).unwrap_or(DEFAULT_NODE_PORT);
    let port = u16::try_from(port).map_err(|_| ApiError::Internal(format!("node endpoint port {port} is out of range")))?;
    Ok((host, port))
}

/// What the store says about the request: the node URL to read from, or `None` when the
/// pod has no node yet.
fn locate(state: &SharedState, namespace: &str, name: &str, options: &LogOptions) -> ApiResult<Option<String>> {
    let pods = resources::find("", "v1", "pods").ok_or(ApiError::UnknownPath)?;
    let target = Target { group: "".into(), resource: "pods".into(), kind: "Pod".into(), name: name.into() };
    let pod = state.store.get(&pods.key(namespace, name)).map_err(|e| super::handlers::store_error(target.clone(), e))?.ok_or(ApiError::NotFound(target))?;
    let container = resolve_container(&pod, options.container.as_deref())?;
    let Some(node_name) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    let nodes = resources::find("", "v1", "nodes").ok_or(ApiError::UnknownPath)?;
    let node_target = Target { group: "".into(), resource: "nodes".into(), kind: "Node".into(), name: node_name.into() };
    let node = state.store.get(&nodes.key("", node_name)).map_err(|e| super::handlers::store_error(node_target.clone(), e))?.ok_or(ApiError::NotFound(node_target))?;
    let (host, port) = node_endpoint(&node)?;
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let query = options.node_query();
    let sep = if query.is_empty() { "" } else { "?" };
    Ok(Some(format!("https://{host}:{port}/containerLogs/{namespace}/{name}/{container}{sep}{query}")))
}

/// Serves a `pods/{name}/log` request.
pub async fn serve(state: SharedState, namespace: String, name: String, query: Query) -> ApiResult<Response> {
    let options = LogOptions::from_query(&name, &query)?;
    let located = {
        let state = state.clone();
        let (namespace, name) = (namespace.clone(), name.clone());
        tokio::task::spawn_blocking(move || locate(&state, &namespace, &name, &options))
            .await
            .map_err(|_| ApiError::Internal("the request could not be completed".into()))??
    };
    // A pod no node has taken yet has no logs: upstream answers with no content.
    let Some(url) = located else { return Ok(StatusCode::NO_CONTENT.into_response()) };
    let resp = fetch(&url, &state.admin_token).await.map_err(|e| ApiError::Internal(format!("Get \"{url}\": {e}")))?;
    let (parts, body) = resp.into_parts();
    match parts.status {
        StatusCode::OK => {
            // Streamed as the node sends it: a followed log goes on for as long as the run does.
            let mut out = Response::new(Body::new(body));
            out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            Ok(out)
        }
        code => {
            let limited = http_body_util::Limited::new(body, MAX_ERROR_BYTES);
            let text = limited.collect().await.map(|b| String::from_utf8_lossy(&b.to_bytes()).trim().to_owned()).unwrap_or_default();
            Err(match code {
                StatusCode::BAD_REQUEST => ApiError::BadRequest(text),
                StatusCode::NOT_FOUND => ApiError::NotFound(Target { group: "".into(), resource: "pods".into(), kind: "Pod".into(), name }),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => ApiError::Internal(format!("the node refused the API server's credentials ({code})")),
                _ => ApiError::Internal(format!("the node answered {code}: {text}")),
            })
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("invalid node address: {0}")]
    Address(String),
    #[error("timed out connecting")]
    Timeout,
}

/// An HTTP/1.1 connection to the node endpoint `uri` names, over TLS (upgrades allowed:
/// exec and port-forward switch protocols on it); the sender and the authority for `Host`.
pub(super) async fn node_connection(uri: &axum::http::Uri) -> Result<(hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>, axum::http::uri::Authority), FetchError> {
    let authority = uri.authority().ok_or_else(|| FetchError::Address(uri.to_string()))?.clone();
    let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = authority.port_u16().unwrap_or(443);
    let server_name = rustls::pki_types::ServerName::try_from(host.clone()).map_err(|_| FetchError::Address(host.clone()))?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        let tls = node_tls().map_err(std::io::Error::other)?;
        tokio_rustls::TlsConnector::from(tls).connect(server_name, tcp).await
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect).await.map_err(|_| FetchError::Timeout)??;
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await?;
    // Runs until the response (or the upgraded stream) is done with or dropped.
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "node connection ended with an error");
        }
    });
    Ok((sender, authority))
}

/// One GET to a node over HTTPS with the admin bearer token.
async fn fetch(url: &str, token: &str) -> Result<axum::http::Response<hyper::body::Incoming>, FetchError> {
    let uri: axum::http::Uri = url.parse().map_err(|_| FetchError::Address(url.into()))?;
    let (mut sender, authority) = node_connection(&uri).await?;
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let req = axum::http::Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|_| FetchError::Address(url.into()))?;
    Ok(sender.send_request(req).await?)
}

/// The TLS client for nodes. It checks that the node holds the key of the certificate it
/// presents but not who issued it: node certificates are self-signed, and upstream's API
/// server likewise verifies nothing about them unless given `--kubelet-certificate-authority`.
/// The bearer token still only goes over an encrypted connection.
pub(super) fn node_tls() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    if let Some(cfg) = CONFIG.get() {
        return Ok(cfg.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(AnyNodeCertificate(provider.clone()));
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(CONFIG.get_or_init(|| Arc::new(cfg)).clone())
}

#[derive(Debug)]
struct AnyNodeCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyNodeCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str], init: &[&str], annotation: Option<&str>) -> Value {
        let list = |names: &[&str]| names.iter().map(|n| json!({"name": n, "image": "i"})).collect::<Vec<_>>();
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": list(containers), "initContainers": list(init)}});
        if let Some(a) = annotation {
            p["metadata"]["annotations"] = json!({DEFAULT_CONTAINER_ANNOTATION: a});
        }
        p
    }

    #[test]
    fn containers_resolve_as_upstream() {
        assert_eq!(resolve_container(&pod(&["a"], &[], None), None).unwrap(), "a");
        assert_eq!(resolve_container(&pod(&["a", "b"], &["i"], None), Some("i")).unwrap(), "i");
        let e = resolve_container(&pod(&["a", "b"], &["i"], None), None).unwrap_err();
        assert_eq!(e.to_string(), "a container name must be specified for pod p, choose one of: [i a b]");
        assert_eq!(e.code(), StatusCode::BAD_REQUEST);
        assert_eq!(resolve_container(&pod(&["a"], &[], None), Some("c")).unwrap_err().to_string(), "container c is not valid for pod p");
        assert_eq!(resolve_container(&pod(&["a", "b"], &[], Some("b")), None).unwrap(), "b");
        assert!(resolve_container(&pod(&["a", "b"], &[], Some("zz")), None).is_err(), "an annotation naming no container is ignored");
    }

    #[test]
    fn options_are_checked_and_passed_on_with_kubelet_names() {
        let q = Query::parse(Some("container=a&follow=true&tailLines=2&timestamps=1&sinceSeconds=60&limitBytes=5&previous=false"));
        let o = LogOptions::from_query("p", &q).unwrap();
        assert_eq!(o.container.as_deref(), Some("a"));
        assert_eq!(o.node_query(), "follow=true&timestamps=true&sinceSeconds=60&tailLines=2&limitBytes=5");
        let since = LogOptions::from_query("p", &Query::parse(Some("sinceTime=2026-01-02T03%3A04%3A05%2B01%3A00"))).unwrap();
        assert_eq!(since.node_query(), "sinceTime=2026-01-02T02:04:05Z");

        let bad = LogOptions::from_query("p", &Query::parse(Some("tailLines=abc"))).unwrap_err();
        assert_eq!(bad.code(), StatusCode::BAD_REQUEST);
        assert!(bad.to_string().contains("tailLines"), "{bad}");
        let invalid = LogOptions::from_query("p", &Query::parse(Some("tailLines=-1"))).unwrap_err();
        assert_eq!(invalid.code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(invalid.to_string(), "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0");
        assert_eq!(invalid.to_status()["details"]["causes"][0]["field"], "tailLines");
        let both = LogOptions::from_query("p", &Query::parse(Some("sinceSeconds=1&sinceTime=2026-01-01T00:00:00Z"))).unwrap_err();
        assert_eq!(both.code(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(LogOptions::from_query("p", &Query::parse(Some("limitBytes=0"))).unwrap_err().code(), StatusCode::UNPROCESSABLE_ENTITY);
    }

    #[test]
    fn nodes_are_reached_on_their_internal_ip_and_posted_port() {
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.7"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 40123}}}});
        assert_eq!(node_endpoint(&node).unwrap(), ("10.0.0.7".into(), 40123));
        let old = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}}}});
        assert_eq!(node_endpoint(&old).unwrap(), ("n1".into(), 10250));
        assert!(node_endpoint(&json!({"status": {}})).is_err());
        assert_eq!(log_path("/api/v1/namespaces/default/pods/web/log"), Some(("default".into(), "web".into())));
        assert_eq!(log_path("/api/v1/namespaces/default/pods/web"), None);
    }
}
