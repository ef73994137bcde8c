//! Validation as upstream does it for the fields users hit most, with upstream's
//! wording so errors read the same as on any Kubernetes cluster.
//!
//! Two layers: [`check_schema`] decodes into the typed k8s-openapi struct (wrong
//! types, unknown fields), then [`validate`] applies the semantic rules.

use super::selectors::LabelSelector;
use super::status::FieldError;
use serde_json::{json, Value};

const DNS1123_SUBDOMAIN: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1035_LABEL: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const LABEL_VALUE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const CONFIG_KEY: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
const IMMUTABLE: &str = "field is immutable";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label(value) {
        errs.push(DNS1123_LABEL.to_string());
    }
    errs
}

pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if value.is_empty() || !value.split('.').all(is_label) {
        errs.push(DNS1123_SUBDOMAIN.to_string());
    }
    errs
}

fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_label(value) || !value.as_bytes()[0].is_ascii_lowercase() {
        errs.push(DNS1035_LABEL.to_string());
    }
    errs
}

fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && b.iter().all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(c)) && b[0].is_ascii_alphanumeric() && b[b.len() - 1].is_ascii_alphanumeric()
}

fn qualified_name_errors(key: &str) -> Vec<String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let mut errs = Vec::new();
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(dns1123_subdomain_errors(p).into_iter().map(|e| format!("prefix part {e}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > 63 {
            errs.push("name part must be no more than 63 characters".to_string());
        }
        if !is_qualified_part(name) {
            errs.push(QUALIFIED_NAME.to_string());
        }
    }
    errs
}

fn label_value_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !v.is_empty() && !is_qualified_part(v) {
        errs.push(LABEL_VALUE.to_string());
    }
    errs
}

/// IANA service names: what container and service port names must be.
fn iana_svc_name_errors(v: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if v.len() > 15 {
        errs.push("must be no more than 15 characters".into());
    }
    if !v.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
        errs.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if v.contains("--") {
        errs.push("must not contain consecutive hyphens".into());
    }
    if !v.bytes().any(|c| c.is_ascii_lowercase()) {
        errs.push("must contain at least one letter (a-z)".into());
    }
    if v.starts_with('-') || v.ends_with('-') {
        errs.push("must not begin or end with a hyphen".into());
    }
    errs
}

/// Go's map printing, for messages that quote a label map.
fn go_map(v: Option<&Value>) -> String {
    let pairs: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| format!("{k:?}:{}", serde_json::to_string(v).unwrap_or_default())).collect())
        .unwrap_or_default();
    format!("map[string]string{{{}}}", pairs.join(", "))
}

/// Collects errors while walking an object.
struct V {
    errs: Vec<FieldError>,
}

impl V {
    fn push(&mut self, e: FieldError) {
        self.errs.push(e);
    }

    fn invalid_each(&mut self, field: &str, value: &str, msgs: Vec<String>) {
        for m in msgs {
            self.push(FieldError::invalid(field, value, m));
        }
    }

    fn non_negative(&mut self, obj: &Value, ptr: &str, field: &str) {
        if let Some(n) = obj.pointer(ptr).and_then(Value::as_i64) {
            if n < 0 {
                self.push(FieldError::invalid(field, n, "must be greater than or equal to 0"));
            }
        }
    }

