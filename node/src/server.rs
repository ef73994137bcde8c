//! The node's own HTTPS endpoint, as kubelet's port 10250: the API server reaches it to
//! stream container logs for `kubectl logs`.
//!
//! ```text
//! GET /containerLogs/{namespace}/{pod}/{container}?follow=&previous=&tailLines=&sinceSeconds=&sinceTime=&timestamps=&limitBytes=
//! ```
//!
//! Every request carries `Authorization: Bearer <token>` (the token the node was given),
//! else 401. The serving certificate is self-signed and kept in the node's data dir, as
//! kubelet's is when it has no other: callers do not verify it.
//!
//! Which run of a container is read follows kubelet: the pod's status names the current
//! run (running, terminated, or the last one while a restart waits out its back-off) and
//! the previous one (`lastState`); the run's ID is where its log file is.

use crate::logs::{self, Joiner, LogQuery, Printer, RunLog};
use crate::status;
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use std::collections::HashSet;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// The response body: a whole log, or a log followed as it grows.
pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("making the serving certificate failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
}

/// Where the server learns about the pods bound to this node.
///
/// ```ignore
/// let pod = source.pod("default", "web").await?; // None: no such pod
/// ```
pub trait PodSource: Send + Sync {
    fn pod<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Pod>, String>>;
}

/// The API server: the pod as this node last reported it.
impl PodSource for kube::Client {
    fn pod<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Pod>, String>> {
        Box::pin(async move {
            let api: kube::Api<Pod> = kube::Api::namespaced(self.clone(), namespace);
            api.get_opt(name).await.map_err(|e| e.to_string())
        })
    }
}

/// What the server needs from the node.
pub struct ServerState {
    pub node_name: String,
    /// The bearer token every request must carry.
    pub token: String,
    /// The root of the container logs (see [`logs`]).
    pub logs_dir: PathBuf,
    /// Log files of runs in progress: a followed log ends once its run is not in here.
    pub running_logs: Arc<Mutex<HashSet<PathBuf>>>,
    pub pods: Arc<dyn PodSource>,
    /// How often a followed log is checked for new lines.
    pub poll: Duration,
    /// Runs exec sessions' instances.
    pub runtime: Arc<crate::wasm::WasmRuntime>,
    /// Container runs in progress: what exec, attach and port-forward reach.
    pub containers: Arc<crate::exec::Containers>,
}

/// The serving certificate and key, from `<data_dir>/pki/node.{crt,key}`, made (self-signed,
/// naming the node's name and address) when they are not there yet.
pub fn tls_config(data_dir: &Path, node_name: &str, host_ip: &str) -> Result<Arc<rustls::ServerConfig>, ServerError> {
    let pki = data_dir.join("pki");
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| ServerError::Io { path, source }
    };
    std::fs::create_dir_all(&pki).map_err(io(&pki))?;
    let (cert_path, key_path) = (pki.join("node.crt"), pki.join("node.key"));
    let loaded = match (std::fs::read(&cert_path), std::fs::read(&key_path)) {
        (Ok(cert), Ok(key)) => parse_identity(&cert, &key),
        _ => None,
    };
    let (certs, key) = match loaded {
        Some(identity) => identity,
        None => {
            let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned(), host_ip.to_owned()];
            names.push(node_name.to_owned());
            names.dedup();
            let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
            params.distinguished_name.push(rcgen::DnType::CommonName, format!("{node_name}@wasmkube-node"));
            for n in names {
                let san = match n.parse::<std::net::IpAddr>() {
                    Ok(ip) => rcgen::SanType::IpAddress(ip),
                    // A node name that is no DNS name is simply not in the certificate.
                    Err(_) => match n.try_into() {
                        Ok(dns) => rcgen::SanType::DnsName(dns),
                        Err(_) => continue,
                    },
                };
                if !params.subject_alt_names.contains(&san) {
                    params.subject_alt_names.push(san);
                }
            }
            let key = rcgen::KeyPair::generate()?;
            let cert = params.self_signed(&key)?;
            write_private(&key_path, key.serialize_pem().as_bytes()).map_err(io(&key_path))?;
            write_private(&cert_path, cert.pem().as_bytes()).map_err(io(&cert_path))?;
            parse_identity(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
                .ok_or_else(|| ServerError::Tls(rustls::Error::General("the new serving certificate does not parse".into())))?
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider).with_safe_default_protocol_versions()?.with_no_client_auth().with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

type Identity = (Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>);

fn parse_identity(cert: &[u8], key: &[u8]) -> Option<Identity> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert).collect::<Result<Vec<_>, _>>().ok().filter(|c| !c.is_empty())?;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key).ok()?;
    Some((certs, key))
}

