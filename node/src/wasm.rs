//! The wasm executor: one wasmtime `Engine` per node. Containers run as WASI preview-1
//! command modules (`_start`) or `wasi:cli/run` components; HTTP containers serve WAGI
//! modules or `wasi:http` components with one instance per request ([`WasmRuntime::serve_http`]).
//! Memory and CPU limits apply to every instance; dropping a future stops what it runs.
//!
//! - Compiled code is cached on disk by wasmtime's own cache (keyed by the artifact bytes and
//!   the engine's settings), so a node restart loads instead of recompiling; the cache's
//!   hit/miss counters are logged.
//! - An epoch ticks every [`TICK`]; running guests hit their deadline at each tick and yield
//!   to tokio, so a busy loop never holds a worker thread and a dropped future stops it.
//!   A CPU limit below one core turns each yield into a sleep sized to keep the guest at
//!   its share (100m: 10 ms of running, then 90 ms of waiting).
//! - Memory and table growth go through a limiter; passing `limits.memory` traps the
//!   instance and the run ends as OOMKilled.
//! - Instances come from wasmtime's pooling allocator, sized in `pooling()`.

mod cgi;
mod http;
mod outbound;

pub use outbound::ClusterNames;
pub use http::{Drain, LocalServers, HttpKind, HttpSpec, DEFAULT_MAX_CONCURRENT, DEFAULT_REQUEST_TIMEOUT, WAGI_MAX_REQUEST_BODY, WAGI_MAX_RESPONSE};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, InstancePre, Linker, Module, PoolingAllocationConfig, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub const TICK: Duration = Duration::from_millis(10);

/// How a run ended, in the terms a container status needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `proc_exit`, `wasi:cli/exit`, or a return from `_start` / `run` (0; 1 for a
    /// component's `run` returning an error).
    Exited(i32),
    /// Memory growth past the limit.
    OomKilled,
    /// A trap (unreachable, stack overflow, out-of-bounds access ...), with its message.
    Trapped(String),
    /// The artifact could not be loaded, linked or instantiated, or a server could not bind.
    Failed(String),
}

impl Outcome {
    /// The exit code a container status shows: the program's own, or a Linux-style
    /// 128+signal for deaths (137 like SIGKILL for OOM, 134 like SIGABRT for a trap).
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Exited(c) => *c,
            Outcome::OomKilled => 137,
            Outcome::Trapped(_) => 134,
            Outcome::Failed(_) => 128,
        }
    }
}

/// What an artifact is; the agent picks the executor by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArtifactKind {
    /// A WASI preview-1 module exporting `_start`: runs to its end, or serves WAGI requests.
    Command,
    /// A component exporting `wasi:cli/run` (and not `wasi:http/incoming-handler`).
    ComponentCommand,
    /// A component exporting `wasi:http/incoming-handler`: serves HTTP.
    HttpComponent,
}

pub struct Mount {
    pub host: PathBuf,
    pub guest: String,
    pub read_only: bool,
}

pub struct RunSpec {
    pub module: PathBuf,
    /// Content digest of the module, the key of the in-memory cache.
    pub digest: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub memory_limit: Option<u64>,
    /// CPU limit in millicores; `None` or >= 1000 means a whole core's share.
    pub cpu_millis: Option<u64>,
    pub stdout: Output,
    pub stderr: Output,
    pub stdin: Stdin,
    /// How a component's outgoing HTTP requests resolve cluster names; `None`: only the
    /// host's resolvers.
    pub names: Option<Arc<ClusterNames>>,
}

/// Where an instance's stdout or stderr goes: the container log, or an exec session.
pub type Output = Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>;

/// What an instance reads on stdin.
pub enum Stdin {
    /// End of file at once.
    Empty,
    Bytes(Vec<u8>),
    /// A stream (`kubectl exec -i`, `attach`): reads wait for it; its end is end of file.
    Stream(Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>),
}

/// Store data of a preview-1 module.
struct Host {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

/// Store data of a component; WASI and `wasi:http` share one resource table.
struct ComponentHost {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: Limiter,
    outbound: outbound::OutboundHttp,
}

impl ComponentHost {
    fn new(wasi: WasiCtx, limiter: Limiter, names: Option<Arc<ClusterNames>>) -> Self {
        Self { wasi, http: WasiHttpCtx::new(), table: ResourceTable::new(), limiter, outbound: outbound::OutboundHttp { names } }
    }
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for ComponentHost {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.outbound }
    }
}

