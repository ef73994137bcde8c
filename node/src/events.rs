//! Events the node records about its pods, as kubelet's recorder writes them: `kubectl
//! describe pod`, `kubectl events` and `kubectl get events` show them. The reasons and
//! messages are kubelet 1.32's (`pkg/kubelet/events`, `kuberuntime`, `images`, `prober`),
//! built by the functions below so the wording lives in one place.
//!
//! Like kubelet's event correlator, a repeat of one reason and message about one container
//! bumps `count` and `lastTimestamp` on the Event already posted instead of posting another.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// An Event's `type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// Something that went as it should (`Pulled`, `Started`, `Killing`, ...).
    Normal,
    /// Something that went wrong (`Failed`, `BackOff`, `Unhealthy`, ...).
    Warning,
}

impl Type {
    fn as_str(self) -> &'static str {
        match self {
            Type::Normal => "Normal",
            Type::Warning => "Warning",
        }
    }
}

// Kubelet's reasons (pkg/kubelet/events/event.go).
pub const PULLING: &str = "Pulling";
pub const PULLED: &str = "Pulled";
/// A failed pull, and (with an `Error: ...` message) a container that could not be created or started.
pub const FAILED: &str = "Failed";
pub const NEVER_PULL: &str = "ErrImageNeverPull";
/// Both the image pull back-off (Normal) and the crash-loop back-off (Warning).
pub const BACK_OFF: &str = "BackOff";
pub const CREATED: &str = "Created";
pub const STARTED: &str = "Started";
pub const KILLING: &str = "Killing";
pub const UNHEALTHY: &str = "Unhealthy";
/// Upstream this is node-problem-detector's reason on the Node for a kernel OOM kill; a
/// wasm instance that outgrows its limit is killed by the node agent itself, so the
/// Event is about the pod, where people look for why their container died.
pub const OOM_KILLING: &str = "OOMKilling";

pub fn pulling(image: &str) -> String {
    format!("Pulling image \"{image}\"")
}

/// A pull that went to the registry. There is no pull queue to wait in, so the pull time
/// and the time including waiting are one measurement; `size` is the bytes of the
/// image's blobs.
pub fn pulled(image: &str, took: Duration, size: u64) -> String {
    let took = go_duration(took);
    format!("Successfully pulled image \"{image}\" in {took} ({took} including waiting). Image size: {size} bytes.")
}

/// An image the cache had, so nothing was pulled (`IfNotPresent`, `Never`, and restarts).
pub fn already_present(image: &str) -> String {
    format!("Container image \"{image}\" already present on machine")
}

pub fn failed_to_pull(image: &str, error: &str) -> String {
    format!("Failed to pull image \"{image}\": {error}")
}

pub fn back_off_pulling(image: &str) -> String {
    format!("Back-off pulling image \"{image}\"")
}

/// The `Failed` Event of a container that could not be created or started: `what` is the
/// waiting reason (`ErrImagePull`, `ImagePullBackOff`) or the error's message.
pub fn error(what: &str) -> String {
    format!("Error: {what}")
}

pub fn created(container: &str) -> String {
    format!("Created container: {container}")
}

pub fn started(container: &str) -> String {
    format!("Started container {container}")
}

/// A container stopped because its pod is going (deleted, or past its deadline).
pub fn stopping(container: &str) -> String {
    format!("Stopping container {container}")
}

/// A container killed by a failed `liveness` or `startup` probe; it is restarted unless
/// the pod's restartPolicy is `Never`.
pub fn probe_kill(container: &str, probe: &str, restarted: bool) -> String {
    let then = if restarted { ", will be restarted" } else { "" };
    format!("Container {container} failed {probe} probe{then}")
}

/// kubelet's `format.Pod`: `name_namespace(uid)`.
pub fn back_off_restarting(container: &str, pod: &str, namespace: &str, uid: &str) -> String {
    format!("Back-off restarting failed container {container} in pod {pod}_{namespace}({uid})")
}

pub fn oom_killing(container: &str, limit: Option<u64>) -> String {
    match limit {
        Some(bytes) => format!("Container {container} was killed: its wasm instance tried to grow its memory past limits.memory ({bytes} bytes)"),
        None => format!("Container {container} was killed: its wasm instance tried to grow its memory past the largest memory the node gives an instance"),
    }
}

/// A duration as Go prints a `time.Duration` truncated to milliseconds, as kubelet's
/// messages show them: `0s`, `250ms`, `1.234s`, `1m2.5s`, `1h0m0s`.
pub fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".into();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (hours, minutes, seconds, millis) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&seconds.to_string());
    if millis > 0 {
        out.push('.');
        out.push_str(format!("{millis:03}").trim_end_matches('0'));
    }
    out.push('s');
    out
}

/// Records a Warning Event about `container` of `pod` (see [`record`]).
pub fn warn(client: &kube::Client, node: &str, pod: &Arc<Pod>, container: &str, reason: &'static str, message: String) {
    record(client, node, pod, container, Type::Warning, reason, message);
}

