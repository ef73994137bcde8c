//! The embedded store: an in-memory index of every object, written through to
//! redb before a write returns. Reads never touch the disk (the role the watch
//! cache plays in kube-apiserver); the file is read once, at open.
//!
//! Writes commit in groups: a write is checked against the latest state (including
//! writes still on their way to disk), given its revision and queued; the first writer
//! to find no commit under way becomes the leader and writes everything queued in one
//! redb transaction (one fsync), again and again until the queue is empty. Only then are
//! the writes applied to the index, recorded and broadcast, in revision order, and their
//! writers answered, so nothing is visible or acknowledged before it is on disk.

use super::{object_revision, EventType, Store, StoreError, StoreEvent, Watch};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde_json::Value;
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVISION_KEY: &str = "revision";

/// Events kept for resumable watches; older revisions get 410 Expired.
pub const DEFAULT_HISTORY: usize = 10_000;
/// Live events buffered per watcher before it is cut off as too slow (and must relist):
/// enough for a burst of several seconds of writes at thousands per second.
const LIVE_BUFFER: usize = 65_536;

struct State {
    /// What is on disk.
    objects: BTreeMap<String, Arc<Value>>,
    revision: u64,
    history: VecDeque<Arc<StoreEvent>>,
    /// Watches from a revision at or above this can be replayed from history.
    history_floor: u64,
    /// The revision of the last change to each resource (`/group/plural/`), so a watch of
    /// a quiet kind can resume from a revision older than the history: nothing of its
    /// kind happened since. Kinds absent here last changed before the store was opened.
    kind_changed: std::collections::HashMap<String, u64>,
    /// The revision when the store was opened (what history cannot see past).
    opened_at: u64,
    /// Pod keys by `spec.nodeName`.
    pods_by_node: std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    /// Writes given a revision and waiting for the disk, in revision order.
    queued: Vec<Queued>,
    /// The newest queued value of each key they touch (`None`: deleted).
    /// With the write's completion, which a writer that lost a compare-and-swap to it
    /// waits for, so its retry reads the newer value.
    ahead: std::collections::HashMap<String, (Option<Arc<Value>>, Arc<Done>)>,
    /// The last revision given out.
    assigned: u64,
    /// A leader is writing a group.
    committing: bool,
}

struct Queued {
    event: Arc<StoreEvent>,
    bytes: Option<Vec<u8>>,
    done: Arc<Done>,
}

/// Where a writer waits for its group to reach the disk.
#[derive(Default)]
struct Done {
    result: Mutex<Option<Result<(), String>>>,
    ready: std::sync::Condvar,
}

impl Done {
    fn set(&self, r: Result<(), String>) {
        *self.result.lock().unwrap_or_else(|p| p.into_inner()) = Some(r);
        self.ready.notify_all();
    }

    fn wait(&self) -> Result<(), StoreError> {
        let mut r = self.result.lock().unwrap_or_else(|p| p.into_inner());
        while r.is_none() {
            r = self.ready.wait(r).unwrap_or_else(|p| p.into_inner());
        }
        r.clone().unwrap_or(Ok(())).map_err(StoreError::Backend)
    }
}

impl State {
    /// The latest value of `key`, queued writes included.
    fn current(&self, key: &str) -> Option<Arc<Value>> {
        match self.ahead.get(key) {
            Some((v, _)) => v.clone(),
            None => self.objects.get(key).cloned(),
        }
    }
}

/// See the module docs. `db` is `None` for a memory-only store (tests, benchmarks).
pub struct LocalStore {
    // One mutex orders writes, history and broadcast so watchers see revisions in
    // order; no `.await` happens while it is held.
    state: Mutex<State>,
    db: Option<Database>,
    path: Option<std::path::PathBuf>,
    history_limit: usize,
    events: broadcast::Sender<Arc<StoreEvent>>,
}

