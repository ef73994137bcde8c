//! Server-side Table printing: the columns `kubectl get` shows, as upstream's
//! printers define them (priority 1 columns appear only with `-o wide`).

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

/// Upstream's `duration.HumanDuration`, used for AGE and similar columns.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds();
    if secs < -1 {
        return "<invalid>".into();
    }
    if secs < 0 {
        return "0s".into();
    }
    if secs < 120 {
        return format!("{secs}s");
    }
    let mins = secs / 60;
    if mins < 10 {
        let s = secs % 60;
        return if s == 0 { format!("{mins}m") } else { format!("{mins}m{s}s") };
    }
    if mins < 180 {
        return format!("{mins}m");
    }
    let hours = secs / 3600;
    if hours < 8 {
        let m = mins % 60;
        return if m == 0 { format!("{hours}h") } else { format!("{hours}h{m}m") };
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        let (d, h) = (hours / 24, hours % 24);
        return if h == 0 { format!("{d}d") } else { format!("{d}d{h}h") };
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    let years = hours / (24 * 365);
    if hours < 24 * 365 * 8 {
        let dy = (hours / 24) % 365;
        return if dy == 0 { format!("{years}y") } else { format!("{years}y{dy}d") };
    }
    format!("{years}y")
}

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

/// Column definitions for a kind.
pub fn column_definitions(kind: &str) -> Vec<Value> {
    let s = |n: &str| col(n, "string", 0);
    let i = |n: &str| col(n, "integer", 0);
    let w = |n: &str| col(n, "string", 1);
    match kind {
        "Pod" => vec![s("Name"), s("Ready"), s("Status"), s("Restarts"), s("Age"), w("IP"), w("Node"), w("Nominated Node"), w("Readiness Gates")],
        "Deployment" => vec![s("Name"), s("Ready"), i("Up-to-date"), i("Available"), s("Age"), w("Containers"), w("Images"), w("Selector")],
        "ReplicaSet" | "ReplicationController" => vec![s("Name"), i("Desired"), i("Current"), i("Ready"), s("Age"), w("Containers"), w("Images"), w("Selector")],
        "StatefulSet" => vec![s("Name"), s("Ready"), s("Age"), w("Containers"), w("Images")],
        "DaemonSet" => vec![s("Name"), i("Desired"), i("Current"), i("Ready"), i("Up-to-date"), i("Available"), s("Node Selector"), s("Age"), w("Containers"), w("Images"), w("Selector")],
        "Job" => vec![s("Name"), s("Status"), s("Completions"), s("Duration"), s("Age"), w("Containers"), w("Images"), w("Selector")],
        "CronJob" => vec![s("Name"), s("Schedule"), s("Timezone"), s("Suspend"), i("Active"), s("Last Schedule"), s("Age"), w("Containers"), w("Images"), w("Selector")],
        "Service" => vec![s("Name"), s("Type"), s("Cluster-IP"), s("External-IP"), s("Port(s)"), s("Age"), w("Selector")],
        "Endpoints" => vec![s("Name"), s("Endpoints"), s("Age")],
        "EndpointSlice" => vec![s("Name"), s("AddressType"), s("Ports"), s("Endpoints"), s("Age")],
        "ConfigMap" => vec![s("Name"), i("Data"), s("Age")],
        "Secret" => vec![s("Name"), s("Type"), i("Data"), s("Age")],
        "Namespace" => vec![s("Name"), s("Status"), s("Age")],
        "Node" => vec![s("Name"), s("Status"), s("Roles"), s("Age"), s("Version"), w("Internal-IP"), w("External-IP"), w("OS-Image"), w("Kernel-Version"), w("Container-Runtime")],
        "Event" => vec![s("Last Seen"), s("Type"), s("Reason"), s("Object"), w("Subobject"), w("Source"), s("Message"), w("First Seen"), col("Count", "integer", 1), w("Name")],
        "ServiceAccount" => vec![s("Name"), i("Secrets"), s("Age")],
        "Lease" => vec![s("Name"), s("Holder"), s("Age")],
        "ControllerRevision" => vec![s("Name"), s("Controller"), i("Revision"), s("Age")],
        "PodDisruptionBudget" => vec![s("Name"), s("Min Available"), s("Max Unavailable"), i("Allowed Disruptions"), s("Age")],
        "RuntimeClass" => vec![s("Name"), s("Handler"), s("Age")],
        _ => vec![s("Name"), s("Age")],
    }
}