/// Writes a file only its owner can read (the key).
fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(contents)
}

/// Serves HTTPS on `listener` until `shutdown` completes; then open connections (followed
/// logs among them) are cut.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, state: Arc<ServerState>, shutdown: impl Future<Output = ()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "node server: accept failed");
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, state) = (acceptor.clone(), state.clone());
        connections.spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "node server: TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(state, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tls), service).with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "node server: connection ended with an error");
            }
        });
        // Reap finished connections so a long-lived node does not collect them.
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

pub(crate) fn text(code: StatusCode, message: impl Into<String>) -> Response<Body> {
    let mut body = message.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut resp = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = code;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

fn authorized<B>(req: &Request<B>, token: &str) -> bool {
    let presented = req.headers().get(hyper::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    presented.is_some_and(|p| {
        let (a, b) = (p.trim().as_bytes(), token.as_bytes());
        // Constant time for tokens of the right length.
        !b.is_empty() && a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    })
}

/// Answers one request.
pub async fn handle<B: Send + 'static>(state: Arc<ServerState>, req: Request<B>) -> Response<Body> {
    if !authorized(&req, &state.token) {
        let mut resp = text(StatusCode::UNAUTHORIZED, "Unauthorized");
        resp.headers_mut().insert(hyper::header::WWW_AUTHENTICATE, hyper::header::HeaderValue::from_static("Bearer"));
        return resp;
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["containerLogs", ns, pod, container] if !ns.is_empty() && !pod.is_empty() && !container.is_empty() => {
            if req.method() != Method::GET {
                return text(StatusCode::METHOD_NOT_ALLOWED, format!("method {} is not allowed", req.method()));
            }
            let options = match LogOptions::parse(req.uri().query()) {
                Ok(o) => o,
                Err((code, message)) => return text(code, message),
            };
            container_logs(&state, ns, pod, container, options).await
        }
        ["exec", ns, pod, container] | ["attach", ns, pod, container] if !ns.is_empty() && !pod.is_empty() && !container.is_empty() => {
            let (ns, pod, container) = (ns.to_string(), pod.to_string(), container.to_string());
            let attach = segments[0] == "attach";
            crate::streams::exec_or_attach(state, req, &ns, &pod, &container, attach)
        }
        ["portForward", ns, pod] if !ns.is_empty() && !pod.is_empty() => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            crate::streams::port_forward(state, req, &ns, &pod)
        }
        _ => text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// The query of a log request, as kubelet reads it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct LogOptions {
    pub follow: bool,
    pub previous: bool,
    pub query: LogQuery,
}

impl LogOptions {
    /// Reads the query; a value that does not parse is a 400, one out of range a 422.
    pub fn parse(raw: Option<&str>) -> Result<Self, (StatusCode, String)> {
        let bad = |field: &str, value: &str, want: &str| (StatusCode::BAD_REQUEST, format!("unable to decode query: {field}: invalid value {value:?}: {want}"));
        let mut o = Self::default();
        let (mut tail, mut since_seconds, mut since_time, mut limit) = (None, None, None, None);
        for (k, v) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
            let flag = || match v.as_ref() {
                "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
                "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
                other => Err(bad(&k, other, "must be a boolean")),
            };
            let int = || v.parse::<i64>().map_err(|_| bad(&k, &v, "must be an integer"));
            match k.as_ref() {
                "follow" => o.follow = flag()?,
                "previous" => o.previous = flag()?,
                "timestamps" => o.query.timestamps = flag()?,
                "tailLines" => tail = Some(int()?),
                "sinceSeconds" => since_seconds = Some(int()?),
                "limitBytes" => limit = Some(int()?),
                "sinceTime" => {
                    let t = chrono::DateTime::parse_from_rfc3339(&v).map_err(|_| bad(&k, &v, "must be an RFC 3339 time"))?;
                    since_time = Some(t.with_timezone(&chrono::Utc));
                }
                _ => {} // e.g. `container`, `stream`: not options of this endpoint
            }
        }
        let invalid = |field: &str, value: i64, want: &str| (StatusCode::UNPROCESSABLE_ENTITY, format!("{field}: Invalid value: {value}: {want}"));
        if let Some(t) = tail {
            o.query.tail = Some(usize::try_from(t).map_err(|_| invalid("tailLines", t, "must be greater than or equal to 0"))?);
        }
        if let Some(l) = limit {
            o.query.limit_bytes = Some(usize::try_from(l).ok().filter(|l| *l > 0).ok_or_else(|| invalid("limitBytes", l, "must be greater than 0"))?);
        }
        o.query.since = match (since_seconds, since_time) {
            (Some(_), Some(_)) => return Err((StatusCode::UNPROCESSABLE_ENTITY, "at most one of `sinceTime` or `sinceSeconds` may be specified".into())),
            (Some(s), None) if s < 1 => return Err(invalid("sinceSeconds", s, "must be greater than 0")),
            (Some(s), None) => Some(chrono::Utc::now() - chrono::Duration::seconds(s.min(i64::from(u32::MAX)))),
            (None, t) => t,
        };
        Ok(o)
    }
}