trait Limited {
    fn limiter(&mut self) -> &mut Limiter;
}

impl Limited for Host {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

impl Limited for ComponentHost {
    fn limiter(&mut self) -> &mut Limiter {
        &mut self.limiter
    }
}

struct Limiter {
    memory: usize,
    oom: bool,
}

impl Limiter {
    fn new(memory_limit: Option<u64>) -> Self {
        let memory = memory_limit.map_or(MAX_MEMORY, |m| usize::try_from(m).unwrap_or(MAX_MEMORY).min(MAX_MEMORY));
        Limiter { memory, oom: false }
    }
}

/// What each pooled memory and table slot keeps mapped between instances (see `pooling`).
const KEEP_RESIDENT: usize = 1 << 20;

/// wasm32 memories top out at 4 GiB; tables at a generous element count.
const MAX_MEMORY: usize = 4 << 30;
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            self.oom = true;
            return Err(wasmtime::format_err!("memory limit of {} bytes exceeded (wanted {desired})", self.memory));
        }
        Ok(true)
    }
    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// An artifact compiled, linked and ready to instantiate.
#[derive(Clone)]
enum Prepared {
    Module(InstancePre<Host>),
    /// The typed entry points the component exports, if any.
    Component { command: Option<CommandPre<ComponentHost>>, proxy: Option<ProxyPre<ComponentHost>> },
}

/// Instances allocated from a pool sized for one node: slots are reserved up front, so
/// per-request instantiation is a slot reuse (`madvise` reset) instead of fresh `mmap`s.
///
/// - `max_memory_size` stays at 4 GiB, the wasm32 ceiling, so modules with big memories
///   still work; the [`Limiter`] still enforces each container's own memory limit.
/// - Each memory slot reserves 4 GiB of address space plus guards (no RAM until touched),
///   so 1000 slots take about 4 TiB of the 128 TiB a Linux x86_64 process can address.
/// - 1000 concurrent memories (a container or an in-flight request each; a component built
///   with the preview-1 adapter has one) bound what one node runs at once; past that,
///   instantiation fails and the run ends Failed (an HTTP request gets a 503).
/// - A component instantiates several core modules (the program, the adapter, shims), so
///   core instances and tables get twice the memory count.
fn pooling() -> PoolingAllocationConfig {
    const SLOTS: u32 = 1000;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_memories(SLOTS)
        .total_stacks(SLOTS)
        .total_component_instances(SLOTS)
        .total_core_instances(2 * SLOTS)
        .total_tables(2 * SLOTS)
        .max_memory_size(MAX_MEMORY)
        .table_elements(MAX_TABLE_ELEMENTS)
        // Multi-memory and multi-table modules, rare but valid, still instantiate.
        .max_memories_per_module(4)
        .max_tables_per_module(4)
        // A slot's low pages stay mapped and are reset in place (only the pages the
        // instance touched, where the kernel can tell), instead of `madvise` dropping
        // them: per-request instances otherwise pay a TLB shootdown and a page fault
        // for every page they touch.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT)
        .pagemap_scan(wasmtime::Enabled::Auto);
    pool
}

pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Host>,
    component_linker: wasmtime::component::Linker<ComponentHost>,
    loaded: Mutex<HashMap<String, Prepared>>,
    cache: Option<wasmtime::Cache>,
    /// The HTTP servers running here, for in-process dispatch between pods.
    local: Arc<http::LocalServers>,
}

