//! The OCI distribution spec v1.1 HTTP API over [`Storage`].
//!
//! Repository names contain slashes, so one fallback handler reads the route from the path's
//! last components (`.../manifests/<ref>`, `.../blobs/uploads/<id>`, ...) instead of a router
//! pattern per endpoint.

use crate::error::{ErrorCode, RegistryError};
use crate::names::{Digest, ManifestRef, RepoName};
use crate::storage::{Storage, MAX_MANIFEST_BYTES};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::future::Future;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// Serves the registry on `listener` until `shutdown` completes.
pub async fn serve(listener: tokio::net::TcpListener, storage: Storage, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
    use axum::serve::ListenerExt as _;
    // Without TCP_NODELAY a small blob's body waits ~40 ms on delayed ACKs behind its headers.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, router(storage)).with_graceful_shutdown(shutdown).await
}

pub fn router(storage: Storage) -> Router {
    Router::new().fallback(handle).with_state(storage)
}

#[derive(Debug, PartialEq)]
enum Route {
    Ping,
    Catalog,
    Tags(RepoName),
    Manifest(RepoName, ManifestRef),
    Blob(RepoName, Digest),
    UploadStart(RepoName),
    Upload(RepoName, String),
    Referrers(RepoName, Digest),
}

fn not_found() -> RegistryError {
    RegistryError::new(ErrorCode::Unsupported, "no such endpoint").with_status(404)
}

fn route(path: &str) -> Result<Route, RegistryError> {
    let rest = path.strip_prefix("/v2").ok_or_else(not_found)?;
    if rest.is_empty() || rest == "/" {
        return Ok(Route::Ping);
    }
    let rest = rest.strip_prefix('/').ok_or_else(not_found)?;
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    let parts: Vec<String> = rest.split('/').map(|p| p.replace("%3A", ":").replace("%3a", ":")).collect();
    let n = parts.len();
    let name = |k: usize| if n > k { RepoName::parse(&parts[..n - k].join("/")) } else { Err(not_found()) };
    let at = |i: usize| if i <= n && i > 0 { parts[n - i].as_str() } else { "" };
    match (at(3), at(2), at(1)) {
        (_, "tags", "list") => Ok(Route::Tags(name(2)?)),
        (_, "manifests", r) => Ok(Route::Manifest(name(2)?, ManifestRef::parse(r)?)),
        ("blobs", "uploads", "") => Ok(Route::UploadStart(name(3)?)),
        (_, "blobs", "uploads") => Ok(Route::UploadStart(name(2)?)),
        ("blobs", "uploads", id) => Ok(Route::Upload(name(3)?, id.to_owned())),
        (_, "blobs", d) => Ok(Route::Blob(name(2)?, Digest::parse(d)?)),
        (_, "referrers", d) => Ok(Route::Referrers(name(2)?, Digest::parse(d)?)),
        _ => Err(not_found()),
    }
}

async fn handle(State(storage): State<Storage>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut response = match dispatch(&storage, req).await {
        Ok(r) => r,
        Err(e) => {
            if e.status >= 500 {
                tracing::warn!(%method, %path, error = %e, "registry request failed");
            } else {
                tracing::debug!(%method, %path, error = %e, "registry request refused");
            }
            e.into_response()
        }
    };
    response.headers_mut().insert("docker-distribution-api-version", HeaderValue::from_static("registry/2.0"));
    response
}

