//! The wasm executor: one wasmtime `Engine` per node, WASI preview-1 command modules run
//! as containers, with memory and CPU limits, and cancellation by dropping the future.
//!
//! - Compiled code is cached on disk by wasmtime's own cache (keyed by the module bytes and
//!   the engine's settings), so a node restart loads instead of recompiling; the cache's
//!   hit/miss counters are logged.
//! - An epoch ticks every [`TICK`]; running guests hit their deadline at each tick and yield
//!   to tokio, so a busy loop never holds a worker thread and a dropped future stops it.
//!   A CPU limit below one core turns each yield into a sleep sized to keep the guest at
//!   its share (100m: 10 ms of running, then 90 ms of waiting).
//! - Memory and table growth go through a limiter; passing `limits.memory` traps the
//!   instance and the run ends as OOMKilled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::{Config, Engine, InstancePre, Linker, Module, ResourceLimiter, Store, UpdateDeadline};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

pub const TICK: Duration = Duration::from_millis(10);

/// How a run ended, in the terms a container status needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `proc_exit` or a return from `_start` (0).
    Exited(i32),
    /// Memory growth past the limit.
    OomKilled,
    /// A trap (unreachable, stack overflow, out-of-bounds access ...), with its message.
    Trapped(String),
    /// The module could not be loaded or linked.
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
    pub stdout: crate::logs::LineSink,
    pub stderr: crate::logs::LineSink,
    /// Bytes on stdin (WAGI request bodies); empty otherwise.
    pub stdin: Vec<u8>,
}

struct Host {
    wasi: WasiP1Ctx,
    limiter: Limiter,
}

struct Limiter {
    memory: usize,
    oom: bool,
}

/// wasm32 memories top out at 4 GiB; tables at a generous element count.
const MAX_MEMORY: usize = 4 << 30;
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

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

pub struct WasmRuntime {
    engine: Engine,
    linker: Linker<Host>,
    loaded: Mutex<HashMap<String, InstancePre<Host>>>,
    cache: Option<wasmtime::Cache>,
}