impl WasmRuntime {
    /// `cache_dir` holds compiled code across restarts.
    pub fn new(cache_dir: &Path) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Deep but bounded: unbounded recursion traps instead of taking the node down.
        config.max_wasm_stack(1 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
        let mut cache_config = wasmtime::CacheConfig::new();
        cache_config.with_directory(cache_dir);
        let cache = wasmtime::Cache::new(cache_config).map_err(|e| anyhow::anyhow!("compiled-code cache in {}: {e}", cache_dir.display()))?;
        config.cache(Some(cache.clone()));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        // Every component gets all of WASI preview 2 plus wasi:http, so a command may make
        // outgoing requests and a handler may read its mounts.
        let mut component_linker = wasmtime::component::Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(|e| anyhow::anyhow!("linking WASI preview 2: {e}"))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut component_linker).map_err(|e| anyhow::anyhow!("linking wasi:http: {e}"))?;
        // The epoch clock: a plain thread, so it keeps ticking when tokio is busy.
        let ticker = engine.weak();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
        Ok(Arc::new(Self { engine, linker, component_linker, loaded: Mutex::new(HashMap::new()), cache: Some(cache), local: Default::default() }))
    }

    /// This node's HTTP servers by address: outgoing requests of its pods to one of them
    /// are answered in process.
    pub fn local_servers(&self) -> Arc<http::LocalServers> {
        self.local.clone()
    }

    /// (hits, misses) of the on-disk compiled-code cache since start.
    pub fn cache_stats(&self) -> (usize, usize) {
        self.cache.as_ref().map_or((0, 0), |c| (c.cache_hits(), c.cache_misses()))
    }

    /// The linked, ready-to-instantiate artifact; compiled (or loaded from the disk cache)
    /// once per digest. Module or component is told by the binary's header.
    fn prepare(&self, path: &Path, digest: &str) -> Result<Prepared, String> {
        if let Some(prepared) = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(digest) {
            return Ok(prepared.clone());
        }
        let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        let prepared = if is_component(&bytes) {
            let component = Component::new(&self.engine, &bytes).map_err(|e| format!("loading {}: {e:#}", path.display()))?;
            let pre = self.component_linker.instantiate_pre(&component).map_err(|e| format!("linking: {e:#}"))?;
            Prepared::Component { command: CommandPre::new(pre.clone()).ok(), proxy: ProxyPre::new(pre).ok() }
        } else {
            let module = Module::new(&self.engine, &bytes).map_err(|e| format!("loading {}: {e:#}", path.display()))?;
            Prepared::Module(self.linker.instantiate_pre(&module).map_err(|e| format!("linking: {e:#}"))?)
        };
        let (hits, misses) = self.cache_stats();
        tracing::info!(digest, cache_hits = hits, cache_misses = misses, "wasm artifact ready");
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(digest.to_owned(), prepared.clone());
        Ok(prepared)
    }

    /// What the artifact at `path` is (compiling it if it is not loaded yet), or why it is
    /// none of the runnable kinds.
    pub fn artifact_kind(&self, path: &Path, digest: &str) -> Result<ArtifactKind, String> {
        match self.prepare(path, digest)? {
            Prepared::Module(pre) if pre.module().get_export("_start").is_some() => Ok(ArtifactKind::Command),
            Prepared::Module(_) => Err("the module exports no _start: not a WASI command".to_owned()),
            Prepared::Component { proxy: Some(_), .. } => Ok(ArtifactKind::HttpComponent),
            Prepared::Component { command: Some(_), .. } => Ok(ArtifactKind::ComponentCommand),
            Prepared::Component { .. } => Err("the component exports neither wasi:cli/run nor wasi:http/incoming-handler".to_owned()),
        }
    }

    /// `artifact_kind` on a blocking thread: compiling a large component takes seconds of
    /// CPU, which must not hold up the async workers serving the API, probes and pods.
    pub async fn artifact_kind_off_thread(self: &Arc<Self>, path: &Path, digest: &str) -> Result<ArtifactKind, String> {
        let (rt, path, owned) = (self.clone(), path.to_owned(), digest.to_owned());
        tokio::task::spawn_blocking(move || rt.artifact_kind(&path, &owned)).await.map_err(|e| format!("compiling {digest}: {e}"))?
    }

    /// Runs a command module or a `wasi:cli/run` component to its end. Dropping the future
    /// stops it at its next tick.
    pub async fn run(&self, spec: RunSpec) -> Outcome {
        let prepared = match self.prepare(&spec.module, &spec.digest) {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e),
        };
        let mut wasi = match wasi_builder(&spec.argv, &spec.env, &spec.mounts) {
            Ok(w) => w,
            Err(e) => return Outcome::Failed(e),
        };
        wasi.stdout(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, spec.stdout));
        wasi.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, spec.stderr));
        match spec.stdin {
            Stdin::Empty => {}
            Stdin::Bytes(bytes) => {
                wasi.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(bytes));
            }
            Stdin::Stream(stream) => {
                wasi.stdin(wasmtime_wasi::cli::AsyncStdinStream::new(stream));
            }
        }
        let limiter = Limiter::new(spec.memory_limit);
        match prepared {
            Prepared::Module(pre) => {
                let store = self.store(Host { wasi: wasi.build_p1(), limiter }, spec.cpu_millis);
                run_module(&pre, store).await
            }
            Prepared::Component { command: Some(pre), .. } => {
                let store = self.store(ComponentHost::new(wasi.build(), limiter, spec.names), spec.cpu_millis);
                run_component(&pre, store).await
            }
            Prepared::Component { command: None, .. } => Outcome::Failed("the component does not export wasi:cli/run".to_owned()),
        }
    }

    /// A fresh store with the memory limiter and the CPU-share deadline callback.
    fn store<T: Limited + Send + 'static>(&self, data: T, cpu_millis: Option<u64>) -> Store<T> {
        let mut store = Store::new(&self.engine, data);
        store.limiter(|h| h.limiter());
        store.set_epoch_deadline(1);
        let pause = throttle(cpu_millis);
        store.epoch_deadline_callback(move |_| {
            Ok(match pause {
                Some(d) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(d))),
                None => UpdateDeadline::Yield(1),
            })
        });
        store
    }
}

