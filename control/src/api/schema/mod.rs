//! The Kubernetes API types, as data.
//!
//! `kube-types.json` holds, for every struct of the upstream API groups we serve, its
//! fields in declaration order with their JSON names, Go shape (pointer, omitempty,
//! inline), protobuf tags, patch strategies, list types and documentation. It is
//! extracted from the upstream Go sources by `scripts/gen-kube-types.py`.
//!
//! One table drives protobuf decoding ([`super::protobuf`]), the OpenAPI documents
//! ([`super::openapi`]) and strategic merge patch keys ([`super::patch`]), so they can
//! not disagree with each other or with upstream.

use serde::Deserialize;
use std::collections::HashMap;
use std::sync::LazyLock;

/// A field's type.
#[derive(Debug, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Type {
    String {
        #[serde(default)]
        r#enum: Vec<EnumValue>,
    },
    Bool,
    Int32,
    Int64,
    Float64,
    /// A Go `byte`; only seen inside `[]byte`, which is [`Type::Bytes`].
    Byte,
    /// `[]byte`: base64 in JSON.
    Bytes,
    /// `resource.Quantity`: a string such as `100m` or `1Gi`.
    Quantity,
    /// `intstr.IntOrString`: a number or a string.
    Intorstring,
    /// `metav1.Time`: RFC 3339, seconds.
    Time,
    /// `metav1.MicroTime`: RFC 3339, microseconds.
    Microtime,
    /// `metav1.Duration`: a Go duration string such as `1h0m0s`.
    Duration,
    /// `runtime.RawExtension` / `FieldsV1`: embedded JSON.
    Rawextension,
    /// `interface{}`: anything.
    Any,
    /// A struct, by its OpenAPI definition name.
    Ref { r#ref: String },
    Array {
        items: Box<Type>,
        /// A named slice type (`type ExtraValue []string`), which protobuf wraps in a message.
        #[serde(default)]
        named: bool,
    },
    /// `map[string]T`.
    Map { values: Box<Type> },
}

#[derive(Debug, Deserialize)]
pub struct EnumValue {
    pub value: String,
    pub doc: String,
}

/// One struct field.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    /// The JSON name; `None` for inline (embedded) fields.
    pub json: Option<String>,
    #[serde(rename = "type")]
    pub ty: Type,
    /// Go struct embedding: the fields of `ty` sit directly in this object.
    #[serde(default)]
    pub inline: bool,
    /// A Go pointer: present-but-zero means something (`replicas: 0`).
    #[serde(default)]
    pub pointer: bool,
    /// `omitempty`: a zero value is the same as no value.
    #[serde(default)]
    pub omitempty: bool,
    /// The protobuf field number.
    pub tag: Option<u32>,
    #[serde(default)]
    pub patch_strategy: Option<String>,
    #[serde(default)]
    pub patch_merge_key: Option<String>,
    #[serde(default)]
    pub list_type: Option<String>,
    #[serde(default)]
    pub list_map_keys: Vec<String>,
    #[serde(default)]
    pub map_type: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub description: Option<String>,
}

/// One struct type.
#[derive(Debug, Deserialize)]
pub struct TypeDef {
    #[serde(default)]
    pub description: Option<String>,
    pub fields: Vec<Field>,
    /// A top-level object (it embeds TypeMeta): it has an apiVersion and kind.
    #[serde(default)]
    pub object: bool,
    /// Field index by protobuf tag, filled after loading.
    #[serde(skip)]
    by_tag: HashMap<u32, usize>,
}

impl TypeDef {
    /// The index in `fields` of the field with this protobuf number.
    pub fn field_index(&self, tag: u32) -> Option<usize> {
        self.by_tag.get(&tag).copied()
    }

