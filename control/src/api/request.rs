//! Turning an HTTP request into what the generic handlers need: which resource,
//! namespace, name and subresource; the query options; the decoded body.

use super::protobuf;
use super::resources::{self, Resource, Subresource};
use super::status::{ApiError, ApiResult};
use axum::http::HeaderMap;
use serde_json::Value;
use std::collections::HashMap;

/// The object (or collection) a request addresses.
#[derive(Debug)]
pub struct Address {
    pub resource: &'static Resource,
    /// Namespace from the path; `None` for cluster-scoped kinds or all-namespace lists.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Subresource>,
}

impl Address {
    pub fn key(&self) -> String {
        self.resource.key(self.namespace.as_deref().unwrap_or(""), self.name.as_deref().unwrap_or(""))
    }

    pub fn target(&self) -> super::status::Target {
        super::status::Target {
            group: self.resource.group.into(),
            resource: self.resource.plural.into(),
            kind: self.resource.kind.into(),
            name: self.name.clone().unwrap_or_default(),
        }
    }
}

/// Parse the part of the path after `/api/v1/` or `/apis/<g>/<v>/`.
pub fn parse_address(group: &str, version: &str, rest: &[&str]) -> ApiResult<Address> {
    let find = |plural: &str| resources::find(group, version, plural);
    let sub = |s: &str| Subresource::from_path(s).ok_or(ApiError::UnknownPath);
    let addr = match rest {
        // namespaces/{ns}/{plural}[/{name}[/{sub}]] addresses a namespaced kind...
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|r| r.namespaced) => {
            let resource = find(plural).ok_or(ApiError::UnknownPath)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] => (Some(name.to_string()), None),
                [name, s] => (Some(name.to_string()), Some(sub(s)?)),
                _ => return Err(ApiError::UnknownPath),
            };
            Address { resource, namespace: Some(ns.to_string()), name, sub }
        }
        // ...anything else is a cluster-scoped path (including namespaces/{name}/status).
        [plural, tail @ ..] => {
            let resource = find(plural).ok_or(ApiError::UnknownPath)?;
            let (name, sub) = match tail {
                [] => (None, None),
                [name] if !resource.namespaced => (Some(name.to_string()), None),
                [name, s] if !resource.namespaced => (Some(name.to_string()), Some(sub(s)?)),
                _ => return Err(ApiError::UnknownPath),
            };
            Address { resource, namespace: None, name, sub }
        }
        [] => return Err(ApiError::UnknownPath),
    };
    if let Some(s) = addr.sub {
        if !addr.resource.has(s) {
            return Err(ApiError::UnknownPath);
        }
    }
    if addr.name.as_deref().is_some_and(str::is_empty) || addr.namespace.as_deref().is_some_and(str::is_empty) {
        return Err(ApiError::UnknownPath);
    }
    Ok(addr)
}

/// Query parameters, decoded once.
#[derive(Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(raw: Option<&str>) -> Self {
        let mut map = HashMap::new();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            map.insert(percent_decode(k), percent_decode(v));
        }
        Self(map)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }
    /// A boolean parameter, spelled any way Go's `strconv.ParseBool` accepts
    /// (the Python client sends `watch=True`).
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.0.get(k).map(String::as_str), Some("1" | "t" | "T" | "true" | "True" | "TRUE"))
    }
    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        self.get(k)
            .map(|v| v.parse().map_err(|_| ApiError::BadRequest(format!("invalid value for {k}: {v:?}"))))
            .transpose()
    }
    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex.ok_or(()) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `Content-Type` media type without parameters, lower-cased.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decode an object body in any media type the API accepts.
pub fn decode_body(headers: &HeaderMap, body: &[u8]) -> ApiResult<Value> {
    let ct = content_type(headers);
    let value: Value = match ct.as_str() {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| bad_body(&e))?,
        "application/yaml" | "application/apply-patch+yaml" | "text/yaml" => {
            serde_yaml_ng::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?
        }
        "application/vnd.kubernetes.protobuf" => {
            protobuf::decode_object(body).map_err(|e| ApiError::BadRequest(format!("error decoding protobuf: {e}")))?
        }
        _ => return Err(ApiError::UnsupportedMediaType),
    };
    Ok(value)
}

/// Decode a PATCH body (always JSON or YAML text).
pub fn decode_patch(body: &[u8], yaml: bool) -> ApiResult<Value> {
    if yaml {
        serde_yaml_ng::from_slice(body).map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| bad_body(&e))
    }
}

fn bad_body(e: &serde_json::Error) -> ApiError {
    ApiError::BadRequest(format!("the request body is not valid JSON: {e}"))
}

/// The response form the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wanted {
    Object,
    /// `as=Table;g=meta.k8s.io` (kubectl's human output).
    Table,
    /// `as=PartialObjectMetadata[List]` (metadata-only clients).
    Metadata,
}

pub fn wanted(headers: &HeaderMap) -> Wanted {
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    // The first alternative we can serve wins; kubectl lists Table first with a JSON fallback.
    for alt in accept.split(',') {
        let alt = alt.replace(' ', "");
        if alt.contains("as=Table") && alt.contains("g=meta.k8s.io") {
            return Wanted::Table;
        }
        if alt.contains("as=PartialObjectMetadata") && alt.contains("g=meta.k8s.io") {
            return Wanted::Metadata;
        }
        if alt.starts_with("application/json") || alt.starts_with("*/*") || alt.starts_with("application/vnd.kubernetes.protobuf") {
            return Wanted::Object;
        }
    }
    Wanted::Object
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_addresses() {
        let a = parse_address("", "v1", &["namespaces", "default", "pods", "x", "status"]).unwrap();
        assert_eq!((a.resource.plural, a.namespace.as_deref(), a.name.as_deref(), a.sub), ("pods", Some("default"), Some("x"), Some(Subresource::Status)));
        let a = parse_address("", "v1", &["namespaces", "default"]).unwrap();
        assert_eq!((a.resource.plural, a.name.as_deref()), ("namespaces", Some("default")));
        let a = parse_address("", "v1", &["namespaces", "kube-system", "status"]).unwrap();
        assert_eq!(a.sub, Some(Subresource::Status));
        let a = parse_address("apps", "v1", &["deployments"]).unwrap();
        assert!(a.namespace.is_none() && a.name.is_none());
        assert!(parse_address("", "v1", &["pods", "x"]).is_err(), "namespaced object needs a namespace");
        assert!(parse_address("", "v1", &["widgets"]).is_err());
        assert!(parse_address("", "v1", &["namespaces", "d", "configmaps", "x", "scale"]).is_err());
    }

    #[test]
    fn query_decodes_selectors() {
        let q = Query::parse(Some("labelSelector=app%20in%20(a%2Cb)%2Ctier!%3Ddb&watch=true&limit=500"));
        assert_eq!(q.get("labelSelector"), Some("app in (a,b),tier!=db"));
        assert!(q.flag("watch"));
        assert!(Query::parse(Some("watch=True")).flag("watch"));
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert_eq!(q.int("limit").unwrap(), Some(500));
    }
}
