//! HTTP containers: a listener on the pod IP and container port, HTTP/1.1 by hyper, and a
//! fresh instance (a new `Store`, from the pre-instance prepared once) for every request.
//!
//! - WAGI: a preview-1 command module runs once per request, CGI style (see [`super::cgi`]):
//!   request in env and stdin, response parsed from its buffered stdout.
//! - `wasi:http`: a component's `incoming-handler` gets the request and streams its response.
//!
//! Every request runs under the container's memory and CPU limits and the spec's
//! `request_timeout`; at most `max_concurrent` run at once (the rest wait for a slot).
//! Failures answer 500 (504 at the timeout, 503 when no instance can be had) and leave a
//! note in the container log; the server keeps serving. Dropping the serve future closes
//! the listener and stops every connection and running request.

use super::{run_module, wasi_builder, ComponentHost, Host, Limiter, Mount, Outcome, Prepared, WasmRuntime};
use crate::logs::LogWriter;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use wasmtime::InstancePre;
use wasmtime_wasi::p2::pipe::{MemoryInputPipe, MemoryOutputPipe};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

/// Request bodies a WAGI handler gets on stdin are read whole first; bigger ones get a 413.
pub const WAGI_MAX_REQUEST_BODY: usize = 16 << 20;
/// A WAGI handler's stdout is buffered to parse it; writing more traps the handler.
pub const WAGI_MAX_RESPONSE: usize = 64 << 20;
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MAX_CONCURRENT: usize = 64;

/// How requests reach the guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpKind {
    /// A preview-1 command module ([`super::ArtifactKind::Command`]) run once per request,
    /// CGI style.
    Wagi,
    /// A component exporting `wasi:http/incoming-handler` ([`super::ArtifactKind::HttpComponent`]).
    WasiHttp,
}

/// One HTTP container.
pub struct HttpSpec {
    pub module: PathBuf,
    /// Content digest of the artifact, the key of the in-memory cache.
    pub digest: String,
    pub kind: HttpKind,
    /// Where to listen: the pod IP and the container port.
    pub addr: SocketAddr,
    /// argv of every instance (WAGI too: the request is in env and stdin, not in argv).
    pub argv: Vec<String>,
    /// The container's env; for WAGI the CGI variables are added after it and win.
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// Per instance, i.e. per request.
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores, applied to each running request's instance.
    pub cpu_millis: Option<u64>,
    /// The container log: handlers' stderr (and a `wasi:http` component's stdout), and the
    /// node's note on every failed request.
    pub log: LogWriter,
    /// A request still running after this is stopped; 504 if no response was sent yet.
    pub request_timeout: Duration,
    /// Requests running at once; more wait for a slot.
    pub max_concurrent: usize,
    /// How the pod's deletion reaches the server: stop taking connections, finish the
    /// open ones.
    pub drain: Drain,
    /// How a `wasi:http` handler's outgoing requests resolve cluster names.
    pub names: Option<Arc<super::ClusterNames>>,
}

/// The graceful end of a pod's HTTP servers. While a deleted pod leaves its Services'
/// endpoints its servers keep answering; then [`Drain::close`] stops them taking
/// connections (new ones are refused, so a proxy picks another endpoint), idle
/// keep-alive connections are closed, and requests in flight run to their end.
#[derive(Clone, Default)]
pub struct Drain(Arc<DrainState>);

#[derive(Default)]
struct DrainState {
    closing: std::sync::atomic::AtomicBool,
    /// Servers started and connections open.
    servers: std::sync::atomic::AtomicUsize,
    open: std::sync::atomic::AtomicUsize,
    changed: tokio::sync::Notify,
}

impl Drain {
    pub fn close(&self) {
        self.0.closing.store(true, std::sync::atomic::Ordering::SeqCst);
        self.0.changed.notify_waiters();
    }

    /// Whether any HTTP server of the pod has started.
    pub fn serving(&self) -> bool {
        self.0.servers.load(std::sync::atomic::Ordering::SeqCst) > 0
    }

    fn is_closing(&self) -> bool {
        self.0.closing.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Completes once the drain was asked for.
    async fn closed(&self) {
        loop {
            let notified = self.0.changed.notified();
            if self.is_closing() {
                return;
            }
            notified.await;
        }
    }

    /// Completes once closed with no connection left open.
    pub async fn drained(&self) {
        loop {
            let notified = self.0.changed.notified();
            if self.is_closing() && self.0.open.load(std::sync::atomic::Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }

    fn connection_opened(&self) -> OpenConnection {
        self.0.open.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        OpenConnection(self.clone())
    }
}

/// Counts one open connection until dropped.
struct OpenConnection(Drain);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        (self.0).0.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        (self.0).0.changed.notify_waiters();
    }
}

/// A request body the handlers take: hyper's from a connection, or a `wasi:http` guest's
/// outgoing body dispatched in process.
pub(super) trait RequestBody: hyper::body::Body<Data = Bytes, Error = Self::E> + Send + Unpin + 'static {
    type E: Into<wasmtime_wasi_http::Error> + Into<Box<dyn std::error::Error + Send + Sync>>;
}

