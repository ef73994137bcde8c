//! `kubectl exec` on a wasm pod: what a command runs, and the registry of container runs it
//! reaches.
//!
//! A wasm container has no file system of programs to start, so a command is one of:
//! - the container's own program: `command[0]` names the container's module (its
//!   `command[0]`, or the container name when it has no command, or their base names, or
//!   any path ending in `.wasm`): a fresh instance of the module runs with the command as
//!   argv and the running container's env, volumes and limits; `-i` streams its stdin;
//! - a built-in tool ([`toolbox`](crate::toolbox)): `tar` (what `kubectl cp` runs), `ls`,
//!   `cat`, `env`, `echo`, `test`, `mkdir`, `rm`, `true`, `false`, `pwd`, working on the
//!   container's volumes only, read-only mounts staying read-only;
//! - anything else: `executable file not found in $PATH`, exit code 127, as a container
//!   runtime answers for a program that is not in the image.

use crate::wasm::{ClusterNames, Mount, Outcome, RunSpec, Stdin, WasmRuntime};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};

/// One container run in progress, as exec and attach need it.
pub struct Container {
    pub image: String,
    pub module: PathBuf,
    pub digest: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    /// (host directory, guest path, read-only)
    pub mounts: Vec<(PathBuf, String, bool)>,
    pub memory_limit: Option<u64>,
    pub cpu_millis: Option<u64>,
    pub names: Option<Arc<ClusterNames>>,
    pub pod_ip: String,
    /// The run's log file: attach streams it.
    pub log: PathBuf,
    pub tty: bool,
    /// The running instance's stdin, when the container has `stdin: true`.
    pub stdin: Option<AttachStdin>,
    pub stdin_once: bool,
}

impl Container {
    pub fn mounts(&self) -> Vec<Mount> {
        self.mounts.iter().map(|(host, guest, ro)| Mount { host: host.clone(), guest: guest.clone(), read_only: *ro }).collect()
    }

    /// Whether `program` (an exec command's first word) names this container's module.
    pub fn runs(&self, program: &str) -> bool {
        let base = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
        let own = self.argv.first().map(String::as_str).unwrap_or_default();
        // The repository's last segment: no registry, tag or digest.
        let repo = self.image.split('@').next().unwrap_or_default();
        let image_name = base(repo).split(':').next().unwrap_or_default().to_owned();
        program == own || (!program.is_empty() && (base(program) == base(own) || base(program) == image_name)) || program.ends_with(".wasm")
    }
}

/// A running instance's stdin, which attach sessions write to; taking the writer away
/// (`stdinOnce` after the first session) gives the instance end of file.
pub type AttachStdin = Arc<tokio::sync::Mutex<Option<tokio::io::WriteHalf<tokio::io::SimplexStream>>>>;

/// A stdin for a running instance: the writer goes to the registry for attach sessions,
/// the reader to the instance.
pub fn attach_stdin() -> (AttachStdin, impl AsyncRead + Send + Sync + Unpin) {
    let (reader, writer) = tokio::io::simplex(64 << 10);
    (Arc::new(tokio::sync::Mutex::new(Some(writer))), reader)
}

type Key = (String, String, String);

/// Every container run in progress on the node, by namespace, pod and container.
#[derive(Default)]
pub struct Containers(Mutex<HashMap<Key, Arc<Container>>>);

/// Keeps a run registered; dropping it (the run ended) removes it.
pub struct Registration {
    registry: Arc<Containers>,
    key: Key,
    entry: Arc<Container>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self.registry.0.lock().unwrap_or_else(|e| e.into_inner());
        // A newer run of the same container may have replaced this one already.
        if map.get(&self.key).is_some_and(|e| Arc::ptr_eq(e, &self.entry)) {
            map.remove(&self.key);
        }
    }
}

impl Containers {
    pub fn register(self: &Arc<Self>, namespace: &str, pod: &str, container: &str, entry: Container) -> Registration {
        let key = (namespace.to_owned(), pod.to_owned(), container.to_owned());
        let entry = Arc::new(entry);
        self.0.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), entry.clone());
        Registration { registry: self.clone(), key, entry }
    }

    pub fn get(&self, namespace: &str, pod: &str, container: &str) -> Option<Arc<Container>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&(namespace.to_owned(), pod.to_owned(), container.to_owned())).cloned()
    }

    /// The address of a pod with a run in progress.
    pub fn pod_ip(&self, namespace: &str, pod: &str) -> Option<String> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().find(|((ns, p, _), _)| ns == namespace && p == pod).map(|(_, c)| c.pod_ip.clone())
    }

    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The streams an exec command gets.
