//! `pods/{name}/exec`, `pods/{name}/attach` and `pods/{name}/portforward`: the API server
//! checks the request as upstream's does (the pod exists and is not finished, the
//! container is one of its own), then passes the connection through to the pod's node
//! (kubelet's `/exec/{ns}/{pod}/{container}`, `/attach/...`, `/portForward/{ns}/{pod}`).
//! The node speaks the streaming protocols (WebSocket channels, SPDY inside a WebSocket);
//! once it has answered `101 Switching Protocols`, bytes are copied both ways unchanged.

use super::logs::{node_connection, node_endpoint, resolve_container, FetchError};
use super::request::Query;
use super::resources;
use super::status::{ApiError, ApiResult, Target};
use super::SharedState;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// How much of a node's refusal is read.
const MAX_ERROR_BYTES: usize = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Exec,
    Attach,
    PortForward,
}

impl Verb {
    /// The word upstream's messages use ("cannot exec into ...").
    fn word(self) -> &'static str {
        match self {
            Verb::Exec => "exec",
            Verb::Attach => "attach",
            Verb::PortForward => "port-forward",
        }
    }
}

/// A streaming subresource request: which pod, and what to do with it.
#[derive(Debug, PartialEq, Eq)]
pub struct ConnectTarget {
    pub namespace: String,
    pub pod: String,
    pub verb: Verb,
}

/// The target when `path` is a pod's `exec`, `attach` or `portforward` subresource.
pub fn connect_path(path: &str) -> Option<ConnectTarget> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let ["api", "v1", "namespaces", ns, "pods", name, sub] = segs.as_slice() else { return None };
    let verb = match *sub {
        "exec" => Verb::Exec,
        "attach" => Verb::Attach,
        "portforward" => Verb::PortForward,
        _ => return None,
    };
    (!ns.is_empty() && !name.is_empty()).then(|| ConnectTarget { namespace: ns.to_string(), pod: name.to_string(), verb })
}

/// Headers the node needs to answer the upgrade itself; the caller's credential and
/// everything else stay here.
const PASSED_HEADERS: [&str; 6] = ["upgrade", "connection", "sec-websocket-key", "sec-websocket-version", "sec-websocket-protocol", "x-stream-protocol-version"];

/// Serves an exec, attach or port-forward request.
pub async fn serve(state: SharedState, mut req: Request, target: ConnectTarget) -> Response {
    if !matches!(*req.method(), Method::GET | Method::POST) {
        return ApiError::MethodNotAllowed.into_response();
    }
    let query = Query::parse(req.uri().query());
    let located = {
        let state = state.clone();
        let raw_query = req.uri().query().unwrap_or("").to_owned();
        tokio::task::spawn_blocking(move || node_url(&state, &target, &query, &raw_query)).await
    };
    let url = match located {
        Ok(Ok(url)) => url,
        Ok(Err(e)) => return e.into_response(),
        Err(_) => return ApiError::Internal("the request could not be completed".into()).into_response(),
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut headers = HeaderMap::new();
    for name in PASSED_HEADERS {
        for value in req.headers().get_all(name) {
            headers.append(HeaderName::from_static(name), value.clone());
        }
    }
    let node_resp = match open(&url, req.method().clone(), headers, &state.admin_token).await {
        Ok(r) => r,
        Err(e) => return ApiError::Internal(format!("error dialing backend: {e}")).into_response(),
    };
    if node_resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return relay_refusal(node_resp).await;
    }
    let mut out = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (name, value) in node_resp.headers() {
        if name != header::CONTENT_LENGTH {
            out = out.header(name, value);
        }
    }
    tokio::spawn(async move {
        let node_upgrade = hyper::upgrade::on(node_resp);
        let (client, node) = match tokio::join!(client_upgrade, node_upgrade) {
            (Ok(c), Ok(n)) => (c, n),
            (c, n) => {
                tracing::debug!(client = ?c.err(), node = ?n.err(), "a streaming upgrade did not complete");
                return;
            }
        };
        let (mut client, mut node) = (TokioIo::new(client), TokioIo::new(node));
        // Ends when either side closes; the other side's half is then shut down.
        if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut node).await {
            tracing::debug!(error = %e, "a streaming connection ended with an error");
        }
    });
    out.body(Body::empty()).unwrap_or_else(|_| ApiError::Internal("bad upgrade headers from the node".into()).into_response())
}

