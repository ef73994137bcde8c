//! Service load balancer: a LoadBalancer Service is served by every node's proxy on the
//! node's own address at the Service's port (as k3s's service load balancer does), so its
//! `status.loadBalancer.ingress` lists the nodes' internal addresses.

use super::manager::Ctx;
use super::runner::{Action, Error, Key};
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(svc) = ctx.services.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    let ips: BTreeSet<String> = if is_lb {
        ctx.nodes
            .state()
            .iter()
            .filter(|n| n.spec.as_ref().and_then(|s| s.unschedulable) != Some(true))
            .flat_map(|n| n.status.iter().flat_map(|s| s.addresses.iter().flatten()).filter(|a| a.type_ == "InternalIP").map(|a| a.address.clone()).collect::<Vec<_>>())
            .collect()
    } else {
        BTreeSet::new()
    };
    let have: BTreeSet<String> = svc.status.iter().flat_map(|s| s.load_balancer.iter()).flat_map(|lb| lb.ingress.iter().flatten()).filter_map(|i| i.ip.clone()).collect();
    if have == ips {
        return Ok(Action::AwaitChange);
    }
    let ingress: Vec<_> = ips.iter().map(|ip| json!({"ip": ip, "ipMode": "VIP"})).collect();
    let api: Api<Service> = Api::namespaced(ctx.client.clone(), &key.0);
    api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": {"loadBalancer": {"ingress": ingress}}}))).await?;
    Ok(Action::AwaitChange)
}
