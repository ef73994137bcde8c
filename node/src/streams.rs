//! The streaming endpoints of the node, as kubelet's: exec, attach and port-forward over
//! WebSocket (the API server passes the upgraded connection through unchanged).
//!
//! ```text
//! GET /exec/{ns}/{pod}/{container}?command=..&command=..&stdin=1&stdout=1&stderr=1&tty=0
//! GET /attach/{ns}/{pod}/{container}?stdin=1&stdout=1&stderr=1&tty=1
//! GET /portForward/{ns}/{pod}[?ports=8080,9090]
//! ```
//!
//! Exec and attach speak the `channel.k8s.io` protocols: every binary message starts with a
//! channel byte (0 stdin, 1 stdout, 2 stderr, 3 error, 4 resize). `v4` and `v5` put a
//! `Status` on the error channel when the command ends (success, or `NonZeroExitCode` with
//! the code); `v5` adds channel 255, on which the client closes a stream (its stdin).
//! Port-forward speaks SPDY/3.1 tunneled in the WebSocket (`SPDY/3.1+portforward.k8s.io`,
//! kubectl 1.31+), SPDY on the upgraded connection itself (older kubectl), or the
//! `v4.channel.k8s.io` port-forward channels (the Python client): per requested port a data
//! and an error channel, each opened by the port number (2 bytes, little-endian).

use crate::exec::{self, Container, Ended, Io};
use crate::server::{text, Body, ServerState};
use crate::wasm::Stdin;
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use hyper::{header, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// The exec/attach protocols, most preferred first.
const CHANNEL_PROTOCOLS: [&str; 5] = ["v5.channel.k8s.io", "v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"];
/// SPDY inside a WebSocket, kubectl's port-forward since 1.31.
const SPDY_TUNNEL: &str = "SPDY/3.1+portforward.k8s.io";
/// WebSocket port-forward channels (kubelet accepts both names).
const PORT_FORWARD_CHANNELS: [&str; 2] = ["v4.channel.k8s.io", "portforward.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
const CLOSE: u8 = 255;

/// How much an instance may write ahead of the client reading it.
const PIPE_BYTES: usize = 64 << 10;

/// Largest message a client may send (stdin chunks, tunneled SPDY frames).
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().max_message_size(Some(16 << 20)).max_frame_size(Some(16 << 20))
}

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// The protocols a client offers, in its order.
fn offered<B>(req: &Request<B>) -> Vec<String> {
    req.headers().get_all(header::SEC_WEBSOCKET_PROTOCOL).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect()
}

/// The server's most preferred protocol among those offered.
fn choose(offered: &[String], supported: &[&'static str]) -> Option<&'static str> {
    supported.iter().copied().find(|s| offered.iter().any(|o| o == s))
}

fn is_websocket<B>(req: &Request<B>) -> bool {
    let has = |name: header::HeaderName, value: &str| req.headers().get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).any(|v| v.trim().eq_ignore_ascii_case(value));
    has(header::UPGRADE, "websocket") && req.headers().contains_key(header::SEC_WEBSOCKET_KEY)
}

/// The `101 Switching Protocols` answer to a WebSocket upgrade with `protocol`.
fn accept_websocket<B>(req: &Request<B>, protocol: Option<&str>) -> Response<Body> {
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).map(|k| k.as_bytes()).unwrap_or_default();
    let mut resp = switching_protocols();
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, header::HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
    if let Ok(v) = header::HeaderValue::from_str(&tokio_tungstenite::tungstenite::handshake::derive_accept_key(key)) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if let Some(p) = protocol.and_then(|p| header::HeaderValue::from_str(p).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    resp
}

/// A bare `101 Switching Protocols`; the caller adds the protocol's headers.
fn switching_protocols() -> Response<Body> {
    use http_body_util::BodyExt;
    let mut resp = Response::new(http_body_util::Empty::<Bytes>::new().map_err(|never| match never {}).boxed_unsync());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    resp
}

/// Every value of a query parameter, in order.
fn query_all(query: Option<&str>, name: &str) -> Vec<String> {
    form_urlencoded::parse(query.unwrap_or("").as_bytes()).filter(|(k, _)| k == name).map(|(_, v)| v.into_owned()).collect()
}

/// A query boolean as kubelet reads it (Go's `strconv.ParseBool`, any true spelling).
fn query_flag(query: Option<&str>, name: &str) -> bool {
    query_all(query, name).last().is_some_and(|v| matches!(v.as_str(), "1" | "t" | "T" | "true" | "True" | "TRUE"))
}

/// What an exec or attach session wants.
struct Session {
    protocol: &'static str,
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
}

impl Session {
    /// Whether the error channel carries a `Status` (v4, v5) rather than plain text.
    fn status_json(&self) -> bool {
        matches!(self.protocol, "v4.channel.k8s.io" | "v5.channel.k8s.io")
    }
}

/// Answers `/exec/...` and `/attach/...`: checks the request, switches to WebSocket and runs
/// the session in the background.
pub fn exec_or_attach<B: Send + 'static>(state: Arc<ServerState>, mut req: Request<B>, ns: &str, pod: &str, container: &str, attach: bool) -> Response<Body> {
    let Some(target) = state.containers.get(ns, pod, container) else {
        return text(StatusCode::NOT_FOUND, format!("container not found ({container:?})"));
    };
    let query = req.uri().query().map(str::to_owned);
    let q = query.as_deref();
    let command = query_all(q, "command");
    if !attach && command.is_empty() {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 command");
    }
    let (stdin, stdout, stderr, tty) = (query_flag(q, "stdin"), query_flag(q, "stdout"), query_flag(q, "stderr"), query_flag(q, "tty"));
    if !(stdin || stdout || stderr) {
        return text(StatusCode::BAD_REQUEST, "you must specify at least 1 of stdin, stdout, stderr");
    }
    if tty && stderr {
        // As kubelet: a terminal has one output stream.
        return text(StatusCode::BAD_REQUEST, "tty and stderr cannot both be true");
    }
    if !is_websocket(&req) {
        return text(StatusCode::BAD_REQUEST, "this node streams exec and attach over WebSocket only (channel.k8s.io protocols); upgrade with Sec-WebSocket-Protocol: v5.channel.k8s.io");
    }
    let offered = offered(&req);
    let protocol = match choose(&offered, &CHANNEL_PROTOCOLS) {
        Some(p) => p,
        None if offered.is_empty() => "channel.k8s.io",
        None => return text(StatusCode::BAD_REQUEST, format!("none of the offered protocols {offered:?} is supported; supported: {CHANNEL_PROTOCOLS:?}")),
    };
    let resp = accept_websocket(&req, (!offered.is_empty()).then_some(protocol));
    let upgrade = hyper::upgrade::on(&mut req);
    let session = Session { protocol, stdin, stdout, stderr, tty };
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await;
        if attach {
            run_attach(state, ws, session, target).await;
        } else {
            run_exec(state, ws, session, target, command).await;
        }
    });
    resp
}