impl<B, E> RequestBody for B
where
    B: hyper::body::Body<Data = Bytes, Error = E> + Send + Unpin + 'static,
    E: Into<wasmtime_wasi_http::Error> + Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type E = E;
}

/// The HTTP servers of this node's pods by listening address, so a pod's outgoing request
/// to another pod on the node is answered in process, without a TCP connection (or two,
/// through the proxy). A server is listed from its start until it stops taking
/// connections.
#[derive(Default)]
pub struct LocalServers(std::sync::Mutex<std::collections::HashMap<SocketAddr, std::sync::Weak<Server>>>);

impl LocalServers {
    /// The server listening on `addr`, if it runs here and takes requests.
    pub(super) fn get(&self, addr: SocketAddr) -> Option<Arc<Server>> {
        let server = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&addr)?.upgrade()?;
        (!server.spec.drain.is_closing()).then_some(server)
    }

    fn register(self: &Arc<Self>, addr: SocketAddr, server: &Arc<Server>) -> Listed {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(addr, Arc::downgrade(server));
        Listed { servers: self.clone(), addr, server: Arc::downgrade(server) }
    }
}

/// A server's entry in [`LocalServers`], removed when dropped.
struct Listed {
    servers: Arc<LocalServers>,
    addr: SocketAddr,
    server: std::sync::Weak<Server>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        let mut map = self.servers.0.lock().unwrap_or_else(|e| e.into_inner());
        // A newer server on the same address (a restarted container) keeps its entry.
        if map.get(&self.addr).is_some_and(|w| w.ptr_eq(&self.server)) {
            map.remove(&self.addr);
        }
    }
}

#[derive(Clone)]
enum Handler {
    Wagi(InstancePre<Host>),
    WasiHttp(ProxyPre<ComponentHost>),
}

pub(super) struct Server {
    rt: Arc<WasmRuntime>,
    handler: Handler,
    spec: HttpSpec,
    local: SocketAddr,
    slots: Arc<Semaphore>,
    /// Changes never; its sender is dropped with the serve future, which ends the request
    /// tasks that outlive their connection (`wasi:http` bodies still streaming).
    shutdown: watch::Receiver<()>,
}

impl WasmRuntime {
    /// Binds `spec.addr` and serves HTTP until the future is dropped. Returns only on
    /// failure: the artifact is not of `spec.kind`, or the address cannot be bound.
    pub async fn serve_http(self: &Arc<Self>, spec: HttpSpec) -> Outcome {
        // A broken artifact fails the container before it takes the port.
        if let Err(e) = self.http_handler(&spec) {
            return Outcome::Failed(e);
        }
        match TcpListener::bind(spec.addr).await {
            Ok(listener) => self.serve_http_on(listener, spec).await,
            Err(e) => Outcome::Failed(format!("binding {}: {e}", spec.addr)),
        }
    }

