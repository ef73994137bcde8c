//! CronJob: creates a Job at each time its schedule names (standard five fields or an
//! `@hourly`-style macro, in `timeZone` or UTC), honouring `concurrencyPolicy`,
//! `startingDeadlineSeconds`, `suspend` and the history limits.

use super::events::{self, Type};
use super::manager::{controller_of, Ctx};
use super::pods::owner_ref;
use super::runner::{Action, Error, Key};
use chrono::{DateTime, TimeZone, Utc};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::reflector::ObjectRef;
use serde_json::json;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub const SCHEDULED_ANNOTATION: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Missed start times beyond this many are not caught up one by one (upstream's 100).
const MAX_MISSED: usize = 100;



/// A parsed schedule: five fields or a macro, as upstream accepts.
pub fn parse_schedule(schedule: &str) -> Result<croner::Cron, String> {
    let s = schedule.trim();
    let expanded = match s {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        other if other.starts_with('@') => return Err(format!("unknown schedule macro {other:?}")),
        other if other.split_whitespace().count() != 5 => return Err(format!("expected exactly 5 fields, found {}: {other:?}", other.split_whitespace().count())),
        other => other,
    };
    croner::Cron::from_str(expanded).map_err(|e| e.to_string())
}

fn time_zone(name: Option<&str>) -> Result<chrono_tz::Tz, Error> {
    match name {
        None | Some("") => Ok(chrono_tz::UTC),
        Some(n) => n.parse().map_err(|_| Error::Invalid(format!("unknown time zone {n:?}"))),
    }
}

fn to_utc(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> DateTime<Utc> {
    Utc.timestamp_opt(t.0.as_second(), 0).single().unwrap_or_default()
}

fn finished(job: &Job) -> Option<&str> {
    job.status.as_ref()?.conditions.as_ref()?.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True").map(|c| c.type_.as_str())
}

/// The schedule times in (after, until], the last at most `MAX_MISSED` of them counted.
fn due_times(cron: &croner::Cron, tz: chrono_tz::Tz, after: DateTime<Utc>, until: DateTime<Utc>) -> (Option<DateTime<Utc>>, usize) {
    let mut last = None;
    let mut n = 0;
    for t in cron.iter_after(after.with_timezone(&tz)) {
        let t = t.with_timezone(&Utc);
        if t > until {
            break;
        }
        last = Some(t);
        n += 1;
        if n > MAX_MISSED {
            // Too many missed: start from the most recent one only.
            return (cron.find_previous_occurrence(&until.with_timezone(&tz), true).ok().map(|t| t.with_timezone(&Utc)), n);
        }
    }
    (last, n)
}

pub async fn reconcile(key: Key, ctx: Arc<Ctx>) -> Result<Action, Error> {
    let Some(cj) = ctx.cronjobs.get(&ObjectRef::new(&key.1).within(&key.0)) else { return Ok(Action::AwaitChange) };
    if cj.metadata.deletion_timestamp.is_some() {
        return Ok(Action::AwaitChange);
    }
    let spec = cj.spec.clone();
    let status = cj.status.clone().unwrap_or_default();
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let jobs_api: Api<Job> = Api::namespaced(ctx.client.clone(), &key.0);
    let cron = parse_schedule(&spec.schedule).map_err(|e| Error::Invalid(format!("spec.schedule: {e}")))?;
    let tz = time_zone(spec.time_zone.as_deref())?;
    let now = Utc::now();

    let mut jobs: Vec<Arc<Job>> = ctx.jobs.state().into_iter().filter(|j| j.metadata.namespace.as_deref() == Some(key.0.as_str()) && controller_of(j.metadata.owner_references.as_deref(), "CronJob").is_some_and(|c| c.uid == uid)).collect();
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    let mut active: Vec<Arc<Job>> = jobs.iter().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).cloned().collect();

    // History: keep the newest successful and failed Jobs up to their limits.
    for (kind, limit) in [("Complete", spec.successful_jobs_history_limit.unwrap_or(3)), ("Failed", spec.failed_jobs_history_limit.unwrap_or(1))] {
        let done: Vec<&Arc<Job>> = jobs.iter().filter(|j| finished(j) == Some(kind) && j.metadata.deletion_timestamp.is_none()).collect();
        for j in done.iter().take(done.len().saturating_sub(usize::try_from(limit).unwrap_or(0))) {
            delete_job(&jobs_api, j.metadata.name.as_deref().unwrap_or_default()).await?;
        }
    }

    let mut last_schedule = status.last_schedule_time.as_ref().map(to_utc);
    let since = last_schedule.or_else(|| cj.metadata.creation_timestamp.as_ref().map(to_utc)).unwrap_or(now);
    let (due, missed) = due_times(&cron, tz, since, now);
    if spec.suspend != Some(true) {
        if let Some(t) = due {
            if missed > MAX_MISSED {
                tracing::warn!(cronjob = %key.1, missed, "too many missed start times; starting the most recent only");
            }
            let too_late = spec.starting_deadline_seconds.is_some_and(|d| (now - t).num_seconds() > d);
            let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
            if too_late {
                tracing::info!(cronjob = %key.1, scheduled = %t, "missed its starting deadline");
                last_schedule = Some(t);
            } else if policy == "Forbid" && !active.is_empty() {
                tracing::info!(cronjob = %key.1, scheduled = %t, "skipped: the previous job is still running (concurrencyPolicy Forbid)");
            } else {
                if policy == "Replace" {
                    for j in active.drain(..) {
                        delete_job(&jobs_api, j.metadata.name.as_deref().unwrap_or_default()).await?;
                    }
                }
                let job = job_for(&cj, t)?;
                let made = match jobs_api.create(&PostParams::default(), &job).await {
                    Ok(j) => j,
                    Err(kube::Error::Api(e)) if e.code == 409 => jobs_api.get(job.metadata.name.as_deref().unwrap_or_default()).await?,
                    Err(e) => return Err(e.into()),
                };
                tracing::info!(cronjob = %key.1, job = ?made.metadata.name, scheduled = %t, "created job");
                events::spawn(&ctx.client, "cronjob-controller", &cj, Type::Normal, "SuccessfulCreate", format!("Created job {}", made.metadata.name.as_deref().unwrap_or_default()));
                if finished(&made).is_none() && !active.iter().any(|a| a.metadata.uid == made.metadata.uid) {
                    active.push(Arc::new(made));
                }
                last_schedule = Some(t);
            }
        }
    }

    let last_successful = jobs.iter().filter(|j| finished(j) == Some("Complete")).filter_map(|j| j.status.as_ref()?.completion_time.as_ref().map(to_utc)).max().or(status.last_successful_time.as_ref().map(to_utc));
    let refs: Vec<_> = active.iter().map(|j| json!({"apiVersion": "batch/v1", "kind": "Job", "name": j.metadata.name, "namespace": j.metadata.namespace, "uid": j.metadata.uid})).collect();
    let fmt = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let new_status = json!({
        "active": if refs.is_empty() { serde_json::Value::Null } else { json!(refs) },
        "lastScheduleTime": fmt(last_schedule),
        "lastSuccessfulTime": fmt(last_successful),
    });
    let old = json!({
        "active": status.active.as_ref().filter(|a| !a.is_empty()).map(|a| a.iter().map(|r| json!({"apiVersion": r.api_version, "kind": r.kind, "name": r.name, "namespace": r.namespace, "uid": r.uid})).collect::<Vec<_>>()),
        "lastScheduleTime": fmt(status.last_schedule_time.as_ref().map(to_utc)),
        "lastSuccessfulTime": fmt(status.last_successful_time.as_ref().map(to_utc)),
    });
    if new_status != old {
        let api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &key.0);
        api.patch_status(&key.1, &PatchParams::default(), &Patch::Merge(json!({"status": new_status}))).await?;
    }
    // Look again at the next start time.
    let next = cron.find_next_occurrence(&now.with_timezone(&tz), false).map_err(|e| Error::Invalid(e.to_string()))?.with_timezone(&Utc);
    Ok(Action::RequeueAfter((next - now).to_std().unwrap_or_default() + Duration::from_millis(100)))
}

