//! Upstream defaulting for the fields users see in `kubectl get -o yaml`.
//!
//! Defaults are filled into the JSON form in place and are idempotent, so they run
//! on every create and update.

use base64::Engine;
use serde_json::{json, Map, Value};

/// Fill upstream defaults into an object of `kind`.
pub fn apply_defaults(kind: &str, obj: &mut Value) {
    match kind {
        "Pod" => {
            if let Some(spec) = obj.get_mut("spec") {
                pod_spec(spec);
                pod_only(spec);
            }
            let qos = obj.get("spec").map(qos_class).unwrap_or("BestEffort");
            let status = ensure(obj, "status");
            set(status, "phase", json!("Pending"));
            set(status, "qosClass", json!(qos));
        }
        "Deployment" => {
            let spec = ensure(obj, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "revisionHistoryLimit", json!(10));
            set(spec, "progressDeadlineSeconds", json!(600));
            let strategy = ensure(spec, "strategy");
            set(strategy, "type", json!("RollingUpdate"));
            if strategy.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = ensure(strategy, "rollingUpdate");
                set(ru, "maxSurge", json!("25%"));
                set(ru, "maxUnavailable", json!("25%"));
            }
            template(spec);
        }
        "ReplicaSet" => {
            let spec = ensure(obj, "spec");
            set(spec, "replicas", json!(1));
            template(spec);
        }
        "ReplicationController" => replication_controller(obj),
        "StatefulSet" => {
            let spec = ensure(obj, "spec");
            set(spec, "replicas", json!(1));
            set(spec, "podManagementPolicy", json!("OrderedReady"));
            set(spec, "revisionHistoryLimit", json!(10));
            let us = ensure(spec, "updateStrategy");
            set(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                set(ensure(us, "rollingUpdate"), "partition", json!(0));
            }
            let retention = ensure(spec, "persistentVolumeClaimRetentionPolicy");
            set(retention, "whenDeleted", json!("Retain"));
            set(retention, "whenScaled", json!("Retain"));
            template(spec);
        }
        "DaemonSet" => {
            let spec = ensure(obj, "spec");
            set(spec, "revisionHistoryLimit", json!(10));
            let us = ensure(spec, "updateStrategy");
            set(us, "type", json!("RollingUpdate"));
            if us.get("type").and_then(Value::as_str) == Some("RollingUpdate") {
                let ru = ensure(us, "rollingUpdate");
                set(ru, "maxUnavailable", json!(1));
                set(ru, "maxSurge", json!(0));
            }
            template(spec);
        }
        "Job" => {
            let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).map(String::from);
            let name = obj.pointer("/metadata/name").and_then(Value::as_str).map(String::from);
            job_spec(ensure(obj, "spec"), uid.as_deref(), name.as_deref());
        }
        "CronJob" => {
            let spec = ensure(obj, "spec");
            set(spec, "concurrencyPolicy", json!("Allow"));
            set(spec, "suspend", json!(false));
            set(spec, "successfulJobsHistoryLimit", json!(3));
            set(spec, "failedJobsHistoryLimit", json!(1));
            if let Some(js) = spec.pointer_mut("/jobTemplate/spec") {
                job_spec(js, None, None);
            }
        }
        "Service" => service(obj),
        "Secret" => secret(obj),
        "Namespace" => {
            set(ensure(obj, "spec"), "finalizers", json!(["kubernetes"]));
            set(ensure(obj, "status"), "phase", json!("Active"));
        }
        _ => {}
    }
    status_zero_values(kind, obj);
}

/// The status every object of `kind` carries from its creation on, as upstream
/// serializes its Go struct: `omitempty` never drops a struct value (so an empty
/// status is `{}`, a Service's `{"loadBalancer": {}}`), and counters without
/// `omitempty` appear as 0. Kinds without a status field get none; Nodes and Pods
/// report their own.
fn status_zero_values(kind: &str, obj: &mut Value) {
    let zeros: &[&str] = match kind {
        "Deployment" | "Job" | "CronJob" => &[],
        "ReplicaSet" | "ReplicationController" => &["replicas"],
        "StatefulSet" => &["replicas", "availableReplicas"],
        "DaemonSet" => &["currentNumberScheduled", "numberMisscheduled", "desiredNumberScheduled", "numberReady"],
        "PodDisruptionBudget" => &["disruptionsAllowed", "currentHealthy", "desiredHealthy", "expectedPods"],
        "Service" => {
            ensure(ensure(obj, "status"), "loadBalancer");
            return;
        }
        _ => return,
    };
    let status = ensure(obj, "status");
    for field in zeros {
        set(status, field, json!(0));
    }
}

