//! The node's view of one pod, rendered as the `status` Kubernetes tools read: phase,
//! conditions, container states with the reasons people know.

use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminated {
    pub exit_code: i32,
    pub reason: String,
    pub message: Option<String>,
    pub started: String,
    pub finished: String,
    /// The run that ended (`run_id` of [`Container`]): where its logs are found.
    pub container_id: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    Waiting { reason: String, message: Option<String> },
    Running { started: String },
    Terminated(Terminated),
}

#[derive(Clone, Debug)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restarts: u32,
    pub ready: bool,
    /// Passed its startup probe (or has none) while running.
    pub started: bool,
    /// Identifies the current run, like a container ID: `wasm://<pod uid>/<name>/<restart>`.
    pub run_id: String,
}

impl Container {
    pub fn new(name: &str, image: &str) -> Self {
        Self {
            name: name.to_owned(),
            image: image.to_owned(),
            image_id: String::new(),
            state: State::Waiting { reason: "ContainerCreating".into(), message: None },
            last: None,
            restarts: 0,
            ready: false,
            started: false,
            run_id: String::new(),
        }
    }

    pub fn waiting(&mut self, reason: &str, message: Option<String>) {
        self.state = State::Waiting { reason: reason.to_owned(), message };
        self.ready = false;
        self.started = false;
    }

    pub fn terminated(&self) -> Option<&Terminated> {
        match &self.state {
            State::Terminated(t) => Some(t),
            _ => None,
        }
    }

    fn to_json(&self) -> Value {
        let term = |t: &Terminated| {
            let mut v = json!({"exitCode": t.exit_code, "reason": t.reason, "startedAt": t.started, "finishedAt": t.finished});
            if let Some(m) = &t.message {
                v["message"] = json!(m);
            }
            if !t.container_id.is_empty() {
                v["containerID"] = json!(t.container_id);
            }
            json!({"terminated": v})
        };
        let state = match &self.state {
            State::Waiting { reason, message } => {
                let mut w = json!({"reason": reason});
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({"waiting": w})
            }
            State::Running { started } => json!({"running": {"startedAt": started}}),
            State::Terminated(t) => term(t),
        };
        let mut v = json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "ready": self.ready,
            "restartCount": self.restarts,
            "started": self.started,
            "state": state,
            "lastState": self.last.as_ref().map_or(json!({}), term),
        });
        if !self.run_id.is_empty() {
            v["containerID"] = json!(self.run_id);
        }
        v
    }
}

/// Everything the node reports about a pod.
#[derive(Clone, Debug)]
pub struct PodState {
    pub phase: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ip: String,
    pub host_ip: String,
    pub start_time: String,
    pub initialized: bool,
    pub init: Vec<Container>,
    pub main: Vec<Container>,
    /// Debug containers added to the running pod, each run once.
    pub ephemeral: Vec<Container>,
    /// When each condition last changed, so `lastTransitionTime` means what it says.
    transitions: [(bool, String); 4],
}

const CONDITIONS: [&str; 4] = ["PodScheduled", "Initialized", "ContainersReady", "Ready"];