/// The writer half of a session: frames from every channel go out through one task.
#[derive(Clone)]
struct Outbox {
    tx: mpsc::Sender<Message>,
}

impl Outbox {
    fn start(mut sink: futures::stream::SplitSink<Ws, Message>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Message>(32);
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                let closing = matches!(m, Message::Close(_));
                if sink.send(m).await.is_err() || closing {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        (Self { tx }, writer)
    }

    async fn send(&self, channel: u8, data: &[u8]) -> bool {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(data);
        self.tx.send(Message::Binary(Bytes::from(frame))).await.is_ok()
    }

    async fn close(&self, reason: &str) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: reason.into() };
        let _ = self.tx.send(Message::Close(Some(frame))).await;
    }
}

/// Copies what an instance writes into `reader` to `channel` until it ends.
async fn pump(mut reader: impl AsyncRead + Unpin, outbox: mpsc::Sender<Message>, channel: u8) {
    let mut buf = vec![0u8; 32 << 10];
    loop {
        let n = match reader.read(&mut buf[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf[0] = channel;
        if outbox.send(Message::Binary(Bytes::copy_from_slice(&buf[..=n]))).await.is_err() {
            return;
        }
    }
}

/// An output stream of the instance and the task that carries it to the client (or a sink
/// when the client did not ask for it).
fn output(wanted: bool, outbox: &Outbox, channel: u8) -> (Box<dyn AsyncWrite + Send + Sync + Unpin>, Option<tokio::task::JoinHandle<()>>) {
    if !wanted {
        return (Box::new(tokio::io::sink()), None);
    }
    let (inst, ours) = tokio::io::duplex(PIPE_BYTES);
    (Box::new(inst), Some(tokio::spawn(pump(ours, outbox.tx.clone(), channel))))
}

/// Reads the client's messages: stdin into `stdin` (until the v5 close signal or the end),
/// resize ignored (an instance has no terminal size). Returns when the client goes away.
async fn read_client(mut stream: futures::stream::SplitStream<Ws>, mut stdin: Option<impl AsyncWrite + Unpin>) {
    while let Some(msg) = stream.next().await {
        let data = match msg {
            Ok(Message::Binary(b)) => b,
            // The Python client sends str stdin as text frames, channel byte first; kubelet
            // reads both kinds alike.
            Ok(Message::Text(t)) => Bytes::copy_from_slice(t.as_bytes()),
            Ok(Message::Close(_)) | Err(_) => return,
            Ok(_) => continue,
        };
        match data.first().copied() {
            Some(STDIN) => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data[1..]).await.is_err() {
                        stdin = None;
                    }
                }
            }
            Some(CLOSE) if data.get(1) == Some(&STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            Some(RESIZE) | Some(CLOSE) => {}
            _ => {}
        }
    }
}

