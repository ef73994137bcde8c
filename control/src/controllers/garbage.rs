//! The garbage collector: follows `ownerReferences` between the objects the manager
//! watches and carries out the three propagation policies as upstream does.
//!
//! - Background (kubectl's default): the owner goes at once; once it is gone its
//!   dependents are deleted.
//! - Foreground: the API server leaves the owner in place with a deletionTimestamp and the
//!   `foregroundDeletion` finalizer; dependents are deleted (foreground too), and the
//!   finalizer is removed when none is left.
//! - Orphan: the API server adds the `orphan` finalizer; dependents lose their owner
//!   reference, then the finalizer is removed and the owner goes.
//!
//! The graph is fed by the manager's watches. Owners are verified with a live read before
//! their dependents are deleted, so a watch running behind never costs a live object.

use super::runner::{Action, Error, Key, Queue};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Patch, PatchParams, PropagationPolicy};
use kube::core::ObjectMeta;
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

pub const ORPHAN_FINALIZER: &str = "orphan";
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

/// Kinds whose deletion the collector finishes: the API server puts the orphan and
/// foreground finalizers only on these, since nothing else would take them off.
pub const OWNER_KINDS: &[&str] = &["Deployment", "ReplicaSet", "ReplicationController", "StatefulSet", "DaemonSet", "Job", "CronJob"];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct ObjRef {
    kind: String,
    ns: String,
    name: String,
}

struct Node {
    obj: ObjRef,
    /// Owner uid and kind.
    owners: Vec<(String, String)>,
    deleting: bool,
    finalizers: Vec<String>,
}

#[derive(Default)]
struct State {
    nodes: HashMap<String, Node>,
    dependents: HashMap<String, HashSet<String>>,
    /// Kinds whose first full list has arrived; absence means deletion only after all have.
    synced: HashSet<String>,
}

pub struct Collector {
    client: kube::Client,
    resources: Mutex<HashMap<String, ApiResource>>,
    state: Mutex<State>,
    /// Keys are ("", owner uid).
    pub queue: Queue,
}

impl Collector {
    pub fn new(client: kube::Client) -> Self {
        Self { client, resources: Mutex::default(), state: Mutex::default(), queue: Queue::default() }
    }

    /// Registers a watched kind; its objects join the graph through [`Collector::observe`].
    pub fn watch_kind(&self, resource: ApiResource) {
        self.resources.lock().unwrap_or_else(|e| e.into_inner()).insert(resource.kind.clone(), resource);
    }

    /// The watch of `kind` has listed everything once.
    pub fn synced(&self, kind: &str) {
        // Lock order everywhere: `resources`, then `state`.
        let resources = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.synced.insert(kind.to_owned());
        let all = resources.keys().all(|k| s.synced.contains(k));
        drop(resources);
        if all {
            // Dependents whose owners went while nobody watched.
            let missing: HashSet<String> = s.dependents.keys().filter(|uid| !s.nodes.contains_key(*uid)).cloned().collect();
            drop(s);
            for uid in missing {
                self.queue.add((String::new(), uid));
            }
        }
    }

    /// An object of `kind` was added, changed or (with `deleted`) removed.
    pub fn observe(&self, kind: &str, meta: &ObjectMeta, deleted: bool) {
        let Some(uid) = meta.uid.clone() else { return };
        // Every event of every watched kind comes here: read the kinds in place.
        let resources = self.resources.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let all_synced = resources.keys().all(|k| s.synced.contains(k));
        let owners: Vec<(String, String)> = meta.owner_references.iter().flatten().filter(|r| resources.contains_key(&r.kind)).map(|r| (r.uid.clone(), r.kind.clone())).collect();
        drop(resources);
        let mut wake = Vec::new();
        if let Some(old) = s.nodes.remove(&uid) {
            for (owner, _) in &old.owners {
                if let Some(d) = s.dependents.get_mut(owner) {
                    d.remove(&uid);
                }
            }
        }
        if deleted {
            // Its dependents lose their owner; an owner waiting in foreground may be done.
            if s.dependents.get(&uid).is_some_and(|d| !d.is_empty()) {
                wake.push(uid.clone());
            }
            for (owner, _) in &owners {
                if s.nodes.get(owner).is_some_and(|n| n.deleting) {
                    wake.push(owner.clone());
                }
            }
        } else {
            let deleting = meta.deletion_timestamp.is_some();
            let finalizers = meta.finalizers.clone().unwrap_or_default();
            if deleting && finalizers.iter().any(|f| f == ORPHAN_FINALIZER || f == FOREGROUND_FINALIZER) {
                wake.push(uid.clone());
            }
            for (owner, _) in &owners {
                s.dependents.entry(owner.clone()).or_default().insert(uid.clone());
                if all_synced && !s.nodes.contains_key(owner) {
                    wake.push(owner.clone());
                }
            }
            let obj = ObjRef { kind: kind.to_owned(), ns: meta.namespace.clone().unwrap_or_default(), name: meta.name.clone().unwrap_or_default() };
            s.nodes.insert(uid, Node { obj, owners, deleting, finalizers });
        }
        drop(s);
        for uid in wake {
            self.queue.add((String::new(), uid));
        }
    }

    fn api(&self, obj: &ObjRef) -> Option<Api<DynamicObject>> {
        let ar = self.resources.lock().unwrap_or_else(|e| e.into_inner()).get(&obj.kind).cloned()?;
        Some(Api::namespaced_with(self.client.clone(), &obj.ns, &ar))
    }

