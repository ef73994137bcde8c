//! One pod on this node, from first sight to deletion: address, images, volumes, init
//! containers in order, then every container supervised under the pod's restartPolicy
//! with kubelet's back-off, probes, deadline, and a status write after each transition.

use crate::agent::NodeCtx;
use crate::env::{self, PodFacts, Sources};
use crate::events::{self, Type};
use crate::images::{ImageContent, PullError, PullPolicy, RegistryCredentials};
use crate::logs::{self, LogWriter};
use crate::probes::{self, Schedule};
use crate::status::{self, PodState, State, Terminated};
use crate::volumes;
use crate::wasm::{HttpKind, HttpSpec, DEFAULT_MAX_CONCURRENT, DEFAULT_REQUEST_TIMEOUT};
use crate::dns::SearchPath;
use crate::wasm::{ArtifactKind, ClusterNames, Mount, Outcome, RunSpec};
use futures::future::OptionFuture;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{watch, Notify};

mod ephemeral;

/// Kubelet's cap on crash-loop and image-pull back-off.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A container that ran this long without crashing starts its back-off afresh.
const BACKOFF_RESET: Duration = Duration::from_secs(600);
/// How long a pod start waits for the node's first list of Services (for their env vars)
/// before it fails and is retried.
const SERVICES_SYNC_WAIT: Duration = Duration::from_secs(30);
/// The pod annotation that overrides how a WASI command module with ports runs: `wagi` or
/// `command` (see [`select_executor`] and docs/user-guide.md).
pub const EXECUTOR_ANNOTATION: &str = "wasmkube.io/executor";
/// The Event reason for a container that was expected to serve and ended on its own.
pub const SERVER_EXITED: &str = "ServerExited";

/// Runs the pod `feed` names until it is gone (or the node stops).
pub async fn run(ctx: Arc<NodeCtx>, mut feed: watch::Receiver<Option<Arc<Pod>>>) {
    let Some(pod) = feed.borrow_and_update().clone() else { return };
    let mut stopping = ctx.stopping.clone();
    if pod.metadata.deletion_timestamp.is_some() {
        finish_deletion(&ctx, &pod).await;
        remove_files(&ctx, &pod);
        return;
    }
    if is_terminal(&pod) {
        // Finished before: nothing runs; its logs stay until the pod is deleted.
        loop {
            tokio::select! {
                changed = feed.changed() => {
                    if changed.is_err() || feed.borrow().is_none() {
                        remove_files(&ctx, &pod);
                        return;
                    }
                }
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }

    let pod_ip = match ctx.ips.allocate(pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()).and_then(|ip| ip.parse::<Ipv4Addr>().ok())) {
        Ok(ip) => ip,
        Err(e) => {
            tracing::error!(error = %e, "no address for a pod");
            let sh = Shared::new(ctx.clone(), pod.clone(), String::new());
            sh.update(|s| {
                for c in &mut s.main {
                    c.waiting("ContainerCreating", Some(e.to_string()));
                }
            });
            let _ = sh.write_now().await;
            return;
        }
    };
    let sh = Arc::new(Shared::new(ctx.clone(), pod.clone(), pod_ip.to_string()));
    let _ = sh.write_now().await;
    let writer = tokio::spawn(write_status(sh.clone()));
    let mut debuggers = ephemeral::Debuggers::default();
    debuggers.start(&sh, &pod);

    let deadline = sh.deadline();
    let mut work = Some(Box::pin(sh.clone().run_all()));
    let end = loop {
        let deadline_sleep = OptionFuture::from(deadline.map(tokio::time::sleep_until));
        tokio::select! {
            _ = OptionFuture::from(work.as_mut()), if work.is_some() => {
                work = None;
            }
            _ = deadline_sleep, if deadline.is_some() && work.is_some() => {
                work = None; // stops every instance of the pod
                sh.deadline_exceeded();
            }
            changed = feed.changed() => {
                let latest = if changed.is_ok() { feed.borrow_and_update().clone() } else { None };
                match latest {
                    None => break End::Gone,
                    Some(p) if p.metadata.deletion_timestamp.is_some() => break End::Deleting(p),
                    // Otherwise only debug containers are added to a pod's spec.
                    Some(p) => debuggers.start(&sh, &p),
                }
            }
            _ = stopping.wait_for(|s| *s) => break End::NodeStopping,
        }
    };
    if let End::Deleting(latest) = &end {
        sh.record_stopping();
        if let Some(w) = work.as_mut() {
            drain_http(&sh, latest, w).await;
        }
    }
    drop(work);
    drop(debuggers);
    writer.abort();
    match end {
        End::NodeStopping => return, // left as it is for the next start of the node
        End::Deleting(_) => {
            sh.stopped("stopped: the pod is being deleted");
            let _ = sh.write_now().await;
            finish_deletion(&ctx, &pod).await;
        }
        End::Gone => {}
    }
    ctx.ips.release(pod_ip);
    remove_files(&ctx, &pod);
}

enum End {
    Gone,
    Deleting(Arc<Pod>),
    NodeStopping,
}

/// How long a deleted pod's HTTP servers keep answering while the endpoints controller and
/// the node proxies take it out of rotation (at most half its grace period, so requests
/// in flight keep the other half).
const ENDPOINT_DRAIN: Duration = Duration::from_secs(1);

/// A deleted pod's HTTP servers end as a well-behaved server does on SIGTERM: they keep
/// serving while the pod leaves its Services' endpoints, then stop taking connections and
/// finish the requests in flight, all within the pod's grace period. The containers keep
/// running (`work` is polled) until then.
async fn drain_http<F: std::future::Future + Unpin>(sh: &Shared, latest: &Pod, work: &mut F) {
    if !sh.drain.serving() {
        return;
    }
    let grace = latest
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| latest.spec.as_ref().and_then(|s| s.termination_grace_period_seconds))
        .map_or(Duration::from_secs(30), |s| Duration::from_secs(u64::try_from(s).unwrap_or(0)));
    let hard_stop = tokio::time::Instant::now() + grace;
    tokio::select! {
        _ = &mut *work => return,
        _ = tokio::time::sleep(ENDPOINT_DRAIN.min(grace / 2)) => {}
    }
    sh.drain.close();
    tokio::select! {
        _ = &mut *work => {}
        _ = sh.drain.drained() => {}
        _ = tokio::time::sleep_until(hard_stop) => {}
    }
}

