//! DaemonSet: one pod on every eligible node (its nodeSelector and required node affinity
//! match, and it tolerates the node's NoSchedule/NoExecute taints), following nodes as
//! they join and leave, and RollingUpdate by `maxUnavailable`. Pods are bound to their node directly, so a
//! cordoned node still runs its daemons, as upstream.

use super::deployment::template_hash;
use super::events::{self, Type};
use super::manager::Ctx;
use super::pods::{self, is_active, is_ready, Naming};
use super::revisions;
use super::runner::{Action, Error, Key};
use super::scheduler;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::{Node, Pod, Taint, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

pub const REVISION_LABEL: &str = "controller-revision-hash";



/// Whether `tolerations` tolerate `taint`, by upstream's matching rules.
pub fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let exists = t.operator.as_deref() == Some("Exists");
        let key_ok = match t.key.as_deref() {
            None | Some("") => exists,
            Some(k) => k == taint.key,
        };
        let value_ok = exists || t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default();
        effect_ok && key_ok && value_ok
    })
}

/// The tolerations upstream adds to every daemon pod, so node trouble does not evict it.
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// Whether a daemon pod belongs on `node`: a new one must tolerate its NoSchedule and
/// NoExecute taints; one already running there stays unless a NoExecute taint evicts it.
fn eligible(node: &Node, template: &k8s_openapi::api::core::v1::PodSpec, tolerations: &[Toleration], running: bool) -> bool {
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let selector_ok = template.node_selector.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let required = template.affinity.as_ref().and_then(|a| a.node_affinity.as_ref()).and_then(|n| n.required_during_scheduling_ignored_during_execution.as_ref());
    let affinity_ok = required.is_none_or(|r| r.node_selector_terms.iter().any(|t| scheduler::term_matches(t, node, &scheduler::node_labels(node))));
    let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let tolerated = taints.iter().filter(|t| t.effect == "NoExecute" || (t.effect == "NoSchedule" && !running)).all(|t| tolerates(tolerations, t));
    selector_ok && affinity_ok && tolerated && node.metadata.deletion_timestamp.is_none()
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ds) = ctx.daemonsets.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let spec = ds.spec.clone();
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let pod_spec = spec.template.spec.clone().ok_or_else(|| Error::Invalid("daemonset has no pod spec".into()))?;
    let mut tolerations = pod_spec.tolerations.clone().unwrap_or_default();
    tolerations.extend(daemon_tolerations());
    let template = serde_json::to_value(&spec.template).map_err(|e| Error::Invalid(e.to_string()))?;
    let revision = template_hash(&template);
    let owner = revisions::Owner { reference: pods::owner_ref(ds.as_ref()), selector: &spec.selector, template: &spec.template, limit: spec.revision_history_limit.unwrap_or(10) };
    revisions::sync(&ctx.client, &key.0, owner, &revision, &[]).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);

    let mut by_node: HashMap<String, Vec<Arc<Pod>>> = HashMap::new();
    for p in pods::owned_by(&ctx, &key.0, "DaemonSet", &uid).into_iter().filter(|p| is_active(p)) {
        let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).unwrap_or_default();
        by_node.entry(node).or_default().push(p);
    }
    let nodes = ctx.nodes.state();
    let wanted: Vec<String> = nodes
        .iter()
        .filter(|n| eligible(n, &pod_spec, &tolerations, n.metadata.name.as_ref().is_some_and(|name| by_node.contains_key(name))))
        .filter_map(|n| n.metadata.name.clone())
        .collect();

    let mut created = Vec::new();
    let mut deleted = Vec::new();
    for node in &wanted {
        let here = by_node.get(node).map(Vec::as_slice).unwrap_or_default();
        if here.is_empty() {
            let mut pod = pods::from_template(&spec.template, pods::owner_ref(ds.as_ref()), Naming::Generate(format!("{}-", key.1))).map_err(|e| Error::Invalid(format!("pod template: {e}")))?;
            pod.metadata.labels.get_or_insert_default().insert(REVISION_LABEL.into(), revision.clone());
            if let Some(ps) = pod.spec.as_mut() {
                ps.node_name = Some(node.clone());
                ps.tolerations = Some(tolerations.clone());
            }
            created.push(pods::create(&api, &pod).await?);
        }
        // One per node: extras go, the oldest stays.
        for extra in here.iter().skip(1) {
            let name = extra.metadata.name.clone().unwrap_or_default();
            pods::delete(&api, &name).await?;
            deleted.push(name);
        }
    }
    // Pods on nodes that are gone or no longer eligible.
    for (node, list) in &by_node {
        if !wanted.contains(node) {
            for p in list {
                let name = p.metadata.name.clone().unwrap_or_default();
                pods::delete(&api, &name).await?;
                deleted.push(name);
            }
        }
    }
    // Rolling update: replace out-of-date pods while at most maxUnavailable are unavailable.
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    if strategy.type_.as_deref() != Some("OnDelete") && created.is_empty() && deleted.is_empty() {
        let desired = wanted.len() as i32;
        let max_unavailable = match strategy.rolling_update.as_ref().and_then(|r| r.max_unavailable.clone()) {
            Some(IntOrString::Int(n)) => n,
            Some(IntOrString::String(s)) => (desired * s.trim_end_matches('%').parse::<i32>().unwrap_or(0)) / 100,
            None => 1,
        }
        .max(1);
        let current: Vec<&Arc<Pod>> = wanted.iter().filter_map(|n| by_node.get(n).and_then(|l| l.first())).collect();
        let unavailable = desired - current.iter().filter(|p| is_ready(p)).count() as i32;
        let mut budget = max_unavailable - unavailable;
        // Out-of-date pods that are not ready cost nothing to replace; then ready ones.
        let mut stale: Vec<&&Arc<Pod>> = current.iter().filter(|p| p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) != Some(&revision)).collect();
        stale.sort_by_key(|p| is_ready(p));
        for p in stale {
            if is_ready(p) {
                if budget <= 0 {
                    break;
                }
                budget -= 1;
            }
            let name = p.metadata.name.clone().unwrap_or_default();
            pods::delete(&api, &name).await?;
            deleted.push(name);
        }
    }
    if !created.is_empty() {
        tracing::info!(daemonset = %key.1, created = created.len(), "created pods");
        for name in &created {
            events::spawn(&ctx.client, "daemonset-controller", &ds, Type::Normal, "SuccessfulCreate", format!("Created pod: {name}"));
        }
        pods::wait_for_cache(&ctx, &key.0, &created, pods::created).await;
    }
    if !deleted.is_empty() {
        pods::wait_for_cache(&ctx, &key.0, &deleted, pods::deleted).await;
    }

    // Status.
    let placed: Vec<Arc<Pod>> = pods::owned_by(&ctx, &key.0, "DaemonSet", &uid).into_iter().filter(|p| is_active(p)).collect();
    let on_wanted = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some_and(|n| wanted.contains(n));
    let scheduled = placed.iter().filter(|p| on_wanted(p)).count();
    let ready = placed.iter().filter(|p| on_wanted(p) && is_ready(p)).count();
    let updated = placed.iter().filter(|p| on_wanted(p) && p.metadata.labels.as_ref().and_then(|l| l.get(REVISION_LABEL)) == Some(&revision)).count();
    let status = json!({
        "observedGeneration": ds.metadata.generation,
        "desiredNumberScheduled": wanted.len(),
        "currentNumberScheduled": scheduled,
        "numberMisscheduled": placed.len() - scheduled,
        "numberReady": ready,
        "numberAvailable": ready,
        "numberUnavailable": wanted.len().saturating_sub(ready),
        "updatedNumberScheduled": updated,
    });
    let old = serde_json::to_value(ds.status.clone().unwrap_or_default()).unwrap_or_default();
    let changed = status.as_object().is_some_and(|m| m.iter().any(|(k, v)| old.get(k).cloned().unwrap_or(json!(0)) != *v));
    if changed {
        let sets: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &key.0);
        sets.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(Action::AwaitChange)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tolerations_match_taints_as_upstream() {
        let taint = |k: &str, v: Option<&str>, e: &str| Taint { key: k.into(), value: v.map(Into::into), effect: e.into(), time_added: None };
        let tol = |k: Option<&str>, op: &str, v: Option<&str>, e: Option<&str>| Toleration { key: k.map(Into::into), operator: Some(op.into()), value: v.map(Into::into), effect: e.map(Into::into), toleration_seconds: None };
        let gpu = taint("gpu", Some("yes"), "NoSchedule");
        assert!(tolerates(&[tol(Some("gpu"), "Equal", Some("yes"), Some("NoSchedule"))], &gpu));
        assert!(!tolerates(&[tol(Some("gpu"), "Equal", Some("no"), Some("NoSchedule"))], &gpu));
        assert!(tolerates(&[tol(Some("gpu"), "Exists", None, None)], &gpu));
        assert!(!tolerates(&[tol(Some("gpu"), "Exists", None, Some("NoExecute"))], &gpu));
        // An empty key with Exists tolerates everything.
        assert!(tolerates(&[tol(None, "Exists", None, None)], &gpu));
        assert!(!tolerates(&[], &gpu));
    }
}