    /// [`serve_http`](Self::serve_http) on a listener the caller bound (`spec.addr` is then
    /// unused): tests bind port 0.
    pub async fn serve_http_on(self: &Arc<Self>, listener: TcpListener, spec: HttpSpec) -> Outcome {
        let handler = match self.http_handler(&spec) {
            Ok(h) => h,
            Err(e) => return Outcome::Failed(e),
        };
        let local = match listener.local_addr() {
            Ok(a) => a,
            Err(e) => return Outcome::Failed(format!("listener address: {e}")),
        };
        let (_shutdown, shutdown) = watch::channel(());
        let slots = Arc::new(Semaphore::new(spec.max_concurrent.max(1)));
        let server = Arc::new(Server { rt: self.clone(), handler, spec, local, slots, shutdown });
        tracing::info!(addr = %local, kind = ?server.spec.kind, "serving HTTP");
        let drain = server.spec.drain.clone();
        drain.0.servers.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut listed = Some(self.local.register(local, &server));
        // Connections live in this set: dropping the future aborts them all.
        let mut connections = JoinSet::new();
        let mut listener = Some(listener);
        loop {
            tokio::select! {
                accepted = async { listener.as_ref()?.accept().await.ok() }, if listener.is_some() => match accepted {
                    Some((stream, remote)) => {
                        let open = drain.connection_opened();
                        let server = server.clone();
                        connections.spawn(async move {
                            server.connection(stream, remote).await;
                            drop(open);
                        });
                    }
                    None => {
                        // Out of file descriptors and the like: wait instead of spinning.
                        tracing::warn!(addr = %local, "accepting a connection failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = drain.closed(), if listener.is_some() => {
                    // Closing the socket refuses whoever comes next.
                    listener = None;
                    drop(listed.take());
                    tracing::info!(addr = %local, open = connections.len(), "stopped taking connections: the pod is being deleted");
                }
                Some(_) = connections.join_next() => {}
                else => std::future::pending::<()>().await,
            }
        }
    }

    fn http_handler(&self, spec: &HttpSpec) -> Result<Handler, String> {
        match (spec.kind, self.prepare(&spec.module, &spec.digest)?) {
            (HttpKind::Wagi, Prepared::Module(pre)) if pre.module().get_export("_start").is_some() => Ok(Handler::Wagi(pre)),
            (HttpKind::WasiHttp, Prepared::Component { proxy: Some(pre), .. }) => Ok(Handler::WasiHttp(pre)),
            (HttpKind::Wagi, _) => Err("WAGI needs a WASI preview-1 command module (exporting _start)".to_owned()),
            (HttpKind::WasiHttp, _) => Err("wasi:http needs a component exporting wasi:http/incoming-handler".to_owned()),
        }
    }
}

impl Server {
    async fn connection(self: Arc<Self>, stream: TcpStream, remote: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let drain = self.spec.drain.clone();
        let service = hyper::service::service_fn(move |req| {
            let server = self.clone();
            async move { Ok::<_, Infallible>(server.handle(req, remote).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new().timer(hyper_util::rt::TokioTimer::new()).serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = drain.closed() => {
                // Finish the request in flight (if any), then close instead of keeping alive.
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%remote, error = %e, "HTTP connection ended");
        }
    }

    /// Answers one request, from a connection or dispatched in process ([`LocalServers`]).
    pub(super) async fn handle<B: RequestBody>(&self, req: Request<B>, remote: SocketAddr) -> Response<HyperOutgoingBody> {
        match &self.handler {
            Handler::Wagi(pre) => self.wagi(pre, req, remote).await,
            Handler::WasiHttp(pre) => self.wasi_http(pre, req).await,
        }
    }

    async fn slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        // The semaphore is never closed; `None` cannot happen but costs nothing to handle.
        self.slots.clone().acquire_owned().await.ok()
    }

    async fn wagi<B: RequestBody>(&self, pre: &InstancePre<Host>, req: Request<B>, remote: SocketAddr) -> Response<HyperOutgoingBody> {
        let (parts, body) = req.into_parts();
        let body = match Limited::new(body, WAGI_MAX_REQUEST_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return plain(StatusCode::PAYLOAD_TOO_LARGE),
            Err(_) => return plain(StatusCode::BAD_REQUEST),
        };
        let _slot = self.slot().await;
        let cgi_env = super::cgi::request_env(&parts, body.len(), self.local, remote);
        let mut env: Vec<(String, String)> = self.spec.env.iter().filter(|(k, _)| !cgi_env.iter().any(|(c, _)| c == k)).cloned().collect();
        env.extend(cgi_env);
        let mut wasi = match wasi_builder(&self.spec.argv, &env, &self.spec.mounts) {
            Ok(w) => w,
            Err(e) => return self.failed(&parts, StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        let stdout = MemoryOutputPipe::new(WAGI_MAX_RESPONSE);
        wasi.stdout(stdout.clone());
        wasi.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, self.spec.log.sink("stderr")));
        wasi.stdin(MemoryInputPipe::new(body));
        let limiter = Limiter::new(self.spec.memory_limit);
        let memory = limiter.memory;
        let store = self.rt.store(Host { wasi: wasi.build_p1(), limiter }, self.spec.cpu_millis);
        let outcome = match tokio::time::timeout(self.spec.request_timeout, run_module(pre, store)).await {
            Ok(outcome) => outcome,
            Err(_) => return self.timed_out(&parts),
        };
        match outcome {
            Outcome::Exited(0) => match super::cgi::parse_response(stdout.contents()) {
                Ok(cgi) => {
                    let mut resp = Response::new(full(cgi.body));
                    *resp.status_mut() = cgi.status;
                    *resp.headers_mut() = cgi.headers;
                    resp
                }
                Err(e) => self.failed(&parts, StatusCode::INTERNAL_SERVER_ERROR, &e),
            },
            other => self.outcome_failed(&parts, other, memory),
        }
    }

    async fn wasi_http<B: RequestBody>(&self, pre: &ProxyPre<ComponentHost>, mut req: Request<B>) -> Response<HyperOutgoingBody> {
        // wasi:http needs an authority; HTTP/1.0 clients may send no Host.
        if !req.headers().contains_key(hyper::header::HOST) {
            if let Ok(host) = self.local.to_string().parse() {
                req.headers_mut().insert(hyper::header::HOST, host);
            }
        }
        let parts = head_of(&req);
        let slot = self.slot().await;
        let mut wasi = match wasi_builder(&self.spec.argv, &self.spec.env, &self.spec.mounts) {
            Ok(w) => w,
            Err(e) => return self.failed(&parts, StatusCode::INTERNAL_SERVER_ERROR, &e),
        };
        wasi.stdout(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, self.spec.log.sink("stdout")));
        wasi.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, self.spec.log.sink("stderr")));
        let limiter = Limiter::new(self.spec.memory_limit);
        let memory = limiter.memory;
        let data = ComponentHost::new(wasi.build(), limiter, self.spec.names.clone());
        let mut store = self.rt.store(data, self.spec.cpu_millis);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let resources = store.data_mut().http().new_incoming_request(Scheme::Http, req).and_then(|r| Ok((r, store.data_mut().http().new_response_outparam(sender)?)));
        let (request, response_out) = match resources {
            Ok(r) => r,
            Err(e) => return self.failed(&parts, StatusCode::BAD_REQUEST, &format!("{e:#}")),
        };
        // The guest runs in its own task: it may go on streaming the body after the
        // response head is sent, so it must outlive this service call.
        let pre = pre.clone();
        let timeout = self.spec.request_timeout;
        let mut shutdown = self.shutdown.clone();
        let guest = tokio::spawn(async move {
            let _slot = slot;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await.map_err(|e| (true, e))?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, request, response_out).await.map_err(|e| (false, e))
            };
            let ended = tokio::select! {
                r = tokio::time::timeout(timeout, run) => r,
                _ = shutdown.changed() => return None,
            };
            let oom = store.data().limiter.oom;
            Some(match ended {
                Err(_) => RequestEnd::TimedOut,
                Ok(Ok(())) => RequestEnd::Finished,
                Ok(Err((true, e))) => RequestEnd::Failed(super::instantiation_failure(e, oom)),
                Ok(Err((false, e))) => RequestEnd::Failed(super::ended(e, oom)),
            })
        });
        match receiver.await {
            Ok(Ok(resp)) => {
                // Failures after the head was sent can only be logged (the body breaks off).
                let log = self.spec.log.clone();
                let what = describe(&parts);
                tokio::spawn(async move {
                    let reason = match guest.await {
                        Ok(Some(RequestEnd::TimedOut)) => format!("stopped at the request timeout of {timeout:?}"),
                        Ok(Some(RequestEnd::Failed(outcome))) if outcome != Outcome::Exited(0) => failure_reason(outcome, memory).1,
                        _ => return,
                    };
                    log.note(&format!("{what}: {reason}"));
                });
                resp
            }
            Ok(Err(code)) => self.failed(&parts, StatusCode::INTERNAL_SERVER_ERROR, &format!("the handler answered with error {code:?}")),
            Err(_) => match guest.await {
                Ok(Some(RequestEnd::TimedOut)) => self.timed_out(&parts),
                Ok(Some(RequestEnd::Failed(outcome))) => self.outcome_failed(&parts, outcome, memory),
                Ok(Some(RequestEnd::Finished)) => self.failed(&parts, StatusCode::INTERNAL_SERVER_ERROR, "the handler returned without setting a response"),
                Ok(None) | Err(_) => plain(StatusCode::SERVICE_UNAVAILABLE),
            },
        }
    }

    fn outcome_failed(&self, parts: &Parts, outcome: Outcome, memory: usize) -> Response<HyperOutgoingBody> {
        let (status, reason) = failure_reason(outcome, memory);
        self.failed(parts, status, &reason)
    }

    fn timed_out(&self, parts: &Parts) -> Response<HyperOutgoingBody> {
        let reason = format!("stopped at the request timeout of {:?}", self.spec.request_timeout);
        self.failed(parts, StatusCode::GATEWAY_TIMEOUT, &reason)
    }

    /// Why goes to the container log (what `kubectl logs` shows); the client gets the status.
    fn failed(&self, parts: &Parts, status: StatusCode, reason: &str) -> Response<HyperOutgoingBody> {
        tracing::debug!(addr = %self.local, method = %parts.method, uri = %parts.uri, %status, reason, "request failed");
        self.spec.log.note(&format!("{}: {reason}", describe(parts)));
        plain(status)
    }
}

