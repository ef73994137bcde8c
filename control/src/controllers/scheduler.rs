//! The scheduler: binds each pod that names no node (and wants `default-scheduler`) to a
//! node, through `pods/binding`, as upstream's does.
//!
//! Filters: node Ready and schedulable, `nodeSelector` and required node affinity,
//! NoSchedule/NoExecute taints, cpu/memory requests and pod count against allocatable
//! (bound and just-assumed pods counted), host ports, required pod affinity and
//! anti-affinity over any topology key. Scores: least allocated, spreading pods of one
//! owner, preferred node and pod (anti-)affinity. A pod that fits nowhere gets
//! `PodScheduled=False` and a `FailedScheduling` event with upstream's reason counts, and is
//! tried again when a node or a pod changes.
//!
//! Everything comes from the manager's watch caches plus the scheduler's own record of
//! where pods are bound (updated from the pod watch and at each bind, so a pod bound a
//! moment ago counts before the cache shows it). Like upstream, a pass stops looking once
//! it has found enough feasible nodes in a large cluster.

use super::daemonset::tolerates;
use super::events::{self, Type};
use super::manager::{selector_matches, Ctx};
use super::runner::{Action, Error, Key};
use crate::quantity;
use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Pods that fit nowhere are looked at again at least this often.
const UNSCHEDULABLE_RETRY: Duration = Duration::from_secs(15);
/// Bindings in flight at once.
const BINDS_IN_FLIGHT: usize = 32;
/// A failed binding (not a conflict) is tried again after this long.
const BIND_RETRY: Duration = Duration::from_secs(1);



/// Requested resources: millicores, bytes, pods.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Resources {
    pub cpu: u64,
    pub memory: u64,
    pub pods: u64,
}

/// A pod as the scheduler remembers it once bound.
#[derive(Clone, Debug)]
struct Placed {
    node: String,
    requests: Resources,
    host_ports: Vec<(String, i32)>,
    namespace: String,
    labels: BTreeMap<String, String>,
    owner: Option<String>,
    /// Its required anti-affinity terms: they keep matching pods away from it too.
    anti: Vec<PodAffinityTerm>,
}

#[derive(Default)]
struct Record {
    /// By pod uid.
    placed: HashMap<String, Placed>,
    used: HashMap<String, Resources>,
    /// Pods per (node, owner uid), for spreading.
    owned: HashMap<(String, String), usize>,
    /// Placed pods with required anti-affinity (each pass must then look at placed pods).
    with_anti: usize,
    unschedulable: HashSet<Key>,
    /// Where the next pass starts looking, so equal nodes take turns.
    offset: usize,
}

pub struct Scheduler {
    record: Mutex<Record>,
    binds: Arc<tokio::sync::Semaphore>,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self { record: Mutex::default(), binds: Arc::new(tokio::sync::Semaphore::new(BINDS_IN_FLIGHT)) }
    }
}

impl Record {
    fn add(&mut self, uid: String, p: Placed) {
        self.remove(&uid);
        let u = self.used.entry(p.node.clone()).or_default();
        u.cpu += p.requests.cpu;
        u.memory += p.requests.memory;
        u.pods += 1;
        if let Some(o) = &p.owner {
            *self.owned.entry((p.node.clone(), o.clone())).or_default() += 1;
        }
        self.with_anti += usize::from(!p.anti.is_empty());
        self.placed.insert(uid, p);
    }

    fn remove(&mut self, uid: &str) -> bool {
        let Some(p) = self.placed.remove(uid) else { return false };
        self.with_anti -= usize::from(!p.anti.is_empty());
        if let Some(u) = self.used.get_mut(&p.node) {
            u.cpu = u.cpu.saturating_sub(p.requests.cpu);
            u.memory = u.memory.saturating_sub(p.requests.memory);
            u.pods = u.pods.saturating_sub(1);
        }
        if let Some(o) = &p.owner {
            if let Some(n) = self.owned.get_mut(&(p.node.clone(), o.clone())) {
                *n = n.saturating_sub(1);
            }
        }
        true
    }
}

fn wants_scheduling(p: &Pod) -> bool {
    let spec = p.spec.as_ref();
    spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
        && spec.and_then(|s| s.scheduler_name.as_deref()).is_none_or(|s| s.is_empty() || s == "default-scheduler")
        && p.metadata.deletion_timestamp.is_none()
}

