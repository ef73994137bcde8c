//! Protobuf decoding checked against two independent codecs: k8s-pb (prost types
//! generated from upstream's .proto files) for field numbers and wire types, and
//! k8s-openapi (serde types generated from upstream's OpenAPI spec) for JSON names.

use super::*;
use crate::api::resources::RESOURCES;
use prost::Message;
use serde_json::json;
use std::collections::HashSet;

// ------------------------------------------------------------------ encoding
// The server answers in JSON only; this encoder exists to produce the bodies the
// decoder is checked on.

/// Encode a JSON object (with `apiVersion` and `kind`) as a Kubernetes protobuf body.
fn encode_object(obj: &Value) -> Result<Vec<u8>, ProtobufError> {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let unknown = || ProtobufError::UnknownKind { api_version: api_version.into(), kind: kind.into() };
    let def = schema::kind_name(api_version, kind).and_then(|n| schema::get(&n)).ok_or_else(unknown)?;
    let map = obj.as_object().ok_or_else(unknown)?;
    let mut raw = Vec::new();
    encode_message(def, map, &mut raw, 0).map_err(|reason| ProtobufError::Object { kind: kind.into(), reason })?;
    let mut type_meta = Vec::new();
    put_bytes(&mut type_meta, 1, api_version.as_bytes());
    put_bytes(&mut type_meta, 2, kind.as_bytes());
    let mut env = Vec::new();
    put_bytes(&mut env, 1, &type_meta);
    put_bytes(&mut env, 2, &raw);
    put_bytes(&mut env, 3, b"");
    put_bytes(&mut env, 4, b"");
    let mut out = MAGIC.to_vec();
    out.extend(env);
    Ok(out)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u32, wire: u8) {
    put_varint(out, (u64::from(tag) << 3) | u64::from(wire));
}

fn put_bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    put_key(out, tag, 2);
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

fn parse_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..num_end].parse().ok()?;
        rest = &rest[num_end..];
        let unit_end = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_end] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * scale;
        rest = &rest[unit_end..];
    }
    Some(if neg { -(total as i64) } else { total as i64 })
}


fn encode_message(def: &TypeDef, obj: &Map<String, Value>, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err("the object nests too deeply".into());
    }
    for field in &def.fields {
        let Some(tag) = field.tag else { continue };
        if field.inline {
            let Type::Ref { r#ref } = &field.ty else { continue };
            let inner = schema::get(r#ref).ok_or_else(|| format!("unknown type {ref}"))?;
            let mut buf = Vec::new();
            encode_message(inner, obj, &mut buf, depth + 1)?;
            put_bytes(out, tag, &buf);
            continue;
        }
        let Some(name) = &field.json else { continue };
        let Some(v) = obj.get(name) else { continue };
        if v.is_null() {
            continue;
        }
        let at = |e: String| format!("{name}: {e}");
        match &field.ty {
            Type::Array { items, .. } => {
                for item in v.as_array().ok_or_else(|| at("expected a list".into()))? {
                    encode_value(items, tag, item, out, depth).map_err(at)?;
                }
            }
            Type::Map { values } => {
                let m = v.as_object().ok_or_else(|| at("expected a map".into()))?;
                // Go marshals map entries in key order.
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let mut entry = Vec::new();
                    put_bytes(&mut entry, 1, k.as_bytes());
                    match (&**values, &m[k]) {
                        (Type::Array { items, named: true }, Value::Array(list)) => {
                            let mut wrapped = Vec::new();
                            for item in list {
                                encode_value(items, 1, item, &mut wrapped, depth).map_err(at)?;
                            }
                            put_bytes(&mut entry, 2, &wrapped);
                        }
                        (ty, val) => encode_value(ty, 2, val, &mut entry, depth).map_err(at)?,
                    }
                    put_bytes(out, tag, &entry);
                }
            }
            ty => encode_value(ty, tag, v, out, depth).map_err(at)?,
        }
    }
    Ok(())
}