fn backend<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl LocalStore {
    pub fn in_memory() -> Self {
        Self::build(BTreeMap::new(), 0, None, None)
    }

    /// Open (or create) the redb file at `path` and load every object.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(backend)?;
        let mut objects = BTreeMap::new();
        let mut revision = 0;
        {
            let txn = db.begin_write().map_err(backend)?;
            // Opening in a write transaction creates the tables on first start.
            txn.open_table(OBJECTS).map_err(backend)?;
            txn.open_table(META).map_err(backend)?;
            txn.commit().map_err(backend)?;
        }
        let read = db.begin_read().map_err(backend)?;
        let table = read.open_table(OBJECTS).map_err(backend)?;
        for row in table.iter().map_err(backend)? {
            let (k, v) = row.map_err(backend)?;
            let obj: Value = serde_json::from_slice(v.value())
                .map_err(|e| StoreError::Backend(format!("object {} is corrupt: {e}", k.value())))?;
            objects.insert(k.value().to_string(), Arc::new(obj));
        }
        let meta = read.open_table(META).map_err(backend)?;
        if let Some(r) = meta.get(REVISION_KEY).map_err(backend)? {
            revision = r.value();
        }
        Ok(Self::build(objects, revision, Some(db), Some(path.to_path_buf())))
    }

    fn build(objects: BTreeMap<String, Arc<Value>>, revision: u64, db: Option<Database>, path: Option<std::path::PathBuf>) -> Self {
        let (events, _) = broadcast::channel(LIVE_BUFFER);
        let mut pods_by_node: std::collections::HashMap<String, std::collections::BTreeSet<String>> = Default::default();
        for (k, v) in &objects {
            if let Some(node) = node_of(k, v) {
                pods_by_node.entry(node.to_owned()).or_default().insert(k.clone());
            }
        }
        Self {
            state: Mutex::new(State {
                objects,
                revision,
                history: VecDeque::new(),
                history_floor: revision,
                kind_changed: Default::default(),
                opened_at: revision,
                pods_by_node,
                queued: Vec::new(),
                ahead: Default::default(),
                assigned: revision,
                committing: false,
            }),
            db,
            path,
            history_limit: DEFAULT_HISTORY,
            events,
        }
    }

    /// Keep only `limit` events of history (tests use a small one to reach 410).
    pub fn with_history_limit(mut self, limit: usize) -> Self {
        self.history_limit = limit.max(1);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the map half-written (every
        // mutation is a single insert/remove after the disk write), so recover.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Write a group of changes to disk in one transaction.
    fn persist(&self, group: &[Queued]) -> Result<(), StoreError> {
        let Some(db) = &self.db else { return Ok(()) };
        let Some(last) = group.last() else { return Ok(()) };
        let txn = db.begin_write().map_err(backend)?;
        {
            let mut objects = txn.open_table(OBJECTS).map_err(backend)?;
            for q in group {
                match &q.bytes {
                    Some(b) => {
                        objects.insert(q.event.key.as_str(), &b[..]).map_err(backend)?;
                    }
                    None => {
                        objects.remove(q.event.key.as_str()).map_err(backend)?;
                    }
                }
            }
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(REVISION_KEY, last.event.revision).map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    /// Queue one write (the caller has checked it against `st.current`), commit it with
    /// whatever else is queued, and return the object as stored.
    fn commit<'a>(&'a self, mut st: std::sync::MutexGuard<'a, State>, kind: EventType, key: &str, mut obj: Value, prev: Option<Arc<Value>>) -> Result<Arc<Value>, StoreError> {
        let revision = st.assigned + 1;
        if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), Value::String(revision.to_string()));
        }
        let bytes = if kind == EventType::Deleted { None } else { Some(serde_json::to_vec(&obj).map_err(backend)?) };
        st.assigned = revision;
        let obj = Arc::new(obj);
        let done = Arc::new(Done::default());
        st.ahead.insert(key.to_string(), ((kind != EventType::Deleted).then(|| obj.clone()), done.clone()));
        let event = Arc::new(StoreEvent { kind, key: key.to_string(), object: obj.clone(), prev, revision });
        st.queued.push(Queued { event, bytes, done: done.clone() });
        if st.committing {
            drop(st);
            done.wait()?;
            return Ok(obj);
        }
        st.committing = true;
        loop {
            let group = std::mem::take(&mut st.queued);
            if group.is_empty() {
                st.committing = false;
                break;
            }
            drop(st);
            let written = self.persist(&group);
            st = self.lock();
            match written {
                Ok(()) => {
                    for q in &group {
                        self.apply(&mut st, q.event.clone());
                    }
                    for q in &group {
                        q.done.set(Ok(()));
                    }
                }
                Err(e) => {
                    // The disk refused: this group and everything queued after it (which
                    // was checked against it) fail; the index still shows the disk.
                    let rest = std::mem::take(&mut st.queued);
                    st.ahead.clear();
                    st.assigned = st.revision;
                    for q in group.iter().chain(rest.iter()) {
                        q.done.set(Err(e.to_string()));
                    }
                }
            }
        }
        drop(st);
        done.wait()?;
        Ok(obj)
    }

    /// `err` once the queued write to `key` (if any) is on disk: a caller that lost a
    /// compare-and-swap to it then re-reads the value that beat it, not the older one.
    fn after_queued(&self, st: std::sync::MutexGuard<'_, State>, key: &str, err: StoreError) -> StoreError {
        let pending = st.ahead.get(key).map(|(_, done)| done.clone());
        drop(st);
        if let Some(done) = pending {
            let _ = done.wait();
        }
        err
    }

    /// A write on disk: index, record and broadcast it.
    fn apply(&self, st: &mut State, event: Arc<StoreEvent>) {
        let key = &event.key;
        if st.ahead.get(key).is_some_and(|(v, _)| v.as_ref().map_or(event.kind == EventType::Deleted, |v| Arc::ptr_eq(v, &event.object))) {
            st.ahead.remove(key);
        }
        st.revision = event.revision;
        if let Some(kind) = resource_prefix(key) {
            st.kind_changed.insert(kind.to_owned(), event.revision);
        }
        if let Some(old) = event.prev.as_deref().and_then(|p| node_of(key, p)) {
            if let Some(keys) = st.pods_by_node.get_mut(old) {
                keys.remove(key);
                if keys.is_empty() {
                    st.pods_by_node.remove(old);
                }
            }
        }
        if event.kind != EventType::Deleted {
            if let Some(node) = node_of(key, &event.object) {
                st.pods_by_node.entry(node.to_owned()).or_default().insert(key.clone());
            }
        }
        if event.kind == EventType::Deleted {
            st.objects.remove(key);
        } else {
            st.objects.insert(key.clone(), event.object.clone());
        }
        st.history.push_back(event.clone());
        while st.history.len() > self.history_limit {
            if let Some(old) = st.history.pop_front() {
                st.history_floor = old.revision;
            }
        }
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }
}

