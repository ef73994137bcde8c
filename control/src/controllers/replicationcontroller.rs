//! ReplicationController: the ReplicaSet's predecessor in the core group, still written by
//! old manifests. Its selector is a plain map of labels (read here as `matchLabels`);
//! everything else is the ReplicaSet loop ([`replicaset::sync`]).

use super::manager::Ctx;
use super::replicaset::{self, Counts, Replicated};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::core::v1::{PodTemplateSpec, ReplicationController};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;

impl Replicated for ReplicationController {
    const COMPONENT: &'static str = "replication-controller";

    fn selector(&self) -> LabelSelector {
        let labels = self.spec.as_ref().and_then(|s| s.selector.clone()).filter(|m| !m.is_empty());
        LabelSelector { match_labels: labels, match_expressions: None }
    }

    fn replicas(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.replicas)
    }

    fn min_ready_seconds(&self) -> Option<i32> {
        self.spec.as_ref().and_then(|s| s.min_ready_seconds)
    }

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().and_then(|s| s.template.as_ref())
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

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(rc) = ctx.replication_controllers.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    replicaset::sync(rc, &key, &ctx).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controllers::manager::selector_matches;
    use std::collections::BTreeMap;

    fn rc(selector: serde_json::Value) -> ReplicationController {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "r"}, "spec": {"selector": selector}})).unwrap()
    }

    #[test]
    fn the_selector_map_selects_by_every_label() {
        let labels = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>();
        let sel = rc(serde_json::json!({"app": "web", "tier": "front"})).selector();
        assert!(selector_matches(&sel, Some(&labels(&[("app", "web"), ("tier", "front"), ("x", "y")]))));
        assert!(!selector_matches(&sel, Some(&labels(&[("app", "web")]))));
        // An empty map selects nothing (the API server defaults it from the template's labels).
        let empty = rc(serde_json::json!({})).selector();
        assert!(!selector_matches(&empty, Some(&labels(&[("app", "web")]))));
        assert!(!selector_matches(&rc(serde_json::Value::Null).selector(), None));
    }
}
