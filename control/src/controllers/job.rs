//! Job: runs pods until `completions` of them succeed, `parallelism` at a time; fails at
//! `backoffLimit` failures or after `activeDeadlineSeconds`; Indexed mode gives each pod
//! its `JOB_COMPLETION_INDEX`; `suspend` stops the pods; `ttlSecondsAfterFinished`
//! deletes a finished Job.

use super::events::{self, Type};
use super::manager::Ctx;
use super::pods::{self, is_active, is_ready, phase, Naming};
use super::runner::{Action, Error, Key};
use k8s_openapi::api::batch::v1::{Job, JobCondition};
use k8s_openapi::api::core::v1::{EnvVar, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";



fn now() -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::now()
}

fn condition_true(job: &Job, t: &str) -> Option<JobCondition> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == t && c.status == "True").cloned()
}

fn index_of(p: &Pod) -> Option<i32> {
    p.metadata.annotations.as_ref()?.get(INDEX_ANNOTATION)?.parse().ok()
}

/// Upstream's compact form of a set of indexes: "0-2,5".
pub fn compact_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut iter = set.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end = iter.next().unwrap_or(end);
        }
        out.push(if start == end { start.to_string() } else { format!("{start}-{end}") });
    }
    out.join(",")
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(job) = ctx.jobs.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    if job.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &key.0);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &key.0);
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let uid = job.metadata.uid.clone().unwrap_or_default();

    if let Some(done) = condition_true(&job, "Complete").or_else(|| condition_true(&job, "Failed")) {
        return expire(&jobs_api, &job, &done).await;
    }

    let owned = pods::owned_by(&ctx, &key.0, "Job", &uid);
    let active: Vec<&Arc<Pod>> = owned.iter().filter(|p| is_active(p)).collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let on_failure = spec.template.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) == Some("OnFailure");
    let succeeded_pods: Vec<&Arc<Pod>> = owned.iter().filter(|p| phase(p) == Some("Succeeded")).collect();
    let failed_pods = owned.iter().filter(|p| phase(p) == Some("Failed")).count();
    // With OnFailure the node restarts containers in place: those restarts are failures.
    let restarts: i32 = if on_failure { active.iter().flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten())).map(|c| c.restart_count).sum() } else { 0 };
    let failed = i32::try_from(failed_pods).unwrap_or(i32::MAX).saturating_add(restarts);
    let done_indexes: BTreeSet<i32> = succeeded_pods.iter().filter_map(|p| index_of(p)).filter(|i| completions.is_none_or(|c| *i < c)).collect();
    let succeeded = if indexed { done_indexes.len() } else { succeeded_pods.len() } as i32;
    let suspended = spec.suspend == Some(true);

    let start = old.start_time.as_ref().map(|t| t.0);
    let deadline_left = match (spec.active_deadline_seconds, start) {
        (Some(d), Some(s)) => Some(Duration::from_secs(u64::try_from(d).unwrap_or(0)).saturating_sub(now().duration_since(s).unsigned_abs())),
        _ => None,
    };
    let failure = if failed > spec.backoff_limit.unwrap_or(6) {
        Some(("BackoffLimitExceeded", "Job has reached the specified backoff limit"))
    } else if deadline_left.is_some_and(|d| d.is_zero()) && !suspended {
        Some(("DeadlineExceeded", "Job was active longer than specified deadline"))
    } else {
        None
    };
    let complete = failure.is_none() && match completions {
        Some(c) => succeeded >= c,
        // A work queue: done when one pod succeeded and the rest have stopped.
        None => succeeded > 0 && active.is_empty(),
    };

    let mut deleted = Vec::new();
    let mut created = Vec::new();
    let mut backoff: Option<Duration> = None;
    if failure.is_some() || complete || suspended {
        for p in &active {
            let name = p.metadata.name.clone().unwrap_or_default();
            pods::delete(&pods_api, &name).await?;
            deleted.push(name);
        }
    } else {
        let want_indexes: Vec<i32> = if indexed {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| index_of(p)).collect();
            (0..completions.unwrap_or(0)).filter(|i| !done_indexes.contains(i) && !running.contains(i)).collect()
        } else {
            Vec::new()
        };
        let remaining = match completions {
            Some(c) => (c - succeeded).max(0),
            None if succeeded > 0 => 0,
            None => parallelism,
        };
        let want = parallelism.min(remaining) as usize;
        // After failures, replacements wait: the base doubling per failure, up to 6 min.
        let wait = if failed_pods > 0 && active.len() < want { backoff_left(&owned, failed_pods, ctx.settings.job_backoff_base) } else { None };
        if let Some(left) = wait {
            backoff = Some(left);
        } else if active.len() < want {
            let n = want - active.len();
            for i in 0..n {
                let index = if indexed {
                    match want_indexes.get(i) {
                        Some(ix) => Some(*ix),
                        None => break,
                    }
                } else {
                    None
                };
                created.push(pods::create(&pods_api, &job_pod(&job, index)?).await?);
            }
        } else if active.len() > want {
            let mut extra = active.clone();
            extra.sort_by_key(|p| (is_ready(p), std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0))));
            for p in extra.iter().take(active.len() - want) {
                let name = p.metadata.name.clone().unwrap_or_default();
                pods::delete(&pods_api, &name).await?;
                deleted.push(name);
            }
        }
    }
    if !created.is_empty() {
        tracing::info!(job = %key.1, created = created.len(), "created pods");
        for name in &created {
            events::spawn(&ctx.client, "job-controller", &job, Type::Normal, "SuccessfulCreate", format!("Created pod: {name}"));
        }
        pods::wait_for_cache(&ctx, &key.0, &created, pods::created).await;
    }
    if !deleted.is_empty() {
        pods::wait_for_cache(&ctx, &key.0, &deleted, pods::deleted).await;
    }

    // Status.
    let now_text = now().to_string();
    let mut conditions: Vec<JobCondition> = old.conditions.clone().unwrap_or_default();
    let mut set_condition = |t: &str, status: &str, reason: &str, message: &str| {
        if let Some(c) = conditions.iter_mut().find(|c| c.type_ == t) {
            if c.status == status && c.reason.as_deref() == Some(reason) {
                return;
            }
            *c = condition(t, status, reason, message);
        } else {
            conditions.push(condition(t, status, reason, message));
        }
    };
    let was_suspended = old.conditions.iter().flatten().any(|c| c.type_ == "Suspended" && c.status == "True");
    if suspended {
        set_condition("Suspended", "True", "JobSuspended", "Job suspended");
    } else if was_suspended {
        set_condition("Suspended", "False", "JobResumed", "Job resumed");
    }
    if let Some((reason, message)) = failure {
        events::spawn(&ctx.client, "job-controller", &job, Type::Warning, reason, message.to_owned());
        set_condition("FailureTarget", "True", reason, message);
        set_condition("Failed", "True", reason, message);
    } else if complete {
        events::spawn(&ctx.client, "job-controller", &job, Type::Normal, "Completed", "Job completed".to_owned());
        set_condition("SuccessCriteriaMet", "True", "CompletionsReached", "Reached expected number of succeeded pods");
        set_condition("Complete", "True", "CompletionsReached", "Reached expected number of succeeded pods");
    }
    let still_active = if failure.is_some() || complete || suspended { 0 } else { active.len() + created.len() - deleted.len().min(active.len() + created.len()) };
    let mut status = json!({
        "active": still_active,
        "ready": active.iter().filter(|p| is_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "conditions": conditions,
    });
    // startTime: when the Job first ran (again, after a resume).
    match (start, suspended, was_suspended) {
        (_, true, _) => status["startTime"] = serde_json::Value::Null,
        (None, false, _) | (Some(_), false, true) => status["startTime"] = json!(now_text),
        _ => {}
    }
    if complete {
        status["completionTime"] = json!(now_text);
    }
    if indexed {
        status["completedIndexes"] = json!(compact_indexes(&done_indexes));
    }
    let current = serde_json::to_value(&old).unwrap_or_default();
    let changed = status.as_object().is_some_and(|m| m.iter().any(|(k, v)| current.get(k).unwrap_or(&serde_json::Value::Null) != v && !(v.is_null() && current.get(k).is_none())));
    if changed {
        jobs_api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
    }
    let running = !suspended && !complete && failure.is_none();
    let next = [deadline_left.filter(|_| running), backoff].into_iter().flatten().min();
    Ok(next.map_or(Action::AwaitChange, |d| Action::RequeueAfter(d + Duration::from_millis(50))))
}

