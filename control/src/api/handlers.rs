//! The generic verbs: one implementation of get/list/create/update/patch/delete
//! and the subresources, driven by the resource table.

use super::request::{decode_body, decode_patch, Address, Query, Wanted};
use super::resources::{self, Resource, Subresource};
use super::selectors::{FieldSelector, LabelSelector};
use super::status::{ApiError, ApiResult, FieldError, Status, Target};
use super::{defaults, patch, schema, services, tables, validation, ApiState};
use crate::store::{object_revision, StoreError};
use crate::controllers::garbage;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// How many times a patch is re-applied when a concurrent write wins the race.
const PATCH_RETRIES: usize = 8;

pub fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

pub fn store_error(target: Target, e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(_) => ApiError::NotFound(target),
        StoreError::AlreadyExists(_) => ApiError::AlreadyExists(target),
        StoreError::Conflict { .. } => ApiError::stale(target),
        StoreError::Expired { .. } => ApiError::Expired(e.to_string()),
        StoreError::Backend(msg) => ApiError::Internal(msg),
    }
}

fn metadata_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    // Just ensured it is an object.
    obj["metadata"].as_object_mut().expect("metadata is an object")
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// A JSON response (compact, newline-terminated, as upstream's serializer writes it).
pub use super::status::json_response;

fn partial_metadata(obj: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata").cloned().unwrap_or(json!({}))})
}

/// One row of a Table, with the object form `includeObject` asks for.
pub fn table_row(res: &Resource, obj: &Value, query: &Query) -> Value {
    let cells = tables::row_cells(res.kind, obj, chrono::Utc::now());
    match query.get("includeObject") {
        Some("None") => json!({"cells": cells}),
        Some("Object") => json!({"cells": cells, "object": obj}),
        _ => json!({"cells": cells, "object": partial_metadata(obj)}),
    }
}

pub fn table(res: &Resource, objs: &[&Value], query: &Query, revision: Option<u64>, with_columns: bool) -> Value {
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "rows": objs.iter().map(|o| table_row(res, o, query)).collect::<Vec<_>>(),
    });
    if with_columns {
        t["columnDefinitions"] = Value::Array(tables::column_definitions(res.kind));
    }
    if let Some(rv) = revision {
        t["metadata"]["resourceVersion"] = Value::String(rv.to_string());
    }
    t
}

/// Render one object in the form the client asked for.
pub fn render(code: StatusCode, res: &Resource, obj: &Value, wanted: Wanted, query: &Query) -> Response {
    match wanted {
        Wanted::Object => json_response(code, obj),
        Wanted::Table => json_response(code, &table(res, &[obj], query, None, true)),
        Wanted::Metadata => json_response(code, &partial_metadata(obj)),
    }
}

/// Label and field selectors of a list or watch request.
pub struct Filter {
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    pub fn from_query(res: &Resource, q: &Query) -> ApiResult<Self> {
        let labels = LabelSelector::parse(q.get("labelSelector").unwrap_or("")).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let fields = FieldSelector::parse(q.get("fieldSelector").unwrap_or(""), res.kind).map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok(Self { labels, fields })
    }
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj.pointer("/metadata/labels").unwrap_or(&Value::Null)) && self.fields.matches(obj)
    }
}

// ---------------------------------------------------------------- reads

pub fn get(state: &ApiState, addr: &Address, query: &Query, wanted: Wanted) -> ApiResult<Response> {
    let obj = state.store.get(&addr.key()).map_err(|e| store_error(addr.target(), e))?.ok_or_else(|| ApiError::NotFound(addr.target()))?;
    match addr.sub {
        Some(Subresource::Scale) => Ok(json_response(StatusCode::OK, &scale_view(&obj))),
        // `pods/log` never gets here: it streams from the node (see `logs::serve`).
        _ => Ok(render(StatusCode::OK, addr.resource, &obj, wanted, query)),
    }
}

