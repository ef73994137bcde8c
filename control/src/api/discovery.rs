//! Discovery (`/api`, `/apis`, group-version resource lists) and `/version`; the
//! OpenAPI documents are in [`super::openapi`].

use super::resources::{self, Resource, Subresource, RESOURCES};
use serde_json::{json, Value};

/// The Kubernetes version we speak: kubectl 1.32 warns about larger skews.
pub const KUBE_MINOR: &str = "32";

/// `/version`, as upstream's `version.Info` writes it (fields in its declaration order).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    major: &'static str,
    minor: &'static str,
    git_version: String,
    git_commit: &'static str,
    git_tree_state: &'static str,
    build_date: &'static str,
    go_version: &'static str,
    compiler: &'static str,
    platform: String,
}

pub fn version() -> VersionInfo {
    VersionInfo {
        major: "1",
        minor: KUBE_MINOR,
        git_version: format!("v1.{KUBE_MINOR}.0-wasmkube.{}", env!("CARGO_PKG_VERSION")),
        git_commit: "",
        git_tree_state: "clean",
        build_date: "1970-01-01T00:00:00Z",
        go_version: "n/a (rust)",
        compiler: "rustc",
        platform: format!("{}/{}", std::env::consts::OS, if cfg!(target_arch = "x86_64") { "amd64" } else { std::env::consts::ARCH }),
    }
}

pub fn api_versions() -> Value {
    json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
}

fn group_entry(group: &str) -> Value {
    let versions: Vec<Value> = resources::group_versions()
        .into_iter()
        .filter(|(g, _)| *g == group)
        .map(|(g, v)| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
        .collect();
    json!({"name": group, "versions": versions, "preferredVersion": versions.first().cloned().unwrap_or(json!({}))})
}

pub fn api_groups() -> Value {
    let mut groups: Vec<&str> = Vec::new();
    for (g, _) in resources::group_versions() {
        if !g.is_empty() && !groups.contains(&g) {
            groups.push(g);
        }
    }
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups.into_iter().map(group_entry).collect::<Vec<_>>()})
}

pub fn api_group(group: &str) -> Option<Value> {
    resources::group_versions().iter().any(|(g, _)| *g == group && !g.is_empty()).then(|| {
        let mut e = group_entry(group);
        e["kind"] = json!("APIGroup");
        e["apiVersion"] = json!("v1");
        e
    })
}

const OBJECT_VERBS: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];

fn subresource_entry(r: &Resource, sub: Subresource) -> Value {
    let name = format!("{}/{}", r.plural, sub.path());
    match sub {
        Subresource::Status => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["get", "patch", "update"]}),
        // kubectl scale resolves the Scale kind from here: it must be autoscaling/v1.
        Subresource::Scale => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}),
        Subresource::Binding => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": "Binding", "verbs": ["create"]}),
        Subresource::Eviction => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
        Subresource::Log => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": "Pod", "verbs": ["get"]}),
        Subresource::Exec => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": "PodExecOptions", "verbs": ["create", "get"]}),
        Subresource::Attach => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": "PodAttachOptions", "verbs": ["create", "get"]}),
        Subresource::PortForward => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": "PodPortForwardOptions", "verbs": ["create", "get"]}),
        Subresource::Proxy => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": format!("{}ProxyOptions", r.kind), "verbs": ["create", "delete", "get", "patch", "update"]}),
        Subresource::EphemeralContainers => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": "Pod", "verbs": ["get", "patch", "update"]}),
        Subresource::Finalize => json!({"name": name, "singularName": "", "namespaced": r.namespaced, "kind": r.kind, "verbs": ["update"]}),
    }
}

/// The APIResourceList of one group-version, or `None` if we serve no such thing.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let rs: Vec<&Resource> = RESOURCES.iter().filter(|r| r.group == group && r.version == version).collect();
    if rs.is_empty() {
        return None;
    }
    let mut list = Vec::new();
    for r in &rs {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": OBJECT_VERBS,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        list.push(e);
        for s in r.subresources {
            list.push(subresource_entry(r, *s));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    Some(json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_subresource_is_autoscaling_v1() {
        let apps = resource_list("apps", "v1").unwrap();
        let scale = apps["resources"].as_array().unwrap().iter().find(|r| r["name"] == "deployments/scale").unwrap();
        assert_eq!((scale["group"].as_str(), scale["kind"].as_str()), (Some("autoscaling"), Some("Scale")));
        assert!(resource_list("apps", "v2").is_none());
    }
}
