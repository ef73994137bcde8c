//! A container's environment as Kubernetes builds it: the variables of the Services that
//! exist when the pod starts, then `envFrom`, then `env` in order with `$(VAR)` references
//! to what came before, values from ConfigMaps, Secrets, the pod's own fields and its
//! resources.

use k8s_openapi::api::core::v1::{Container, Pod, Service};
use std::collections::{BTreeMap, HashMap};

/// The ConfigMaps and Secrets a pod refers to, fetched once per pod start. `None` marks
/// one that does not exist.
#[derive(Default)]
pub struct Sources {
    pub configmaps: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    pub secrets: HashMap<String, Option<BTreeMap<String, Vec<u8>>>>,
    /// The Services of the pod's namespace (when `enableServiceLinks` is on) and the
    /// `kubernetes` Service, for `<NAME>_SERVICE_HOST`-style variables.
    pub services: Vec<std::sync::Arc<Service>>,
}

/// What the pod knows about where it runs, for `fieldRef`s.
pub struct PodFacts<'a> {
    pub pod: &'a Pod,
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
    pub node_name: &'a str,
}

/// Why a container cannot be created; shown as `CreateContainerConfigError`.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl Sources {
    /// Names of every ConfigMap and Secret the pod's containers and volumes use.
    pub fn wanted(pod: &Pod) -> (Vec<String>, Vec<String>) {
        let (mut cms, mut secrets) = (Vec::new(), Vec::new());
        let Some(spec) = &pod.spec else { return (cms, secrets) };
        let regular = spec.containers.iter().chain(spec.init_containers.iter().flatten()).map(|c| (&c.env, &c.env_from));
        let ephemeral = spec.ephemeral_containers.iter().flatten().map(|c| (&c.env, &c.env_from));
        for (env, env_from) in regular.chain(ephemeral) {
            for e in env.iter().flatten() {
                if let Some(from) = &e.value_from {
                    if let Some(r) = &from.config_map_key_ref {
                        cms.push(r.name.clone());
                    }
                    if let Some(r) = &from.secret_key_ref {
                        secrets.push(r.name.clone());
                    }
                }
            }
            for f in env_from.iter().flatten() {
                if let Some(r) = &f.config_map_ref {
                    cms.push(r.name.clone());
                }
                if let Some(r) = &f.secret_ref {
                    secrets.push(r.name.clone());
                }
            }
        }
        for v in spec.volumes.iter().flatten() {
            if let Some(cm) = &v.config_map {
                cms.push(cm.name.clone());
            }
            if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
                secrets.push(s);
            }
            for p in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
                if let Some(cm) = &p.config_map {
                    cms.push(cm.name.clone());
                }
                if let Some(s) = &p.secret {
                    secrets.push(s.name.clone());
                }
            }
        }
        cms.sort();
        cms.dedup();
        secrets.sort();
        secrets.dedup();
        (cms, secrets)
    }

    fn configmap(&self, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.configmaps.get(name).and_then(Option::as_ref)
    }

    fn secret(&self, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.secrets.get(name).and_then(Option::as_ref)
    }
}

/// The environment of `container`, in order, as Kubernetes would give it.
pub fn container_env(container: &Container, facts: &PodFacts, sources: &Sources) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = facts.pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(slot) = env.iter_mut().find(|(name, _)| *name == k) {
            slot.1 = v;
        } else {
            env.push((k, v));
        }
    };
    for (k, v) in service_env(&sources.services) {
        set(&mut env, k, v);
    }
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or("");
        let (data, optional, what, name) = if let Some(r) = &from.config_map_ref {
            (sources.configmap(&r.name), r.optional == Some(true), "configmap", &r.name)
        } else if let Some(r) = &from.secret_ref {
            (sources.secret(&r.name), r.optional == Some(true), "secret", &r.name)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(&mut env, format!("{prefix}{k}"), String::from_utf8_lossy(v).into_owned());
                }
            }
            None if optional => {}
            None => return Err(ConfigError(format!("{what} \"{name}\" not found"))),
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            let looked_up = if let Some(r) = &from.config_map_key_ref {
                key_from(sources.configmap(&r.name), "configmap", "ConfigMap", ns, &r.name, &r.key, r.optional == Some(true))?
            } else if let Some(r) = &from.secret_key_ref {
                key_from(sources.secret(&r.name), "secret", "Secret", ns, &r.name, &r.key, r.optional == Some(true))?
            } else if let Some(r) = &from.field_ref {
                Some(field(facts, &r.field_path)?)
            } else if let Some(r) = &from.resource_field_ref {
                Some(resource_field(container, &r.resource, r.divisor.as_ref().map(|d| d.0.as_str()))?)
            } else {
                None
            };
            match looked_up {
                Some(v) => v,
                None => continue, // an optional reference to something missing: no variable
            }
        } else {
            expand(e.value.as_deref().unwrap_or(""), &env)
        };
        set(&mut env, e.name.clone(), value);
    }
    Ok(env)
}