pub fn list(state: &ApiState, addr: &Address, query: &Query, wanted: Wanted) -> ApiResult<Response> {
    let res = addr.resource;
    let filter = Filter::from_query(res, query)?;
    let prefix = res.list_prefix(addr.namespace.as_deref());
    // A node's pods come from the store's index, not a walk over every pod.
    let indexed = (res.kind == "Pod").then(|| filter.fields.required("spec.nodeName")).flatten().and_then(|node| state.store.pods_on_node(node));
    let (items, revision) = match indexed {
        Some((pods, revision)) => (pods.into_iter().filter(|p| object_key(res, p).starts_with(&prefix)).collect(), revision),
        None => state.store.list(&prefix).map_err(|e| store_error(addr.target(), e))?,
    };

    // Paging: the continue token is the last key served. Items come in key order,
    // so a page starts with a binary search and stops at the limit; pages are cut
    // from the current state, not a snapshot.
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let start = match query.get("continue") {
        Some(token) => {
            let after = b64.decode(token).ok().and_then(|b| String::from_utf8(b).ok()).ok_or_else(|| ApiError::BadRequest("continue token is invalid".into()))?;
            items.partition_point(|o| object_key(res, o) <= after)
        }
        None => 0,
    };
    let limit = query.int("limit")?.filter(|l| *l > 0).map(|l| l as usize);
    let mut matching: Vec<&Value> = Vec::new();
    let mut cont = None;
    for o in items[start..].iter().map(|o| o.as_ref()).filter(|o| filter.matches(o)) {
        if limit.is_some_and(|l| matching.len() == l) {
            cont = matching.last().map(|last| b64.encode(object_key(res, last)));
            break;
        }
        matching.push(o);
    }
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = &cont {
        meta["continue"] = Value::String(c.clone());
    }
    let body = match wanted {
        Wanted::Table => {
            let mut t = table(res, &matching, query, Some(revision), true);
            t["metadata"] = meta;
            t
        }
        Wanted::Metadata => json!({
            "kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "items": matching.iter().map(|o| partial_metadata(o)).collect::<Vec<_>>(),
        }),
        Wanted::Object => json!({
            "kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": meta,
            "items": matching,
        }),
    };
    Ok(json_response(StatusCode::OK, &body))
}

fn object_key(res: &Resource, obj: &Value) -> String {
    res.key(meta_str(obj, "namespace").unwrap_or(""), meta_str(obj, "name").unwrap_or(""))
}

// ---------------------------------------------------------------- create

fn check_type_meta(res: &Resource, obj: &mut Value) -> ApiResult<()> {
    let Some(map) = obj.as_object_mut() else {
        return Err(ApiError::BadRequest("the request body must be a JSON object".into()));
    };
    if let Some(v) = map.get("apiVersion").and_then(Value::as_str) {
        if v != res.api_version() {
            return Err(ApiError::BadRequest(format!("the API version in the data ({v}) does not match the expected API version ({})", res.api_version())));
        }
    }
    if let Some(k) = map.get("kind").and_then(Value::as_str) {
        if k != res.kind {
            return Err(ApiError::BadRequest(format!("the kind in the data ({k}) does not match the expected kind ({})", res.kind)));
        }
    }
    map.insert("apiVersion".into(), Value::String(res.api_version()));
    map.insert("kind".into(), Value::String(res.kind.into()));
    Ok(())
}

/// Typed decoding and, per `fieldValidation`, unknown-field checks. Returns warnings.
fn check_schema(res: &Resource, obj: &Value, query: &Query) -> ApiResult<Vec<String>> {
    let unknown = validation::check_schema(res.kind, obj)
        .map_err(|e| ApiError::BadRequest(format!("{} in version \"{}\" cannot be handled as a {}: {e}", res.kind, res.version, res.kind)))?;
    if unknown.is_empty() || query.get("fieldValidation") == Some("Ignore") {
        return Ok(Vec::new());
    }
    if query.get("fieldValidation") == Some("Strict") {
        let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
        return Err(ApiError::BadRequest(format!("strict decoding error: {}", list.join(", "))));
    }
    Ok(unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect())
}

fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        if let Ok(v) = HeaderValue::from_str(&format!("299 - \"{}\"", w.replace('"', "'"))) {
            resp.headers_mut().append("Warning", v);
        }
    }
    resp
}