/// The binary header: `\0asm`, then a version and a layer; layer 1 is a component.
fn is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[6..8] == [1, 0]
}

/// argv, env and mounts (read-only ones with read-only permissions on files and directory).
fn wasi_builder(argv: &[String], env: &[(String, String)], mounts: &[Mount]) -> Result<WasiCtxBuilder, String> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.args(argv).envs(env);
    for m in mounts {
        let perms = if m.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
        wasi.preopened_dir(&m.host, &m.guest, perms).map_err(|e| format!("mounting {} at {}: {e}", m.host.display(), m.guest))?;
    }
    Ok(wasi)
}

async fn run_module(pre: &InstancePre<Host>, mut store: Store<Host>) -> Outcome {
    let instance = match pre.instantiate_async(&mut store).await {
        Ok(i) => i,
        Err(e) => return instantiation_failure(e, store.data().limiter.oom),
    };
    let start = match instance.get_typed_func::<(), ()>(&mut store, "_start") {
        Ok(f) => f,
        Err(e) => return Outcome::Failed(format!("{e:#}")),
    };
    match start.call_async(&mut store, ()).await {
        Ok(()) => Outcome::Exited(0),
        Err(e) => ended(e, store.data().limiter.oom),
    }
}

async fn run_component(pre: &CommandPre<ComponentHost>, mut store: Store<ComponentHost>) -> Outcome {
    let command = match pre.instantiate_async(&mut store).await {
        Ok(c) => c,
        Err(e) => return instantiation_failure(e, store.data().limiter.oom),
    };
    match command.wasi_cli_run().call_run(&mut store).await {
        Ok(Ok(())) => Outcome::Exited(0),
        Ok(Err(())) => Outcome::Exited(1),
        Err(e) => ended(e, store.data().limiter.oom),
    }
}

/// Start functions run during instantiation, so their exits and traps count as the run's;
/// anything else (e.g. the instance pool is full) is a failure to start.
fn instantiation_failure(e: wasmtime::Error, oom: bool) -> Outcome {
    if e.downcast_ref::<I32Exit>().is_some() || e.downcast_ref::<wasmtime::Trap>().is_some() || oom {
        ended(e, oom)
    } else {
        Outcome::Failed(format!("instantiating: {e:#}"))
    }
}

/// The outcome of a run whose guest code returned an error.
fn ended(e: wasmtime::Error, oom: bool) -> Outcome {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        Outcome::Exited(exit.0)
    } else if oom {
        Outcome::OomKilled
    } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
        Outcome::Trapped(format!("wasm trap: {trap}"))
    } else {
        Outcome::Trapped(format!("{e:#}"))
    }
}

