//! Endpoints: for every Service with a selector, the addresses of the pods it selects,
//! written both as EndpointSlices (what the node proxy and DNS read) and as the older
//! v1 Endpoints object (what `kubectl get endpoints` and `kubectl describe svc` show).
//! Pods are grouped by the ports their named `targetPort`s resolve to, one slice per
//! group (and per 100 endpoints), as upstream's EndpointSlice controller does.

use super::manager::Ctx;
use super::pods::{is_ready, owner_ref, phase};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
const MAX_PER_SLICE: usize = 100;

/// One port of a slice: (name, port, protocol).
type PortKey = (String, i32, String);

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let (ns, name) = key;
    let Some(svc) = ctx.services.get(&ObjectRef::new(&name).within(&ns)) else { return Ok(Action::AwaitChange) };
    let spec = svc.spec.clone().unwrap_or_default();
    // No selector: the user writes the endpoints. ExternalName: there are none.
    let Some(selector) = spec.selector.clone().filter(|s| !s.is_empty()) else { return Ok(Action::AwaitChange) };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Ok(Action::AwaitChange);
    }
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);
    let mut pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|p| p.metadata.labels.as_ref().is_some_and(|l| selector.iter().all(|(k, v)| l.get(k) == Some(v))))
        .filter(|p| p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty()))
        .filter(|p| !matches!(phase(p), Some("Succeeded" | "Failed")))
        .collect();
    pods.sort_by(|a, b| pod_ip(a).cmp(pod_ip(b)));

    // Pods grouped by the ports the Service's targetPorts resolve to in them.
    let mut groups: BTreeMap<Vec<PortKey>, Vec<Value>> = BTreeMap::new();
    let mut subsets: BTreeMap<Vec<PortKey>, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for pod in &pods {
        let ports = resolve_ports(&svc, pod);
        if ports.is_empty() && !spec.ports.as_ref().is_none_or(Vec::is_empty) {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = is_ready(pod) || publish_not_ready;
        let ready = serving && !terminating;
        // What a slice endpoint and an Endpoints address share: the pod, its node, and its
        // hostname when it names this Service as its subdomain.
        let mut about = json!({"targetRef": {"kind": "Pod", "namespace": ns, "name": pod.metadata.name, "uid": pod.metadata.uid}});
        let pod_spec = pod.spec.as_ref();
        if let Some(h) = pod_spec.and_then(|s| s.hostname.as_ref()).filter(|_| pod_spec.and_then(|s| s.subdomain.as_deref()) == Some(name.as_str())) {
            about["hostname"] = json!(h);
        }
        if let Some(node) = pod_spec.and_then(|s| s.node_name.as_ref()) {
            about["nodeName"] = json!(node);
        }
        let mut endpoint = about.clone();
        endpoint["addresses"] = json!([pod_ip(pod)]);
        endpoint["conditions"] = json!({"ready": ready, "serving": serving, "terminating": terminating});
        groups.entry(ports.clone()).or_default().push(endpoint);
        if !terminating || publish_not_ready {
            let mut address = about;
            address["ip"] = json!(pod_ip(pod));
            let entry = subsets.entry(ports).or_default();
            if ready || publish_not_ready { entry.0.push(address) } else { entry.1.push(address) }
        }
    }

    let owner = serde_json::to_value(owner_ref(&*svc)).unwrap_or_default();
    let mut desired: BTreeMap<String, Value> = BTreeMap::new();
    let mut slice = |suffix: String, ports: &[PortKey], endpoints: &[Value]| {
        let slice_name = format!("{name}-{suffix}");
        desired.insert(slice_name.clone(), json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": ns, "ownerReferences": [owner],
                "labels": {SERVICE_NAME_LABEL: name, MANAGED_BY_LABEL: MANAGED_BY}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": ports_json(ports),
        }));
    };
    for (ports, endpoints) in &groups {
        for (i, chunk) in endpoints.chunks(MAX_PER_SLICE).enumerate() {
            slice(short_hash(&(ports, i)), ports, chunk);
        }
    }
    if groups.is_empty() {
        // Upstream keeps one empty slice so watchers see the Service has no endpoints.
        slice(short_hash(&"empty"), &[], &[]);
    }

    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing: Vec<Arc<EndpointSlice>> = ctx
        .endpoint_slices
        .state()
        .into_iter()
        .filter(|s| s.metadata.namespace.as_deref() == Some(ns.as_str()))
        .filter(|s| s.metadata.labels.as_ref().is_some_and(|l| l.get(SERVICE_NAME_LABEL) == Some(&name) && l.get(MANAGED_BY_LABEL).map(String::as_str) == Some(MANAGED_BY)))
        .collect();
    for old in &existing {
        let old_name = old.metadata.name.clone().unwrap_or_default();
        match desired.remove(&old_name) {
            None => match slices.delete(&old_name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            },
            Some(want) => {
                if !same_slice(old, &want) {
                    let mut new: EndpointSlice = serde_json::from_value(want).map_err(|e| Error::Invalid(e.to_string()))?;
                    new.metadata.resource_version = old.metadata.resource_version.clone();
                    slices.replace(&old_name, &PostParams::default(), &new).await?;
                }
            }
        }
    }
    for (_, want) in desired {
        let new: EndpointSlice = serde_json::from_value(want).map_err(|e| Error::Invalid(e.to_string()))?;
        match slices.create(&PostParams::default(), &new).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The v1 Endpoints object.
    let subsets: Vec<Value> = subsets
        .into_iter()
        .map(|(ports, (ready, not_ready))| {
            let mut s = json!({"ports": ports_json(&ports)});
            if !ready.is_empty() {
                s["addresses"] = json!(ready);
            }
            if !not_ready.is_empty() {
                s["notReadyAddresses"] = json!(not_ready);
            }
            s
        })
        .collect();
    let want = json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": name, "namespace": ns, "labels": svc.metadata.labels, "ownerReferences": [owner]}, "subsets": subsets});
    let endpoints: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    let want: Endpoints = serde_json::from_value(want).map_err(|e| Error::Invalid(e.to_string()))?;
    match endpoints.get_opt(&name).await? {
        None => match endpoints.create(&PostParams::default(), &want).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        },
        Some(old) if old.subsets.clone().unwrap_or_default() != want.subsets.clone().unwrap_or_default() => {
            let mut new = want;
            new.metadata.resource_version = old.metadata.resource_version.clone();
            endpoints.replace(&name, &PostParams::default(), &new).await?;
        }
        Some(_) => {}
    }
    Ok(Action::AwaitChange)
}