const PODS_PREFIX: &str = "/core/pods/";

/// The node a stored pod is bound to.
fn node_of<'a>(key: &str, obj: &'a Value) -> Option<&'a str> {
    if !key.starts_with(PODS_PREFIX) {
        return None;
    }
    obj.pointer("/spec/nodeName")?.as_str().filter(|n| !n.is_empty())
}

/// `/group/plural/` of a key or key prefix (`None` for a prefix wider than one kind).
fn resource_prefix(key: &str) -> Option<&str> {
    key.match_indices('/').nth(2).map(|(i, _)| &key[..=i])
}

fn check_expected(key: &str, current: &Value, expected: Option<u64>) -> Result<(), StoreError> {
    if let Some(expected) = expected {
        let actual = object_revision(current).unwrap_or(0);
        if actual != expected {
            return Err(StoreError::Conflict { key: key.to_string(), expected, actual });
        }
    }
    Ok(())
}

impl Store for LocalStore {
    fn get(&self, key: &str) -> Result<Option<Arc<Value>>, StoreError> {
        Ok(self.lock().objects.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<(Vec<Arc<Value>>, u64), StoreError> {
        let st = self.lock();
        let items = st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect();
        Ok((items, st.revision))
    }

    fn create(&self, key: &str, obj: Value) -> Result<Arc<Value>, StoreError> {
        let st = self.lock();
        if st.current(key).is_some() {
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        self.commit(st, EventType::Added, key, obj, None)
    }

    fn update(&self, key: &str, obj: Value, expected: Option<u64>) -> Result<Arc<Value>, StoreError> {
        let st = self.lock();
        let current = st.current(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Err(e) = check_expected(key, &current, expected) {
            return Err(self.after_queued(st, key, e));
        }
        self.commit(st, EventType::Modified, key, obj, Some(current))
    }

    fn delete(&self, key: &str, expected: Option<u64>) -> Result<Arc<Value>, StoreError> {
        let st = self.lock();
        let current = st.current(key).ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        if let Err(e) = check_expected(key, &current, expected) {
            return Err(self.after_queued(st, key, e));
        }
        self.commit(st, EventType::Deleted, key, (*current).clone(), Some(current))
    }

    fn watch(&self, prefix: &str, from: Option<u64>) -> Result<Watch, StoreError> {
        let st = self.lock();
        // Subscribe under the lock so no event falls between replay and live feed.
        let live = self.events.subscribe();
        let initial = match from {
            None => st
                .objects
                .range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, v)| {
                    Arc::new(StoreEvent {
                        kind: EventType::Added,
                        key: k.clone(),
                        object: v.clone(),
                        prev: None,
                        revision: object_revision(v).unwrap_or(0),
                    })
                })
                .collect(),
            Some(from) if from >= st.revision => Vec::new(),
            Some(from) if from < st.history_floor => {
                let last_change = resource_prefix(prefix).map(|k| st.kind_changed.get(k).copied().unwrap_or(st.opened_at));
                if last_change.is_none_or(|r| r > from) {
                    return Err(StoreError::Expired { requested: from, oldest: st.history_floor });
                }
                Vec::new()
            }
            Some(from) => st
                .history
                .iter()
                .filter(|e| e.revision > from && e.key.starts_with(prefix))
                .cloned()
                .collect(),
        };
        Ok(Watch { initial, live, prefix: prefix.to_string() })
    }

    fn revision(&self) -> u64 {
        self.lock().revision
    }

    fn size_on_disk(&self) -> u64 {
        self.path.as_ref().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len()).unwrap_or(0)
    }

    fn pods_on_node(&self, node: &str) -> Option<(Vec<Arc<Value>>, u64)> {
        let st = self.lock();
        let pods = st.pods_by_node.get(node).into_iter().flatten().filter_map(|k| st.objects.get(k).cloned()).collect();
        Some((pods, st.revision))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "default"}})
    }

    #[test]
    fn revisions_increase_and_cas_detects_stale_writes() {
        let s = LocalStore::in_memory();
        let a = s.create("/core/configmaps/default/a", cm("a")).unwrap();
        assert_eq!(object_revision(&a), Some(1));
        assert!(matches!(s.create("/core/configmaps/default/a", cm("a")), Err(StoreError::AlreadyExists(_))));
        let b = s.update("/core/configmaps/default/a", cm("a"), Some(1)).unwrap();
        assert_eq!(object_revision(&b), Some(2));
        assert!(matches!(
            s.update("/core/configmaps/default/a", cm("a"), Some(1)),
            Err(StoreError::Conflict { expected: 1, actual: 2, .. })
        ));
        let d = s.delete("/core/configmaps/default/a", None).unwrap();
        assert_eq!(object_revision(&d), Some(3));
        assert!(s.get("/core/configmaps/default/a").unwrap().is_none());
    }

    #[test]
    fn list_is_prefix_scoped() {
        let s = LocalStore::in_memory();
        s.create("/core/configmaps/default/a", cm("a")).unwrap();
        s.create("/core/configmaps/defaults/b", cm("b")).unwrap();
        s.create("/core/secrets/default/c", cm("c")).unwrap();
        let (items, rv) = s.list("/core/configmaps/default/").unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(rv, 3);
        assert_eq!(s.list("/core/configmaps/").unwrap().0.len(), 2);
    }

    #[test]
    fn watch_replays_history_and_expires_old_revisions() {
        let s = LocalStore::in_memory().with_history_limit(3);
        for n in ["a", "b", "c", "d", "e"] {
            s.create(&format!("/core/configmaps/default/{n}"), cm(n)).unwrap();
        }
        let w = s.watch("/core/configmaps/", Some(3)).unwrap();
        let revs: Vec<u64> = w.initial.iter().map(|e| e.revision).collect();
        assert_eq!(revs, vec![4, 5]);
        assert!(matches!(s.watch("/core/configmaps/", Some(1)), Err(StoreError::Expired { .. })));
        let w = s.watch("/core/configmaps/", None).unwrap();
        assert_eq!(w.initial.len(), 5);
    }

    #[test]
    fn pods_are_indexed_by_node_through_binding_moves_deletion_and_reopen() {
        let dir = std::env::temp_dir().join(format!("wasmkube-store-index-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        let pod = |name: &str, node: Option<&str>| json!({"metadata": {"name": name, "namespace": "default"}, "spec": {"nodeName": node}});
        let names = |s: &LocalStore, node: &str| -> Vec<String> {
            s.pods_on_node(node).unwrap().0.iter().map(|p| p["metadata"]["name"].as_str().unwrap().to_owned()).collect()
        };
        {
            let s = LocalStore::open(&path).unwrap();
            s.create("/core/pods/default/a", pod("a", None)).unwrap();
            s.create("/core/pods/default/b", pod("b", Some("n1"))).unwrap();
            assert!(names(&s, "n1") == ["b"] && names(&s, "n2").is_empty());
            s.update("/core/pods/default/a", pod("a", Some("n1")), None).unwrap();
            s.update("/core/pods/default/b", pod("b", Some("n2")), None).unwrap();
            assert_eq!(names(&s, "n1"), ["a"]);
            assert_eq!(names(&s, "n2"), ["b"]);
            s.delete("/core/pods/default/a", None).unwrap();
            assert!(names(&s, "n1").is_empty());
            // Only pods are indexed.
            s.create("/core/configmaps/default/c", json!({"metadata": {"name": "c"}, "spec": {"nodeName": "n2"}})).unwrap();
            assert_eq!(names(&s, "n2"), ["b"]);
        }
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(names(&s, "n2"), ["b"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_quiet_kind_resumes_from_before_the_history() {
        let s = LocalStore::in_memory().with_history_limit(3);
        s.create("/core/secrets/default/s", cm("s")).unwrap();
        for n in ["a", "b", "c", "d", "e"] {
            s.create(&format!("/core/configmaps/default/{n}"), cm(n)).unwrap();
        }
        // Nothing happened to secrets after revision 1: the watch resumes with nothing missed.
        let w = s.watch("/core/secrets/default/", Some(1)).unwrap();
        assert!(w.initial.is_empty());
        assert!(matches!(s.watch("/core/configmaps/", Some(1)), Err(StoreError::Expired { .. })));
        // Before the first change the store saw, nothing is known.
        assert!(matches!(s.watch("/core/secrets/", Some(0)), Err(StoreError::Expired { .. })));
        assert!(matches!(s.watch("/core/", Some(2)), Err(StoreError::Expired { .. })));
    }

    #[tokio::test]
    async fn live_events_arrive_in_order() {
        let s = LocalStore::in_memory();
        let mut w = s.watch("/core/", Some(0)).unwrap();
        s.create("/core/configmaps/default/a", cm("a")).unwrap();
        s.delete("/core/configmaps/default/a", None).unwrap();
        let e1 = w.live.recv().await.unwrap();
        let e2 = w.live.recv().await.unwrap();
        assert_eq!((e1.kind, e1.revision), (EventType::Added, 1));
        assert_eq!((e2.kind, e2.revision), (EventType::Deleted, 2));
        assert!(e2.prev.is_some());
    }

    #[test]
    fn concurrent_writes_commit_in_groups_and_stay_in_revision_order() {
        let dir = std::env::temp_dir().join(format!("wasmkube-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        {
            let s = Arc::new(LocalStore::open(&path).unwrap());
            let mut w = s.watch("/core/", Some(0)).unwrap();
            let threads: Vec<_> = (0..8)
                .map(|t| {
                    let s = s.clone();
                    std::thread::spawn(move || {
                        for i in 0..50 {
                            let key = format!("/core/configmaps/default/t{t}");
                            if i == 0 {
                                s.create(&key, cm(&format!("t{t}"))).unwrap();
                            } else {
                                // Compare-and-swap on what this thread wrote last.
                                let cur = s.get(&key).unwrap().unwrap();
                                s.update(&key, cm(&format!("t{t}")), object_revision(&cur)).unwrap();
                            }
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(s.revision(), 400);
            let mut last = 0;
            for _ in 0..400 {
                let e = w.live.try_recv().unwrap();
                assert_eq!(e.revision, last + 1);
                last = e.revision;
            }
        }
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.revision(), 400);
        assert_eq!(s.list("/core/configmaps/default/").unwrap().0.len(), 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn redb_survives_reopen_with_same_revisions() {
        let dir = std::env::temp_dir().join(format!("wasmkube-store-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("store.redb");
        {
            let s = LocalStore::open(&path).unwrap();
            s.create("/core/configmaps/default/a", cm("a")).unwrap();
            s.create("/core/configmaps/default/b", cm("b")).unwrap();
            s.delete("/core/configmaps/default/b", None).unwrap();
        }
        let s = LocalStore::open(&path).unwrap();
        assert_eq!(s.revision(), 3);
        let a = s.get("/core/configmaps/default/a").unwrap().unwrap();
        assert_eq!(object_revision(&a), Some(1));
        assert!(s.get("/core/configmaps/default/b").unwrap().is_none());
        let c = s.create("/core/configmaps/default/c", cm("c")).unwrap();
        assert_eq!(object_revision(&c), Some(4));
        // A watch from before the restart cannot be replayed.
        assert!(matches!(s.watch("/core/", Some(1)), Err(StoreError::Expired { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
