//! The three PATCH flavours: JSON merge patch (RFC 7386, `json_patch::merge`), JSON
//! patch (RFC 6902) and Kubernetes strategic merge patch.
//!
//! Strategic merge follows apimachinery's `strategicpatch` as the API server
//! applies it (parallel deletion lists merged, unmatched nulls ignored). Upstream
//! reads each list's `patchStrategy`/`patchMergeKey` from Go struct tags; here
//! `list_strategy` reads the same tags from the upstream type table
//! ([`super::schema`]). Merging every list by `name` would be wrong: container ports
//! merge by `containerPort`, mounts by `mountPath`, Service ports by `port`.

use super::schema;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    #[error("a strategic merge patch must be a JSON object, not {0}")]
    NotAnObject(&'static str),
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    #[error("JSON patch operation {index} ({op}) failed at path '{path}': {reason}")]
    JsonPatchOp { index: usize, op: String, path: String, reason: String },
    #[error("unknown patch directive '{key}' at {path}")]
    UnknownDirective { key: String, path: String },
    #[error("malformed directive '{directive}' at {path}: {reason}")]
    MalformedDirective { directive: String, path: String, reason: String },
    #[error("an element of the list at {path} lacks its merge key '{key}'")]
    MissingMergeKey { key: String, path: String },
    #[error("the list at {path} cannot be merged: {reason}")]
    InvalidList { path: String, reason: String },
}

/// RFC 6902 JSON patch (`application/json-patch+json`).
///
/// As upstream, only a patch that is not an array of objects fails to decode
/// (`InvalidJsonPatch`); an operation that is unknown, incomplete or does not apply
/// (a failed `test`, a missing path) is a `JsonPatchOp` failure.
pub fn json_patch(target: &Value, patch: &Value) -> Result<Value, PatchError> {
    let Value::Array(items) = patch else {
        return Err(PatchError::InvalidJsonPatch(format!("expected an array of operations, not {}", type_name(patch))));
    };
    if let Some(other) = items.iter().find(|op| !op.is_object()) {
        return Err(PatchError::InvalidJsonPatch(format!("expected an array of operations, found {} in it", type_name(other))));
    }
    let field = |op: &Value, k: &str| op.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
    let mut ops = Vec::with_capacity(items.len());
    for (index, op) in items.iter().enumerate() {
        let parsed: json_patch::PatchOperation = serde_json::from_value(op.clone())
            .map_err(|e| PatchError::JsonPatchOp { index, op: field(op, "op"), path: field(op, "path"), reason: e.to_string() })?;
        ops.push(parsed);
    }
    let mut doc = target.clone();
    json_patch::patch(&mut doc, &ops).map_err(|e| PatchError::JsonPatchOp {
        index: e.operation,
        op: items.get(e.operation).map(|o| field(o, "op")).unwrap_or_default(),
        path: e.path.to_string(),
        reason: e.kind.to_string(),
    })?;
    Ok(doc)
}

/// Kubernetes strategic merge patch (`application/strategic-merge-patch+json`)
/// of `original` by `patch` for the built-in kind `kind`.
pub fn strategic_merge_patch(original: &Value, patch: &Value, kind: &str) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else { return Err(PatchError::NotAnObject(type_name(patch))) };
    let orig = original.as_object().cloned();
    let mut merger = Merger { kind, path: Vec::new() };
    Ok(Value::Object(merger.merge_map(orig, p)?.unwrap_or_default()))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// ------------------------------------------------------------------ schema

/// How a list field merges, as upstream's struct tags say.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// No `patchStrategy` (or `listType=atomic`): the patch's list replaces the original.
    Replace,
    /// `patchStrategy:"merge"` on scalars: an ordered set.
    Set,
    /// `patchStrategy:"merge"` with `patchMergeKey`: elements merge pairwise by this key.
    Key(&'static str),
}

/// The strategy of the list at `path` (field names from the object's root, list
/// indices stripped) in an object of kind `kind`. Kinds without upstream types (and
/// paths the types do not know) replace their lists, as a JSON merge patch would.
fn list_strategy(kind: &str, path: &[String]) -> ListStrategy {
    let Some(mut def) = schema::root_type(kind) else { return ListStrategy::Replace };
    let mut segments = path.iter();
    let mut field = None;
    while let Some(name) = segments.next() {
        let Some(f) = def.field(name) else { return ListStrategy::Replace };
        field = Some(f);
        // Step into the element type; a map's values are one key further down.
        let mut ty = &f.ty;
        loop {
            match ty {
                schema::Type::Array { items, .. } => ty = items,
                schema::Type::Map { values } => {
                    if segments.next().is_none() {
                        break;
                    }
                    ty = values;
                }
                _ => break,
            }
        }
        match ty {
            schema::Type::Ref { r#ref } => match schema::get(r#ref) {
                Some(d) => def = d,
                None => return ListStrategy::Replace,
            },
            _ if segments.len() > 0 => return ListStrategy::Replace,
            _ => {}
        }
    }
    let Some(f) = field else { return ListStrategy::Replace };
    let merges = f.patch_strategy.as_deref().is_some_and(|s| s.split(',').any(|x| x == "merge"));
    match (merges, f.patch_merge_key.as_deref()) {
        (true, Some(key)) => ListStrategy::Key(key),
        (true, None) => ListStrategy::Set,
        (false, _) => ListStrategy::Replace,
    }
}

// ------------------------------------------------------------------ merging

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

/// A value's identity for comparisons. Upstream compares decoded JSON, where
/// every number is a float64: `80` and `80.0` are the same merge key.
fn canon(v: &Value) -> String {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) => format!("n{f}"),
            None => format!("n{n}"),
        },
        Value::String(s) => format!("s{s}"),
        other => other.to_string(),
    }
}

/// What identifies a list element: its merge key's value, or the element itself
/// for scalar sets.
fn identity<'v>(item: &'v Value, key: Option<&str>) -> Option<&'v Value> {
    match key {
        Some(k) => item.get(k),
        None => Some(item),
    }
}