fn random_suffix() -> String {
    // Upstream's alphabet: no vowels (no accidental words) and no look-alike digits.
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let bytes = uuid::Uuid::new_v4().into_bytes();
    bytes[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

fn ensure_namespace_open(state: &ApiState, ns: &str) -> ApiResult<()> {
    let nsres = resources::find("", "v1", "namespaces").ok_or(ApiError::UnknownPath)?;
    let target = Target { group: "".into(), resource: "namespaces".into(), kind: "Namespace".into(), name: ns.into() };
    let obj = state.store.get(&nsres.key("", ns)).map_err(|e| store_error(target.clone(), e))?.ok_or(ApiError::NotFound(target))?;
    if obj.pointer("/metadata/deletionTimestamp").is_some() {
        return Err(ApiError::Forbidden(format!("unable to create new content in namespace {ns} because it is being terminated")));
    }
    Ok(())
}

/// Everything a create does before the store write: type meta, namespace, name,
/// system metadata, defaults and validation.
pub fn prepare_create(state: &ApiState, addr: &Address, mut obj: Value, query: &Query) -> ApiResult<(Value, Vec<String>)> {
    let res = addr.resource;
    check_type_meta(res, &mut obj)?;
    let warnings = check_schema(res, &obj, query)?;
    let meta = metadata_mut(&mut obj);
    if res.namespaced {
        let ns = addr.namespace.clone().ok_or_else(|| ApiError::BadRequest("a namespace is required to create this resource".into()))?;
        match meta.get("namespace").and_then(Value::as_str) {
            Some(n) if !n.is_empty() && n != ns => {
                return Err(ApiError::BadRequest("the namespace of the provided object does not match the namespace sent on the request".into()));
            }
            _ => {
                meta.insert("namespace".into(), Value::String(ns));
            }
        }
    } else {
        meta.remove("namespace");
    }
    let name = meta.get("name").and_then(Value::as_str).unwrap_or("").to_string();
    if name.is_empty() {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str).filter(|p| !p.is_empty()) {
            let generated = format!("{prefix}{}", random_suffix());
            meta.insert("name".into(), Value::String(generated));
        }
    }
    meta.insert("uid".into(), Value::String(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), Value::String(now_rfc3339()));
    for f in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
        meta.remove(f);
    }
    if res.has_spec {
        meta.insert("generation".into(), json!(1));
    }
    // Status is the controllers' and agents' to write; nodes report their own on create.
    if res.has(Subresource::Status) && res.kind != "Node" {
        if let Some(m) = obj.as_object_mut() {
            m.remove("status");
        }
    }
    schema::drop_go_zero_values(res.kind, &mut obj);
    defaults::apply_defaults(res.kind, &mut obj);
    let target = Target { name: meta_str(&obj, "name").unwrap_or("").into(), ..addr.target() };
    let errors = validation::validate(res.kind, &obj, None);
    if !errors.is_empty() {
        return Err(ApiError::Invalid(target, errors));
    }
    if let Some(ns) = meta_str(&obj, "namespace") {
        ensure_namespace_open(state, ns)?;
    }
    Ok((obj, warnings))
}

pub fn create(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8], query: &Query, wanted: Wanted) -> ApiResult<Response> {
    let obj = decode_body(headers, body)?;
    let (obj, warnings) = prepare_create(state, addr, obj, query)?;
    let created = store_new(state, addr, obj, query.dry_run())?;
    Ok(with_warnings(render(StatusCode::CREATED, addr.resource, &created, wanted, query), &warnings))
}

/// Creates an object as a client's POST would (defaults, validation, addresses).
pub fn create_object(state: &ApiState, addr: &Address, obj: Value) -> ApiResult<Arc<Value>> {
    let (obj, _) = prepare_create(state, addr, obj, &Query::default())?;
    store_new(state, addr, obj, false)
}

/// Stores a prepared new object; a Service gets its addresses first.
fn store_new(state: &ApiState, addr: &Address, mut obj: Value, dry_run: bool) -> ApiResult<Arc<Value>> {
    let name = meta_str(&obj, "name").unwrap_or("").to_string();
    let target = Target { name: name.clone(), ..addr.target() };
    // A Service's addresses are chosen and stored under one lock.
    let _addresses = (addr.resource.kind == "Service").then(|| state.services.lock());
    if addr.resource.kind == "Service" {
        state.services.assign(&*state.store, &mut obj, None).map_err(|e| ApiError::Invalid(target.clone(), e))?;
    }
    if dry_run {
        return Ok(Arc::new(obj));
    }
    state.store.create(&addr.resource.key(addr.namespace.as_deref().unwrap_or(""), &name), obj).map_err(|e| store_error(target, e))
}

// ---------------------------------------------------------------- update

/// Which part of an object a write may change.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The object itself: status is kept as stored.
    Main,
    /// `/status`: only status is taken from the request.
    Status,
    /// `pods/ephemeralcontainers`: only `spec.ephemeralContainers` is taken from the request.
    EphemeralContainers,
}

/// `spec.ephemeralContainers` of `from` set on `to` (or removed when `from` has none).
fn set_ephemeral_containers(to: &mut Value, from: &Value) {
    match (from.pointer("/spec/ephemeralContainers").cloned(), to.get_mut("spec").and_then(Value::as_object_mut)) {
        (Some(ec), Some(spec)) => {
            spec.insert("ephemeralContainers".into(), ec);
        }
        (None, Some(spec)) => {
            spec.remove("ephemeralContainers");
        }
        _ => {}
    }
}