fn encode_value(ty: &Type, tag: u32, v: &Value, out: &mut Vec<u8>, depth: usize) -> Result<(), String> {
    let int = |v: &Value| v.as_i64().ok_or_else(|| format!("expected an integer, got {v}"));
    let text = |v: &Value| v.as_str().map(str::to_string).ok_or_else(|| format!("expected a string, got {v}"));
    match ty {
        Type::String { .. } => put_bytes(out, tag, text(v)?.as_bytes()),
        Type::Bool => {
            put_key(out, tag, 0);
            put_varint(out, u64::from(v.as_bool().ok_or_else(|| format!("expected a boolean, got {v}"))?));
        }
        Type::Int32 | Type::Int64 | Type::Byte => {
            put_key(out, tag, 0);
            put_varint(out, int(v)? as u64);
        }
        Type::Float64 => {
            put_key(out, tag, 1);
            out.extend_from_slice(&v.as_f64().ok_or_else(|| format!("expected a number, got {v}"))?.to_bits().to_le_bytes());
        }
        Type::Bytes => {
            let b = base64::engine::general_purpose::STANDARD.decode(text(v)?).map_err(|e| format!("not base64: {e}"))?;
            put_bytes(out, tag, &b);
        }
        Type::Quantity => {
            let s = match v {
                Value::Number(n) => n.to_string(),
                other => text(other)?,
            };
            let mut m = Vec::new();
            put_bytes(&mut m, 1, s.as_bytes());
            put_bytes(out, tag, &m);
        }
        Type::Intorstring => {
            let mut m = Vec::new();
            put_key(&mut m, 1, 0);
            match v {
                Value::String(s) => {
                    put_varint(&mut m, 1);
                    put_bytes(&mut m, 3, s.as_bytes());
                }
                other => {
                    put_varint(&mut m, 0);
                    put_key(&mut m, 2, 0);
                    put_varint(&mut m, int(other)? as u64);
                }
            }
            put_bytes(out, tag, &m);
        }
        Type::Time | Type::Microtime => {
            let t = chrono::DateTime::parse_from_rfc3339(&text(v)?).map_err(|e| format!("not an RFC 3339 time: {e}"))?;
            let mut m = Vec::new();
            put_key(&mut m, 1, 0);
            put_varint(&mut m, t.timestamp() as u64);
            if matches!(ty, Type::Microtime) {
                put_key(&mut m, 2, 0);
                put_varint(&mut m, u64::from(t.timestamp_subsec_nanos()));
            }
            put_bytes(out, tag, &m);
        }
        Type::Duration => {
            let ns = parse_duration(&text(v)?).ok_or_else(|| format!("not a duration: {v}"))?;
            let mut m = Vec::new();
            put_key(&mut m, 1, 0);
            put_varint(&mut m, ns as u64);
            put_bytes(out, tag, &m);
        }
        Type::Rawextension => {
            let mut m = Vec::new();
            put_bytes(&mut m, 1, &serde_json::to_vec(v).map_err(|e| e.to_string())?);
            put_bytes(out, tag, &m);
        }
        Type::Any => {}
        Type::Ref { r#ref } => {
            let def = schema::get(r#ref).ok_or_else(|| format!("unknown type {ref}"))?;
            let mut m = Vec::new();
            encode_message(def, v.as_object().ok_or_else(|| format!("expected an object, got {v}"))?, &mut m, depth + 1)?;
            put_bytes(out, tag, &m);
        }
        Type::Array { .. } | Type::Map { .. } => return Err("a list or map nested directly in a list".into()),
    }
    Ok(())
}

/// A JSON value for every field of `def`, recursively: every string, number, list and
/// map non-empty, so nothing may legitimately be dropped on the way through.
fn fill(def: &TypeDef, path: &mut Vec<String>) -> Map<String, Value> {
    let mut out = Map::new();
    for f in &def.fields {
        if f.inline {
            if let Type::Ref { r#ref } = &f.ty {
                if let Some(inner) = schema::get(r#ref) {
                    out.extend(fill(inner, path));
                }
            }
            continue;
        }
        let Some(name) = &f.json else { continue };
        if f.tag.is_none() {
            continue;
        }
        if let Some(v) = fill_value(&f.ty, name, path) {
            out.insert(name.clone(), v);
        }
    }
    out
}

fn fill_value(ty: &Type, name: &str, path: &mut Vec<String>) -> Option<Value> {
    Some(match ty {
        Type::String { r#enum } => match r#enum.first() {
            Some(e) => json!(e.value),
            None => json!(format!("{name}-value")),
        },
        Type::Bool => json!(true),
        Type::Int32 => json!(7),
        Type::Int64 => json!(1_234_567_890_123i64),
        Type::Float64 => json!(1.5),
        Type::Byte => json!(1),
        Type::Bytes => json!("aGVsbG8="),
        Type::Quantity => json!("250m"),
        Type::Intorstring => if name.len() % 2 == 0 { json!("25%") } else { json!(8080) },
        Type::Time => json!("2024-01-02T03:04:05Z"),
        Type::Microtime => json!("2024-01-02T03:04:05.123456Z"),
        Type::Duration => json!("1m30s"),
        Type::Rawextension => json!({"apiVersion": "v1", "kind": "Example", "data": [1, 2]}),
        Type::Any => return None,
        Type::Ref { r#ref } => {
            // A type already on the way down (a recursive schema) stops here.
            if path.contains(r#ref) {
                return None;
            }
            path.push(r#ref.clone());
            let v = fill(schema::get(r#ref)?, path);
            path.pop();
            Value::Object(v)
        }
        Type::Array { items, .. } => json!([fill_value(items, name, path)?]),
        Type::Map { values } => json!({"key-1": fill_value(values, name, path)?}),
    })
}

fn filled(api_version: &str, kind: &str) -> Value {
    let name = schema::kind_name(api_version, kind).unwrap_or_else(|| panic!("{api_version} {kind} has no schema"));
    let mut obj = fill(schema::get(&name).unwrap(), &mut vec![name.clone()]);
    obj.insert("apiVersion".into(), json!(api_version));
    obj.insert("kind".into(), json!(kind));
    Value::Object(obj)
}

/// The typed message inside a protobuf body.
fn raw_of(body: &[u8]) -> Vec<u8> {
    let env = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).unwrap();
    env.raw.unwrap()
}

fn rewrap(body: &[u8], raw: Vec<u8>) -> Vec<u8> {
    let mut env = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&body[4..]).unwrap();
    env.raw = Some(raw);
    let mut out = MAGIC.to_vec();
    out.extend(env.encode_to_vec());
    out
}

/// Both codecs agree with ours for one kind: the filled object survives our encoder,
/// prost's decode and re-encode (which drops fields it does not know and fails on wrong
/// wire types), and our decoder; and serde through the k8s-openapi type.
fn round_trip<P: Message + Default, O: serde::de::DeserializeOwned + serde::Serialize>(api_version: &str, kind: &str) {
    let obj = filled(api_version, kind);
    let body = encode_object(&obj).unwrap();
    let typed = P::decode(raw_of(&body).as_slice()).unwrap_or_else(|e| panic!("prost cannot decode our {kind}: {e}"));
    let again = rewrap(&body, typed.encode_to_vec());
    let decoded = decode_object(&again).unwrap();
    assert_eq!(diff(&obj, &decoded), Vec::<String>::new(), "{kind}: protobuf through k8s-pb differs from the JSON sent");

    let typed: O = serde_json::from_value(obj.clone()).unwrap_or_else(|e| panic!("k8s-openapi cannot read the {kind} JSON: {e}"));
    let mut json_decoded = serde_json::to_value(&typed).unwrap();
    // k8s-openapi writes apiVersion and kind on embedded objects (a StatefulSet's claim
    // templates); protobuf carries no TypeMeta for them, in upstream's encoding too.
    fn drop_embedded_type_meta(v: &mut Value, like: &Value) {
        match (v, like) {
            (Value::Object(m), Value::Object(l)) => {
                for k in ["apiVersion", "kind"] {
                    if !l.contains_key(k) {
                        m.remove(k);
                    }
                }
                for (k, x) in m.iter_mut() {
                    if let Some(y) = l.get(k) {
                        drop_embedded_type_meta(x, y);
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => a.iter_mut().zip(b).for_each(|(x, y)| drop_embedded_type_meta(x, y)),
            _ => {}
        }
    }
    drop_embedded_type_meta(&mut json_decoded, &decoded);
    assert_eq!(diff(&json_decoded, &decoded), Vec::<String>::new(), "{kind}: protobuf-decoded differs from JSON-decoded");
}

/// Paths at which two JSON values differ.
fn diff(a: &Value, b: &Value) -> Vec<String> {
    fn walk(a: &Value, b: &Value, at: &str, out: &mut Vec<String>) {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let keys: HashSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    match (x.get(k), y.get(k)) {
                        (Some(p), Some(q)) => walk(p, q, &format!("{at}.{k}"), out),
                        (Some(_), None) => out.push(format!("{at}.{k} only in the first")),
                        (None, Some(_)) => out.push(format!("{at}.{k} only in the second")),
                        (None, None) => {}
                    }
                }
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    walk(p, q, &format!("{at}[{i}]"), out);
                }
            }
            (p, q) if p != q => out.push(format!("{at}: {p} != {q}")),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(a, b, "", &mut out);
    out.sort();
    out
}

macro_rules! round_trips {
    ($($api_version:literal $kind:literal => $pb:ty, $oa:ty;)*) => {
        /// Every served kind, with its k8s-pb and k8s-openapi types.
        const COVERED: &[(&str, &str)] = &[$(($api_version, $kind)),*];

        #[test]
        fn every_served_kind_round_trips() {
            $( round_trip::<$pb, $oa>($api_version, $kind); )*
        }
    };
}

use k8s_openapi::api as oa;
use k8s_pb::api as pb;

round_trips! {
    "v1" "Namespace" => pb::core::v1::Namespace, oa::core::v1::Namespace;
    "v1" "Pod" => pb::core::v1::Pod, oa::core::v1::Pod;
    "v1" "Service" => pb::core::v1::Service, oa::core::v1::Service;
    "v1" "Endpoints" => pb::core::v1::Endpoints, oa::core::v1::Endpoints;
    "v1" "ConfigMap" => pb::core::v1::ConfigMap, oa::core::v1::ConfigMap;
    "v1" "Secret" => pb::core::v1::Secret, oa::core::v1::Secret;
    "v1" "Node" => pb::core::v1::Node, oa::core::v1::Node;
    "v1" "Event" => pb::core::v1::Event, oa::core::v1::Event;
    "v1" "ServiceAccount" => pb::core::v1::ServiceAccount, oa::core::v1::ServiceAccount;
    "v1" "ReplicationController" => pb::core::v1::ReplicationController, oa::core::v1::ReplicationController;
    "v1" "Binding" => pb::core::v1::Binding, oa::core::v1::Binding;
    "apps/v1" "Deployment" => pb::apps::v1::Deployment, oa::apps::v1::Deployment;
    "apps/v1" "ReplicaSet" => pb::apps::v1::ReplicaSet, oa::apps::v1::ReplicaSet;
    "apps/v1" "StatefulSet" => pb::apps::v1::StatefulSet, oa::apps::v1::StatefulSet;
    "apps/v1" "DaemonSet" => pb::apps::v1::DaemonSet, oa::apps::v1::DaemonSet;
    "apps/v1" "ControllerRevision" => pb::apps::v1::ControllerRevision, oa::apps::v1::ControllerRevision;
    "batch/v1" "Job" => pb::batch::v1::Job, oa::batch::v1::Job;
    "batch/v1" "CronJob" => pb::batch::v1::CronJob, oa::batch::v1::CronJob;
    "policy/v1" "PodDisruptionBudget" => pb::policy::v1::PodDisruptionBudget, oa::policy::v1::PodDisruptionBudget;
    "policy/v1" "Eviction" => pb::policy::v1::Eviction, oa::policy::v1::Eviction;
    "coordination.k8s.io/v1" "Lease" => pb::coordination::v1::Lease, oa::coordination::v1::Lease;
    "discovery.k8s.io/v1" "EndpointSlice" => pb::discovery::v1::EndpointSlice, oa::discovery::v1::EndpointSlice;
    "node.k8s.io/v1" "RuntimeClass" => pb::node::v1::RuntimeClass, oa::node::v1::RuntimeClass;
    "autoscaling/v1" "Scale" => pb::autoscaling::v1::Scale, oa::autoscaling::v1::Scale;
}

#[test]
fn the_round_trip_covers_every_served_kind() {
    for r in RESOURCES {
        assert!(COVERED.contains(&(r.api_version().as_str(), r.kind)), "{} {} has no protobuf round-trip test", r.api_version(), r.kind);
    }
}

fn body(obj: Value) -> Vec<u8> {
    encode_object(&obj).unwrap()
}

#[test]
fn zero_values_follow_go_json() {
    // kubectl create service clusterip: every port carries nodePort 0 and an empty name.
    let svc = body(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"type": "ClusterIP", "clusterIP": "", "ports": [{"name": "", "port": 80, "targetPort": 8080, "nodePort": 0, "protocol": "TCP"}]}}));
    let got = decode_object(&svc).unwrap();
    assert_eq!(got["spec"], json!({"type": "ClusterIP", "ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}]}));
    // Pointers keep an explicit zero or false.
    let d = body(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 0, "paused": false, "template": {"spec": {"automountServiceAccountToken": false, "hostNetwork": false, "containers": []}}}}));
    let got = decode_object(&d).unwrap();
    assert_eq!(got["spec"]["replicas"], 0);
    assert!(got["spec"].get("paused").is_none(), "a non-pointer false is no value");
    assert_eq!(got["spec"]["template"]["spec"], json!({"automountServiceAccountToken": false}));
}

