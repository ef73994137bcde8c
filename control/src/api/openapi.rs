//! The OpenAPI v3 documents: `/openapi/v3` and one document per served group-version.
//!
//! Schemas are built from the upstream type table ([`super::schema`]) in upstream's
//! shape (`allOf` references, `x-kubernetes-*` extensions, enum values appended to
//! descriptions), so `kubectl explain` prints upstream's field docs and client-side
//! apply finds the real merge keys. Each kind's path carries a PATCH operation that
//! names its group-version-kind and accepts `fieldValidation`, which is what kubectl
//! checks before it hands validation to the server (`--validate=strict`).

use super::discovery::KUBE_MINOR;
use super::resources::{self, Resource, RESOURCES};
use super::schema::{self, Field, Type};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Time";
const MICRO_TIME: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.MicroTime";
const RAW_EXTENSION: &str = "io.k8s.apimachinery.pkg.runtime.RawExtension";

/// The path of a group-version's document: `api/v1`, `apis/apps/v1`.
pub fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() { format!("api/{version}") } else { format!("apis/{group}/{version}") }
}

/// One group-version's document, built once and kept only in its served form.
struct Document {
    bytes: Vec<u8>,
    /// What clients cache the document by (`?hash=` in the root's URLs).
    hash: String,
}

static DOCUMENTS: LazyLock<HashMap<String, Document>> = LazyLock::new(|| {
    resources::group_versions()
        .into_iter()
        .map(|(g, v)| {
            let doc = document(g, v);
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let hash = hex_upper(&Sha256::digest(&bytes)[..16]);
            (gv_path(g, v), Document { bytes, hash })
        })
        .collect()
});

fn hex_upper(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02X}")).collect()
}

/// `/openapi/v3`: where each group-version's document lives.
pub fn root() -> Value {
    let mut paths = Map::new();
    for (g, v) in resources::group_versions() {
        let p = gv_path(g, v);
        let hash = DOCUMENTS.get(&p).map(|d| d.hash.as_str()).unwrap_or_default();
        paths.insert(p.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}));
    }
    json!({"paths": paths})
}

/// `/openapi/v3/<gv path>` as served, or `None` for a group-version we do not serve.
pub fn group_version_bytes(path: &str) -> Option<&'static [u8]> {
    DOCUMENTS.get(path).map(|d| d.bytes.as_slice())
}

/// The media type of the protobuf OpenAPI v2 document.
pub const V2_PROTOBUF: &str = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// `/openapi/v2` as the protobuf `openapi.v2.Document` kubectl asks for: the Swagger
/// version and info, with no paths or definitions. kubectl reads it only to validate
/// kinds whose v3 document does not take `fieldValidation`, i.e. kinds we do not serve;
/// finding no definition it skips validation and reports the unknown kind itself
/// (`no matches for kind`) instead of failing on a missing document.
pub fn v2_protobuf() -> Vec<u8> {
    fn field(out: &mut Vec<u8>, tag: u8, bytes: &[u8]) {
        out.push((tag << 3) | 2);
        let mut n = bytes.len();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(bytes);
    }
    let mut info = Vec::new();
    field(&mut info, 1, b"Kubernetes");
    field(&mut info, 2, format!("v1.{KUBE_MINOR}.0").as_bytes());
    let mut doc = Vec::new();
    field(&mut doc, 1, b"2.0");
    field(&mut doc, 2, &info);
    field(&mut doc, 8, b"");
    field(&mut doc, 9, b"");
    doc
}

/// `/openapi/v2` as JSON, for clients that ask for it so.
pub fn v2_json() -> Value {
    json!({"swagger": "2.0", "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")}, "paths": {}, "definitions": {}})
}

