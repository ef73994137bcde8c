//! Deployment: one ReplicaSet per pod template (named by its `pod-template-hash`), rolled
//! from old to new with RollingUpdate (`maxSurge`/`maxUnavailable`, gated on available
//! pods) or Recreate; revisions, history limit, pause, and the status and conditions
//! `kubectl rollout status` reads.

use super::events::{self, Type};
use super::manager::{controller_of, Ctx};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const HASH_LABEL: &str = "pod-template-hash";



/// A short, stable, DNS-safe hash of the pod template (upstream's alphabet: no vowels).
pub fn template_hash(template: &Value) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(serde_json::to_vec(template).unwrap_or_default());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    digest.iter().take(10).map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

fn revision_of(rs: &ReplicaSet) -> u64 {
    rs.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn replicas_of(rs: &ReplicaSet) -> i32 {
    rs.spec.replicas.unwrap_or(0)
}

/// An int-or-percent of `total`, rounded up (surge) or down (unavailable).
fn scaled(v: Option<&IntOrString>, total: i32, default_pct: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => {
            let pct: i32 = s.trim_end_matches('%').parse().unwrap_or(default_pct);
            let x = total * pct;
            if round_up { (x + 99) / 100 } else { x / 100 }
        }
        None => {
            let x = total * default_pct;
            if round_up { (x + 99) / 100 } else { x / 100 }
        }
    }
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(d) = ctx.deployments.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    if d.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let spec = d.spec.clone();
    let replicas = spec.replicas.unwrap_or(1);
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &key.0);
    let mut owned: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(key.0.as_str()) && controller_of(r.metadata.owner_references.as_deref(), "Deployment").is_some_and(|c| c.uid == uid) && r.metadata.deletion_timestamp.is_none())
        .collect();
    owned.sort_by_key(|r| revision_of(r));

    let template = serde_json::to_value(&spec.template).map_err(|e| Error::Invalid(e.to_string()))?;
    let hash = template_hash(&template);
    let max_revision = owned.iter().map(|r| revision_of(r)).max().unwrap_or(0);
    let mut new_rs = owned.iter().find(|r| r.metadata.labels.as_ref().and_then(|l| l.get(HASH_LABEL)) == Some(&hash)).cloned();
    let paused = spec.paused == Some(true);

    let mut new_revision = new_rs.as_ref().map_or(0, |r| revision_of(r));
    if new_rs.is_none() && !paused {
        let rs = new_replicaset(&d, &template, &hash, max_revision + 1, replicas, &owned)?;
        let made = match rs_api.create(&PostParams::default(), &rs).await {
            Ok(r) => r,
            // Made by an earlier pass the cache has not shown yet.
            Err(kube::Error::Api(e)) if e.code == 409 => rs_api.get(rs.metadata.name.as_deref().unwrap_or_default()).await?,
            Err(e) => return Err(e.into()),
        };
        tracing::info!(deployment = %key.1, replicaset = ?made.metadata.name, revision = max_revision + 1, "new ReplicaSet");
        new_rs = Some(Arc::new(made));
        new_revision = max_revision + 1;
    } else if let Some(rs) = &new_rs {
        // A template that came back (a rollback) becomes the newest revision again.
        if revision_of(rs) < max_revision && !paused {
            let patch = json!({"metadata": {"annotations": {REVISION: (max_revision + 1).to_string()}}});
            rs_api.patch(rs.metadata.name.as_deref().unwrap_or_default(), &PatchParams::default(), &Patch::Merge(patch)).await?;
            new_revision = max_revision + 1;
        }
    }
    let new_name = new_rs.as_ref().and_then(|r| r.metadata.name.clone());
    let olds: Vec<&Arc<ReplicaSet>> = owned.iter().filter(|r| r.metadata.name != new_name).collect();

    if !paused {
        if let Some(new_rs) = &new_rs {
            scale(&ctx, &rs_api, &d, new_rs, &olds, replicas).await?;
        }
        cleanup_history(&rs_api, &olds, spec.revision_history_limit.unwrap_or(10)).await?;
    }

    // Status, from the ReplicaSets as the cache shows them.
    let all: Vec<Arc<ReplicaSet>> = ctx
        .replicasets
        .state()
        .into_iter()
        .filter(|r| r.metadata.namespace.as_deref() == Some(key.0.as_str()) && controller_of(r.metadata.owner_references.as_deref(), "Deployment").is_some_and(|c| c.uid == uid))
        .collect();
    let st = |r: &ReplicaSet| r.status.clone().unwrap_or_default();
    let total: i32 = all.iter().map(|r| st(r).replicas).sum();
    let ready: i32 = all.iter().map(|r| st(r).ready_replicas.unwrap_or(0)).sum();
    let available: i32 = all.iter().map(|r| st(r).available_replicas.unwrap_or(0)).sum();
    let new_now = all.iter().find(|r| r.metadata.name == new_name);
    let updated = new_now.map_or(0, |r| st(r).replicas);
    let new_available = new_now.map_or(0, |r| st(r).available_replicas.unwrap_or(0));
    let max_unavailable = max_unavailable(&spec, replicas);
    let complete = updated == replicas && new_available == replicas && total == replicas;

    let now = chrono::Utc::now();
    let now_text = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let old_status = d.status.clone().unwrap_or_default();
    let old_cond = |t: &str| old_status.conditions.iter().flatten().find(|c| c.type_.as_deref() == Some(t)).cloned();
    let progress_changed = old_status.updated_replicas.unwrap_or(0) != updated || old_status.available_replicas.unwrap_or(0) != available || old_status.observed_generation != d.metadata.generation;
    let deadline = spec.progress_deadline_seconds.unwrap_or(600);
    let rs_name = new_name.clone().unwrap_or_default();
    let (p_status, p_reason, p_message) = if paused {
        ("Unknown", "DeploymentPaused", "Deployment is paused".to_owned())
    } else if complete {
        ("True", "NewReplicaSetAvailable", format!("ReplicaSet \"{rs_name}\" has successfully progressed."))
    } else {
        let last = old_cond("Progressing");
        let last_update = last.as_ref().and_then(|c| c.last_update_time.as_ref()).map(|t| t.0.as_second()).unwrap_or(now.timestamp());
        let stalled = !progress_changed && now.timestamp() - last_update > i64::from(deadline);
        let was_exceeded = last.as_ref().is_some_and(|c| c.reason.as_deref() == Some("ProgressDeadlineExceeded"));
        if stalled || (was_exceeded && !progress_changed) {
            ("False", "ProgressDeadlineExceeded", format!("ReplicaSet \"{rs_name}\" has timed out progressing."))
        } else {
            ("True", "ReplicaSetUpdated", format!("ReplicaSet \"{rs_name}\" is progressing."))
        }
    };
    let condition = |t: &str, status: &str, reason: &str, message: &str, bump_update: bool| {
        let old = old_cond(t);
        let same = old.as_ref().is_some_and(|c| c.status.as_deref() == Some(status) && c.reason.as_deref() == Some(reason));
        let transition = if old.as_ref().is_some_and(|c| c.status.as_deref() == Some(status)) { old.as_ref().and_then(|c| c.last_transition_time.as_ref()).map(|t| t.0.to_string()) } else { None };
        let update = if same && !bump_update { old.as_ref().and_then(|c| c.last_update_time.as_ref()).map(|t| t.0.to_string()) } else { None };
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": transition.unwrap_or_else(|| now_text.clone()), "lastUpdateTime": update.unwrap_or_else(|| now_text.clone())})
    };
    let avail_ok = available >= replicas - max_unavailable;
    let conditions = vec![
        condition("Available", if avail_ok { "True" } else { "False" }, if avail_ok { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" }, if avail_ok { "Deployment has minimum availability." } else { "Deployment does not have minimum availability." }, false),
        condition("Progressing", p_status, p_reason, &p_message, progress_changed),
    ];
    let status = json!({
        "observedGeneration": d.metadata.generation,
        "replicas": total,
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": available,
        "unavailableReplicas": (replicas - available).max(0),
        "conditions": conditions,
    });
    let changed = serde_json::to_value(&old_status).ok().is_none_or(|old| {
        let strip = |mut v: Value| {
            if let Some(cs) = v.get_mut("conditions").and_then(Value::as_array_mut) {
                for c in cs {
                    c.as_object_mut().map(|o| {
                        o.remove("lastUpdateTime");
                        o.remove("lastTransitionTime")
                    });
                }
            }
            v
        };
        strip(old) != strip(status.clone())
    });
    // The Deployment carries its current revision (kubectl's rollout undo patches it).
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &key.0);
    if let Some(rev) = Some(new_revision).filter(|r| *r > 0) {
        let current = d.metadata.annotations.as_ref().and_then(|a| a.get(REVISION)).cloned();
        if current.as_deref() != Some(rev.to_string().as_str()) {
            d_api.patch(&key.1, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"annotations": {REVISION: rev.to_string()}}}))).await?;
        }
    }
    if changed {
        d_api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    // Look again to notice a missed progress deadline.
    Ok(if complete || paused { Action::AwaitChange } else { Action::RequeueAfter(Duration::from_secs(u64::try_from(deadline).unwrap_or(600).min(10))) })
}