#[test]
fn a_zero_int_or_string_is_unset_but_a_pointer_one_is_zero() {
    let d = body(json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}}}));
    let got = decode_object(&d).unwrap();
    assert_eq!(got["spec"]["strategy"]["rollingUpdate"], json!({"maxSurge": 0, "maxUnavailable": "25%"}));
    let svc = body(json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": 0}]}}));
    assert_eq!(decode_object(&svc).unwrap()["spec"]["ports"], json!([{"port": 80}]));
}

#[test]
fn empty_structs_stay_and_inline_fields_merge() {
    let job = body(json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"volumes": [{"name": "scratch", "emptyDir": {}}], "containers": [{"name": "c", "image": "i", "resources": {},
            "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}}]}]}}}}));
    let got = decode_object(&job).unwrap();
    let spec = &got["spec"]["template"]["spec"];
    assert_eq!(spec["volumes"], json!([{"name": "scratch", "emptyDir": {}}]));
    assert_eq!(spec["containers"][0]["resources"], json!({}));
    assert_eq!(spec["containers"][0]["env"][0]["valueFrom"]["configMapKeyRef"], json!({"name": "cm", "key": "k"}));
}

#[test]
fn bytes_maps_and_times() {
    let s = body(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "creationTimestamp": "2024-05-06T07:08:09Z", "labels": {"a": "b"}},
        "data": {"tls.crt": "Y2VydA==", "empty": ""}, "type": "kubernetes.io/tls"}));
    let got = decode_object(&s).unwrap();
    assert_eq!(got["data"], json!({"tls.crt": "Y2VydA==", "empty": ""}));
    assert_eq!(got["metadata"]["creationTimestamp"], "2024-05-06T07:08:09Z");
    assert_eq!(got["metadata"]["labels"], json!({"a": "b"}));
}

