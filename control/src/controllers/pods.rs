//! What the workload controllers share about pods: which count as active and ready,
//! making one from a template under an owner, deleting, and waiting for the cache to
//! show what was just done.

use super::manager::{controller_of, Ctx};
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use kube::Resource;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Not finished and not being deleted.
pub fn is_active(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), Some("Succeeded" | "Failed"))
}

pub fn phase(p: &Pod) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.phase.as_deref())
}

pub fn is_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The controller reference an owner of kind `K` puts on what it makes.
pub fn owner_ref<K: Resource<DynamicType = ()>>(owner: &K) -> OwnerReference {
    OwnerReference {
        api_version: K::api_version(&()).into_owned(),
        kind: K::kind(&()).into_owned(),
        name: owner.meta().name.clone().unwrap_or_default(),
        uid: owner.meta().uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// The pods in `ns` whose controller is the owner with `uid` and kind `kind`.
pub fn owned_by(ctx: &Ctx, ns: &str, kind: &str, uid: &str) -> Vec<Arc<Pod>> {
    ctx.pods.state().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(ns) && controller_of(p.metadata.owner_references.as_deref(), kind).is_some_and(|c| c.uid == uid)).collect()
}

/// How a new pod is named.
pub enum Naming {
    /// `generateName`: the API server adds a random suffix.
    Generate(String),
    Exact(String),
}

/// A pod from `template`, controlled by `owner`.
pub fn from_template(template: &PodTemplateSpec, owner: OwnerReference, naming: Naming) -> Result<Pod, serde_json::Error> {
    let meta = template.metadata.clone().unwrap_or_default();
    let mut metadata = json!({
        "labels": meta.labels,
        "annotations": meta.annotations,
        "ownerReferences": [owner],
    });
    match naming {
        Naming::Generate(prefix) => metadata["generateName"] = json!(prefix),
        Naming::Exact(name) => metadata["name"] = json!(name),
    }
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.spec}))
}

/// Creates `pod`, returning its name.
pub async fn create(api: &Api<Pod>, pod: &Pod) -> Result<String, kube::Error> {
    Ok(api.create(&PostParams::default(), pod).await?.metadata.name.unwrap_or_default())
}

/// Deletes the pod (gracefully); one already gone is fine.
pub async fn delete(api: &Api<Pod>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits (up to 5 s) until the pod cache shows what was just done to `names`, so the next
/// reconcile neither creates missing-looking pods twice nor deletes more than it should.
pub async fn wait_for_cache(ctx: &Ctx, ns: &str, names: &[String], shown: fn(Option<&Pod>) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if names.iter().all(|n| shown(ctx.pods.get(&ObjectRef::new(n).within(ns)).as_deref())) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The cache shows the pod.
pub fn created(p: Option<&Pod>) -> bool {
    p.is_some()
}

/// The cache shows the pod gone or going.
pub fn deleted(p: Option<&Pod>) -> bool {
    p.is_none_or(|p| !is_active(p))
}
