//! The three PATCH flavours: JSON merge patch (RFC 7386), JSON patch (RFC 6902)
//! and Kubernetes strategic merge patch.
//!
//! Strategic merge needs to know, per list field, whether lists merge by a key,
//! merge as sets, or are replaced; upstream takes that from Go struct tags. Here a
//! small rule table keyed by kind and field path plays that role. Merging every
//! list by `name` would be wrong: container ports merge by `containerPort`,
//! mounts by `mountPath`, Service ports by `port`.

use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("the patch must be a JSON object")]
    NotAnObject,
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    #[error("the JSON patch could not be applied: {0}")]
    JsonPatchFailed(String),
    #[error("invalid strategic merge patch directive {directive} at {path}: {detail}")]
    Directive { directive: String, path: String, detail: String },
}

/// RFC 7386 JSON merge patch, in place.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let ops: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|e| PatchError::InvalidJsonPatch(e.to_string()))?;
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::JsonPatchFailed(e.to_string()))?;
    Ok(doc)
}

/// How a list field merges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// Atomic: the patch's list replaces the original.
    Replace,
    /// A set of primitives: union, original order first.
    Set,
    /// Elements merge pairwise by this key.
    Key(&'static str),
}

/// Where the pod spec sits in each kind that carries one.
fn pod_spec_prefix(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &["spec"],
        "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" | "Job" => &["spec", "template", "spec"],
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        _ => &[],
    }
}

const CONTAINER_LISTS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// The upstream `patchStrategy`/`patchMergeKey` of the list at `path` (field names, no indices).
fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    use ListStrategy::*;
    let p: Vec<&str> = path.iter().map(String::as_str).collect();
    let prefix = pod_spec_prefix(kind);
    if !prefix.is_empty() && p.len() > prefix.len() && p[..prefix.len()] == *prefix {
        match &p[prefix.len()..] {
            [c] if CONTAINER_LISTS.contains(c) => return Key("name"),
            ["volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims"] => return Key("name"),
            ["hostAliases"] => return Key("ip"),
            ["topologySpreadConstraints"] => return Key("topologyKey"),
            [c, field] if CONTAINER_LISTS.contains(c) => {
                return match *field {
                    "ports" => Key("containerPort"),
                    "env" => Key("name"),
                    "volumeMounts" => Key("mountPath"),
                    "volumeDevices" => Key("devicePath"),
                    "resizePolicy" => Key("resourceName"),
                    _ => Replace,
                };
            }
            _ => {}
        }
    }
    match p.as_slice() {
        ["spec", "ports"] if kind == "Service" => Key("port"),
        ["metadata", "finalizers"] => Set,
        ["metadata", "ownerReferences"] => Key("uid"),
        ["status", "conditions"] => Key("type"),
        ["status", "addresses"] if kind == "Node" => Key("type"),
        _ => Replace,
    }
}

/// Kubernetes strategic merge patch of `original` by `patch` for built-in `kind`.
pub fn strategic_merge_patch(original: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else { return Err(PatchError::NotAnObject) };
    let empty = Map::new();
    let orig = original.as_object().unwrap_or(&empty);
    let mut path = Vec::new();
    Ok(merge_map(orig, p, kind, &mut path)?.map(Value::Object).unwrap_or_else(|| Value::Object(Map::new())))
}

fn directive_error(directive: &str, path: &[String], detail: &str) -> PatchError {
    PatchError::Directive { directive: directive.into(), path: if path.is_empty() { ".".into() } else { path.join(".") }, detail: detail.into() }
}

/// Remove every directive from a value taken over wholesale from the patch.
fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().filter(|e| e.get("$patch").is_none()).map(strip).collect()),
        other => other.clone(),
    }
}