fn finished(p: &Pod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

impl Scheduler {
    /// A pod changed (or, with `deleted`, went): keeps the record of bound pods and queues
    /// the pods this may concern.
    pub fn observe_pod(&self, ctx: &Ctx, pod: &Pod, deleted: bool) {
        let key = (pod.metadata.namespace.clone().unwrap_or_default(), pod.metadata.name.clone().unwrap_or_default());
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        let freed = match node {
            Some(node) if !deleted && !finished(pod) => {
                r.unschedulable.remove(&key);
                r.add(uid, placed(pod, node));
                false
            }
            _ => r.remove(&uid),
        };
        if deleted {
            r.unschedulable.remove(&key);
        }
        let wake: Vec<Key> = if freed { r.unschedulable.iter().cloned().collect() } else { Vec::new() };
        drop(r);
        if !deleted && wants_scheduling(pod) {
            ctx.sched_queue.add(key);
        }
        for k in wake {
            ctx.sched_queue.add(k);
        }
    }

    /// A node changed: pods that fit nowhere may fit now.
    pub fn observe_node(&self, ctx: &Ctx) {
        let wake: Vec<Key> = self.record.lock().unwrap_or_else(|e| e.into_inner()).unschedulable.iter().cloned().collect();
        for k in wake {
            ctx.sched_queue.add(k);
        }
    }
}

fn placed(pod: &Pod, node: String) -> Placed {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_ports = spec.containers.iter().flat_map(|c| c.ports.iter().flatten()).filter_map(|p| p.host_port.filter(|h| *h > 0).map(|h| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), h))).collect();
    Placed {
        node,
        requests: requests_of(pod),
        host_ports,
        namespace: pod.metadata.namespace.clone().unwrap_or_default(),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        owner: pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone()),
        anti: spec.affinity.and_then(|a| a.pod_anti_affinity).and_then(|a| a.required_during_scheduling_ignored_during_execution).unwrap_or_default(),
    }
}

/// What a pod asks for: the sum over its containers, or the largest init container if
/// that is more (upstream's effective request). Limits stand in for missing requests.
pub fn requests_of(pod: &Pod) -> Resources {
    let Some(spec) = pod.spec.as_ref() else { return Resources { pods: 1, ..Default::default() } };
    let of = |c: &k8s_openapi::api::core::v1::Container, what: &str| -> f64 {
        let r = c.resources.as_ref();
        r.and_then(|r| r.requests.as_ref()).and_then(|m| m.get(what)).or_else(|| r.and_then(|r| r.limits.as_ref()).and_then(|m| m.get(what))).and_then(|q| quantity::parse(&q.0)).unwrap_or(0.0)
    };
    let sum = |what: &str| spec.containers.iter().map(|c| of(c, what)).sum::<f64>();
    let init = |what: &str| spec.init_containers.iter().flatten().map(|c| of(c, what)).fold(0.0, f64::max);
    Resources { cpu: (sum("cpu").max(init("cpu")) * 1000.0).ceil() as u64, memory: sum("memory").max(init("memory")).ceil() as u64, pods: 1 }
}

fn allocatable(node: &Node) -> Resources {
    let a = node.status.as_ref().and_then(|s| s.allocatable.as_ref());
    let get = |k: &str| a.and_then(|m| m.get(k)).and_then(|q| quantity::parse(&q.0));
    Resources { cpu: get("cpu").map_or(u64::MAX, |c| (c * 1000.0) as u64), memory: get("memory").map_or(u64::MAX, |m| m as u64), pods: get("pods").map_or(110, |p| p as u64) }
}

/// A node's labels, with `kubernetes.io/hostname` as upstream's nodes always have it
/// (borrowed when it is there: this runs for every node a pod is tried on).
pub fn node_labels(node: &Node) -> std::borrow::Cow<'_, BTreeMap<String, String>> {
    match node.metadata.labels.as_ref() {
        Some(l) if l.contains_key("kubernetes.io/hostname") => std::borrow::Cow::Borrowed(l),
        other => {
            let mut l = other.cloned().unwrap_or_default();
            l.insert("kubernetes.io/hostname".into(), node.metadata.name.clone().unwrap_or_default());
            std::borrow::Cow::Owned(l)
        }
    }
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => value.and_then(|v| num(v)).zip(values.first().and_then(|v| num(v))).is_some_and(|(a, b)| a > b),
        "Lt" => value.and_then(|v| num(v)).zip(values.first().and_then(|v| num(v))).is_some_and(|(a, b)| a < b),
        _ => false,
    }
}