fn text<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn int(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn or_none(s: String) -> String {
    if s.is_empty() { "<none>".into() } else { s }
}

fn since(ts: &str, now: DateTime<Utc>) -> String {
    match DateTime::parse_from_rfc3339(ts) {
        Ok(t) => human_duration(now - t.with_timezone(&Utc)),
        Err(_) => "<unknown>".into(),
    }
}

fn age(obj: &Value, now: DateTime<Utc>) -> String {
    since(text(obj, "/metadata/creationTimestamp"), now)
}

fn arr<'a>(obj: &'a Value, ptr: &str) -> &'a [Value] {
    obj.pointer(ptr).and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// CONTAINERS, IMAGES of a pod template.
fn containers_images(spec: &Value) -> (String, String) {
    let cs = arr(spec, "/containers");
    let names: Vec<&str> = cs.iter().map(|c| text(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| text(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_text(sel: Option<&Value>) -> String {
    match sel {
        None => "<none>".into(),
        Some(s) => match super::selectors::LabelSelector::from_object(s) {
            Ok(l) if l.is_empty() => "<none>".into(),
            Ok(l) => l.to_string(),
            Err(_) => "<error>".into(),
        },
    }
}

fn map_text(m: Option<&Value>) -> String {
    let Some(m) = m.and_then(Value::as_object) else { return "<none>".into() };
    if m.is_empty() {
        return "<none>".into();
    }
    m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or(""))).collect::<Vec<_>>().join(",")
}

/// The STATUS column of a pod, following upstream's printPod.
fn pod_status(pod: &Value) -> (String, i64, usize, usize) {
    let mut reason = text(pod, "/status/reason").to_string();
    if reason.is_empty() {
        reason = text(pod, "/status/phase").to_string();
    }
    let mut restarts = 0;
    let total = arr(pod, "/spec/containers").len();
    let mut ready = 0;
    let mut initializing = false;
    let init_statuses = arr(pod, "/status/initContainerStatuses");
    let init_total = arr(pod, "/spec/initContainers").len();
    for (i, c) in init_statuses.iter().enumerate() {
        restarts += int(c, "/restartCount");
        let term_code = c.pointer("/state/terminated/exitCode").and_then(Value::as_i64);
        if term_code == Some(0) {
            continue;
        }
        initializing = true;
        if let Some(t) = c.pointer("/state/terminated") {
            let r = text(t, "/reason");
            reason = if !r.is_empty() {
                format!("Init:{r}")
            } else if let Some(sig) = t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                format!("Init:Signal:{sig}")
            } else {
                format!("Init:ExitCode:{}", term_code.unwrap_or(0))
            };
        } else {
            let w = text(c, "/state/waiting/reason");
            reason = if !w.is_empty() && w != "PodInitializing" { format!("Init:{w}") } else { format!("Init:{i}/{init_total}") };
        }
        break;
    }
    if !initializing {
        let mut has_running = false;
        for c in arr(pod, "/status/containerStatuses").iter().rev() {
            restarts += int(c, "/restartCount");
            let w = text(c, "/state/waiting/reason");
            if !w.is_empty() {
                reason = w.to_string();
            } else if let Some(t) = c.pointer("/state/terminated") {
                let r = text(t, "/reason");
                reason = if !r.is_empty() {
                    r.to_string()
                } else if let Some(sig) = t.get("signal").and_then(Value::as_i64).filter(|s| *s != 0) {
                    format!("Signal:{sig}")
                } else {
                    format!("ExitCode:{}", int(t, "/exitCode"))
                };
            } else if c.get("ready").and_then(Value::as_bool) == Some(true) && c.pointer("/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            let ready_cond = arr(pod, "/status/conditions").iter().any(|c| c["type"] == "Ready" && c["status"] == "True");
            reason = if ready_cond { "Running".into() } else { "NotReady".into() };
        }
    }
    if pod.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if text(pod, "/status/reason") == "NodeLost" { "Unknown".into() } else { "Terminating".into() };
    }
    (reason, restarts, ready, total)
}

/// The latest container termination, for RESTARTS' "(5m ago)".
fn last_restart(pod: &Value) -> Option<DateTime<Utc>> {
    arr(pod, "/status/containerStatuses")
        .iter()
        .chain(arr(pod, "/status/initContainerStatuses"))
        .filter_map(|c| c.pointer("/lastState/terminated/finishedAt").and_then(Value::as_str))
        .filter_map(|t| DateTime::parse_from_rfc3339(t).ok().map(|t| t.with_timezone(&Utc)))
        .max()
}

fn service_ports(svc: &Value) -> String {
    let ports: Vec<String> = arr(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
            match p.get("nodePort").and_then(Value::as_i64) {
                Some(np) => format!("{}:{np}/{proto}", int(p, "/port")),
                None => format!("{}/{proto}", int(p, "/port")),
            }
        })
        .collect();
    or_none(ports.join(","))
}

