//! Watch streams: `?watch=true` on a collection (or one object), as newline-
//! delimited JSON events flushed one by one.
//!
//! Semantics follow kube-apiserver: a resourceVersion resumes after that revision
//! (410 Expired as an ERROR event when it is older than the kept history); none or
//! "0" starts with the current state as ADDED events; with selectors, an object
//! that stops matching is reported DELETED and one that starts matching ADDED.

use super::handlers::{table, Filter};
use super::request::{Address, Query, Wanted};
use super::resources::Resource;
use super::status::{ApiError, ApiResult};
use super::ApiState;
use crate::store::{EventType, StoreError, StoreEvent};
use axum::body::Body;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};

/// Upstream picks 30-60 minutes when the client sets no timeout.
const DEFAULT_TIMEOUT_SECS: i64 = 1800;
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);

/// What a store event means to a watcher with `filter`.
fn classify<'a>(ev: &'a StoreEvent, filter: &Filter) -> Option<(&'static str, &'a Value)> {
    let now = filter.matches(&ev.object);
    let before = ev.prev.as_deref().is_some_and(|p| filter.matches(p));
    match ev.kind {
        EventType::Added if now => Some(("ADDED", &ev.object)),
        EventType::Modified if now && before => Some(("MODIFIED", &ev.object)),
        EventType::Modified if now => Some(("ADDED", &ev.object)),
        EventType::Modified if before => Some(("DELETED", &ev.object)),
        EventType::Deleted if before || now => Some(("DELETED", &ev.object)),
        _ => None,
    }
}

struct Encoder {
    res: &'static Resource,
    wanted: Wanted,
    query: Query,
    sent_columns: bool,
}

impl Encoder {
    fn event(&mut self, kind: &str, obj: &Value) -> Bytes {
        let object = match self.wanted {
            // Column definitions go with the first event only, as upstream.
            Wanted::Table => {
                let t = table(self.res, &[obj], &self.query, None, !self.sent_columns);
                self.sent_columns = true;
                t
            }
            Wanted::Metadata => json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj.get("metadata")}),
            Wanted::Object => obj.clone(),
        };
        line(&WatchEvent { r#type: kind, object })
    }

    fn bookmark(&self, revision: u64) -> Bytes {
        line(&WatchEvent { r#type: "BOOKMARK", object: json!({
            "kind": self.res.kind, "apiVersion": self.res.api_version(),
            "metadata": {"resourceVersion": revision.to_string()},
        })})
    }
}

/// One event of a watch stream, serialized as upstream's `metav1.WatchEvent`: `type`
/// before `object`.
#[derive(serde::Serialize)]
struct WatchEvent<'a, T: serde::Serialize> {
    r#type: &'a str,
    object: T,
}

fn line(v: &impl serde::Serialize) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn expired(message: String) -> Bytes {
    line(&WatchEvent { r#type: "ERROR", object: ApiError::Expired(message).status() })
}

pub fn watch(state: &ApiState, addr: &Address, query: Query, wanted: Wanted) -> ApiResult<Response> {
    let res = addr.resource;
    let filter = Filter::from_query(res, &query)?;
    let from = match query.get("resourceVersion") {
        None | Some("0") => None,
        Some(v) => Some(v.parse::<u64>().map_err(|_| ApiError::BadRequest(format!("invalid resourceVersion: {v}")))?),
    };
    let timeout = query.int("timeoutSeconds")?.filter(|t| *t > 0).unwrap_or(DEFAULT_TIMEOUT_SECS);
    let bookmarks = query.flag("allowWatchBookmarks");
    // Watching one object is watching its key only.
    let only_key = addr.name.as_ref().map(|_| addr.key());
    let prefix = only_key.clone().unwrap_or_else(|| res.list_prefix(addr.namespace.as_deref()));
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let mut enc = Encoder { res, wanted, query, sent_columns: false };

    let watch = match state.store.watch(&prefix, from) {
        Ok(w) => Some(w),
        Err(StoreError::Expired { .. }) => None,
        Err(e) => return Err(super::handlers::store_error(addr.target(), e)),
    };
    let start_revision = from.unwrap_or_else(|| state.store.revision());
    let requested = from.unwrap_or(0);

    tokio::spawn(async move {
        let Some(mut watch) = watch else {
            let _ = tx.send(Ok(expired(format!("too old resource version: {requested}")))).await;
            return;
        };
        let wanted_key = |ev: &StoreEvent| match &only_key {
            Some(k) => &ev.key == k,
            None => ev.key.starts_with(prefix.as_str()),
        };
        let mut last = start_revision;
        for ev in &watch.initial {
            last = last.max(ev.revision);
            if !wanted_key(ev) {
                continue;
            }
            if let Some((kind, obj)) = classify(ev, &filter) {
                if tx.send(Ok(enc.event(kind, obj))).await.is_err() {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout as u64));
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                _ = tx.closed() => break,
                _ = tick.tick(), if bookmarks => {
                    if tx.send(Ok(enc.bookmark(last))).await.is_err() { break; }
                }
                ev = watch.live.recv() => match ev {
                    Ok(ev) => {
                        // Events already replayed from history arrive again on the live feed.
                        if ev.revision <= last { continue; }
                        last = ev.revision;
                        if !wanted_key(&ev) { continue; }
                        if let Some((kind, obj)) = classify(&ev, &filter) {
                            if tx.send(Ok(enc.event(kind, obj))).await.is_err() { break; }
                        }
                    }
                    // Too slow a reader: end with 410 so the client relists.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(Ok(expired(format!("watch fell behind at resource version {last}")))).await;
                        break;
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        }
    });

    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, "application/json")], Body::from_stream(stream)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_written_as_upstream_orders_them() {
        let res = super::super::resources::find("", "v1", "configmaps").unwrap();
        let mut enc = Encoder { res, wanted: Wanted::Object, query: Query::default(), sent_columns: false };
        let ev = enc.event("ADDED", &json!({"kind": "ConfigMap"}));
        assert_eq!(&ev[..], b"{\"type\":\"ADDED\",\"object\":{\"kind\":\"ConfigMap\"}}\n");
        let err = expired("too old".into());
        assert!(err.starts_with(b"{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old\",\"reason\":\"Expired\""), "{}", String::from_utf8_lossy(&err));
    }
}