fn max_unavailable(spec: &k8s_openapi::api::apps::v1::DeploymentSpec, replicas: i32) -> i32 {
    let strategy = spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return replicas;
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, 25, true);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), replicas, 25, false);
    if surge == 0 && unavailable == 0 {
        1
    } else {
        unavailable
    }
}

/// Moves replicas from the old ReplicaSets to the new one, as the strategy allows.
async fn scale(ctx: &Ctx, api: &Api<ReplicaSet>, d: &Deployment, new_rs: &ReplicaSet, olds: &[&Arc<ReplicaSet>], replicas: i32) -> Result<(), Error> {
    let spec = d.spec.clone();
    let set = |name: String, n: i32| async move {
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": n}}))).await?;
        let from = new_rs_or_old(new_rs, olds, &name).map_or(0, replicas_of);
        let (dir, verb) = if n > from { ("up", "ScalingReplicaSet") } else { ("down", "ScalingReplicaSet") };
        events::record(&ctx.client, "deployment-controller", d, Type::Normal, verb, &format!("Scaled {dir} replica set {name} from {from} to {n}")).await;
        Ok::<(), kube::Error>(())
    };
    let new_name = new_rs.metadata.name.clone().unwrap_or_default();
    if spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        let mut old_running = false;
        for rs in olds {
            if replicas_of(rs) > 0 {
                set(rs.metadata.name.clone().unwrap_or_default(), 0).await?;
            }
            old_running |= rs.status.as_ref().is_some_and(|s| s.replicas > 0);
        }
        let old_pods = ctx.pods.state().iter().any(|p| olds.iter().any(|rs| controller_of(p.metadata.owner_references.as_deref(), "ReplicaSet").is_some_and(|c| Some(&c.uid) == rs.metadata.uid.as_ref())));
        if !old_running && !old_pods && replicas_of(new_rs) != replicas {
            set(new_name, replicas).await?;
        }
        return Ok(());
    }
    let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), replicas, 25, true);
    let max_unavailable = max_unavailable(&spec, replicas);
    let total: i32 = replicas_of(new_rs) + olds.iter().map(|r| replicas_of(r)).sum::<i32>();

    // Up: the new ReplicaSet grows while the total stays within replicas + maxSurge.
    let new_count = replicas_of(new_rs);
    if new_count < replicas {
        let room = replicas + surge - total;
        if room > 0 {
            set(new_name.clone(), (new_count + room).min(replicas)).await?;
        }
    } else if new_count > replicas {
        set(new_name.clone(), replicas).await?;
    }
    // Down: old ReplicaSets shrink while enough pods stay available.
    let min_available = replicas - max_unavailable;
    let new_unavailable = (replicas_of(new_rs) - new_rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)).max(0);
    let mut can_remove = total - min_available - new_unavailable;
    // Old pods that are not available cost no availability: they go first.
    for rs in olds {
        let unavailable = (replicas_of(rs) - rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)).max(0);
        if unavailable > 0 && replicas_of(rs) > 0 {
            let n = (replicas_of(rs) - unavailable).max(0);
            set(rs.metadata.name.clone().unwrap_or_default(), n).await?;
        }
    }
    for rs in olds {
        if can_remove <= 0 {
            break;
        }
        let have = replicas_of(rs) - (replicas_of(rs) - rs.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0)).max(0);
        if have <= 0 {
            continue;
        }
        let n = have.min(can_remove);
        set(rs.metadata.name.clone().unwrap_or_default(), have - n).await?;
        can_remove -= n;
    }
    Ok(())
}

