//! The Kubernetes-compatible API server.
//!
//! [`router`] builds the whole HTTP surface from the resource table; [`serve`]
//! runs it over TLS on a listener until a shutdown future completes.

pub mod connect;
pub mod defaults;
pub mod discovery;
pub mod handlers;
pub mod logs;
pub mod openapi;
pub mod patch;
pub mod protobuf;
pub mod proxy;
pub mod request;
pub mod resources;
pub mod schema;
pub mod selectors;
pub mod services;
pub mod status;
pub mod tables;
pub mod validation;
pub mod watch;

use crate::auth::token_matches;
use crate::store::Store;
use axum::body::Body;
use axum::extract::{Request, State};
use futures::StreamExt;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use handlers::json_response;
use request::{parse_address, wanted, Query};
use resources::Subresource;
use status::{ApiError, ApiResult};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// Request bodies above this get 413, as upstream's 3 MiB limit.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// What every handler shares.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    /// The bearer token that grants admin access.
    pub admin_token: String,
    /// Woken when a namespace starts terminating, so its contents are removed promptly.
    pub namespace_deleted: Arc<Notify>,
    /// Held while an eviction checks disruption budgets and deletes its pod.
    pub evictions: std::sync::Mutex<()>,
    /// ClusterIPs and NodePorts of Services.
    pub services: services::ServiceAllocator,
}

pub type SharedState = Arc<ApiState>;

pub fn router(state: SharedState) -> Router {
    Router::new().fallback(dispatch).with_state(state)
}

fn authorized(req: &Request, token: &str) -> bool {
    req.headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| token_matches(t.trim(), token))
}

async fn dispatch(State(state): State<SharedState>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    if matches!(path.as_str(), "/healthz" | "/livez" | "/readyz") {
        return (StatusCode::OK, "ok").into_response();
    }
    if !authorized(&req, &state.admin_token) {
        return ApiError::Unauthorized.into_response();
    }
    // Pod logs stream from the pod's node for as long as they last: served on their own,
    // off the synchronous handlers.
    if req.method() == Method::GET {
        if let Some((namespace, name)) = logs::log_path(&path) {
            let query = Query::parse(req.uri().query());
            return logs::serve(state, namespace, name, query).await.unwrap_or_else(|e| {
                if matches!(e, ApiError::Internal(_)) {
                    tracing::warn!(%path, error = %e, "pod log request failed");
                }
                e.into_response()
            });
        }
    }
    // Streams into a pod (exec, attach, port-forward) pass through to its node, and the
    // proxy subresources to the pod, Service or node, for as long as they last.
    if let Some(target) = connect::connect_path(&path) {
        return connect::serve(state, req, target).await;
    }
    if let Some(target) = proxy::proxy_path(&path) {
        return proxy::serve(state, req, target).await;
    }
    let declared = req.headers().get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        drain(req.into_body()).await;
        return ApiError::TooLarge(MAX_BODY_BYTES).into_response();
    }
    let (parts, body) = req.into_parts();
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { return ApiError::BadRequest("the request body could not be read".into()).into_response() };
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            drain(Body::from_stream(stream)).await;
            return ApiError::TooLarge(MAX_BODY_BYTES).into_response();
        }
        buf.extend_from_slice(&chunk);
    }
    let body = buf;
    let query = Query::parse(parts.uri.query());
    // Handlers are synchronous and a write waits for the disk: keep that off the
    // async workers that drive every connection and watch.
    let method = parts.method.clone();
    let path2 = path.clone();
    let result = tokio::task::spawn_blocking(move || route(&state, &parts.method, &path2, &parts.headers, &body, query)).await;
    match result {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if matches!(e, ApiError::Internal(_)) {
                tracing::error!(%method, %path, error = %e, "request failed");
            }
            e.into_response()
        }
        Err(e) => {
            tracing::error!(%method, %path, error = %e, "request handler panicked");
            ApiError::Internal("the request could not be completed".into()).into_response()
        }
    }
}