fn is_terminal(pod: &Pod) -> bool {
    matches!(pod.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

/// Everything ready to start one container.
#[derive(Clone)]
struct Prepared {
    module: PathBuf,
    digest: String,
    image_id: String,
    argv: Vec<String>,
    env: Vec<(String, String)>,
    mounts: Vec<(PathBuf, String, bool)>,
    memory_limit: Option<u64>,
    cpu_millis: Option<u64>,
    executor: Executor,
    /// What the image is and which ports the container declares: why a run that ends on
    /// its own may deserve an explanation ([`not_serving`]).
    artifact: ArtifactKind,
    ports: Vec<u16>,
}

/// How a container's artifact is run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executor {
    /// A command: runs to its end, exit code and all.
    Command,
    /// An HTTP server on the pod IP and each declared port, one instance per request: a
    /// WAGI handler module or a `wasi:http` component.
    Http { kind: HttpKind, ports: Vec<u16> },
}

/// What the pod's [`EXECUTOR_ANNOTATION`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecutorChoice {
    /// No annotation: a WASI command module is served as WAGI when it is expected to
    /// serve ([`expected_to_serve`]), and runs as a command otherwise.
    Auto,
    /// `wagi`: a WASI command module with ports is served as WAGI, whatever the restart policy.
    Wagi,
    /// `command`: a WASI command module runs to its end, ports or not.
    Command,
}

impl ExecutorChoice {
    pub fn of(pod: &Pod) -> Result<Self, String> {
        Self::parse(pod.metadata.annotations.as_ref().and_then(|a| a.get(EXECUTOR_ANNOTATION)).map(String::as_str))
    }

    pub fn parse(value: Option<&str>) -> Result<Self, String> {
        match value {
            None => Ok(Self::Auto),
            Some("wagi") => Ok(Self::Wagi),
            Some("command") => Ok(Self::Command),
            Some(other) => Err(format!("unknown value {other:?} of the annotation {EXECUTOR_ANNOTATION}: use \"wagi\" or \"command\"")),
        }
    }
}

/// A container is expected to serve when it declares a `containerPort` in a pod whose
/// `restartPolicy` is `Always` (the default, and the only policy Deployments, ReplicaSets,
/// StatefulSets and DaemonSets allow): it should keep answering on its ports. Under
/// `OnFailure` or `Never` (Jobs) a container is meant to finish, ports or not.
pub fn expected_to_serve(ports: &[u16], restart_policy: &str) -> bool {
    !ports.is_empty() && restart_policy == "Always"
}

/// How a container runs, by what its image is, the pod's [`EXECUTOR_ANNOTATION`], the
/// ports it declares and the pod's restart policy:
///
/// - a `wasi:http` component is served on its ports (and must declare one);
/// - a `wasi:cli/run` component runs as a command (it has no way to serve a port);
/// - a WASI preview-1 command module is served as WAGI when it is expected to serve
///   ([`expected_to_serve`]) or annotated `wagi` and declares a port; annotated `command`,
///   or without ports, or in a pod meant to finish, it runs as a command;
/// - an init container that is a command always runs to its end.
pub fn select_executor(kind: ArtifactKind, choice: ExecutorChoice, ports: Vec<u16>, init: bool, restart_policy: &str) -> Result<Executor, String> {
    match kind {
        ArtifactKind::HttpComponent if ports.is_empty() => Err("a wasi:http component serves HTTP: declare a containerPort".into()),
        ArtifactKind::HttpComponent => Ok(Executor::Http { kind: HttpKind::WasiHttp, ports }),
        ArtifactKind::ComponentCommand => Ok(Executor::Command),
        ArtifactKind::Command if init => Ok(Executor::Command),
        ArtifactKind::Command => {
            let wagi = match choice {
                ExecutorChoice::Auto => expected_to_serve(&ports, restart_policy),
                ExecutorChoice::Wagi => !ports.is_empty(),
                ExecutorChoice::Command => false,
            };
            Ok(if wagi { Executor::Http { kind: HttpKind::Wagi, ports } } else { Executor::Command })
        }
    }
}

/// Why a main container that was expected to serve ended on its own (not stopped by the
/// node or a probe), for a Warning Event and its status message; `None` when the end is
/// ordinary: a command expected to serve that exits non-zero is a plain crash, and one
/// that exits 0 in a pod meant to finish has done its work.
fn not_serving(container: &str, executor: &Executor, artifact: ArtifactKind, ports: &[u16], restart_policy: &str, outcome: &Outcome) -> Option<String> {
    let ports_text = |ports: &[u16]| {
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!("containerPort{} {}", if list.len() == 1 { "" } else { "s" }, list.join(", "))
    };
    match executor {
        Executor::Http { kind, ports } => {
            let how = match kind {
                HttpKind::Wagi => "WAGI",
                HttpKind::WasiHttp => "wasi:http",
            };
            let why = match outcome {
                Outcome::Failed(m) | Outcome::Trapped(m) => m.clone(),
                other => format!("its server ended with exit code {}", other.exit_code()),
            };
            Some(format!("container {container} is served as {how} on {} but stopped serving: {why}", ports_text(ports)))
        }
        Executor::Command if *outcome == Outcome::Exited(0) && expected_to_serve(ports, restart_policy) => {
            let what = match artifact {
                ArtifactKind::ComponentCommand => "a wasi:cli/run component runs as a command, to its end, and cannot listen on a port itself; to serve HTTP, build it as a wasi:http component (exporting wasi:http/incoming-handler)".to_owned(),
                _ => format!("the pod's annotation {EXECUTOR_ANNOTATION}: command runs this WASI command module as a plain command, to its end; without the annotation a WASI command module that declares a containerPort is served as WAGI, one instance per request"),
            };
            Some(format!("container {container} exited with code 0, but it declares {} and restartPolicy Always, so it was expected to keep serving: {what}", ports_text(ports)))
        }
        Executor::Command => None,
    }
}

impl Prepared {
    fn mounts(&self) -> Vec<Mount> {
        self.mounts.iter().map(|(host, guest, ro)| Mount { host: host.clone(), guest: guest.clone(), read_only: *ro }).collect()
    }
}

/// Why preparing failed, in the container status's words.
struct PrepError {
    reason: &'static str,
    message: String,
    /// Only this container (by name) is affected; `None` for all.
    container: Option<String>,
}

/// The state of one pod shared by its worker, container supervisors and status writer.
struct Shared {
    ctx: Arc<NodeCtx>,
    pod: Arc<Pod>,
    namespace: String,
    name: String,
    uid: String,
    policy: String,
    state: Mutex<PodState>,
    dirty: Notify,
    /// Ends the pod's HTTP servers gracefully when it is deleted.
    drain: crate::wasm::Drain,
    /// How its components' outgoing requests resolve cluster names (`None`: they do not).
    names: Option<Arc<ClusterNames>>,
}

#[derive(Clone, Copy)]
enum Which {
    Init(usize),
    Main(usize),
}