impl WasmRuntime {
    /// `cache_dir` holds compiled code across restarts.
    pub fn new(cache_dir: &Path) -> anyhow::Result<Arc<Self>> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // Deep but bounded: unbounded recursion traps instead of taking the node down.
        config.max_wasm_stack(1 << 20);
        let mut cache_config = wasmtime::CacheConfig::new();
        cache_config.with_directory(cache_dir);
        let cache = wasmtime::Cache::new(cache_config).map_err(|e| anyhow::anyhow!("compiled-code cache in {}: {e}", cache_dir.display()))?;
        config.cache(Some(cache.clone()));
        let engine = Engine::new(&config).map_err(|e| anyhow::anyhow!("creating the wasm engine: {e}"))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_async(&mut linker, |h: &mut Host| &mut h.wasi).map_err(|e| anyhow::anyhow!("linking WASI: {e}"))?;
        // The epoch clock: a plain thread, so it keeps ticking when tokio is busy.
        let ticker = engine.weak();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while let Some(engine) = ticker.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(TICK);
            }
        })?;
        Ok(Arc::new(Self { engine, linker, loaded: Mutex::new(HashMap::new()), cache: Some(cache) }))
    }

    /// (hits, misses) of the on-disk compiled-code cache since start.
    pub fn cache_stats(&self) -> (usize, usize) {
        self.cache.as_ref().map_or((0, 0), |c| (c.cache_hits(), c.cache_misses()))
    }

    /// The linked, ready-to-instantiate module; compiled (or loaded from the disk cache) once.
    fn prepare(&self, module: &Path, digest: &str) -> Result<InstancePre<Host>, String> {
        if let Some(pre) = self.loaded.lock().unwrap_or_else(|e| e.into_inner()).get(digest) {
            return Ok(pre.clone());
        }
        let compiled = Module::from_file(&self.engine, module).map_err(|e| format!("loading {}: {e}", module.display()))?;
        let pre = self.linker.instantiate_pre(&compiled).map_err(|e| format!("linking: {e}"))?;
        let (hits, misses) = self.cache_stats();
        tracing::info!(digest, cache_hits = hits, cache_misses = misses, "wasm module ready");
        self.loaded.lock().unwrap_or_else(|e| e.into_inner()).insert(digest.to_owned(), pre.clone());
        Ok(pre)
    }

    /// Runs a command module to its end. Dropping the future stops it at its next tick.
    pub async fn run(&self, spec: RunSpec) -> Outcome {
        let pre = match self.prepare(&spec.module, &spec.digest) {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(e),
        };
        let mut wasi = WasiCtxBuilder::new();
        wasi.args(&spec.argv).envs(&spec.env);
        wasi.stdout(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, spec.stdout));
        wasi.stderr(wasmtime_wasi::cli::AsyncStdoutStream::new(64 << 10, spec.stderr));
        if !spec.stdin.is_empty() {
            wasi.stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(spec.stdin));
        }
        for m in &spec.mounts {
            let perms = if m.read_only { FsPerms::ReadOnly } else { FsPerms::ReadWrite };
            if let Err(e) = wasi.preopened_dir(&m.host, &m.guest, perms) {
                return Outcome::Failed(format!("mounting {} at {}: {e}", m.host.display(), m.guest));
            }
        }
        let memory = spec.memory_limit.map_or(MAX_MEMORY, |m| usize::try_from(m).unwrap_or(MAX_MEMORY).min(MAX_MEMORY));
        let mut store = Store::new(&self.engine, Host { wasi: wasi.build_p1(), limiter: Limiter { memory, oom: false } });
        store.limiter(|h| &mut h.limiter);
        store.set_epoch_deadline(1);
        let pause = throttle(spec.cpu_millis);
        store.epoch_deadline_callback(move |_| {
            Ok(match pause {
                Some(d) => UpdateDeadline::YieldCustom(1, Box::pin(tokio::time::sleep(d))),
                None => UpdateDeadline::Yield(1),
            })
        });
        let result = async {
            let instance = pre.instantiate_async(&mut store).await?;
            let start = instance.get_typed_func::<(), ()>(&mut store, "_start")?;
            start.call_async(&mut store, ()).await
        }
        .await;
        match result {
            Ok(()) => Outcome::Exited(0),
            Err(e) => {
                if let Some(exit) = e.downcast_ref::<I32Exit>() {
                    Outcome::Exited(exit.0)
                } else if store.data().limiter.oom {
                    Outcome::OomKilled
                } else if let Some(trap) = e.downcast_ref::<wasmtime::Trap>() {
                    Outcome::Trapped(format!("wasm trap: {trap}"))
                } else {
                    Outcome::Trapped(format!("{e:#}"))
                }
            }
        }
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

    fn module(wat: &str, dir: &Path) -> (PathBuf, String) {
        let bytes = wat::parse_str(wat).unwrap();
        let path = dir.join(format!("{}.wasm", bytes.len()));
        std::fs::write(&path, &bytes).unwrap();
        (path, format!("test-{}", wat.len()))
    }

    async fn run(rt: &WasmRuntime, dir: &Path, wat: &str, memory: Option<u64>) -> (Outcome, String) {
        let (path, digest) = module(wat, dir);
        let log_path = dir.join(format!("{digest}.log"));
        let _ = std::fs::remove_file(&log_path);
        let log = crate::logs::LogWriter::open(&log_path, 1 << 20).unwrap();
        let spec = RunSpec { module: path, digest, argv: vec!["t".into()], env: vec![], mounts: vec![], memory_limit: memory, cpu_millis: None, stdout: log.sink("stdout"), stderr: log.sink("stderr"), stdin: vec![] };
        let outcome = rt.run(spec).await;
        (outcome, String::from_utf8_lossy(&crate::logs::read(&log_path, &Default::default())).into_owned())
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
        let dir = std::env::temp_dir().join(format!("wasmkube-wasm-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
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

        // A busy loop yields at every tick, so a timeout (like a pod deletion) stops it.
        let spin = r#"(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"#;
        let stopped = tokio::time::timeout(Duration::from_millis(300), run(&rt, &dir, spin, None)).await;
        assert!(stopped.is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
