//! The object store: every API object lives here under one key, versioned by one
//! global, ever-increasing revision (the `resourceVersion` clients see).
//!
//! The [`Store`] trait is the seam between the API server and its backends. The
//! embedded default is [`LocalStore`] over redb; tests use the same type with no
//! file behind it.
//!
//! ```
//! use wasmkube_control::store::{LocalStore, Store};
//! let store = LocalStore::in_memory();
//! let a = store.create("/core/configmaps/default/a", serde_json::json!({"metadata": {"name": "a"}})).unwrap();
//! assert_eq!(a["metadata"]["resourceVersion"], "1");
//! ```

mod local;

pub use local::LocalStore;

use serde_json::Value;
use std::sync::Arc;
use tokio::sync::broadcast;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    /// The watch event `type` string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the watch history.
#[derive(Clone, Debug)]
pub struct StoreEvent {
    pub kind: EventType,
    pub key: String,
    /// The object after the change; for deletes, its last state stamped with the
    /// deletion revision (as upstream).
    pub object: Arc<Value>,
    /// The object before the change, so filtered watches can tell an object
    /// leaving their selector from one that never matched.
    pub prev: Option<Arc<Value>>,
    pub revision: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} already exists")]
    AlreadyExists(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{key} has resourceVersion {actual}, not {expected}")]
    Conflict { key: String, expected: u64, actual: u64 },
    #[error("too old resource version: {requested} ({oldest})")]
    Expired { requested: u64, oldest: u64 },
    #[error("storage backend failed: {0}")]
    Backend(String),
}

/// A watch: the events to replay first, then the live feed.
pub struct Watch {
    /// Events already past when the watch started (history replay, or synthetic
    /// ADDED events for the current state when no revision was given).
    pub initial: Vec<Arc<StoreEvent>>,
    /// Live events for all keys; the watcher filters by its prefix. A receiver that
    /// lags behind is closed so the client relists rather than missing events.
    pub live: broadcast::Receiver<Arc<StoreEvent>>,
    pub prefix: String,
}

/// Contract: every write is durable before it returns and gets a revision greater
/// than every earlier one; the returned object carries that revision in
/// `metadata.resourceVersion`.
pub trait Store: Send + Sync {
    fn get(&self, key: &str) -> Result<Option<Arc<Value>>, StoreError>;
    /// All objects under `prefix`, in key order, and the revision they are current at.
    fn list(&self, prefix: &str) -> Result<(Vec<Arc<Value>>, u64), StoreError>;
    fn create(&self, key: &str, obj: Value) -> Result<Arc<Value>, StoreError>;
    /// Compare-and-swap when `expected` is given: fails with `Conflict` unless the
    /// stored revision of `key` equals it.
    fn update(&self, key: &str, obj: Value, expected: Option<u64>) -> Result<Arc<Value>, StoreError>;
    fn delete(&self, key: &str, expected: Option<u64>) -> Result<Arc<Value>, StoreError>;
    /// Watch keys under `prefix` for changes after revision `from`; `None` starts
    /// with the current state as ADDED events.
    fn watch(&self, prefix: &str, from: Option<u64>) -> Result<Watch, StoreError>;
    /// The latest revision.
    fn revision(&self) -> u64;
    /// Bytes the backend keeps on disk (0 for memory).
    fn size_on_disk(&self) -> u64 {
        0
    }
    /// The pods bound to `node`, in key order, and the revision they are current at;
    /// `None` if the backend keeps no such index (the caller then filters a full list).
    /// Every kubelet lists and watches its pods this way, as upstream's watch cache
    /// indexes them.
    fn pods_on_node(&self, _node: &str) -> Option<(Vec<Arc<Value>>, u64)> {
        None
    }
}

/// The revision stamped into an object's `metadata.resourceVersion`.
pub fn object_revision(obj: &Value) -> Option<u64> {
    obj.pointer("/metadata/resourceVersion")?.as_str()?.parse().ok()
}
