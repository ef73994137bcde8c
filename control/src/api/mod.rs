//! The Kubernetes-compatible API server.
//!
//! [`router`] builds the whole HTTP surface from the resource table; [`serve`]
//! runs it over TLS on a listener until a shutdown future completes.

pub mod defaults;
pub mod discovery;
pub mod handlers;
pub mod logs;
pub mod patch;
pub mod protobuf;
pub mod request;
pub mod resources;
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
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return ok(discovery::version()),
        ["api"] => return ok(discovery::api_versions()),
        ["apis"] => return ok(discovery::api_groups()),
        ["openapi", "v3"] => return ok(discovery::openapi_root()),
        ["openapi", "v3", gv @ ..] => return discovery::openapi_group_version(&gv.join("/")).map(|d| json_response(StatusCode::OK, &d)).ok_or(ApiError::UnknownPath),
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
        (Method::PUT, true, None | Some(Subresource::Status | Subresource::Scale | Subresource::Finalize)) => {
            handlers::replace(state, &addr, headers, body, &query, wanted)
        }
        (Method::PATCH, true, None | Some(Subresource::Status | Subresource::Scale)) => handlers::patch(state, &addr, headers, body, &query, wanted),
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