fn without_meta_and_status(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn same_ignoring_version(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            m.remove("resourceVersion");
            m.remove("managedFields");
        }
        v
    };
    strip(a) == strip(b)
}

/// Write `new` over `current`: carries system metadata forward, bumps generation on
/// spec changes, defaults, validates, and compare-and-swaps on the current revision.
/// An unchanged object is not written (so `kubectl apply` twice is a no-op).
pub fn update_object(state: &ApiState, addr: &Address, current: &Value, mut new: Value, part: Part, dry_run: bool) -> ApiResult<Arc<Value>> {
    let res = addr.resource;
    let target = addr.target();
    check_type_meta(res, &mut new)?;
    if let Some(n) = meta_str(&new, "name") {
        if Some(n) != addr.name.as_deref() {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                addr.name.as_deref().unwrap_or_default()
            )));
        }
    }
    let current_rv = object_revision(current).unwrap_or(0);
    if let Some(rv) = meta_str(&new, "resourceVersion").filter(|s| !s.is_empty()) {
        if rv.parse::<u64>().ok() != Some(current_rv) {
            return Err(ApiError::stale(target));
        }
    }
    if part == Part::Status {
        let status = new.get("status").cloned();
        new = current.clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    } else if part == Part::EphemeralContainers {
        // Upstream's ephemeralcontainers strategy ignores the rest of the body.
        let sent = new;
        new = current.clone();
        set_ephemeral_containers(&mut new, &sent);
    } else if res.has(Subresource::Status) {
        // Only the subresource adds debug containers; an update of the pod keeps them.
        if res.kind == "Pod" {
            set_ephemeral_containers(&mut new, current);
        }
        match current.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    // System-owned metadata always comes from the stored object.
    let cur_meta = current.get("metadata").and_then(Value::as_object).cloned().unwrap_or_default();
    let meta = metadata_mut(&mut new);
    for f in ["name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"] {
        match cur_meta.get(f) {
            Some(v) => meta.insert(f.into(), v.clone()),
            None => meta.remove(f),
        };
    }
    meta.insert("resourceVersion".into(), Value::String(current_rv.to_string()));
    // Every write path (including /status and /scale) gets the typed check, so a
    // wrong type is a 400 and never reaches defaulting or the store.
    validation::check_schema(res.kind, &new)
        .map_err(|e| ApiError::BadRequest(format!("{} in version \"{}\" cannot be handled as a {}: {e}", res.kind, res.version, res.kind)))?;
    schema::drop_go_zero_values(res.kind, &mut new);
    defaults::apply_defaults(res.kind, &mut new);
    if res.has_spec && without_meta_and_status(&new) != without_meta_and_status(current) {
        let gen = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        metadata_mut(&mut new).insert("generation".into(), json!(gen + 1));
    }
    if res.kind == "Service" && part == Part::Main {
        services::keep_allocated(&mut new, current);
    }
    let mut errors: Vec<FieldError> = validation::validate(res.kind, &new, Some(current));
    if part == Part::Status {
        // Status writers cannot fix the spec; report only what they sent.
        errors.retain(|e| e.field.starts_with("status"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(target, errors));
    }
    let _addresses = (res.kind == "Service").then(|| state.services.lock());
    if res.kind == "Service" && part == Part::Main {
        state.services.assign(&*state.store, &mut new, Some(current)).map_err(|e| ApiError::Invalid(target.clone(), e))?;
    }
    if same_ignoring_version(&new, current) {
        return Ok(Arc::new(current.clone()));
    }
    if dry_run {
        return Ok(Arc::new(new));
    }
    let key = addr.key();
    let finalized = new.pointer("/metadata/deletionTimestamp").is_some()
        && new.pointer("/metadata/finalizers").and_then(Value::as_array).is_none_or(|f| f.is_empty());
    if finalized && res.kind != "Namespace" && res.kind != "Pod" {
        // The last finalizer is gone: the deletion that was waiting completes now.
        return state.store.delete(&key, Some(current_rv)).map_err(|e| store_error(target, e));
    }
    state.store.update(&key, new, Some(current_rv)).map_err(|e| store_error(target, e))
}

fn load(state: &ApiState, addr: &Address) -> ApiResult<Arc<Value>> {
    state.store.get(&addr.key()).map_err(|e| store_error(addr.target(), e))?.ok_or_else(|| ApiError::NotFound(addr.target()))
}

pub fn replace(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8], query: &Query, wanted: Wanted) -> ApiResult<Response> {
    let new = decode_body(headers, body)?;
    let current = load(state, addr)?;
    let res = addr.resource;
    let (updated, warnings) = match addr.sub {
        None => {
            let mut n = new;
            check_type_meta(res, &mut n)?;
            let w = check_schema(res, &n, query)?;
            (update_object(state, addr, &current, n, Part::Main, query.dry_run())?, w)
        }
        Some(Subresource::Status) => {
            let mut n = new;
            check_type_meta(res, &mut n)?;
            (update_object(state, addr, &current, n, Part::Status, query.dry_run())?, vec![])
        }
        Some(Subresource::EphemeralContainers) => {
            let mut n = new;
            check_type_meta(res, &mut n)?;
            (update_object(state, addr, &current, n, Part::EphemeralContainers, query.dry_run())?, vec![])
        }
        Some(Subresource::Finalize) => {
            let mut merged = (*current).clone();
            merged["spec"]["finalizers"] = new.pointer("/spec/finalizers").cloned().unwrap_or(json!([]));
            (update_object(state, addr, &current, merged, Part::Main, query.dry_run())?, vec![])
        }
        Some(Subresource::Scale) => {
            let updated = write_scale(state, addr, &current, &new, query.dry_run())?;
            return Ok(json_response(StatusCode::OK, &scale_view(&updated)));
        }
        _ => return Err(ApiError::MethodNotAllowed),
    };
    Ok(with_warnings(render(StatusCode::OK, res, &updated, wanted, query), &warnings))
}