    fn metadata(&mut self, kind: &str, obj: &Value) {
        let meta = obj.get("metadata").unwrap_or(&Value::Null);
        let name = meta.get("name").and_then(Value::as_str).unwrap_or("");
        let generate = meta.get("generateName").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            if generate.is_empty() {
                self.push(FieldError::required("metadata.name", "name or generateName is required"));
            }
        } else {
            let msgs = match kind {
                "Namespace" => dns1123_label_errors(name),
                "Service" => dns1035_label_errors(name),
                _ => dns1123_subdomain_errors(name),
            };
            self.invalid_each("metadata.name", name, msgs);
        }
        if let Some(labels) = meta.get("labels").and_then(Value::as_object) {
            for (k, v) in labels {
                self.invalid_each("metadata.labels", k, qualified_name_errors(k));
                if let Some(s) = v.as_str() {
                    self.invalid_each("metadata.labels", s, label_value_errors(s));
                }
            }
        }
        if let Some(ann) = meta.get("annotations").and_then(Value::as_object) {
            let mut total = 0;
            for (k, v) in ann {
                self.invalid_each("metadata.annotations", k, qualified_name_errors(&k.to_lowercase()));
                total += k.len() + v.as_str().map_or(0, str::len);
            }
            if total > 256 * 1024 {
                self.push(FieldError::too_long("metadata.annotations", 256 * 1024));
            }
        }
    }

    fn pod_spec(&mut self, spec: &Value, path: &str, restart_policies: &[&str]) {
        let containers = spec.get("containers").and_then(Value::as_array);
        if containers.is_none_or(|c| c.is_empty()) {
            self.push(FieldError::required(format!("{path}.containers"), ""));
        }
        let volumes: Vec<&str> = spec.get("volumes").and_then(Value::as_array).into_iter().flatten().filter_map(|v| v.get("name").and_then(Value::as_str)).collect();
        let mut seen_vol = Vec::new();
        for (i, v) in volumes.iter().enumerate() {
            let f = format!("{path}.volumes[{i}].name");
            self.invalid_each(&f, v, dns1123_label_errors(v));
            if seen_vol.contains(v) {
                self.push(FieldError::duplicate(f, *v));
            }
            seen_vol.push(v);
        }
        let mut names: Vec<String> = Vec::new();
        for list in ["initContainers", "containers"] {
            for (i, c) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
                self.container(c, &format!("{path}.{list}[{i}]"), &mut names, &volumes);
            }
        }
        let regular = names.clone();
        for (i, c) in spec.get("ephemeralContainers").and_then(Value::as_array).into_iter().flatten().enumerate() {
            self.ephemeral_container(c, &format!("{path}.ephemeralContainers[{i}]"), &mut names, &regular, &volumes);
        }
        if let Some(rp) = spec.get("restartPolicy").and_then(Value::as_str) {
            if !restart_policies.contains(&rp) {
                self.push(FieldError::not_supported(format!("{path}.restartPolicy"), rp, restart_policies));
            }
        }
        if let Some(dp) = spec.get("dnsPolicy").and_then(Value::as_str) {
            let ok = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
            if !ok.contains(&dp) {
                self.push(FieldError::not_supported(format!("{path}.dnsPolicy"), dp, &ok));
            }
        }
        self.non_negative(spec, "/terminationGracePeriodSeconds", &format!("{path}.terminationGracePeriodSeconds"));
        if let Some(ads) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
            if ads <= 0 {
                self.push(FieldError::invalid(format!("{path}.activeDeadlineSeconds"), ads, "must be greater than or equal to 1"));
            }
        }
    }

    fn container(&mut self, c: &Value, path: &str, names: &mut Vec<String>, volumes: &[&str]) {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            self.push(FieldError::required(format!("{path}.name"), ""));
        } else {
            self.invalid_each(&format!("{path}.name"), name, dns1123_label_errors(name));
            if names.iter().any(|n| n == name) {
                self.push(FieldError::duplicate(format!("{path}.name"), name));
            }
            names.push(name.to_string());
        }
        if c.get("image").and_then(Value::as_str).is_none_or(|i| i.trim().is_empty()) {
            self.push(FieldError::required(format!("{path}.image"), ""));
        }
        let mut port_names = Vec::new();
        for (i, p) in c.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let pp = format!("{path}.ports[{i}]");
            match p.get("containerPort").and_then(Value::as_i64) {
                None => self.push(FieldError::required(format!("{pp}.containerPort"), "")),
                Some(n) if !(1..=65535).contains(&n) => self.push(FieldError::invalid(format!("{pp}.containerPort"), n, "must be between 1 and 65535, inclusive")),
                _ => {}
            }
            if let Some(n) = p.get("hostPort").and_then(Value::as_i64) {
                if !(0..=65535).contains(&n) {
                    self.push(FieldError::invalid(format!("{pp}.hostPort"), n, "must be between 1 and 65535, inclusive"));
                }
            }
            self.protocol(p, &pp);
            if let Some(n) = p.get("name").and_then(Value::as_str) {
                self.invalid_each(&format!("{pp}.name"), n, iana_svc_name_errors(n));
                if port_names.contains(&n) {
                    self.push(FieldError::duplicate(format!("{pp}.name"), n));
                }
                port_names.push(n);
            }
        }
        for (i, e) in c.get("env").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let n = e.get("name").and_then(Value::as_str).unwrap_or("");
            let f = format!("{path}.env[{i}].name");
            if n.is_empty() {
                self.push(FieldError::required(f, ""));
            } else if n.starts_with(|ch: char| ch.is_ascii_digit()) || !n.chars().all(|ch| ch.is_ascii_graphic() && ch != '=') {
                self.push(FieldError::invalid(f, n, "a valid environment variable name must consist only of printable ASCII characters other than '='"));
            }
        }
        let mut mounts = Vec::new();
        for (i, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let mp = format!("{path}.volumeMounts[{i}]");
            let n = m.get("name").and_then(Value::as_str).unwrap_or("");
            if n.is_empty() {
                self.push(FieldError::required(format!("{mp}.name"), ""));
            } else if !volumes.contains(&n) {
                self.push(FieldError::not_found(format!("{mp}.name"), n));
            }
            let at = m.get("mountPath").and_then(Value::as_str).unwrap_or("");
            if at.is_empty() {
                self.push(FieldError::required(format!("{mp}.mountPath"), ""));
            } else if mounts.contains(&at) {
                self.push(FieldError::invalid(format!("{mp}.mountPath"), at, "must be unique"));
            }
            mounts.push(at);
        }
        if let Some(p) = c.get("imagePullPolicy").and_then(Value::as_str) {
            let ok = ["Always", "IfNotPresent", "Never"];
            if !ok.contains(&p) {
                self.push(FieldError::not_supported(format!("{path}.imagePullPolicy"), p, &ok));
            }
        }
        self.resources(c, path);
    }

    /// Upstream's `validateEphemeralContainers`: a container, with a name unique across all
    /// of the pod's, and none of the fields a debug container must not rely on.
    fn ephemeral_container(&mut self, c: &Value, path: &str, names: &mut Vec<String>, regular: &[String], volumes: &[&str]) {
        self.container(c, path, names, volumes);
        if let Some(t) = c.get("targetContainerName").and_then(Value::as_str).filter(|t| !t.is_empty()) {
            if !regular.iter().any(|n| n == t) {
                self.push(FieldError::not_found(format!("{path}.targetContainerName"), t));
            }
        }
        // Go's zero values (an empty struct or list) count as unset.
        let set = |v: &Value| !matches!(v, Value::Null) && v.as_object().is_none_or(|m| !m.is_empty()) && v.as_array().is_none_or(|a| !a.is_empty());
        for f in ["ports", "resources", "resizePolicy", "livenessProbe", "readinessProbe", "startupProbe", "lifecycle", "restartPolicy"] {
            if c.get(f).is_some_and(set) {
                self.push(FieldError::forbidden(format!("{path}.{f}"), "cannot be set for an Ephemeral Container"));
            }
        }
        for (i, m) in c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().enumerate() {
            for f in ["subPath", "subPathExpr"] {
                if m.get(f).and_then(Value::as_str).is_some_and(|s| !s.is_empty()) {
                    self.push(FieldError::forbidden(format!("{path}.volumeMounts[{i}].{f}"), "cannot be set for an Ephemeral Container"));
                }
            }
        }
    }

    /// Upstream's `ValidatePodEphemeralContainersUpdate`: debug containers are only added.
    fn ephemeral_update(&mut self, obj: &Value, old: &Value) {
        let list = |p: &Value| p.pointer("/spec/ephemeralContainers").and_then(Value::as_array).cloned().unwrap_or_default();
        let new = list(obj);
        for was in list(old) {
            let name = was.get("name").and_then(Value::as_str).unwrap_or_default();
            match new.iter().find(|c| c.get("name").and_then(Value::as_str) == Some(name)) {
                None => self.push(FieldError::forbidden("spec.ephemeralContainers", format!("existing ephemeral containers {name:?} may not be removed\n"))),
                Some(now) if *now != was => {
                    self.push(FieldError::forbidden(format!("spec.ephemeralContainers[{name}]"), format!("existing ephemeral containers {name:?} may not be changed")));
                }
                Some(_) => {}
            }
        }
    }

    fn resources(&mut self, c: &Value, path: &str) {
        let (Some(req), Some(lim)) = (c.pointer("/resources/requests").and_then(Value::as_object), c.pointer("/resources/limits").and_then(Value::as_object)) else {
            return;
        };
        for (r, q) in req {
            let (Some(q), Some(l)) = (quantity(q), lim.get(r).and_then(quantity)) else { continue };
            if q > l {
                let shown = req.get(r).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).unwrap_or_default();
                let limit = lim.get(r).map(|v| v.as_str().map(String::from).unwrap_or_else(|| v.to_string())).unwrap_or_default();
                self.push(FieldError::invalid(format!("{path}.resources.requests"), shown, format!("must be less than or equal to {r} limit of {limit}")));
            }
        }
    }

    fn protocol(&mut self, p: &Value, path: &str) {
        if let Some(proto) = p.get("protocol").and_then(Value::as_str) {
            let ok = ["SCTP", "TCP", "UDP"];
            if !ok.contains(&proto) {
                self.push(FieldError::not_supported(format!("{path}.protocol"), proto, &ok));
            }
        }
    }

    /// replicas, selector (required, matching the template), template restart policy.
    fn workload(&mut self, obj: &Value, kind: &str) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        if kind != "DaemonSet" {
            self.non_negative(spec, "/replicas", "spec.replicas");
        }
        self.non_negative(spec, "/revisionHistoryLimit", "spec.revisionHistoryLimit");
        self.non_negative(spec, "/minReadySeconds", "spec.minReadySeconds");
        self.selector_matches(spec, "spec", true);
        let tspec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
        self.pod_spec(tspec, "spec.template.spec", &["Always"]);
    }

    /// A ReplicationController: its selector is a map of labels that must not be empty and
    /// must match the template's labels; the template is required, restarts `Always` and
    /// has no deadline. (The selector, unlike a ReplicaSet's, may change.)
    fn replication_controller(&mut self, obj: &Value) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        self.non_negative(spec, "/minReadySeconds", "spec.minReadySeconds");
        let selector = spec.get("selector").and_then(Value::as_object).filter(|m| !m.is_empty());
        match selector {
            None => self.push(FieldError::required("spec.selector", "")),
            Some(sel) => {
                for (k, v) in sel {
                    self.invalid_each("spec.selector", k, qualified_name_errors(k));
                    if let Some(v) = v.as_str() {
                        self.invalid_each("spec.selector", v, label_value_errors(v));
                    }
                }
            }
        }
        self.non_negative(spec, "/replicas", "spec.replicas");
        let Some(template) = spec.get("template").filter(|t| !t.is_null()) else {
            self.push(FieldError::required("spec.template", ""));
            return;
        };
        if let Some(sel) = selector {
            let labels = template.pointer("/metadata/labels");
            if !sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)) {
                self.push(FieldError::invalid_rendered("spec.template.metadata.labels", go_map(labels), "`selector` does not match template `labels`"));
            }
        }
        let tspec = template.get("spec").unwrap_or(&Value::Null);
        self.pod_spec(tspec, "spec.template.spec", &["Always"]);
        if tspec.get("activeDeadlineSeconds").is_some_and(|v| !v.is_null()) {
            self.push(FieldError::forbidden("spec.template.spec.activeDeadlineSeconds", "activeDeadlineSeconds in ReplicationController is not Supported"));
        }
    }

    fn selector_matches(&mut self, spec: &Value, path: &str, required: bool) {
        let Some(sel) = spec.get("selector").filter(|s| !s.is_null()) else {
            if required {
                self.push(FieldError::required(format!("{path}.selector"), ""));
            }
            return;
        };
        match LabelSelector::from_object(sel) {
            Err(e) => self.push(FieldError::invalid(format!("{path}.selector"), sel.to_string(), e.to_string())),
            Ok(s) if s.is_empty() => self.push(FieldError::invalid(format!("{path}.selector"), sel.to_string(), "empty selector is invalid for deployment")),
            Ok(s) => {
                let labels = spec.pointer("/template/metadata/labels");
                if !s.matches(labels.unwrap_or(&Value::Null)) {
                    self.push(FieldError::invalid_rendered(format!("{path}.template.metadata.labels"), go_map(labels), "`selector` does not match template `labels`"));
                }
            }
        }
    }

    fn deployment(&mut self, obj: &Value) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        match spec.pointer("/strategy/type").and_then(Value::as_str) {
            None | Some("RollingUpdate") => {
                let surge = spec.pointer("/strategy/rollingUpdate/maxSurge");
                let unavailable = spec.pointer("/strategy/rollingUpdate/maxUnavailable");
                let zero = |v: Option<&Value>| matches!(v, Some(Value::Number(n)) if n.as_i64() == Some(0)) || matches!(v, Some(Value::String(s)) if s == "0%" || s == "0");
                for (v, f) in [(surge, "maxSurge"), (unavailable, "maxUnavailable")] {
                    if let Some(v) = v {
                        if !int_or_percent(v) {
                            self.push(FieldError::invalid(format!("spec.strategy.rollingUpdate.{f}"), v.clone(), "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')"));
                        }
                    }
                }
                if zero(surge) && zero(unavailable) {
                    self.push(FieldError::invalid("spec.strategy.rollingUpdate.maxUnavailable", unavailable.cloned().unwrap_or(Value::Null), "may not be 0 when `maxSurge` is 0"));
                }
            }
            Some("Recreate") => {
                if spec.pointer("/strategy/rollingUpdate").is_some_and(|v| !v.is_null()) {
                    self.push(FieldError::forbidden("spec.strategy.rollingUpdate", "may not be specified when strategy `type` is 'Recreate'"));
                }
            }
            Some(other) => self.push(FieldError::not_supported("spec.strategy.type", other, &["Recreate", "RollingUpdate"])),
        }
        if let (Some(pd), Some(mr)) = (spec.get("progressDeadlineSeconds").and_then(Value::as_i64), spec.get("minReadySeconds").and_then(Value::as_i64)) {
            if pd <= mr {
                self.push(FieldError::invalid("spec.progressDeadlineSeconds", pd, "must be greater than minReadySeconds"));
            }
        }
    }

    fn job_spec(&mut self, spec: &Value, path: &str) {
        for f in ["completions", "parallelism", "backoffLimit"] {
            self.non_negative(spec, &format!("/{f}"), &format!("{path}.{f}"));
        }
        if let Some(ads) = spec.get("activeDeadlineSeconds").and_then(Value::as_i64) {
            if ads <= 0 {
                self.push(FieldError::invalid(format!("{path}.activeDeadlineSeconds"), ads, "must be greater than or equal to 1"));
            }
        }
        match spec.get("completionMode").and_then(Value::as_str) {
            None | Some("NonIndexed") => {}
            Some("Indexed") => {
                if spec.get("completions").is_none_or(Value::is_null) {
                    self.push(FieldError::required(format!("{path}.completions"), "when completion mode is Indexed"));
                }
            }
            Some(other) => self.push(FieldError::not_supported(format!("{path}.completionMode"), other, &["NonIndexed", "Indexed"])),
        }
        self.selector_matches(spec, path, false);
        let tspec = spec.pointer("/template/spec").unwrap_or(&Value::Null);
        let rp = tspec.get("restartPolicy").and_then(Value::as_str);
        if rp.is_none() {
            self.push(FieldError::required(format!("{path}.template.spec.restartPolicy"), "valid values: \"OnFailure\", \"Never\""));
        }
        self.pod_spec(tspec, &format!("{path}.template.spec"), &["OnFailure", "Never"]);
    }

    fn service(&mut self, obj: &Value) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        let ty = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
        let types = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
        if !types.contains(&ty) {
            self.push(FieldError::not_supported("spec.type", ty, &types));
        }
        let ports = spec.get("ports").and_then(Value::as_array).map(Vec::as_slice).unwrap_or(&[]);
        let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
        if ty == "ExternalName" {
            let en = spec.get("externalName").and_then(Value::as_str).unwrap_or("");
            if en.is_empty() {
                self.push(FieldError::required("spec.externalName", ""));
            } else {
                self.invalid_each("spec.externalName", en, dns1123_subdomain_errors(en.trim_end_matches('.')));
            }
        } else if ports.is_empty() && !headless {
            self.push(FieldError::required("spec.ports", ""));
        }
        let mut names = Vec::new();
        let mut seen = Vec::new();
        for (i, p) in ports.iter().enumerate() {
            let pp = format!("spec.ports[{i}]");
            let name = p.get("name").and_then(Value::as_str).unwrap_or("");
            if ports.len() > 1 && name.is_empty() {
                self.push(FieldError::required(format!("{pp}.name"), ""));
            }
            if !name.is_empty() {
                self.invalid_each(&format!("{pp}.name"), name, dns1123_label_errors(name));
                if names.contains(&name) {
                    self.push(FieldError::duplicate(format!("{pp}.name"), name));
                }
                names.push(name);
            }
            match p.get("port").and_then(Value::as_i64) {
                None => self.push(FieldError::required(format!("{pp}.port"), "")),
                Some(n) if !(1..=65535).contains(&n) => self.push(FieldError::invalid(format!("{pp}.port"), n, "must be between 1 and 65535, inclusive")),
                Some(n) => {
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                    if seen.contains(&(n, proto)) {
                        self.push(FieldError::duplicate(pp.clone(), json!({"port": n, "protocol": proto})));
                    }
                    seen.push((n, proto));
                }
            }
            self.protocol(p, &pp);
            match p.get("targetPort") {
                Some(Value::Number(n)) => {
                    let n = n.as_i64().unwrap_or(0);
                    if !(1..=65535).contains(&n) {
                        self.push(FieldError::invalid(format!("{pp}.targetPort"), n, "must be between 1 and 65535, inclusive"));
                    }
                }
                Some(Value::String(s)) => self.invalid_each(&format!("{pp}.targetPort"), s, iana_svc_name_errors(s)),
                _ => {}
            }
            if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
                if ty == "ClusterIP" || ty == "ExternalName" {
                    self.push(FieldError::forbidden(format!("{pp}.nodePort"), "may not be used when `type` is 'ClusterIP'"));
                } else if !(30000..=32767).contains(&np) {
                    self.push(FieldError::invalid(format!("{pp}.nodePort"), np, "provided port is not in the valid range. The range of valid ports is 30000-32767"));
                }
            }
        }
        if let Some(sa) = spec.get("sessionAffinity").and_then(Value::as_str) {
            if !["ClientIP", "None"].contains(&sa) {
                self.push(FieldError::not_supported("spec.sessionAffinity", sa, &["ClientIP", "None"]));
            }
        }
    }

    fn config_data(&mut self, obj: &Value, kind: &str) {
        let mut total = 0;
        let mut keys: Vec<&str> = Vec::new();
        for field in ["data", "binaryData"] {
            for (k, v) in obj.get(field).and_then(Value::as_object).into_iter().flatten() {
                if k.is_empty() || k.len() > 253 || !k.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._".contains(&c)) || k == "." || k == ".." {
                    self.push(FieldError::invalid(field.to_string(), k.as_str(), CONFIG_KEY));
                }
                if keys.contains(&k.as_str()) {
                    self.push(FieldError::invalid(field, k.as_str(), "duplicate of key present in data"));
                }
                keys.push(k);
                total += k.len() + v.as_str().map_or(0, str::len);
            }
        }
        if total > 1024 * 1024 {
            self.push(FieldError::too_long(if kind == "Secret" { "data" } else { "" }, 1024 * 1024));
        }
    }

    fn cronjob(&mut self, obj: &Value) {
        let spec = obj.get("spec").unwrap_or(&Value::Null);
        match spec.get("schedule").and_then(Value::as_str) {
            None | Some("") => self.push(FieldError::required("spec.schedule", "")),
            Some(s) if !valid_schedule(s) => self.push(FieldError::invalid("spec.schedule", s, "unparseable cron schedule")),
            _ => {}
        }
        if let Some(cp) = spec.get("concurrencyPolicy").and_then(Value::as_str) {
            let ok = ["Allow", "Forbid", "Replace"];
            if !ok.contains(&cp) {
                self.push(FieldError::not_supported("spec.concurrencyPolicy", cp, &ok));
            }
        }
        for f in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit", "startingDeadlineSeconds"] {
            self.non_negative(spec, &format!("/{f}"), &format!("spec.{f}"));
        }
        self.job_spec(spec.pointer("/jobTemplate/spec").unwrap_or(&Value::Null), "spec.jobTemplate.spec");
    }

    fn immutable(&mut self, new: &Value, old: &Value, ptr: &str, field: &str) {
        let (a, b) = (new.pointer(ptr), old.pointer(ptr));
        if a != b {
            self.push(FieldError::invalid(field, a.cloned().unwrap_or(Value::Null), IMMUTABLE));
        }
    }
}