impl Shared {
    fn new(ctx: Arc<NodeCtx>, pod: Arc<Pod>, pod_ip: String) -> Self {
        let mut state = PodState::from_pod(&pod, &ctx.host_ip);
        state.pod_ip = pod_ip;
        let spec = pod.spec.clone().unwrap_or_default();
        let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        Self {
            names: cluster_names(&ctx, &spec, &namespace, state.pod_ip.parse().unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]))),
            namespace,
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            policy: spec.restart_policy.unwrap_or_else(|| "Always".into()),
            state: Mutex::new(state),
            dirty: Notify::new(),
            drain: Default::default(),
            ctx,
            pod,
        }
    }

    fn spec(&self) -> &k8s_openapi::api::core::v1::PodSpec {
        static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
        self.pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default))
    }

    fn container(&self, which: Which) -> &Container {
        match which {
            Which::Init(i) => &self.spec().init_containers.as_deref().unwrap_or_default()[i],
            Which::Main(i) => &self.spec().containers[i],
        }
    }

    /// Changes the state and wakes the status writer.
    fn update<T>(&self, f: impl FnOnce(&mut PodState) -> T) -> T {
        let out = f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.dirty.notify_one();
        out
    }

    fn update_container<T>(&self, which: Which, f: impl FnOnce(&mut status::Container) -> T) -> T {
        self.update(|s| {
            let out = match which {
                Which::Init(i) => f(&mut s.init[i]),
                Which::Main(i) => f(&mut s.main[i]),
            };
            refresh_phase(s);
            out
        })
    }

    fn read<T>(&self, f: impl FnOnce(&PodState) -> T) -> T {
        f(&self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    async fn write_now(&self) -> Result<(), kube::Error> {
        let body = serde_json::json!({"status": self.state.lock().unwrap_or_else(|e| e.into_inner()).to_json()});
        self.api().patch_status(&self.name, &PatchParams::default(), &Patch::Merge(body)).await.map(drop)
    }

    fn pod_ip(&self) -> String {
        self.read(|s| s.pod_ip.clone())
    }

    fn deadline(&self) -> Option<tokio::time::Instant> {
        let secs = u64::try_from(self.spec().active_deadline_seconds?).ok()?;
        let start = chrono::DateTime::parse_from_rfc3339(&self.read(|s| s.start_time.clone())).ok()?;
        let elapsed = (chrono::Utc::now() - start.with_timezone(&chrono::Utc)).to_std().unwrap_or_default();
        Some(tokio::time::Instant::now() + Duration::from_secs(secs).saturating_sub(elapsed))
    }

    fn deadline_exceeded(&self) {
        self.record_stopping();
        self.stopped("stopped: the pod's activeDeadlineSeconds passed");
        self.update(|s| {
            s.phase = "Failed";
            s.reason = Some("DeadlineExceeded".into());
            s.message = Some("Pod was active on the node longer than the specified deadline".into());
        });
    }

    /// Marks whatever was running as killed by the node.
    fn stopped(&self, message: &str) {
        self.update(|s| {
            for c in s.init.iter_mut().chain(s.main.iter_mut()).chain(s.ephemeral.iter_mut()) {
                if let State::Running { started } = &c.state {
                    let (started, container_id) = (started.clone(), c.run_id.clone());
                    c.state = State::Terminated(Terminated { exit_code: 137, reason: "Error".into(), message: Some(message.to_owned()), started, finished: status::now(), container_id });
                    c.ready = false;
                } else if matches!(c.state, State::Waiting { .. }) {
                    c.waiting("ContainerCreating", None);
                }
            }
        });
    }

    fn log_dir(&self, container: &str) -> PathBuf {
        logs::container_dir(&self.ctx.logs_dir, &self.namespace, &self.name, &self.uid, container)
    }

    /// Records an Event about `container` of this pod, as kubelet would.
    fn event(&self, container: &str, kind: Type, reason: &'static str, message: String) {
        events::record(&self.ctx.client, &self.ctx.name, &self.pod, container, kind, reason, message);
    }

    /// kubelet's `Killing` Event for each container still running, as the node stops them.
    fn record_stopping(&self) {
        let running: Vec<String> = self.read(|s| s.init.iter().chain(&s.main).filter(|c| matches!(c.state, State::Running { .. })).map(|c| c.name.clone()).collect());
        for name in running {
            self.event(&name, Type::Normal, events::KILLING, events::stopping(&name));
        }
    }

    /// The whole life of the pod's containers; returns once the pod has reached a terminal phase.
    async fn run_all(self: Arc<Self>) {
        let prepared = self.prepare_with_retries().await;
        let n_init = self.spec().init_containers.as_ref().map_or(0, Vec::len);
        let (init, main) = prepared.split_at(n_init);
        if !self.read(|s| s.initialized) {
            for (i, p) in init.iter().enumerate() {
                let done = self.read(|s| s.init[i].terminated().is_some_and(|t| t.exit_code == 0));
                if done {
                    continue;
                }
                if !self.run_init(i, p).await {
                    self.update(|s| {
                        s.phase = "Failed";
                        for c in &mut s.main {
                            c.waiting("PodInitializing", None);
                        }
                    });
                    return;
                }
            }
            self.update(|s| {
                s.initialized = true;
                for c in &mut s.main {
                    if matches!(&c.state, State::Waiting { reason, .. } if reason == "PodInitializing") {
                        c.waiting("ContainerCreating", None);
                    }
                }
                refresh_phase(s);
            });
        }
        let supervisors = main.iter().enumerate().map(|(i, p)| self.clone().supervise(i, p.clone()));
        futures::future::join_all(supervisors).await;
        self.update(|s| {
            let all_ok = s.main.iter().all(|c| c.terminated().is_some_and(|t| t.exit_code == 0));
            s.phase = if all_ok { "Succeeded" } else { "Failed" };
        });
    }

    /// Runs init container `i` until it succeeds; `false` if the pod has failed instead.
    async fn run_init(self: &Arc<Self>, i: usize, p: &Prepared) -> bool {
        let mut backoff = Backoff::new(self.ctx.backoff_base);
        loop {
            let term = self.run_once(Which::Init(i), p).await;
            if term.exit_code == 0 {
                return true;
            }
            if self.policy == "Never" {
                return false;
            }
            self.crash_loop(Which::Init(i), &mut backoff, term).await;
        }
    }

    /// Runs main container `i` under the restart policy until it is done for good.
    async fn supervise(self: Arc<Self>, i: usize, p: Prepared) {
        let mut backoff = Backoff::new(self.ctx.backoff_base);
        // A container that finished before a node restart and is not due a restart stays finished.
        if let Some(t) = self.read(|s| s.main[i].terminated().cloned()) {
            if !status::restarts(&self.policy, t.exit_code) {
                return;
            }
            self.update_container(Which::Main(i), |c| {
                c.last = Some(t);
                c.restarts += 1;
            });
        }
        loop {
            let term = self.run_once(Which::Main(i), &p).await;
            if !status::restarts(&self.policy, term.exit_code) {
                return;
            }
            self.crash_loop(Which::Main(i), &mut backoff, term).await;
        }
    }

    /// Waits out the back-off after a run ended, showing CrashLoopBackOff, and counts the restart.
    async fn crash_loop(&self, which: Which, backoff: &mut Backoff, term: Terminated) {
        let delay = backoff.next();
        let container = self.container(which).name.clone();
        if !delay.is_zero() {
            let message = format!("back-off {} restarting failed container={container} pod={}_{}({})", go_duration(delay), self.name, self.namespace, self.uid);
            self.update_container(which, |c| {
                c.last = Some(term.clone());
                c.waiting("CrashLoopBackOff", Some(message));
            });
            self.event(&container, Type::Warning, events::BACK_OFF, events::back_off_restarting(&container, &self.name, &self.namespace, &self.uid));
            tokio::time::sleep(delay).await;
        }
        // A restart runs the module already in the cache, as kubelet says of a present image.
        let image = self.container(which).image.clone().unwrap_or_default();
        self.event(&container, Type::Normal, events::PULLED, events::already_present(&image));
        self.update_container(which, |c| {
            c.last = Some(term);
            c.restarts += 1;
        });
    }

    /// One run of a container, from start to end, with its probes; returns how it ended.
    async fn run_once(&self, which: Which, p: &Prepared) -> Terminated {
        let container = self.container(which);
        let restarts = self.read(|s| match which {
            Which::Init(i) => s.init[i].restarts,
            Which::Main(i) => s.main[i].restarts,
        });
        let log_dir = self.log_dir(&container.name);
        let log_path = logs::run_log(&log_dir, restarts);
        // Like kubelet, keep the logs of this run and the one before it only.
        if let Some(old) = restarts.checked_sub(2) {
            let old = logs::run_log(&log_dir, old);
            let _ = std::fs::remove_file(old.with_extension("log.1"));
            let _ = std::fs::remove_file(old);
        }
        // Registered before the status says Running, so a follower who saw Running finds
        // the run in progress.
        let _running = RunningLog::new(&self.ctx, log_path.clone());
        let started = status::now();
        let (has_startup, has_readiness) = match which {
            Which::Main(_) => (container.startup_probe.is_some(), container.readiness_probe.is_some()),
            Which::Init(_) => (false, false),
        };
        // The file exists before the status says Running, for the same reason.
        let log = LogWriter::open(&log_path, self.ctx.log_max_bytes);
        self.update_container(which, |c| {
            c.state = State::Running { started: started.clone() };
            c.image_id = p.image_id.clone();
            c.run_id = status::run_id(&self.uid, &c.name, restarts);
            c.started = !has_startup;
            c.ready = !has_startup && !has_readiness;
        });
        let log = match log {
            Ok(l) => l,
            Err(e) => {
                let message = format!("opening the container log {}: {e}", log_path.display());
                self.event(&container.name, Type::Warning, events::FAILED, events::error(&message));
                return self.ended(which, Outcome::Failed(message), started, None);
            }
        };
        // kubelet's pair for a container the runtime created and started; here both are
        // the instance the run below starts.
        self.event(&container.name, Type::Normal, events::CREATED, events::created(&container.name));
        self.event(&container.name, Type::Normal, events::STARTED, events::started(&container.name));
        let mut spec = self.run_spec(p, p.argv.clone(), &log);
        // `kubectl exec` and `attach` find the run here while it lasts.
        let _exec = self.register_exec(container, p, &log_path, &mut spec);
        let run = async {
            match &p.executor {
                Executor::Command => self.ctx.runtime.run(spec).await,
                Executor::Http { kind, ports } => self.serve(p, *kind, ports, &log).await,
            }
        };
        let outcome = match which {
            Which::Init(_) => run.await,
            Which::Main(i) => tokio::select! {
                o = run => o,
                (probe, failure) = self.probe(i, p) => {
                    let restarted = self.policy != "Never";
                    self.event(&container.name, Type::Normal, events::KILLING, events::probe_kill(&container.name, &probe.as_str().to_lowercase(), restarted));
                    log.note(&failure);
                    return self.finish(which, Terminated { exit_code: 137, reason: "Error".into(), message: Some(failure), started, finished: status::now(), container_id: String::new() });
                }
            },
        };
        // A container that was expected to serve and ended says why, in its log, its state
        // and a Warning Event.
        let why = match which {
            Which::Main(_) => not_serving(&container.name, &p.executor, p.artifact, &p.ports, &self.policy, &outcome),
            Which::Init(_) => None,
        };
        if outcome == Outcome::OomKilled {
            self.event(&container.name, Type::Warning, events::OOM_KILLING, events::oom_killing(&container.name, p.memory_limit));
        }
        match (&outcome, &why) {
            (_, Some(why)) => {
                log.note(why);
                self.event(&container.name, Type::Warning, SERVER_EXITED, why.clone());
            }
            (Outcome::OomKilled, None) => log.note("OOMKilled: the module grew its memory past limits.memory"),
            (Outcome::Trapped(m), None) => log.note(m),
            (Outcome::Failed(m), None) => {
                log.note(m);
                // What kubelet records when the runtime cannot start a container.
                self.event(&container.name, Type::Warning, events::FAILED, events::error(m));
            }
            (Outcome::Exited(_), None) => {}
        }
        self.ended(which, outcome, started, why)
    }

    /// Serves every port of an HTTP container until one server fails (or the run is dropped).
    async fn serve(&self, p: &Prepared, kind: HttpKind, ports: &[u16], log: &LogWriter) -> Outcome {
        let Ok(ip) = self.pod_ip().parse::<std::net::IpAddr>() else { return Outcome::Failed("the pod has no address".into()) };
        let servers = ports.iter().map(|port| {
            let spec = HttpSpec {
                module: p.module.clone(),
                digest: p.digest.clone(),
                kind,
                addr: std::net::SocketAddr::new(ip, *port),
                argv: p.argv.clone(),
                env: p.env.clone(),
                mounts: p.mounts(),
                memory_limit: p.memory_limit,
                cpu_millis: p.cpu_millis,
                log: log.clone(),
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                max_concurrent: DEFAULT_MAX_CONCURRENT,
                drain: self.drain.clone(),
                names: self.names.clone(),
            };
            Box::pin(self.ctx.runtime.serve_http(spec))
        });
        futures::future::select_all(servers).await.0
    }

    /// Records how a run ended; `why` (if any) is the state's message instead of the outcome's.
    fn ended(&self, which: Which, outcome: Outcome, started: String, why: Option<String>) -> Terminated {
        self.finish(which, termination(outcome, started, why))
    }

    /// Records how the current run ended; the returned state names the run.
    fn finish(&self, which: Which, mut term: Terminated) -> Terminated {
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), container = %self.container(which).name, exit_code = term.exit_code, reason = %term.reason, "container ended");
        self.update_container(which, |c| {
            term.container_id = c.run_id.clone();
            c.state = State::Terminated(term.clone());
            c.ready = false;
        });
        term
    }

    fn run_spec(&self, p: &Prepared, argv: Vec<String>, log: &LogWriter) -> RunSpec {
        RunSpec {
            module: p.module.clone(),
            digest: p.digest.clone(),
            argv,
            env: p.env.clone(),
            mounts: p.mounts(),
            memory_limit: p.memory_limit,
            cpu_millis: p.cpu_millis,
            stdout: Box::new(log.sink("stdout")),
            stderr: Box::new(log.sink("stderr")),
            stdin: crate::wasm::Stdin::Empty,
            names: self.names.clone(),
        }
    }

    /// Runs the startup, liveness and readiness probes of main container `i`, with an
    /// `Unhealthy` Event for each failed check; returns only when the container must be
    /// killed (a failed startup or liveness probe), saying which probe and why.
    async fn probe(&self, i: usize, p: &Prepared) -> (probes::Kind, String) {
        let container = self.container(Which::Main(i));
        let pod_ip = self.pod_ip();
        let exec = |argv: Vec<String>| async move {
            let log = LogWriter::open(&self.ctx.pods_dir.join(&self.uid).join(format!("probe-{}.log", container.name)), 64 << 10).map_err(|e| e.to_string())?;
            match self.ctx.runtime.run(self.run_spec(p, argv, &log)).await {
                Outcome::Exited(code) => Ok(code),
                other => Err(format!("probe instance ended: {}", other.exit_code())),
            }
        };
        if let Some(probe) = &container.startup_probe {
            let schedule = Schedule::of(probe);
            tokio::time::sleep(schedule.initial_delay).await;
            let mut failures = 0;
            loop {
                match probes::check(probe, container, &pod_ip, exec).await {
                    Ok(()) => break,
                    Err(e) => {
                        failures += 1;
                        let failed = probes::Kind::Startup.failed(&e);
                        self.event(&container.name, Type::Warning, events::UNHEALTHY, failed.clone());
                        if failures >= schedule.failure_threshold {
                            return (probes::Kind::Startup, failed);
                        }
                    }
                }
                tokio::time::sleep(schedule.period).await;
            }
            let readiness = container.readiness_probe.is_some();
            self.update_container(Which::Main(i), |c| {
                c.started = true;
                c.ready = !readiness;
            });
        }
        let liveness = async {
            let Some(probe) = &container.liveness_probe else { return std::future::pending().await };
            let schedule = Schedule::of(probe);
            tokio::time::sleep(schedule.initial_delay).await;
            let mut failures = 0;
            loop {
                match probes::check(probe, container, &pod_ip, exec).await {
                    Ok(()) => failures = 0,
                    Err(e) => {
                        failures += 1;
                        let failed = probes::Kind::Liveness.failed(&e);
                        self.event(&container.name, Type::Warning, events::UNHEALTHY, failed.clone());
                        if failures >= schedule.failure_threshold {
                            return (probes::Kind::Liveness, failed);
                        }
                    }
                }
                tokio::time::sleep(schedule.period).await;
            }
        };
        let readiness = async {
            let Some(probe) = &container.readiness_probe else { return std::future::pending().await };
            let schedule = Schedule::of(probe);
            tokio::time::sleep(schedule.initial_delay).await;
            let (mut successes, mut failures) = (0, 0);
            loop {
                match probes::check(probe, container, &pod_ip, exec).await {
                    Ok(()) => {
                        successes += 1;
                        failures = 0;
                        if successes >= schedule.success_threshold {
                            self.set_ready(i, true);
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        successes = 0;
                        self.event(&container.name, Type::Warning, events::UNHEALTHY, probes::Kind::Readiness.failed(&e));
                        if failures >= schedule.failure_threshold {
                            tracing::debug!(pod = %self.name, container = %container.name, error = %e, "readiness probe failed");
                            self.set_ready(i, false);
                        }
                    }
                }
                tokio::time::sleep(schedule.period).await;
            }
        };
        tokio::select! {
            failure = liveness => failure,
            never = readiness => never,
        }
    }

    fn set_ready(&self, i: usize, ready: bool) {
        if self.read(|s| s.main[i].ready) != ready {
            self.update_container(Which::Main(i), |c| c.ready = ready);
        }
    }

    /// Prepares every container, retrying with back-off (ErrImagePull → ImagePullBackOff,
    /// CreateContainerConfigError) until it works or the pod goes.
    async fn prepare_with_retries(&self) -> Vec<Prepared> {
        let mut delay = self.ctx.backoff_base;
        loop {
            match self.prepare().await {
                Ok(p) => return p,
                Err(e) => {
                    tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), reason = e.reason, message = %e.message, "cannot start the pod yet");
                    // Returns the containers now waiting for `reason`.
                    let waiting = |reason: &str, message: &str| {
                        self.update(|s| {
                            let initialized = s.initialized;
                            let mut held = Vec::new();
                            for c in s.init.iter_mut().chain(s.main.iter_mut()) {
                                if e.container.as_ref().is_none_or(|n| *n == c.name) && c.terminated().is_none() {
                                    c.waiting(reason, Some(message.to_owned()));
                                    held.push(c.name.clone());
                                } else if !initialized && matches!(&c.state, State::Waiting { reason, .. } if reason == "ContainerCreating") {
                                    c.waiting("PodInitializing", None);
                                }
                            }
                            held
                        })
                    };
                    let held = waiting(e.reason, &e.message);
                    let image = e.container.as_ref().and_then(|n| self.spec().containers.iter().chain(self.spec().init_containers.iter().flatten()).find(|c| c.name == *n)).and_then(|c| c.image.clone()).unwrap_or_default();
                    for name in &held {
                        match e.reason {
                            "ErrImagePull" => self.event(name, Type::Warning, events::FAILED, events::failed_to_pull(&image, &e.message)),
                            "ErrImageNeverPull" => self.event(name, Type::Warning, events::NEVER_PULL, e.message.clone()),
                            _ => {}
                        }
                        // The waiting reason for pull errors, the error itself for the others.
                        let what = if e.reason.starts_with("ErrImage") { e.reason } else { e.message.as_str() };
                        self.event(name, Type::Warning, events::FAILED, events::error(what));
                    }
                    if e.reason == "ErrImagePull" {
                        // kubelet shows the pull error first, then the back-off.
                        tokio::time::sleep(Duration::from_millis(500).min(delay)).await;
                        for name in waiting("ImagePullBackOff", &format!("Back-off pulling image \"{image}\": {}", e.message)) {
                            self.event(&name, Type::Normal, events::BACK_OFF, events::back_off_pulling(&image));
                            self.event(&name, Type::Warning, events::FAILED, events::error("ImagePullBackOff"));
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn prepare(&self) -> Result<Vec<Prepared>, PrepError> {
        let all = |reason, message| PrepError { reason, message, container: None };
        let sources = self.fetch_sources(&self.pod).await.map_err(|m| all("CreateContainerConfigError", m))?;
        let creds = self.pull_credentials().await;
        let pod_ip = self.pod_ip();
        let facts = PodFacts { pod: &self.pod, pod_ip: &pod_ip, host_ip: &self.ctx.host_ip, node_name: &self.ctx.name };
        let pod_dir = self.ctx.pods_dir.join(&self.uid);
        let vols = volumes::prepare(&pod_dir, self.spec().volumes.as_deref().unwrap_or_default(), &facts, &sources).map_err(|e| all("CreateContainerConfigError", e.0))?;
        let choice = ExecutorChoice::of(&self.pod).map_err(|m| all("CreateContainerConfigError", m))?;
        let n_init = self.spec().init_containers.as_ref().map_or(0, Vec::len);
        let mut out = Vec::new();
        for (n, c) in self.spec().init_containers.iter().flatten().chain(self.spec().containers.iter()).enumerate() {
            let one = |reason, message| PrepError { reason, message, container: Some(c.name.clone()) };
            let Base { module, digest, image_id, env, mounts, argv } = self.pull_and_configure(c, &creds, &facts, &sources, &vols).await?;
            let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
            let limit = |name: &str| limits.and_then(|l| l.get(name)).map(|q| q.0.clone());
            let (p_module, p_digest) = (module.clone(), digest.clone());
            let ports: Vec<u16> = c.ports.iter().flatten().filter_map(|p| u16::try_from(p.container_port).ok()).collect();
            let artifact = self.ctx.runtime.artifact_kind_off_thread(&p_module, &p_digest).await.map_err(|m| one("CreateContainerError", m))?;
            let executor = select_executor(artifact, choice, ports.clone(), n < n_init, &self.policy).map_err(|m| one("CreateContainerError", m))?;
            out.push(Prepared {
                module,
                digest,
                image_id,
                argv,
                env,
                mounts,
                memory_limit: limit("memory").and_then(|q| crate::quantity::bytes(&q)),
                cpu_millis: limit("cpu").and_then(|q| crate::quantity::millicores(&q)),
                executor,
                artifact,
                ports,
            });
        }
        Ok(out)
    }

    /// The ConfigMaps and Secrets the pod uses, fetched through the API.
    async fn fetch_sources(&self, pod: &Pod) -> Result<Sources, String> {
        let (cm_names, secret_names) = Sources::wanted(pod);
        let mut sources = Sources::default();
        let cms: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in cm_names {
            let cm = cms.get_opt(&name).await.map_err(|e| format!("reading configmap {name:?}: {e}"))?;
            let data = cm.map(|cm| {
                let mut d: std::collections::BTreeMap<String, Vec<u8>> = cm.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())).collect();
                d.extend(cm.binary_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)));
                d
            });
            sources.configmaps.insert(name, data);
        }
        sources.services = self.fetch_services().await?;
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in secret_names {
            let s = secrets.get_opt(&name).await.map_err(|e| format!("reading secret {name:?}: {e}"))?;
            let data = s.map(|s| {
                let mut d: std::collections::BTreeMap<String, Vec<u8>> = s.data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.0)).collect();
                d.extend(s.string_data.unwrap_or_default().into_iter().map(|(k, v)| (k, v.into_bytes())));
                d
            });
            sources.secrets.insert(name, data);
        }
        Ok(sources)
    }

    /// The Services whose variables the pod gets: those of its namespace unless
    /// `enableServiceLinks: false`, and always `kubernetes` in `default`. Read from the
    /// node's service table (as kubelet reads its informer), once it has listed Services.
    async fn fetch_services(&self) -> Result<Vec<Arc<Service>>, String> {
        let services = &self.ctx.services;
        if !services.synced(SERVICES_SYNC_WAIT).await {
            return Err("services have not yet been read at least once, cannot construct envvars".into());
        }
        let table = services.read();
        let links = self.spec().enable_service_links != Some(false);
        let mut out: Vec<Arc<Service>> = if links { table.services_in(&self.namespace).cloned().collect() } else { Vec::new() };
        if !(links && self.namespace == "default") {
            if let Some(k) = table.service("default", "kubernetes") {
                // The API server's Service wins over a namesake in the pod's namespace.
                out.retain(|s| s.metadata.name.as_deref() != Some("kubernetes"));
                out.push(k.clone());
            }
        }
        Ok(out)
    }

    /// Registry credentials from the pod's `imagePullSecrets`; unreadable ones are skipped
    /// with a warning, as kubelet does.
    async fn pull_credentials(&self) -> RegistryCredentials {
        let mut creds = RegistryCredentials::none();
        let secrets: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for r in self.spec().image_pull_secrets.iter().flatten() {
            let secret = match secrets.get_opt(&r.name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    tracing::warn!(secret = %r.name, "image pull secret not found; pulling without it");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(secret = %r.name, error = %e, "cannot read image pull secret");
                    continue;
                }
            };
            let data = secret.data.unwrap_or_default();
            let Some(config) = data.get(".dockerconfigjson").or_else(|| data.get(".dockercfg")) else { continue };
            match RegistryCredentials::from_docker_config(&config.0) {
                Ok(c) => creds.merge(c),
                Err(e) => tracing::warn!(secret = %r.name, error = %e, "ignoring an unreadable image pull secret"),
            }
        }
        creds
    }
}