    /// The field with this JSON name, looking through inline fields.
    pub fn field(&self, json: &str) -> Option<&Field> {
        self.fields.iter().find_map(|f| match (&f.json, &f.ty) {
            (Some(n), _) if n == json => Some(f),
            (None, Type::Ref { r#ref }) if f.inline => types().get(r#ref)?.field(json),
            _ => None,
        })
    }
}

#[derive(Deserialize)]
struct Data {
    version: String,
    types: HashMap<String, TypeDef>,
}

static DATA: LazyLock<Data> = LazyLock::new(|| {
    let mut data: Data = serde_json::from_str(include_str!("kube-types.json")).expect("kube-types.json is valid (checked by its unit test)");
    for t in data.types.values_mut() {
        t.by_tag = t.fields.iter().enumerate().filter_map(|(i, f)| Some((f.tag?, i))).collect();
    }
    data
});

/// Every type, by OpenAPI definition name (`io.k8s.api.apps.v1.Deployment`).
pub fn types() -> &'static HashMap<String, TypeDef> {
    &DATA.types
}

/// The upstream release the types were taken from.
pub fn upstream_version() -> &'static str {
    &DATA.version
}

pub fn get(name: &str) -> Option<&'static TypeDef> {
    DATA.types.get(name)
}

/// The definition name of a kind: `apps/v1`, `Deployment` -> `io.k8s.api.apps.v1.Deployment`.
/// Core kinds live in `io.k8s.api.core.v1`; a group's package is its first DNS label
/// (`rbac.authorization.k8s.io` -> `rbac`). Meta kinds (DeleteOptions, Status, ...) are
/// found in `io.k8s.apimachinery.pkg.apis.meta.v1` under any group-version.
pub fn kind_name(api_version: &str, kind: &str) -> Option<String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let package = if group.is_empty() { "core" } else { group.split('.').next().unwrap_or(group) };
    let name = format!("io.k8s.api.{package}.{version}.{kind}");
    if DATA.types.get(&name).is_some_and(|t| t.object) {
        return Some(name);
    }
    let meta = format!("io.k8s.apimachinery.pkg.apis.meta.v1.{kind}");
    DATA.types.get(&meta).is_some_and(|t| t.object).then_some(meta)
}

/// The short type name kubectl shows: the last segment of the definition name.
pub fn short_name(definition: &str) -> &str {
    definition.rsplit('.').next().unwrap_or(definition)
}

/// The upstream type of the root of an object of kind `kind`, if it is a served kind.
pub fn root_type(kind: &str) -> Option<&'static TypeDef> {
    let r = super::resources::RESOURCES.iter().find(|r| r.kind == kind)?;
    get(&kind_name(&r.api_version(), kind)?)
}

/// Remove what upstream's Go decoding turns into "no value": a zero (`0`, `false`, `""`,
/// `[]`, `{}`, `null`) in a non-pointer `omitempty` field, and a zero IntOrString. So a
/// JSON `nodePort: 0` on a ClusterIP Service is no node port, as it is upstream and as it
/// is from protobuf; pointer fields keep their zeros (`replicas: 0`).
pub fn drop_go_zero_values(kind: &str, obj: &mut serde_json::Value) {
    if let (Some(def), serde_json::Value::Object(m)) = (root_type(kind), obj) {
        drop_zeros(def, m, 0);
    }
}