/// The error channel's message for a finished command, as kubelet writes it.
fn exit_status(session: &Session, command: &[String], ended: &Ended) -> Option<Vec<u8>> {
    let failure = |message: String, reason: &str, causes: serde_json::Value| {
        serde_json::json!({"metadata": {}, "status": "Failure", "message": message, "reason": reason, "details": {"causes": causes}})
    };
    if !session.status_json() {
        return match ended {
            Ended::Exited(0) => None,
            Ended::Exited(code) => Some(format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")).into_bytes()),
            Ended::Failed(m) => Some(m.clone().into_bytes()),
        };
    }
    let status = match ended {
        Ended::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ended::Exited(code) => failure(
            format!("command terminated with non-zero exit code: error executing command [{}], exit code {code}", command.join(" ")),
            "NonZeroExitCode",
            serde_json::json!([{"reason": "ExitCode", "message": code.to_string()}]),
        ),
        Ended::Failed(m) => serde_json::json!({"metadata": {}, "status": "Failure", "message": m, "reason": "InternalError"}),
    };
    serde_json::to_vec(&status).ok()
}

async fn run_exec(state: Arc<ServerState>, ws: Ws, session: Session, target: Arc<Container>, command: Vec<String>) {
    let (sink, stream) = ws.split();
    let (outbox, writer) = Outbox::start(sink);
    let (stdout, out_pump) = output(session.stdout, &outbox, STDOUT);
    // A terminal has one output: stderr joins stdout.
    let (stderr, err_pump) = output(session.stderr || session.tty, &outbox, if session.tty { STDOUT } else { STDERR });
    let (stdin, client_stdin) = if session.stdin {
        let (inst, ours) = tokio::io::duplex(PIPE_BYTES);
        (Stdin::Stream(Box::new(inst)), Some(ours))
    } else {
        (Stdin::Empty, None)
    };
    let client = tokio::spawn(read_client(stream, client_stdin));
    let io = Io { stdin, stdout, stderr };
    let run = exec::run(&state.runtime, &target, command.clone(), io);
    tokio::pin!(run);
    let mut client = client;
    let ended = tokio::select! {
        ended = &mut run => ended,
        // The client went away: the instance stops with it.
        _ = &mut client => {
            writer.abort();
            return;
        }
    };
    // Everything the command wrote reaches the client before its status.
    for p in [out_pump, err_pump].into_iter().flatten() {
        let _ = p.await;
    }
    if let Some(status) = exit_status(&session, &command, &ended) {
        outbox.send(ERROR, &status).await;
    }
    outbox.close("").await;
    drop(outbox);
    let _ = writer.await;
    client.abort();
}

async fn run_attach(state: Arc<ServerState>, ws: Ws, session: Session, target: Arc<Container>) {
    let (sink, stream) = ws.split();
    let (outbox, writer) = Outbox::start(sink);
    // The running instance's stdin: this session writes it, a `stdinOnce` container's
    // stdin closes when the session ends.
    let stdin_writer = match (&target.stdin, session.stdin) {
        (Some(shared), true) => Some(AttachWriter { shared: shared.clone(), once: target.stdin_once }),
        _ => None,
    };
    let client = tokio::spawn(read_client(stream, stdin_writer));
    let log_outbox = outbox.clone();
    let output = async move {
        let outbox = log_outbox;
        let Some(log) = crate::server::follow_run_log(&state, target.log.clone()).await else { return };
        let mut log = std::pin::pin!(log);
        while let Some(chunk) = log.next().await {
            if (session.stdout || session.tty) && !outbox.send(STDOUT, &chunk).await {
                return;
            }
        }
    };
    tokio::pin!(output);
    let mut client = client;
    tokio::select! {
        _ = &mut output => {}
        _ = &mut client => {
            writer.abort();
            return;
        }
    }
    if session.status_json() {
        outbox.send(ERROR, br#"{"metadata":{},"status":"Success"}"#).await;
    }
    outbox.close("").await;
    drop(outbox);
    let _ = writer.await;
    client.abort();
}

/// An attach session's handle on a running instance's stdin.
struct AttachWriter {
    shared: exec::AttachStdin,
    once: bool,
}

impl AsyncWrite for AttachWriter {
    fn poll_write(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>, buf: &[u8]) -> std::task::Poll<std::io::Result<usize>> {
        let Ok(mut guard) = self.shared.try_lock() else {
            // Another session is writing; try again soon.
            cx.waker().wake_by_ref();
            return std::task::Poll::Pending;
        };
        match guard.as_mut() {
            Some(w) => std::pin::Pin::new(w).poll_write(cx, buf),
            None => std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into())),
        }
    }
    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: std::pin::Pin<&mut Self>, _cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        if self.once {
            if let Ok(mut guard) = self.shared.try_lock() {
                guard.take();
            }
        }
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for AttachWriter {
    fn drop(&mut self) {
        if self.once {
            if let Ok(mut guard) = self.shared.try_lock() {
                guard.take();
            }
        }
    }
}

/// Answers `/portForward/{ns}/{pod}`.
pub fn port_forward<B: Send + 'static>(state: Arc<ServerState>, mut req: Request<B>, ns: &str, pod: &str) -> Response<Body> {
    let Some(pod_ip) = state.containers.pod_ip(ns, pod) else {
        return text(StatusCode::NOT_FOUND, format!("pod {pod:?} has no running container on this node"));
    };
    let target = Forward { pod: format!("{ns}/{pod}"), pod_ip };
    let spdy_upgrade = req.headers().get(header::UPGRADE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.eq_ignore_ascii_case("SPDY/3.1"));
    if spdy_upgrade {
        let upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let Ok(upgraded) = upgrade.await else { return };
            let (ours, mut theirs) = tokio::io::duplex(PIPE_BYTES);
            tokio::spawn(async move {
                let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut theirs).await;
            });
            target.spdy(ours).await;
        });
        let mut resp = switching_protocols();
        let h = resp.headers_mut();
        h.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, header::HeaderValue::from_static("SPDY/3.1"));
        h.insert("x-stream-protocol-version", header::HeaderValue::from_static("portforward.k8s.io"));
        return resp;
    }
    if !is_websocket(&req) {
        return text(StatusCode::BAD_REQUEST, "port-forward needs a WebSocket (SPDY/3.1+portforward.k8s.io or v4.channel.k8s.io) or a SPDY/3.1 upgrade");
    }
    let offered = offered(&req);
    let tunneled = choose(&offered, &[SPDY_TUNNEL]).is_some();
    let protocol = if tunneled { Some(SPDY_TUNNEL) } else { choose(&offered, &PORT_FORWARD_CHANNELS) };
    if protocol.is_none() && !offered.is_empty() {
        return text(StatusCode::BAD_REQUEST, format!("none of the offered protocols {offered:?} is supported for port-forward"));
    }
    let ports: Vec<u16> = query_all(req.uri().query(), "ports").iter().flat_map(|p| p.split(',').map(str::trim).map(str::to_owned).collect::<Vec<_>>()).filter_map(|p| p.parse().ok()).collect();
    if !tunneled && ports.is_empty() {
        return text(StatusCode::BAD_REQUEST, "query parameter \"port\" is required");
    }
    let resp = accept_websocket(&req, protocol);
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(ws_config())).await;
        if tunneled {
            target.spdy(tunnel(ws)).await;
        } else {
            target.channels(ws, ports).await;
        }
    });
    resp
}

