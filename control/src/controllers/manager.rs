//! The controller manager: API clients (like the node agent) that keep caches of pods,
//! the workloads and more fed by watches, turn changes into work-queue keys for the
//! controllers, and feed the garbage collector's graph of owners and dependents.

use super::garbage::{self, Collector};
use super::runner::{self, Key, Queue};
use super::scheduler::{self, Scheduler};
use super::{cronjob, daemonset, deployment, disruption, endpoints, job, nodelifecycle, replicaset, replicationcontroller, serviceaccount, servicelb, statefulset};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, ReplicationController, Service, ServiceAccount};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, OwnerReference};
use kube::api::{Api, ApiResource};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The manager's tunables (flags of `wasmkube up`).
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long a node may go without renewing its Lease before it is marked Unknown
    /// and tainted unreachable (upstream's node-monitor-grace-period, 40 s).
    pub node_monitor_grace: Duration,
    /// The first delay before a Job replaces a failed pod; it doubles per failure up to
    /// 6 min (upstream: 10 s).
    pub job_backoff_base: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self { node_monitor_grace: Duration::from_secs(20), job_backoff_base: Duration::from_secs(10) }
    }
}

/// What every controller of the manager shares.
pub struct Ctx {
    pub settings: Settings,
    pub client: kube::Client,
    pub pods: Store<Pod>,
    pub replicasets: Store<ReplicaSet>,
    pub replication_controllers: Store<ReplicationController>,
    pub deployments: Store<Deployment>,
    pub jobs: Store<Job>,
    pub cronjobs: Store<CronJob>,
    pub statefulsets: Store<StatefulSet>,
    pub daemonsets: Store<DaemonSet>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub budgets: Store<PodDisruptionBudget>,
    pub namespaces: Store<Namespace>,
    pub service_accounts: Store<ServiceAccount>,
    pub services: Store<Service>,
    pub endpoint_slices: Store<EndpointSlice>,
    pub rs_queue: Queue,
    pub rc_queue: Queue,
    pub deploy_queue: Queue,
    pub job_queue: Queue,
    pub cron_queue: Queue,
    pub sts_queue: Queue,
    pub ds_queue: Queue,
    pub node_queue: Queue,
    pub sched_queue: Queue,
    pub pdb_queue: Queue,
    pub sa_queue: Queue,
    pub endpoints_queue: Queue,
    pub lb_queue: Queue,
    pub scheduler: Scheduler,
    pub gc: Arc<Collector>,
}