// ---------------------------------------------------------------- patch

fn apply_patch(kind: &str, content_type: &str, target: &Value, patch: &Value) -> ApiResult<Value> {
    let bad = |e: patch::PatchError| ApiError::BadRequest(e.to_string());
    match content_type {
        "application/merge-patch+json" => {
            let mut t = target.clone();
            json_patch::merge(&mut t, patch);
            Ok(t)
        }
        // A well-formed JSON patch that does not apply is 422, as upstream (400 is for
        // one that cannot be decoded).
        "application/json-patch+json" => patch::json_patch(target, patch).map_err(|e| match e {
            patch::PatchError::JsonPatchOp { .. } => {
                tracing::debug!(error = %e, "JSON patch does not apply");
                ApiError::JsonPatchFailed(e.to_string())
            }
            e => bad(e),
        }),
        "application/strategic-merge-patch+json" | "application/apply-patch+yaml" => {
            patch::strategic_merge_patch(target, patch, kind).map_err(bad)
        }
        _ => Err(ApiError::UnsupportedMediaType),
    }
}

pub fn patch(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8], query: &Query, wanted: Wanted) -> ApiResult<Response> {
    let ct = super::request::content_type(headers);
    let res = addr.resource;
    let apply = ct == "application/apply-patch+yaml";
    let patch_doc = decode_patch(body, apply)?;
    if ct == "application/json-patch+json" {
        if !patch_doc.is_array() {
            return Err(ApiError::BadRequest("json patch must be a JSON array of operations".into()));
        }
    } else if !patch_doc.is_object() {
        return Err(ApiError::BadRequest("patch must be a JSON object".into()));
    }
    let scale_kind = if addr.sub == Some(Subresource::Scale) { "Scale" } else { res.kind };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = match state.store.get(&addr.key()).map_err(|e| store_error(addr.target(), e))? {
            Some(c) => c,
            // Server-side apply creates what does not exist yet.
            None if apply && addr.sub.is_none() => {
                let mut obj = patch_doc.clone();
                metadata_mut(&mut obj).insert("name".into(), json!(addr.name.clone().unwrap_or_default()));
                let (obj, w) = prepare_create(state, addr, obj, query)?;
                let created = if query.dry_run() { Arc::new(obj) } else { state.store.create(&addr.key(), obj).map_err(|e| store_error(addr.target(), e))? };
                return Ok(with_warnings(render(StatusCode::CREATED, res, &created, wanted, query), &w));
            }
            None => return Err(ApiError::NotFound(addr.target())),
        };
        let result = match addr.sub {
            Some(Subresource::Scale) => {
                let view = scale_view(&current);
                let patched = apply_patch(scale_kind, &ct, &view, &patch_doc)?;
                write_scale(state, addr, &current, &patched, query.dry_run()).map(|u| (scale_view(&u), vec![]))
            }
            sub => {
                let patched = apply_patch(res.kind, &ct, &current, &patch_doc)?;
                let part = match sub {
                    Some(Subresource::Status) => Part::Status,
                    Some(Subresource::EphemeralContainers) => Part::EphemeralContainers,
                    _ => Part::Main,
                };
                let warnings = if part == Part::Main { check_schema(res, &patched, query)? } else { vec![] };
                update_object(state, addr, &current, patched, part, query.dry_run()).map(|u| ((*u).clone(), warnings))
            }
        };
        match result {
            // A concurrent writer won; re-read and re-apply, as upstream does for patches.
            Err(ApiError::Conflict(..)) if attempt < PATCH_RETRIES && !patch_sets_version(&patch_doc) => continue,
            Err(e) => return Err(e),
            Ok((obj, warnings)) => {
                let resp = if addr.sub == Some(Subresource::Scale) { json_response(StatusCode::OK, &obj) } else { render(StatusCode::OK, res, &obj, wanted, query) };
                return Ok(with_warnings(resp, &warnings));
            }
        }
    }
}

