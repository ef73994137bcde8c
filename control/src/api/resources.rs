//! The table of served resources.
//!
//! One row per resource drives discovery, routing, storage keys, Table output and
//! validation: adding a kind is adding a row, not a handler.

/// Subresources a resource may serve beyond the object itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `/status`: writes change only `.status`.
    Status,
    /// `/scale`: an `autoscaling/v1` Scale view of `spec.replicas`.
    Scale,
    /// `pods/binding`: assigns a node.
    Binding,
    /// `pods/eviction`: a policy-checked delete.
    Eviction,
    /// `pods/log`: container logs.
    Log,
    /// `namespaces/finalize`: replaces `spec.finalizers`.
    Finalize,
    /// `pods/exec`: a command in a container, streamed over a WebSocket.
    Exec,
    /// `pods/attach`: the running container's streams.
    Attach,
    /// `pods/portforward`: TCP to the pod's ports.
    PortForward,
    /// `pods/proxy`, `services/proxy`, `nodes/proxy`: HTTP passed through.
    Proxy,
    /// `pods/ephemeralcontainers`: debug containers added to a running pod.
    EphemeralContainers,
}

impl Subresource {
    pub fn path(self) -> &'static str {
        match self {
            Self::Status => "status",
            Self::Scale => "scale",
            Self::Binding => "binding",
            Self::Eviction => "eviction",
            Self::Log => "log",
            Self::Finalize => "finalize",
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
            Self::Proxy => "proxy",
            Self::EphemeralContainers => "ephemeralcontainers",
        }
    }

    pub fn from_path(s: &str) -> Option<Self> {
        [Self::Status, Self::Scale, Self::Binding, Self::Eviction, Self::Log, Self::Finalize, Self::Exec, Self::Attach, Self::PortForward, Self::Proxy, Self::EphemeralContainers]
            .into_iter()
            .find(|x| x.path() == s)
    }
}

/// One served resource.
#[derive(Debug)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    /// `all` puts the kind in `kubectl get all`.
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// Whether spec changes bump `metadata.generation` (kinds with a spec/status split).
    pub has_spec: bool,
}

impl Resource {
    /// `apps/v1` or `v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.to_string() } else { format!("{}/{}", self.group, self.version) }
    }

    /// URL prefix of the group-version: `/api/v1` or `/apis/apps/v1`.
    pub fn group_version_path(&self) -> String {
        if self.group.is_empty() { format!("/api/{}", self.version) } else { format!("/apis/{}/{}", self.group, self.version) }
    }

    pub fn has(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// Storage key prefix for this resource: `/<group>/<plural>/`.
    pub fn key_prefix(&self) -> String {
        let group = if self.group.is_empty() { "core" } else { self.group };
        format!("/{group}/{}/", self.plural)
    }

    /// Storage key of one object (`namespace` is ignored for cluster-scoped kinds).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced { format!("{}{namespace}/{name}", self.key_prefix()) } else { format!("{}{name}", self.key_prefix()) }
    }

    /// Key prefix of every object of this resource in one namespace (or all, if `None`).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match namespace {
            Some(ns) if self.namespaced => format!("{}{ns}/", self.key_prefix()),
            _ => self.key_prefix(),
        }
    }
}

use Subresource::*;

const NO_SHORT: &[&str] = &[];
const ALL: &[&str] = &["all"];
const NONE: &[&str] = &[];

macro_rules! res {
    ($group:expr, $version:expr, $kind:expr, $plural:expr, $singular:expr, $namespaced:expr, $short:expr, $cat:expr, $subs:expr, $spec:expr) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            short_names: $short,
            categories: $cat,
            subresources: $subs,
            has_spec: $spec,
        }
    };
}

/// Every resource the API server serves.
pub static RESOURCES: &[Resource] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", false, &["ns"], NONE, &[Status, Finalize], false),
    res!("", "v1", "Pod", "pods", "pod", true, &["po"], ALL, &[Attach, Binding, EphemeralContainers, Eviction, Exec, Log, PortForward, Proxy, Status], true),
    res!("", "v1", "Service", "services", "service", true, &["svc"], ALL, &[Proxy, Status], true),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", true, &["ep"], NONE, &[], false),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", true, &["cm"], NONE, &[], false),
    res!("", "v1", "Secret", "secrets", "secret", true, NO_SHORT, NONE, &[], false),
    res!("", "v1", "Node", "nodes", "node", false, &["no"], NONE, &[Proxy, Status], true),
    res!("", "v1", "Event", "events", "event", true, &["ev"], NONE, &[], false),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", true, &["sa"], NONE, &[], false),
    res!("", "v1", "ReplicationController", "replicationcontrollers", "replicationcontroller", true, &["rc"], ALL, &[Status, Scale], true),
    res!("apps", "v1", "Deployment", "deployments", "deployment", true, &["deploy"], ALL, &[Status, Scale], true),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", true, &["rs"], ALL, &[Status, Scale], true),
    res!("apps", "v1", "StatefulSet", "statefulsets", "statefulset", true, &["sts"], ALL, &[Status, Scale], true),
    res!("apps", "v1", "DaemonSet", "daemonsets", "daemonset", true, &["ds"], ALL, &[Status], true),
    res!("apps", "v1", "ControllerRevision", "controllerrevisions", "controllerrevision", true, NO_SHORT, NONE, &[], false),
    res!("batch", "v1", "Job", "jobs", "job", true, NO_SHORT, ALL, &[Status], true),
    res!("batch", "v1", "CronJob", "cronjobs", "cronjob", true, &["cj"], ALL, &[Status], true),
    res!("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", "poddisruptionbudget", true, &["pdb"], NONE, &[Status], true),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", true, NO_SHORT, NONE, &[], false),
    res!("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices", "endpointslice", true, NO_SHORT, NONE, &[], false),
    res!("node.k8s.io", "v1", "RuntimeClass", "runtimeclasses", "runtimeclass", false, NO_SHORT, NONE, &[], false),
];

/// The resource with this group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of this `apiVersion` and `kind`.
pub fn find_kind(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.kind == kind && r.api_version() == api_version)
}

/// Distinct `(group, version)` pairs in table order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_separate_namespaces_and_kinds() {
        let pods = find("", "v1", "pods").unwrap();
        assert_eq!(pods.key("default", "a"), "/core/pods/default/a");
        assert_eq!(pods.list_prefix(Some("default")), "/core/pods/default/");
        let ns = find("", "v1", "namespaces").unwrap();
        assert_eq!(ns.key("ignored", "default"), "/core/namespaces/default");
        assert_eq!(find_kind("apps/v1", "Deployment").unwrap().plural, "deployments");
    }

    #[test]
    fn short_names_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for r in RESOURCES {
            for s in r.short_names {
                assert!(seen.insert(*s), "duplicate short name {s}");
            }
        }
    }
}