/// Runs the controllers until `shutdown` completes.
pub async fn run(config: kube::Config, settings: Settings, shutdown: impl std::future::Future<Output = ()>) -> anyhow::Result<()> {
    let client = kube::Client::try_from(config)?;
    let (pods, pods_w) = reflector::store::<Pod>();
    let (replicasets, rs_w) = reflector::store::<ReplicaSet>();
    let (replication_controllers, rc_w) = reflector::store::<ReplicationController>();
    let (deployments, d_w) = reflector::store::<Deployment>();
    let (jobs, jobs_w) = reflector::store::<Job>();
    let (cronjobs, cron_w) = reflector::store::<CronJob>();
    let (statefulsets, sts_w) = reflector::store::<StatefulSet>();
    let (daemonsets, ds_w) = reflector::store::<DaemonSet>();
    let (nodes, nodes_w) = reflector::store::<Node>();
    let (leases, leases_w) = reflector::store::<Lease>();
    let (budgets, budgets_w) = reflector::store::<PodDisruptionBudget>();
    let (namespaces, namespaces_w) = reflector::store::<Namespace>();
    let (service_accounts, sa_w) = reflector::store::<ServiceAccount>();
    let (services, services_w) = reflector::store::<Service>();
    let (endpoint_slices, slices_w) = reflector::store::<EndpointSlice>();
    // Watched only so the garbage collector sees them go with their owners.
    let (_revisions, revisions_w) = reflector::store::<ControllerRevision>();
    let gc = Arc::new(Collector::new(client.clone()));
    let ctx = Arc::new(Ctx {
        settings,
        client: client.clone(),
        pods,
        replicasets,
        replication_controllers,
        deployments,
        jobs,
        cronjobs,
        statefulsets,
        daemonsets,
        nodes,
        leases,
        budgets,
        namespaces,
        service_accounts,
        services,
        endpoint_slices,
        rs_queue: Queue::default(),
        rc_queue: Queue::default(),
        deploy_queue: Queue::default(),
        job_queue: Queue::default(),
        cron_queue: Queue::default(),
        sts_queue: Queue::default(),
        ds_queue: Queue::default(),
        node_queue: Queue::default(),
        sched_queue: Queue::default(),
        pdb_queue: Queue::default(),
        sa_queue: Queue::default(),
        endpoints_queue: Queue::default(),
        lb_queue: Queue::default(),
        scheduler: Scheduler::default(),
        gc: gc.clone(),
    });

    let mut tasks = tokio::task::JoinSet::new();
    watch(&mut tasks, &ctx, pods_w, |ctx, pod: &Pod, deleted| {
        ctx.scheduler.observe_pod(ctx, pod, deleted);
        for pdb in ctx.budgets.state().iter().filter(|b| b.metadata.namespace == pod.metadata.namespace) {
            ctx.pdb_queue.add(key_of(pdb.metadata.namespace.as_deref(), pdb.metadata.name.as_deref()));
        }
        // A pod may join or leave any Service of its namespace (its labels may have changed).
        for svc in ctx.services.state().iter().filter(|s| s.metadata.namespace == pod.metadata.namespace) {
            ctx.endpoints_queue.add(key_of(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()));
        }
        let Some(owner) = pod.metadata.owner_references.iter().flatten().find(|r| r.controller == Some(true)) else { return };
        let queue = match owner.kind.as_str() {
            "ReplicaSet" => &ctx.rs_queue,
            "ReplicationController" => &ctx.rc_queue,
            "Job" => &ctx.job_queue,
            "StatefulSet" => &ctx.sts_queue,
            "DaemonSet" => &ctx.ds_queue,
            _ => return,
        };
        queue.add((ns_of(pod.metadata.namespace.as_deref()), owner.name.clone()));
    });
    watch(&mut tasks, &ctx, rs_w, |ctx, rs: &ReplicaSet, _| {
        let ns = ns_of(rs.metadata.namespace.as_deref());
        ctx.rs_queue.add((ns.clone(), rs.metadata.name.clone().unwrap_or_default()));
        if let Some(owner) = controller_of(rs.metadata.owner_references.as_deref(), "Deployment") {
            ctx.deploy_queue.add((ns, owner.name.clone()));
        }
    });
    watch(&mut tasks, &ctx, rc_w, |ctx, rc: &ReplicationController, _| {
        ctx.rc_queue.add(key_of(rc.metadata.namespace.as_deref(), rc.metadata.name.as_deref()));
    });
    watch(&mut tasks, &ctx, d_w, |ctx, d: &Deployment, _| {
        ctx.deploy_queue.add(key_of(d.metadata.namespace.as_deref(), d.metadata.name.as_deref()));
    });
    watch(&mut tasks, &ctx, jobs_w, |ctx, job: &Job, _| {
        ctx.job_queue.add(key_of(job.metadata.namespace.as_deref(), job.metadata.name.as_deref()));
        if let Some(owner) = controller_of(job.metadata.owner_references.as_deref(), "CronJob") {
            ctx.cron_queue.add((ns_of(job.metadata.namespace.as_deref()), owner.name.clone()));
        }
    });
    watch(&mut tasks, &ctx, sts_w, |ctx, set: &StatefulSet, _| {
        ctx.sts_queue.add(key_of(set.metadata.namespace.as_deref(), set.metadata.name.as_deref()));
    });
    watch(&mut tasks, &ctx, ds_w, |ctx, ds: &DaemonSet, _| {
        ctx.ds_queue.add(key_of(ds.metadata.namespace.as_deref(), ds.metadata.name.as_deref()));
    });
    // A node joining, leaving or changing labels or taints concerns every DaemonSet.
    watch(&mut tasks, &ctx, nodes_w, |ctx, node: &Node, _| {
        ctx.scheduler.observe_node(ctx);
        for svc in ctx.services.state().iter().filter(|s| s.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer")) {
            ctx.lb_queue.add(key_of(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref()));
        }
        ctx.node_queue.add(key_of(Some(""), node.metadata.name.as_deref()));
        for ds in ctx.daemonsets.state() {
            ctx.ds_queue.add(key_of(ds.metadata.namespace.as_deref(), ds.metadata.name.as_deref()));
        }
    });
    watch(&mut tasks, &ctx, leases_w, |ctx, lease: &Lease, _| {
        if lease.metadata.namespace.as_deref() == Some("kube-node-lease") {
            ctx.node_queue.add(key_of(Some(""), lease.metadata.name.as_deref()));
        }
    });
    watch(&mut tasks, &ctx, budgets_w, |ctx, pdb: &PodDisruptionBudget, _| {
        ctx.pdb_queue.add(key_of(pdb.metadata.namespace.as_deref(), pdb.metadata.name.as_deref()));
    });
    watch(&mut tasks, &ctx, namespaces_w, |ctx, ns: &Namespace, _| {
        ctx.sa_queue.add(key_of(Some(""), ns.metadata.name.as_deref()));
    });
    watch(&mut tasks, &ctx, sa_w, |ctx, sa: &ServiceAccount, _| {
        if sa.metadata.name.as_deref() == Some("default") {
            ctx.sa_queue.add(key_of(Some(""), sa.metadata.namespace.as_deref()));
        }
    });
    watch(&mut tasks, &ctx, revisions_w, |_, _: &ControllerRevision, _| {});
    watch(&mut tasks, &ctx, services_w, |ctx, svc: &Service, _| {
        let key = key_of(svc.metadata.namespace.as_deref(), svc.metadata.name.as_deref());
        ctx.endpoints_queue.add(key.clone());
        ctx.lb_queue.add(key);
    });
    watch(&mut tasks, &ctx, slices_w, |ctx, slice: &EndpointSlice, _| {
        if let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(endpoints::SERVICE_NAME_LABEL)) {
            ctx.endpoints_queue.add((ns_of(slice.metadata.namespace.as_deref()), svc.clone()));
        }
    });
    watch(&mut tasks, &ctx, cron_w, |ctx, cj: &CronJob, _| {
        ctx.cron_queue.add(key_of(cj.metadata.namespace.as_deref(), cj.metadata.name.as_deref()));
    });
    tasks.spawn(runner::run("garbage-collector", gc.queue.clone(), gc.clone(), 2, garbage::reconcile, runner::error_policy));
    {
        // Controllers start once every cache holds its first full list. (One waiter per
        // store: a store wakes only the last task waiting on it.)
        let ctx = ctx.clone();
        tasks.spawn(async move {
            let _ = ctx.pods.wait_until_ready().await;
            let _ = ctx.replicasets.wait_until_ready().await;
            let _ = ctx.replication_controllers.wait_until_ready().await;
            let _ = ctx.deployments.wait_until_ready().await;
            let _ = ctx.jobs.wait_until_ready().await;
            let _ = ctx.cronjobs.wait_until_ready().await;
            let _ = ctx.statefulsets.wait_until_ready().await;
            let _ = ctx.daemonsets.wait_until_ready().await;
            let _ = ctx.nodes.wait_until_ready().await;
            let _ = ctx.leases.wait_until_ready().await;
            let _ = ctx.budgets.wait_until_ready().await;
            let _ = ctx.namespaces.wait_until_ready().await;
            let _ = ctx.service_accounts.wait_until_ready().await;
            let _ = ctx.services.wait_until_ready().await;
            let _ = ctx.endpoint_slices.wait_until_ready().await;
            tokio::join!(
                // One scheduler worker: each pass sees the bindings of the one before.
                runner::run("scheduler", ctx.sched_queue.clone(), ctx.clone(), 1, scheduler::reconcile, runner::error_policy),
                runner::run("replicaset", ctx.rs_queue.clone(), ctx.clone(), 4, replicaset::reconcile, runner::error_policy),
                runner::run("replicationcontroller", ctx.rc_queue.clone(), ctx.clone(), 2, replicationcontroller::reconcile, runner::error_policy),
                runner::run("deployment", ctx.deploy_queue.clone(), ctx.clone(), 2, deployment::reconcile, runner::error_policy),
                runner::run("job", ctx.job_queue.clone(), ctx.clone(), 4, job::reconcile, runner::error_policy),
                runner::run("cronjob", ctx.cron_queue.clone(), ctx.clone(), 2, cronjob::reconcile, runner::error_policy),
                runner::run("statefulset", ctx.sts_queue.clone(), ctx.clone(), 2, statefulset::reconcile, runner::error_policy),
                runner::run("daemonset", ctx.ds_queue.clone(), ctx.clone(), 2, daemonset::reconcile, runner::error_policy),
                runner::run("node-lifecycle", ctx.node_queue.clone(), ctx.clone(), 2, nodelifecycle::reconcile, runner::error_policy),
                runner::run("disruption", ctx.pdb_queue.clone(), ctx.clone(), 2, disruption::reconcile, runner::error_policy),
                runner::run("serviceaccount", ctx.sa_queue.clone(), ctx.clone(), 1, serviceaccount::reconcile, runner::error_policy),
                runner::run("endpoints", ctx.endpoints_queue.clone(), ctx.clone(), 4, endpoints::reconcile, runner::error_policy),
                runner::run("service-lb", ctx.lb_queue.clone(), ctx.clone(), 1, servicelb::reconcile, runner::error_policy),
            );
        });
    }
    shutdown.await;
    tasks.abort_all();
    Ok(())
}

