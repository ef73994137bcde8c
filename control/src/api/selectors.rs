//! Label and field selectors, with upstream semantics.
//!
//! Label selectors come as query strings (`app in (a,b),tier!=db,!legacy`) or as
//! `metav1.LabelSelector` objects (matchLabels/matchExpressions); field selectors
//! support only the fields upstream indexes for each kind.

use serde_json::Value;
use std::fmt;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SelectorError {
    #[error("unable to parse requirement: {0}")]
    Parse(String),
    #[error("field label not supported: {0}")]
    UnsupportedField(String),
    #[error("invalid field selector: {0}")]
    Field(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Op {
    Eq,
    NotEq,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq)]
struct Requirement {
    key: String,
    op: Op,
    values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let v = labels.get(&self.key).and_then(Value::as_str);
        match self.op {
            Op::Eq | Op::In => v.is_some_and(|v| self.values.iter().any(|x| x == v)),
            // Upstream: `!=` and `notin` also match objects without the key.
            Op::NotEq | Op::NotIn => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
        }
    }
}

/// A label selector; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LabelSelector {
    reqs: Vec<Requirement>,
}

fn valid_label_token(s: &str) -> bool {
    !s.is_empty() && s.len() <= 317 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
}

fn valid_value(s: &str) -> bool {
    s.len() <= 63 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Split on commas that are not inside parentheses.
fn split_top(s: &str) -> Result<Vec<&str>, SelectorError> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth < 0 {
                    return Err(SelectorError::Parse(format!("unbalanced parenthesis in {s:?}")));
                }
            }
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(SelectorError::Parse(format!("unbalanced parenthesis in {s:?}")));
    }
    out.push(&s[start..]);
    Ok(out)
}

fn parse_set(key: &str, rest: &str, op: Op) -> Result<Requirement, SelectorError> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| SelectorError::Parse(format!("expected a parenthesised set of values for {key}")))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect();
    if values.is_empty() && op == Op::In {
        return Err(SelectorError::Parse(format!("for 'in' operator, values set can't be empty ({key})")));
    }
    if let Some(bad) = values.iter().find(|v| !valid_value(v)) {
        return Err(SelectorError::Parse(format!("invalid label value: {bad:?}")));
    }
    Ok(Requirement { key: key.into(), op, values })
}

fn parse_requirement(part: &str) -> Result<Requirement, SelectorError> {
    let p = part.trim();
    if let Some(key) = p.strip_prefix('!') {
        let key = key.trim();
        if !valid_label_token(key) {
            return Err(SelectorError::Parse(format!("invalid label key {key:?}")));
        }
        return Ok(Requirement { key: key.into(), op: Op::DoesNotExist, values: vec![] });
    }
    for (sym, op) in [("!=", Op::NotEq), ("==", Op::Eq), ("=", Op::Eq)] {
        if let Some((k, v)) = p.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            if !valid_label_token(k) {
                return Err(SelectorError::Parse(format!("invalid label key {k:?}")));
            }
            if !valid_value(v) || v.contains('=') {
                return Err(SelectorError::Parse(format!("invalid label value: {v:?}")));
            }
            return Ok(Requirement { key: k.into(), op, values: vec![v.into()] });
        }
    }
    let mut words = p.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or("").trim();
    let rest = words.next().unwrap_or("").trim();
    if !valid_label_token(key) {
        return Err(SelectorError::Parse(format!("invalid label key {key:?}")));
    }
    if rest.is_empty() {
        return Ok(Requirement { key: key.into(), op: Op::Exists, values: vec![] });
    }
    if let Some(r) = rest.strip_prefix("notin") {
        return parse_set(key, r, Op::NotIn);
    }
    if let Some(r) = rest.strip_prefix("in") {
        return parse_set(key, r, Op::In);
    }
    Err(SelectorError::Parse(format!("found {rest:?}, expected: in, notin, =, ==, !=")))
}