/// Upstream's service link variables: `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`
/// (and `_<PORT NAME>`), and the Docker-link style `<NAME>_PORT_<port>_<PROTO>...`, for
/// every Service with a ClusterIP.
pub fn service_env(services: &[std::sync::Arc<Service>]) -> Vec<(String, String)> {
    let mut services: Vec<&Service> = services.iter().map(|s| &**s).collect();
    services.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let upper = |s: &str| s.to_uppercase().replace('-', "_");
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = svc.spec.as_ref() else { continue };
        let Some(ip) = spec.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None") else { continue };
        let ports = spec.ports.as_deref().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let name = upper(svc.metadata.name.as_deref().unwrap_or_default());
        out.push((format!("{name}_SERVICE_HOST"), ip.to_owned()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{name}_SERVICE_PORT_{}", upper(pn)), p.port.to_string()));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| p.protocol.clone().unwrap_or_else(|| "TCP".into());
        out.push((format!("{name}_PORT"), format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port)));
        for p in ports {
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            out.push((prefix.clone(), format!("{}://{ip}:{}", proto(p).to_lowercase(), p.port)));
            out.push((format!("{prefix}_PROTO"), proto(p).to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_owned()));
        }
    }
    out
}

fn key_from(data: Option<&BTreeMap<String, Vec<u8>>>, what: &str, kind: &str, ns: &str, name: &str, key: &str, optional: bool) -> Result<Option<String>, ConfigError> {
    match data {
        None if optional => Ok(None),
        None => Err(ConfigError(format!("{what} \"{name}\" not found"))),
        Some(d) => match d.get(key) {
            Some(v) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            None if optional => Ok(None),
            None => Err(ConfigError(format!("couldn't find key {key} in {kind} {ns}/{name}"))),
        },
    }
}

/// The value of a downward-API `fieldPath`.
pub fn field(facts: &PodFacts, path: &str) -> Result<String, ConfigError> {
    let meta = &facts.pod.metadata;
    let spec = facts.pod.spec.as_ref();
    let map_entry = |map: &Option<BTreeMap<String, String>>, key: &str| map.as_ref().and_then(|m| m.get(key)).cloned().unwrap_or_default();
    let value = match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "metadata.labels" => render_map(meta.labels.as_ref()),
        "metadata.annotations" => render_map(meta.annotations.as_ref()),
        "spec.nodeName" => facts.node_name.to_owned(),
        "spec.serviceAccountName" => spec.and_then(|s| s.service_account_name.clone()).unwrap_or_else(|| "default".into()),
        "status.podIP" | "status.podIPs" => facts.pod_ip.to_owned(),
        "status.hostIP" | "status.hostIPs" => facts.host_ip.to_owned(),
        p => {
            let keyed = |prefix: &str| p.strip_prefix(prefix).and_then(|rest| rest.strip_suffix("']")).map(str::to_owned);
            if let Some(k) = keyed("metadata.labels['") {
                map_entry(&meta.labels, &k)
            } else if let Some(k) = keyed("metadata.annotations['") {
                map_entry(&meta.annotations, &k)
            } else {
                return Err(ConfigError(format!("unsupported fieldPath: {p}")));
            }
        }
    };
    Ok(value)
}