/// Watches every object of kind `K` into its cache, tells the garbage collector, and
/// hands each changed (or, with `true`, deleted) object to `enqueue` to wake the
/// controllers that care.
fn watch<K>(tasks: &mut tokio::task::JoinSet<()>, ctx: &Arc<Ctx>, writer: reflector::store::Writer<K>, enqueue: fn(&Ctx, &K, bool))
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let kind = K::kind(&()).into_owned();
    ctx.gc.watch_kind(ApiResource::erase::<K>(&()));
    let stream = watcher(Api::<K>::all(ctx.client.clone()), watcher::Config::default()).default_backoff().reflect(writer);
    let ctx = ctx.clone();
    tasks.spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(kind, error = %e, "watch failed; retrying");
                    continue;
                }
            };
            match &event {
                watcher::Event::Apply(o) | watcher::Event::InitApply(o) => {
                    ctx.gc.observe(&kind, o.meta(), false);
                    enqueue(&ctx, o, false);
                }
                watcher::Event::Delete(o) => {
                    ctx.gc.observe(&kind, o.meta(), true);
                    enqueue(&ctx, o, true);
                }
                watcher::Event::InitDone => ctx.gc.synced(&kind),
                watcher::Event::Init => {}
            }
        }
    });
}

pub fn ns_of(ns: Option<&str>) -> String {
    ns.unwrap_or("default").to_owned()
}