fn ports_json(ports: &[PortKey]) -> Vec<Value> {
    ports.iter().map(|(n, p, proto)| json!({"name": n, "port": p, "protocol": proto})).collect()
}

fn pod_ip(p: &Pod) -> &str {
    p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).unwrap_or_default()
}

/// The Service's ports as this pod serves them; empty if a named targetPort is not
/// declared by any of its containers (the pod is then left out, as upstream).
fn resolve_ports(svc: &Service, pod: &Pod) -> Vec<PortKey> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let mut out = Vec::new();
    for p in svc.spec.as_ref().and_then(|s| s.ports.as_ref()).into_iter().flatten() {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let port = match &p.target_port {
            None => p.port,
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(named)) => {
                let found = pod.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| c.ports.iter().flatten()).find(|cp| cp.name.as_deref() == Some(named.as_str()));
                match found {
                    Some(cp) => cp.container_port,
                    None => return Vec::new(),
                }
            }
        };
        out.push((p.name.clone().unwrap_or_default(), port, protocol));
    }
    out
}

fn same_slice(old: &EndpointSlice, want: &Value) -> bool {
    let old = serde_json::to_value(old).unwrap_or_default();
    ["endpoints", "ports", "addressType"].iter().all(|f| old.get(*f).unwrap_or(&json!([])) == want.get(*f).unwrap_or(&json!([])))
}

/// Five lowercase letters or digits from a stable hash, for deterministic slice names.
fn short_hash(v: &impl std::hash::Hash) -> String {
    use std::hash::Hasher;
    // FNV-1a: the same in every process and version, unlike std's default hasher.
    struct Fnv(u64);
    impl Hasher for Fnv {
        fn finish(&self) -> u64 {
            self.0
        }
        fn write(&mut self, bytes: &[u8]) {
            for b in bytes {
                self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x100000001b3);
            }
        }
    }
    let mut h = Fnv(0xcbf29ce484222325);
    v.hash(&mut h);
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = h.finish();
    (0..5)
        .map(|_| {
            let c = alphabet[(n % alphabet.len() as u64) as usize] as char;
            n /= alphabet.len() as u64;
            c
        })
        .collect()
}