/// What kubelet's resolv.conf for the pod would say, for its components' outgoing requests:
/// `ClusterFirst` (the default) searches the pod's namespace, then `svc` and the cluster
/// domain, with `dnsConfig` searches and `ndots` added; `Default` and `None` use only the
/// host's resolvers.
/// What a container runs from and with, the part of preparing it that regular and
/// ephemeral containers share.
pub(super) struct Base {
    pub module: PathBuf,
    pub digest: String,
    pub image_id: String,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<(PathBuf, String, bool)>,
    pub argv: Vec<String>,
}

impl Shared {
    /// Pulls `c`'s image as kubelet does (with its Pulling and Pulled Events) and works out
    /// its env, mounts over `vols` and argv.
    pub(super) async fn pull_and_configure(&self, c: &Container, creds: &RegistryCredentials, facts: &PodFacts<'_>, sources: &Sources, vols: &std::collections::BTreeMap<String, volumes::Prepared>) -> Result<Base, PrepError> {
        let one = |reason, message| PrepError { reason, message, container: Some(c.name.clone()) };
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.as_deref().and_then(PullPolicy::parse).unwrap_or_else(|| PullPolicy::default_for(&image));
        // kubelet's Pulling before a pull that asks the registry, and Pulled after any.
        if policy == PullPolicy::Always || (policy == PullPolicy::IfNotPresent && !self.ctx.images.present(&image)) {
            self.event(&c.name, Type::Normal, events::PULLING, events::pulling(&image));
        }
        let pull_started = Instant::now();
        let pulled = self.ctx.images.pull(&image, policy, creds).await.map_err(|e| match e {
            PullError::NotPresent { .. } => one("ErrImageNeverPull", e.to_string()),
            e => one("ErrImagePull", e.to_string()),
        })?;
        let message = if pulled.already_present { events::already_present(&image) } else { events::pulled(&image, pull_started.elapsed(), pulled.size) };
        self.event(&c.name, Type::Normal, events::PULLED, message);
        let (module, digest) = match &pulled.content {
            ImageContent::Wasm { path, digest, .. } => (path.clone(), digest.clone()),
            ImageContent::Linux { .. } => return Err(one("CreateContainerError", format!("{image} is a Linux container image; this node runs wasm images only"))),
        };
        let mut env = env::container_env(c, facts, sources).map_err(|e| one("CreateContainerConfigError", e.0))?;
        // The runtime's own variable, as a container runtime sets it: the pod's host name.
        if !env.iter().any(|(k, _)| k == "HOSTNAME") {
            let host = self.spec().hostname.clone().unwrap_or_else(|| self.name.clone());
            env.insert(0, ("HOSTNAME".into(), host));
        }
        let mounts = volumes::mounts(c, vols).map_err(|e| one("CreateContainerConfigError", e.0))?;
        let mut argv: Vec<String> = c.command.clone().unwrap_or_else(|| vec![c.name.clone()]);
        argv.extend(c.args.iter().flatten().cloned());
        let argv = argv.iter().map(|a| env::expand(a, &env)).collect();
        let image_id = format!("{}@{}", pulled.reference.split('@').next().unwrap_or_default(), pulled.digest);
        Ok(Base { module, digest, image_id, env, mounts: mounts.into_iter().map(|m| (m.host, m.guest, m.read_only)).collect(), argv })
    }
}

