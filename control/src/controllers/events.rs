//! Events for what controllers do, as `kubectl describe` and `kubectl get events` show
//! them. Repeats of one reason and message on one object bump `count` on the same Event,
//! as upstream's recorder does.

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::Resource;
use serde_json::json;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug)]
pub enum Type {
    Normal,
    Warning,
}

/// Records an event about `obj` from `component` (e.g. `replicaset-controller`). Failures
/// are logged, never returned: an event is never worth failing a reconcile for.
pub async fn record<K: Resource<DynamicType = ()>>(client: &kube::Client, component: &str, obj: &K, kind: Type, reason: &str, message: &str) {
    let meta = obj.meta();
    let ns = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    // One Event per object, reason and message: its name says which.
    let digest = {
        use sha2::Digest;
        let d = sha2::Sha256::digest(format!("{}/{}/{reason}/{message}", meta.uid.as_deref().unwrap_or_default(), component).as_bytes());
        d.iter().take(8).map(|b| format!("{b:02x}")).collect::<String>()
    };
    let event_name = format!("{name}.{digest}");
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let kind_text = match kind {
        Type::Normal => "Normal",
        Type::Warning => "Warning",
    };
    // Most events are new: create first, and count a repeat only when the name is taken.
    let event = json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": event_name, "namespace": ns},
        "involvedObject": {"apiVersion": K::api_version(&()), "kind": K::kind(&()), "name": name, "namespace": meta.namespace, "uid": meta.uid, "resourceVersion": meta.resource_version},
        "reason": reason,
        "message": message,
        "type": kind_text,
        "source": {"component": component},
        "reportingComponent": component,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    });
    let created = match serde_json::from_value::<Event>(event) {
        Ok(e) => api.create(&PostParams::default(), &e).await.map(drop),
        Err(e) => Err(kube::Error::SerdeError(e)),
    };
    let result = match created {
        Err(kube::Error::Api(e)) if e.code == 409 => match api.get_opt(&event_name).await {
            Ok(Some(existing)) => {
                let count = existing.count.unwrap_or(1) + 1;
                api.patch(&event_name, &PatchParams::default(), &Patch::Merge(json!({"count": count, "lastTimestamp": now}))).await.map(drop)
            }
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        },
        other => other,
    };
    if let Err(e) = result {
        tracing::debug!(reason, error = %e, "recording an event failed");
    }
}

/// [`record`] in the background, so a burst of actions is not slowed by its events.
pub fn spawn<K>(client: &kube::Client, component: &'static str, obj: &std::sync::Arc<K>, kind: Type, reason: &'static str, message: String)
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    let (client, obj) = (client.clone(), obj.clone());
    tokio::spawn(async move { record(&client, component, obj.as_ref(), kind, reason, &message).await });
}