async fn container_logs(state: &ServerState, ns: &str, pod_name: &str, container: &str, options: LogOptions) -> Response<Body> {
    let pod = match state.pods.pod(ns, pod_name).await {
        Ok(Some(p)) if p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(state.node_name.as_str()) => p,
        Ok(_) => return text(StatusCode::NOT_FOUND, format!("pod {pod_name:?} does not exist")),
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{pod_name}"), error = %e, "node server: reading the pod failed");
            return text(StatusCode::SERVICE_UNAVAILABLE, format!("cannot read pod {pod_name:?} from the API server"));
        }
    };
    let spec = pod.spec.clone().unwrap_or_default();
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| &c.name);
    if !spec.containers.iter().chain(spec.init_containers.iter().flatten()).map(|c| &c.name).chain(ephemeral).any(|n| n == container) {
        return text(StatusCode::NOT_FOUND, format!("container {container:?} not found in pod {pod_name:?}"));
    }
    let run = match pick_run(&pod, container, options.previous) {
        Ok(r) => r,
        Err(message) => return text(StatusCode::BAD_REQUEST, message),
    };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let path = logs::run_log(&logs::container_dir(&state.logs_dir, ns, pod_name, &uid, container), run);
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || RunLog::open(&path)).await
    };
    let (log, records) = match opened {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            return text(StatusCode::BAD_REQUEST, format!("the log of container {container:?} in pod {pod_name:?} (run {run}) is no longer on the node"));
        }
        Ok(Err(e)) => {
            tracing::warn!(path = %path.display(), error = %e, "node server: reading a container log failed");
            return text(StatusCode::INTERNAL_SERVER_ERROR, format!("reading the log of container {container:?} in pod {pod_name:?} failed"));
        }
        Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "reading the log failed"),
    };
    let mut joiner = Joiner::default();
    let lines = logs::initial_lines(records, &options.query, &mut joiner);
    let mut printer = Printer::new(&options.query);
    let mut first = Vec::new();
    for line in &lines {
        printer.print(line, &mut first);
    }
    let body = if options.follow {
        let follow = Follow { log: Some(log), joiner, printer, path, running: state.running_logs.clone(), poll: state.poll, done: false };
        let first = (!first.is_empty()).then(|| Ok(Frame::data(Bytes::from(first))));
        let rest = futures::stream::unfold(follow, Follow::next_chunk).map(|chunk| Ok(Frame::data(chunk)));
        StreamBody::new(futures::stream::iter(first).chain(rest)).boxed_unsync()
    } else {
        if options.query.tail != Some(0) {
            if let Some(open) = joiner.finish() {
                printer.print(&open, &mut first);
            }
        }
        Full::new(Bytes::from(first)).map_err(|never| match never {}).boxed_unsync()
    };
    let mut resp = Response::new(body);
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    resp
}

/// A run's whole output from its start, then what it writes until it ends: what attach
/// streams. `None` when the log cannot be opened.
pub(crate) async fn follow_run_log(state: &ServerState, path: PathBuf) -> Option<impl futures::Stream<Item = Bytes> + Send + 'static> {
    let opened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || RunLog::open(&path)).await.ok()?.ok()?
    };
    let (log, records) = opened;
    let query = LogQuery::default();
    let mut joiner = Joiner::default();
    let mut printer = Printer::new(&query);
    let mut first = Vec::new();
    for line in logs::initial_lines(records, &query, &mut joiner) {
        printer.print(&line, &mut first);
    }
    let follow = Follow { log: Some(log), joiner, printer, path, running: state.running_logs.clone(), poll: state.poll, done: false };
    let first = (!first.is_empty()).then(|| Bytes::from(first));
    Some(futures::stream::iter(first).chain(futures::stream::unfold(follow, Follow::next_chunk)))
}