impl Shared {
    /// Makes the run of `which` reachable by exec and attach until the guard drops; a
    /// container with `stdin: true` gets its stdin from attach sessions.
    fn register_exec(&self, container: &Container, p: &Prepared, log_path: &std::path::Path, spec: &mut RunSpec) -> crate::exec::Registration {
        let stdin = container.stdin.unwrap_or(false).then(|| {
            let (tx, rx) = crate::exec::attach_stdin();
            spec.stdin = crate::wasm::Stdin::Stream(Box::new(rx));
            tx
        });
        let entry = crate::exec::Container {
            image: container.image.clone().unwrap_or_default(),
            module: p.module.clone(),
            digest: p.digest.clone(),
            argv: p.argv.clone(),
            env: p.env.clone(),
            mounts: p.mounts.clone(),
            memory_limit: p.memory_limit,
            cpu_millis: p.cpu_millis,
            names: self.names.clone(),
            pod_ip: self.pod_ip(),
            log: log_path.to_owned(),
            tty: container.tty.unwrap_or(false),
            stdin,
            stdin_once: container.stdin_once.unwrap_or(false),
        };
        self.ctx.containers.register(&self.namespace, &self.name, &container.name, entry)
    }
}

fn cluster_names(ctx: &NodeCtx, spec: &k8s_openapi::api::core::v1::PodSpec, namespace: &str, pod_ip: std::net::IpAddr) -> Option<Arc<ClusterNames>> {
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    if !matches!(policy, "ClusterFirst" | "ClusterFirstWithHostNet") {
        return None;
    }
    let mut search = SearchPath::cluster_first(namespace, &ctx.cluster_domain);
    if let Some(cfg) = spec.dns_config.as_ref() {
        search.searches.extend(cfg.searches.iter().flatten().cloned());
        let ndots = cfg.options.iter().flatten().find(|o| o.name.as_deref() == Some("ndots")).and_then(|o| o.value.as_deref()?.parse().ok());
        if let Some(n) = ndots {
            search.ndots = n;
        }
    }
    Some(Arc::new(ClusterNames::new(ctx.services.clone(), &ctx.cluster_domain, search, ctx.runtime.local_servers(), pod_ip)))
}