/// Merge a patch map into an original map. `None` means "delete this map".
fn merge_map(orig: &Map<String, Value>, patch: &Map<String, Value>, kind: &str, path: &mut Vec<String>) -> Result<Option<Map<String, Value>>, PatchError> {
    match patch.get("$patch") {
        None => {}
        Some(Value::String(s)) if s == "merge" => {}
        Some(Value::String(s)) if s == "delete" => return Ok(None),
        Some(Value::String(s)) if s == "replace" => {
            return Ok(Some(patch.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| (k.clone(), strip(v))).collect()));
        }
        Some(other) => return Err(directive_error("$patch", path, &format!("unknown value {other}"))),
    }
    let retain: Option<Vec<String>> = match patch.get("$retainKeys") {
        None => None,
        Some(Value::Array(a)) => Some(
            a.iter()
                .map(|v| v.as_str().map(String::from).ok_or_else(|| directive_error("$retainKeys", path, "must be a list of strings")))
                .collect::<Result<_, _>>()?,
        ),
        Some(_) => return Err(directive_error("$retainKeys", path, "must be a list of strings")),
    };
    let mut result = orig.clone();
    let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
    let mut deletions: Vec<(&str, &Vec<Value>)> = Vec::new();
    for (k, v) in patch {
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            let list = v.as_array().ok_or_else(|| directive_error(k, path, "must be a list"))?;
            orders.push((field, list));
        } else if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let list = v.as_array().ok_or_else(|| directive_error(k, path, "must be a list"))?;
            deletions.push((field, list));
        } else if k == "$patch" || k == "$retainKeys" {
        } else if k.starts_with('$') {
            return Err(directive_error(k, path, "unknown directive"));
        } else if v.is_null() {
            result.remove(k);
        } else {
            path.push(k.clone());
            let merged = merge_value(result.get(k), v, kind, path)?;
            path.pop();
            match merged {
                Some(m) => result.insert(k.clone(), m),
                None => result.remove(k),
            };
        }
    }
    for (field, values) in deletions {
        if let Some(Value::Array(list)) = result.get_mut(field) {
            list.retain(|x| !values.contains(x));
        }
    }
    for (field, order) in orders {
        path.push(field.to_string());
        let strategy = list_strategy(kind, path);
        path.pop();
        if let Some(Value::Array(list)) = result.get_mut(field) {
            reorder(list, order, strategy);
        }
    }
    if let Some(keep) = retain {
        result.retain(|k, _| keep.iter().any(|x| x == k));
    }
    Ok(Some(result))
}

fn merge_value(orig: Option<&Value>, patch: &Value, kind: &str, path: &mut Vec<String>) -> Result<Option<Value>, PatchError> {
    match patch {
        Value::Object(p) => {
            let empty = Map::new();
            let o = orig.and_then(Value::as_object).unwrap_or(&empty);
            Ok(merge_map(o, p, kind, path)?.map(Value::Object))
        }
        Value::Array(p) => {
            let empty = Vec::new();
            let o = orig.and_then(Value::as_array).unwrap_or(&empty);
            merge_list(o, p, kind, path).map(|l| Some(Value::Array(l)))
        }
        other => Ok(Some(other.clone())),
    }
}

fn merge_list(orig: &[Value], patch: &[Value], kind: &str, path: &mut Vec<String>) -> Result<Vec<Value>, PatchError> {
    // `{"$patch": "replace"}` as an element: the rest of the patch list is the new list.
    if patch.iter().any(|e| e.get("$patch").and_then(Value::as_str) == Some("replace")) {
        return Ok(patch.iter().filter(|e| e.get("$patch").is_none()).map(strip).collect());
    }
    match list_strategy(kind, path) {
        ListStrategy::Replace => Ok(patch.iter().map(strip).collect()),
        ListStrategy::Set => {
            let mut out = orig.to_vec();
            for v in patch {
                if !out.contains(v) {
                    out.push(v.clone());
                }
            }
            Ok(out)
        }
        ListStrategy::Key(key) => {
            let mut out = orig.to_vec();
            for el in patch {
                let Some(k) = el.get(key) else {
                    if el.get("$patch").is_some() {
                        return Err(directive_error("$patch", path, &format!("list element lacks its merge key {key}")));
                    }
                    out.push(strip(el));
                    continue;
                };
                let pos = out.iter().position(|o| o.get(key) == Some(k));
                match (el.get("$patch").and_then(Value::as_str), pos) {
                    (Some("delete"), _) => out.retain(|o| o.get(key) != Some(k)),
                    (_, Some(i)) => {
                        let merged = merge_value(Some(&out[i]), el, kind, path)?;
                        match merged {
                            Some(m) => out[i] = m,
                            None => {
                                out.remove(i);
                            }
                        }
                    }
                    (_, None) => out.push(strip(el)),
                }
            }
            Ok(out)
        }
    }
}