/// Which run's log to read, as kubelet decides from the container's status: with
/// `previous`, the last terminated run; else the running one, the terminated one, or,
/// while a restart waits, the last one to end. Errors read as kubelet's.
pub fn pick_run(pod: &Pod, container: &str, previous: bool) -> Result<u32, String> {
    let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut statuses = status.container_statuses.iter().flatten().chain(status.init_container_statuses.iter().flatten()).chain(status.ephemeral_container_statuses.iter().flatten());
    let Some(s) = statuses.find(|s| s.name == container).cloned() else {
        // The node has not reported on it yet: it is being set up.
        return Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: ContainerCreating"));
    };
    let ContainerStatus { state, last_state, container_id, .. } = s;
    let state = state.unwrap_or_default();
    let last = last_state.and_then(|l| l.terminated).and_then(|t| t.container_id).filter(|id| !id.is_empty());
    let run_of = |id: &str| status::run_number(id).ok_or_else(|| format!("container {container:?} in pod {pod_name:?} has a run ID this node does not know: {id}"));
    if previous {
        return match last {
            Some(id) => run_of(&id),
            None => Err(format!("previous terminated container {container:?} in pod {pod_name:?} not found")),
        };
    }
    if state.running.is_some() {
        let id = container_id.unwrap_or_default();
        return run_of(&id);
    }
    if let Some(t) = state.terminated {
        return match t.container_id.filter(|id| !id.is_empty()).or(last) {
            Some(id) => run_of(&id),
            None => Err(format!("container {container:?} in pod {pod_name:?} is terminated")),
        };
    }
    if let Some(id) = last {
        return run_of(&id);
    }
    match state.waiting.and_then(|w| w.reason) {
        Some(r) if r == "ErrImagePull" => Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: image can't be pulled")),
        Some(r) if r == "ImagePullBackOff" => Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: trying and failing to pull image")),
        Some(r) => Err(format!("container {container:?} in pod {pod_name:?} is waiting to start: {r}")),
        None => Err(format!("container {container:?} in pod {pod_name:?} is waiting to start - no logs yet")),
    }
}

/// A log being followed: what was appended since the last look, until the run has ended
/// and all of it is sent, or the byte limit is reached.
struct Follow {
    /// Out while a blocking read has it.
    log: Option<RunLog>,
    joiner: Joiner,
    printer: Printer,
    path: PathBuf,
    running: Arc<Mutex<HashSet<PathBuf>>>,
    poll: Duration,
    done: bool,
}