fn new_rs_or_old<'a>(new_rs: &'a ReplicaSet, olds: &'a [&Arc<ReplicaSet>], name: &str) -> Option<&'a ReplicaSet> {
    std::iter::once(new_rs).chain(olds.iter().map(|r| r.as_ref())).find(|r| r.metadata.name.as_deref() == Some(name))
}

/// Old ReplicaSets scaled to zero beyond `revisionHistoryLimit` go, oldest first.
async fn cleanup_history(api: &Api<ReplicaSet>, olds: &[&Arc<ReplicaSet>], limit: i32) -> Result<(), Error> {
    let idle: Vec<&&Arc<ReplicaSet>> = olds.iter().filter(|r| replicas_of(r) == 0 && r.status.as_ref().is_none_or(|s| s.replicas == 0)).collect();
    let extra = idle.len().saturating_sub(usize::try_from(limit).unwrap_or(0));
    for rs in idle.iter().take(extra) {
        match api.delete(rs.metadata.name.as_deref().unwrap_or_default(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn new_replicaset(d: &Deployment, template: &Value, hash: &str, revision: u64, replicas: i32, olds: &[Arc<ReplicaSet>]) -> Result<ReplicaSet, Error> {
    let name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or_default());
    let mut template = template.clone();
    template["metadata"]["labels"][HASH_LABEL] = json!(hash);
    let mut selector = serde_json::to_value(&d.spec.selector).unwrap_or(json!({}));
    selector["matchLabels"][HASH_LABEL] = json!(hash);
    let mut labels = template["metadata"]["labels"].clone();
    labels[HASH_LABEL] = json!(hash);
    let spec = d.spec.clone();
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    // The first ReplicaSet starts at full size; a rollout's grows as the strategy allows.
    let initial = if olds.iter().all(|r| replicas_of(r) == 0) && !recreate { replicas } else { 0 };
    let surge = scaled(spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.max_surge.as_ref()), replicas, 25, true);
    // The Deployment's own annotations (kubernetes.io/change-cause among them) go along,
    // as upstream copies them, so `rollout history` can show them.
    let mut annotations: serde_json::Map<String, Value> = d.metadata.annotations.iter().flatten().filter(|(k, _)| *k != REVISION && *k != "kubectl.kubernetes.io/last-applied-configuration").map(|(k, v)| (k.clone(), json!(v))).collect();
    annotations.insert(REVISION.into(), json!(revision.to_string()));
    annotations.insert("deployment.kubernetes.io/desired-replicas".into(), json!(replicas.to_string()));
    annotations.insert("deployment.kubernetes.io/max-replicas".into(), json!((replicas + surge).to_string()));
    let rs = json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": d.metadata.namespace,
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": d.metadata.name, "uid": d.metadata.uid, "controller": true, "blockOwnerDeletion": true}],
        },
        "spec": {
            "replicas": initial,
            "minReadySeconds": spec.min_ready_seconds.unwrap_or(0),
            "selector": selector,
            "template": template,
        },
    });
    serde_json::from_value(rs).map_err(|e| Error::Invalid(format!("replicaset: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn surge_and_unavailability_round_as_upstream() {
        assert_eq!(scaled(None, 3, 25, true), 1);
        assert_eq!(scaled(None, 3, 25, false), 0);
        assert_eq!(scaled(Some(&IntOrString::String("50%".into())), 3, 25, true), 2);
        assert_eq!(scaled(Some(&IntOrString::Int(2)), 3, 25, false), 2);
        let h = template_hash(&json!({"spec": {"containers": [{"name": "a"}]}}));
        assert_eq!(h.len(), 10);
        assert_eq!(h, template_hash(&json!({"spec": {"containers": [{"name": "a"}]}})));
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