/// The rank of each identity's first occurrence in a list: all that ordering
/// compares. Lookups go through a hash map because a request body can carry
/// lists long enough to make scans quadratic.
#[derive(Default)]
struct Positions(HashMap<String, usize>);

impl Positions {
    fn of(list: &[Value], key: Option<&str>) -> Self {
        let mut p = Self::default();
        for v in list {
            p.add(identity(v, key));
        }
        p
    }

    fn add(&mut self, id: Option<&Value>) {
        if let Some(id) = id {
            let next = self.0.len();
            self.0.entry(canon(id)).or_insert(next);
        }
    }

    fn get(&self, id: Option<&Value>) -> Option<usize> {
        id.and_then(|id| self.0.get(&canon(id)).copied())
    }
}

/// Upstream's `normalizeElementOrder`: items named by `order` sorted by it, the
/// rest (server-only) sorted by `server`, then interleaved so that a server-only
/// item goes before a patch item only when both are in `server` and it came
/// first there. Hence, without `$setElementOrder`, a brand-new item lands ahead
/// of the server-only items, as upstream does.
fn normalize_order(merged: Vec<Value>, order: &Positions, server: &Positions, key: Option<&str>) -> Vec<Value> {
    let mut named: Vec<(usize, Option<usize>, Value)> = Vec::new();
    let mut rest: Vec<(Option<usize>, Value)> = Vec::new();
    for v in merged {
        let id = identity(&v, key);
        let (o, s) = (order.get(id), server.get(id));
        match o {
            Some(o) => named.push((o, s, v)),
            None => rest.push((s, v)),
        }
    }
    named.sort_by_key(|(o, _, _)| *o);
    rest.sort_by_key(|(s, _)| s.unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(named.len() + rest.len());
    let (mut left, mut right) = (rest.into_iter().peekable(), named.into_iter().peekable());
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (Some((Some(i), _)), Some((_, Some(j), _))) => i < j,
            (Some(_), Some(_)) => false,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_left {
            out.extend(left.next().map(|(_, v)| v));
        } else {
            out.extend(right.next().map(|(_, _, v)| v));
        }
    }
    out
}

struct Merger<'a> {
    kind: &'a str,
    /// Field names from the root to the value being merged.
    path: Vec<String>,
}