/// The byte stream a WebSocket tunnels in its binary messages (each message a piece of it,
/// as client-go's tunneling connection writes them), as one duplex stream.
fn tunnel(ws: Ws) -> tokio::io::DuplexStream {
    let (ours, theirs) = tokio::io::duplex(PIPE_BYTES);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let (mut read, mut write) = tokio::io::split(theirs);
        let inbound = async {
            while let Some(Ok(msg)) = stream.next().await {
                match msg {
                    Message::Binary(b) => {
                        if write.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    Message::Close(_) => break,
                    _ => {}
                }
            }
            let _ = write.shutdown().await;
        };
        let outbound = async {
            let mut buf = vec![0u8; 32 << 10];
            loop {
                match read.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = sink.send(Message::Close(Some(CloseFrame { code: CloseCode::Normal, reason: "".into() }))).await;
        };
        // The session is over when either direction is.
        tokio::select! {
            _ = inbound => {}
            _ = outbound => {}
        }
    });
    ours
}

/// Where forwarded connections go: the pod's address, on the port each stream asks for.
#[derive(Clone)]
struct Forward {
    pod: String,
    pod_ip: String,
}

impl Forward {
    async fn dial(&self, port: u16) -> std::io::Result<tokio::net::TcpStream> {
        let tcp = tokio::net::TcpStream::connect((self.pod_ip.as_str(), port)).await?;
        let _ = tcp.set_nodelay(true);
        Ok(tcp)
    }

