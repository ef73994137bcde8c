//! A first scheduler: binds each pod that names no node to the Ready, schedulable node
//! with the fewest pods that satisfies its `nodeSelector` and tolerates its `NoSchedule`
//! taints. Pods that fit nowhere get `PodScheduled=False, reason Unschedulable` and are
//! retried when anything changes.

use crate::api::handlers::bind_to_node;
use crate::api::request::Address;
use crate::api::resources;
use crate::api::SharedState;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;

/// Unschedulable pods are looked at again this often even when nothing wakes the loop.
const RESYNC: Duration = Duration::from_secs(2);

pub async fn run(state: SharedState, shutdown: crate::Shutdown) {
    let mut shutdown = shutdown;
    let (Some(pods), Some(nodes)) = (resources::find("", "v1", "pods"), resources::find("", "v1", "nodes")) else { return };
    let (pods_prefix, nodes_prefix) = (pods.list_prefix(None), nodes.list_prefix(None));
    // Only a new unbound pod or a changed node can make a pass bind something.
    let relevant = |e: &crate::store::StoreEvent| e.key.starts_with(&nodes_prefix) || (e.key.starts_with(&pods_prefix) && wants_default_scheduler(&e.object));
    loop {
        let Ok(mut watch) = state.store.watch(&pods_prefix, Some(state.store.revision())) else {
            tokio::time::sleep(RESYNC).await;
            continue;
        };
        let mut wanted = true;
        loop {
            if wanted {
                schedule_pending(&state);
            }
            tokio::select! {
                event = watch.live.recv() => {
                    match event {
                        Ok(e) => {
                            wanted = relevant(&e);
                            // Take the whole burst before a pass: one pass binds them all.
                            while let Ok(e) = watch.live.try_recv() {
                                wanted |= relevant(&e);
                            }
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => wanted = true,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    }
                }
                _ = tokio::time::sleep(RESYNC) => wanted = true,
                _ = shutdown.wait() => return,
            }
        }
    }
}

/// One pass: binds every pod waiting for a node that some node can take.
pub fn schedule_pending(state: &SharedState) {
    let (Some(pods_res), Some(nodes_res)) = (resources::find("", "v1", "pods"), resources::find("", "v1", "nodes")) else { return };
    let Ok((pods, _)) = state.store.list(&pods_res.list_prefix(None)) else { return };
    let pending: Vec<&Value> = pods.iter().map(|p| p.as_ref()).filter(|p| wants_default_scheduler(p)).collect();
    if pending.is_empty() {
        return;
    }
    let Ok((nodes, _)) = state.store.list(&nodes_res.list_prefix(None)) else { return };
    let mut load: HashMap<String, usize> = HashMap::new();
    for p in pods.iter() {
        let terminal = matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
        if let Some(n) = p.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty() && !terminal) {
            *load.entry(n.to_owned()).or_default() += 1;
        }
    }
    for pod in pending {
        let ns = pod.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
        let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        let addr = Address { resource: pods_res, namespace: Some(ns.into()), name: Some(name.into()), sub: None };
        let fits: Vec<&Value> = nodes.iter().map(|n| n.as_ref()).filter(|n| node_fits(n, pod, &load)).collect();
        let best = fits.iter().min_by_key(|n| load.get(node_name(n)).copied().unwrap_or(0));
        match best {
            Some(node) => {
                let node = node_name(node).to_owned();
                match bind_to_node(state, &addr, &node) {
                    Ok(()) => {
                        tracing::debug!(pod = %format!("{ns}/{name}"), %node, "scheduled");
                        *load.entry(node).or_default() += 1;
                    }
                    Err(e) => tracing::debug!(pod = %format!("{ns}/{name}"), error = %e, "binding failed; will retry"),
                }
            }
            None => mark_unschedulable(state, &addr, pod, nodes.len()),
        }
    }
}

fn wants_default_scheduler(pod: &Value) -> bool {
    let unbound = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_none_or(str::is_empty);
    let scheduler = pod.pointer("/spec/schedulerName").and_then(Value::as_str).unwrap_or("default-scheduler");
    unbound && scheduler == "default-scheduler" && pod.pointer("/metadata/deletionTimestamp").is_none()
}

fn node_name(node: &Value) -> &str {
    node.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

fn node_fits(node: &Value, pod: &Value, load: &HashMap<String, usize>) -> bool {
    let ready = node.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
    let cordoned = node.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
    let max_pods = node.pointer("/status/allocatable/pods").and_then(Value::as_str).and_then(|p| p.parse::<usize>().ok()).unwrap_or(110);
    let room = load.get(node_name(node)).copied().unwrap_or(0) < max_pods;
    let labels = node.pointer("/metadata/labels");
    let selector_ok = pod.pointer("/spec/nodeSelector").and_then(Value::as_object).is_none_or(|sel| sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)));
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let taints = node.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let tolerated = taints.iter().filter(|t| t["effect"] == "NoSchedule" || t["effect"] == "NoExecute").all(|t| {
        tolerations.iter().any(|tol| {
            let key_ok = tol.get("key").is_none_or(|k| k == "" || *k == t["key"]);
            let exists = tol.get("operator").and_then(Value::as_str) == Some("Exists");
            let value_ok = exists || tol.get("value").unwrap_or(&json!("")) == t.get("value").unwrap_or(&json!(""));
            let effect_ok = tol.get("effect").is_none_or(|e| e == "" || *e == t["effect"]);
            key_ok && value_ok && effect_ok
        })
    });
    ready && !cordoned && room && selector_ok && tolerated
}

fn mark_unschedulable(state: &SharedState, addr: &Address, pod: &Value, nodes: usize) {
    let message = format!("0/{nodes} nodes are available: no node is Ready, schedulable, matching the pod's nodeSelector and tolerated, with room for more pods.");
    let conditions = pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if conditions.iter().any(|c| c["type"] == "PodScheduled" && c["message"] == message.as_str()) {
        return;
    }
    let mut new = pod.clone();
    let mut kept: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
    kept.push(json!({"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message, "lastProbeTime": null,
        "lastTransitionTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}));
    new["status"]["conditions"] = Value::Array(kept);
    if new["status"]["phase"].is_null() {
        new["status"]["phase"] = json!("Pending");
    }
    // A conflict means the pod changed: the next pass looks again.
    let _ = state.store.update(&addr.key(), new, crate::store::object_revision(pod));
}
