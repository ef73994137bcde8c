//! ReplicaSet: keeps `spec.replicas` pods matching the selector, adopting orphans and
//! releasing pods that stopped matching, and reports replicas, ready and available counts.
//!
//! The same loop serves ReplicationControllers (replicationcontroller.rs): [`sync`] works on
//! any [`Replicated`] workload, whatever form its selector takes.

use super::events::{self, Type};
use super::manager::{controller_of, selector_matches, Ctx};
use super::pods::{self, is_active, is_ready, Naming};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Pods created or deleted per reconcile at most (upstream's burst is 500).
const BURST: usize = 500;

/// A workload that keeps `replicas` copies of a pod template: what [`sync`] reads of it.
pub trait Replicated: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static {
    /// The component its events come from (`replicaset-controller`).
    const COMPONENT: &'static str;
    /// The pods it selects, as a label selector (an empty one selects nothing).
    fn selector(&self) -> LabelSelector;
    fn replicas(&self) -> Option<i32>;
    fn min_ready_seconds(&self) -> Option<i32>;
    fn template(&self) -> Option<&PodTemplateSpec>;
    /// The counts its status shows now, if it has a status.
    fn reported(&self) -> Option<Counts>;
}

/// What the status of a replicated workload reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Counts {
    pub replicas: i64,
    pub fully_labeled: i64,
    pub ready: i64,
    pub available: i64,
    pub observed_generation: Option<i64>,
}

impl Replicated for ReplicaSet {
    const COMPONENT: &'static str = "replicaset-controller";

    fn selector(&self) -> LabelSelector {
        self.spec.selector.clone()
    }

    fn replicas(&self) -> Option<i32> {
        self.spec.replicas
    }

    fn min_ready_seconds(&self) -> Option<i32> {
        self.spec.min_ready_seconds
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.template.as_ref()
    }

    fn reported(&self) -> Option<Counts> {
        self.status.as_ref().map(|s| Counts {
            replicas: s.replicas.into(),
            fully_labeled: s.fully_labeled_replicas.unwrap_or(0).into(),
            ready: s.ready_replicas.unwrap_or(0).into(),
            available: s.available_replicas.unwrap_or(0).into(),
            observed_generation: s.observed_generation,
        })
    }
}

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
    sync(rs, &key, &ctx).await
}

/// One pass over a replicated workload `obj` (the newest the cache has of `key`): adopt,
/// release, create or delete pods, then write its status if the counts changed.
pub async fn sync<K: Replicated>(obj: Arc<K>, key: &Key, ctx: &Ctx) -> Result<Action, Error> {
    let kind = K::kind(&());
    if obj.meta().deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let uid = obj.meta().uid.clone().unwrap_or_default();
    let selector = obj.selector();
    let want = usize::try_from(obj.replicas().unwrap_or(1)).unwrap_or(0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);

    let mut owned: Vec<Arc<Pod>> = Vec::new();
    for pod in ctx.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(key.0.as_str())) {
        let matches = selector_matches(&selector, pod.metadata.labels.as_ref());
        let controller = pod.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true));
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
                refs.push(pods::owner_ref(obj.as_ref()));
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
        let template = obj.template().ok_or_else(|| Error::Invalid(format!("{} has no pod template", kind.to_lowercase())))?;
        let mut created = Vec::new();
        for _ in 0..n {
            let pod = pods::from_template(template, pods::owner_ref(obj.as_ref()), Naming::Generate(format!("{}-", key.1))).map_err(|e| Error::Invalid(format!("pod template: {e}")))?;
            created.push(pods::create(&pods_api, &pod).await?);
        }
        tracing::info!(kind = %kind, name = %key.1, created = created.len(), "created pods");
        for name in &created {
            events::spawn(&ctx.client, K::COMPONENT, &obj, Type::Normal, "SuccessfulCreate", format!("Created pod: {name}"));
        }
        pods::wait_for_cache(ctx, &key.0, &created, pods::created).await;
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
        tracing::info!(kind = %kind, name = %key.1, deleted = names.len(), "deleted pods");
        for name in &names {
            events::spawn(&ctx.client, K::COMPONENT, &obj, Type::Normal, "SuccessfulDelete", format!("Deleted pod: {name}"));
        }
        pods::wait_for_cache(ctx, &key.0, &names, pods::deleted).await;
    }

    // Status from what the cache shows now.
    let min_ready = Duration::from_secs(u64::try_from(obj.min_ready_seconds().unwrap_or(0)).unwrap_or(0));
    let current: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(key.0.as_str()) && controller_of(p.metadata.owner_references.as_deref(), &kind).is_some_and(|c| c.uid == uid) && is_active(p))
        .collect();
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
    let template_labels = obj.template().and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let count = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let counts = Counts {
        replicas: count(current.len()),
        fully_labeled: count(current.iter().filter(|p| template_labels.iter().all(|(k, v)| p.metadata.labels.as_ref().and_then(|l| l.get(k)) == Some(v))).count()),
        ready: count(current.iter().filter(|p| is_ready(p)).count()),
        available: count(available),
        observed_generation: obj.meta().generation,
    };
    if obj.reported().as_ref() != Some(&counts) {
        let status = json!({
            "replicas": counts.replicas,
            "fullyLabeledReplicas": counts.fully_labeled,
            "readyReplicas": counts.ready,
            "availableReplicas": counts.available,
            "observedGeneration": counts.observed_generation,
        });
        let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.0);
        api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    Ok(next_look.map_or(Action::AwaitChange, |d| Action::RequeueAfter(d + Duration::from_millis(50))))
}