/// The owner reference with `controller: true`, if it is of `kind`.
pub fn controller_of<'a>(refs: Option<&'a [OwnerReference]>, kind: &str) -> Option<&'a OwnerReference> {
    refs?.iter().find(|r| r.controller == Some(true) && r.kind == kind)
}

/// Whether `labels` satisfy a label selector (matchLabels and matchExpressions). An empty
/// selector matches nothing, as for controllers upstream.
pub fn selector_matches(sel: &LabelSelector, labels: Option<&BTreeMap<String, String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml = sel.match_labels.as_ref();
    let me = sel.match_expressions.as_ref();
    if ml.is_none_or(|m| m.is_empty()) && me.is_none_or(|m| m.is_empty()) {
        return false;
    }
    ml.into_iter().flatten().all(|(k, v)| labels.get(k) == Some(v))
        && me.into_iter().flatten().all(|r| {
            let values = r.values.as_deref().unwrap_or_default();
            match r.operator.as_str() {
                "In" => labels.get(&r.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&r.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&r.key),
                "DoesNotExist" => !labels.contains_key(&r.key),
                _ => false,
            }
        })
}

pub fn key_of(ns: Option<&str>, name: Option<&str>) -> Key {
    (ns_of(ns), name.unwrap_or_default().to_owned())
}