/// Read and discard the rest of a refused body, within bounds, so that HTTP/2
/// clients get to read the 413 instead of a reset stream. Beyond the bounds the
/// stream is reset, which is all a client lying about its size deserves.
async fn drain(body: Body) {
    const DRAIN_BYTES: usize = 64 * 1024 * 1024;
    let mut stream = body.into_data_stream();
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok(chunk))) = tokio::time::timeout_at(deadline, stream.next()).await {
        seen += chunk.len();
        if seen > DRAIN_BYTES {
            break;
        }
    }
}

fn route(state: &ApiState, method: &Method, path: &str, headers: &axum::http::HeaderMap, body: &[u8], query: Query) -> ApiResult<Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let ok = |v: serde_json::Value| Ok(json_response(StatusCode::OK, &v));
    // Not every JSON body is an API object: upstream writes `/version` indented and
    // the OpenAPI documents as marshalled, neither with the serializer's newline.
    let raw = |bytes: Body| Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response());
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return raw(serde_json::to_vec_pretty(&discovery::version()).unwrap_or_default().into()),
        ["api"] => return ok(discovery::api_versions()),
        ["apis"] => return ok(discovery::api_groups()),
        ["openapi", "v3"] => return raw(serde_json::to_vec(&openapi::root()).unwrap_or_default().into()),
        ["openapi", "v3", gv @ ..] => {
            return openapi::group_version_bytes(&gv.join("/")).ok_or(ApiError::UnknownPath).and_then(|d| raw(Body::from(d)))
        }
        ["openapi", "v2"] => {
            let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
            if accept.contains("protobuf") {
                return Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, openapi::V2_PROTOBUF)], openapi::v2_protobuf()).into_response());
            }
            return raw(serde_json::to_vec(&openapi::v2_json()).unwrap_or_default().into());
        }
        ["apis", g] => return discovery::api_group(g).ok_or(ApiError::UnknownPath).and_then(ok),
        ["api", v] => return discovery::resource_list("", v).ok_or(ApiError::UnknownPath).and_then(ok),
        ["apis", g, v] => return discovery::resource_list(g, v).ok_or(ApiError::UnknownPath).and_then(ok),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::UnknownPath),
    };
    let addr = parse_address(group, version, rest)?;
    let wanted = wanted(headers);
    let named = addr.name.is_some();
    match (method.clone(), named, addr.sub) {
        (Method::GET, _, None) if query.flag("watch") => watch::watch(state, &addr, query, wanted),
        (Method::GET, false, None) => handlers::list(state, &addr, &query, wanted),
        (Method::GET, true, _) => handlers::get(state, &addr, &query, wanted),
        (Method::POST, false, None) => handlers::create(state, &addr, headers, body, &query, wanted),
        (Method::POST, true, Some(Subresource::Binding)) => handlers::bind(state, &addr, headers, body),
        (Method::POST, true, Some(Subresource::Eviction)) => handlers::evict(state, &addr, headers, body),
        (Method::PUT, true, None | Some(Subresource::Status | Subresource::Scale | Subresource::Finalize | Subresource::EphemeralContainers)) => {
            handlers::replace(state, &addr, headers, body, &query, wanted)
        }
        (Method::PATCH, true, None | Some(Subresource::Status | Subresource::Scale | Subresource::EphemeralContainers)) => handlers::patch(state, &addr, headers, body, &query, wanted),
        (Method::DELETE, true, None) => handlers::delete(state, &addr, headers, body, &query),
        (Method::DELETE, false, None) => handlers::delete_collection(state, &addr, headers, body, &query),
        _ => Err(ApiError::MethodNotAllowed),
    }
}