/// The node's URL for the request, after upstream's checks: the pod exists, has a node,
/// is not finished, and (exec, attach) names one of its containers.
fn node_url(state: &SharedState, target: &ConnectTarget, query: &Query, raw_query: &str) -> ApiResult<String> {
    let pods = resources::find("", "v1", "pods").ok_or(ApiError::UnknownPath)?;
    let pod_target = Target { group: "".into(), resource: "pods".into(), kind: "Pod".into(), name: target.pod.clone() };
    let pod = state.store.get(&pods.key(&target.namespace, &target.pod)).map_err(|e| super::handlers::store_error(pod_target.clone(), e))?.ok_or(ApiError::NotFound(pod_target))?;
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("Pending");
    if matches!(phase, "Succeeded" | "Failed") {
        return Err(ApiError::BadRequest(format!("cannot {} into a container in a completed pod; current phase is {phase}", target.verb.word())));
    }
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty());
    let Some(node_name) = node_name else {
        return Err(ApiError::BadRequest(format!("pod {} does not have a host assigned", target.pod)));
    };
    let nodes = resources::find("", "v1", "nodes").ok_or(ApiError::UnknownPath)?;
    let node_target = Target { group: "".into(), resource: "nodes".into(), kind: "Node".into(), name: node_name.into() };
    let node = state.store.get(&nodes.key("", node_name)).map_err(|e| super::handlers::store_error(node_target.clone(), e))?.ok_or(ApiError::NotFound(node_target))?;
    let (host, port) = node_endpoint(&node)?;
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    let (ns, name) = (&target.namespace, &target.pod);
    let path = match target.verb {
        Verb::PortForward => format!("/portForward/{ns}/{name}"),
        Verb::Exec | Verb::Attach => {
            let container = resolve_container(&pod, query.get("container"))?;
            let streams = ["stdin", "stdout", "stderr"].iter().filter(|s| query.flag(s)).count();
            if streams == 0 {
                return Err(ApiError::BadRequest("you must specify at least 1 of stdin, stdout, stderr".into()));
            }
            if target.verb == Verb::Exec && query.get("command").is_none() {
                return Err(ApiError::BadRequest("you must specify at least 1 command".into()));
            }
            let word = if target.verb == Verb::Exec { "exec" } else { "attach" };
            format!("/{word}/{ns}/{name}/{container}")
        }
    };
    let sep = if raw_query.is_empty() { "" } else { "?" };
    Ok(format!("https://{host}:{port}{path}{sep}{raw_query}"))
}

/// The node's answer when it did not switch protocols: its Status passed on as it is, or
/// its text as the Status upstream would give.
async fn relay_refusal(resp: hyper::Response<hyper::body::Incoming>) -> Response {
    let (parts, body) = resp.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_ERROR_BYTES).collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    if serde_json::from_slice::<Value>(&bytes).is_ok_and(|v| v["kind"] == "Status") {
        let mut out = Response::new(Body::from(bytes));
        *out.status_mut() = parts.status;
        out.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
        return out;
    }
    // The node's words as the Status message, so kubectl prints them as upstream's
    // ("unable to upgrade connection: container not found ...").
    let text = String::from_utf8_lossy(&bytes).trim().to_owned();
    let code = parts.status;
    let reason = match code {
        StatusCode::BAD_REQUEST => "BadRequest",
        StatusCode::NOT_FOUND => "NotFound",
        _ => "InternalError",
    };
    let status = serde_json::json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": text, "reason": reason, "code": code.as_u16()});
    let mut out = Response::new(Body::from(status.to_string()));
    *out.status_mut() = code;
    out.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    out
}

/// Sends the upgrade request to the node over HTTPS with the node credential.
async fn open(url: &str, method: Method, headers: HeaderMap, token: &str) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let uri: axum::http::Uri = url.parse().map_err(|_| format!("invalid node address {url}"))?;
    let dial = || format!("dial tcp {}", uri.authority().map_or("", |a| a.as_str()));
    let (mut sender, authority) = node_connection(&uri).await.map_err(|e| match e {
        FetchError::Timeout => format!("{}: i/o timeout", dial()),
        FetchError::Io(e) => format!("{}: {e}", dial()),
        other => other.to_string(),
    })?;
    let mut builder = hyper::Request::builder().method(method).uri(uri.path_and_query().map_or("/", |p| p.as_str()));
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    let req = builder
        .header(header::HOST, authority.as_str())
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_three_streaming_subresources_of_pods_are_connect_paths() {
        let t = connect_path("/api/v1/namespaces/shop/pods/web-0/exec").unwrap();
        assert_eq!(t, ConnectTarget { namespace: "shop".into(), pod: "web-0".into(), verb: Verb::Exec });
        assert_eq!(connect_path("/api/v1/namespaces/a/pods/b/attach").unwrap().verb, Verb::Attach);
        assert_eq!(connect_path("/api/v1/namespaces/a/pods/b/portforward").unwrap().verb, Verb::PortForward);
        for other in ["/api/v1/namespaces/a/pods/b/log", "/api/v1/namespaces/a/pods/b", "/api/v1/namespaces/a/services/b/exec", "/api/v1/namespaces//pods/b/exec", "/apis/x/v1/namespaces/a/pods/b/exec"] {
            assert_eq!(connect_path(other), None, "{other}");
        }
    }
}
