//! Events the node records about its pods, as kubelet's recorder writes them: `kubectl
//! describe pod` and `kubectl get events` show them. A repeat of one reason and message
//! about one container bumps `count` on the same Event.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;

/// The name of the Event for `reason` and `message` about `container` of the pod with
/// `uid`: the pod's name and a digest, so a repeat finds the Event it counts on.
fn event_name(pod: &str, uid: &str, container: &str, reason: &str, message: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{uid}\n{container}\n{reason}\n{message}").as_bytes());
    format!("{pod}.{}", hex::encode(&digest[..8]))
}

/// The Event (`type` `Normal` or `Warning`) as kubelet would post it about `container`.
fn event(pod: &Pod, node: &str, container: &str, kind: &str, reason: &str, message: &str, now: &str) -> serde_json::Value {
    let meta = &pod.metadata;
    let (name, uid) = (meta.name.as_deref().unwrap_or_default(), meta.uid.as_deref().unwrap_or_default());
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name(name, uid, container, reason, message), "namespace": meta.namespace.as_deref().unwrap_or("default")},
        "involvedObject": {
            "apiVersion": "v1", "kind": "Pod", "name": name, "namespace": meta.namespace, "uid": meta.uid,
            "resourceVersion": meta.resource_version, "fieldPath": format!("spec.containers{{{container}}}"),
        },
        "reason": reason,
        "message": message,
        "type": kind,
        "source": {"component": "kubelet", "host": node},
        "reportingComponent": "kubelet",
        "reportingInstance": node,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    })
}

/// Records a Warning Event about `container` of `pod` in the background; a failure is
/// logged, never returned (an Event is not worth holding a container up for).
pub fn warn(client: &kube::Client, node: &str, pod: &Arc<Pod>, container: &str, reason: &'static str, message: String) {
    let (client, node, pod, container) = (client.clone(), node.to_owned(), pod.clone(), container.to_owned());
    tokio::spawn(async move {
        if let Err(e) = record(&client, &node, &pod, &container, "Warning", reason, &message).await {
            tracing::debug!(reason, error = %e, "recording an event failed");
        }
    });
}

async fn record(client: &kube::Client, node: &str, pod: &Pod, container: &str, kind: &str, reason: &str, message: &str) -> Result<(), kube::Error> {
    let now = crate::status::now();
    let body: Event = serde_json::from_value(event(pod, node, container, kind, reason, message, &now)).map_err(kube::Error::SerdeError)?;
    let api: Api<Event> = Api::namespaced(client.clone(), pod.metadata.namespace.as_deref().unwrap_or("default"));
    let name = body.metadata.name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), &body).await {
        Err(kube::Error::Api(e)) if e.code == 409 => {
            // A repeat: count it on the Event already there.
            let Some(existing) = api.get_opt(&name).await? else { return Ok(()) };
            let count = existing.count.unwrap_or(1) + 1;
            api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"count": count, "lastTimestamp": now}))).await.map(drop)
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_its_pod_container_and_node_and_repeats_share_a_name() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7"}})).unwrap();
        let e: Event = serde_json::from_value(event(&pod, "node-a", "web", "Warning", "ServerExited", "why", "2026-01-01T00:00:00Z")).unwrap();
        assert_eq!((e.type_.as_deref(), e.reason.as_deref(), e.message.as_deref(), e.count), (Some("Warning"), Some("ServerExited"), Some("why"), Some(1)));
        let o = &e.involved_object;
        assert_eq!((o.kind.as_deref(), o.name.as_deref(), o.namespace.as_deref(), o.uid.as_deref()), (Some("Pod"), Some("web-1"), Some("shop"), Some("u1")));
        assert_eq!(o.field_path.as_deref(), Some("spec.containers{web}"));
        assert_eq!(e.source.as_ref().and_then(|s| s.host.as_deref()), Some("node-a"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("shop"));
        let name = e.metadata.name.unwrap();
        assert!(name.starts_with("web-1.") && name.len() == "web-1.".len() + 16, "{name}");
        assert_eq!(name, event_name("web-1", "u1", "web", "ServerExited", "why"));
        assert_ne!(name, event_name("web-1", "u1", "web", "ServerExited", "another reason"));
        assert_ne!(name, event_name("web-1", "u2", "web", "ServerExited", "why"));
    }
}