fn document(group: &str, version: &str) -> Value {
    let kinds: Vec<&Resource> = RESOURCES.iter().filter(|r| r.group == group && r.version == version).collect();
    let mut paths = Map::new();
    let mut gvks: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in &kinds {
        let gvk = json!({"group": r.group, "version": r.version, "kind": r.kind});
        if let Some(name) = schema::kind_name(&r.api_version(), r.kind) {
            gvks.entry(name).or_default().push(gvk.clone());
        }
        let object_path = if r.namespaced {
            format!("{}/namespaces/{{namespace}}/{}/{{name}}", r.group_version_path(), r.plural)
        } else {
            format!("{}/{}/{{name}}", r.group_version_path(), r.plural)
        };
        paths.insert(object_path, json!({"patch": patch_operation(r, gvk)}));
    }
    // Scale subresources answer with autoscaling/v1 Scale, which the document then holds too.
    if kinds.iter().any(|r| r.has(resources::Subresource::Scale)) {
        gvks.entry("io.k8s.api.autoscaling.v1.Scale".into()).or_default().push(json!({"group": "autoscaling", "version": "v1", "kind": "Scale"}));
    }
    let mut schemas = BTreeMap::new();
    let mut todo: Vec<String> = gvks.keys().cloned().collect();
    todo.push("io.k8s.apimachinery.pkg.apis.meta.v1.Status".into());
    todo.push("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions".into());
    while let Some(name) = todo.pop() {
        if schemas.contains_key(&name) {
            continue;
        }
        let s = type_schema(&name, &mut todo);
        schemas.insert(name, s);
    }
    for (name, list) in gvks {
        if let Some(Value::Object(s)) = schemas.get_mut(&name) {
            s.insert("x-kubernetes-group-version-kind".into(), Value::Array(list));
        }
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v1.{KUBE_MINOR}.0")},
        "paths": paths,
        "components": {"schemas": schemas},
    })
}