pub struct Io {
    pub stdin: Stdin,
    pub stdout: Box<dyn AsyncWrite + Send + Sync + Unpin>,
    pub stderr: Box<dyn AsyncWrite + Send + Sync + Unpin>,
}

/// How a command ended: its exit code, or why it could not run.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    Exited(i32),
    Failed(String),
}

/// The exit code of a command that is neither the container's program nor a built-in tool.
pub const NOT_FOUND_EXIT: i32 = 127;

/// Runs `command` in `container`; the result says how it ended.
pub async fn run(runtime: &WasmRuntime, container: &Container, command: Vec<String>, mut io: Io) -> Ended {
    let Some(program) = command.first().cloned() else { return Ended::Failed("you must specify at least 1 command".into()) };
    if container.runs(&program) {
        let spec = RunSpec {
            module: container.module.clone(),
            digest: container.digest.clone(),
            argv: command,
            env: container.env.clone(),
            mounts: container.mounts(),
            memory_limit: container.memory_limit,
            cpu_millis: container.cpu_millis,
            stdout: io.stdout,
            stderr: io.stderr,
            stdin: io.stdin,
            names: container.names.clone(),
        };
        return match runtime.run(spec).await {
            Outcome::Exited(code) => Ended::Exited(code),
            Outcome::OomKilled => Ended::Exited(137),
            Outcome::Trapped(m) => Ended::Failed(format!("the instance trapped: {m}")),
            Outcome::Failed(m) => Ended::Failed(m),
        };
    }
    if let Some(tool) = crate::toolbox::Tool::named(&program) {
        return Ended::Exited(crate::toolbox::run(tool, &command[1..], &container.mounts(), &container.env, io).await);
    }
    use tokio::io::AsyncWriteExt;
    let message = format!("exec: \"{program}\": executable file not found in $PATH (a wasm container runs its own module, as \"{}\" or any *.wasm path, and the built-in tools: {})\n", container.argv.first().map(String::as_str).unwrap_or_default(), crate::toolbox::NAMES.join(", "));
    let _ = io.stderr.write_all(message.as_bytes()).await;
    let _ = io.stderr.shutdown().await;
    Ended::Exited(NOT_FOUND_EXIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(argv: &[&str], image: &str) -> Container {
        Container {
            image: image.into(),
            module: PathBuf::new(),
            digest: String::new(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![],
            mounts: vec![],
            memory_limit: None,
            cpu_millis: None,
            names: None,
            pod_ip: "127.1.0.5".into(),
            log: PathBuf::new(),
            tty: false,
            stdin: None,
            stdin_once: false,
        }
    }

    #[test]
    fn a_command_runs_the_module_when_it_names_the_container_program() {
        let c = container(&["/app/server.wasm", "--port", "80"], "localhost:5000/hello-http:v1");
        for yes in ["/app/server.wasm", "server.wasm", "/other.wasm", "hello-http"] {
            assert!(c.runs(yes), "{yes}");
        }
        for no in ["ls", "sh", "", "/bin/server"] {
            assert!(!c.runs(no), "{no}");
        }
        let named = container(&["web"], "registry.local/web@sha256:abc");
        assert!(named.runs("web") && named.runs("/usr/bin/web") && !named.runs("tar"));
    }

    #[test]
    fn a_run_is_registered_until_its_guard_drops_and_a_newer_run_is_kept() {
        let registry = Arc::new(Containers::default());
        let first = registry.register("ns", "pod", "c", container(&["c"], "img"));
        assert!(registry.get("ns", "pod", "c").is_some());
        assert_eq!(registry.pod_ip("ns", "pod").as_deref(), Some("127.1.0.5"));
        let second = registry.register("ns", "pod", "c", container(&["c2"], "img"));
        drop(first);
        assert_eq!(registry.get("ns", "pod", "c").unwrap().argv, ["c2"]);
        drop(second);
        assert!(registry.is_empty() && registry.pod_ip("ns", "pod").is_none());
    }
}