/// How long replacements must still wait after the latest of `failed` pod failures.
fn backoff_left(pods: &[Arc<Pod>], failed: usize, base: Duration) -> Option<Duration> {
    let last = pods
        .iter()
        .filter(|p| phase(p) == Some("Failed"))
        .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten()))
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref().map(|t| t.0))
        .max()?;
    let delay = base.saturating_mul(1u32 << (failed - 1).min(16)).min(Duration::from_secs(360));
    let since = now().duration_since(last).unsigned_abs();
    (since < delay).then(|| delay - since)
}

fn condition(t: &str, status: &str, reason: &str, message: &str) -> JobCondition {
    let at = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now());
    JobCondition { type_: t.into(), status: status.into(), reason: Some(reason.into()), message: Some(message.into()), last_probe_time: Some(at.clone()), last_transition_time: Some(at) }
}

/// A finished Job with `ttlSecondsAfterFinished` is deleted (with its pods) once it expires.
async fn expire(api: &Api<Job>, job: &Job, done: &JobCondition) -> Result<Action, Error> {
    let Some(ttl) = job.spec.as_ref().and_then(|s| s.ttl_seconds_after_finished) else { return Ok(Action::AwaitChange) };
    let finished = job.status.as_ref().and_then(|s| s.completion_time.clone()).or_else(|| done.last_transition_time.clone()).map(|t| t.0).unwrap_or_else(now);
    let age = now().duration_since(finished).unsigned_abs();
    let ttl = Duration::from_secs(u64::try_from(ttl).unwrap_or(0));
    if age < ttl {
        return Ok(Action::RequeueAfter(ttl - age + Duration::from_millis(50)));
    }
    let name = job.metadata.name.clone().unwrap_or_default();
    let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    match api.delete(&name, &params).await {
        Ok(_) => tracing::info!(job = name, "deleted a finished job after its TTL"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::AwaitChange)
}

/// A pod of the Job; in Indexed mode it carries its index as an annotation, a label, its
/// hostname and `JOB_COMPLETION_INDEX` in every container.
fn job_pod(job: &Job, index: Option<i32>) -> Result<Pod, Error> {
    let name = job.metadata.name.clone().unwrap_or_default();
    let template = job.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let prefix = match index {
        Some(i) => format!("{name}-{i}-"),
        None => format!("{name}-"),
    };
    let mut pod = pods::from_template(&template, pods::owner_ref(job), Naming::Generate(prefix)).map_err(|e| Error::Invalid(format!("pod template: {e}")))?;
    if let Some(i) = index {
        pod.metadata.annotations.get_or_insert_default().insert(INDEX_ANNOTATION.into(), i.to_string());
        pod.metadata.labels.get_or_insert_default().insert(INDEX_ANNOTATION.into(), i.to_string());
        if let Some(spec) = pod.spec.as_mut() {
            spec.hostname = Some(format!("{name}-{i}"));
            for c in spec.containers.iter_mut().chain(spec.init_containers.iter_mut().flatten()) {
                c.env.get_or_insert_default().push(EnvVar { name: "JOB_COMPLETION_INDEX".into(), value: Some(i.to_string()), value_from: None });
            }
        }
    }
    Ok(pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replacements_back_off_doubling_from_the_last_failure() {
        let failed_at = |secs_ago: i64| -> Arc<Pod> {
            let t = (now() - k8s_openapi::jiff::SignedDuration::from_secs(secs_ago)).to_string();
            Arc::new(serde_json::from_value(json!({"status": {"phase": "Failed", "containerStatuses": [{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": 1, "finishedAt": t}}}]}})).unwrap())
        };
        let base = Duration::from_secs(10);
        let left = backoff_left(&[failed_at(1)], 1, base).unwrap();
        assert!(left > Duration::from_secs(8) && left <= Duration::from_secs(9), "{left:?}");
        let left = backoff_left(&[failed_at(30), failed_at(1)], 3, base).unwrap();
        assert!(left > Duration::from_secs(38) && left <= Duration::from_secs(39), "{left:?}");
        assert_eq!(backoff_left(&[failed_at(100)], 2, base), None);
        // Capped at six minutes.
        assert!(backoff_left(&[failed_at(0)], 30, base).unwrap() <= Duration::from_secs(360));
    }

    #[test]
    fn completed_indexes_compact_as_upstream() {
        assert_eq!(compact_indexes(&[0, 1, 2, 5, 7, 8].into_iter().collect()), "0-2,5,7-8");
        assert_eq!(compact_indexes(&BTreeSet::new()), "");
        assert_eq!(compact_indexes(&[3].into_iter().collect()), "3");
    }
}