fn patch_sets_version(patch: &Value) -> bool {
    patch.pointer("/metadata/resourceVersion").is_some()
}

// ---------------------------------------------------------------- scale

/// The `autoscaling/v1` Scale view of a scalable object.
pub fn scale_view(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or(json!({}));
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| super::selectors::LabelSelector::from_object(s).map(|l| l.to_string()).unwrap_or_default())
        .unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {"replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)), "selector": selector},
    })
}

fn write_scale(state: &ApiState, addr: &Address, current: &Value, scale: &Value, dry_run: bool) -> ApiResult<Arc<Value>> {
    let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
    if let Some(rv) = scale.pointer("/metadata/resourceVersion").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        if rv.parse::<u64>().ok() != object_revision(current) {
            return Err(ApiError::stale(addr.target()));
        }
    }
    let mut new = current.clone();
    new["spec"]["replicas"] = replicas;
    update_object(state, addr, current, new, Part::Main, dry_run)
}

// ---------------------------------------------------------------- pods/binding, pods/eviction

fn success_status(code: u16) -> Status {
    Status::success(code)
}

pub fn bind(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let binding = decode_body(headers, body)?;
    let node = binding.pointer("/target/name").and_then(Value::as_str).filter(|n| !n.is_empty());
    let Some(node) = node else {
        return Err(ApiError::Invalid(
            Target { kind: "Binding".into(), ..addr.target() },
            vec![FieldError::required("target.name", "")],
        ));
    };
    bind_to_node(state, addr, node)?;
    Ok(json_response(StatusCode::CREATED, &success_status(201)))
}

/// Assigns the pod at `addr` to `node` (what a Binding does), marking it PodScheduled.
pub fn bind_to_node(state: &ApiState, addr: &Address, node: &str) -> ApiResult<()> {
    for _ in 0..PATCH_RETRIES {
        let current = load(state, addr)?;
        if let Some(existing) = current.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::Conflict(addr.target(), format!("pod {} is already assigned to node \"{existing}\"", addr.name.as_deref().unwrap_or_default())));
        }
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::Conflict(addr.target(), "pod is being deleted, cannot be assigned to a host".into()));
        }
        let mut new = (*current).clone();
        new["spec"]["nodeName"] = json!(node);
        let conditions = new["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conditions: Vec<Value> = conditions.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conditions.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
        new["status"]["conditions"] = Value::Array(conditions);
        let rv = object_revision(&current);
        match state.store.update(&addr.key(), new, rv) {
            Ok(_) => return Ok(()),
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(addr.target(), e)),
        }
    }
    Err(ApiError::stale(addr.target()))
}

pub fn evict(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8]) -> ApiResult<Response> {
    let eviction = if body.is_empty() { json!({}) } else { decode_body(headers, body)? };
    let opts = DeleteOptions::from(eviction.get("deleteOptions").unwrap_or(&Value::Null), &Query::default())?;
    // One eviction at a time, so two cannot both spend a budget's last disruption.
    let _one_at_a_time = state.evictions.lock().unwrap_or_else(|e| e.into_inner());
    let pod = load(state, addr)?;
    check_disruption_budget(state, &pod)?;
    delete_one(state, addr, &opts)?;
    Ok(json_response(StatusCode::CREATED, &success_status(201)))
}