/// Upstream's ReplicationController defaults: with template labels, an empty selector
/// and empty object labels become those labels; one replica.
fn replication_controller(obj: &mut Value) {
    let labels = obj.pointer("/spec/template/metadata/labels").filter(|l| l.is_object()).cloned();
    let empty = |v: Option<&Value>| v.is_none_or(|v| v.as_object().is_none_or(Map::is_empty));
    if let Some(labels) = labels {
        if empty(obj.pointer("/spec/selector")) {
            ensure(obj, "spec")["selector"] = labels.clone();
        }
        if empty(obj.pointer("/metadata/labels")) {
            ensure(obj, "metadata")["labels"] = labels;
        }
    }
    let spec = ensure(obj, "spec");
    set(spec, "replicas", json!(1));
    template(spec);
}

/// The object at `key` in `v`, created empty if missing or not an object.
fn ensure<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    let Value::Object(m) = v else { unreachable!("just made an object") };
    let entry = m.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry
}

/// Set `key` if it is absent (or null).
fn set(v: &mut Value, key: &str, default: Value) {
    if let Value::Object(m) = v {
        let e = m.entry(key.to_string()).or_insert(Value::Null);
        if e.is_null() {
            *e = default;
        }
    }
}

fn template(spec: &mut Value) {
    if let Some(ps) = spec.pointer_mut("/template/spec") {
        pod_spec(ps);
    }
}

fn job_spec(spec: &mut Value, uid: Option<&str>, name: Option<&str>) {
    let has = |s: &Value, k: &str| s.get(k).is_some_and(|v| !v.is_null());
    if !has(spec, "completions") && !has(spec, "parallelism") {
        set(spec, "completions", json!(1));
    }
    set(spec, "parallelism", json!(1));
    set(spec, "backoffLimit", json!(6));
    set(spec, "completionMode", json!("NonIndexed"));
    set(spec, "suspend", json!(false));
    set(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    // The job controller's own selector, derived from the Job's uid, as upstream.
    if let (Some(uid), Some(name)) = (uid, name) {
        let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
        if !manual && !has(spec, "selector") {
            spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
            let labels = ensure(ensure(ensure(spec, "template"), "metadata"), "labels");
            for (k, v) in [("batch.kubernetes.io/controller-uid", uid), ("batch.kubernetes.io/job-name", name), ("controller-uid", uid), ("job-name", name)] {
                set(labels, k, json!(v));
            }
        }
    }
    if let Some(ps) = spec.pointer_mut("/template/spec") {
        pod_spec(ps);
    }
}

fn image_pull_policy(image: &str) -> &'static str {
    // The tag is after the last ':' that follows the last '/' (a registry port is not a tag).
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        return "IfNotPresent";
    }
    match last.rsplit_once(':') {
        Some((_, tag)) if tag != "latest" => "IfNotPresent",
        _ => "Always",
    }
}

fn probe(p: &mut Value) {
    set(p, "timeoutSeconds", json!(1));
    set(p, "periodSeconds", json!(10));
    set(p, "successThreshold", json!(1));
    set(p, "failureThreshold", json!(3));
    if let Some(h) = p.get_mut("httpGet").filter(|h| h.is_object()) {
        set(h, "scheme", json!("HTTP"));
        set(h, "path", json!("/"));
    }
}

fn container(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    set(c, "terminationMessagePath", json!("/dev/termination-log"));
    set(c, "terminationMessagePolicy", json!("File"));
    let image = c.get("image").and_then(Value::as_str).unwrap_or("").to_string();
    set(c, "imagePullPolicy", json!(image_pull_policy(&image)));
    set(c, "resources", json!({}));
    for p in c.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        set(p, "protocol", json!("TCP"));
    }
    for name in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(name).filter(|p| p.is_object()) {
            probe(p);
        }
    }
    for e in c.get_mut("env").and_then(Value::as_array_mut).into_iter().flatten() {
        if let Some(f) = e.pointer_mut("/valueFrom/fieldRef").filter(|f| f.is_object()) {
            set(f, "apiVersion", json!("v1"));
        }
    }
}

fn pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    set(spec, "securityContext", json!({}));
    // Upstream defaults every pod spec, Job templates included; Job validation then
    // insists on OnFailure or Never.
    set(spec, "restartPolicy", json!("Always"));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            container(c);
        }
    }
    for v in spec.get_mut("volumes").and_then(Value::as_array_mut).into_iter().flatten() {
        for source in ["configMap", "secret"] {
            if let Some(s) = v.get_mut(source).filter(|s| s.is_object()) {
                set(s, "defaultMode", json!(420));
            }
        }
    }
}