impl LabelSelector {
    /// Parse the query-string form; the empty string selects everything.
    pub fn parse(s: &str) -> Result<Self, SelectorError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let reqs = split_top(s)?.into_iter().map(parse_requirement).collect::<Result<_, _>>()?;
        Ok(Self { reqs })
    }

    /// From a `metav1.LabelSelector` object; absent fields add no constraint.
    pub fn from_object(sel: &Value) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        if let Some(m) = sel.get("matchLabels").and_then(Value::as_object) {
            for (k, v) in m {
                let v = v.as_str().ok_or_else(|| SelectorError::Parse(format!("matchLabels value of {k} is not a string")))?;
                reqs.push(Requirement { key: k.clone(), op: Op::Eq, values: vec![v.into()] });
            }
        }
        if let Some(exprs) = sel.get("matchExpressions").and_then(Value::as_array) {
            for e in exprs {
                let key = e.get("key").and_then(Value::as_str).unwrap_or("").to_string();
                let values: Vec<String> = e.get("values").and_then(Value::as_array).map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect()).unwrap_or_default();
                let op = match e.get("operator").and_then(Value::as_str) {
                    Some("In") => Op::In,
                    Some("NotIn") => Op::NotIn,
                    Some("Exists") => Op::Exists,
                    Some("DoesNotExist") => Op::DoesNotExist,
                    other => return Err(SelectorError::Parse(format!("{other:?} is not a valid label selector operator"))),
                };
                if matches!(op, Op::In | Op::NotIn) && values.is_empty() {
                    return Err(SelectorError::Parse(format!("for 'in', 'notin' operators, values set can't be empty ({key})")));
                }
                reqs.push(Requirement { key, op, values });
            }
        }
        Ok(Self { reqs })
    }

    /// `labels` is `metadata.labels` (an object of strings, or null).
    pub fn matches(&self, labels: &Value) -> bool {
        self.reqs.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

impl fmt::Display for LabelSelector {
    /// The query-string form, as `kubectl` and Scale's `status.selector` show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .reqs
            .iter()
            .map(|r| match r.op {
                Op::Eq => format!("{}={}", r.key, r.values[0]),
                Op::NotEq => format!("{}!={}", r.key, r.values[0]),
                Op::In => format!("{} in ({})", r.key, r.values.join(",")),
                Op::NotIn => format!("{} notin ({})", r.key, r.values.join(",")),
                Op::Exists => r.key.clone(),
                Op::DoesNotExist => format!("!{}", r.key),
            })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

/// The field labels upstream supports for each kind (beyond metadata.name/namespace).
fn supported_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Pod" => &["spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase", "status.podIP", "status.nominatedNodeName"],
        "Event" => &[
            "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
            "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
            "reason", "reportingComponent", "source", "type",
        ],
        "Secret" => &["type"],
        "Node" => &["spec.unschedulable"],
        "Namespace" => &["status.phase"],
        "Job" => &["status.successful"],
        "ReplicaSet" => &["status.replicas"],
        _ => &[],
    }
}

/// The value of a field label in an object; missing fields read as "".
fn field_value(obj: &Value, field: &str) -> String {
    let path = if field == "source" { "source.component" } else { field };
    let mut v = obj;
    for part in path.split('.') {
        match v.get(part) {
            Some(x) => v = x,
            None => {
                // Booleans default to false, as Go's zero value would print.
                return if matches!(field, "spec.hostNetwork" | "spec.unschedulable") { "false".into() } else { String::new() };
            }
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Clone, Debug)]
struct FieldReq {
    field: String,
    value: String,
    equal: bool,
}

/// A field selector; the empty selector matches everything.
#[derive(Clone, Debug, Default)]
pub struct FieldSelector {
    reqs: Vec<FieldReq>,
}

/// Split on unescaped `sep`, keeping escapes for the caller to resolve.
fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                if let Some(last) = out.last_mut() {
                    last.push('\\');
                    last.push(n);
                }
            }
        } else if c == sep {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push(c);
        }
    }
    out
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Find the first unescaped occurrence of `op` in `s`.
fn find_unescaped(s: &str, op: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        if s[i..].starts_with(op) {
            return Some(i);
        }
        i += 1;
    }
    None
}

impl FieldSelector {
    /// The value `field` must equal, if the selector requires one (`field=value`).
    pub fn required(&self, field: &str) -> Option<&str> {
        self.reqs.iter().find(|r| r.equal && r.field == field).map(|r| r.value.as_str())
    }