fn service_external_ip(svc: &Value) -> String {
    let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let external: Vec<&str> = arr(svc, "/spec/externalIPs").iter().filter_map(Value::as_str).collect();
    match ty {
        "ExternalName" => text(svc, "/spec/externalName").to_string(),
        "LoadBalancer" => {
            let mut ips: Vec<String> = arr(svc, "/status/loadBalancer/ingress")
                .iter()
                .map(|i| i.get("ip").or(i.get("hostname")).and_then(Value::as_str).unwrap_or("").to_string())
                .filter(|s| !s.is_empty())
                .collect();
            ips.extend(external.iter().map(|s| s.to_string()));
            if ips.is_empty() { "<pending>".into() } else { ips.join(",") }
        }
        _ => or_none(external.join(",")),
    }
}

fn endpoints_text(ep: &Value) -> String {
    let mut list = Vec::new();
    for subset in arr(ep, "/subsets") {
        for addr in arr(subset, "/addresses") {
            let ports = arr(subset, "/ports");
            if ports.is_empty() {
                list.push(text(addr, "/ip").to_string());
            }
            for p in ports {
                list.push(format!("{}:{}", text(addr, "/ip"), int(p, "/port")));
            }
        }
    }
    abbreviate(list)
}

/// Upstream shows three entries and `+ N more...`.
fn abbreviate(list: Vec<String>) -> String {
    if list.is_empty() {
        return "<none>".into();
    }
    if list.len() > 3 {
        return format!("{} + {} more...", list[..3].join(","), list.len() - 3);
    }
    list.join(",")
}

fn job_status(job: &Value) -> &'static str {
    let conds = arr(job, "/status/conditions");
    let has = |t: &str| conds.iter().any(|c| c["type"] == t && c["status"] == "True");
    if has("Complete") {
        "Complete"
    } else if has("Failed") {
        "Failed"
    } else if job.pointer("/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has("FailureTarget") {
        "FailureTarget"
    } else if has("SuccessCriteriaMet") {
        "SuccessCriteriaMet"
    } else if has("Suspended") {
        "Suspended"
    } else {
        "Running"
    }
}

fn job_completions(job: &Value) -> String {
    let succeeded = int(job, "/status/succeeded");
    match job.pointer("/spec/completions").and_then(Value::as_i64) {
        Some(c) => format!("{succeeded}/{c}"),
        None => {
            let parallelism = job.pointer("/spec/parallelism").and_then(Value::as_i64).unwrap_or(0);
            if parallelism > 1 { format!("{succeeded}/1 of {parallelism}") } else { format!("{succeeded}/1") }
        }
    }
}

fn job_duration(job: &Value, now: DateTime<Utc>) -> String {
    let parse = |p: &str| DateTime::parse_from_rfc3339(text(job, p)).ok().map(|t| t.with_timezone(&Utc));
    match (parse("/status/startTime"), parse("/status/completionTime")) {
        (Some(s), Some(e)) => human_duration(e - s),
        (Some(s), None) => human_duration(now - s),
        _ => String::new(),
    }
}