/// Records a Normal Event about `container` of `pod` (see [`record`]).
pub fn normal(client: &kube::Client, node: &str, pod: &Arc<Pod>, container: &str, reason: &'static str, message: String) {
    record(client, node, pod, container, Type::Normal, reason, message);
}

/// Records an Event about `container` of `pod` (`""`: the pod itself) as kubelet on
/// `node` would, in the background; a failure is logged, never returned (an Event is not
/// worth holding a container up for). The time and the Event's name are taken now, so
/// Events list in the order they happened even though they are written concurrently.
pub fn record(client: &kube::Client, node: &str, pod: &Arc<Pod>, container: &str, kind: Type, reason: &'static str, message: String) {
    let now = crate::status::now();
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let key = format!("{node}\n{uid}\n{container}\n{}\n{reason}\n{message}", kind.as_str());
    let (name, repeat) = correlate(key, pod.metadata.name.as_deref().unwrap_or_default());
    let body = event(pod, node, &name, container, kind, reason, &message, &now);
    let namespace = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let client = client.clone();
    tokio::spawn(async move {
        if let Err(e) = post(&client, &namespace, &name, body, repeat, &now).await {
            tracing::debug!(reason, event = %name, error = %e, "recording an event failed");
        }
    });
}

/// Kubelet's correlator remembers this many Events to count repeats on.
const REMEMBERED: usize = 4096;

/// The Events this process has posted, by what makes a repeat (node, pod, container, type,
/// reason, message), oldest first for eviction. Kept per process as kubelet keeps it per
/// recorder: after a restart repeats start a new Event, as kubelet's do.
struct Correlator {
    names: HashMap<String, String>,
    order: VecDeque<String>,
}

static CORRELATOR: Mutex<Option<Correlator>> = Mutex::new(None);

/// The name of the Event `key` counts on and whether it was posted before. A new Event is
/// named as kubelet names them, `<pod>.<unix nanoseconds in hex>`, which sorts by time.
fn correlate(key: String, pod: &str) -> (String, bool) {
    // A short critical section with no await: std's Mutex is right.
    let mut guard = CORRELATOR.lock().unwrap_or_else(|e| e.into_inner());
    let c = guard.get_or_insert_with(|| Correlator { names: HashMap::new(), order: VecDeque::new() });
    if let Some(name) = c.names.get(&key) {
        return (name.clone(), true);
    }
    let name = format!("{pod}.{:x}", unique_nanos());
    if c.order.len() >= REMEMBERED {
        if let Some(oldest) = c.order.pop_front() {
            c.names.remove(&oldest);
        }
    }
    c.order.push_back(key.clone());
    c.names.insert(key, name.clone());
    (name, false)
}

/// The Unix time in nanoseconds, strictly increasing across calls so two Events recorded in
/// one nanosecond still get two names.
fn unique_nanos() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let previous = LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1))).unwrap_or(0);
    now.max(previous + 1)
}

/// Where in the pod `container` is declared, for the Event's `involvedObject.fieldPath`.
fn field_path(pod: &Pod, container: &str) -> Option<String> {
    if container.is_empty() {
        return None;
    }
    let spec = pod.spec.as_ref();
    let init = spec.and_then(|s| s.init_containers.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.name == container));
    let main = spec.is_some_and(|s| s.containers.iter().any(|c| c.name == container));
    Some(if init && !main { format!("spec.initContainers{{{container}}}") } else { format!("spec.containers{{{container}}}") })
}

