//! Namespace lifecycle: a namespace marked for deletion is emptied, loses its
//! `kubernetes` finalizer, and is then removed.
//!
//! It runs in the API server's process and works through the same handler code
//! that API deletes use (so pods' grace periods and finalizers are honoured).

use crate::api::handlers::{delete_one, DeleteOptions};
use crate::api::request::Address;
use crate::api::resources::{self, RESOURCES};
use crate::api::SharedState;
use serde_json::Value;
use std::time::Duration;

/// How often terminating namespaces are re-checked when nothing wakes the loop
/// (contents waiting on finalizers or graceful pod shutdown).
const RESYNC: Duration = Duration::from_secs(2);

pub async fn run(state: SharedState, shutdown: crate::Shutdown) {
    let mut shutdown = shutdown;
    loop {
        reconcile_all(&state);
        tokio::select! {
            _ = state.namespace_deleted.notified() => {}
            _ = tokio::time::sleep(RESYNC) => {}
            _ = shutdown.wait() => return,
        }
    }
}

/// Advance every terminating namespace one step.
pub fn reconcile_all(state: &SharedState) {
    let Some(nsres) = resources::find("", "v1", "namespaces") else { return };
    let Ok((namespaces, _)) = state.store.list(&nsres.list_prefix(None)) else { return };
    for ns in namespaces.iter().filter(|n| n.pointer("/metadata/deletionTimestamp").is_some()) {
        if let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str) {
            if let Err(e) = reconcile(state, name) {
                tracing::warn!(namespace = name, error = %e, "namespace cleanup failed; will retry");
            }
        }
    }
}

fn reconcile(state: &SharedState, namespace: &str) -> Result<(), crate::api::status::ApiError> {
    let mut remaining = 0;
    for res in RESOURCES.iter().filter(|r| r.namespaced) {
        let (items, _) = state.store.list(&res.list_prefix(Some(namespace))).map_err(|e| crate::api::status::ApiError::Internal(e.to_string()))?;
        for obj in items.iter() {
            remaining += 1;
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
            let addr = Address { resource: res, namespace: Some(namespace.into()), name: Some(name.into()), sub: None };
            match delete_one(state, &addr, &DeleteOptions { propagation: Some("Background".into()), ..Default::default() }) {
                Ok(_) | Err(crate::api::status::ApiError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    if remaining > 0 {
        // Check again: deletes waiting on finalizers or grace periods finish later.
        let still: usize = RESOURCES
            .iter()
            .filter(|r| r.namespaced)
            .map(|r| state.store.list(&r.list_prefix(Some(namespace))).map(|(i, _)| i.len()).unwrap_or(1))
            .sum();
        if still > 0 {
            return Ok(());
        }
    }
    let Some(nsres) = resources::find("", "v1", "namespaces") else { return Ok(()) };
    let key = nsres.key("", namespace);
    let Ok(Some(current)) = state.store.get(&key) else { return Ok(()) };
    let rv = crate::store::object_revision(&current);
    let metadata_finalizers = current.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    let result = if metadata_finalizers {
        // Someone else still holds the namespace; drop only our spec finalizer.
        let mut new = (*current).clone();
        new["spec"]["finalizers"] = serde_json::json!([]);
        state.store.update(&key, new, rv).map(|_| ())
    } else {
        state.store.delete(&key, rv).map(|_| ())
    };
    match result {
        Ok(()) => {
            tracing::info!(namespace, "namespace deleted");
            Ok(())
        }
        // A concurrent write: the next pass sees it.
        Err(crate::store::StoreError::Conflict { .. }) | Err(crate::store::StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(crate::api::status::ApiError::Internal(e.to_string())),
    }
}