pub fn term_matches(term: &NodeSelectorTerm, node: &Node, labels: &BTreeMap<String, String>) -> bool {
    let exprs = term.match_expressions.iter().flatten().all(|r| requirement_matches(r, labels.get(&r.key)));
    let name = node.metadata.name.clone();
    let fields = term.match_fields.iter().flatten().all(|r| r.key == "metadata.name" && requirement_matches(r, name.as_ref()));
    let empty = term.match_expressions.as_ref().is_none_or(Vec::is_empty) && term.match_fields.as_ref().is_none_or(Vec::is_empty);
    !empty && exprs && fields
}

/// One reason a node cannot take the pod, in upstream's words.
/// The pods already placed and the labels of their nodes (only filled in when a pass
/// needs them: for pod affinity and anti-affinity).
struct Others<'a> {
    placed: &'a [&'a Placed],
    node_label: &'a HashMap<String, BTreeMap<String, String>>,
}

fn filter(pod: &Pod, req: &Resources, node: &Node, labels: &BTreeMap<String, String>, used: Resources, ports_in_use: &HashSet<(String, i32)>, others: &Others<'_>) -> Result<(), Vec<String>> {
    let (placed, node_label) = (others.placed, others.node_label);
    static EMPTY: std::sync::OnceLock<k8s_openapi::api::core::v1::PodSpec> = std::sync::OnceLock::new();
    let spec = pod.spec.as_ref().unwrap_or_else(|| EMPTY.get_or_init(Default::default));
    let tolerations: &[Toleration] = spec.tolerations.as_deref().unwrap_or_default();
    let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready {
        return Err(vec!["node(s) were not ready".into()]);
    }
    let cordoned = node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false);
    let cordon_taint = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), value: None, time_added: None };
    if cordoned && !tolerates(tolerations, &cordon_taint) {
        return Err(vec!["node(s) were unschedulable".into()]);
    }
    let selector_ok = spec.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = spec.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, node, labels)));
    if !selector_ok || !affinity_ok {
        return Err(vec!["node(s) didn't match Pod's node affinity/selector".into()]);
    }
    let taints = node.spec.as_ref().and_then(|s| s.taints.as_deref()).unwrap_or_default();
    if let Some(t) = taints.iter().find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(tolerations, t)) {
        return Err(vec![format!("node(s) had untolerated taint {{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default())]);
    }
    let alloc = allocatable(node);
    let mut short = Vec::new();
    if used.pods + 1 > alloc.pods {
        short.push("Too many pods".to_owned());
    }
    if req.cpu > 0 && used.cpu + req.cpu > alloc.cpu {
        short.push("Insufficient cpu".to_owned());
    }
    if req.memory > 0 && used.memory + req.memory > alloc.memory {
        short.push("Insufficient memory".to_owned());
    }
    if !short.is_empty() {
        return Err(short);
    }
    let wanted_ports = spec.containers.iter().flat_map(|c| c.ports.iter().flatten()).filter_map(|p| p.host_port.filter(|h| *h > 0).map(|h| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), h)));
    if wanted_ports.into_iter().any(|p| ports_in_use.contains(&p)) {
        return Err(vec!["node(s) didn't have free ports for the requested pod ports".into()]);
    }
    let affinity = spec.affinity.as_ref();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    for term in affinity.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten() {
        if term_co_located(term, &ns, labels, placed, node_label) {
            return Err(vec!["node(s) didn't match pod anti-affinity rules".into()]);
        }
    }
    // Symmetry: a placed pod whose anti-affinity matches this pod keeps it out of its domain.
    let own_labels = pod.metadata.labels.clone().unwrap_or_default();
    for other in placed.iter().filter(|p| !p.anti.is_empty()) {
        for term in &other.anti {
            let same_domain = labels.get(&term.topology_key).is_some_and(|d| node_label.get(&other.node).and_then(|l| l.get(&term.topology_key)) == Some(d));
            if same_domain && pod_matches_term(term, &other.namespace, &ns, &own_labels) {
                return Err(vec!["node(s) didn't satisfy existing pods anti-affinity rules".into()]);
            }
        }
    }
    for term in affinity.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten() {
        let anywhere = placed.iter().any(|p| pod_matches_term(term, &ns, &p.namespace, &p.labels));
        // The first of a group that wants to be together may go anywhere.
        let first = !anywhere && pod_matches_term(term, &ns, &ns, pod.metadata.labels.as_ref().unwrap_or(&BTreeMap::new()));
        if !first && !term_co_located(term, &ns, labels, placed, node_label) {
            return Err(vec!["node(s) didn't match pod affinity rules".into()]);
        }
    }
    Ok(())
}

