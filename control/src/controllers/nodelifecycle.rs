//! Node lifecycle: a node whose Lease stops being renewed for `grace` is marked
//! `Ready=Unknown`, its pods NotReady, and it is tainted `node.kubernetes.io/unreachable`
//! (NoSchedule and NoExecute). Pods on it that do not tolerate the NoExecute taint are
//! evicted at once; those that tolerate it for `tolerationSeconds` (admission gives every
//! pod such a toleration) are evicted when that runs out. Their controllers then replace
//! them on nodes that are Ready. When the Lease is renewed again the taints go. Pods of a
//! deleted Node are deleted at once.

use super::daemonset::tolerates;
use super::events::{self, Type};
use super::manager::Ctx;
use super::pods::{self, is_active};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";



fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn since(t: k8s_openapi::jiff::Timestamp) -> Duration {
    now().duration_since(t).unsigned_abs()
}

/// When the node last showed it was alive: its Lease, else its Ready heartbeat.
fn last_heartbeat(ctx: &Ctx, node: &Node) -> Option<k8s_openapi::jiff::Timestamp> {
    let name = node.metadata.name.as_deref()?;
    let lease = ctx.leases.get(&ObjectRef::new(name).within("kube-node-lease")).and_then(|l| l.spec.as_ref()?.renew_time.as_ref().map(|t| t.0));
    let ready = node.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready").and_then(|c| c.last_heartbeat_time.as_ref().map(|t| t.0));
    lease.max(ready).or(node.metadata.creation_timestamp.as_ref().map(|t| t.0))
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(node) = ctx.nodes.get(&ObjectRef::new(&key.1)) else {
        // The Node is gone, and no agent will finish its pods: they go at once (upstream's
        // pod garbage collector), and their controllers replace them.
        for p in ctx.pods.state().into_iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(key.1.as_str())) {
            let api = Api::<Pod>::namespaced(ctx.client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
            let name = p.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await {
                Ok(_) => tracing::info!(node = %key.1, pod = name, "deleted a pod of a deleted node"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        return Ok(Action::AwaitChange);
    };
    let grace = ctx.settings.node_monitor_grace;
    let Some(beat) = last_heartbeat(&ctx, &node) else { return Ok(Action::RequeueAfter(grace)) };
    let silent = since(beat);
    let nodes: Api<Node> = Api::all(ctx.client.clone());
    let taints: Vec<Taint> = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let ready = node.status.as_ref().and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == "Ready")).map(|c| c.status.clone()).unwrap_or_default();

    if silent < grace {
        // Alive: lift the taints and the Unknown it was given.
        if taints.iter().any(|t| t.key == UNREACHABLE) {
            let kept: Vec<&Taint> = taints.iter().filter(|t| t.key != UNREACHABLE).collect();
            nodes.patch(&key.1, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": kept}}))).await?;
            tracing::info!(node = %key.1, "node is reachable again");
        }
        if ready == "Unknown" {
            set_ready(&nodes, &node, "True", "KubeletReady", "the node lease is being renewed again").await?;
        }
        return Ok(Action::RequeueAfter(grace - silent + Duration::from_millis(200)));
    }

    // Only a silent node needs its pods: every renewal of every live node comes through
    // here, and a scan of all pods per renewal was most of the control plane's CPU at
    // 150,000 pods.
    let on_node: Vec<Arc<Pod>> = ctx.pods.state().into_iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(key.1.as_str())).collect();
    if ready != "Unknown" {
        tracing::warn!(node = %key.1, silent_for = ?silent, "node stopped renewing its lease: marking it Unknown");
        set_ready(&nodes, &node, "Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.").await?;
        events::spawn(&ctx.client, "node-controller", &node, Type::Normal, "NodeNotReady", format!("Node {} status is now: NodeNotReady", key.1));
        let api_for = |p: &Pod| Api::<Pod>::namespaced(ctx.client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
        for p in on_node.iter().filter(|p| is_active(p)) {
            let conditions: Vec<_> = p.status.iter().flat_map(|s| s.conditions.iter().flatten()).map(|c| {
                let mut c = serde_json::to_value(c).unwrap_or_default();
                if c["type"] == "Ready" {
                    c["status"] = json!("False");
                    c["reason"] = json!("NodeNotReady");
                }
                c
            }).collect();
            let name = p.metadata.name.clone().unwrap_or_default();
            if let Err(e) = api_for(p).patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": conditions}}))).await {
                tracing::debug!(pod = name, error = %e, "marking the pod not ready failed");
            }
        }
    }
    let mut taints = taints;
    let mut added = false;
    for effect in ["NoSchedule", "NoExecute"] {
        if !taints.iter().any(|t| t.key == UNREACHABLE && t.effect == effect) {
            taints.push(Taint { key: UNREACHABLE.into(), value: None, effect: effect.into(), time_added: Some(Time(now())) });
            added = true;
        }
    }
    if added {
        nodes.patch(&key.1, &PatchParams::default(), &Patch::Merge(json!({"spec": {"taints": taints}}))).await?;
        return Ok(Action::AwaitChange);
    }

    // Taint-based eviction.
    let no_execute = taints.iter().find(|t| t.key == UNREACHABLE && t.effect == "NoExecute").cloned();
    let Some(taint) = no_execute else { return Ok(Action::AwaitChange) };
    let tainted_at = taint.time_added.as_ref().map(|t| t.0).unwrap_or_else(now);
    let mut next: Option<Duration> = None;
    for p in on_node.iter().filter(|p| is_active(p)) {
        let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        let matching: Vec<_> = tolerations.iter().filter(|t| tolerates(std::slice::from_ref(t), &taint)).collect();
        let evict_after = if matching.is_empty() {
            Some(Duration::ZERO)
        } else if matching.iter().any(|t| t.toleration_seconds.is_none()) {
            None
        } else {
            matching.iter().filter_map(|t| t.toleration_seconds).min().map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0)))
        };
        let Some(after) = evict_after else { continue };
        let waited = since(tainted_at);
        if waited >= after {
            let name = p.metadata.name.clone().unwrap_or_default();
            let api = Api::<Pod>::namespaced(ctx.client.clone(), p.metadata.namespace.as_deref().unwrap_or("default"));
            pods::delete(&api, &name).await?;
            tracing::info!(node = %key.1, pod = name, "evicted a pod from an unreachable node");
            events::spawn(&ctx.client, "taint-eviction-controller", p, Type::Normal, "TaintManagerEviction", format!("Marking for deletion Pod {}/{name}", p.metadata.namespace.as_deref().unwrap_or_default()));
        } else {
            let left = after - waited;
            next = Some(next.map_or(left, |n| n.min(left)));
        }
    }
    Ok(Action::RequeueAfter(next.unwrap_or(grace).min(grace) + Duration::from_millis(200)))
}

async fn set_ready(nodes: &Api<Node>, node: &Node, status: &str, reason: &str, message: &str) -> Result<(), Error> {
    let now_text = now().to_string();
    let conditions: Vec<serde_json::Value> = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .map(|c| {
            let mut c = serde_json::to_value(c).unwrap_or_default();
            if c["type"] == "Ready" {
                c = json!({"type": "Ready", "status": status, "reason": reason, "message": message,
                    "lastHeartbeatTime": c["lastHeartbeatTime"], "lastTransitionTime": now_text});
            }
            c
        })
        .collect();
    let name = node.metadata.name.clone().unwrap_or_default();
    nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({"status": {"conditions": conditions}}))).await?;
    Ok(())
}
