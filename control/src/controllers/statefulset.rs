//! StatefulSet: pods with stable names `<set>-0..N-1`, hostnames and the governing
//! Service as subdomain. OrderedReady starts them one at a time in order, each after the
//! one before is Running and Ready, and removes them from the highest ordinal down;
//! Parallel does both at once. RollingUpdate replaces pods from the highest ordinal down
//! to `partition`, one at a time.

use super::deployment::template_hash;
use super::events::{self, Type};
use super::manager::Ctx;
use super::pods::{self, is_ready, phase, Naming};
use super::revisions;
use super::runner::{Action, Error, Key};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";



fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref()?.get(REVISION_LABEL).map(String::as_str)
}

fn running_and_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && phase(p) == Some("Running") && is_ready(p)
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(set) = ctx.statefulsets.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    if set.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let spec = set.spec.clone();
    let uid = set.metadata.uid.clone().unwrap_or_default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.clone().unwrap_or_default();
    let on_delete = strategy.type_.as_deref() == Some("OnDelete");
    let partition = strategy.rolling_update.as_ref().and_then(|r| r.partition).unwrap_or(0);
    let template = serde_json::to_value(&spec.template).map_err(|e| Error::Invalid(e.to_string()))?;
    let hash = template_hash(&template);
    let update_revision = format!("{}-{hash}", key.1);
    let current = set.status.as_ref().and_then(|s| s.current_revision.clone()).unwrap_or_default();
    let owner = revisions::Owner { reference: pods::owner_ref(set.as_ref()), selector: &spec.selector, template: &spec.template, limit: spec.revision_history_limit.unwrap_or(10) };
    revisions::sync(&ctx.client, &key.0, owner, &hash, &[current.as_str()]).await?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);

    // The set's pods by ordinal.
    let prefix = format!("{}-", key.1);
    let by_ordinal: BTreeMap<i32, Arc<Pod>> = pods::owned_by(&ctx, &key.0, "StatefulSet", &uid)
        .into_iter()
        .filter_map(|p| {
            let ordinal = p.metadata.name.as_deref()?.strip_prefix(&prefix)?.parse::<i32>().ok()?;
            Some((ordinal, p))
        })
        .collect();
    let terminating = by_ordinal.values().any(|p| p.metadata.deletion_timestamp.is_some());

    let mut created = Vec::new();
    let mut deleted = Vec::new();
    // Failed pods are replaced under the same name.
    for p in by_ordinal.values().filter(|p| phase(p) == Some("Failed") && p.metadata.deletion_timestamp.is_none()) {
        let name = p.metadata.name.clone().unwrap_or_default();
        pods::delete(&api, &name).await?;
        deleted.push(name);
    }
    // Up: missing ordinals below `replicas`.
    if deleted.is_empty() {
        for ordinal in 0..replicas {
            match by_ordinal.get(&ordinal) {
                Some(p) if running_and_ready(p) || parallel => continue,
                // OrderedReady: wait for this one before making the next.
                Some(_) => break,
                None if !parallel && terminating => break,
                None => {
                    let pod = stateful_pod(&set, ordinal, &update_revision)?;
                    created.push(pods::create(&api, &pod).await?);
                    if !parallel {
                        break;
                    }
                }
            }
        }
    }
    // Down: ordinals at or above `replicas`, highest first; OrderedReady only when every
    // other pod is Running and Ready, and one at a time.
    if created.is_empty() && deleted.is_empty() {
        let condemned: Vec<&Arc<Pod>> = by_ordinal.range(replicas..).rev().map(|(_, p)| p).filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
        let healthy = by_ordinal.range(..replicas).all(|(_, p)| running_and_ready(p)) && !terminating;
        for p in condemned {
            if !parallel && !healthy {
                break;
            }
            let name = p.metadata.name.clone().unwrap_or_default();
            pods::delete(&api, &name).await?;
            deleted.push(name);
            if !parallel {
                break;
            }
        }
    }
    // Rolling update: the highest out-of-date ordinal at or above the partition goes
    // (and comes back at the new revision) once all the others are Running and Ready.
    if created.is_empty() && deleted.is_empty() && !on_delete {
        let all_ready = (0..replicas).all(|o| by_ordinal.get(&o).is_some_and(|p| running_and_ready(p)));
        let stale = by_ordinal.range(partition.max(0)..replicas).rev().map(|(_, p)| p).find(|p| revision_of(p) != Some(update_revision.as_str()));
        if let (true, Some(p)) = (all_ready, stale) {
            let name = p.metadata.name.clone().unwrap_or_default();
            pods::delete(&api, &name).await?;
            tracing::info!(statefulset = %key.1, pod = name, revision = update_revision, "updating pod");
            deleted.push(name);
        }
    }
    if !created.is_empty() {
        tracing::info!(statefulset = %key.1, pods = ?created, "created pods");
        for name in &created {
            events::spawn(&ctx.client, "statefulset-controller", &set, Type::Normal, "SuccessfulCreate", format!("create Pod {name} in StatefulSet {} successful", key.1));
        }
        pods::wait_for_cache(&ctx, &key.0, &created, pods::created).await;
    }
    if !deleted.is_empty() {
        for name in &deleted {
            events::spawn(&ctx.client, "statefulset-controller", &set, Type::Normal, "SuccessfulDelete", format!("delete Pod {name} in StatefulSet {} successful", key.1));
        }
        pods::wait_for_cache(&ctx, &key.0, &deleted, pods::deleted).await;
    }

    // Status, from the cache as it stands.
    let now: Vec<Arc<Pod>> = pods::owned_by(&ctx, &key.0, "StatefulSet", &uid).into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let old = set.status.clone().unwrap_or_default();
    let updated = now.iter().filter(|p| revision_of(p) == Some(update_revision.as_str())).count() as i32;
    let current_revision = match old.current_revision.clone() {
        Some(c) if updated < replicas || now.len() as i32 != replicas => c,
        _ => update_revision.clone(),
    };
    let current = now.iter().filter(|p| revision_of(p) == Some(current_revision.as_str())).count();
    let ready = now.iter().filter(|p| is_ready(p)).count();
    let status = json!({
        "observedGeneration": set.metadata.generation,
        "replicas": now.len(),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "currentReplicas": current,
        "updatedReplicas": updated,
        "currentRevision": current_revision,
        "updateRevision": update_revision,
        "collisionCount": 0,
    });
    let unchanged = old.observed_generation == set.metadata.generation
        && old.replicas as usize == now.len()
        && old.ready_replicas.unwrap_or(0) as usize == ready
        && old.current_replicas.unwrap_or(0) as usize == current
        && old.updated_replicas.unwrap_or(0) == updated
        && old.current_revision.as_deref() == Some(current_revision.as_str())
        && old.update_revision.as_deref() == Some(update_revision.as_str());
    if !unchanged {
        let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &key.0);
        sets.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(Action::AwaitChange)
}

/// Pod `<set>-<ordinal>`: its hostname is its name and the governing Service its subdomain.
fn stateful_pod(set: &StatefulSet, ordinal: i32, revision: &str) -> Result<Pod, Error> {
    let name = format!("{}-{ordinal}", set.metadata.name.as_deref().unwrap_or_default());
    let spec = set.spec.clone();
    let mut pod = pods::from_template(&spec.template, pods::owner_ref(set), Naming::Exact(name.clone())).map_err(|e| Error::Invalid(format!("pod template: {e}")))?;
    let labels = pod.metadata.labels.get_or_insert_default();
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    if let Some(ps) = pod.spec.as_mut() {
        ps.hostname = Some(name);
        if !spec.service_name.as_deref().unwrap_or_default().is_empty() {
            ps.subdomain = spec.service_name.clone();
        }
    }
    Ok(pod)
}