fn pod_matches_term(term: &PodAffinityTerm, own_ns: &str, pod_ns: &str, labels: &BTreeMap<String, String>) -> bool {
    let namespaces = term.namespaces.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| vec![own_ns.to_owned()]);
    namespaces.iter().any(|n| n == pod_ns) && term.label_selector.as_ref().is_some_and(|s| selector_matches(s, Some(labels)))
}

/// Whether a pod matching `term` runs in the same topology domain as the node with `labels`.
fn term_co_located(term: &PodAffinityTerm, own_ns: &str, labels: &BTreeMap<String, String>, placed: &[&Placed], node_label: &HashMap<String, BTreeMap<String, String>>) -> bool {
    let Some(domain) = labels.get(&term.topology_key) else { return false };
    placed.iter().any(|p| pod_matches_term(term, own_ns, &p.namespace, &p.labels) && node_label.get(&p.node).and_then(|l| l.get(&term.topology_key)) == Some(domain))
}

/// Higher is better.
fn score(pod: &Pod, req: &Resources, node: &Node, labels: &BTreeMap<String, String>, used: Resources, owned_here: usize, others: &Others<'_>) -> i64 {
    let (placed, node_label) = (others.placed, others.node_label);
    let alloc = allocatable(node);
    let free = |cap: u64, use_: u64| if cap == u64::MAX || cap == 0 { 1.0 } else { cap.saturating_sub(use_) as f64 / cap as f64 };
    let least_allocated = ((free(alloc.cpu, used.cpu + req.cpu) + free(alloc.memory, used.memory + req.memory) + free(alloc.pods, used.pods + 1)) / 3.0 * 100.0) as i64;
    let spread = 100 / (1 + owned_here as i64);
    let affinity = pod.spec.as_ref().and_then(|s| s.affinity.as_ref());
    let node_pref: i64 = affinity
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| n.preferred_during_scheduling_ignored_during_execution.as_ref())
        .into_iter()
        .flatten()
        .filter(|p| term_matches(&p.preference, node, labels))
        .map(|p| i64::from(p.weight))
        .sum();
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let pod_pref: i64 = affinity.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten().filter(|w| term_co_located(&w.pod_affinity_term, &ns, labels, placed, node_label)).map(|w| i64::from(w.weight)).sum::<i64>()
        - affinity.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| a.preferred_during_scheduling_ignored_during_execution.as_ref()).into_iter().flatten().filter(|w| term_co_located(&w.pod_affinity_term, &ns, labels, placed, node_label)).map(|w| i64::from(w.weight)).sum::<i64>();
    least_allocated + spread + node_pref + pod_pref
}