/// The wait after each tick of running that holds a guest to `millis` of one core.
fn throttle(cpu_millis: Option<u64>) -> Option<Duration> {
    let m = cpu_millis?.max(1);
    (m < 1000).then(|| TICK * ((1000 - m) as u32) / (m as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_shares_become_pauses() {
        assert_eq!(throttle(None), None);
        assert_eq!(throttle(Some(1000)), None);
        assert_eq!(throttle(Some(2000)), None);
        assert_eq!(throttle(Some(100)), Some(Duration::from_millis(90)));
        assert_eq!(throttle(Some(500)), Some(Duration::from_millis(10)));
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("wasmkube-wasm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(super) fn example(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../wasm-examples").join(name)
    }

    fn module(wat: &str, dir: &Path) -> (PathBuf, String) {
        use sha2::Digest;
        let bytes = wat::parse_str(wat).unwrap();
        let digest = hex::encode(sha2::Sha256::digest(&bytes));
        let path = dir.join(format!("{digest}.wasm"));
        std::fs::write(&path, &bytes).unwrap();
        (path, digest)
    }

    async fn run_file(rt: &WasmRuntime, dir: &Path, path: PathBuf, digest: String, argv: &[&str], memory: Option<u64>) -> (Outcome, String) {
        let log_path = dir.join(format!("{digest}.log"));
        let _ = std::fs::remove_file(&log_path);
        let log = crate::logs::LogWriter::open(&log_path, 1 << 20).unwrap();
        let argv = argv.iter().map(|a| a.to_string()).collect();
        let spec = RunSpec { module: path, digest, argv, env: vec![("MESSAGE".into(), "hi".into())], mounts: vec![], memory_limit: memory, cpu_millis: None, stdout: Box::new(log.sink("stdout")), stderr: Box::new(log.sink("stderr")), stdin: Stdin::Empty, names: None };
        let outcome = rt.run(spec).await;
        (outcome, crate::logs::read_text(&log_path, &Default::default()))
    }

    async fn run(rt: &WasmRuntime, dir: &Path, wat: &str, memory: Option<u64>) -> (Outcome, String) {
        let (path, digest) = module(wat, dir);
        run_file(rt, dir, path, digest, &["t"], memory).await
    }

    const PRINT_AND_EXIT: &str = r#"(module
        (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (data (i32.const 16) "hi\n")
        (func (export "_start")
          (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 3))
          (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
          (call $exit (i32.const 3))))"#;

    #[tokio::test]
    async fn exits_traps_oom_and_loops_end_as_container_states() {
        let dir = temp_dir("states");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let (outcome, log) = run(&rt, &dir, PRINT_AND_EXIT, None).await;
        assert_eq!((outcome, log.as_str()), (Outcome::Exited(3), "hi\n"));

        let trap = r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#;
        assert!(matches!(run(&rt, &dir, trap, None).await.0, Outcome::Trapped(m) if m.contains("unreachable")));

        let recurse = r#"(module (memory (export "memory") 1) (func $f (export "_start") (call $f)))"#;
        assert!(matches!(run(&rt, &dir, recurse, None).await.0, Outcome::Trapped(m) if m.contains("stack")));

        let grow = r#"(module (memory (export "memory") 1)
            (func (export "_start") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1))))))"#;
        assert_eq!(run(&rt, &dir, grow, Some(8 << 20)).await.0, Outcome::OomKilled);

        // Pooled slots are 4 GiB, so a big memory still fits; the limiter still applies.
        let big = r#"(module (memory (export "memory") 16384) (func (export "_start") (i32.store (i32.const 1073741820) (i32.const 1))))"#;
        assert_eq!(run(&rt, &dir, big, None).await.0, Outcome::Exited(0));
        assert_eq!(run(&rt, &dir, big, Some(512 << 20)).await.0, Outcome::OomKilled);

        let reactor = r#"(module (memory (export "memory") 1) (func (export "_initialize")))"#;
        assert!(matches!(run(&rt, &dir, reactor, None).await.0, Outcome::Failed(m) if m.contains("_start")));

        // A busy loop yields at every tick, so a timeout (like a pod deletion) stops it.
        let spin = r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;
        let stopped = tokio::time::timeout(Duration::from_millis(300), run(&rt, &dir, spin, None)).await;
        assert!(stopped.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn components_run_like_modules() {
        let dir = temp_dir("component");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        let job = example("job-component.wasm");
        assert_eq!(rt.artifact_kind(&job, "job-component"), Ok(ArtifactKind::ComponentCommand));
        // The preview-1 adapter turns every non-zero proc_exit into `exit(err)`, i.e. 1.
        let (outcome, log) = run_file(&rt, &dir, job.clone(), "job-component".into(), &["job", "3", "x"], None).await;
        assert_eq!(outcome, Outcome::Exited(1), "{log}");
        assert_eq!(log, "job: start\narg[0]=job\narg[1]=3\narg[2]=x\nmessage: hi\n");
        let (outcome, _) = run_file(&rt, &dir, job, "job-component".into(), &["job"], None).await;
        assert_eq!(outcome, Outcome::Exited(0));

        let hostile = example("hostile.wasm");
        let (outcome, _) = run_file(&rt, &dir, hostile, "hostile".into(), &["hostile", "memory"], Some(32 << 20)).await;
        assert_eq!(outcome, Outcome::OomKilled);

        // An HTTP handler is no command.
        let http = example("hello-http.wasm");
        assert_eq!(rt.artifact_kind(&http, "hello-http"), Ok(ArtifactKind::HttpComponent));
        let (outcome, _) = run_file(&rt, &dir, http, "hello-http".into(), &["hello"], None).await;
        assert!(matches!(outcome, Outcome::Failed(m) if m.contains("wasi:cli/run")));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn mounts_are_preopened_and_read_only_ones_refuse_writes() {
        let dir = temp_dir("mounts");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        std::fs::create_dir_all(dir.join("config")).unwrap();
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(dir.join("config/app.conf"), "a=1\n").unwrap();
        let log_path = dir.join("envdump.log");
        let log = crate::logs::LogWriter::open(&log_path, 1 << 20).unwrap();
        let argv = ["envdump", "/config/app.conf", "write:/config/x", "write:/data/out.txt", "/etc/passwd"].map(String::from).to_vec();
        let mounts = vec![
            Mount { host: dir.join("config"), guest: "/config".into(), read_only: true },
            Mount { host: dir.join("data"), guest: "/data".into(), read_only: false },
        ];
        let spec = RunSpec { module: example("envdump.wasm"), digest: "envdump".into(), argv, env: vec![], mounts, memory_limit: None, cpu_millis: None, stdout: Box::new(log.sink("stdout")), stderr: Box::new(log.sink("stderr")), stdin: Stdin::Empty, names: None };
        assert_eq!(rt.run(spec).await, Outcome::Exited(0));
        let out = crate::logs::read_text(&log_path, &Default::default());
        assert!(out.contains("== file /config/app.conf\na=1\n"), "{out}");
        assert!(out.lines().any(|l| l.starts_with("== error /config/x: ")), "{out}");
        assert!(out.contains("== wrote /data/out.txt"), "{out}");
        assert!(out.contains("== error /etc/passwd: "), "{out}");
        assert!(!dir.join("config/x").exists());
        assert_eq!(std::fs::read_to_string(dir.join("data/out.txt")).unwrap(), "written by envdump\n");
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A component whose `run` calls `wasi:cli/exit.exit-with-code(7)` if `$code` is 7,
    /// else returns `$code` as its result (0 ok, 1 err).
    fn exit_component(code: u32) -> String {
        let body = if code == 7 { "(call $code (i32.const 7)) unreachable".to_owned() } else { format!("(i32.const {code})") };
        format!(
            r#"(component
              (import "wasi:cli/exit@0.2.12" (instance $exit (export "exit-with-code" (func (param "status-code" u8)))))
              (core func $code (canon lower (func $exit "exit-with-code")))
              (core module $m
                (import "exit" "code" (func $code (param i32)))
                (func (export "run") (result i32) {body}))
              (core instance $i (instantiate $m (with "exit" (instance (export "code" (func $code))))))
              (func $run (result (result)) (canon lift (core func $i "run")))
              (instance $run-instance (export "run" (func $run)))
              (export "wasi:cli/run@0.2.12" (instance $run-instance)))"#
        )
    }

    #[tokio::test]
    async fn component_exit_codes() {
        let dir = temp_dir("exit");
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        for (code, outcome) in [(7, Outcome::Exited(7)), (0, Outcome::Exited(0)), (1, Outcome::Exited(1))] {
            assert_eq!(run(&rt, &dir, &exit_component(code), None).await.0, outcome);
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn artifact_kinds_and_the_disk_cache_across_restarts() {
        let dir = temp_dir("kinds");
        let artifacts = [("hello-wagi.wasm", ArtifactKind::Command), ("job-component.wasm", ArtifactKind::ComponentCommand), ("hello-http.wasm", ArtifactKind::HttpComponent)];
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        for (name, kind) in artifacts {
            assert_eq!(rt.artifact_kind(&example(name), name), Ok(kind), "{name}");
        }
        assert_eq!(rt.cache_stats(), (0, 3));
        let (path, _) = module(r#"(module (func (export "_initialize")))"#, &dir);
        assert!(rt.artifact_kind(&path, "reactor").unwrap_err().contains("_start"));
        assert!(rt.artifact_kind(&dir.join("missing.wasm"), "missing").unwrap_err().contains("missing.wasm"));
        drop(rt);

        // A restarted node loads the compiled code instead of compiling again.
        let rt = WasmRuntime::new(&dir.join("cache")).unwrap();
        for (name, kind) in artifacts {
            assert_eq!(rt.artifact_kind(&example(name), name), Ok(kind), "{name}");
        }
        assert_eq!(rt.cache_stats(), (3, 0));
        let _ = std::fs::remove_dir_all(dir);
    }
}