impl PodState {
    /// The state to start from: fresh, or carried over from what an earlier run of this
    /// node reported (restart counts and finished containers survive a node restart).
    pub fn from_pod(pod: &Pod, host_ip: &str) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        let image = |c: &k8s_openapi::api::core::v1::Container| c.image.clone().unwrap_or_default();
        let restore = |c: &k8s_openapi::api::core::v1::Container, old: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>| {
            let mut s = Container::new(&c.name, &image(c));
            if let Some(prev) = old.into_iter().flatten().find(|s| s.name == c.name) {
                s.restarts = u32::try_from(prev.restart_count).unwrap_or(0);
                s.last = prev.last_state.as_ref().and_then(|l| l.terminated.as_ref()).map(restore_terminated);
                s.run_id = prev.container_id.clone().unwrap_or_default();
                if let Some(t) = prev.state.as_ref().and_then(|st| st.terminated.as_ref()) {
                    s.state = State::Terminated(restore_terminated(t));
                } else if let Some(running) = prev.state.as_ref().and_then(|st| st.running.as_ref()) {
                    // It was running when the node went away: like a reboot, it runs again,
                    // and the interrupted run becomes its last state (kubelet's `Unknown`, 255),
                    // so `kubectl logs --previous` reads it.
                    s.restarts += 1;
                    s.last = Some(interrupted(running, &s.run_id));
                }
            }
            s
        };
        let now = now();
        let start_time = status.start_time.map_or_else(|| now.clone(), |t| t.0.to_string());
        Self {
            phase: "Pending",
            reason: None,
            message: None,
            pod_ip: String::new(),
            host_ip: host_ip.to_owned(),
            start_time,
            initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
            init: spec.init_containers.iter().flatten().map(|c| restore(c, status.init_container_statuses.as_ref())).collect(),
            main: spec.containers.iter().map(|c| restore(c, status.container_statuses.as_ref())).collect(),
            ephemeral: spec.ephemeral_containers.iter().flatten().map(|c| restore_ephemeral(c, status.ephemeral_container_statuses.as_ref())).collect(),
            transitions: std::array::from_fn(|_| (false, now.clone())),
        }
    }

    pub fn to_json(&mut self) -> Value {
        let ready = !self.main.is_empty() && self.main.iter().all(|c| c.ready) && self.phase == "Running";
        let values = [true, self.initialized, ready, ready];
        let mut conditions = Vec::new();
        for (i, name) in CONDITIONS.iter().enumerate() {
            if self.transitions[i].0 != values[i] {
                self.transitions[i] = (values[i], now());
            }
            let mut c = json!({"type": name, "status": if values[i] { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": self.transitions[i].1});
            if !values[i] && i >= 2 {
                let not_ready: Vec<&str> = self.main.iter().filter(|c| !c.ready).map(|c| c.name.as_str()).collect();
                c["reason"] = json!(if self.phase == "Succeeded" || self.phase == "Failed" { "PodCompleted" } else { "ContainersNotReady" });
                c["message"] = json!(format!("containers with unready status: [{}]", not_ready.join(" ")));
            }
            conditions.push(c);
        }
        let mut v = json!({
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "startTime": self.start_time,
            "containerStatuses": self.main.iter().map(Container::to_json).collect::<Vec<_>>(),
        });
        if !self.pod_ip.is_empty() {
            v["podIP"] = json!(self.pod_ip);
            v["podIPs"] = json!([{"ip": self.pod_ip}]);
        }
        if !self.ephemeral.is_empty() {
            v["ephemeralContainerStatuses"] = json!(self.ephemeral.iter().map(Container::to_json).collect::<Vec<_>>());
        }
        if !self.init.is_empty() {
            v["initContainerStatuses"] = json!(self.init.iter().map(Container::to_json).collect::<Vec<_>>());
        }
        // Explicit nulls clear what an earlier write set (this is a merge patch).
        v["reason"] = self.reason.as_ref().map_or(Value::Null, |r| json!(r));
        v["message"] = self.message.as_ref().map_or(Value::Null, |m| json!(m));
        v
    }
}

/// An ephemeral container as an earlier run of this node left it. It never restarts: one
/// that was running when the node went away has ended, as kubelet reports it (`Unknown`).
fn restore_ephemeral(c: &k8s_openapi::api::core::v1::EphemeralContainer, old: Option<&Vec<k8s_openapi::api::core::v1::ContainerStatus>>) -> Container {
    let mut s = Container::new(&c.name, c.image.as_deref().unwrap_or_default());
    let Some(prev) = old.into_iter().flatten().find(|s| s.name == c.name) else { return s };
    s.run_id = prev.container_id.clone().unwrap_or_default();
    s.image_id = prev.image_id.clone();
    let state = prev.state.clone().unwrap_or_default();
    if let Some(t) = &state.terminated {
        s.state = State::Terminated(restore_terminated(t));
    } else if let Some(running) = &state.running {
        s.state = State::Terminated(interrupted(running, &s.run_id));
    }
    s
}

/// A run the node's restart interrupted, as kubelet reports it: `Unknown`, exit code 255.
fn interrupted(running: &k8s_openapi::api::core::v1::ContainerStateRunning, run_id: &str) -> Terminated {
    Terminated {
        exit_code: 255,
        reason: "Unknown".into(),
        message: None,
        started: running.started_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        finished: now(),
        container_id: run_id.to_owned(),
    }
}

fn restore_terminated(t: &k8s_openapi::api::core::v1::ContainerStateTerminated) -> Terminated {
    Terminated {
        exit_code: t.exit_code,
        reason: t.reason.clone().unwrap_or_default(),
        message: t.message.clone(),
        started: t.started_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        finished: t.finished_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default(),
        container_id: t.container_id.clone().unwrap_or_default(),
    }
}

/// The ID of one run of a container, read like a container ID: `wasm://<pod uid>/<name>/<restart>`.
pub fn run_id(pod_uid: &str, container: &str, restart: u32) -> String {
    format!("wasm://{pod_uid}/{container}/{restart}")
}

/// The restart number a run ID names (which log file holds the run's output).
pub fn run_number(run_id: &str) -> Option<u32> {
    run_id.strip_prefix("wasm://")?.rsplit('/').next()?.parse().ok()
}

/// Whether `restartPolicy` restarts a container that ended with `exit_code`.
pub fn restarts(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_restart_carries_counts_and_finished_containers() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "i"}, {"name": "b", "image": "i"}, {"name": "c", "image": "i"}]},
            "status": {"phase": "Running", "startTime": "2026-01-01T00:00:00Z", "containerStatuses": [
                {"name": "a", "image": "i", "imageID": "", "ready": true, "restartCount": 2, "containerID": "wasm://u/a/2", "state": {"running": {"startedAt": "2026-01-01T00:00:01Z"}}},
                {"name": "b", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": "2026-01-01T00:00:01Z", "finishedAt": "2026-01-01T00:00:02Z"}}}]}
        }))
        .unwrap();
        let mut s = PodState::from_pod(&pod, "127.0.0.1");
        assert_eq!(s.start_time, "2026-01-01T00:00:00Z");
        assert_eq!(s.main[0].restarts, 3);
        let interrupted = s.main[0].last.clone().unwrap();
        assert_eq!((interrupted.exit_code, interrupted.reason.as_str(), interrupted.container_id.as_str()), (255, "Unknown", "wasm://u/a/2"));
        assert_eq!(s.main[1].terminated().map(|t| t.reason.as_str()), Some("Completed"));
        assert_eq!(s.main[2].state, State::Waiting { reason: "ContainerCreating".into(), message: None });
        let v = s.to_json();
        assert_eq!(v["conditions"][1]["status"], "True", "no init containers: initialized");
        assert_eq!(v["conditions"][3]["status"], "False");
        assert_eq!(v["containerStatuses"][2]["state"]["waiting"]["reason"], "ContainerCreating");
        assert_eq!(run_number(&run_id("u-1", "c", 12)), Some(12));
        assert_eq!(run_number("containerd://abc"), None);
        assert!(restarts("Always", 0) && restarts("OnFailure", 1) && !restarts("OnFailure", 0) && !restarts("Never", 1));
    }
}
