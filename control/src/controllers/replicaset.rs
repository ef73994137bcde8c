//! ReplicaSet: keeps `spec.replicas` pods matching the selector, adopting orphans and
//! releasing pods that stopped matching, and reports replicas, ready and available counts.

use super::events::{self, Type};
use super::manager::{controller_of, selector_matches, Ctx};
use super::pods::{self, is_active, is_ready, Naming};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Pods created or deleted per reconcile at most (upstream's burst is 500).
const BURST: usize = 500;



/// Ready for at least `min_ready`; otherwise how long until it will be.
fn available_in(p: &Pod, min_ready: Duration) -> Option<Duration> {
    let cond = p.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "Ready" && c.status == "True")?;
    if min_ready.is_zero() {
        return Some(Duration::ZERO);
    }
    let since = cond.last_transition_time.as_ref().map(|t| t.0)?;
    let ready_for = k8s_openapi::jiff::Timestamp::now().duration_since(since).unsigned_abs();
    Some(min_ready.saturating_sub(ready_for))
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(rs) = ctx.replicasets.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    if rs.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let spec = rs.spec.clone();
    let want = usize::try_from(spec.replicas.unwrap_or(1)).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);

    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(key.0.as_str())) {
        let matches = selector_matches(&spec.selector, pod.metadata.labels.as_ref());
        let controller = controller_of(pod.metadata.owner_references.as_deref(), "ReplicaSet").or_else(|| pod.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)));
        match controller {
            Some(c) if c.uid == uid => {
                if matches {
                    owned.push(pod);
                } else {
                    // It no longer matches: let it go (it keeps running, unowned).
                    let refs: Vec<_> = pod.metadata.owner_references.iter().flatten().filter(|r| r.uid != uid).cloned().collect();
                    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
                    pods_api.patch(pod.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(patch)).await?;
                }
            }
            None if matches && is_active(&pod) => {
                // An orphan that matches: adopt it.
                let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
                refs.push(pods::owner_ref(rs.as_ref()));
                let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": pod.metadata.resource_version}});
                pods_api.patch(pod.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(patch)).await?;
                owned.push(pod);
            }
            _ => {}
        }
    }
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();

    if active.len() < want {
        let n = (want - active.len()).min(BURST);
        let template = spec.template.as_ref().ok_or_else(|| Error::Invalid("replicaset has no pod template".into()))?;
        let mut created = Vec::new();
        for _ in 0..n {
            let pod = pods::from_template(template, pods::owner_ref(rs.as_ref()), Naming::Generate(format!("{}-", key.1))).map_err(|e| Error::Invalid(format!("pod template: {e}")))?;
            created.push(pods::create(&pods_api, &pod).await?);
        }
        tracing::info!(replicaset = %key.1, created = created.len(), "created pods");
        for name in &created {
            events::spawn(&ctx.client, "replicaset-controller", &rs, Type::Normal, "SuccessfulCreate", format!("Created pod: {name}"));
        }
        pods::wait_for_cache(&ctx, &key.0, &created, pods::created).await;
    } else if active.len() > want {
        let mut doomed: Vec<&Arc<Pod>> = active.clone();
        // Upstream's order: unscheduled, then pending, then not ready, then the newest.
        doomed.sort_by_key(|p| {
            let unscheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty);
            let pending = p.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Running");
            let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.as_second()).unwrap_or(0);
            (!unscheduled, !pending, is_ready(p), std::cmp::Reverse(created))
        });
        let names: Vec<String> = doomed.iter().take((active.len() - want).min(BURST)).filter_map(|p| p.metadata.name.clone()).collect();
        for name in &names {
            pods::delete(&pods_api, name).await?;
        }
        tracing::info!(replicaset = %key.1, deleted = names.len(), "deleted pods");
        for name in &names {
            events::spawn(&ctx.client, "replicaset-controller", &rs, Type::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
        }
        pods::wait_for_cache(&ctx, &key.0, &names, pods::deleted).await;
    }

    // Status from what the cache shows now.
    let min_ready = Duration::from_secs(u64::try_from(spec.min_ready_seconds.unwrap_or(0)).unwrap_or(0));
    let current: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(key.0.as_str()) && controller_of(p.metadata.owner_references.as_deref(), "ReplicaSet").is_some_and(|c| c.uid == uid) && is_active(p))
        .collect();
    let ready = current.iter().filter(|p| is_ready(p)).count();
    let mut next_look: Option<Duration> = None;
    let available = current
        .iter()
        .filter(|p| match available_in(p, min_ready) {
            Some(d) if d.is_zero() => true,
            Some(d) => {
                next_look = Some(next_look.map_or(d, |n| n.min(d)));
                false
            }
            None => false,
        })
        .count();
    let template_labels = spec.template.as_ref().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let fully_labeled = current.iter().filter(|p| template_labels.iter().all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))).count();
    let status = json!({
        "replicas": current.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": available,
        "observedGeneration": rs.metadata.generation,
    });
    let old = rs.status.as_ref();
    let unchanged = old.is_some_and(|s| {
        s.replicas as usize == current.len() && s.ready_replicas.unwrap_or(0) as usize == ready && s.available_replicas.unwrap_or(0) as usize == available && s.observed_generation == rs.metadata.generation && s.fully_labeled_replicas.unwrap_or(0) as usize == fully_labeled
    });
    if !unchanged {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &key.0);
        api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(next_look.map_or(Action::AwaitChange, |d| Action::RequeueAfter(d + Duration::from_millis(50))))
}