/// `key="value"` lines, sorted, as the downward API writes labels and annotations.
fn render_map(map: Option<&BTreeMap<String, String>>) -> String {
    map.into_iter().flatten().map(|(k, v)| format!("{k}={v:?}")).collect::<Vec<_>>().join("\n")
}

/// `limits.memory`, `requests.cpu` ... of the container, divided by `divisor`.
pub fn resource_field(container: &Container, resource: &str, divisor: Option<&str>) -> Result<String, ConfigError> {
    let (kind, name) = resource.split_once('.').ok_or_else(|| ConfigError(format!("unsupported resource: {resource}")))?;
    let res = container.resources.as_ref();
    let map = match kind {
        "limits" => res.and_then(|r| r.limits.as_ref()),
        "requests" => res.and_then(|r| r.requests.as_ref()),
        _ => return Err(ConfigError(format!("unsupported resource: {resource}"))),
    };
    let raw = map.and_then(|m| m.get(name)).map(|q| q.0.as_str());
    let value = match (raw, name) {
        (Some(q), _) => crate::quantity::parse(q).filter(|v| *v >= 0.0).ok_or_else(|| ConfigError(format!("invalid quantity {q:?} for {resource}")))?,
        // Unset limits read as the node's allocatable, as upstream; requests as 0.
        (None, "cpu") if kind == "limits" => std::thread::available_parallelism().map_or(1, |n| n.get()) as f64,
        (None, "memory") if kind == "limits" => crate::agent::host_memory_bytes() as f64,
        (None, _) => 0.0,
    };
    let div = match divisor {
        Some(d) => crate::quantity::parse(d).filter(|d| *d > 0.0).ok_or_else(|| ConfigError(format!("invalid divisor {d:?}")))?,
        None => 1.0,
    };
    Ok(format!("{}", (value / div).ceil() as u64))
}

/// `$(VAR)` becomes VAR's value if it is already defined, `$$` escapes a `$`, and
/// anything else stays as written (Kubernetes' expansion rules).
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let name = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == name) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = inner;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(y: serde_json::Value) -> Pod {
        serde_json::from_value(y).unwrap()
    }

    #[test]
    fn references_expand_like_kubernetes() {
        let env = vec![("A".to_owned(), "1".to_owned())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5 $(A", &env), "cost $5 $(A");
    }

    #[test]
    fn env_from_configmaps_secrets_and_fields() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c",
                "envFrom": [{"configMapRef": {"name": "cm"}, "prefix": "CM_"}],
                "env": [
                    {"name": "GREETING", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "greeting"}}},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                    {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "MSG", "value": "$(GREETING) from $(POD)"},
                    {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}}
                ],
                "resources": {"limits": {"memory": "64Mi"}}}]}
        }));
        let mut sources = Sources::default();
        sources.configmaps.insert("cm".into(), Some([("greeting".to_owned(), b"hello".to_vec())].into()));
        sources.configmaps.insert("gone".into(), None);
        sources.secrets.insert("s".into(), Some([("password".to_owned(), b"hunter2".to_vec())].into()));
        assert_eq!(Sources::wanted(&p), (vec!["cm".to_owned(), "gone".to_owned()], vec!["s".to_owned()]));
        let facts = PodFacts { pod: &p, pod_ip: "127.1.0.2", host_ip: "127.0.0.1", node_name: "n" };
        let c = &p.spec.as_ref().unwrap().containers[0];
        let env = container_env(c, &facts, &sources).unwrap();
        let got: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(got, ["CM_greeting=hello", "GREETING=hello", "PASSWORD=hunter2", "POD=p", "IP=127.1.0.2", "APP=web", "MEM=64", "MSG=hello from p"]);

        sources.configmaps.insert("cm".into(), None);
        assert_eq!(container_env(c, &facts, &sources), Err(ConfigError("configmap \"cm\" not found".into())));
        sources.configmaps.insert("cm".into(), Some(BTreeMap::new()));
        assert_eq!(container_env(c, &facts, &sources), Err(ConfigError("couldn't find key greeting in ConfigMap ns/cm".into())));
    }
}