/// How a run ended, in the container status's words; `why` (if any) is the message
/// instead of the outcome's.
fn termination(outcome: Outcome, started: String, why: Option<String>) -> Terminated {
    let (reason, message) = match &outcome {
        Outcome::Exited(0) => ("Completed", None),
        Outcome::Exited(_) => ("Error", None),
        Outcome::OomKilled => ("OOMKilled", None),
        Outcome::Trapped(m) => ("Error", Some(m.clone())),
        Outcome::Failed(m) => ("StartError", Some(m.clone())),
    };
    Terminated { exit_code: outcome.exit_code(), reason: reason.into(), message: why.or(message), started, finished: status::now(), container_id: String::new() }
}

/// Pending until every container has started once, Running after; the terminal phases
/// are set where the pod's work ends.
fn refresh_phase(s: &mut PodState) {
    if s.phase == "Succeeded" || s.phase == "Failed" {
        return;
    }
    let started = |c: &status::Container| !matches!(c.state, State::Waiting { .. }) || c.last.is_some() || c.restarts > 0;
    s.phase = if s.initialized && !s.main.is_empty() && s.main.iter().all(started) { "Running" } else { "Pending" };
}

/// Marks a log file as written to by a run in progress, until dropped.
struct RunningLog<'a> {
    ctx: &'a NodeCtx,
    path: PathBuf,
}