/// The eviction of a healthy pod must leave every PodDisruptionBudget that selects it
/// satisfied; otherwise 429, which `kubectl drain` retries.
fn check_disruption_budget(state: &ApiState, pod: &Value) -> ApiResult<()> {
    let terminal = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    if terminal || pod.pointer("/metadata/deletionTimestamp").is_some() || !pod_ready(pod) {
        return Ok(());
    }
    let ns = meta_str(pod, "namespace").unwrap_or("default").to_owned();
    let (Some(pdb_res), Some(pods_res)) = (resources::find("policy", "v1", "poddisruptionbudgets"), resources::find("", "v1", "pods")) else { return Ok(()) };
    let (budgets, _) = state.store.list(&pdb_res.list_prefix(Some(&ns))).map_err(|e| ApiError::Internal(e.to_string()))?;
    let labels = pod.pointer("/metadata/labels").cloned().unwrap_or(json!({}));
    let selector_of = |b: &Value| b.pointer("/spec/selector").and_then(|s| LabelSelector::from_object(s).ok()).filter(|s| !s.is_empty());
    let matching: Vec<(&Arc<Value>, LabelSelector)> = budgets.iter().filter_map(|b| selector_of(b).filter(|s| s.matches(&labels)).map(|s| (b, s))).collect();
    let Some((budget, selector)) = matching.first() else { return Ok(()) };
    if matching.len() > 1 {
        return Err(ApiError::Internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.".into()));
    }
    let (pods, _) = state.store.list(&pods_res.list_prefix(Some(&ns))).map_err(|e| ApiError::Internal(e.to_string()))?;
    let (expected, healthy) = budget_counts(selector, &pods);
    let desired = desired_healthy(&budget["spec"], expected);
    if healthy - 1 < desired {
        let name = meta_str(budget, "name").unwrap_or_default();
        return Err(ApiError::TooManyRequests(format!(
            "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget {name} needs {desired} healthy pods and has {healthy} currently"
        )));
    }
    Ok(())
}

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

/// Pods a budget's selector covers (not finished), and how many of them are healthy
/// (Ready and not being deleted).
pub fn budget_counts(selector: &LabelSelector, pods: &[Arc<Value>]) -> (i64, i64) {
    let covered: Vec<&Arc<Value>> = pods
        .iter()
        .filter(|p| !matches!(p.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")))
        .filter(|p| selector.matches(p.pointer("/metadata/labels").unwrap_or(&Value::Null)))
        .collect();
    let healthy = covered.iter().filter(|p| p.pointer("/metadata/deletionTimestamp").is_none() && pod_ready(p)).count();
    (covered.len() as i64, healthy as i64)
}

/// How many of `expected` pods a budget spec wants healthy: `minAvailable`, or all but
/// `maxUnavailable` (percentages of `expected`, rounded up, as upstream).
pub fn desired_healthy(spec: &Value, expected: i64) -> i64 {
    let scaled = |v: &Value| match v {
        Value::String(s) => s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()).map(|p| (expected * p + 99) / 100),
        v => v.as_i64(),
    };
    if let Some(max) = spec.get("maxUnavailable").and_then(scaled) {
        (expected - max).max(0)
    } else {
        spec.get("minAvailable").and_then(scaled).unwrap_or(0)
    }
}

// ---------------------------------------------------------------- delete

#[derive(Debug, Default)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub propagation: Option<String>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
    pub dry_run: bool,
}

impl DeleteOptions {
    pub fn from(body: &Value, query: &Query) -> ApiResult<Self> {
        let mut o = Self {
            grace_period: body.get("gracePeriodSeconds").and_then(Value::as_i64),
            propagation: body.get("propagationPolicy").and_then(Value::as_str).map(String::from),
            uid: body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
            resource_version: body.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from),
            dry_run: body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All")) || query.dry_run(),
        };
        if let Some(g) = query.int("gracePeriodSeconds")? {
            o.grace_period = Some(g);
        }
        if let Some(p) = query.get("propagationPolicy") {
            o.propagation = Some(p.to_string());
        }
        if let Some(p) = &o.propagation {
            if !["Orphan", "Background", "Foreground"].contains(&p.as_str()) {
                return Err(ApiError::BadRequest(format!("propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\"")));
            }
        }
        Ok(o)
    }
}