impl Follow {
    fn running(&self) -> bool {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).contains(&self.path)
    }

    /// The next piece of output; `None` once there is no more.
    async fn next_chunk(mut self) -> Option<(Bytes, Self)> {
        loop {
            if self.done || self.printer.full() {
                return None;
            }
            // Whether the run was still going *before* reading: if it was not, this read
            // sees everything it wrote.
            let was_running = self.running();
            let mut log = self.log.take()?;
            let (log, read) = tokio::task::spawn_blocking(move || {
                let read = log.next_records();
                (log, read)
            })
            .await
            .ok()?;
            self.log = Some(log);
            let records = match read {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "node server: following a container log failed");
                    return None;
                }
            };
            let mut out = Vec::new();
            for line in records.into_iter().filter_map(|r| self.joiner.push(r)) {
                if self.printer.full() {
                    break;
                }
                self.printer.print(&line, &mut out);
            }
            if !was_running {
                if let Some(open) = self.joiner.finish().filter(|_| !self.printer.full()) {
                    self.printer.print(&open, &mut out);
                }
                self.done = true;
            }
            if !out.is_empty() {
                return Some((Bytes::from(out), self));
            }
            if !self.done {
                tokio::time::sleep(self.poll).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogWriter;
    use serde_json::json;
    use std::collections::HashMap;

    struct FakePods(Mutex<HashMap<(String, String), Pod>>);

    impl PodSource for FakePods {
        fn pod<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, Result<Option<Pod>, String>> {
            let pod = self.0.lock().unwrap().get(&(namespace.to_owned(), name.to_owned())).cloned();
            Box::pin(async move { Ok(pod) })
        }
    }

    fn pod(name: &str, node: &str, statuses: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}, {"name": "d", "image": "i"}]},
            "status": {"containerStatuses": statuses},
        }))
        .unwrap()
    }

    fn terminated(run: u32) -> serde_json::Value {
        json!({"terminated": {"exitCode": 3, "reason": "Error", "containerID": status::run_id("u", "c", run)}})
    }

    fn state(tag: &str, pods: Vec<Pod>) -> (Arc<ServerState>, PathBuf) {
        let dir = std::env::temp_dir().join(format!("wasmkube-node-server-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let fake = FakePods(Mutex::new(pods.into_iter().map(|p| (("default".to_owned(), p.metadata.name.clone().unwrap()), p)).collect()));
        let state = ServerState {
            node_name: "n1".into(),
            token: "secret".into(),
            logs_dir: dir.clone(),
            running_logs: Default::default(),
            pods: Arc::new(fake),
            poll: Duration::from_millis(5),
            runtime: crate::wasm::WasmRuntime::new(&dir.join("compiled")).unwrap(),
            containers: Default::default(),
        };
        (Arc::new(state), dir)
    }

    fn get(path: &str, token: Option<&str>) -> Request<()> {
        let mut req = Request::builder().uri(path);
        if let Some(t) = token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        req.body(()).unwrap()
    }

    async fn body_text(resp: Response<Body>) -> String {
        String::from_utf8(resp.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn the_serving_certificate_is_made_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("wasmkube-node-tls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        tls_config(&dir, "n1", "10.0.0.7").unwrap();
        let cert = std::fs::read(dir.join("pki/node.crt")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("pki/node.key")).unwrap().permissions().mode() & 0o777, 0o600);
        tls_config(&dir, "n1", "10.0.0.7").unwrap();
        assert_eq!(std::fs::read(dir.join("pki/node.crt")).unwrap(), cert, "a later start keeps the certificate");
        std::fs::write(dir.join("pki/node.key"), "not a key").unwrap();
        tls_config(&dir, "n1", "10.0.0.7").unwrap();
        assert_ne!(std::fs::read(dir.join("pki/node.crt")).unwrap(), cert, "a broken one is replaced");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn runs_are_picked_as_kubelet_picks_them() {
        let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
        let p = pod("p", "n1", json!([{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 2, "containerID": status::run_id("u", "c", 2), "state": running, "lastState": terminated(1)}]));
        assert_eq!(pick_run(&p, "c", false), Ok(2));
        assert_eq!(pick_run(&p, "c", true), Ok(1));
        // Waiting out a back-off: both read the run that just ended.
        let backoff = pod("p", "n1", json!([{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 2, "state": {"waiting": {"reason": "CrashLoopBackOff"}}, "lastState": terminated(2)}]));
        assert_eq!((pick_run(&backoff, "c", false), pick_run(&backoff, "c", true)), (Ok(2), Ok(2)));
        let done = pod("p", "n1", json!([{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": terminated(0), "lastState": {}}]));
        assert_eq!(pick_run(&done, "c", false), Ok(0));
        assert_eq!(pick_run(&done, "c", true), Err("previous terminated container \"c\" in pod \"p\" not found".into()));
        let pulling = pod("p", "n1", json!([{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ImagePullBackOff"}}, "lastState": {}}]));
        assert_eq!(pick_run(&pulling, "c", false), Err("container \"c\" in pod \"p\" is waiting to start: trying and failing to pull image".into()));
        assert_eq!(pick_run(&pulling, "d", false), Err("container \"d\" in pod \"p\" is waiting to start: ContainerCreating".into()));
    }

    #[test]
    fn options_parse_as_kubelet_reads_them() {
        let o = LogOptions::parse(Some("follow=true&tailLines=2&timestamps=1&limitBytes=10&container=x")).unwrap();
        assert!(o.follow && !o.previous && o.query.timestamps);
        assert_eq!((o.query.tail, o.query.limit_bytes), (Some(2), Some(10)));
        let since = LogOptions::parse(Some("sinceTime=2026-01-01T00%3A00%3A00Z")).unwrap().query.since.unwrap();
        assert_eq!(since.to_rfc3339(), "2026-01-01T00:00:00+00:00");
        let (code, message) = LogOptions::parse(Some("tailLines=abc")).unwrap_err();
        assert_eq!(code, StatusCode::BAD_REQUEST);
        assert!(message.contains("tailLines"), "{message}");
        let (code, message) = LogOptions::parse(Some("tailLines=-1")).unwrap_err();
        assert_eq!((code, message.as_str()), (StatusCode::UNPROCESSABLE_ENTITY, "tailLines: Invalid value: -1: must be greater than or equal to 0"));
        assert_eq!(LogOptions::parse(Some("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z")).unwrap_err().0, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(LogOptions::parse(Some("follow=yes")).unwrap_err().0, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn requests_without_the_token_are_refused() {
        let (state, dir) = state("auth", vec![]);
        for token in [None, Some("wrong"), Some("")] {
            let resp = handle(state.clone(), get("/containerLogs/default/p/c", token)).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        }
        let resp = handle(state.clone(), get("/containerLogs/default/p/c", Some("secret"))).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "authorized: the pod is unknown");
        assert_eq!(body_text(resp).await, "pod \"p\" does not exist\n");
        assert_eq!(handle(state, get("/pods", Some("secret"))).await.status(), StatusCode::NOT_FOUND);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn logs_are_served_from_the_run_the_status_names() {
        let statuses = json!([{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 1, "containerID": status::run_id("u", "c", 1), "state": terminated(1), "lastState": terminated(0)}]);
        let elsewhere = pod("other", "n2", statuses.clone());
        let (state, dir) = state("serve", vec![pod("p", "n1", statuses), elsewhere]);
        let cdir = logs::container_dir(&dir, "default", "p", "uid-p", "c");
        for (run, words) in [(0, ["zero", "one"]), (1, ["two", "three"])] {
            let log = LogWriter::open(&logs::run_log(&cdir, run), 1 << 20).unwrap();
            log.note(&words.join("\n"));
        }
        let get_text = |path: &str| {
            let state = state.clone();
            let path = path.to_owned();
            async move {
                let resp = handle(state, get(&path, Some("secret"))).await;
                (resp.status(), body_text(resp).await)
            }
        };
        assert_eq!(get_text("/containerLogs/default/p/c").await, (StatusCode::OK, "two\nthree\n".into()));
        assert_eq!(get_text("/containerLogs/default/p/c?previous=true").await, (StatusCode::OK, "zero\none\n".into()));
        assert_eq!(get_text("/containerLogs/default/p/c?tailLines=1").await, (StatusCode::OK, "three\n".into()));
        let (code, stamped) = get_text("/containerLogs/default/p/c?timestamps=true&limitBytes=40").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(stamped.len(), 40);
        assert!(stamped.split(' ').next().is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()), "{stamped}");
        assert_eq!(get_text("/containerLogs/default/p/nope").await, (StatusCode::NOT_FOUND, "container \"nope\" not found in pod \"p\"\n".into()));
        assert_eq!(get_text("/containerLogs/default/p/d").await, (StatusCode::BAD_REQUEST, "container \"d\" in pod \"p\" is waiting to start: ContainerCreating\n".into()));
        assert_eq!(get_text("/containerLogs/default/other/c").await.0, StatusCode::NOT_FOUND, "a pod bound to another node");
        assert_eq!(get_text("/containerLogs/default/p/c?tailLines=x").await.0, StatusCode::BAD_REQUEST);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_followed_log_streams_until_its_run_ends() {
        let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
        let statuses = json!([{"name": "c", "image": "i", "imageID": "", "ready": true, "restartCount": 0, "containerID": status::run_id("u", "c", 0), "state": running, "lastState": {}}]);
        let (state, dir) = state("follow", vec![pod("p", "n1", statuses)]);
        let path = logs::run_log(&logs::container_dir(&dir, "default", "p", "uid-p", "c"), 0);
        state.running_logs.lock().unwrap().insert(path.clone());
        let log = LogWriter::open(&path, 1 << 20).unwrap();
        log.note("before");
        let resp = handle(state.clone(), get("/containerLogs/default/p/c?follow=true", Some("secret"))).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let mut body = resp.into_body();
        let mut seen = String::new();
        let mut next = async || {
            let frame = body.frame().await?.unwrap();
            Some(String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap())
        };
        seen.push_str(&next().await.unwrap());
        assert_eq!(seen, "before\n");
        log.note("during");
        while !seen.ends_with("during\n") {
            seen.push_str(&next().await.expect("the stream goes on while the run does"));
        }
        log.note("last words");
        state.running_logs.lock().unwrap().remove(&path);
        while let Some(chunk) = next().await {
            seen.push_str(&chunk);
        }
        assert_eq!(seen, "before\nduring\nlast words\n", "everything is sent before the stream ends");
        let _ = std::fs::remove_dir_all(dir);
    }
}