/// Serve `router` over TLS on `listener` until `shutdown` completes; then stop
/// accepting, give open requests a moment, and return.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, app: Router, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::service::TowerToHyperService;

    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                // Out of file descriptors and the like: keep serving the connections we have.
                Err(e) => { tracing::warn!(error = %e, "accept failed"); continue; }
            },
        };
        // Watch events and small responses must not wait on delayed ACKs (Nagle).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let svc = TowerToHyperService::new(app);
            let builder = Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
            if let Err(e) = watcher.watch(conn.into_owned()).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    // Watches stay open for minutes; do not let them hold shutdown up.
    let _ = tokio::time::timeout(Duration::from_secs(2), graceful.shutdown()).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::LocalStore;
    use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};

    const TOKEN: &str = "test-token";

    fn state() -> SharedState {
        let state: SharedState = Arc::new(ApiState {
            store: Arc::new(LocalStore::in_memory()),
            admin_token: TOKEN.into(),
            namespace_deleted: Default::default(),
            evictions: Default::default(),
            services: services::ServiceAllocator::new("10.96.0.0/16".parse().expect("cidr")),
        });
        crate::bootstrap(&state).expect("initial namespaces");
        state
    }

    /// One request through the whole dispatcher; returns the status code and the exact body.
    async fn call(state: &SharedState, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(CONTENT_TYPE, content_type)
            .body(Body::from(body.to_owned()))
            .expect("request");
        let resp = dispatch(State(state.clone()), req).await;
        let code = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        (code, String::from_utf8(bytes.to_vec()).expect("utf-8"))
    }

    const CM: &str = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"one"},"data":{"a":"b"}}"#;
    const CMS: &str = "/api/v1/namespaces/default/configmaps";

    #[tokio::test]
    async fn status_bodies_are_byte_for_byte_upstream() {
        let s = state();
        let (code, body) = call(&s, "GET", &format!("{CMS}/missing"), "application/json", "").await;
        assert_eq!(code, 404);
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"missing\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"missing\",\"kind\":\"configmaps\"},\"code\":404}\n"
        );
        let (code, body) = call(&s, "GET", "/apis/apps/v1/namespaces/default/deployments/gone", "application/json", "").await;
        assert_eq!(code, 404);
        assert!(body.contains(r#""details":{"name":"gone","group":"apps","kind":"deployments"},"code":404}"#), "{body}");

        assert_eq!(call(&s, "POST", CMS, "application/json", CM).await.0, 201);
        let (code, body) = call(&s, "POST", CMS, "application/json", CM).await;
        assert_eq!(code, 409);
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"configmaps \\\"one\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"one\",\"kind\":\"configmaps\"},\"code\":409}\n"
        );
        let stale = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"one","resourceVersion":"1"},"data":{"a":"c"}}"#;
        let (code, body) = call(&s, "PUT", &format!("{CMS}/one"), "application/json", stale).await;
        assert_eq!(code, 409);
        assert!(body.ends_with("\"reason\":\"Conflict\",\"details\":{\"name\":\"one\",\"kind\":\"configmaps\"},\"code\":409}\n"), "{body}");

        let bad = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad"},"spec":{"replicas":-1,"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#;
        let (code, body) = call(&s, "POST", "/apis/apps/v1/namespaces/default/deployments", "application/json", bad).await;
        assert_eq!(code, 422);
        assert!(body.starts_with(r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Deployment.apps \"bad\" is invalid: "#), "{body}");
        assert!(
            body.contains(r#","reason":"Invalid","details":{"name":"bad","group":"apps","kind":"Deployment","causes":[{"reason":"FieldValueInvalid","message":"Invalid value: -1: must be greater than or equal to 0","field":"spec.replicas"}"#),
            "{body}"
        );
        assert!(body.ends_with("]},\"code\":422}\n"), "{body}");

        // What no route serves: upstream's generic 404 with empty details.
        let (code, body) = call(&s, "GET", "/api/v1/namespaces/default/widgets", "application/json", "").await;
        assert_eq!(code, 404);
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server could not find the requested resource\",\"reason\":\"NotFound\",\"details\":{},\"code\":404}\n"
        );
        let (code, body) = call(&s, "POST", &format!("{CMS}/one"), "application/json", CM).await;
        assert_eq!(code, 405);
        assert!(body.ends_with("\"reason\":\"MethodNotAllowed\",\"details\":{},\"code\":405}\n"), "{body}");
        // A bad request names no object: no details at all.
        let (code, body) = call(&s, "POST", CMS, "application/json", "{").await;
        assert_eq!(code, 400);
        assert!(!body.contains("details") && body.ends_with("\"reason\":\"BadRequest\",\"code\":400}\n"), "{body}");
    }

    #[tokio::test]
    async fn every_api_object_body_ends_in_a_newline() {
        let s = state();
        let (code, created) = call(&s, "POST", CMS, "application/json", CM).await;
        assert_eq!(code, 201);
        assert!(created.ends_with("}\n") && !created.ends_with("\n\n"), "{created:?}");
        for path in [format!("{CMS}/one"), CMS.to_owned(), "/api".into(), "/apis".into(), "/api/v1".into()] {
            let (code, body) = call(&s, "GET", &path, "application/json", "").await;
            assert_eq!(code, 200, "{path}");
            assert!(body.ends_with("}\n"), "{path}: {body:?}");
        }
        // Upstream writes these two as they are, without the serializer's newline.
        let (_, version) = call(&s, "GET", "/version", "application/json", "").await;
        assert!(version.starts_with("{\n  \"") && version.ends_with('}'), "{version:?}");
        let (_, openapi) = call(&s, "GET", "/openapi/v3", "application/json", "").await;
        assert!(openapi.ends_with('}'), "{openapi:?}");
    }

    #[tokio::test]
    async fn created_objects_carry_their_empty_status() {
        let s = state();
        let deploy = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i:1"}]}}}}"#;
        let (code, body) = call(&s, "POST", "/apis/apps/v1/namespaces/default/deployments", "application/json", deploy).await;
        assert_eq!(code, 201, "{body}");
        assert!(body.contains(r#""status":{}"#), "{body}");
        let (_, body) = call(&s, "GET", "/apis/apps/v1/namespaces/default/deployments/d", "application/json", "").await;
        assert!(body.contains(r#""status":{}"#), "a read keeps it: {body}");
        let svc = r#"{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},"spec":{"ports":[{"port":80}]}}"#;
        let (code, body) = call(&s, "POST", "/api/v1/namespaces/default/services", "application/json", svc).await;
        assert_eq!(code, 201, "{body}");
        assert!(body.contains(r#""status":{"loadBalancer":{}}"#), "{body}");
        let (_, body) = call(&s, "POST", CMS, "application/json", CM).await;
        let cm: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert!(cm.get("status").is_none(), "a ConfigMap has no status: {body}");
    }

    #[tokio::test]
    async fn a_json_patch_test_that_fails_is_422_as_upstream() {
        let s = state();
        call(&s, "POST", CMS, "application/json", CM).await;
        let patch = r#"[{"op":"test","path":"/data/a","value":"nope"},{"op":"replace","path":"/data/a","value":"x"}]"#;
        let (code, body) = call(&s, "PATCH", &format!("{CMS}/one"), "application/json-patch+json", patch).await;
        assert_eq!(code, 422);
        assert_eq!(
            body,
            "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"the server rejected our request due to an error in our request\",\"reason\":\"Invalid\",\"details\":{},\"code\":422}\n"
        );
        let (_, cm) = call(&s, "GET", &format!("{CMS}/one"), "application/json", "").await;
        assert!(cm.contains(r#""data":{"a":"b"}"#), "nothing was written: {cm}");
        // A path that is not there does not apply either; a body that is no patch is 400.
        let (code, _) = call(&s, "PATCH", &format!("{CMS}/one"), "application/json-patch+json", r#"[{"op":"remove","path":"/data/zz"}]"#).await;
        assert_eq!(code, 422);
        let (code, _) = call(&s, "PATCH", &format!("{CMS}/one"), "application/json-patch+json", r#"{"op":"remove"}"#).await;
        assert_eq!(code, 400);
        let ok = r#"[{"op":"test","path":"/data/a","value":"b"},{"op":"replace","path":"/data/a","value":"x"}]"#;
        let (code, body) = call(&s, "PATCH", &format!("{CMS}/one"), "application/json-patch+json", ok).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(r#""data":{"a":"x"}"#), "{body}");
    }

    #[tokio::test]
    async fn an_unserved_subresource_is_a_404_with_empty_details() {
        let s = state();
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#;
        assert_eq!(call(&s, "POST", "/api/v1/namespaces/default/pods", "application/json", pod).await.0, 201);
        let (code, body) = call(&s, "PATCH", "/api/v1/namespaces/default/pods/p/scale", "application/merge-patch+json", "{}").await;
        assert_eq!(code, 404);
        assert!(body.contains(r#""message":"the server could not find the requested resource","reason":"NotFound","details":{}"#), "{body}");
    }

    #[tokio::test]
    async fn ephemeral_containers_change_only_through_their_subresource() {
        let s = state();
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#;
        assert_eq!(call(&s, "POST", "/api/v1/namespaces/default/pods", "application/json", pod).await.0, 201);
        const EC: &str = "/api/v1/namespaces/default/pods/p/ephemeralcontainers";
        // What `kubectl debug` sends; anything else in the body is ignored.
        let patch = r#"{"metadata":{"labels":{"a":"changed"}},"spec":{"ephemeralContainers":[{"name":"debugger","image":"busybox","resources":{},"stdin":true}]}}"#;
        let (code, body) = call(&s, "PATCH", EC, "application/strategic-merge-patch+json", patch).await;
        assert_eq!(code, 200, "{body}");
        let got: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(got["spec"]["ephemeralContainers"][0]["name"], "debugger");
        assert_eq!(got["metadata"]["labels"]["a"], "b");
        let (code, body) = call(&s, "GET", EC, "application/json", "").await;
        assert_eq!((code, body.contains(r#""kind":"Pod""#)), (200, true), "{body}");
        // A second one with the same name merges into the first: a change, refused.
        let again = r#"{"spec":{"ephemeralContainers":[{"name":"debugger","image":"other"}]}}"#;
        let (code, body) = call(&s, "PATCH", EC, "application/strategic-merge-patch+json", again).await;
        assert_eq!(code, 422, "{body}");
        assert!(body.contains(r#"spec.ephemeralContainers[debugger]: Forbidden: existing ephemeral containers \"debugger\" may not be changed"#), "{body}");
        let ported = r#"{"spec":{"ephemeralContainers":[{"name":"d2","image":"x","ports":[{"containerPort":80}]}]}}"#;
        let (code, body) = call(&s, "PATCH", EC, "application/strategic-merge-patch+json", ported).await;
        assert_eq!(code, 422, "{body}");
        assert!(body.contains("].ports: Forbidden: cannot be set for an Ephemeral Container"), "{body}");
        // A plain update of the pod keeps them.
        let (_, current) = call(&s, "GET", "/api/v1/namespaces/default/pods/p", "application/json", "").await;
        let mut current: serde_json::Value = serde_json::from_str(&current).unwrap();
        current["spec"].as_object_mut().unwrap().remove("ephemeralContainers");
        let (code, body) = call(&s, "PUT", "/api/v1/namespaces/default/pods/p", "application/json", &current.to_string()).await;
        assert_eq!(code, 200, "{body}");
        assert!(body.contains(r#""name":"debugger""#), "{body}");
    }

    #[tokio::test]
    async fn binding_answers_a_success_status_in_upstream_order() {
        let s = state();
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"i:1"}]}}"#;
        call(&s, "POST", "/api/v1/namespaces/default/pods", "application/json", pod).await;
        let binding = r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"p"},"target":{"kind":"Node","name":"n1"}}"#;
        let (code, body) = call(&s, "POST", "/api/v1/namespaces/default/pods/p/binding", "application/json", binding).await;
        assert_eq!(code, 201);
        assert_eq!(body, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Success\",\"code\":201}\n");
    }
}