/// Delete one object, honouring preconditions, finalizers, namespaces' two-phase
/// deletion and pods' grace period. Returns the object as it stands afterwards.
pub fn delete_one(state: &ApiState, addr: &Address, opts: &DeleteOptions) -> ApiResult<Arc<Value>> {
    let res = addr.resource;
    let target = addr.target();
    for _ in 0..PATCH_RETRIES {
        let current = load(state, addr)?;
        if let Some(uid) = &opts.uid {
            let actual = meta_str(&current, "uid").unwrap_or("");
            if uid != actual {
                return Err(ApiError::Conflict(target, format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}")));
            }
        }
        if let Some(rv) = &opts.resource_version {
            let actual = meta_str(&current, "resourceVersion").unwrap_or("");
            if rv != actual {
                return Err(ApiError::Conflict(target, format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {actual}")));
            }
        }
        let rv = object_revision(&current);
        let has_finalizers = current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
        let graceful_pod = res.kind == "Pod" && pod_needs_grace(state, &current, opts.grace_period);
        // Orphan and foreground propagation finish in the garbage collector, which takes
        // its finalizer off when the dependents are released or gone.
        let gc_finalizer = match opts.propagation.as_deref() {
            Some("Orphan") if garbage::OWNER_KINDS.contains(&res.kind) => Some(garbage::ORPHAN_FINALIZER),
            Some("Foreground") if garbage::OWNER_KINDS.contains(&res.kind) => Some(garbage::FOREGROUND_FINALIZER),
            _ => None,
        };
        let two_phase = res.kind == "Namespace" || has_finalizers || graceful_pod || gc_finalizer.is_some();
        if !two_phase {
            if opts.dry_run {
                return Ok(current);
            }
            match state.store.delete(&addr.key(), rv) {
                Ok(obj) => return Ok(obj),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(store_error(target, e)),
            }
        }
        if current.pointer("/metadata/deletionTimestamp").is_some() {
            // Already being deleted: a shorter grace period may still speed it up.
            if !(graceful_pod && opts.grace_period == Some(0)) {
                return Ok(current);
            }
        }
        let mut new = (*current).clone();
        let grace = if graceful_pod { opts.grace_period.or_else(|| current.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64)).unwrap_or(30) } else { 0 };
        let meta = metadata_mut(&mut new);
        let when = chrono::Utc::now() + chrono::Duration::seconds(grace);
        meta.insert("deletionTimestamp".into(), json!(when.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)));
        meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
        if let Some(f) = gc_finalizer {
            let list = meta.entry("finalizers").or_insert_with(|| json!([]));
            if let Some(list) = list.as_array_mut().filter(|l| !l.iter().any(|x| x == f)) {
                list.push(json!(f));
            }
        }
        if res.kind == "Namespace" {
            new["status"]["phase"] = json!("Terminating");
        }
        if opts.dry_run {
            return Ok(Arc::new(new));
        }
        match state.store.update(&addr.key(), new, rv) {
            Ok(obj) => {
                if res.kind == "Namespace" {
                    state.namespace_deleted.notify_one();
                }
                return Ok(obj);
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(store_error(target, e)),
        }
    }
    Err(ApiError::stale(target))
}

/// A pod running on a node is stopped by its node agent before it goes; a pod no
/// agent runs (unscheduled, node gone, or grace 0) goes at once, as upstream.
fn pod_needs_grace(state: &ApiState, pod: &Value, grace: Option<i64>) -> bool {
    if grace == Some(0) {
        return false;
    }
    let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) else {
        return false;
    };
    if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
        return false;
    }
    let nodes = resources::find("", "v1", "nodes").map(|r| r.key("", node));
    nodes.is_some_and(|k| state.store.get(&k).ok().flatten().is_some())
}

pub fn delete(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8], query: &Query) -> ApiResult<Response> {
    let opts_body = if body.is_empty() { Value::Null } else { decode_body(headers, body)? };
    let opts = DeleteOptions::from(&opts_body, query)?;
    let obj = delete_one(state, addr, &opts)?;
    Ok(json_response(StatusCode::OK, &*obj))
}

pub fn delete_collection(state: &ApiState, addr: &Address, headers: &HeaderMap, body: &[u8], query: &Query) -> ApiResult<Response> {
    let res = addr.resource;
    let opts_body = if body.is_empty() { Value::Null } else { decode_body(headers, body)? };
    let opts = DeleteOptions::from(&opts_body, query)?;
    let filter = Filter::from_query(res, query)?;
    let (items, _) = state.store.list(&res.list_prefix(addr.namespace.as_deref())).map_err(|e| store_error(addr.target(), e))?;
    let mut deleted = Vec::new();
    for obj in items.iter().filter(|o| filter.matches(o)) {
        let one = Address {
            resource: res,
            namespace: meta_str(obj, "namespace").map(String::from),
            name: meta_str(obj, "name").map(String::from),
            sub: None,
        };
        match delete_one(state, &one, &opts) {
            Ok(o) => deleted.push((*o).clone()),
            Err(ApiError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    let body = json!({"kind": format!("{}List", res.kind), "apiVersion": res.api_version(), "metadata": {"resourceVersion": state.store.revision().to_string()}, "items": deleted});
    Ok(json_response(StatusCode::OK, &body))
}