/// Defaults that upstream applies to Pods but not to templates.
fn pod_only(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set(spec, "enableServiceLinks", json!(true));
    set(spec, "preemptionPolicy", json!("PreemptLowerPriority"));
    set(spec, "priority", json!(0));
    let sa = spec.get("serviceAccountName").and_then(Value::as_str).filter(|s| !s.is_empty()).unwrap_or("default").to_string();
    spec["serviceAccountName"] = json!(sa);
    spec["serviceAccount"] = json!(sa);
    // As upstream's DefaultTolerationSeconds admission: survive a flapping node for a while.
    let seconds = DEFAULT_TOLERATION_SECONDS.load(std::sync::atomic::Ordering::Relaxed);
    let tolerations = ensure_array(spec, "tolerations");
    for key in ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"] {
        if !tolerations.iter().any(|t| t.get("key").and_then(Value::as_str) == Some(key) && t.get("effect").and_then(Value::as_str).is_none_or(|e| e == "NoExecute")) {
            tolerations.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": seconds}));
        }
    }
}

/// The API server's `--default-unreachable-toleration-seconds` (upstream's 300 until set).
static DEFAULT_TOLERATION_SECONDS: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(300);

pub fn set_default_toleration_seconds(seconds: i64) {
    DEFAULT_TOLERATION_SECONDS.store(seconds, std::sync::atomic::Ordering::Relaxed);
}

fn ensure_array<'a>(v: &'a mut Value, key: &str) -> &'a mut Vec<Value> {
    if !v.get(key).is_some_and(Value::is_array) {
        v[key] = json!([]);
    }
    match v.get_mut(key) {
        Some(Value::Array(a)) => a,
        _ => unreachable!("just made an array"),
    }
}