/// How many feasible nodes a pass looks for before it stops (upstream's adaptive
/// percentageOfNodesToScore, at least 100 nodes).
fn enough(nodes: usize) -> usize {
    let pct = 50usize.saturating_sub(nodes / 125).max(5);
    (nodes * pct / 100).max(100).min(nodes)
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pod) = ctx.pods.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    if !wants_scheduling(&pod) || ctx.scheduler.record.lock().unwrap_or_else(|e| e.into_inner()).placed.contains_key(&uid) {
        return Ok(Action::AwaitChange);
    }
    let req = requests_of(&pod);
    let nodes = ctx.nodes.state();
    let needs_pods = pod.spec.as_ref().and_then(|s| s.affinity.as_ref()).is_some_and(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
        || ctx.scheduler.record.lock().unwrap_or_else(|e| e.into_inner()).with_anti > 0;
    let node_label: HashMap<String, BTreeMap<String, String>> = if needs_pods { nodes.iter().map(|n| (n.metadata.name.clone().unwrap_or_default(), node_labels(n).into_owned())).collect() } else { HashMap::new() };

    let chosen = {
        let mut r = ctx.scheduler.record.lock().unwrap_or_else(|e| e.into_inner());
        let others: Vec<&Placed> = if needs_pods { r.placed.values().collect() } else { Vec::new() };
        let owner = pod.metadata.owner_references.iter().flatten().find(|o| o.controller == Some(true)).map(|o| o.uid.clone());
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        let mut best: Option<(i64, &Node)> = None;
        let mut feasible = 0;
        let want = enough(nodes.len());
        let start = r.offset % nodes.len().max(1);
        for i in 0..nodes.len() {
            let node = &nodes[(start + i) % nodes.len()];
            let name = node.metadata.name.clone().unwrap_or_default();
            let labels = node_labels(node);
            let used = r.used.get(&name).copied().unwrap_or_default();
            let ports: HashSet<(String, i32)> = if pod.spec.as_ref().is_some_and(|s| s.containers.iter().flat_map(|c| c.ports.iter().flatten()).any(|p| p.host_port.is_some_and(|h| h > 0))) {
                r.placed.values().filter(|p| p.node == name).flat_map(|p| p.host_ports.iter().cloned()).collect()
            } else {
                HashSet::new()
            };
            match filter(&pod, &req, node, &labels, used, &ports, &Others { placed: &others, node_label: &node_label }) {
                Ok(()) => {
                    let owned_here = owner.as_ref().and_then(|o| r.owned.get(&(name.clone(), o.clone()))).copied().unwrap_or(0);
                    let s = score(&pod, &req, node, &labels, used, owned_here, &Others { placed: &others, node_label: &node_label });
                    if best.is_none_or(|(b, _)| s > b) {
                        best = Some((s, node));
                    }
                    feasible += 1;
                    if feasible >= want {
                        break;
                    }
                }
                Err(why) => {
                    for w in why {
                        *reasons.entry(w).or_default() += 1;
                    }
                }
            }
        }
        r.offset = r.offset.wrapping_add(1);
        match best {
            Some((_, node)) => {
                let name = node.metadata.name.clone().unwrap_or_default();
                // Assume it bound now, so the next pass counts it.
                r.add(uid.clone(), placed(&pod, name.clone()));
                r.unschedulable.remove(&key);
                Ok(name)
            }
            None => {
                r.unschedulable.insert(key.clone());
                // Sorted as upstream sorts them: by the whole "<count> <reason>" text.
                let mut counts: Vec<String> = reasons.iter().map(|(why, n)| format!("{n} {why}")).collect();
                counts.sort();
                Err(format!("0/{} nodes are available: {}.", nodes.len(), if counts.is_empty() { "no nodes registered".to_owned() } else { counts.join(", ") }))
            }
        }
    };

    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);
    match chosen {
        Ok(node) => {
            // The pod is assumed on its node; binding goes on in the background (as
            // upstream's binding cycle does) so the next pod need not wait for the API.
            let permit = ctx.scheduler.binds.clone().acquire_owned().await;
            let ctx = ctx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": key.1, "namespace": key.0}, "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
                let bound: Result<serde_json::Value, _> = api.create_subresource("binding", &key.1, &PostParams::default(), &binding).await;
                match bound {
                    Ok(_) => {
                        tracing::debug!(pod = %format!("{}/{}", key.0, key.1), %node, "scheduled");
                        let message = format!("Successfully assigned {}/{} to {node}", key.0, key.1);
                        events::record(&ctx.client, "default-scheduler", pod.as_ref(), Type::Normal, "Scheduled", &message).await;
                    }
                    Err(e) => {
                        ctx.scheduler.record.lock().unwrap_or_else(|e| e.into_inner()).remove(&uid);
                        // Gone or bound by someone else: the watch tells the rest. Otherwise
                        // the pod is tried again.
                        if !matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) {
                            tracing::warn!(pod = %format!("{}/{}", key.0, key.1), error = %e, "binding failed; retrying");
                            ctx.sched_queue.add_after(key, BIND_RETRY);
                        }
                    }
                }
            });
            Ok(Action::AwaitChange)
        }
        Err(message) => {
            let already = pod.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "PodScheduled" && c.message.as_deref() == Some(message.as_str())));
            if !already {
                tracing::info!(pod = %format!("{}/{}", key.0, key.1), message, "unschedulable");
                let mut conditions: Vec<serde_json::Value> = pod.status.iter().flat_map(|s| s.conditions.iter().flatten()).filter(|c| c.type_ != "PodScheduled").filter_map(|c| serde_json::to_value(c).ok()).collect();
                conditions.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message,
                    "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
                api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": {"phase": "Pending", "conditions": conditions}}))).await?;
                events::record(&ctx.client, "default-scheduler", pod.as_ref(), Type::Warning, "FailedScheduling", &message).await;
            }
            Ok(Action::RequeueAfter(UNSCHEDULABLE_RETRY))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str, memory: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}, "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": memory, "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}});
        json_patch::merge(&mut n, &extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(spec: serde_json::Value) -> Pod {
        let mut p = json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "a"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        json_patch::merge(&mut p, &json!({"spec": spec}));
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn filters_give_upstreams_reasons() {
        let none = HashMap::new();
        let check = |p: &Pod, n: &Node| filter(p, &requests_of(p), n, &node_labels(n), Resources::default(), &HashSet::new(), &Others { placed: &[], node_label: &none });
        let big = pod(json!({"containers": [{"name": "c", "image": "i", "resources": {"requests": {"cpu": "4", "memory": "1Gi"}}}]}));
        assert_eq!(requests_of(&big), Resources { cpu: 4000, memory: 1 << 30, pods: 1 });
        assert_eq!(check(&big, &node("n", "2", "8Gi", json!({}))), Err(vec!["Insufficient cpu".to_owned()]));
        assert_eq!(check(&big, &node("n", "8", "8Gi", json!({}))), Ok(()));
        let tainted = node("n", "8", "8Gi", json!({"spec": {"taints": [{"key": "gpu", "value": "yes", "effect": "NoSchedule"}]}}));
        assert_eq!(check(&big, &tainted), Err(vec!["node(s) had untolerated taint {gpu: yes}".to_owned()]));
        let tolerant = pod(json!({"tolerations": [{"key": "gpu", "operator": "Exists"}]}));
        assert_eq!(check(&tolerant, &tainted), Ok(()));
        let picky = pod(json!({"nodeSelector": {"disk": "ssd"}}));
        assert_eq!(check(&picky, &node("n", "8", "8Gi", json!({}))), Err(vec!["node(s) didn't match Pod's node affinity/selector".to_owned()]));
        let affine = pod(json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}]}}}}));
        assert!(check(&affine, &node("n", "8", "8Gi", json!({"metadata": {"labels": {"zone": "b"}}}))).is_err());
        assert_eq!(check(&affine, &node("n", "8", "8Gi", json!({"metadata": {"labels": {"zone": "a"}}}))), Ok(()));
        let cordoned = node("n", "8", "8Gi", json!({"spec": {"unschedulable": true}}));
        assert_eq!(check(&tolerant, &cordoned), Err(vec!["node(s) were unschedulable".to_owned()]));
        assert_eq!(enough(5000), 500);
        assert_eq!(enough(50), 50);
    }

    #[test]
    fn anti_affinity_keeps_matching_pods_apart() {
        let p = pod(json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": "kubernetes.io/hostname"}]}}}));
        let (n1, n2) = (node("n1", "8", "8Gi", json!({})), node("n2", "8", "8Gi", json!({})));
        let other = placed(&p, "n1".into());
        let labels: HashMap<String, BTreeMap<String, String>> = [&n1, &n2].iter().map(|n| (n.metadata.name.clone().unwrap(), node_labels(n).into_owned())).collect();
        let placed = [&other];
        let others = Others { placed: &placed, node_label: &labels };
        let check = |n: &Node| filter(&p, &requests_of(&p), n, &node_labels(n), Resources::default(), &HashSet::new(), &others);
        assert_eq!(check(&n1), Err(vec!["node(s) didn't match pod anti-affinity rules".to_owned()]));
        assert_eq!(check(&n2), Ok(()));
        // A plain pod with the matching label stays away from the pod that wants no company.
        let plain = pod(json!({}));
        let check_plain = |n: &Node| filter(&plain, &requests_of(&plain), n, &node_labels(n), Resources::default(), &HashSet::new(), &others);
        assert_eq!(check_plain(&n1), Err(vec!["node(s) didn't satisfy existing pods anti-affinity rules".to_owned()]));
        assert_eq!(check_plain(&n2), Ok(()));
    }
}
