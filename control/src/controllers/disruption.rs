//! Disruption: keeps each PodDisruptionBudget's status (expected and healthy pods, how
//! many may be disrupted now) current, as `kubectl get pdb` shows it. The eviction
//! subresource checks budgets itself, from the store, at the moment of each eviction.

use super::manager::{selector_matches, Ctx};
use super::pods::is_ready;
use super::runner::{Action, Error, Key};
use crate::api::handlers::desired_healthy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::sync::Arc;



pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(pdb) = ctx.budgets.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    let spec = pdb.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let covered: Vec<_> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(key.0.as_str()) && selector_matches(&selector, p.metadata.labels.as_ref()))
        .filter(|p| !matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed")))
        .collect();
    let expected = covered.len() as i64;
    let healthy = covered.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p)).count() as i64;
    let desired = desired_healthy(&serde_json::to_value(&spec).unwrap_or_default(), expected);
    let allowed = (healthy - desired).max(0);
    let old = pdb.status.clone().unwrap_or_default();
    let unchanged = old.observed_generation == pdb.metadata.generation
        && i64::from(old.current_healthy.unwrap_or(-1)) == healthy
        && i64::from(old.desired_healthy.unwrap_or(-1)) == desired
        && i64::from(old.expected_pods.unwrap_or(-1)) == expected
        && i64::from(old.disruptions_allowed.unwrap_or(-1)) == allowed;
    if unchanged {
        return Ok(Action::AwaitChange);
    }
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (cond, reason) = if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
    let status = json!({
        "observedGeneration": pdb.metadata.generation,
        "currentHealthy": healthy,
        "desiredHealthy": desired,
        "expectedPods": expected,
        "disruptionsAllowed": allowed,
        "conditions": [{"type": "DisruptionAllowed", "status": cond, "reason": reason, "message": "", "observedGeneration": pdb.metadata.generation, "lastTransitionTime": now}],
    });
    let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &key.0);
    api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    Ok(Action::AwaitChange)
}
