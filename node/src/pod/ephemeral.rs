//! Ephemeral containers (`kubectl debug`): added to a running pod's spec through the API,
//! each runs once as a fresh instance of its image beside the pod's own containers, with
//! the pod's volumes, its log where container logs go, and exec/attach reaching it. As in
//! kubelet, one never restarts and a pod that has finished starts none.

use super::{select_executor, termination, Base, ExecutorChoice, PrepError, Prepared, RunningLog, Shared};
use crate::env::PodFacts;
use crate::events::{self, Type};
use crate::logs::{self, LogWriter};
use crate::status::{self, State};
use crate::volumes;
use crate::wasm::Outcome;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::collections::HashSet;
use std::sync::Arc;
use tokio::task::JoinSet;

/// The ephemeral containers one pod worker has started; dropping it stops their runs.
#[derive(Default)]
pub(super) struct Debuggers {
    started: HashSet<String>,
    runs: JoinSet<()>,
}

impl Debuggers {
    /// Starts each ephemeral container of `pod` not started (or finished) before.
    pub(super) fn start(&mut self, sh: &Arc<Shared>, pod: &Arc<Pod>) {
        if matches!(sh.read(|s| s.phase), "Succeeded" | "Failed") {
            return;
        }
        for ec in pod.spec.iter().flat_map(|s| s.ephemeral_containers.iter().flatten()) {
            if self.started.contains(&ec.name) {
                continue;
            }
            self.started.insert(ec.name.clone());
            // Same fields, same JSON: the regular container code reads it as a Container.
            let c: Container = match serde_json::to_value(ec).and_then(serde_json::from_value) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(pod = %sh.name, container = %ec.name, error = %e, "unreadable ephemeral container");
                    continue;
                }
            };
            let image = c.image.clone().unwrap_or_default();
            let fresh = sh.update(|s| match s.ephemeral.iter().find(|e| e.name == c.name) {
                Some(e) => e.terminated().is_none(),
                None => {
                    s.ephemeral.push(status::Container::new(&c.name, &image));
                    true
                }
            });
            if fresh {
                self.runs.spawn(sh.clone().run_ephemeral(pod.clone(), c));
            }
        }
    }
}

impl Shared {
    fn update_ephemeral(&self, name: &str, f: impl FnOnce(&mut status::Container)) {
        self.update(|s| {
            if let Some(c) = s.ephemeral.iter_mut().find(|c| c.name == name) {
                f(c);
            }
        });
    }

    /// Prepares (retrying with back-off, as for the pod's own containers) and runs ephemeral container `c` once.
    async fn run_ephemeral(self: Arc<Self>, pod: Arc<Pod>, c: Container) {
        let mut delay = self.ctx.backoff_base;
        let p = loop {
            match self.prepare_ephemeral(&pod, &c).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::info!(pod = %self.name, container = %c.name, reason = e.reason, message = %e.message, "cannot start the ephemeral container yet");
                    self.event(&c.name, Type::Warning, events::FAILED, events::error(&e.message));
                    self.update_ephemeral(&c.name, |s| s.waiting(e.reason, Some(e.message.clone())));
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(super::MAX_BACKOFF);
                }
            }
        };
        let log_path = logs::run_log(&self.log_dir(&c.name), 0);
        // As for a regular run: followers who saw Running find the run and its file.
        let _running = RunningLog::new(&self.ctx, log_path.clone());
        let started = status::now();
        let log = LogWriter::open(&log_path, self.ctx.log_max_bytes);
        self.update_ephemeral(&c.name, |s| {
            s.state = State::Running { started: started.clone() };
            s.image_id = p.image_id.clone();
            s.run_id = status::run_id(&self.uid, &c.name, 0);
            s.started = true;
        });
        let outcome = match log {
            Ok(log) => {
                self.event(&c.name, Type::Normal, events::CREATED, events::created(&c.name));
                self.event(&c.name, Type::Normal, events::STARTED, events::started(&c.name));
                let mut spec = self.run_spec(&p, p.argv.clone(), &log);
                let _exec = self.register_exec(&c, &p, &log_path, &mut spec);
                let outcome = self.ctx.runtime.run(spec).await;
                match &outcome {
                    Outcome::OomKilled => log.note("OOMKilled: the module grew its memory past limits.memory"),
                    Outcome::Trapped(m) | Outcome::Failed(m) => log.note(m),
                    Outcome::Exited(_) => {}
                }
                outcome
            }
            Err(e) => Outcome::Failed(format!("opening the container log {}: {e}", log_path.display())),
        };
        let mut term = termination(outcome, started, None);
        tracing::info!(pod = %format!("{}/{}", self.namespace, self.name), container = %c.name, exit_code = term.exit_code, reason = %term.reason, "ephemeral container ended");
        self.update_ephemeral(&c.name, |s| {
            term.container_id = s.run_id.clone();
            s.state = State::Terminated(term);
            s.ready = false;
        });
    }

    /// What [`Shared::prepare`] does for one container, against the pod as it is now
    /// (`pod`, with the ephemeral container) and the volumes already on disk.
    async fn prepare_ephemeral(&self, pod: &Pod, c: &Container) -> Result<Prepared, PrepError> {
        let fail = |reason, message| PrepError { reason, message, container: Some(c.name.clone()) };
        let sources = self.fetch_sources(pod).await.map_err(|m| fail("CreateContainerConfigError", m))?;
        let creds = self.pull_credentials().await;
        let pod_ip = self.pod_ip();
        let facts = PodFacts { pod, pod_ip: &pod_ip, host_ip: &self.ctx.host_ip, node_name: &self.ctx.name };
        let vols = volumes::existing(&self.ctx.pods_dir.join(&self.uid), self.spec().volumes.as_deref().unwrap_or_default());
        let Base { module, digest, image_id, env, mounts, argv } = self.pull_and_configure(c, &creds, &facts, &sources, &vols).await?;
        let artifact = self.ctx.runtime.artifact_kind_off_thread(&module, &digest).await.map_err(|m| fail("CreateContainerError", m))?;
        // No ports (the API forbids them), so a command; a wasi:http component is refused.
        let executor = select_executor(artifact, ExecutorChoice::Command, Vec::new(), false, "Never").map_err(|m| fail("CreateContainerError", m))?;
        Ok(Prepared {
            module,
            digest,
            image_id,
            argv,
            env,
            mounts,
            memory_limit: None,
            cpu_millis: None,
            executor,
            artifact,
            ports: Vec::new(),
        })
    }
}