    /// The dependents of `uid` with their references.
    fn dependents_of(&self, uid: &str) -> Vec<(String, ObjRef, bool)> {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.dependents.get(uid).into_iter().flatten().filter_map(|d| s.nodes.get(d).map(|n| (d.clone(), n.obj.clone(), n.deleting))).collect()
    }
}

pub async fn reconcile(key: Key, gc: Arc<Collector>) -> Result<Action, Error> {
    let uid = key.1;
    let dependents = gc.dependents_of(&uid);
    let node = {
        let s = gc.state.lock().unwrap_or_else(|e| e.into_inner());
        s.nodes.get(&uid).map(|n| (n.obj.clone(), n.deleting, n.finalizers.clone()))
    };
    match node {
        Some((owner, true, finalizers)) if finalizers.iter().any(|f| f == ORPHAN_FINALIZER) => {
            for (_, dep, _) in &dependents {
                drop_owner_ref(&gc, dep, &uid).await?;
            }
            remove_finalizer(&gc, &owner, &uid, ORPHAN_FINALIZER).await?;
            tracing::info!(kind = owner.kind, name = owner.name, orphaned = dependents.len(), "orphaned the dependents of a deleted owner");
        }
        Some((owner, true, finalizers)) if finalizers.iter().any(|f| f == FOREGROUND_FINALIZER) => {
            if dependents.is_empty() {
                remove_finalizer(&gc, &owner, &uid, FOREGROUND_FINALIZER).await?;
                tracing::info!(kind = owner.kind, name = owner.name, "foreground deletion finished");
            }
            for (_, dep, deleting) in &dependents {
                if !deleting {
                    delete(&gc, dep, PropagationPolicy::Foreground).await?;
                }
            }
        }
        Some(_) => {}
        None => {
            // The owner is not in the graph: make sure it is really gone, then its
            // dependents follow it (unless another owner still holds them).
            if dependents.is_empty() || owner_exists(&gc, &uid, &dependents).await? {
                return Ok(Action::AwaitChange);
            }
            for (dep_uid, dep, deleting) in &dependents {
                let other_owner_alive = {
                    let s = gc.state.lock().unwrap_or_else(|e| e.into_inner());
                    s.nodes.get(dep_uid).is_some_and(|n| n.owners.iter().any(|(o, _)| *o != uid && s.nodes.contains_key(o)))
                };
                if other_owner_alive {
                    drop_owner_ref(&gc, dep, &uid).await?;
                } else if !deleting {
                    delete(&gc, dep, PropagationPolicy::Background).await?;
                    tracing::info!(kind = dep.kind, namespace = dep.ns, name = dep.name, "deleted a dependent of a deleted owner");
                }
            }
        }
    }
    Ok(Action::AwaitChange)
}

/// A live read of the owner named by the dependents' reference to `uid`.
async fn owner_exists(gc: &Collector, uid: &str, dependents: &[(String, ObjRef, bool)]) -> Result<bool, Error> {
    for (_, dep, _) in dependents {
        let Some(api) = gc.api(dep) else { continue };
        let live = match api.get(&dep.name).await {
            Ok(o) => o,
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(r) = live.metadata.owner_references.iter().flatten().find(|r| r.uid == uid).cloned() else { continue };
        let owner = ObjRef { kind: r.kind.clone(), ns: dep.ns.clone(), name: r.name.clone() };
        let Some(api) = gc.api(&owner) else { return Ok(true) };
        return match api.get(&owner.name).await {
            Ok(o) => Ok(o.metadata.uid.as_deref() == Some(uid)),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(e.into()),
        };
    }
    // No dependent refers to it any more: nothing to collect.
    Ok(true)
}

async fn delete(gc: &Collector, obj: &ObjRef, policy: PropagationPolicy) -> Result<(), Error> {
    let Some(api) = gc.api(obj) else { return Ok(()) };
    let params = DeleteParams { propagation_policy: Some(policy), ..Default::default() };
    match api.delete(&obj.name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Removes the reference to `owner_uid` from `obj` (guarded by its resourceVersion).
async fn drop_owner_ref(gc: &Collector, obj: &ObjRef, owner_uid: &str) -> Result<(), Error> {
    let Some(api) = gc.api(obj) else { return Ok(()) };
    let live = match api.get(&obj.name).await {
        Ok(o) => o,
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let refs: Vec<_> = live.metadata.owner_references.iter().flatten().filter(|r| r.uid != owner_uid).cloned().collect();
    if refs.len() == live.metadata.owner_references.as_ref().map_or(0, Vec::len) {
        return Ok(());
    }
    // The last reference gone: no ownerReferences at all, as upstream leaves it.
    let refs = if refs.is_empty() { serde_json::Value::Null } else { json!(refs) };
    let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": live.metadata.resource_version}});
    api.patch(&obj.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}

async fn remove_finalizer(gc: &Collector, obj: &ObjRef, uid: &str, finalizer: &str) -> Result<(), Error> {
    let Some(api) = gc.api(obj) else { return Ok(()) };
    let live = match api.get(&obj.name).await {
        Ok(o) if o.metadata.uid.as_deref() == Some(uid) => o,
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let rest: Vec<&String> = live.metadata.finalizers.iter().flatten().filter(|f| *f != finalizer).collect();
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": live.metadata.resource_version}});
    api.patch(&obj.name, &PatchParams::default(), &Patch::Merge(patch)).await?;
    Ok(())
}