fn query(req: &Request) -> HashMap<String, String> {
    req.uri()
        .query()
        .map(|q| {
            q.split('&')
                .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
                .map(|(k, v)| (percent_decode(k), percent_decode(v)))
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(x) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(x);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn respond(status: StatusCode, headers: &[(&'static str, String)], body: Body) -> Response {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(v) {
            r.headers_mut().insert(*k, v);
        }
    }
    r
}

async fn dispatch(s: &Storage, req: Request) -> Result<Response, RegistryError> {
    let route = route(req.uri().path())?;
    let q = query(&req);
    let method = req.method().clone();
    match (route, method) {
        (Route::Ping, Method::GET | Method::HEAD) => Ok(respond(StatusCode::OK, &[("content-type", "application/json".into())], Body::from("{}"))),
        (Route::Catalog, Method::GET) => Ok(catalog(s, &q)),
        (Route::Tags(name), Method::GET) => tags(s, &name, &q),
        (Route::Manifest(name, r), Method::GET) => get_manifest(s, &name, &r, true),
        (Route::Manifest(name, r), Method::HEAD) => get_manifest(s, &name, &r, false),
        (Route::Manifest(name, r), Method::PUT) => put_manifest(s, &name, &r, req).await,
        (Route::Manifest(name, r), Method::DELETE) => {
            s.delete_manifest(&name, &r)?;
            Ok(respond(StatusCode::ACCEPTED, &[], Body::empty()))
        }
        (Route::Blob(name, d), Method::GET) => get_blob(s, &name, &d, req.headers(), true).await,
        (Route::Blob(name, d), Method::HEAD) => get_blob(s, &name, &d, req.headers(), false).await,
        (Route::Blob(name, d), Method::DELETE) => {
            s.delete_blob(&name, &d)?;
            Ok(respond(StatusCode::ACCEPTED, &[], Body::empty()))
        }
        (Route::UploadStart(name), Method::POST) => start_upload(s, &name, &q, req).await,
        (Route::Upload(name, id), Method::GET) => {
            let size = s.upload_size(&name, &id)?;
            Ok(upload_state(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Route::Upload(name, id), Method::PATCH) => {
            let start = content_range_start(req.headers())?;
            let size = s.append_upload(&name, &id, start, req.into_body().into_data_stream()).await?;
            Ok(upload_state(StatusCode::ACCEPTED, &name, &id, size))
        }
        (Route::Upload(name, id), Method::PUT) => {
            let digest = Digest::parse(q.get("digest").map(String::as_str).unwrap_or(""))?;
            s.finish_upload(&name, &id, &digest, req.into_body().into_data_stream()).await?;
            Ok(blob_created(&name, &digest))
        }
        (Route::Upload(name, id), Method::DELETE) => {
            s.cancel_upload(&name, &id)?;
            Ok(respond(StatusCode::NO_CONTENT, &[], Body::empty()))
        }
        (Route::Referrers(name, d), Method::GET) => Ok(referrers(s, &name, &d, &q)),
        _ => Err(RegistryError::new(ErrorCode::Unsupported, "method not allowed here").with_status(405)),
    }
}

fn catalog(s: &Storage, q: &HashMap<String, String>) -> Response {
    let (page, next) = paginate(s.repositories(), q);
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(last) = next {
        headers.push(("link", format!("</v2/_catalog?n={}&last={last}>; rel=\"next\"", q["n"])));
    }
    respond(StatusCode::OK, &headers, Body::from(json!({ "repositories": page }).to_string()))
}

/// `n` and `last` as the spec defines them: entries after `last`, at most `n`; the second
/// value is the `last` of the next page when one exists.
fn paginate(all: Vec<String>, q: &HashMap<String, String>) -> (Vec<String>, Option<String>) {
    let after: Vec<String> = match q.get("last") {
        Some(last) => all.into_iter().filter(|t| t > last).collect(),
        None => all,
    };
    match q.get("n").and_then(|n| n.parse::<usize>().ok()) {
        Some(n) if n < after.len() => {
            let page: Vec<String> = after[..n].to_vec();
            let next = page.last().cloned();
            (page, next)
        }
        _ => (after, None),
    }
}

fn tags(s: &Storage, name: &RepoName, q: &HashMap<String, String>) -> Result<Response, RegistryError> {
    let (page, next) = paginate(s.tags(name)?, q);
    let mut headers = vec![("content-type", "application/json".to_owned())];
    if let Some(last) = next {
        headers.push(("link", format!("</v2/{name}/tags/list?n={}&last={last}>; rel=\"next\"", q["n"])));
    }
    Ok(respond(StatusCode::OK, &headers, Body::from(json!({ "name": name.as_str(), "tags": page }).to_string())))
}

fn get_manifest(s: &Storage, name: &RepoName, r: &ManifestRef, with_body: bool) -> Result<Response, RegistryError> {
    let m = s.manifest(name, r)?;
    let headers = [("content-type", m.media_type), ("docker-content-digest", m.digest.to_string()), ("content-length", m.body.len().to_string())];
    Ok(respond(StatusCode::OK, &headers, if with_body { Body::from(m.body) } else { Body::empty() }))
}

async fn put_manifest(s: &Storage, name: &RepoName, r: &ManifestRef, req: Request) -> Result<Response, RegistryError> {
    let content_type = req.headers().get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_owned();
    let body = axum::body::to_bytes(req.into_body(), MAX_MANIFEST_BYTES)
        .await
        .map_err(|e| RegistryError::new(ErrorCode::ManifestInvalid, format!("reading the manifest: {e} (at most {MAX_MANIFEST_BYTES} bytes)")))?;
    let checked = check_manifest(s, name, &content_type, &body)?;
    let digest = Digest::of(&body);
    let subject = checked.subject.as_ref().map(|subject| {
        let mut descriptor = json!({ "mediaType": checked.media_type, "digest": digest.as_str(), "size": body.len() });
        if let Some(t) = &checked.artifact_type {
            descriptor["artifactType"] = json!(t);
        }
        if let Some(a) = &checked.annotations {
            descriptor["annotations"] = a.clone();
        }
        (subject, descriptor)
    });
    let digest = s.put_manifest(name, r, &checked.media_type, &body, subject)?;
    let mut headers = vec![("location", format!("/v2/{name}/manifests/{digest}")), ("docker-content-digest", digest.to_string())];
    if let Some(subject) = &checked.subject {
        headers.push(("oci-subject", subject.to_string()));
    }
    Ok(respond(StatusCode::CREATED, &headers, Body::empty()))
}

struct CheckedManifest {
    media_type: String,
    subject: Option<Digest>,
    artifact_type: Option<String>,
    annotations: Option<Value>,
}

fn invalid(message: impl Into<String>) -> RegistryError {
    RegistryError::new(ErrorCode::ManifestInvalid, message)
}

/// The manifest is well-formed and everything it names is in the repository.
fn check_manifest(s: &Storage, name: &RepoName, content_type: &str, body: &[u8]) -> Result<CheckedManifest, RegistryError> {
    let doc: Value = serde_json::from_slice(body).map_err(|e| invalid(format!("manifest is not valid JSON: {e}")))?;
    if !doc.is_object() {
        return Err(invalid("manifest must be a JSON object"));
    }
    let known = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
    let declared = doc["mediaType"].as_str();
    let media_type = if known.contains(&content_type) {
        if declared.is_some_and(|d| d != content_type) {
            return Err(invalid(format!("mediaType {:?} does not match Content-Type {content_type:?}", declared.unwrap_or_default())));
        }
        content_type.to_owned()
    } else if let Some(d) = declared.filter(|d| known.contains(d)) {
        d.to_owned()
    } else if content_type.starts_with("application/vnd.docker.distribution.manifest.v1") {
        return Err(RegistryError::new(ErrorCode::ManifestInvalid, "Docker schema 1 manifests are not supported"));
    } else if doc.get("manifests").is_some() {
        OCI_INDEX.to_owned()
    } else if doc.get("config").is_some() {
        OCI_MANIFEST.to_owned()
    } else {
        return Err(invalid(format!("unsupported manifest media type {content_type:?}")));
    };
    if doc["schemaVersion"].as_i64() != Some(2) {
        return Err(invalid("schemaVersion must be 2"));
    }
    let is_index = media_type == OCI_INDEX || media_type == DOCKER_LIST;
    if is_index {
        let manifests = doc["manifests"].as_array().ok_or_else(|| invalid("an index needs a manifests array"))?;
        for m in manifests {
            let d = descriptor_digest(m, "manifests")?;
            if !s.has_manifest(name, &d) {
                return Err(RegistryError::new(ErrorCode::ManifestBlobUnknown, "manifest blob unknown to registry").with_detail(json!({ "digest": d.as_str() })));
            }
        }
    } else {
        let config = doc.get("config").ok_or_else(|| invalid("an image manifest needs a config descriptor"))?;
        let layers = match doc.get("layers") {
            Some(Value::Array(l)) => l.as_slice(),
            None => &[],
            Some(_) => return Err(invalid("layers must be an array")),
        };
        for (what, descriptor) in std::iter::once(("config", config)).chain(layers.iter().map(|l| ("layers", l))) {
            let d = descriptor_digest(descriptor, what)?;
            // Foreign layers live elsewhere (their `urls`); everything else must be here.
            if descriptor["urls"].as_array().is_some_and(|u| !u.is_empty()) {
                continue;
            }
            let Some((_, size)) = s.blob(name, &d) else {
                return Err(RegistryError::new(ErrorCode::ManifestBlobUnknown, "blob unknown to registry").with_detail(json!({ "digest": d.as_str() })));
            };
            if descriptor["size"].as_u64() != Some(size) {
                return Err(invalid(format!("{what} descriptor {d} says size {} but the blob has {size} bytes", descriptor["size"])));
            }
        }
    }
    let subject = match doc.get("subject") {
        Some(sub) => Some(descriptor_digest(sub, "subject")?),
        None => None,
    };
    let artifact_type = doc["artifactType"].as_str().map(str::to_owned).or_else(|| if is_index { None } else { doc["config"]["mediaType"].as_str().map(str::to_owned) });
    Ok(CheckedManifest { media_type, subject, artifact_type, annotations: doc.get("annotations").cloned() })
}

fn descriptor_digest(d: &Value, what: &str) -> Result<Digest, RegistryError> {
    let digest = d["digest"].as_str().ok_or_else(|| invalid(format!("{what}: descriptor without a digest")))?;
    if d["mediaType"].as_str().is_none() {
        return Err(invalid(format!("{what}: descriptor {digest} without a mediaType")));
    }
    Digest::parse(digest)
}

async fn get_blob(s: &Storage, name: &RepoName, d: &Digest, headers: &HeaderMap, with_body: bool) -> Result<Response, RegistryError> {
    let (path, size) = s.blob(name, d).ok_or_else(|| RegistryError::blob_unknown(d))?;
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(r) => Some(parse_range(r, size).ok_or_else(|| {
            RegistryError::new(ErrorCode::RangeInvalid, format!("range {r:?} is not satisfiable for {size} bytes")).with_detail(json!({ "size": size }))
        })?),
        None => None,
    };
    let (start, len) = range.unwrap_or((0, size));
    let mut headers = vec![
        ("content-length", len.to_string()),
        ("docker-content-digest", d.to_string()),
        ("content-type", "application/octet-stream".to_owned()),
        ("accept-ranges", "bytes".to_owned()),
    ];
    let status = if range.is_some() {
        headers.push(("content-range", format!("bytes {start}-{}/{size}", start + len - 1)));
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    if !with_body {
        return Ok(respond(status, &headers, Body::empty()));
    }
    let mut file = tokio::fs::File::open(&path).await.map_err(|e| RegistryError::io("opening a blob", e))?;
    file.seek(std::io::SeekFrom::Start(start)).await.map_err(|e| RegistryError::io("reading a blob", e))?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file.take(len), 256 << 10);
    Ok(respond(status, &headers, Body::from_stream(stream)))
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` as (start, length) within `size`.
fn parse_range(r: &str, size: u64) -> Option<(u64, u64)> {
    let spec = r.trim().strip_prefix("bytes=")?;
    let (a, b) = spec.split_once('-')?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().ok()?;
            (size.checked_sub(n.min(size))?, size.checked_sub(1)?)
        }
        (a, "") => (a.parse().ok()?, size.checked_sub(1)?),
        (a, b) => (a.parse().ok()?, b.parse::<u64>().ok()?.min(size.checked_sub(1)?)),
    };
    (start <= end && end < size).then(|| (start, end - start + 1))
}

async fn start_upload(s: &Storage, name: &RepoName, q: &HashMap<String, String>, req: Request) -> Result<Response, RegistryError> {
    if let (Some(mount), Some(from)) = (q.get("mount"), q.get("from")) {
        let digest = Digest::parse(mount)?;
        if s.mount_blob(name, &digest, &RepoName::parse(from)?)? {
            return Ok(blob_created(name, &digest));
        }
        // Not mountable: the spec says to fall back to an ordinary upload session.
    }
    if let Some(digest) = q.get("digest") {
        let digest = Digest::parse(digest)?;
        s.put_blob(name, &digest, req.into_body().into_data_stream()).await?;
        return Ok(blob_created(name, &digest));
    }
    let id = s.start_upload(name)?;
    Ok(upload_state(StatusCode::ACCEPTED, name, &id, 0))
}

fn blob_created(name: &RepoName, digest: &Digest) -> Response {
    respond(StatusCode::CREATED, &[("location", format!("/v2/{name}/blobs/{digest}")), ("docker-content-digest", digest.to_string())], Body::empty())
}

fn upload_state(status: StatusCode, name: &RepoName, id: &str, size: u64) -> Response {
    let headers = [
        ("location", format!("/v2/{name}/blobs/uploads/{id}")),
        ("range", format!("0-{}", size.saturating_sub(1))),
        ("docker-upload-uuid", id.to_owned()),
        ("content-length", "0".to_owned()),
    ];
    respond(status, &headers, Body::empty())
}

/// The first byte of a chunk from `Content-Range: <start>-<end>` (with or without `bytes `).
fn content_range_start(headers: &HeaderMap) -> Result<Option<u64>, RegistryError> {
    let Some(v) = headers.get(header::CONTENT_RANGE) else { return Ok(None) };
    let text = v.to_str().unwrap_or("");
    let spec = text.trim().trim_start_matches("bytes ").trim_start_matches("bytes=");
    let start = spec.split(['-', '/']).next().and_then(|x| x.trim().parse().ok());
    start.map(Some).ok_or_else(|| RegistryError::new(ErrorCode::RangeInvalid, format!("invalid Content-Range {text:?}")))
}

fn referrers(s: &Storage, name: &RepoName, d: &Digest, q: &HashMap<String, String>) -> Response {
    let mut manifests = s.referrers(name, d);
    let mut headers = vec![("content-type", OCI_INDEX.to_owned())];
    if let Some(t) = q.get("artifactType") {
        manifests.retain(|m| m["artifactType"].as_str() == Some(t.as_str()));
        headers.push(("oci-filters-applied", "artifactType".to_owned()));
    }
    let index = json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests });
    respond(StatusCode::OK, &headers, Body::from(index.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_read_from_the_end_of_the_path() {
        let d = Digest::of(b"x");
        let name = |n: &str| RepoName::parse(n).unwrap();
        assert_eq!(route("/v2/").unwrap(), Route::Ping);
        assert_eq!(route("/v2/a/b/tags/list").unwrap(), Route::Tags(name("a/b")));
        assert_eq!(route("/v2/a/blobs/manifests/v1").unwrap(), Route::Manifest(name("a/blobs"), ManifestRef::Tag("v1".into())));
        assert_eq!(route(&format!("/v2/a/blobs/{d}")).unwrap(), Route::Blob(name("a"), d.clone()));
        assert_eq!(route(&format!("/v2/a/blobs/{}", d.as_str().replace(':', "%3A"))).unwrap(), Route::Blob(name("a"), d.clone()));
        assert_eq!(route("/v2/a/blobs/uploads/").unwrap(), Route::UploadStart(name("a")));
        assert_eq!(route("/v2/a/blobs/uploads").unwrap(), Route::UploadStart(name("a")));
        assert_eq!(route("/v2/a/blobs/uploads/x1").unwrap(), Route::Upload(name("a"), "x1".into()));
        assert_eq!(route(&format!("/v2/a/referrers/{d}")).unwrap(), Route::Referrers(name("a"), d));
        assert_eq!(route("/v2/A/tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(route("/v2/a/../b/tags/list").unwrap_err().code, ErrorCode::NameInvalid);
        assert_eq!(route("/v2/tags/list").unwrap_err().status, 404);
    }

    #[test]
    fn byte_ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 10)));
        assert_eq!(parse_range("bytes=50-1000", 100), Some((50, 50)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=5-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
    }

    #[test]
    fn pages_of_tags() {
        let all: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        let q = |pairs: &[(&str, &str)]| pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<HashMap<_, _>>();
        assert_eq!(paginate(all.clone(), &q(&[("n", "2")])), (vec!["a".into(), "b".into()], Some("b".into())));
        assert_eq!(paginate(all.clone(), &q(&[("n", "2"), ("last", "b")])), (vec!["c".into(), "d".into()], None));
        assert_eq!(paginate(all, &q(&[("last", "c")])), (vec!["d".into()], None));
    }
}