impl<'a> RunningLog<'a> {
    fn new(ctx: &'a NodeCtx, path: PathBuf) -> Self {
        ctx.running_logs.lock().unwrap_or_else(|e| e.into_inner()).insert(path.clone());
        Self { ctx, path }
    }
}

impl Drop for RunningLog<'_> {
    fn drop(&mut self) {
        self.ctx.running_logs.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.path);
    }
}

/// Writes the status whenever it changed, coalescing bursts into one write.
async fn write_status(sh: Arc<Shared>) {
    loop {
        sh.dirty.notified().await;
        match sh.write_now().await {
            Ok(()) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return,
            Err(e) => {
                tracing::warn!(pod = %sh.name, error = %e, "writing pod status failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                sh.dirty.notify_one();
            }
        }
    }
}

/// Kubelet's crash-loop back-off: the first restart is immediate, then base, doubling to five minutes.
struct Backoff {
    base: Duration,
    next: Option<Duration>,
    last_start: Instant,
}

impl Backoff {
    fn new(base: Duration) -> Self {
        Self { base, next: None, last_start: Instant::now() }
    }

    fn next(&mut self) -> Duration {
        if self.last_start.elapsed() > BACKOFF_RESET {
            self.next = None;
        }
        let delay = self.next.unwrap_or(Duration::ZERO);
        self.next = Some(if delay.is_zero() { self.base } else { (delay * 2).min(MAX_BACKOFF) });
        self.last_start = Instant::now() + delay;
        delay
    }
}

/// `1m20s`, `10s`, `500ms` — durations as kubelet's messages print them.
fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    match (secs / 60, secs % 60) {
        (0, s) => format!("{s}s"),
        (m, s) => format!("{m}m{s}s"),
    }
}