async fn delete_job(api: &Api<Job>, name: &str) -> Result<(), Error> {
    let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The Job for start time `t`, named as upstream: `<cronjob>-<minutes since the epoch>`.
fn job_for(cj: &CronJob, t: DateTime<Utc>) -> Result<Job, Error> {
    let template = cj.spec.job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    annotations.insert(SCHEDULED_ANNOTATION.into(), t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": format!("{}-{}", cj.metadata.name.as_deref().unwrap_or_default(), t.timestamp() / 60),
            "labels": meta.labels,
            "annotations": annotations,
            "ownerReferences": [owner_ref(cj)],
        },
        "spec": template.spec,
    });
    serde_json::from_value(job).map_err(|e| Error::Invalid(format!("jobTemplate: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_as_upstream_and_find_their_times() {
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let every = parse_schedule("*/1 * * * *").unwrap();
        let (due, n) = due_times(&every, chrono_tz::UTC, at("2026-01-01T10:00:30Z"), at("2026-01-01T10:03:10Z"));
        assert_eq!((due, n), (Some(at("2026-01-01T10:03:00Z")), 3));
        let hourly = parse_schedule("@hourly").unwrap();
        let (due, _) = due_times(&hourly, chrono_tz::UTC, at("2026-01-01T10:00:30Z"), at("2026-01-01T11:30:00Z"));
        assert_eq!(due, Some(at("2026-01-01T11:00:00Z")));
        // 09:00 in New York (UTC-5 in January) is 14:00 UTC.
        let nine = parse_schedule("0 9 * * *").unwrap();
        let tz: chrono_tz::Tz = "America/New_York".parse().unwrap();
        let (due, _) = due_times(&nine, tz, at("2026-01-01T00:00:00Z"), at("2026-01-01T20:00:00Z"));
        assert_eq!(due, Some(at("2026-01-01T14:00:00Z")));
        assert!(parse_schedule("* * * * * *").is_err());
        assert!(parse_schedule("@sometimes").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
        // Long outages start only the most recent time.
        let (due, n) = due_times(&every, chrono_tz::UTC, at("2026-01-01T00:00:30Z"), at("2026-01-02T00:00:30Z"));
        assert_eq!(due, Some(at("2026-01-02T00:00:00Z")));
        assert!(n > MAX_MISSED);
    }
}