    /// kubelet's message for a connection the pod did not take.
    fn refused(&self, port: u16, e: &std::io::Error) -> String {
        format!("error forwarding port {port} to pod {}: failed to connect to {}:{port}: {e}", self.pod, self.pod_ip)
    }

    /// SPDY port-forward: the client opens an error and a data stream per connection,
    /// paired by `requestid`; each pair is one TCP connection to the pod.
    async fn spdy(self, io: tokio::io::DuplexStream) {
        let (tx, mut rx) = mpsc::channel(16);
        let session = tokio::spawn(crate::spdy::serve(io, tx));
        let mut waiting: std::collections::HashMap<String, crate::spdy::IncomingStream> = std::collections::HashMap::new();
        let mut connections = tokio::task::JoinSet::new();
        while let Some(stream) = rx.recv().await {
            let request = stream.header("requestid").unwrap_or_default().to_owned();
            let kind = stream.header("streamtype").unwrap_or_default().to_owned();
            if kind != "error" && kind != "data" {
                continue;
            }
            let Some(other) = waiting.remove(&request) else {
                waiting.insert(request, stream);
                continue;
            };
            let (error, data) = if kind == "error" { (stream, other) } else { (other, stream) };
            let me = self.clone();
            connections.spawn(async move { me.forward_pair(error, data).await });
            while connections.try_join_next().is_some() {}
        }
        connections.abort_all();
        session.abort();
    }

    async fn forward_pair(self, error: crate::spdy::IncomingStream, data: crate::spdy::IncomingStream) {
        let port: u16 = data.header("port").and_then(|p| p.parse().ok()).unwrap_or(0);
        let mut error_writer = error.writer;
        let tcp = match self.dial(port).await {
            Ok(t) => t,
            Err(e) => {
                let _ = error_writer.write_all(self.refused(port, &e).as_bytes()).await;
                let _ = error_writer.shutdown().await;
                return;
            }
        };
        let (mut tcp_read, mut tcp_write) = tcp.into_split();
        let (mut from_client, mut to_client) = (data.reader, data.writer);
        let up = async {
            let _ = tokio::io::copy(&mut from_client, &mut tcp_write).await;
            let _ = tcp_write.shutdown().await;
        };
        let down = async {
            let _ = tokio::io::copy(&mut tcp_read, &mut to_client).await;
            let _ = to_client.shutdown().await;
        };
        // The connection is done when the pod has closed its side; the client's half-close
        // only ends the upload.
        tokio::join!(up, down);
        let _ = error_writer.shutdown().await;
    }

