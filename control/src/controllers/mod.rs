//! Control loops. In the API server's process, on the store: the namespace lifecycle
//! (which the API contract itself needs). As API clients, run by the [`manager`] through
//! the [`runner`]: the [`scheduler`], ReplicaSets, ReplicationControllers, Deployments,
//! Jobs, CronJobs, StatefulSets, DaemonSets, node lifecycle, disruption budgets, ServiceAccounts and
//! the [`garbage`] collector.
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod garbage;
pub mod job;
pub mod manager;
pub mod namespace;
pub mod nodelifecycle;
pub mod pods;
pub mod replicaset;
pub mod replicationcontroller;
pub mod revisions;
pub mod runner;
pub mod scheduler;
pub mod serviceaccount;
pub mod servicelb;
pub mod statefulset;