/// Upstream's QoS classes: Guaranteed when every container sets equal cpu and
/// memory requests and limits, BestEffort when none sets any, else Burstable.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"].iter().flat_map(|l| spec.get(*l).and_then(Value::as_array).into_iter().flatten()).collect();
    let mut any = false;
    let mut guaranteed = !containers.is_empty();
    for c in containers {
        let req = c.pointer("/resources/requests").and_then(Value::as_object);
        let lim = c.pointer("/resources/limits").and_then(Value::as_object);
        if req.is_some_and(|m| !m.is_empty()) || lim.is_some_and(|m| !m.is_empty()) {
            any = true;
        }
        for r in ["cpu", "memory"] {
            let l = lim.and_then(|m| m.get(r));
            // A request defaults to its limit.
            let q = req.and_then(|m| m.get(r)).or(l);
            if l.is_none() || q != l {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn service(obj: &mut Value) {
    let spec = ensure(obj, "spec");
    set(spec, "type", json!("ClusterIP"));
    set(spec, "sessionAffinity", json!("None"));
    let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    if ty != "ExternalName" {
        set(spec, "ipFamilies", json!(["IPv4"]));
        set(spec, "ipFamilyPolicy", json!("SingleStack"));
        set(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "NodePort" || ty == "LoadBalancer" {
        set(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    for p in spec.get_mut("ports").and_then(Value::as_array_mut).into_iter().flatten() {
        set(p, "protocol", json!("TCP"));
        if let Some(port) = p.get("port").cloned() {
            set(p, "targetPort", port);
        }
    }
}

fn secret(obj: &mut Value) {
    set(obj, "type", json!("Opaque"));
    // stringData is write-only: it lands base64-encoded in data, overriding same keys.
    if let Some(Value::Object(sd)) = obj.as_object_mut().and_then(|m| m.remove("stringData")) {
        let data = ensure(obj, "data");
        for (k, v) in sd {
            if let Some(s) = v.as_str() {
                data[k] = json!(base64::engine::general_purpose::STANDARD.encode(s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_deployment_gets_upstream_defaults() {
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "reg:5000/img", "ports": [{"containerPort": 80}]}]}}}});
        apply_defaults("Deployment", &mut d);
        let spec = &d["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["strategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}));
        let c = &spec["template"]["spec"]["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always", "no tag means latest");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(spec["template"]["spec"]["restartPolicy"], "Always");
        let again = {
            let mut x = d.clone();
            apply_defaults("Deployment", &mut x);
            x
        };
        assert_eq!(again, d, "idempotent");
    }

    #[test]
    fn replication_controllers_take_selector_and_labels_from_the_template() {
        let mut rc = json!({"metadata": {"name": "r"}, "spec": {"template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i:1"}]}}}});
        apply_defaults("ReplicationController", &mut rc);
        assert_eq!(rc["spec"]["selector"], json!({"app": "web"}));
        assert_eq!(rc["metadata"]["labels"], json!({"app": "web"}));
        assert_eq!(rc["spec"]["replicas"], 1);
        assert_eq!(rc["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut again = rc.clone();
        apply_defaults("ReplicationController", &mut again);
        assert_eq!(again, rc, "idempotent");
        // A selector or labels of its own are kept.
        let mut own = json!({"metadata": {"labels": {"mine": "x"}}, "spec": {"replicas": 0, "selector": {"app": "web"}, "template": {"metadata": {"labels": {"app": "web", "v": "2"}}}}});
        apply_defaults("ReplicationController", &mut own);
        assert_eq!((&own["spec"]["selector"], &own["metadata"]["labels"], &own["spec"]["replicas"]), (&json!({"app": "web"}), &json!({"mine": "x"}), &json!(0)));
    }

    #[test]
    fn recreate_strategy_gets_no_rolling_update() {
        let mut d = json!({"spec": {"strategy": {"type": "Recreate"}}});
        apply_defaults("Deployment", &mut d);
        assert_eq!(d["spec"]["strategy"], json!({"type": "Recreate"}));
    }

    #[test]
    fn pods_get_status_qos_and_tolerations() {
        let mut p = json!({"spec": {"containers": [{"name": "c", "image": "i:1", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}});
        apply_defaults("Pod", &mut p);
        assert_eq!(p["status"], json!({"phase": "Pending", "qosClass": "Guaranteed"}));
        assert_eq!(p["spec"]["serviceAccountName"], "default");
        assert_eq!(p["spec"]["tolerations"].as_array().unwrap().len(), 2);
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
        let mut again = p.clone();
        apply_defaults("Pod", &mut again);
        assert_eq!(again, p);
    }

    #[test]
    fn kinds_with_a_status_get_its_empty_form() {
        let empty = |kind: &str| {
            let mut o = json!({"metadata": {"name": "x"}, "spec": {}});
            apply_defaults(kind, &mut o);
            o.get("status").cloned()
        };
        for kind in ["Deployment", "Job", "CronJob"] {
            assert_eq!(empty(kind), Some(json!({})), "{kind}");
        }
        assert_eq!(empty("Service"), Some(json!({"loadBalancer": {}})));
        assert_eq!(empty("ReplicaSet"), Some(json!({"replicas": 0})));
        assert_eq!(empty("ReplicationController"), Some(json!({"replicas": 0})));
        assert_eq!(empty("StatefulSet"), Some(json!({"replicas": 0, "availableReplicas": 0})));
        assert_eq!(empty("DaemonSet"), Some(json!({"currentNumberScheduled": 0, "numberMisscheduled": 0, "desiredNumberScheduled": 0, "numberReady": 0})));
        assert_eq!(empty("PodDisruptionBudget"), Some(json!({"disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0, "expectedPods": 0})));
        for kind in ["ConfigMap", "Secret", "ServiceAccount", "Endpoints", "EndpointSlice", "Event", "Lease", "ControllerRevision", "RuntimeClass", "Node"] {
            assert_eq!(empty(kind), None, "{kind} has no status");
        }
        // What a status writer sent is kept; only the missing zero values are added.
        let mut rs = json!({"spec": {}, "status": {"readyReplicas": 2, "replicas": 3}});
        apply_defaults("ReplicaSet", &mut rs);
        assert_eq!(rs["status"], json!({"readyReplicas": 2, "replicas": 3}));
        let mut svc = json!({"spec": {}, "status": {"loadBalancer": {"ingress": [{"ip": "127.0.0.9"}]}}});
        apply_defaults("Service", &mut svc);
        assert_eq!(svc["status"]["loadBalancer"]["ingress"][0]["ip"], "127.0.0.9");
    }

    #[test]
    fn services_jobs_secrets() {
        let mut s = json!({"spec": {"ports": [{"port": 80}]}});
        apply_defaults("Service", &mut s);
        assert_eq!(s["spec"]["ports"][0], json!({"port": 80, "protocol": "TCP", "targetPort": 80}));
        assert_eq!(s["spec"]["type"], "ClusterIP");
        let mut j = json!({"metadata": {"name": "j", "uid": "u1"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        apply_defaults("Job", &mut j);
        assert_eq!((j["spec"]["completions"].as_i64(), j["spec"]["parallelism"].as_i64(), j["spec"]["backoffLimit"].as_i64()), (Some(1), Some(1), Some(6)));
        assert_eq!(j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "u1");
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j");
        assert_eq!(j["spec"]["template"]["spec"]["restartPolicy"], "Never");
        let mut sec = json!({"stringData": {"a": "hi"}, "data": {"b": "eA=="}});
        apply_defaults("Secret", &mut sec);
        assert_eq!(sec, json!({"type": "Opaque", "data": {"a": "aGk=", "b": "eA=="}}));
    }
}