/// Deletes the pod for good once its instances are stopped (the final step of a graceful delete).
async fn finish_deletion(ctx: &NodeCtx, pod: &Pod) {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let params = DeleteParams { grace_period_seconds: Some(0), preconditions: Some(Preconditions { uid: pod.metadata.uid.clone(), resource_version: None }), ..Default::default() };
    match api.delete(pod.metadata.name.as_deref().unwrap_or_default(), &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => tracing::warn!(pod = ?pod.metadata.name, error = %e, "finishing the deletion of a pod failed"),
    }
}

/// Removes the pod's volumes and logs from the node.
fn remove_files(ctx: &NodeCtx, pod: &Pod) {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if uid.is_empty() {
        return;
    }
    let _ = std::fs::remove_dir_all(ctx.pods_dir.join(uid));
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let _ = std::fs::remove_dir_all(ctx.logs_dir.join(format!("{ns}_{name}_{uid}")));
}

/// After a (re)list: the volumes and logs of pods that no longer exist.
pub fn remove_leftovers(ctx: &NodeCtx, live_uids: &HashSet<String>) {
    if let Ok(dirs) = std::fs::read_dir(&ctx.pods_dir) {
        for d in dirs.flatten() {
            if !live_uids.contains(d.file_name().to_string_lossy().as_ref()) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
    if let Ok(dirs) = std::fs::read_dir(&ctx.logs_dir) {
        for d in dirs.flatten() {
            let name = d.file_name().to_string_lossy().into_owned();
            let uid = name.rsplit('_').next().unwrap_or_default();
            if !live_uids.contains(uid) {
                let _ = std::fs::remove_dir_all(d.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_is_immediate_then_doubles_to_five_minutes() {
        let mut b = Backoff::new(Duration::from_secs(10));
        let delays: Vec<u64> = (0..8).map(|_| b.next().as_secs()).collect();
        assert_eq!(delays, [0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(go_duration(Duration::from_secs(80)), "1m20s");
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
    }

    fn wagi(ports: &[u16]) -> Executor {
        Executor::Http { kind: HttpKind::Wagi, ports: ports.to_vec() }
    }

    #[test]
    fn a_command_module_with_ports_in_a_pod_that_keeps_running_is_served_as_wagi() {
        use ArtifactKind::*;
        use ExecutorChoice::{Auto, Command as Cmd, Wagi};
        let pick = |kind, choice, ports: &[u16], init, policy| select_executor(kind, choice, ports.to_vec(), init, policy);
        // As written for Kubernetes: a containerPort under restartPolicy Always serves.
        assert_eq!(pick(Command, Auto, &[8080], false, "Always"), Ok(wagi(&[8080])));
        assert_eq!(pick(Command, Auto, &[80, 8080], false, "Always"), Ok(wagi(&[80, 8080])));
        // No port, or a pod meant to finish (a Job's): a command.
        assert_eq!(pick(Command, Auto, &[], false, "Always"), Ok(Executor::Command));
        assert_eq!(pick(Command, Auto, &[8080], false, "Never"), Ok(Executor::Command));
        assert_eq!(pick(Command, Auto, &[8080], false, "OnFailure"), Ok(Executor::Command));
        // The annotation decides for modules with ports.
        assert_eq!(pick(Command, Cmd, &[8080], false, "Always"), Ok(Executor::Command));
        assert_eq!(pick(Command, Wagi, &[8080], false, "Never"), Ok(wagi(&[8080])));
        assert_eq!(pick(Command, Wagi, &[], false, "Always"), Ok(Executor::Command));
        // Init containers run to their end.
        assert_eq!(pick(Command, Auto, &[8080], true, "Always"), Ok(Executor::Command));
        assert_eq!(pick(Command, Wagi, &[8080], true, "Always"), Ok(Executor::Command));
        // Components: wasi:http is served whatever the annotation says; wasi:cli/run runs.
        for choice in [Auto, Wagi, Cmd] {
            assert_eq!(pick(HttpComponent, choice, &[8080], false, "Never"), Ok(Executor::Http { kind: HttpKind::WasiHttp, ports: vec![8080] }));
            assert!(pick(HttpComponent, choice, &[], false, "Always").unwrap_err().contains("declare a containerPort"));
            assert_eq!(pick(ComponentCommand, choice, &[8080], false, "Always"), Ok(Executor::Command));
        }
    }

    #[test]
    fn the_executor_annotation_takes_wagi_or_command() {
        assert_eq!(ExecutorChoice::parse(None), Ok(ExecutorChoice::Auto));
        assert_eq!(ExecutorChoice::parse(Some("wagi")), Ok(ExecutorChoice::Wagi));
        assert_eq!(ExecutorChoice::parse(Some("command")), Ok(ExecutorChoice::Command));
        let err = ExecutorChoice::parse(Some("WAGI")).unwrap_err();
        assert!(err.contains("\"WAGI\"") && err.contains(EXECUTOR_ANNOTATION), "{err}");
        let pod: Pod = serde_json::from_value(serde_json::json!({"metadata": {"annotations": {EXECUTOR_ANNOTATION: "command"}}})).unwrap();
        assert_eq!(ExecutorChoice::of(&pod), Ok(ExecutorChoice::Command));
        assert_eq!(ExecutorChoice::of(&Pod::default()), Ok(ExecutorChoice::Auto));
    }

    #[test]
    fn a_container_expected_to_serve_that_ends_says_why() {
        use ArtifactKind::*;
        let exited = Outcome::Exited(0);
        // A module annotated `command` with a port, restartPolicy Always, exiting 0.
        let why = not_serving("web", &Executor::Command, Command, &[80], "Always", &exited).unwrap();
        assert!(why.starts_with("container web exited with code 0, but it declares containerPort 80 and restartPolicy Always"), "{why}");
        assert!(why.contains("wasmkube.io/executor: command") && why.contains("served as WAGI"), "{why}");
        // A wasi:cli/run component cannot listen: build a wasi:http component.
        let why = not_serving("web", &Executor::Command, ComponentCommand, &[80, 81], "Always", &exited).unwrap();
        assert!(why.contains("containerPorts 80, 81") && why.contains("wasi:http/incoming-handler"), "{why}");
        // A server that cannot serve (it only ends when it fails).
        let why = not_serving("web", &wagi(&[80]), Command, &[80], "Never", &Outcome::Failed("binding 127.1.0.2:80: Address in use".into())).unwrap();
        assert_eq!(why, "container web is served as WAGI on containerPort 80 but stopped serving: binding 127.1.0.2:80: Address in use");
        // Ordinary ends: a crash is a crash, and a pod meant to finish has finished.
        assert_eq!(not_serving("web", &Executor::Command, Command, &[80], "Always", &Outcome::Exited(3)), None);
        assert_eq!(not_serving("web", &Executor::Command, Command, &[80], "Never", &exited), None);
        assert_eq!(not_serving("web", &Executor::Command, Command, &[80], "OnFailure", &exited), None);
        assert_eq!(not_serving("job", &Executor::Command, Command, &[], "Always", &exited), None);
    }
}