fn patch_operation(r: &Resource, gvk: Value) -> Value {
    let params = json!([
        {"name": "dryRun", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldManager", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "fieldValidation", "in": "query", "schema": {"type": "string", "uniqueItems": true}},
        {"name": "force", "in": "query", "schema": {"type": "boolean", "uniqueItems": true}},
    ]);
    let reference = schema::kind_name(&r.api_version(), r.kind).map(|n| json!({"$ref": format!("#/components/schemas/{n}")})).unwrap_or(json!({"type": "object"}));
    let patch_body = json!({"schema": {"type": "object"}});
    json!({
        "description": format!("partially update the specified {}", r.kind),
        "operationId": format!("patch{}{}", operation_group(r), r.kind),
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": gvk,
        "parameters": params,
        "requestBody": {"content": {
            "application/json-patch+json": patch_body,
            "application/merge-patch+json": patch_body,
            "application/strategic-merge-patch+json": patch_body,
            "application/apply-patch+yaml": patch_body,
        }, "required": true},
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
    })
}

/// `CoreV1`, `AppsV1`, `CoordinationV1`: the operation-id prefix upstream uses.
fn operation_group(r: &Resource) -> String {
    let g = if r.group.is_empty() { "core" } else { r.group.split('.').next().unwrap_or(r.group) };
    let mut c = g.chars();
    let first = c.next().map(|x| x.to_ascii_uppercase()).into_iter().collect::<String>();
    format!("{first}{}{}", c.as_str(), r.version.replacen('v', "V", 1))
}

/// The schema of one definition; definitions it refers to are pushed onto `todo`.
fn type_schema(name: &str, todo: &mut Vec<String>) -> Value {
    match name {
        QUANTITY => return json!({"description": "Quantity is a fixed-point representation of a number. It provides convenient marshaling/unmarshaling in JSON and YAML, in addition to String() and AsInt64() accessors.", "oneOf": [{"type": "string"}, {"type": "number"}]}),
        INT_OR_STRING => return json!({"description": "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to have, for example, a JSON field that can accept a name or number.", "format": "int-or-string", "oneOf": [{"type": "integer"}, {"type": "string"}]}),
        TIME => return json!({"description": "Time is a wrapper around time.Time which supports correct marshaling to YAML and JSON.  Wrappers are provided for many of the factory methods that the time package offers.", "format": "date-time", "type": "string"}),
        MICRO_TIME => return json!({"description": "MicroTime is version of Time with microsecond level precision.", "format": "date-time", "type": "string"}),
        RAW_EXTENSION => return json!({"description": "RawExtension is used to hold extensions in external versions.", "type": "object"}),
        _ => {}
    }
    let Some(def) = schema::get(name) else { return json!({"type": "object"}) };
    let mut properties = Map::new();
    let mut required = Vec::new();
    collect_properties(&def.fields, &mut properties, &mut required, todo);
    let mut s = Map::new();
    if let Some(d) = &def.description {
        s.insert("description".into(), json!(d));
    }
    s.insert("type".into(), json!("object"));
    if !required.is_empty() {
        s.insert("required".into(), json!(required));
    }
    s.insert("properties".into(), Value::Object(properties));
    Value::Object(s)
}

fn collect_properties(fields: &[Field], properties: &mut Map<String, Value>, required: &mut Vec<String>, todo: &mut Vec<String>) {
    for f in fields {
        if f.inline {
            if let Type::Ref { r#ref } = &f.ty {
                if let Some(inner) = schema::get(r#ref) {
                    collect_properties(&inner.fields, properties, required, todo);
                }
            }
            continue;
        }
        let Some(name) = &f.json else { continue };
        if f.required {
            required.push(name.clone());
        }
        properties.insert(name.clone(), field_schema(f, todo));
    }
}

fn field_schema(f: &Field, todo: &mut Vec<String>) -> Value {
    let mut s = match value_schema(&f.ty, todo) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let mut description = f.description.clone().unwrap_or_default();
    if let Type::String { r#enum } = &f.ty {
        if !r#enum.is_empty() {
            description.push_str("\n\nPossible enum values:");
            for e in r#enum {
                description.push_str(&format!("\n - `{:?}`", e.value));
                if !e.doc.is_empty() {
                    description.push(' ');
                    description.push_str(&e.doc);
                }
            }
        }
    }
    if !description.is_empty() {
        s.insert("description".into(), json!(description));
    }
    if let Some(v) = &f.list_type {
        s.insert("x-kubernetes-list-type".into(), json!(v));
    }
    if !f.list_map_keys.is_empty() {
        s.insert("x-kubernetes-list-map-keys".into(), json!(f.list_map_keys));
    }
    if let Some(v) = &f.map_type {
        s.insert("x-kubernetes-map-type".into(), json!(v));
    }
    if let Some(v) = &f.patch_merge_key {
        s.insert("x-kubernetes-patch-merge-key".into(), json!(v));
    }
    if let Some(v) = &f.patch_strategy {
        s.insert("x-kubernetes-patch-strategy".into(), json!(v));
    }
    Value::Object(s)
}

fn reference(name: &str, todo: &mut Vec<String>) -> Value {
    todo.push(name.to_string());
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}]})
}