fn node_status(node: &Value) -> String {
    let ready = arr(node, "/status/conditions").iter().find(|c| c["type"] == "Ready");
    let mut s = match ready.and_then(|c| c["status"].as_str()) {
        Some("True") => "Ready".to_string(),
        Some("False") => "NotReady".to_string(),
        _ => "Unknown".to_string(),
    };
    if node.pointer("/spec/unschedulable").and_then(Value::as_bool) == Some(true) {
        s.push_str(",SchedulingDisabled");
    }
    s
}

fn node_roles(node: &Value) -> String {
    let mut roles: Vec<String> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| m.keys().filter_map(|k| k.strip_prefix("node-role.kubernetes.io/")).filter(|r| !r.is_empty()).map(String::from).collect())
        .unwrap_or_default();
    roles.sort();
    or_none(roles.join(","))
}

fn node_address(node: &Value, ty: &str) -> String {
    or_none(arr(node, "/status/addresses").iter().find(|a| a["type"] == ty).map(|a| text(a, "/address").to_string()).unwrap_or_default())
}

/// The cells of one row, in column order.
pub fn row_cells(kind: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let name = json!(text(obj, "/metadata/name"));
    let age = json!(age(obj, now));
    match kind {
        "Pod" => {
            let (status, restarts, ready, total) = pod_status(obj);
            let restarts_text = match last_restart(obj) {
                Some(t) if restarts > 0 => format!("{restarts} ({} ago)", human_duration(now - t)),
                _ => restarts.to_string(),
            };
            let gates = arr(obj, "/spec/readinessGates");
            let gates_text = if gates.is_empty() {
                "<none>".to_string()
            } else {
                let conds = arr(obj, "/status/conditions");
                let ok = gates.iter().filter(|g| conds.iter().any(|c| c["type"] == g["conditionType"] && c["status"] == "True")).count();
                format!("{ok}/{}", gates.len())
            };
            vec![
                name, json!(format!("{ready}/{total}")), json!(status), json!(restarts_text), age,
                json!(or_none(text(obj, "/status/podIP").into())), json!(or_none(text(obj, "/spec/nodeName").into())),
                json!(or_none(text(obj, "/status/nominatedNodeName").into())), json!(gates_text),
            ]
        }
        "Deployment" | "ReplicaSet" | "ReplicationController" | "StatefulSet" | "DaemonSet" => {
            let (cs, images) = containers_images(obj.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            // A ReplicationController's selector is a plain map of labels.
            let sel = json!(if kind == "ReplicationController" { map_text(obj.pointer("/spec/selector")) } else { selector_text(obj.pointer("/spec/selector")) });
            let ready = int(obj, "/status/readyReplicas");
            match kind {
                "Deployment" => vec![
                    name, json!(format!("{ready}/{}", int(obj, "/spec/replicas"))), json!(int(obj, "/status/updatedReplicas")),
                    json!(int(obj, "/status/availableReplicas")), age, json!(cs), json!(images), sel,
                ],
                "ReplicaSet" | "ReplicationController" => vec![name, json!(int(obj, "/spec/replicas")), json!(int(obj, "/status/replicas")), json!(ready), age, json!(cs), json!(images), sel],
                "StatefulSet" => vec![name, json!(format!("{ready}/{}", int(obj, "/spec/replicas"))), age, json!(cs), json!(images)],
                _ => vec![
                    name, json!(int(obj, "/status/desiredNumberScheduled")), json!(int(obj, "/status/currentNumberScheduled")),
                    json!(int(obj, "/status/numberReady")), json!(int(obj, "/status/updatedNumberScheduled")),
                    json!(int(obj, "/status/numberAvailable")), json!(map_text(obj.pointer("/spec/template/spec/nodeSelector"))), age,
                    json!(cs), json!(images), sel,
                ],
            }
        }
        "Job" => {
            let (cs, images) = containers_images(obj.pointer("/spec/template/spec").unwrap_or(&Value::Null));
            vec![name, json!(job_status(obj)), json!(job_completions(obj)), json!(job_duration(obj, now)), age, json!(cs), json!(images), json!(selector_text(obj.pointer("/spec/selector")))]
        }
        "CronJob" => {
            let (cs, images) = containers_images(obj.pointer("/spec/jobTemplate/spec/template/spec").unwrap_or(&Value::Null));
            let last = obj.pointer("/status/lastScheduleTime").and_then(Value::as_str).map(|t| since(t, now)).unwrap_or_else(|| "<none>".into());
            vec![
                name, json!(text(obj, "/spec/schedule")), json!(or_none(text(obj, "/spec/timeZone").into())),
                json!(obj.pointer("/spec/suspend").and_then(Value::as_bool).unwrap_or(false).to_string().replace("true", "True").replace("false", "False")),
                json!(arr(obj, "/status/active").len()), json!(last), age, json!(cs), json!(images),
                json!(selector_text(obj.pointer("/spec/jobTemplate/spec/selector"))),
            ]
        }
        "Service" => vec![
            name, json!(obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP")),
            json!(or_none(text(obj, "/spec/clusterIP").into())), json!(service_external_ip(obj)), json!(service_ports(obj)), age,
            json!(map_text(obj.pointer("/spec/selector"))),
        ],
        "Endpoints" => vec![name, json!(endpoints_text(obj)), age],
        "EndpointSlice" => {
            let ports: Vec<String> = arr(obj, "/ports").iter().map(|p| int(p, "/port").to_string()).collect();
            let addrs: Vec<String> = arr(obj, "/endpoints").iter().flat_map(|e| arr(e, "/addresses").iter().filter_map(Value::as_str).map(String::from)).collect();
            vec![name, json!(text(obj, "/addressType")), json!(if ports.is_empty() { "<unset>".into() } else { ports.join(",") }), json!(abbreviate(addrs)), age]
        }
        "ConfigMap" => {
            let n = obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len()) + obj.get("binaryData").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(n), age]
        }
        "Secret" => {
            let n = obj.get("data").and_then(Value::as_object).map_or(0, |m| m.len());
            vec![name, json!(text(obj, "/type")), json!(n), age]
        }
        "Namespace" => vec![name, json!(text(obj, "/status/phase")), age],
        "Node" => vec![
            name, json!(node_status(obj)), json!(node_roles(obj)), age, json!(text(obj, "/status/nodeInfo/kubeletVersion")),
            json!(node_address(obj, "InternalIP")), json!(node_address(obj, "ExternalIP")), json!(or_none(text(obj, "/status/nodeInfo/osImage").into())),
            json!(or_none(text(obj, "/status/nodeInfo/kernelVersion").into())), json!(or_none(text(obj, "/status/nodeInfo/containerRuntimeVersion").into())),
        ],
        "Event" => {
            let last = [text(obj, "/lastTimestamp"), text(obj, "/eventTime"), text(obj, "/metadata/creationTimestamp")].into_iter().find(|t| !t.is_empty()).unwrap_or("");
            let first = [text(obj, "/firstTimestamp"), text(obj, "/eventTime"), text(obj, "/metadata/creationTimestamp")].into_iter().find(|t| !t.is_empty()).unwrap_or("");
            let object = format!("{}/{}", text(obj, "/involvedObject/kind").to_lowercase(), text(obj, "/involvedObject/name"));
            let source = [text(obj, "/source/component"), text(obj, "/reportingComponent")].into_iter().find(|t| !t.is_empty()).unwrap_or("");
            vec![
                json!(since(last, now)), json!(text(obj, "/type")), json!(text(obj, "/reason")), json!(object),
                json!(text(obj, "/involvedObject/fieldPath")), json!(source), json!(text(obj, "/message").trim()),
                json!(since(first, now)), json!(obj.get("count").and_then(Value::as_i64).unwrap_or(1)), name,
            ]
        }
        "ServiceAccount" => vec![name, json!(arr(obj, "/secrets").len()), age],
        "Lease" => vec![name, json!(text(obj, "/spec/holderIdentity")), age],
        "ControllerRevision" => {
            let owner = obj.pointer("/metadata/ownerReferences").and_then(Value::as_array).and_then(|o| o.iter().find(|r| r["controller"] == true));
            let controller = owner.map(|o| format!("{}/{}", text(o, "/kind").to_lowercase() + "." + text(o, "/apiVersion").split('/').next().unwrap_or_default(), text(o, "/name"))).unwrap_or_else(|| "<none>".into());
            vec![name, json!(controller), json!(int(obj, "/revision")), age]
        }
        "PodDisruptionBudget" => {
            let bound = |p: &str| match obj.pointer(p) {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => "N/A".into(),
            };
            vec![name, json!(bound("/spec/minAvailable")), json!(bound("/spec/maxUnavailable")), json!(int(obj, "/status/disruptionsAllowed")), age]
        }
        "RuntimeClass" => vec![name, json!(text(obj, "/handler")), age],
        _ => vec![name, age],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn human_durations_match_upstream() {
        let d = chrono::Duration::seconds;
        for (secs, want) in [(-5, "<invalid>"), (0, "0s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600, "3h"), (3 * 3600 + 120, "3h2m"), (10 * 3600, "10h"), (50 * 3600, "2d2h"), (10 * 86400, "10d"), (3 * 365 * 86400, "3y")] {
            assert_eq!(human_duration(d(secs)), want, "{secs}");
        }
    }

    #[test]
    fn pod_rows() {
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"containers": [{"name": "a"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "127.1.0.5", "containerStatuses": [{"name": "a", "ready": true, "restartCount": 2, "state": {"running": {}},
            "lastState": {"terminated": {"finishedAt": "2026-01-01T00:55:00Z"}}}]}});
        let cells = row_cells("Pod", &pod, now());
        assert_eq!(cells[..5], [json!("p"), json!("1/1"), json!("Running"), json!("2 (5m ago)"), json!("60m")]);
        assert_eq!(cells[5], "127.1.0.5");
        assert_eq!(cells.len(), column_definitions("Pod").len());
        let crash = json!({"metadata": {"name": "c"}, "spec": {"containers": [{"name": "a"}]}, "status": {"phase": "Running", "containerStatuses": [{"name": "a", "ready": false, "restartCount": 4, "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}});
        assert_eq!(row_cells("Pod", &crash, now())[2], "CrashLoopBackOff");
        let gone = json!({"metadata": {"name": "t", "deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}, "status": {"phase": "Running"}});
        assert_eq!(row_cells("Pod", &gone, now())[2], "Terminating");
        assert_eq!(row_cells("Pod", &json!({}), now())[1], "0/0");
    }

    #[test]
    fn workload_service_secret_and_node_rows() {
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "x"}}, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        let cells = row_cells("Deployment", &d, now());
        assert_eq!(cells[1..4], [json!("2/3"), json!(3), json!(2)]);
        assert_eq!(cells[7], "app=x");
        let svc = json!({"metadata": {"name": "s"}, "spec": {"type": "NodePort", "clusterIP": "127.96.0.10", "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}});
        assert_eq!(row_cells("Service", &svc, now())[1..5], [json!("NodePort"), json!("127.96.0.10"), json!("<none>"), json!("80:30080/TCP")]);
        let lb = json!({"metadata": {"name": "s"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}});
        assert_eq!(row_cells("Service", &lb, now())[3], "<pending>");
        let rc = json!({"metadata": {"name": "r"}, "spec": {"replicas": 2, "selector": {"app": "x", "tier": "web"}, "template": {"spec": {"containers": [{"name": "c", "image": "i:1"}]}}}, "status": {"replicas": 2, "readyReplicas": 1}});
        let cells = row_cells("ReplicationController", &rc, now());
        assert_eq!(cells, [json!("r"), json!(2), json!(2), json!(1), json!("<unknown>"), json!("c"), json!("i:1"), json!("app=x,tier=web")]);
        assert_eq!(cells.len(), column_definitions("ReplicationController").len());
        let secret = json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "", "b": ""}});
        assert_eq!(row_cells("Secret", &secret, now())[1..3], [json!("Opaque"), json!(2)]);
        let node = json!({"metadata": {"name": "n", "labels": {"node-role.kubernetes.io/control-plane": ""}}, "spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let cells = row_cells("Node", &node, now());
        assert_eq!(cells[1..3], [json!("Ready,SchedulingDisabled"), json!("control-plane")]);
        for kind in ["Job", "CronJob", "DaemonSet", "Event", "Endpoints", "EndpointSlice", "Lease", "Widget"] {
            assert_eq!(row_cells(kind, &json!({}), now()).len(), column_definitions(kind).len(), "{kind}");
        }
    }
}