#[test]
fn durations_print_as_go_does() {
    for (ns, s) in [(0, "0s"), (1_500_000_000, "1.5s"), (90_000_000_000, "1m30s"), (3_600_000_000_000, "1h0m0s"), (150_000_000, "150ms"), (-2_000_000_000, "-2s")] {
        assert_eq!(format_duration(ns), s);
        assert_eq!(parse_duration(s), Some(ns), "{s}");
    }
}

#[test]
fn bad_bodies_are_errors_not_panics() {
    assert!(matches!(decode_object(b"{}"), Err(ProtobufError::BadMagic)));
    assert!(decode_object(b"k8s\0\x0a\xff\xff").is_err());
    let widget = body(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}));
    let mut wrong = k8s_pb::apimachinery::pkg::runtime::Unknown::decode(&widget[4..]).unwrap();
    wrong.type_meta = Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta { api_version: Some("example.com/v1".into()), kind: Some("Widget".into()) });
    let mut unknown_kind = MAGIC.to_vec();
    unknown_kind.extend(wrong.encode_to_vec());
    assert!(matches!(decode_object(&unknown_kind), Err(ProtobufError::UnknownKind { .. })));
    // Every truncation of a real body is an error or a prefix of the object, never a panic.
    let full = body(filled("apps/v1", "Deployment"));
    for n in 0..full.len() {
        let _ = decode_object(&full[..n]);
    }
    // A string where a message belongs, and a varint where a string belongs.
    let mut raw = Vec::new();
    put_bytes(&mut raw, 1, b"\x08\x01");
    put_key(&mut raw, 2, 0);
    put_varint(&mut raw, 5);
    assert!(decode_object(&rewrap(&widget, raw)).is_err());
    // Unknown fields are skipped.
    let mut raw = raw_of(&widget);
    put_bytes(&mut raw, 999, b"whatever");
    assert_eq!(decode_object(&rewrap(&widget, raw)).unwrap()["metadata"]["name"], "c");
    // Deep nesting through embedded objects stops at the limit.
    let mut inner = body(json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "metadata": {"name": "r"}}));
    for _ in 0..200 {
        let mut raw = Vec::new();
        let mut ext = Vec::new();
        put_bytes(&mut ext, 1, &inner);
        put_bytes(&mut raw, 2, &ext);
        inner = rewrap(&inner, raw);
    }
    assert!(decode_object(&inner).is_err());
}