impl Merger<'_> {
    fn here(&self) -> String {
        if self.path.is_empty() {
            ".".into()
        } else {
            self.path.join(".")
        }
    }

    fn malformed(&self, directive: &str, reason: impl Into<String>) -> PatchError {
        PatchError::MalformedDirective { directive: directive.into(), path: self.here(), reason: reason.into() }
    }

    fn invalid_list(&self, reason: impl Into<String>) -> PatchError {
        PatchError::InvalidList { path: self.here(), reason: reason.into() }
    }

    fn missing_key(&self, key: &str) -> PatchError {
        PatchError::MissingMergeKey { key: key.into(), path: self.here() }
    }

    /// The value of a `$patch` directive, checked.
    fn directive<'v>(&self, v: &'v Value) -> Result<&'v str, PatchError> {
        match v.as_str() {
            Some(d @ ("replace" | "delete" | "merge")) => Ok(d),
            _ => Err(self.malformed(PATCH, format!("expected replace, delete or merge, got {v}"))),
        }
    }

    /// Merge a patch value into the original value of the same field (`None` when
    /// absent). `None` back means the field goes.
    fn merge_value(&mut self, orig: Option<Value>, patch: &Value) -> Result<Option<Value>, PatchError> {
        match patch {
            Value::Null => Ok(None),
            Value::Object(p) => {
                // Of another type, the original is simply replaced, as upstream does.
                let o = match orig {
                    Some(Value::Object(o)) => Some(o),
                    _ => None,
                };
                Ok(self.merge_map(o, p)?.map(Value::Object))
            }
            Value::Array(p) => {
                let o = match orig {
                    Some(Value::Array(o)) => Some(o),
                    _ => None,
                };
                Ok(Some(Value::Array(self.merge_list(o, p)?)))
            }
            scalar => Ok(Some(scalar.clone())),
        }
    }

    /// Merge a patch map. `orig` is `None` when there is nothing to merge into:
    /// the patch is then taken over with its directives carried out.
    fn merge_map(&mut self, orig: Option<Map<String, Value>>, patch: &Map<String, Value>) -> Result<Option<Map<String, Value>>, PatchError> {
        if let Some(d) = patch.get(PATCH) {
            match self.directive(d)? {
                // Upstream empties the map rather than dropping the field; a map
                // that was not there stays absent.
                "delete" => return Ok(orig.map(|_| Map::new())),
                "replace" => return self.merge_map_body(None, patch),
                _ => {}
            }
        }
        self.merge_map_body(orig, patch)
    }

    fn merge_map_body(&mut self, orig: Option<Map<String, Value>>, patch: &Map<String, Value>) -> Result<Option<Map<String, Value>>, PatchError> {
        let mut retain: Option<Vec<&str>> = None;
        let mut orders: Vec<(&str, &Vec<Value>)> = Vec::new();
        let mut deletions: Vec<(&str, &Vec<Value>)> = Vec::new();
        let mut fields: Vec<(&String, &Value)> = Vec::new();
        for (k, v) in patch {
            if k == PATCH {
                continue;
            } else if k == RETAIN_KEYS {
                let keys = v.as_array().ok_or_else(|| self.malformed(k, "must be a list of field names"))?;
                let keys = keys.iter().map(|x| x.as_str().ok_or_else(|| self.malformed(k, "must be a list of field names"))).collect::<Result<_, _>>()?;
                retain = Some(keys);
            } else if let Some(field) = k.strip_prefix(SET_ORDER) {
                let list = v.as_array().filter(|_| !field.is_empty()).ok_or_else(|| self.malformed(k, "must name a field and be a list"))?;
                orders.push((field, list));
            } else if let Some(field) = k.strip_prefix(DELETE_FROM) {
                let list = v.as_array().filter(|_| !field.is_empty()).ok_or_else(|| self.malformed(k, "must name a field and be a list"))?;
                deletions.push((field, list));
            } else if k.starts_with('$') {
                return Err(PatchError::UnknownDirective { key: k.clone(), path: self.here() });
            } else {
                fields.push((k, v));
            }
        }

        let mut result = orig.unwrap_or_default();
        // Upstream clears the unlisted fields before merging and insists that
        // every field the patch sets is listed.
        if let Some(keep) = &retain {
            if let Some((k, _)) = fields.iter().find(|(k, v)| !v.is_null() && !keep.contains(&k.as_str())) {
                return Err(self.malformed(RETAIN_KEYS, format!("the patch sets '{k}', which the list does not retain")));
            }
            result.retain(|k, _| keep.contains(&k.as_str()));
        }

        let mut done: Vec<&str> = Vec::new();
        for (field, order) in orders {
            self.path.push(field.to_string());
            let ordered = self.ordered_list(&mut result, field, order, patch.get(field));
            self.path.pop();
            if ordered? {
                done.push(field);
            }
        }

        for (k, v) in fields {
            if done.contains(&k.as_str()) {
                continue;
            }
            if v.is_null() {
                result.remove(k);
                continue;
            }
            let current = result.get_mut(k).map(std::mem::take);
            self.path.push(k.clone());
            let merged = self.merge_value(current, v);
            self.path.pop();
            match merged? {
                Some(m) => {
                    result.insert(k.clone(), m);
                }
                None => {
                    result.remove(k);
                }
            }
        }

        // After the merge, as upstream's parallel lists only ever remove.
        for (field, values) in deletions {
            if let Some(Value::Array(list)) = result.get_mut(field) {
                let doomed: HashSet<String> = values.iter().map(canon).collect();
                list.retain(|x| !doomed.contains(&canon(x)));
            }
        }
        Ok(Some(result))
    }

    /// Carry out `$setElementOrder/<field>` together with the patch of that field
    /// (upstream's `mergePatchIntoOriginal`). Precedence: the order list, then the
    /// patch's order, then the original's. Returns whether `field` was handled.
    fn ordered_list(&mut self, result: &mut Map<String, Value>, field: &str, order: &[Value], patch: Option<&Value>) -> Result<bool, PatchError> {
        let directive = format!("{SET_ORDER}{field}");
        let key = match list_strategy(self.kind, &self.path) {
            ListStrategy::Key(k) => Some(k),
            ListStrategy::Set => None,
            // Upstream has no meaning for ordering an atomic list; it is replaced.
            ListStrategy::Replace => return Ok(false),
        };
        let patch = match patch {
            None => None,
            Some(Value::Array(p)) => Some(p),
            // Dropping the list outright leaves nothing to order.
            Some(Value::Null) => {
                result.remove(field);
                return Ok(true);
            }
            Some(_) => return Err(self.malformed(&directive, format!("'{field}' in the same patch is not a list"))),
        };
        if let Some(k) = key {
            if order.iter().any(|o| o.get(k).is_none()) {
                return Err(self.malformed(&directive, format!("every item must carry the merge key '{k}'")));
            }
        }
        if let Some(p) = patch {
            self.check_patch_follows_order(p, order, key, &directive)?;
        }

        let orig = match result.get_mut(field).map(std::mem::take) {
            Some(Value::Array(o)) => Some(o),
            None | Some(Value::Null) => None,
            Some(other) => {
                result.insert(field.to_string(), other);
                return Err(self.malformed(&directive, format!("'{field}' is not a list")));
            }
        };
        let server = orig.as_deref().map(|o| Positions::of(o, key)).unwrap_or_default();
        let merged = match (orig, patch) {
            (Some(o), None) => o,
            (o, Some(p)) => self.merge_list(o, p)?,
            (None, None) => {
                result.remove(field);
                return Ok(true);
            }
        };
        result.insert(field.to_string(), Value::Array(normalize_order(merged, &Positions::of(order, key), &server, key)));
        Ok(true)
    }

    /// Upstream's `validatePatchWithSetOrderList`: the patch's items (deletions
    /// aside) must appear in the order list, in the same relative order.
    fn check_patch_follows_order(&self, patch: &[Value], order: &[Value], key: Option<&str>, directive: &str) -> Result<(), PatchError> {
        let order: Vec<Option<String>> = order.iter().map(|o| identity(o, key).map(canon)).collect();
        let mut at = 0;
        for item in patch.iter().filter(|v| v.get(PATCH).is_none()) {
            let Some(id) = identity(item, key) else { return Err(self.missing_key(key.unwrap_or_default())) };
            let want = canon(id);
            // One forward scan overall: each search starts where the last one matched.
            match order[at..].iter().position(|o| o.as_ref() == Some(&want)) {
                Some(i) => at += i + 1,
                None => return Err(self.malformed(directive, format!("the patch's item {id} is missing from it or out of its order"))),
            }
        }
        Ok(())
    }

    /// Merge a patch list into the original list of the same field (`None` when
    /// absent or not a list).
    fn merge_list(&mut self, orig: Option<Vec<Value>>, patch: &[Value]) -> Result<Vec<Value>, PatchError> {
        let Some(orig) = orig else { return self.fresh_list(patch) };
        match list_strategy(self.kind, &self.path) {
            ListStrategy::Replace => self.fresh_list(patch),
            ListStrategy::Set => self.merge_set(orig, patch),
            ListStrategy::Key(key) => self.merge_keyed(orig, patch, key),
        }
    }

    /// A list taken over from the patch: directive elements dropped, directives
    /// inside elements carried out.
    fn fresh_list(&mut self, patch: &[Value]) -> Result<Vec<Value>, PatchError> {
        let mut out = Vec::with_capacity(patch.len());
        for el in patch {
            match el {
                Value::Object(m) => {
                    if let Some(d) = m.get(PATCH) {
                        self.directive(d)?;
                        continue;
                    }
                    out.extend(self.merge_map(None, m)?.map(Value::Object));
                }
                Value::Array(a) => out.push(Value::Array(self.fresh_list(a)?)),
                other => out.push(other.clone()),
            }
        }
        Ok(out)
    }

    /// `{"$patch": "replace"}` among the elements: the rest of the list is the new list.
    fn wants_replace(&self, patch: &[Value]) -> Result<bool, PatchError> {
        for el in patch {
            if let Some(d) = el.get(PATCH) {
                if self.directive(d)? == "replace" {
                    return Ok(true);
                }
            }
        }
        Ok(false)
    }

    /// An ordered set of scalars (`patchStrategy:"merge"`, no merge key).
    fn merge_set(&mut self, orig: Vec<Value>, patch: &[Value]) -> Result<Vec<Value>, PatchError> {
        if self.wants_replace(patch)? {
            return self.fresh_list(patch);
        }
        if patch.iter().any(|v| v.is_object() || v.is_array()) {
            return Err(self.invalid_list("it merges as a set of scalar values"));
        }
        let server = Positions::of(&orig, None);
        let mut seen = HashSet::new();
        let mut merged: Vec<Value> = Vec::with_capacity(orig.len() + patch.len());
        for v in orig.into_iter().chain(patch.iter().cloned()) {
            if seen.insert(canon(&v)) {
                merged.push(v);
            }
        }
        Ok(normalize_order(merged, &Positions::of(patch, None), &server, None))
    }

    /// A list whose elements merge pairwise by `key` (upstream's `mergeSlice`).
    fn merge_keyed(&mut self, mut orig: Vec<Value>, patch: &[Value], key: &'static str) -> Result<Vec<Value>, PatchError> {
        let mut plain: Vec<&Map<String, Value>> = Vec::with_capacity(patch.len());
        let mut doomed = HashSet::new();
        let mut replace = false;
        for el in patch {
            let Value::Object(m) = el else { return Err(self.invalid_list(format!("its elements merge by '{key}' and must be objects"))) };
            let Some(d) = m.get(PATCH) else {
                plain.push(m);
                continue;
            };
            match self.directive(d)? {
                "delete" => {
                    let id = m.get(key).ok_or_else(|| self.missing_key(key))?;
                    doomed.insert(canon(id));
                }
                "replace" => replace = true,
                // Merging is what happens anyway.
                _ => {}
            }
        }
        if replace {
            return self.fresh_list(patch);
        }
        // Every element with a deleted key goes, duplicates included.
        if !doomed.is_empty() {
            orig.retain(|o| !o.get(key).is_some_and(|x| doomed.contains(&canon(x))));
        }

        let server = Positions::of(&orig, Some(key));
        // Where each key first sits in the list being built.
        let mut at = HashMap::new();
        for (i, o) in orig.iter().enumerate() {
            if let Some(id) = o.get(key) {
                at.entry(canon(id)).or_insert(i);
            }
        }
        let mut merged = orig;
        let mut order = Positions::default();
        for m in plain {
            let id = m.get(key).ok_or_else(|| self.missing_key(key))?;
            order.add(Some(id));
            match at.get(&canon(id)).copied() {
                Some(i) => {
                    let current = match std::mem::take(&mut merged[i]) {
                        Value::Object(o) => Some(o),
                        _ => None,
                    };
                    merged[i] = Value::Object(self.merge_map(current, m)?.unwrap_or_default());
                }
                None => {
                    at.insert(canon(id), merged.len());
                    merged.extend(self.merge_map(None, m)?.map(Value::Object));
                }
            }
        }
        Ok(normalize_order(merged, &order, &server, Some(key)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment() -> Value {
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default", "uid": "u-1", "resourceVersion": "7", "generation": 2,
                "labels": {"app": "web"},
                "annotations": {"deployment.kubernetes.io/revision": "2"},
                "finalizers": ["a", "b"],
            },
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {
                                "name": "web", "image": "web:1",
                                "ports": [{"containerPort": 80, "protocol": "TCP"}],
                                "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                                "volumeMounts": [{"name": "data", "mountPath": "/a"}, {"name": "data", "mountPath": "/b"}],
                                "resources": {"limits": {"cpu": "1"}},
                            },
                            {"name": "side", "image": "side:1", "ports": [{"containerPort": 80, "protocol": "TCP"}]},
                        ],
                        "volumes": [{"name": "data", "emptyDir": {}}],
                        "tolerations": [{"key": "k1", "operator": "Exists"}],
                        "restartPolicy": "Always",
                    },
                },
            },
            "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "True"}]},
        })
    }

    fn smp(patch: Value) -> Value {
        strategic_merge_patch(&deployment(), &patch, "Deployment").unwrap()
    }

    fn pod_spec(v: &Value) -> &Value {
        &v["spec"]["template"]["spec"]
    }

    fn names(list: &Value, key: &str) -> Vec<Value> {
        list.as_array().unwrap().iter().map(|v| v[key].clone()).collect()
    }

    /// No directive may survive into a stored object.
    fn assert_no_directives(v: &Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    assert!(!k.starts_with('$'), "directive {k} left in {v}");
                    assert_no_directives(x);
                }
            }
            Value::Array(a) => a.iter().for_each(assert_no_directives),
            _ => {}
        }
    }

    #[test]
    fn container_image_changes_by_name_and_keeps_the_other_containers() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "image": "side:2"}]}}}}));
        let cs = &pod_spec(&out)["containers"];
        assert_eq!(names(cs, "name"), [json!("web"), json!("side")]);
        assert_eq!(cs[0], deployment()["spec"]["template"]["spec"]["containers"][0]);
        assert_eq!(cs[1]["image"], "side:2");
        assert_eq!(cs[1]["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]));
    }

    #[test]
    fn adding_an_env_var_keeps_the_existing_ones() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "C", "value": "3"}]}]}}}}));
        let env = &pod_spec(&out)["containers"][0]["env"];
        // Without $setElementOrder upstream puts a new item ahead of the ones it keeps.
        assert_eq!(env, &json!([{"name": "C", "value": "3"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]));
        // With it (as kubectl sends), the order is the one asked for.
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "web",
            "$setElementOrder/env": [{"name": "A"}, {"name": "B"}, {"name": "C"}],
            "env": [{"name": "C", "value": "3"}]}]}}}}));
        assert_eq!(names(&pod_spec(&out)["containers"][0]["env"], "name"), [json!("A"), json!("B"), json!("C")]);
        // Changing one keeps its place.
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "env": [{"name": "B", "value": "9"}]}]}}}}));
        assert_eq!(pod_spec(&out)["containers"][0]["env"], json!([{"name": "A", "value": "1"}, {"name": "B", "value": "9"}]));
    }

    #[test]
    fn ports_merge_by_container_port_within_their_own_container() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}]}]}}}}));
        let cs = &pod_spec(&out)["containers"];
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 80, "protocol": "TCP", "name": "http"}, {"containerPort": 443}]));
        assert_eq!(cs[1]["ports"], json!([{"containerPort": 80, "protocol": "TCP"}]), "the other container's port 80 is untouched");
    }

    #[test]
    fn volume_mounts_merge_by_mount_path() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [
            {"name": "web", "volumeMounts": [{"name": "data", "mountPath": "/b", "readOnly": true}]}]}}}}));
        assert_eq!(
            pod_spec(&out)["containers"][0]["volumeMounts"],
            json!([{"name": "data", "mountPath": "/a"}, {"name": "data", "mountPath": "/b", "readOnly": true}])
        );
    }

    #[test]
    fn service_ports_merge_by_port() {
        let svc = json!({"kind": "Service", "spec": {"ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}], "selector": {"app": "x"}}});
        let out = strategic_merge_patch(&svc, &json!({"spec": {"ports": [{"port": 443, "targetPort": 8443}]}}), "Service").unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"name": "http", "port": 80}, {"name": "https", "port": 443, "targetPort": 8443}]));
        // The same field of another kind is atomic.
        let out = strategic_merge_patch(&svc, &json!({"spec": {"ports": [{"port": 443}]}}), "Ingress").unwrap();
        assert_eq!(out["spec"]["ports"], json!([{"port": 443}]));
    }

    #[test]
    fn delete_directive_removes_a_container() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "side", "$patch": "delete"}]}}}}));
        assert_eq!(names(&pod_spec(&out)["containers"], "name"), [json!("web")]);
        assert_no_directives(&out);
        // Deleting an element that is not there is no error.
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "ghost", "$patch": "delete"}]}}}}));
        assert_eq!(names(&pod_spec(&out)["containers"], "name"), [json!("web"), json!("side")]);
        // Without the merge key there is nothing to delete by.
        assert!(matches!(
            strategic_merge_patch(&deployment(), &json!({"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}}), "Deployment"),
            Err(PatchError::MissingMergeKey { .. })
        ));
    }

    #[test]
    fn set_element_order_reorders_containers() {
        let out = smp(json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}}));
        assert_eq!(names(&pod_spec(&out)["containers"], "name"), [json!("side"), json!("web")]);
        assert_eq!(pod_spec(&out)["containers"][1]["image"], "web:1");
        assert_no_directives(&out);
        // A patch item the order list does not name is refused, as upstream does.
        let bad = json!({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "web"}], "containers": [{"name": "side", "image": "s"}]}}}});
        assert!(matches!(strategic_merge_patch(&deployment(), &bad, "Deployment"), Err(PatchError::MalformedDirective { .. })));
    }

    #[test]
    fn retain_keys_switches_the_deployment_strategy() {
        let out = smp(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        // A field set by the patch must be retained.
        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        assert!(strategic_merge_patch(&deployment(), &bad, "Deployment").is_err());
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let out = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"], "finalizers": ["c", "b"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
        let out = smp(json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(json!({"metadata": {"finalizers": ["b"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b"]));
        // As kubectl sends when a finalizer is added to the end.
        let out = smp(json!({"metadata": {"$setElementOrder/finalizers": ["a", "b", "z"], "finalizers": ["z"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["a", "b", "z"]));
        assert_no_directives(&out);
    }

    #[test]
    fn null_deletes_a_key() {
        let out = smp(json!({"metadata": {"labels": {"app": null, "tier": "fe"}}, "spec": {"template": {"spec": {"restartPolicy": null}}}}));
        assert_eq!(out["metadata"]["labels"], json!({"tier": "fe"}));
        assert!(pod_spec(&out).get("restartPolicy").is_none());
        // A null for an absent key is ignored, not stored.
        let out = smp(json!({"spec": {"paused": null}}));
        assert!(out["spec"].get("paused").is_none());
    }

    #[test]
    fn merge_patch_adds_a_label() {
        // `application/merge-patch+json` is json-patch's RFC 7386 merge.
        let merge_patch = json_patch::merge;
        let mut t = deployment();
        merge_patch(&mut t, &json!({"metadata": {"labels": {"tier": "fe"}}}));
        assert_eq!(t["metadata"]["labels"], json!({"app": "web", "tier": "fe"}));
        merge_patch(&mut t, &json!({"metadata": {"labels": {"app": null}}, "spec": {"template": {"spec": {"containers": [{"name": "x"}]}}}}));
        assert_eq!(t["metadata"]["labels"], json!({"tier": "fe"}));
        assert_eq!(pod_spec(&t)["containers"], json!([{"name": "x"}]), "merge patch replaces lists");
        let mut s = json!("x");
        merge_patch(&mut s, &json!({"a": {"b": null, "c": 1}}));
        assert_eq!(s, json!({"a": {"c": 1}}));
    }

    #[test]
    fn kubectl_apply_patch_on_a_full_deployment() {
        let last = r#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},"spec":{"template":{"spec":{"containers":[{"name":"web","image":"web:2"},{"name":"side","image":"side:1"}]}}}}"#;
        let patch = json!({
            "metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": last}},
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
                "containers": [{"image": "web:2", "name": "web"}],
            }}},
        });
        let out = smp(patch);
        let mut want = deployment();
        want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = json!(last);
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("web:2");
        assert_eq!(out, want);
    }

    #[test]
    fn kubectl_edit_removes_an_env_var_and_adds_a_container() {
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "new"}, {"name": "side"}],
            "containers": [
                {"name": "web", "$setElementOrder/env": [{"name": "B"}], "env": [{"$patch": "delete", "name": "A"}]},
                {"name": "new", "image": "new:1", "$setElementOrder/env": [{"name": "X"}], "env": [{"name": "X", "value": "x"}]},
            ],
        }}}});
        let out = smp(patch);
        let cs = &pod_spec(&out)["containers"];
        assert_eq!(names(cs, "name"), [json!("web"), json!("new"), json!("side")]);
        assert_eq!(cs[0]["env"], json!([{"name": "B", "value": "2"}]));
        assert_eq!(cs[1], json!({"name": "new", "image": "new:1", "env": [{"name": "X", "value": "x"}]}));
        assert_no_directives(&out);
    }

    #[test]
    fn rollout_restart_pause_and_set_image() {
        let out = smp(json!({"spec": {"template": {"metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": "2024-01-01T00:00:00Z"}}}}}));
        assert_eq!(out["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"], "2024-01-01T00:00:00Z");
        assert_eq!(out["spec"]["template"]["metadata"]["labels"], json!({"app": "web"}));
        let out = smp(json!({"spec": {"paused": true}}));
        assert_eq!(out["spec"]["paused"], true);
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"image": "web:9", "name": "web"}]}}}}));
        assert_eq!(names(&pod_spec(&out)["containers"], "image"), [json!("web:9"), json!("side:1")]);
    }

    #[test]
    fn cronjob_containers_merge_by_name() {
        let cj = json!({"kind": "CronJob", "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "containers": [{"name": "a", "image": "a:1", "env": [{"name": "E", "value": "1"}]}, {"name": "b", "image": "b:1"}]}}}}}});
        let p = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "b:2"}]}}}}}});
        let out = strategic_merge_patch(&cj, &p, "CronJob").unwrap();
        let cs = &out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs, &json!([{"name": "a", "image": "a:1", "env": [{"name": "E", "value": "1"}]}, {"name": "b", "image": "b:2"}]));
        let p = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "env": [{"name": "E", "value": "2"}]}]}}}}}});
        let out = strategic_merge_patch(&cj, &p, "CronJob").unwrap();
        assert_eq!(out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["env"], json!([{"name": "E", "value": "2"}]));
    }

    #[test]
    fn strategies_follow_the_upstream_tags() {
        let s = |kind: &str, path: &str| list_strategy(kind, &path.split('.').map(String::from).collect::<Vec<_>>());
        use ListStrategy::*;
        assert_eq!(s("Pod", "spec.containers"), Key("name"));
        assert_eq!(s("Pod", "spec.initContainers.ports"), Key("containerPort"));
        assert_eq!(s("Pod", "spec.ephemeralContainers.volumeDevices"), Key("devicePath"));
        assert_eq!(s("StatefulSet", "spec.template.spec.containers.volumeMounts"), Key("mountPath"));
        assert_eq!(s("DaemonSet", "spec.template.spec.volumes"), Key("name"));
        assert_eq!(s("Job", "spec.template.spec.hostAliases"), Key("ip"));
        assert_eq!(s("ReplicaSet", "spec.template.spec.topologySpreadConstraints"), Key("topologyKey"));
        assert_eq!(s("CronJob", "spec.jobTemplate.spec.template.spec.imagePullSecrets"), Key("name"));
        assert_eq!(s("Pod", "spec.schedulingGates"), Key("name"));
        assert_eq!(s("Pod", "spec.resourceClaims"), Key("name"));
        assert_eq!(s("Pod", "spec.tolerations"), Replace);
        assert_eq!(s("Pod", "spec.readinessGates"), Replace);
        assert_eq!(s("Pod", "spec.containers.envFrom"), Replace);
        assert_eq!(s("Pod", "spec.containers.command"), Replace);
        assert_eq!(s("Pod", "spec.containers.args"), Replace);
        // `+listType=atomic` upstream, despite having a natural key.
        assert_eq!(s("Pod", "spec.containers.resizePolicy"), Replace);
        assert_eq!(s("Deployment", "spec.containers"), Replace, "a Deployment's spec is not a pod spec");
        assert_eq!(s("Deployment", "spec.template.spec.containers.env"), Key("name"));
        assert_eq!(s("Deployment", "metadata.finalizers"), Set);
        assert_eq!(s("Deployment", "spec.template.metadata.finalizers"), Set);
        assert_eq!(s("ConfigMap", "metadata.ownerReferences"), Key("uid"));
        assert_eq!(s("Service", "spec.ports"), Key("port"));
        assert_eq!(s("Deployment", "status.conditions"), Key("type"));
        assert_eq!(s("Foo", "status.conditions"), Replace, "kinds without upstream types replace lists");
        assert_eq!(s("Node", "status.addresses"), Key("type"));
        assert_eq!(s("Pod", "status.containerStatuses"), Replace);
        assert_eq!(s("Pod", "status.initContainerStatuses"), Replace);
        assert_eq!(s("Pod", "status.ephemeralContainerStatuses"), Replace);
        assert_eq!(s("StatefulSet", "spec.volumeClaimTemplates"), Replace);
        assert_eq!(s("Pod", "spec.volumes.projected.sources"), Replace);
    }

    #[test]
    fn atomic_lists_are_replaced() {
        let out = smp(json!({"spec": {"template": {"spec": {"tolerations": [{"key": "k2", "operator": "Exists"}], "containers": [{"name": "web", "args": ["x"]}]}}}}));
        assert_eq!(pod_spec(&out)["tolerations"], json!([{"key": "k2", "operator": "Exists"}]));
        assert_eq!(pod_spec(&out)["containers"][0]["args"], json!(["x"]));
        let pod = json!({"status": {"containerStatuses": [{"name": "a", "ready": true}, {"name": "b", "ready": true}]}});
        let out = strategic_merge_patch(&pod, &json!({"status": {"containerStatuses": [{"name": "a", "ready": false}]}}), "Pod").unwrap();
        assert_eq!(out["status"]["containerStatuses"], json!([{"name": "a", "ready": false}]));
    }

    #[test]
    fn status_conditions_and_node_addresses_merge_by_type() {
        let out = smp(json!({"status": {"conditions": [{"type": "Progressing", "status": "False"}]}}));
        assert_eq!(out["status"]["conditions"], json!([{"type": "Available", "status": "True"}, {"type": "Progressing", "status": "False"}]));
        let node = json!({"status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}]}});
        let out = strategic_merge_patch(&node, &json!({"status": {"addresses": [{"type": "Hostname", "address": "n2"}]}}), "Node").unwrap();
        assert_eq!(out["status"]["addresses"], json!([{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n2"}]));
    }

    #[test]
    fn owner_references_merge_by_uid() {
        let cm = json!({"metadata": {"ownerReferences": [{"uid": "1", "name": "a"}]}});
        let out = strategic_merge_patch(&cm, &json!({"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}), "ConfigMap").unwrap();
        assert_eq!(names(&out["metadata"]["ownerReferences"], "uid"), [json!("2"), json!("1")]);
    }

    #[test]
    fn replace_directives() {
        let out = smp(json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}, {"name": "only", "image": "o:1"}]}}}}));
        assert_eq!(pod_spec(&out)["containers"], json!([{"name": "only", "image": "o:1"}]));
        let out = smp(json!({"metadata": {"finalizers": [{"$patch": "replace"}, "z"]}}));
        assert_eq!(out["metadata"]["finalizers"], json!(["z"]));
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"$patch": "replace"}]}}}}));
        assert_eq!(pod_spec(&out)["containers"], json!([]));
        assert_no_directives(&out);
    }

    #[test]
    fn delete_directive_on_a_map_empties_it_as_upstream() {
        let out = smp(json!({"spec": {"selector": {"$patch": "delete"}}}));
        assert_eq!(out["spec"]["selector"], json!({}));
        let out = smp(json!({"spec": {"nothing": {"$patch": "delete"}}}));
        assert!(out["spec"].get("nothing").is_none());
    }

    #[test]
    fn merge_directive_is_the_default() {
        let out = smp(json!({"metadata": {"$patch": "merge", "labels": {"x": "y"}}}));
        assert_eq!(out["metadata"]["labels"], json!({"app": "web", "x": "y"}));
    }

    #[test]
    fn new_lists_and_maps_are_created_without_directives() {
        let pod = json!({"kind": "Pod", "spec": {"containers": [{"name": "a"}]}});
        let patch = json!({"spec": {
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "gone", "$patch": "delete"}],
            "initContainers": [{"name": "i", "$setElementOrder/env": [{"name": "E"}], "env": [{"name": "E", "value": "1"}], "args": null}],
            "securityContext": {"$patch": "replace", "runAsUser": 1000, "fsGroup": null},
        }});
        let out = strategic_merge_patch(&pod, &patch, "Pod").unwrap();
        assert_eq!(out["spec"]["volumes"], json!([{"name": "v", "emptyDir": {}}]));
        assert_eq!(out["spec"]["initContainers"], json!([{"name": "i", "env": [{"name": "E", "value": "1"}]}]));
        assert_eq!(out["spec"]["securityContext"], json!({"runAsUser": 1000}));
        assert_no_directives(&out);
    }

    /// Cases from upstream's own tests of patch application, with merge lists.
    #[test]
    fn upstream_ordering_cases() {
        let pod = |names: &[u64]| json!({"spec": {"containers": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()}});
        let run = |orig: Value, patch: Value| strategic_merge_patch(&orig, &json!({"spec": patch}), "Pod").unwrap()["spec"]["containers"].clone();
        // "preserve the order from the patch in a merging list 2"
        let out = run(pod(&[1, 2, 3]), json!({"containers": [{"name": 3, "value": "c"}, {"name": 1, "value": "a"}]}));
        assert_eq!(names(&out, "name"), [json!(2), json!(3), json!(1)]);
        // "add and delete an item in a list and preserve order"
        let orig = json!({"spec": {"containers": [{"name": 1}, {"name": 3, "value": 3}, {"name": 2, "value": 2}]}});
        let out = run(orig, json!({
            "$setElementOrder/containers": [{"name": 4}, {"name": 2}, {"name": 1}],
            "containers": [{"name": 4, "value": 4}, {"name": 3, "$patch": "delete"}],
        }));
        assert_eq!(out, json!([{"name": 4, "value": 4}, {"name": 2, "value": 2}, {"name": 1}]));
        // "$setElementOrder contains item that is not present in the list to be merged"
        let out = run(pod(&[1, 3]), json!({
            "$setElementOrder/containers": [{"name": 3}, {"name": 2}, {"name": 1}],
            "containers": [{"name": 3, "value": 3}, {"name": 1, "value": 1}],
        }));
        assert_eq!(out, json!([{"name": 3, "value": 3}, {"name": 1, "value": 1}]));
        // "delete all duplicate entries in a merging list"
        let orig = json!({"spec": {"containers": [{"name": 1}, {"name": 1}, {"name": 2, "value": "a"}, {"name": 3}, {"name": 3}]}});
        let out = run(orig, json!({"containers": [{"name": 1, "$patch": "delete"}, {"name": 3, "$patch": "delete"}]}));
        assert_eq!(out, json!([{"name": 2, "value": "a"}]));
        // "preserve the order from the patch in a merging int list"
        let node = json!({"spec": {"podCIDRs": [1, 2, 3]}});
        let out = strategic_merge_patch(&node, &json!({"spec": {"podCIDRs": [3, 1]}}), "Node").unwrap();
        assert_eq!(out["spec"]["podCIDRs"], json!([2, 3, 1]));
    }

    #[test]
    fn volume_source_switch_with_retain_keys() {
        // kubectl apply switching a volume from emptyDir to a configMap.
        let patch = json!({"spec": {"template": {"spec": {
            "$setElementOrder/volumes": [{"name": "data"}],
            "volumes": [{"$retainKeys": ["configMap", "name"], "configMap": {"name": "cfg"}, "name": "data"}],
        }}}});
        let out = smp(patch);
        assert_eq!(pod_spec(&out)["volumes"], json!([{"name": "data", "configMap": {"name": "cfg"}}]));
    }

    #[test]
    fn numeric_merge_keys_compare_as_numbers() {
        let out = smp(json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "ports": [{"containerPort": 80.0, "name": "http"}]}]}}}}));
        assert_eq!(pod_spec(&out)["containers"][0]["ports"].as_array().unwrap().len(), 1);
        assert_eq!(pod_spec(&out)["containers"][0]["ports"][0]["name"], "http");
    }

    #[test]
    fn long_lists_merge_in_reasonable_time() {
        let n = 20_000;
        let env: Vec<Value> = (0..n).map(|i| json!({"name": format!("E{i}"), "value": "x"})).collect();
        let pod = json!({"spec": {"containers": [{"name": "a", "env": env}]}});
        let patch_env: Vec<Value> = (0..n).rev().map(|i| json!({"name": format!("E{i}"), "value": "y"})).collect();
        let order: Vec<Value> = (0..n).map(|i| json!({"name": format!("E{i}")})).collect();
        let patch = json!({"spec": {"containers": [{"name": "a", "env": patch_env.iter().rev().cloned().collect::<Vec<_>>(), "$setElementOrder/env": order}]}});
        let started = std::time::Instant::now();
        let out = strategic_merge_patch(&pod, &patch, "Pod").unwrap();
        let out2 = strategic_merge_patch(&pod, &json!({"spec": {"containers": [{"name": "a", "env": patch_env}]}}), "Pod").unwrap();
        assert!(started.elapsed().as_secs() < 10, "took {:?}", started.elapsed());
        assert_eq!(out["spec"]["containers"][0]["env"][n - 1], json!({"name": format!("E{}", n - 1), "value": "y"}));
        assert_eq!(out2["spec"]["containers"][0]["env"][0], json!({"name": format!("E{}", n - 1), "value": "y"}));
    }

    #[test]
    fn errors() {
        let d = deployment();
        let is_unknown = |r| matches!(r, Err(PatchError::UnknownDirective { .. }));
        assert!(is_unknown(strategic_merge_patch(&d, &json!({"$foo": 1}), "Deployment")));
        assert!(is_unknown(strategic_merge_patch(&d, &json!({"spec": {"template": {"spec": {"containers": [{"name": "web", "$bar": 1}]}}}}), "Deployment")));
        assert!(matches!(strategic_merge_patch(&d, &json!([1]), "Deployment"), Err(PatchError::NotAnObject(_))));
        assert!(matches!(strategic_merge_patch(&d, &json!("x"), "Deployment"), Err(PatchError::NotAnObject(_))));
        assert!(strategic_merge_patch(&d, &json!({"spec": {"$patch": "explode"}}), "Deployment").is_err());
        assert!(strategic_merge_patch(&d, &json!({"spec": {"$retainKeys": "type"}}), "Deployment").is_err());
        assert!(strategic_merge_patch(&d, &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": "a"}}), "Deployment").is_err());
        assert!(strategic_merge_patch(&d, &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}), "Deployment").is_err());
        assert!(strategic_merge_patch(&d, &json!({"spec": {"template": {"spec": {"containers": ["web"]}}}}), "Deployment").is_err());
        assert!(strategic_merge_patch(&d, &json!({"metadata": {"finalizers": [{"x": 1}]}}), "Deployment").is_err());
        let odd = json!({"metadata": {"finalizers": "x"}});
        assert!(strategic_merge_patch(&odd, &json!({"metadata": {"$setElementOrder/finalizers": ["x"]}}), "Pod").is_err());
        let msg = strategic_merge_patch(&d, &json!({"spec": {"template": {"$baz": 1}}}), "Deployment").unwrap_err().to_string();
        assert!(msg.contains("$baz") && msg.contains("spec.template"), "{msg}");
    }

    #[test]
    fn json_patch_operations() {
        let t = json!({"metadata": {"labels": {"a": "1"}}, "spec": {"replicas": 1}});
        let out = json_patch(&t, &json!([
            {"op": "add", "path": "/metadata/labels/b", "value": "2"},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "remove", "path": "/metadata/labels/a"},
            {"op": "test", "path": "/spec/replicas", "value": 3},
        ])).unwrap();
        assert_eq!(out, json!({"metadata": {"labels": {"b": "2"}}, "spec": {"replicas": 3}}));
        let err = json_patch(&t, &json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/spec/replicas", "value": 9}])).unwrap_err();
        assert!(matches!(&err, PatchError::JsonPatchOp { index: 1, op, path, .. } if op == "test" && path == "/spec/replicas"), "{err}");
        assert!(json_patch(&t, &json!([{"op": "remove", "path": "/nope"}])).is_err());
        assert!(matches!(json_patch(&t, &json!({"op": "add"})), Err(PatchError::InvalidJsonPatch(_))));
        assert!(matches!(json_patch(&t, &json!([1, 2])), Err(PatchError::InvalidJsonPatch(_))));
        // Upstream decodes any array of objects; what it cannot do is applying (422).
        assert!(matches!(json_patch(&t, &json!([{"op": "frobnicate", "path": "/a"}])), Err(PatchError::JsonPatchOp { index: 0, .. })));
        assert!(matches!(json_patch(&t, &json!([{"op": "add", "path": "/a", "value": 1}, {"op": "add"}])), Err(PatchError::JsonPatchOp { index: 1, .. })));
    }
}