fn drop_zeros(def: &TypeDef, obj: &mut serde_json::Map<String, serde_json::Value>, depth: usize) {
    use serde_json::Value;
    // The type table is finite but a hostile object is not: stop where upstream's JSON
    // decoder would have refused the nesting anyway.
    if depth > 64 {
        return;
    }
    for f in &def.fields {
        if f.inline {
            if let Some(inner) = match &f.ty { Type::Ref { r#ref } => get(r#ref), _ => None } {
                drop_zeros(inner, obj, depth + 1);
            }
            continue;
        }
        let Some(name) = &f.json else { continue };
        let Some(v) = obj.get_mut(name) else { continue };
        let zero = match v {
            Value::Null => !matches!(f.ty, Type::Time | Type::Microtime | Type::Ref { .. }),
            Value::Bool(b) => !*b,
            Value::Number(n) => n.as_f64() == Some(0.0),
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(m) => m.is_empty() && matches!(f.ty, Type::Map { .. }),
        };
        let scalar_or_collection = !matches!(f.ty, Type::Ref { .. } | Type::Time | Type::Microtime | Type::Rawextension | Type::Any);
        if zero && !f.pointer && scalar_or_collection && (f.omitempty || matches!(f.ty, Type::Intorstring)) {
            obj.remove(name);
            continue;
        }
        let inner = |t: &Type| match t {
            Type::Ref { r#ref } => get(r#ref),
            _ => None,
        };
        match (&f.ty, v) {
            (Type::Ref { r#ref }, Value::Object(m)) => {
                if let Some(d) = get(r#ref) {
                    drop_zeros(d, m, depth + 1);
                }
            }
            (Type::Array { items, .. }, Value::Array(list)) => {
                if let Some(d) = inner(items) {
                    for item in list.iter_mut().filter_map(Value::as_object_mut) {
                        drop_zeros(d, item, depth + 1);
                    }
                }
            }
            (Type::Map { values }, Value::Object(m)) => {
                if let Some(d) = inner(values) {
                    for item in m.values_mut().filter_map(Value::as_object_mut) {
                        drop_zeros(d, item, depth + 1);
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_loads_and_every_reference_resolves() {
        assert!(types().len() > 400);
        for (name, t) in types() {
            for f in &t.fields {
                let mut ty = &f.ty;
                loop {
                    match ty {
                        Type::Array { items, .. } => ty = items,
                        Type::Map { values } => ty = values,
                        Type::Ref { r#ref } => {
                            assert!(types().contains_key(r#ref), "{name}.{:?} refers to missing {ref}", f.json);
                            break;
                        }
                        _ => break,
                    }
                }
            }
        }
    }

    #[test]
    fn kinds_resolve_to_their_packages() {
        assert_eq!(kind_name("apps/v1", "Deployment").as_deref(), Some("io.k8s.api.apps.v1.Deployment"));
        assert_eq!(kind_name("v1", "Pod").as_deref(), Some("io.k8s.api.core.v1.Pod"));
        assert_eq!(kind_name("rbac.authorization.k8s.io/v1", "Role").as_deref(), Some("io.k8s.api.rbac.v1.Role"));
        assert_eq!(kind_name("v1", "DeleteOptions").as_deref(), Some("io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"));
        assert_eq!(kind_name("v1", "PodSpec"), None, "not a top-level kind");
        assert_eq!(kind_name("example.com/v1", "Widget"), None);
    }

    #[test]
    fn json_zero_values_are_dropped_as_go_decodes_them() {
        let mut svc = serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "finalizers": [], "labels": {}},
            "spec": {"type": "ClusterIP", "clusterIP": "", "ports": [{"name": "", "port": 80, "nodePort": 0, "targetPort": 0}], "publishNotReadyAddresses": false}});
        drop_go_zero_values("Service", &mut svc);
        assert_eq!(svc, serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "ports": [{"port": 80}]}}));
        let mut d = serde_json::json!({"spec": {"replicas": 0, "paused": false, "template": {"metadata": {"creationTimestamp": null},
            "spec": {"automountServiceAccountToken": false, "hostNetwork": false, "volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x", "type": ""}}],
                "containers": [{"name": "c", "image": "", "ports": [{"containerPort": 0, "hostPort": 0}]}]}}}});
        drop_go_zero_values("Deployment", &mut d);
        assert_eq!(d, serde_json::json!({"spec": {"replicas": 0, "template": {"metadata": {"creationTimestamp": null},
            "spec": {"automountServiceAccountToken": false, "volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x", "type": ""}}],
                "containers": [{"name": "c", "ports": [{"containerPort": 0}]}]}}}}));
        // Kinds without upstream types are left alone.
        let mut w = serde_json::json!({"spec": {"n": 0}});
        drop_go_zero_values("Widget", &mut w);
        assert_eq!(w, serde_json::json!({"spec": {"n": 0}}));
    }

    #[test]
    fn go_shapes_come_through() {
        let port = get("io.k8s.api.core.v1.ServicePort").unwrap();
        let node_port = port.field("nodePort").unwrap();
        assert!(node_port.omitempty && !node_port.pointer && node_port.tag == Some(5));
        let replicas = get("io.k8s.api.apps.v1.DeploymentSpec").unwrap().field("replicas").unwrap();
        assert!(replicas.pointer);
        let volume = get("io.k8s.api.core.v1.Volume").unwrap();
        assert!(volume.field("emptyDir").is_some(), "inline VolumeSource fields are found through the volume");
        let containers = get("io.k8s.api.core.v1.PodSpec").unwrap().field("containers").unwrap();
        assert_eq!((containers.patch_strategy.as_deref(), containers.patch_merge_key.as_deref()), (Some("merge"), Some("name")));
    }
}