fn value_schema(ty: &Type, todo: &mut Vec<String>) -> Value {
    match ty {
        Type::String { r#enum } if !r#enum.is_empty() => json!({"type": "string", "enum": r#enum.iter().map(|e| e.value.clone()).collect::<Vec<_>>()}),
        Type::String { .. } | Type::Duration => json!({"type": "string"}),
        Type::Bool => json!({"type": "boolean"}),
        Type::Int32 | Type::Byte => json!({"type": "integer", "format": "int32"}),
        Type::Int64 => json!({"type": "integer", "format": "int64"}),
        Type::Float64 => json!({"type": "number", "format": "double"}),
        Type::Bytes => json!({"type": "string", "format": "byte"}),
        Type::Quantity => reference(QUANTITY, todo),
        Type::Intorstring => reference(INT_OR_STRING, todo),
        Type::Time => reference(TIME, todo),
        Type::Microtime => reference(MICRO_TIME, todo),
        Type::Rawextension => reference(RAW_EXTENSION, todo),
        Type::Any => json!({}),
        Type::Ref { r#ref } => {
            let mut r = reference(r#ref, todo);
            r["default"] = json!({});
            r
        }
        Type::Array { items, .. } => json!({"type": "array", "items": value_schema(items, todo)}),
        Type::Map { values } => json!({"type": "object", "additionalProperties": value_schema(values, todo)}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A served document, parsed back.
    fn group_version(path: &str) -> Option<Value> {
        group_version_bytes(path).map(|b| serde_json::from_slice(b).unwrap())
    }

    #[test]
    fn every_kind_has_a_patch_path_with_field_validation_and_a_schema() {
        for (g, v) in resources::group_versions() {
            let doc = group_version(&gv_path(g, v)).unwrap();
            for r in RESOURCES.iter().filter(|r| r.group == g && r.version == v) {
                let found = doc["paths"].as_object().unwrap().values().any(|p| {
                    p["patch"]["x-kubernetes-group-version-kind"]["kind"] == r.kind
                        && p["patch"]["parameters"].as_array().unwrap().iter().any(|x| x["name"] == "fieldValidation")
                });
                assert!(found, "{} lacks a patch path", r.kind);
                let schemas = doc["components"]["schemas"].as_object().unwrap();
                let with_gvk = schemas.values().any(|s| s["x-kubernetes-group-version-kind"].as_array().is_some_and(|l| l.iter().any(|x| x["kind"] == r.kind)));
                assert!(with_gvk, "{} has no schema with its group-version-kind", r.kind);
            }
        }
    }

    #[test]
    fn every_reference_is_defined_in_its_document() {
        fn refs(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        out.push(r.trim_start_matches("#/components/schemas/").to_string());
                    }
                    m.values().for_each(|x| refs(x, out));
                }
                Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
                _ => {}
            }
        }
        for (g, v) in resources::group_versions() {
            let doc = group_version(&gv_path(g, v)).unwrap();
            let mut out = Vec::new();
            refs(&doc, &mut out);
            for r in out {
                assert!(doc["components"]["schemas"].get(&r).is_some(), "{r} is referenced but not defined in {g}/{v}");
            }
        }
    }

    #[test]
    fn deployment_strategy_has_upstream_docs_and_patch_keys() {
        let doc = group_version("apis/apps/v1").unwrap();
        let s = &doc["components"]["schemas"];
        let strategy = &s["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"];
        assert_eq!(strategy["allOf"][0]["$ref"], "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy");
        assert_eq!(strategy["x-kubernetes-patch-strategy"], "retainKeys");
        let max_surge = &s["io.k8s.api.apps.v1.RollingUpdateDeployment"]["properties"]["maxSurge"];
        assert!(max_surge["description"].as_str().unwrap().starts_with("The maximum number of pods that can be scheduled above the desired number of pods."));
        let containers = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
        assert_eq!((containers["x-kubernetes-patch-merge-key"].as_str(), containers["x-kubernetes-list-type"].as_str()), (Some("name"), Some("map")));
        let policy = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["restartPolicy"];
        assert!(policy["description"].as_str().unwrap().contains("Possible enum values:\n - `\"Always\"`"));
        assert_eq!(s["io.k8s.api.apps.v1.Deployment"]["x-kubernetes-group-version-kind"], json!([{"group": "apps", "version": "v1", "kind": "Deployment"}]));
    }

    #[test]
    fn the_root_lists_every_document_by_hash() {
        let root = root();
        for (g, v) in resources::group_versions() {
            let url = root["paths"][gv_path(g, v)]["serverRelativeURL"].as_str().unwrap();
            assert!(url.starts_with(&format!("/openapi/v3/{}?hash=", gv_path(g, v))) && url.len() > 40, "{url}");
        }
    }
}
