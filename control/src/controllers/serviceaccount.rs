//! ServiceAccounts: every active namespace has a `default` ServiceAccount, made again if
//! it is deleted, as upstream's service account controller does.

use super::manager::Ctx;
use super::runner::{Action, Error, Key};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;
use std::sync::Arc;



/// Keys are ("", namespace).
pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(ns) = ctx.namespaces.get(&ObjectRef::new(&key.1)) else { return Ok(Action::AwaitChange) };
    if ns.metadata.deletion_timestamp.is_some() || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating") {
        return Ok(Action::AwaitChange);
    }
    if ctx.service_accounts.get(&ObjectRef::new("default").within(&key.1)).is_some() {
        return Ok(Action::AwaitChange);
    }
    let api: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &key.1);
    let sa = ServiceAccount { metadata: kube::core::ObjectMeta { name: Some("default".into()), namespace: Some(key.1.clone()), ..Default::default() }, ..Default::default() };
    match api.create(&PostParams::default(), &sa).await {
        Ok(_) => tracing::info!(namespace = %key.1, "created the default service account"),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        // The namespace began terminating meanwhile.
        Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::AwaitChange)
}