/// How a `wasi:http` guest's run ended; `None` from its task when the server was dropped.
enum RequestEnd {
    Finished,
    Failed(Outcome),
    TimedOut,
}

/// The status and the log note for a request whose instance did not end well: 503 when no
/// instance could be had (e.g. the pool is full), else 500.
fn failure_reason(outcome: Outcome, memory: usize) -> (StatusCode, String) {
    match outcome {
        Outcome::Exited(code) => (StatusCode::INTERNAL_SERVER_ERROR, format!("the handler exited with code {code}")),
        Outcome::OomKilled => (StatusCode::INTERNAL_SERVER_ERROR, format!("OOMKilled: memory limit of {memory} bytes exceeded")),
        Outcome::Trapped(m) => (StatusCode::INTERNAL_SERVER_ERROR, m),
        Outcome::Failed(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

fn head_of<B>(req: &Request<B>) -> Parts {
    let mut head = Request::new(());
    *head.method_mut() = req.method().clone();
    *head.uri_mut() = req.uri().clone();
    *head.version_mut() = req.version();
    head.into_parts().0
}

fn describe(parts: &Parts) -> String {
    format!("request {} {}", parts.method, parts.uri)
}

fn full(body: Bytes) -> HyperOutgoingBody {
    Full::new(body).map_err(|never| match never {}).boxed_unsync()
}

fn plain(status: StatusCode) -> Response<HyperOutgoingBody> {
    let text = format!("{} {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""));
    let mut resp = Response::new(full(Bytes::from(text)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wasm::tests::example;
    use std::path::Path;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct TestServer {
        addr: SocketAddr,
        task: tokio::task::JoinHandle<Outcome>,
        log_path: PathBuf,
        drain: Drain,
    }

    impl TestServer {
        fn log(&self) -> String {
            crate::logs::read_text(&self.log_path, &Default::default())
        }
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wasmkube-http-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn spec(dir: &Path, module: PathBuf, kind: HttpKind) -> HttpSpec {
        let log = LogWriter::open(&dir.join("0.log"), 1 << 20).unwrap();
        HttpSpec {
            digest: module.display().to_string(),
            module,
            kind,
            addr: "127.0.0.1:0".parse().unwrap(),
            argv: vec!["handler".into()],
            env: vec![("HOSTNAME".into(), "web".into())],
            mounts: vec![],
            memory_limit: Some(32 << 20),
            cpu_millis: None,
            log,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_concurrent: 4,
            drain: Drain::default(),
            names: None,
        }
    }

    async fn start(rt: &Arc<WasmRuntime>, dir: &Path, spec: HttpSpec) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rt = rt.clone();
        let drain = spec.drain.clone();
        let task = tokio::spawn(async move { rt.serve_http_on(listener, spec).await });
        TestServer { addr, task, log_path: dir.join("0.log"), drain }
    }

    struct Reply {
        status: u16,
        head: String,
        body: String,
    }

    /// One HTTP/1.1 request on a fresh connection; the body read to the connection's end.
    async fn request(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut req = format!("{method} {target} HTTP/1.1\r\nHost: pod.test:{}\r\nConnection: close\r\nContent-Length: {}\r\n", addr.port(), body.len());
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        req.push_str(body);
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        // A connection the server drops mid-request ends as a reset: no reply.
        let _ = stream.read_to_end(&mut raw).await;
        let raw = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        let head = head.to_ascii_lowercase();
        let body = if head.contains("transfer-encoding: chunked") { dechunk(body) } else { body.to_owned() };
        Reply { status, head, body }
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            s = rest[n..].trim_start_matches("\r\n");
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wagi_hello_answers_with_status_body_and_cgi_env() {
        let dir = temp_dir("wagi");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let mut spec = spec(&dir, example("hello-wagi.wasm"), HttpKind::Wagi);
        spec.argv = vec!["hello-wagi".into(), "--flag".into()];
        // The request's own CGI variables win over same-named container env.
        spec.env.push(("REQUEST_METHOD".into(), "SPOOFED".into()));
        let server = start(&rt, &dir, spec).await;

        let r = request(server.addr, "GET", "/", &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello from web\n"));
        assert!(r.head.contains("content-type: text/plain"), "{}", r.head);

        let r = request(server.addr, "GET", "/status/404", &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (404, "hello from web\n"));

        let r = request(server.addr, "POST", "/echo", &[("Content-Type", "text/plain")], "ping\npong").await;
        assert_eq!((r.status, r.body.as_str()), (200, "hello from web\nping\npong"));

        let r = request(server.addr, "GET", "/env?x=1&y=two", &[("X-Test", "yes")], "").await;
        assert_eq!(r.status, 200);
        let port = server.addr.port();
        for line in ["arg[0]=hello-wagi", "arg[1]=--flag", "HOSTNAME=web", "REQUEST_METHOD=GET", "PATH_INFO=/env", "QUERY_STRING=x=1&y=two", "HTTP_X_TEST=yes", "SERVER_NAME=pod.test", "SERVER_PROTOCOL=HTTP/1.1", "CONTENT_LENGTH=0", "REMOTE_ADDR=127.0.0.1", "GATEWAY_INTERFACE=CGI/1.1", "SCRIPT_NAME="] {
            assert!(r.body.lines().any(|l| l == line), "{line} missing in\n{}", r.body);
        }
        assert!(!r.body.contains("SPOOFED"), "{}", r.body);
        assert!(r.body.lines().any(|l| l == format!("SERVER_PORT={port}")), "{}", r.body);
        assert!(r.body.lines().any(|l| l == format!("X_FULL_URL=http://pod.test:{port}/env?x=1&y=two")), "{}", r.body);

        // Every request's stderr line is in the container log.
        let log = server.log();
        for line in ["hello-wagi: GET /", "hello-wagi: GET /status/404", "hello-wagi: POST /echo", "hello-wagi: GET /env"] {
            assert!(log.lines().any(|l| l == line), "{line} missing in\n{log}");
        }
        server.task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Behaves by the first byte of the request body: loop (after "spinning" on stderr), grow
    /// memory, trap, exit 3, print no CGI headers; an empty body gets `ok`.
    const MISBEHAVING: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_read" (func $read (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 64) "Content-Type: text/plain\n\nok\n")
        (data (i32.const 96) "oops\n")
        (data (i32.const 112) "spinning\n")
        (func $out (param $fd i32) (param $at i32) (param $len i32)
          (i32.store (i32.const 16) (local.get $at)) (i32.store (i32.const 20) (local.get $len))
          (drop (call $write (local.get $fd) (i32.const 16) (i32.const 1) (i32.const 24))))
        (func (export "_start") (local $c i32)
          (i32.store (i32.const 0) (i32.const 32)) (i32.store (i32.const 4) (i32.const 1))
          (drop (call $read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 8)))
          (if (i32.load (i32.const 8)) (then
            (local.set $c (i32.load8_u (i32.const 32)))
            (if (i32.eq (local.get $c) (i32.const 108)) (then
              (call $out (i32.const 2) (i32.const 112) (i32.const 9))
              (loop $l (br $l))))
            (if (i32.eq (local.get $c) (i32.const 109)) (then
              (loop $g (br_if $g (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))
            (if (i32.eq (local.get $c) (i32.const 116)) (then unreachable))
            (if (i32.eq (local.get $c) (i32.const 101)) (then (call $exit (i32.const 3))))
            (if (i32.eq (local.get $c) (i32.const 98)) (then (call $out (i32.const 1) (i32.const 96) (i32.const 5)) (return)))))
          (call $out (i32.const 1) (i32.const 64) (i32.const 29))))"#;

    /// Waits (bounded) until the container log has `line`: the sign a request is running.
    async fn wait_for_log(server: &TestServer, line: &str) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !server.log().lines().any(|l| l == line) {
            assert!(tokio::time::Instant::now() < deadline, "{line} never logged:\n{}", server.log());
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn misbehaving(dir: &Path) -> PathBuf {
        let path = dir.join("misbehaving.wasm");
        std::fs::write(&path, wat::parse_str(MISBEHAVING).unwrap()).unwrap();
        path
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failing_wagi_handlers_answer_500_and_the_server_keeps_serving() {
        let dir = temp_dir("wagi-fail");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let spec = spec(&dir, misbehaving(&dir), HttpKind::Wagi);
        let memory = spec.memory_limit.unwrap();
        let server = start(&rt, &dir, spec).await;
        assert_eq!(request(server.addr, "GET", "/", &[], "").await.body, "ok\n");
        for (body, status, note) in [
            ("t", 500, "wasm trap".to_owned()),
            ("m", 500, format!("OOMKilled: memory limit of {memory} bytes exceeded")),
            ("e", 500, "the handler exited with code 3".to_owned()),
            ("b", 500, "neither a Content-Type nor a Location".to_owned()),
        ] {
            let r = request(server.addr, "POST", "/x", &[], body).await;
            assert_eq!(r.status, status, "{body}: {}", r.body);
            let log = server.log();
            assert!(log.lines().any(|l| l.starts_with("request POST /x: ") && l.contains(&note)), "{note} missing in\n{log}");
            let r = request(server.addr, "GET", "/", &[], "").await;
            assert_eq!((r.status, r.body.as_str()), (200, "ok\n"), "after {body}");
        }
        let big = "x".repeat(WAGI_MAX_REQUEST_BODY + 1);
        assert_eq!(request(server.addr, "POST", "/", &[], &big).await.status, 413);
        server.task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_handler_is_stopped_at_the_timeout_while_others_are_served() {
        let dir = temp_dir("wagi-timeout");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let mut spec = spec(&dir, misbehaving(&dir), HttpKind::Wagi);
        spec.request_timeout = Duration::from_secs(2);
        spec.cpu_millis = Some(500);
        let server = start(&rt, &dir, spec).await;
        let addr = server.addr;
        let busy = tokio::spawn(async move { request(addr, "POST", "/spin", &[], "l").await });
        wait_for_log(&server, "spinning").await;
        let r = request(addr, "GET", "/", &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (200, "ok\n"));
        assert!(!busy.is_finished(), "the busy request is still running");
        let r = busy.await.unwrap();
        assert_eq!(r.status, 504);
        let log = server.log();
        assert!(log.contains("request POST /spin: stopped at the request timeout of 2s"), "{log}");
        server.task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dropping_the_server_closes_the_port_and_stops_requests() {
        let dir = temp_dir("drop");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let server = start(&rt, &dir, spec(&dir, misbehaving(&dir), HttpKind::Wagi)).await;
        let addr = server.addr;
        assert_eq!(request(addr, "GET", "/", &[], "").await.status, 200);
        let busy = tokio::spawn(async move { request(addr, "POST", "/spin", &[], "l").await });
        wait_for_log(&server, "spinning").await;
        server.task.abort();
        assert!(server.task.await.unwrap_err().is_cancelled());
        // The stuck request ends without an answer instead of running to the timeout.
        let r = tokio::time::timeout(Duration::from_secs(30), busy).await.expect("the stuck request ended").unwrap();
        assert_eq!(r.status, 0);
        assert!(TcpStream::connect(addr).await.is_err(), "the port is closed");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wasi_http_hello_answers_and_logs() {
        let dir = temp_dir("wasi-http");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let mut spec = spec(&dir, example("hello-http.wasm"), HttpKind::WasiHttp);
        spec.request_timeout = Duration::from_secs(2);
        let server = start(&rt, &dir, spec).await;
        let addr = server.addr;
        for _ in 0..2 {
            let r = request(addr, "GET", "/", &[], "").await;
            assert_eq!((r.status, r.body.as_str()), (200, "hello from wasi:http\n"), "{}", r.head);
        }
        assert_eq!(request(addr, "GET", "/nothing-here", &[], "").await.status, 404);

        // A handler spinning forever is stopped at the timeout; others are served meanwhile.
        let busy = tokio::spawn(async move { request(addr, "GET", "/busy", &[], "").await });
        wait_for_log(&server, "hello-http: GET /busy").await;
        assert_eq!(request(addr, "GET", "/", &[], "").await.status, 200);
        assert_eq!(busy.await.unwrap().status, 504);

        let log = server.log();
        assert_eq!(log.lines().filter(|l| *l == "hello-http: GET /").count(), 3, "{log}");
        assert!(log.contains("request GET /busy: stopped at the request timeout of 2s"), "{log}");
        server.task.abort();

        // Memory too small for the handler's own memories: every request is OOMKilled.
        let small = temp_dir("wasi-http-small");
        let mut small_spec = self::spec(&small, example("hello-http.wasm"), HttpKind::WasiHttp);
        small_spec.memory_limit = Some(64 << 10);
        let server = start(&rt, &small, small_spec).await;
        assert_eq!(request(server.addr, "GET", "/", &[], "").await.status, 500);
        let log = server.log();
        assert!(log.contains("request GET /: OOMKilled: memory limit of 65536 bytes exceeded"), "{log}");
        server.task.abort();
        let _ = std::fs::remove_dir_all(small);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wasi_http_frontend_reaches_its_backend_by_service_name() {
        let dir = temp_dir("frontend");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let backend = start(&rt, &dir, spec(&dir, example("hello-wagi.wasm"), HttpKind::Wagi)).await;
        // `backend` in namespace shop, at the address the test backend listens on.
        let mut table = crate::service_table::ServiceTable::default();
        let svc = serde_json::json!({"metadata": {"name": "backend", "namespace": "shop"}, "spec": {"clusterIP": backend.addr.ip().to_string(), "ports": [{"name": "http", "port": backend.addr.port()}]}});
        table.apply_service(Arc::new(serde_json::from_value(svc).unwrap()));
        let services = crate::service_table::SharedTable::fixed(table);
        let frontend_ip = std::net::IpAddr::from([127, 1, 0, 9]);
        let names = Arc::new(super::super::ClusterNames::new(services.clone(), "cluster.local", crate::dns::SearchPath::cluster_first("shop", "cluster.local"), rt.local_servers(), frontend_ip));
        let front_dir = temp_dir("frontend-front");
        let call = |url: &str| {
            let mut s = spec(&front_dir, example("frontend.wasm"), HttpKind::WasiHttp);
            s.env.push(("BACKEND_URL".into(), url.to_owned()));
            s.names = Some(names.clone());
            s
        };
        let port = backend.addr.port();
        let frontend = start(&rt, &front_dir, call(&format!("http://backend:{port}/"))).await;
        let r = request(frontend.addr, "GET", "/status/418", &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (200, format!("frontend got 418 from http://backend:{port}/status/418: hello from web\n").as_str()));
        assert!(frontend.log().lines().any(|l| l == format!("frontend: GET /status/418 -> http://backend:{port}/status/418: 418")), "{}", frontend.log());
        // The Service has no endpoints yet: the request went over TCP to its address, with
        // the Service name in Host.
        let r = request(frontend.addr, "GET", "/env", &[], "").await;
        assert!(r.body.lines().any(|l| l == format!("HTTP_HOST=backend:{port}")), "{}", r.body);
        assert!(r.body.lines().any(|l| l == "REMOTE_ADDR=127.0.0.1"), "{}", r.body);

        // Once the backend is the Service's endpoint, the request is answered in process:
        // the backend sees the frontend pod's address, not a loopback connection's.
        let slice = serde_json::json!({"metadata": {"name": "backend-1", "namespace": "shop", "labels": {crate::service_table::SERVICE_NAME_LABEL: "backend"}},
            "addressType": "IPv4", "endpoints": [{"addresses": [backend.addr.ip().to_string()]}], "ports": [{"name": "http", "port": port}]});
        services.table.write().unwrap().apply_slice(Arc::new(serde_json::from_value(slice).unwrap()));
        let r = request(frontend.addr, "GET", "/env", &[], "").await;
        assert!(r.body.starts_with(&format!("frontend got 200 from http://backend:{port}/env: hello from web\n")), "{}", r.body);
        assert!(r.body.lines().any(|l| l == "REMOTE_ADDR=127.1.0.9"), "{}", r.body);
        assert!(r.body.lines().any(|l| l == format!("HTTP_HOST=backend:{port}")), "{}", r.body);
        // A draining backend is not dispatched to: the request goes over TCP again (here
        // refused, as the drained listener is closed).
        backend.drain.close();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(backend.addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "the drained backend still takes connections");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let r = request(frontend.addr, "GET", "/", &[], "").await;
        assert_eq!(r.status, 502, "{}", r.body);
        frontend.task.abort();

        // A cluster name that does not exist fails with a DNS error, not a connection.
        let missing = start(&rt, &front_dir, call(&format!("http://missing.shop.svc.cluster.local:{port}/"))).await;
        let r = request(missing.addr, "GET", "/", &[], "").await;
        assert_eq!((r.status, r.body.as_str()), (502, format!("frontend: http://missing.shop.svc.cluster.local:{port}/ failed: DNS-error\n").as_str()));
        missing.task.abort();
        backend.task.abort();
        let _ = std::fs::remove_dir_all(front_dir);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn wrong_artifacts_and_taken_ports_fail_the_container() {
        let dir = temp_dir("fail");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let outcome = rt.serve_http(spec(&dir, example("hello-http.wasm"), HttpKind::Wagi)).await;
        assert!(matches!(outcome, Outcome::Failed(m) if m.contains("WAGI")));
        let outcome = rt.serve_http(spec(&dir, example("hello-wagi.wasm"), HttpKind::WasiHttp)).await;
        assert!(matches!(outcome, Outcome::Failed(m) if m.contains("incoming-handler")));
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut s = spec(&dir, example("hello-wagi.wasm"), HttpKind::Wagi);
        s.addr = taken.local_addr().unwrap();
        let outcome = rt.serve_http(s).await;
        assert!(matches!(outcome, Outcome::Failed(m) if m.starts_with("binding ")));
        let _ = std::fs::remove_dir_all(dir);
    }
}