/// Apply `$setElementOrder`: named items first, in the given order; the rest keep
/// their relative order after them.
fn reorder(list: &mut Vec<Value>, order: &[Value], strategy: ListStrategy) {
    let rank = |item: &Value| -> Option<usize> {
        order.iter().position(|o| match strategy {
            ListStrategy::Key(key) => o.get(key).is_some() && o.get(key) == item.get(key),
            _ => o == item,
        })
    };
    let mut ranked: Vec<(usize, usize, Value)> = list.drain(..).enumerate().map(|(i, v)| (rank(&v).unwrap_or(usize::MAX), i, v)).collect();
    ranked.sort_by_key(|(r, i, _)| (*r, *i));
    list.extend(ranked.into_iter().map(|(_, _, v)| v));
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}, "finalizers": ["a", "b"]},
            "spec": {
                "replicas": 1,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {"spec": {
                    "containers": [
                        {"name": "web", "image": "web:1", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "1"}],
                         "volumeMounts": [{"name": "data", "mountPath": "/a"}, {"name": "data", "mountPath": "/b"}]},
                        {"name": "side", "image": "side:1", "ports": [{"containerPort": 80}]},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                }},
            },
        })
    }

    fn smp(patch: Value) -> Value {
        strategic_merge_patch(&deployment(), &patch, "Deployment").unwrap()
    }

    #[test]
    fn container_image_changes_by_name_and_keeps_the_rest() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:2"}]}}}}));
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs.as_array().unwrap().len(), 2);
        assert_eq!(cs[0]["image"], "web:1");
        assert_eq!(cs[1]["image"], "side:2");
        assert_eq!(cs[1]["ports"][0]["containerPort"], 80, "ports of each container stay theirs");
    }

    #[test]
    fn env_ports_and_mounts_merge_by_their_own_keys() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "web",
            "env": [{"name": "B", "value": "2"}],
            "ports": [{"containerPort": 8080}],
            "volumeMounts": [{"name": "data", "mountPath": "/b", "readOnly": true}]}]}}}}));
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        assert_eq!(c["ports"], json!([{"containerPort": 80}, {"containerPort": 8080}]));
        assert_eq!(c["volumeMounts"], json!([{"name": "data", "mountPath": "/a"}, {"name": "data", "mountPath": "/b", "readOnly": true}]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}});
        let out = strategic_merge_patch(&svc, &json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}), "Service").unwrap();
        assert_eq!(out["spec"]["ports"][1], json!({"name": "https", "port": 443, "targetPort": 8443}));
        assert_eq!(out["spec"]["ports"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn delete_directive_and_element_order() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"].as_array().unwrap().len(), 1);
        let out = smp(json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["name"], "side");
        assert!(out["spec"]["template"]["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn retain_keys_drops_the_old_strategy_fields() {
        let out = smp(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn primitive_lists_and_null() {
        let out = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c"], "labels": {"app": null}}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c"]));
        assert_eq!(out["metadata"]["labels"], json!({}));
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "args": ["x"]}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["args"], json!(["x"]));
    }

    #[test]
    fn map_replace_and_list_replace_directives() {
        let out = smp(json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}}}));
        assert_eq!(out["spec"]["template"]["spec"]["containers"], json!([{"name": "only", "image": "o:1"}]));
    }

    #[test]
    fn kubectl_apply_shaped_patch() {
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"}},
            "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"image": "web:2", "name": "web"}]}}},
        });
        let out = smp(patch);
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["image"], "web:2");
        assert_eq!(out["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
        assert_eq!(out["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"], "{}");
    }

    #[test]
    fn cronjob_containers_merge_by_name() {
        let cj = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}}}}}});
        let p = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}}});
        let out = strategic_merge_patch(&cj, &p, "CronJob").unwrap();
        let cs = &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
        assert_eq!((cs[0]["image"].as_str(), cs[1]["image"].as_str()), (Some("a:1"), Some("b:2")));
    }

    #[test]
    fn errors() {
        assert!(strategic_merge_patch(&deployment(), &json!({"$foo": 1}), "Deployment").is_err());
        assert!(strategic_merge_patch(&deployment(), &json!([1]), "Deployment").is_err());
        assert!(strategic_merge_patch(&deployment(), &json!({"spec": {"$patch": "explode"}}), "Deployment").is_err());
    }

    #[test]
    fn merge_and_json_patch() {
        let mut t = json!({"metadata": {"labels": {"a": "1"}}});
        merge_patch(&mut t, &json!({"metadata": {"labels": {"b": "2", "a": null}}}));
        assert_eq!(t, json!({"metadata": {"labels": {"b": "2"}}}));
        let out = json_patch(&t, &json!([{"op": "add", "path": "/metadata/labels/c", "value": "3"}, {"op": "remove", "path": "/metadata/labels/b"}, {"op": "replace", "path": "/metadata/labels/c", "value": "4"}])).unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"c": "4"}}}));
        assert!(json_patch(&t, &json!([{"op": "test", "path": "/metadata/labels/b", "value": "9"}])).is_err());
        assert!(json_patch(&t, &json!({"op": "add"})).is_err());
    }
}