    /// WebSocket port-forward channels: channel 2i carries port i's bytes, 2i+1 its errors.
    async fn channels(self, ws: Ws, ports: Vec<u16>) {
        let (sink, mut stream) = ws.split();
        let (outbox, writer) = Outbox::start(sink);
        let mut uploads: Vec<Option<tokio::net::tcp::OwnedWriteHalf>> = Vec::new();
        let mut downloads = tokio::task::JoinSet::new();
        for (i, port) in ports.iter().enumerate() {
            let (data, err) = ((2 * i) as u8, (2 * i + 1) as u8);
            let prefix = port.to_le_bytes();
            outbox.send(data, &prefix).await;
            outbox.send(err, &prefix).await;
            match self.dial(*port).await {
                Ok(tcp) => {
                    let (read, write) = tcp.into_split();
                    uploads.push(Some(write));
                    downloads.spawn(pump(read, outbox.tx.clone(), data));
                }
                Err(e) => {
                    uploads.push(None);
                    outbox.send(err, self.refused(*port, &e).as_bytes()).await;
                }
            }
        }
        let client = async {
            while let Some(Ok(msg)) = stream.next().await {
                let Message::Binary(b) = msg else {
                    if matches!(msg, Message::Close(_)) {
                        return;
                    }
                    continue;
                };
                let Some(&channel) = b.first() else { continue };
                let Some(Some(w)) = uploads.get_mut(usize::from(channel / 2)).filter(|_| channel % 2 == 0) else { continue };
                if w.write_all(&b[1..]).await.is_err() {
                    uploads[usize::from(channel / 2)] = None;
                }
            }
        };
        let pods_done = async { while downloads.join_next().await.is_some() {} };
        // Either side ending ends the session: a WebSocket cannot half-close one channel.
        tokio::select! {
            _ = client => {}
            _ = pods_done => {}
        }
        outbox.close("").await;
        drop(outbox);
        let _ = writer.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_preferred_offered_protocol_is_chosen() {
        let o = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(choose(&o(&["v4.channel.k8s.io", "v5.channel.k8s.io"]), &CHANNEL_PROTOCOLS), Some("v5.channel.k8s.io"));
        assert_eq!(choose(&o(&["v4.channel.k8s.io"]), &CHANNEL_PROTOCOLS), Some("v4.channel.k8s.io"));
        assert_eq!(choose(&o(&["base64.channel.k8s.io"]), &CHANNEL_PROTOCOLS), None);
        assert_eq!(choose(&o(&["SPDY/3.1+portforward.k8s.io", "portforward.k8s.io"]), &[SPDY_TUNNEL]), Some(SPDY_TUNNEL));
    }

    #[test]
    fn exit_statuses_read_as_kubelets() {
        let v5 = Session { protocol: "v5.channel.k8s.io", stdin: false, stdout: true, stderr: true, tty: false };
        let cmd = vec!["app.wasm".to_string(), "--fail".to_string()];
        assert_eq!(exit_status(&v5, &cmd, &Ended::Exited(0)).unwrap(), br#"{"metadata":{},"status":"Success"}"#);
        let failed: serde_json::Value = serde_json::from_slice(&exit_status(&v5, &cmd, &Ended::Exited(3)).unwrap()).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["message"], "command terminated with non-zero exit code: error executing command [app.wasm --fail], exit code 3");
        assert_eq!(failed["details"]["causes"][0], serde_json::json!({"reason": "ExitCode", "message": "3"}));
        let v2 = Session { protocol: "v2.channel.k8s.io", ..v5 };
        assert_eq!(exit_status(&v2, &cmd, &Ended::Exited(0)), None);
    }

    #[test]
    fn query_values_repeat_and_booleans_read_as_go_does() {
        let q = Some("command=ls&command=-l&command=%2Fdata&stdin=True&tty=0&stdout=1");
        assert_eq!(query_all(q, "command"), ["ls", "-l", "/data"]);
        assert!(query_flag(q, "stdin") && query_flag(q, "stdout") && !query_flag(q, "tty") && !query_flag(q, "stderr"));
    }
}