/// The Event (`count` 1) as kubelet would post it about `container`.
#[allow(clippy::too_many_arguments)]
fn event(pod: &Pod, node: &str, name: &str, container: &str, kind: Type, reason: &str, message: &str, now: &str) -> serde_json::Value {
    let meta = &pod.metadata;
    let mut involved = json!({
        "apiVersion": "v1", "kind": "Pod", "name": meta.name, "namespace": meta.namespace.as_deref().unwrap_or("default"),
        "uid": meta.uid, "resourceVersion": meta.resource_version,
    });
    if let Some(path) = field_path(pod, container) {
        involved["fieldPath"] = json!(path);
    }
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": name, "namespace": meta.namespace.as_deref().unwrap_or("default")},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "type": kind.as_str(),
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// Attempts at counting a repeat while other repeats of it are counted at the same time.
const ATTEMPTS: usize = 5;

/// Creates the Event, or counts a repeat on the one already there. The count is written
/// with the resourceVersion it was read at, so two repeats counted at once both count.
async fn post(client: &kube::Client, namespace: &str, name: &str, body: serde_json::Value, repeat: bool, now: &str) -> Result<(), kube::Error> {
    let event: Event = serde_json::from_value(body).map_err(kube::Error::SerdeError)?;
    let api: Api<Event> = Api::namespaced(client.clone(), namespace);
    // A repeat's first sighting may still be on its way, or the Event may have expired.
    let mut create = !repeat;
    for _ in 0..ATTEMPTS {
        if create {
            match api.create(&PostParams::default(), &event).await {
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                other => return other.map(drop),
            }
        }
        let Some(existing) = api.get_opt(name).await? else {
            create = true;
            continue;
        };
        let count = existing.count.unwrap_or(1) + 1;
        let patch = json!({"metadata": {"resourceVersion": existing.metadata.resource_version}, "count": count, "lastTimestamp": now});
        match api.patch(name, &PatchParams::default(), &Patch::Merge(patch)).await {
            Err(kube::Error::Api(e)) if e.code == 409 => create = false,
            Err(kube::Error::Api(e)) if e.code == 404 => create = true,
            other => return other.map(drop),
        }
    }
    tracing::debug!(event = %name, "a repeat was not counted: the Event kept changing");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7"},
            "spec": {"initContainers": [{"name": "setup"}], "containers": [{"name": "web"}]},
        }))
        .unwrap()
    }

    #[test]
    fn an_event_names_its_pod_container_and_node() {
        let e: Event = serde_json::from_value(event(&pod(), "node-a", "web-1.abc", "web", Type::Warning, "ServerExited", "why", "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!((e.type_.as_deref(), e.reason.as_deref(), e.message.as_deref(), e.count), (Some("Warning"), Some("ServerExited"), Some("why"), Some(1)));
        let o = &e.involved_object;
        assert_eq!((o.kind.as_deref(), o.name.as_deref(), o.namespace.as_deref(), o.uid.as_deref()), (Some("Pod"), Some("web-1"), Some("shop"), Some("u1")));
        assert_eq!(o.field_path.as_deref(), Some("spec.containers{web}"));
        assert_eq!(e.source.as_ref().and_then(|s| s.host.as_deref()), Some("node-a"));
        assert_eq!((e.metadata.name.as_deref(), e.metadata.namespace.as_deref()), (Some("web-1.abc"), Some("shop")));
        assert_eq!(e.first_timestamp, e.last_timestamp);
        let e: Event = serde_json::from_value(event(&pod(), "node-a", "n", "setup", Type::Normal, CREATED, "m", "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!((e.type_.as_deref(), e.involved_object.field_path.as_deref()), (Some("Normal"), Some("spec.initContainers{setup}")));
        let e: Event = serde_json::from_value(event(&pod(), "node-a", "n", "", Type::Normal, "X", "m", "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!(e.involved_object.field_path, None, "an Event about the pod itself");
    }

    #[test]
    fn repeats_count_on_one_event_and_new_events_sort_by_time() {
        let key = |message: &str| format!("node-a\nu1\nweb\nWarning\nBackOff\n{message}");
        let (first, repeat) = correlate(key("a"), "web-1");
        assert!(!repeat && first.starts_with("web-1.") && first.len() == "web-1.".len() + 16, "{first}");
        assert_eq!(correlate(key("a"), "web-1"), (first.clone(), true));
        let (second, repeat) = correlate(key("b"), "web-1");
        assert!(!repeat && second > first, "{second} after {first}");
        assert_eq!(correlate(key("a"), "web-1"), (first, true));
    }

    #[test]
    fn messages_read_as_kubelets() {
        assert_eq!(pulling("r/x:v1"), "Pulling image \"r/x:v1\"");
        assert_eq!(
            pulled("r/x:v1", Duration::from_micros(1_234_567), 5678),
            "Successfully pulled image \"r/x:v1\" in 1.234s (1.234s including waiting). Image size: 5678 bytes."
        );
        assert_eq!(already_present("r/x:v1"), "Container image \"r/x:v1\" already present on machine");
        assert_eq!(failed_to_pull("r/x:v1", "pulling r/x:v1: not found: manifest unknown"), "Failed to pull image \"r/x:v1\": pulling r/x:v1: not found: manifest unknown");
        assert_eq!(back_off_pulling("r/x:v1"), "Back-off pulling image \"r/x:v1\"");
        assert_eq!(error("ErrImagePull"), "Error: ErrImagePull");
        assert_eq!(created("web"), "Created container: web");
        assert_eq!(started("web"), "Started container web");
        assert_eq!(stopping("web"), "Stopping container web");
        assert_eq!(probe_kill("web", "liveness", true), "Container web failed liveness probe, will be restarted");
        assert_eq!(probe_kill("web", "startup", false), "Container web failed startup probe");
        assert_eq!(back_off_restarting("web", "web-1", "shop", "u1"), "Back-off restarting failed container web in pod web-1_shop(u1)");
        assert!(oom_killing("web", Some(33554432)).contains("limits.memory (33554432 bytes)"));
    }

    #[test]
    fn durations_print_as_go_prints_them() {
        let ms = Duration::from_millis;
        let cases = [(0, "0s"), (7, "7ms"), (999, "999ms"), (1000, "1s"), (1200, "1.2s"), (1234, "1.234s"), (1050, "1.05s"), (60_000, "1m0s"), (62_500, "1m2.5s"), (3_600_000, "1h0m0s"), (3_723_004, "1h2m3.004s")];
        for (millis, want) in cases {
            assert_eq!(go_duration(ms(millis)), want, "{millis}ms");
        }
        assert_eq!(go_duration(Duration::from_micros(1999)), "1ms", "truncated, as kubelet truncates");
    }
}