fn int_or_percent(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.as_i64().is_some_and(|n| n >= 0),
        Value::String(s) => s.strip_suffix('%').is_some_and(|d| !d.is_empty() && d.bytes().all(|c| c.is_ascii_digit())) || s.parse::<u64>().is_ok(),
        _ => false,
    }
}

/// A Kubernetes quantity as a float (enough to compare requests with limits).
fn quantity(v: &Value) -> Option<f64> {
    v.as_f64().or_else(|| crate::quantity::parse(v.as_str()?))
}

/// Standard 5-field cron lines and the `@` macros.
fn valid_schedule(s: &str) -> bool {
    let s = s.trim();
    let s = s.strip_prefix("TZ=").or_else(|| s.strip_prefix("CRON_TZ=")).map(|r| r.split_once(' ').map(|x| x.1).unwrap_or("")).unwrap_or(s);
    if let Some(m) = s.strip_prefix('@') {
        return ["yearly", "annually", "monthly", "weekly", "daily", "midnight", "hourly"].contains(&m) || m.starts_with("every ");
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5 && fields.iter().all(|f| f.chars().all(|c| c.is_ascii_alphanumeric() || "*/,-?".contains(c)))
}

/// Validate a create (`old` = None) or an update of `kind`.
pub fn validate(kind: &str, obj: &Value, old: Option<&Value>) -> Vec<FieldError> {
    let mut v = V { errs: Vec::new() };
    v.metadata(kind, obj);
    match kind {
        "Pod" => {
            v.pod_spec(obj.get("spec").unwrap_or(&Value::Null), "spec", &["Always", "OnFailure", "Never"]);
            if old.is_none() && obj.pointer("/spec/ephemeralContainers").and_then(Value::as_array).is_some_and(|a| !a.is_empty()) {
                v.push(FieldError::forbidden("spec.ephemeralContainers", "cannot be set on create"));
            }
        }
        "Deployment" => {
            v.workload(obj, kind);
            v.deployment(obj);
        }
        "ReplicaSet" | "StatefulSet" | "DaemonSet" => v.workload(obj, kind),
        "ReplicationController" => v.replication_controller(obj),
        "Job" => v.job_spec(obj.get("spec").unwrap_or(&Value::Null), "spec"),
        "CronJob" => v.cronjob(obj),
        "Service" => v.service(obj),
        "ConfigMap" | "Secret" => v.config_data(obj, kind),
        _ => {}
    }
    if let Some(old) = old {
        match kind {
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet" => v.immutable(obj, old, "/spec/selector", "spec.selector"),
            "Job" => {
                v.immutable(obj, old, "/spec/selector", "spec.selector");
                v.immutable(obj, old, "/spec/template", "spec.template");
                v.immutable(obj, old, "/spec/completionMode", "spec.completionMode");
            }
            "Service" => {
                let was = old.pointer("/spec/clusterIP").and_then(Value::as_str).filter(|s| !s.is_empty());
                if was.is_some() && obj.pointer("/spec/clusterIP").and_then(Value::as_str) != was {
                    v.immutable(obj, old, "/spec/clusterIP", "spec.clusterIP");
                }
            }
            "Secret" => v.immutable(obj, old, "/type", "type"),
            "Pod" => {
                v.ephemeral_update(obj, old);
                // Upstream allows only image and a few scheduling fields to change on a pod.
                let strip = |p: &Value| {
                    let mut s = p.get("spec").cloned().unwrap_or(Value::Null);
                    for list in ["containers", "initContainers"] {
                        for c in s.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
                            if let Some(m) = c.as_object_mut() {
                                m.remove("image");
                            }
                        }
                    }
                    if let Some(m) = s.as_object_mut() {
                        // Debug containers change through their own subresource, checked above.
                        for f in ["activeDeadlineSeconds", "tolerations", "nodeName", "terminationGracePeriodSeconds", "schedulingGates", "ephemeralContainers"] {
                            m.remove(f);
                        }
                    }
                    s
                };
                if strip(obj) != strip(old) {
                    v.push(FieldError::forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations), `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
                }
            }
            _ => {}
        }
        if matches!(kind, "ConfigMap" | "Secret") && old.get("immutable").and_then(Value::as_bool) == Some(true) {
            for f in ["data", "binaryData", "immutable"] {
                if obj.get(f) != old.get(f) {
                    v.push(FieldError::forbidden(f, "field is immutable when `immutable` is set"));
                }
            }
        }
    }
    v.errs
}

/// Decode `obj` into the typed struct of `kind`; `Err` for wrong types, else the
/// fields the schema does not know.
pub fn check_schema(kind: &str, obj: &Value) -> Result<Vec<String>, String> {
    use k8s_openapi::api::{apps::v1 as apps, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery, node::v1 as node};
    fn typed<T: serde::de::DeserializeOwned + serde::Serialize>(obj: &Value) -> Result<Value, String> {
        let t: T = serde_path_to_error::deserialize(obj).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner().to_string();
            if path == "." { inner } else { format!("{path}: {inner}") }
        })?;
        serde_json::to_value(&t).map_err(|e| e.to_string())
    }
    let known = match kind {
        "Namespace" => typed::<core::Namespace>(obj),
        "Pod" => typed::<core::Pod>(obj),
        "Service" => typed::<core::Service>(obj),
        "Endpoints" => typed::<core::Endpoints>(obj),
        "ConfigMap" => typed::<core::ConfigMap>(obj),
        "Secret" => typed::<core::Secret>(obj),
        "Node" => typed::<core::Node>(obj),
        "Event" => typed::<core::Event>(obj),
        "ServiceAccount" => typed::<core::ServiceAccount>(obj),
        "ReplicationController" => typed::<core::ReplicationController>(obj),
        "Deployment" => typed::<apps::Deployment>(obj),
        "ReplicaSet" => typed::<apps::ReplicaSet>(obj),
        "StatefulSet" => typed::<apps::StatefulSet>(obj),
        "DaemonSet" => typed::<apps::DaemonSet>(obj),
        "Job" => typed::<batch::Job>(obj),
        "CronJob" => typed::<batch::CronJob>(obj),
        "Lease" => typed::<coordination::Lease>(obj),
        "EndpointSlice" => typed::<discovery::EndpointSlice>(obj),
        "RuntimeClass" => typed::<node::RuntimeClass>(obj),
        _ => return Ok(Vec::new()),
    }?;
    let mut unknown = Vec::new();
    diff_unknown(obj, &known, "", &mut unknown);
    Ok(unknown)
}

/// Fields present in `input` that did not survive the typed round trip.
fn diff_unknown(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    None if !v.is_null() => out.push(p),
                    Some(kv) => diff_unknown(v, kv, &p, out),
                    None => {}
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                diff_unknown(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deploy(replicas: i64, tlabel: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": tlabel}},
            "spec": {"restartPolicy": "Always", "containers": [{"name": "web", "image": "i:1", "ports": [{"containerPort": 80}]}]}}}})
    }

    fn messages(errs: &[FieldError]) -> Vec<String> {
        errs.iter().map(|e| e.to_string()).collect()
    }

    #[test]
    fn valid_objects_pass() {
        assert!(validate("Deployment", &deploy(2, "web"), None).is_empty());
        let job = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}});
        assert!(validate("Job", &job, None).is_empty(), "{:?}", messages(&validate("Job", &job, None)));
        let cj = json!({"metadata": {"name": "c"}, "spec": {"schedule": "*/1 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "OnFailure", "containers": [{"name": "c", "image": "i"}]}}}}}});
        assert!(validate("CronJob", &cj, None).is_empty());
        let svc = json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80, "targetPort": "http"}]}});
        assert!(validate("Service", &svc, None).is_empty());
        let cm = json!({"metadata": {"name": "c"}, "data": {"a.b": "x", "KEY_1": "y"}});
        assert!(validate("ConfigMap", &cm, None).is_empty());
    }

    #[test]
    fn replication_controllers() {
        let rc = |selector: Value, labels: Value| {
            json!({"metadata": {"name": "r"}, "spec": {"replicas": 1, "selector": selector, "template": {"metadata": {"labels": labels},
                "spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i:1"}]}}}})
        };
        let ok = rc(json!({"app": "web"}), json!({"app": "web", "v": "1"}));
        assert!(validate("ReplicationController", &ok, None).is_empty(), "{:?}", messages(&validate("ReplicationController", &ok, None)));
        assert!(check_schema("ReplicationController", &ok).unwrap().is_empty());
        // The selector may change, unlike a ReplicaSet's.
        let moved = rc(json!({"v": "1"}), json!({"app": "web", "v": "1"}));
        assert!(validate("ReplicationController", &moved, Some(&ok)).is_empty());
        let e = messages(&validate("ReplicationController", &rc(json!({"app": "web"}), json!({"app": "db"})), None));
        assert_eq!(e, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"db\"}: `selector` does not match template `labels`"]);
        let e = messages(&validate("ReplicationController", &rc(json!({}), json!({"app": "db"})), None));
        assert_eq!(e, vec!["spec.selector: Required value"]);
        let mut bad = ok.clone();
        bad["spec"]["replicas"] = json!(-1);
        bad["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        bad["spec"]["template"]["spec"]["activeDeadlineSeconds"] = json!(5);
        let e = messages(&validate("ReplicationController", &bad, None));
        assert_eq!(e, vec![
            "spec.replicas: Invalid value: -1: must be greater than or equal to 0",
            "spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"",
            "spec.template.spec.activeDeadlineSeconds: Forbidden: activeDeadlineSeconds in ReplicationController is not Supported",
        ]);
        let e = messages(&validate("ReplicationController", &json!({"metadata": {"name": "r"}, "spec": {"selector": {"a": "b"}}}), None));
        assert_eq!(e, vec!["spec.template: Required value"]);
    }

    #[test]
    fn upstream_messages() {
        let e = messages(&validate("ConfigMap", &json!({"metadata": {"name": "Bad_Name"}}), None));
        assert_eq!(e, vec![format!("metadata.name: Invalid value: \"Bad_Name\": {DNS1123_SUBDOMAIN}")]);
        let e = messages(&validate("ConfigMap", &json!({"metadata": {}}), None));
        assert_eq!(e, vec!["metadata.name: Required value: name or generateName is required"]);
        let e = messages(&validate("Deployment", &deploy(-1, "web"), None));
        assert_eq!(e, vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]);
        let e = messages(&validate("Deployment", &deploy(1, "other"), None));
        assert_eq!(e, vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"]);
        let mut d = deploy(1, "web");
        d["spec"]["template"]["spec"]["containers"] = json!([{"name": "web", "image": "a", "ports": [{"containerPort": 70000}]}, {"name": "web", "image": "b"}]);
        d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
        let e = messages(&validate("Deployment", &d, None));
        assert!(e.contains(&"spec.template.spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive".to_string()), "{e:?}");
        assert!(e.contains(&"spec.template.spec.containers[1].name: Duplicate value: \"web\"".to_string()), "{e:?}");
        assert!(e.contains(&"spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\"".to_string()), "{e:?}");
        let mut changed = deploy(1, "web");
        changed["spec"]["selector"] = json!({"matchLabels": {"app": "web", "x": "y"}});
        changed["spec"]["template"]["metadata"]["labels"] = json!({"app": "web", "x": "y"});
        let e = messages(&validate("Deployment", &changed, Some(&deploy(1, "web"))));
        assert!(e[0].starts_with("spec.selector: Invalid value: ") && e[0].ends_with("field is immutable"), "{e:?}");
        let e = messages(&validate("Service", &json!({"metadata": {"name": "1svc"}, "spec": {"ports": [{"port": 0}]}}), None));
        assert!(e.iter().any(|m| m.contains("DNS-1035")) && e.iter().any(|m| m.contains("spec.ports[0].port")), "{e:?}");
        let e = messages(&validate("Pod", &json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/x"}]}]}}), None));
        assert_eq!(e, vec!["spec.containers[0].volumeMounts[0].name: Not found: \"v\""]);
        let e = messages(&validate("Namespace", &json!({"metadata": {"name": "a.b"}}), None));
        assert!(e[0].contains("RFC 1123 label"), "{e:?}");
        let e = messages(&validate("ConfigMap", &json!({"metadata": {"name": "c", "labels": {"bad key": "v"}}}), None));
        assert!(e[0].starts_with("metadata.labels: Invalid value: \"bad key\""), "{e:?}");
    }

    #[test]
    fn schema_types_and_unknown_fields() {
        let mut d = deploy(1, "web");
        d["spec"]["replicas"] = json!("three");
        let err = check_schema("Deployment", &d).unwrap_err();
        assert!(err.contains("spec.replicas"), "{err}");
        let mut d = deploy(1, "web");
        d["spec"]["template"]["spec"]["containers"][0]["imagee"] = json!("typo");
        d["spec"]["foo"] = json!(null);
        assert_eq!(check_schema("Deployment", &d).unwrap(), vec!["spec.template.spec.containers[0].imagee"]);
        assert_eq!(check_schema("Deployment", &deploy(1, "web")).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn ephemeral_containers_are_only_added_and_carry_no_serving_fields() {
        let pod = |ec: Value| json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}], "ephemeralContainers": ec}});
        let old = pod(json!([{"name": "dbg", "image": "d"}]));
        assert!(validate("Pod", &old, Some(&pod(json!([])))).is_empty());
        let e = messages(&validate("Pod", &old, None));
        assert_eq!(e, vec!["spec.ephemeralContainers: Forbidden: cannot be set on create"]);
        let bad = pod(json!([{"name": "dbg", "image": "d"}, {"name": "c", "image": "d", "ports": [{"containerPort": 80}], "resources": {}, "readinessProbe": {"exec": {"command": ["x"]}}}, {"name": "x"}]));
        let e = messages(&validate("Pod", &bad, Some(&old)));
        assert_eq!(e, vec![
            "spec.ephemeralContainers[1].name: Duplicate value: \"c\"",
            "spec.ephemeralContainers[1].ports: Forbidden: cannot be set for an Ephemeral Container",
            "spec.ephemeralContainers[1].readinessProbe: Forbidden: cannot be set for an Ephemeral Container",
            "spec.ephemeralContainers[2].image: Required value",
        ]);
        let e = messages(&validate("Pod", &pod(json!([{"name": "dbg", "image": "other"}])), Some(&old)));
        assert_eq!(e, vec!["spec.ephemeralContainers[dbg]: Forbidden: existing ephemeral containers \"dbg\" may not be changed"]);
        let e = messages(&validate("Pod", &pod(json!([])), Some(&old)));
        assert_eq!(e, vec!["spec.ephemeralContainers: Forbidden: existing ephemeral containers \"dbg\" may not be removed\n"]);
    }

    #[test]
    fn quantities_compare() {
        assert!(quantity(&json!("500m")).unwrap() < quantity(&json!("1")).unwrap());
        assert!(quantity(&json!("1Gi")).unwrap() > quantity(&json!("1G")).unwrap());
        let c = json!({"resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}});
        let mut v = V { errs: vec![] };
        v.resources(&c, "spec.containers[0]");
        assert_eq!(v.errs.len(), 1);
    }
}