    pub fn parse(s: &str, kind: &str) -> Result<Self, SelectorError> {
        let mut reqs = Vec::new();
        for part in split_unescaped(s, ',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, equal) = if let Some(i) = find_unescaped(part, "!=") {
                (&part[..i], &part[i + 2..], false)
            } else if let Some(i) = find_unescaped(part, "==") {
                (&part[..i], &part[i + 2..], true)
            } else if let Some(i) = find_unescaped(part, "=") {
                (&part[..i], &part[i + 1..], true)
            } else {
                return Err(SelectorError::Field(format!("{part:?}: expected an operator (=, ==, !=)")));
            };
            let field = field.trim();
            if field != "metadata.name" && field != "metadata.namespace" && !supported_fields(kind).contains(&field) {
                return Err(SelectorError::UnsupportedField(field.to_string()));
            }
            reqs.push(FieldReq { field: field.into(), value: unescape(value.trim()), equal });
        }
        Ok(Self { reqs })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.reqs.iter().all(|r| (field_value(obj, &r.field) == r.value) == r.equal)
    }

    pub fn is_empty(&self) -> bool {
        self.reqs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_label_operator() {
        let s = LabelSelector::parse("app in (a,b),tier!=db").unwrap();
        assert!(s.matches(&json!({"app": "a", "tier": "web"})));
        assert!(s.matches(&json!({"app": "b"})), "!= matches a missing key");
        assert!(!s.matches(&json!({"app": "b", "tier": "db"})));
        assert!(!s.matches(&json!({"app": "c"})));
        let s = LabelSelector::parse("app notin (a), tier, !legacy").unwrap();
        assert!(s.matches(&json!({"app": "b", "tier": "x"})));
        assert!(s.matches(&json!({"tier": "x"})));
        assert!(!s.matches(&json!({"app": "a", "tier": "x"})));
        assert!(!s.matches(&json!({"tier": "x", "legacy": "1"})));
        assert!(!s.matches(&Value::Null));
        assert!(LabelSelector::parse("").unwrap().matches(&Value::Null));
        assert!(LabelSelector::parse("a==b").unwrap().matches(&json!({"a": "b"})));
        assert_eq!(LabelSelector::parse("app in (a,b),!x").unwrap().to_string(), "app in (a,b),!x");
    }

    #[test]
    fn bad_label_selectors_are_errors() {
        for bad in ["app in (a", "app in ()", "=x", "app ~ b", "a=b=c", "a)"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn selector_objects() {
        let s = LabelSelector::from_object(&json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["db"]}]})).unwrap();
        assert!(s.matches(&json!({"app": "web"})));
        assert!(!s.matches(&json!({"app": "web", "tier": "db"})));
        assert_eq!(s.to_string(), "app=web,tier notin (db)");
        assert!(LabelSelector::from_object(&json!({"matchExpressions": [{"key": "a", "operator": "Bogus"}]})).is_err());
        assert!(LabelSelector::from_object(&json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]})).is_err());
    }

    #[test]
    fn field_selectors() {
        let pod = json!({"metadata": {"name": "x", "namespace": "d"}, "spec": {}, "status": {"phase": "Running"}});
        assert!(FieldSelector::parse("metadata.name=x", "Pod").unwrap().matches(&pod));
        assert!(FieldSelector::parse("spec.nodeName=", "Pod").unwrap().matches(&pod), "missing reads as empty");
        assert!(FieldSelector::parse("status.phase!=Pending,metadata.namespace==d", "Pod").unwrap().matches(&pod));
        assert!(!FieldSelector::parse("status.phase=Failed", "Pod").unwrap().matches(&pod));
        assert_eq!(FieldSelector::parse("spec.foo=x", "Pod").unwrap_err(), SelectorError::UnsupportedField("spec.foo".into()));
        assert!(FieldSelector::parse("spec.nodeName=x", "ConfigMap").is_err());
        let ev = json!({"involvedObject": {"kind": "Pod", "name": "a,b"}, "source": {"component": "kubelet"}});
        assert!(FieldSelector::parse(r"involvedObject.name=a\,b,source=kubelet", "Event").unwrap().matches(&ev));
        assert!(FieldSelector::parse("nonsense", "Pod").is_err());
    }
}
