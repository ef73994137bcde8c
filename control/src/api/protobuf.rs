//! Kubernetes protobuf request bodies, turned into the JSON form.
//!
//! kubectl's typed-client commands (`create deployment`, `run`, `create
//! configmap/secret/namespace/job/cronjob`, `expose`) send
//! `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a
//! `runtime.Unknown` envelope whose `raw` bytes are the typed message. We decode
//! it with k8s-pb and convert it to exactly the JSON those commands would send
//! with `-o json`, so the rest of the server sees one format.
//!
//! Kubernetes protobuf is proto2, so optional fields keep presence. Go's JSON
//! omits empty strings, lists and maps, which protobuf marshalling writes anyway;
//! the conversion drops those but keeps explicit zeros and `false`.

use base64::Engine;
use k8s_pb::api::{apps::v1 as apps, autoscaling::v1 as autoscaling, batch::v1 as batch, coordination::v1 as coordination, core::v1 as core, policy::v1 as policy};
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use prost::Message;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    BadMagic,
    #[error("the protobuf envelope cannot be decoded: {0}")]
    Envelope(prost::DecodeError),
    #[error("the protobuf {kind} cannot be decoded: {source}")]
    Object { kind: String, source: prost::DecodeError },
    #[error("protobuf bodies of {0} are not supported; send JSON")]
    UnsupportedKind(String),
}

const MAGIC: &[u8] = b"k8s\0";

/// Decode a protobuf body into the object's JSON form, `apiVersion` and `kind` included.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
    let envelope = Unknown::decode(rest).map_err(ProtobufError::Envelope)?;
    let tm = envelope.type_meta.unwrap_or_default();
    let api_version = tm.api_version.unwrap_or_default();
    let kind = tm.kind.unwrap_or_default();
    let raw = envelope.raw.unwrap_or_default();
    fn conv<M: Message + Default + ToJson>(raw: &[u8], kind: &str) -> Result<Value, ProtobufError> {
        let m = M::decode(raw).map_err(|source| ProtobufError::Object { kind: kind.to_string(), source })?;
        Ok(m.to_json().unwrap_or_else(|| json!({})))
    }
    let mut obj = match (api_version.as_str(), kind.as_str()) {
        ("v1", "Pod") => conv::<core::Pod>(&raw, &kind),
        ("v1", "Service") => conv::<core::Service>(&raw, &kind),
        ("v1", "ConfigMap") => conv::<core::ConfigMap>(&raw, &kind),
        ("v1", "Secret") => conv::<core::Secret>(&raw, &kind),
        ("v1", "Namespace") => conv::<core::Namespace>(&raw, &kind),
        ("v1", "ServiceAccount") => conv::<core::ServiceAccount>(&raw, &kind),
        ("v1", "Event") => conv::<core::Event>(&raw, &kind),
        ("v1", "Binding") => conv::<core::Binding>(&raw, &kind),
        ("apps/v1", "Deployment") => conv::<apps::Deployment>(&raw, &kind),
        ("apps/v1", "ReplicaSet") => conv::<apps::ReplicaSet>(&raw, &kind),
        ("apps/v1", "StatefulSet") => conv::<apps::StatefulSet>(&raw, &kind),
        ("apps/v1", "DaemonSet") => conv::<apps::DaemonSet>(&raw, &kind),
        ("batch/v1", "Job") => conv::<batch::Job>(&raw, &kind),
        ("batch/v1", "CronJob") => conv::<batch::CronJob>(&raw, &kind),
        ("coordination.k8s.io/v1", "Lease") => conv::<coordination::Lease>(&raw, &kind),
        ("policy/v1", "Eviction") => conv::<policy::Eviction>(&raw, &kind),
        ("autoscaling/v1", "Scale") => conv::<autoscaling::Scale>(&raw, &kind),
        _ => return Err(ProtobufError::UnsupportedKind(format!("{api_version}/{kind}"))),
    }?;
    if let Value::Object(m) = &mut obj {
        m.insert("apiVersion".into(), json!(api_version));
        m.insert("kind".into(), json!(kind));
        m.entry("metadata").or_insert_with(|| json!({}));
    }
    Ok(obj)
}

/// The JSON form of a protobuf value; `None` when JSON would omit it.
trait ToJson {
    fn to_json(&self) -> Option<Value>;
}

impl ToJson for String {
    fn to_json(&self) -> Option<Value> {
        (!self.is_empty()).then(|| json!(self))
    }
}

macro_rules! scalar {
    ($($t:ty),*) => { $(impl ToJson for $t { fn to_json(&self) -> Option<Value> { Some(json!(self)) } })* };
}
scalar!(i32, i64, bool, f64);

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Option<Value> {
        self.as_ref()?.to_json()
    }
}

impl<T: ToJson> ToJson for Box<T> {
    fn to_json(&self) -> Option<Value> {
        (**self).to_json()
    }
}

impl<T: ToJson> ToJson for Vec<T> {
    fn to_json(&self) -> Option<Value> {
        (!self.is_empty()).then(|| Value::Array(self.iter().map(|x| x.to_json().unwrap_or_else(|| json!({}))).collect()))
    }
}

impl<T: ToJson> ToJson for BTreeMap<String, T> {
    fn to_json(&self) -> Option<Value> {
        (!self.is_empty()).then(|| Value::Object(self.iter().map(|(k, v)| (k.clone(), v.to_json().unwrap_or_else(|| json!("")))).collect()))
    }
}

impl ToJson for Quantity {
    fn to_json(&self) -> Option<Value> {
        self.string.as_ref().map(|s| json!(s))
    }
}

impl ToJson for IntOrString {
    fn to_json(&self) -> Option<Value> {
        match self.r#type {
            Some(1) => Some(json!(self.str_val.clone().unwrap_or_default())),
            _ => Some(json!(self.int_val.unwrap_or(0))),
        }
    }
}

impl ToJson for meta::Time {
    fn to_json(&self) -> Option<Value> {
        let secs = self.seconds.filter(|s| *s != 0)?;
        let t = chrono::DateTime::from_timestamp(secs, 0)?;
        Some(json!(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
    }
}

impl ToJson for meta::MicroTime {
    fn to_json(&self) -> Option<Value> {
        let secs = self.seconds.filter(|s| *s != 0)?;
        let t = chrono::DateTime::from_timestamp(secs, self.nanos.unwrap_or(0).max(0) as u32)?;
        Some(json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
    }
}

/// Go `[]byte` values are base64 strings in JSON.
fn bytes_map(m: &BTreeMap<String, Vec<u8>>) -> Option<Value> {
    let b64 = base64::engine::general_purpose::STANDARD;
    (!m.is_empty()).then(|| Value::Object(m.iter().map(|(k, v)| (k.clone(), json!(b64.encode(v)))).collect()))
}

/// snake_case field name to the lowerCamelCase JSON name.
fn camel(field: &str) -> String {
    let field = field.trim_start_matches("r#");
    let mut out = String::with_capacity(field.len());
    let mut upper = false;
    for c in field.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// One `impl ToJson` per message: its fields, with the JSON name where it is not
/// the camelCase of the field (`host_ip` is `hostIP`). `@keep` marks messages that
/// mean something even when empty (`emptyDir: {}`). `@inline` fields are embedded
/// messages whose fields sit directly in the parent (Go struct embedding).
macro_rules! to_json {
    ($($(@$keep:ident)? $ty:ty { $($field:ident $(= $name:literal)? $(@$inline:ident)?),* $(,)? })*) => {$(
        impl ToJson for $ty {
            #[allow(unused_mut)]
            fn to_json(&self) -> Option<Value> {
                let mut m = Map::new();
                $(
                    to_json!(@field m, self.$field, stringify!($field) $(, $name)? $(; $inline)?);
                )*
                let keep = false $(|| stringify!($keep) == "keep")?;
                (keep || !m.is_empty()).then(|| Value::Object(m))
            }
        }
    )*};
    (@field $m:ident, $v:expr, $f:expr, $name:literal) => {
        if let Some(v) = $v.to_json() { $m.insert($name.to_string(), v); }
    };
    (@field $m:ident, $v:expr, $f:expr; inline) => {
        if let Some(Value::Object(inner)) = $v.to_json() { $m.extend(inner); }
    };
    (@field $m:ident, $v:expr, $f:expr) => {
        if let Some(v) = $v.to_json() { $m.insert(camel($f), v); }
    };
}

to_json! {
    meta::ObjectMeta { name, generate_name, namespace, uid, resource_version, generation, creation_timestamp, deletion_timestamp, deletion_grace_period_seconds, labels, annotations, owner_references, finalizers }
    meta::OwnerReference { api_version, kind, name, uid, controller, block_owner_deletion }
    @keep meta::LabelSelector { match_labels, match_expressions }
    meta::LabelSelectorRequirement { key, operator, values }
    meta::DeleteOptions { grace_period_seconds, preconditions, orphan_dependents, propagation_policy, dry_run }
    meta::Preconditions { uid, resource_version }

    core::Pod { metadata, spec, status }
    core::PodTemplateSpec { metadata, spec }
    @keep core::PodSpec {
        volumes, init_containers, containers, restart_policy, termination_grace_period_seconds, active_deadline_seconds,
        dns_policy, node_selector, service_account_name, service_account, automount_service_account_token, node_name,
        host_network, host_pid = "hostPID", host_ipc = "hostIPC", share_process_namespace, security_context,
        image_pull_secrets, hostname, subdomain, affinity, scheduler_name, tolerations, host_aliases, priority_class_name,
        priority, dns_config, readiness_gates, runtime_class_name, enable_service_links, preemption_policy, overhead,
        topology_spread_constraints, set_hostname_as_fqdn = "setHostnameAsFQDN", host_users, scheduling_gates,
    }
    core::Container {
        name, image, command, args, working_dir, ports, env_from, env, resources, restart_policy, volume_mounts,
        liveness_probe, readiness_probe, startup_probe, lifecycle, termination_message_path, termination_message_policy,
        image_pull_policy, security_context, stdin, stdin_once, tty,
    }
    core::ContainerPort { name, host_port, container_port, protocol, host_ip = "hostIP" }
    core::EnvVar { name, value, value_from }
    core::EnvVarSource { field_ref, resource_field_ref, config_map_key_ref, secret_key_ref }
    core::ObjectFieldSelector { api_version, field_path }
    core::ResourceFieldSelector { container_name, resource, divisor }
    core::ConfigMapKeySelector { local_object_reference @inline, key, optional }
    core::SecretKeySelector { local_object_reference @inline, key, optional }
    core::EnvFromSource { prefix, config_map_ref, secret_ref }
    @keep core::ConfigMapEnvSource { local_object_reference @inline, optional }
    @keep core::SecretEnvSource { local_object_reference @inline, optional }
    @keep core::ResourceRequirements { limits, requests }
    core::VolumeMount { name, read_only, mount_path, sub_path, mount_propagation, sub_path_expr }
    core::Volume { name, volume_source @inline }
    core::VolumeSource { host_path, empty_dir, secret, persistent_volume_claim, downward_api = "downwardAPI", config_map, projected }
    @keep core::ConfigMapVolumeSource { local_object_reference @inline, items, default_mode, optional }
    @keep core::SecretVolumeSource { secret_name, items, default_mode, optional }
    @keep core::EmptyDirVolumeSource { medium, size_limit }
    core::HostPathVolumeSource { path, r#type }
    core::PersistentVolumeClaimVolumeSource { claim_name, read_only }
    @keep core::DownwardAPIVolumeSource { items, default_mode }
    core::DownwardAPIVolumeFile { path, field_ref, resource_field_ref, mode }
    @keep core::ProjectedVolumeSource { sources, default_mode }
    core::VolumeProjection { secret, config_map, downward_api = "downwardAPI", service_account_token }
    @keep core::SecretProjection { local_object_reference @inline, items, optional }
    @keep core::ConfigMapProjection { local_object_reference @inline, items, optional }
    core::DownwardAPIProjection { items }
    core::ServiceAccountTokenProjection { audience, expiration_seconds, path }
    core::KeyToPath { key, path, mode }
    core::Probe { handler @inline, initial_delay_seconds, timeout_seconds, period_seconds, success_threshold, failure_threshold, termination_grace_period_seconds }
    core::ProbeHandler { exec, http_get, tcp_socket, grpc }
    core::LifecycleHandler { exec, http_get, tcp_socket, sleep }
    core::Lifecycle { post_start, pre_stop, stop_signal }
    core::SleepAction { seconds }
    @keep core::ExecAction { command }
    core::HttpGetAction { path, port, host, scheme, http_headers }
    core::HttpHeader { name, value }
    core::TcpSocketAction { port, host }
    core::GrpcAction { port, service }
    core::Toleration { key, operator, value, effect, toleration_seconds }
    @keep core::LocalObjectReference { name }
    core::HostAlias { ip, hostnames }
    core::PodDnsConfig { nameservers, searches, options }
    core::PodDnsConfigOption { name, value }
    core::PodReadinessGate { condition_type }
    core::PodSchedulingGate { name }
    core::TopologySpreadConstraint { max_skew, topology_key, when_unsatisfiable, label_selector, min_domains, node_affinity_policy, node_taints_policy, match_label_keys }
    core::Affinity { node_affinity, pod_affinity, pod_anti_affinity }
    core::NodeAffinity { required_during_scheduling_ignored_during_execution, preferred_during_scheduling_ignored_during_execution }
    core::NodeSelector { node_selector_terms }
    @keep core::NodeSelectorTerm { match_expressions, match_fields }
    core::NodeSelectorRequirement { key, operator, values }
    core::PreferredSchedulingTerm { weight, preference }
    core::PodAffinity { required_during_scheduling_ignored_during_execution, preferred_during_scheduling_ignored_during_execution }
    core::PodAntiAffinity { required_during_scheduling_ignored_during_execution, preferred_during_scheduling_ignored_during_execution }
    core::PodAffinityTerm { label_selector, namespaces, topology_key, namespace_selector, match_label_keys, mismatch_label_keys }
    core::WeightedPodAffinityTerm { weight, pod_affinity_term }
    @keep core::SecurityContext { capabilities, privileged, run_as_user, run_as_group, run_as_non_root, read_only_root_filesystem, allow_privilege_escalation, proc_mount, seccomp_profile }
    core::Capabilities { add, drop }
    core::SeccompProfile { r#type, localhost_profile }
    @keep core::PodSecurityContext { run_as_user, run_as_group, run_as_non_root, supplemental_groups, fs_group, sysctls, fs_group_change_policy, seccomp_profile }
    core::Sysctl { name, value }
    core::PodStatus { phase, conditions, message, reason, nominated_node_name, host_ip = "hostIP", pod_ip = "podIP", start_time, init_container_statuses, container_statuses, qos_class }
    core::PodCondition { r#type, status, last_probe_time, last_transition_time, reason, message }
    core::ContainerStatus { name, state, last_state, ready, restart_count, image, image_id = "imageID", container_id = "containerID", started }
    core::ContainerState { waiting, running, terminated }
    @keep core::ContainerStateWaiting { reason, message }
    @keep core::ContainerStateRunning { started_at }
    @keep core::ContainerStateTerminated { exit_code, signal, reason, message, started_at, finished_at, container_id = "containerID" }

    core::Service { metadata, spec, status }
    core::ServiceSpec {
        ports, selector, cluster_ip = "clusterIP", cluster_ips = "clusterIPs", r#type, external_ips = "externalIPs",
        session_affinity, load_balancer_ip = "loadBalancerIP", load_balancer_source_ranges, external_name,
        external_traffic_policy, health_check_node_port, publish_not_ready_addresses, ip_families, ip_family_policy,
        allocate_load_balancer_node_ports, load_balancer_class, internal_traffic_policy,
    }
    core::ServicePort { name, protocol, app_protocol, port, target_port, node_port }
    core::ServiceStatus { load_balancer }
    core::LoadBalancerStatus { ingress }
    core::LoadBalancerIngress { ip, hostname }
    core::Namespace { metadata, spec, status }
    core::NamespaceSpec { finalizers }
    core::NamespaceStatus { phase }
    core::ServiceAccount { metadata, secrets, image_pull_secrets, automount_service_account_token }
    core::Binding { metadata, target }
    core::ObjectReference { kind, namespace, name, uid, api_version, resource_version, field_path }
    core::Event { metadata, involved_object, reason, message, source, first_timestamp, last_timestamp, count, r#type, event_time, action, related, reporting_component, reporting_instance }
    core::EventSource { component, host }

    apps::Deployment { metadata, spec, status }
    @keep apps::DeploymentSpec { replicas, selector, template, strategy, min_ready_seconds, revision_history_limit, paused, progress_deadline_seconds }
    apps::DeploymentStrategy { r#type, rolling_update }
    apps::RollingUpdateDeployment { max_unavailable, max_surge }
    apps::DeploymentStatus { observed_generation, replicas, updated_replicas, ready_replicas, available_replicas, unavailable_replicas }
    apps::ReplicaSet { metadata, spec, status }
    @keep apps::ReplicaSetSpec { replicas, min_ready_seconds, selector, template }
    apps::ReplicaSetStatus { replicas, fully_labeled_replicas, ready_replicas, available_replicas, observed_generation }
    apps::StatefulSet { metadata, spec, status }
    @keep apps::StatefulSetSpec { replicas, selector, template, service_name, pod_management_policy, update_strategy, revision_history_limit, min_ready_seconds }
    apps::StatefulSetUpdateStrategy { r#type, rolling_update }
    apps::RollingUpdateStatefulSetStrategy { partition, max_unavailable }
    apps::StatefulSetStatus { observed_generation, replicas, ready_replicas, current_replicas, updated_replicas }
    apps::DaemonSet { metadata, spec, status }
    @keep apps::DaemonSetSpec { selector, template, update_strategy, min_ready_seconds, revision_history_limit }
    apps::DaemonSetUpdateStrategy { r#type, rolling_update }
    apps::RollingUpdateDaemonSet { max_unavailable, max_surge }
    apps::DaemonSetStatus { current_number_scheduled, number_misscheduled, desired_number_scheduled, number_ready, observed_generation, updated_number_scheduled, number_available, number_unavailable }

    batch::Job { metadata, spec, status }
    @keep batch::JobSpec { parallelism, completions, active_deadline_seconds, backoff_limit, backoff_limit_per_index, max_failed_indexes, selector, manual_selector, template, ttl_seconds_after_finished, completion_mode, suspend, pod_replacement_policy }
    batch::JobStatus { start_time, completion_time, active, succeeded, failed, ready }
    batch::CronJob { metadata, spec, status }
    @keep batch::CronJobSpec { schedule, time_zone, starting_deadline_seconds, concurrency_policy, suspend, job_template, successful_jobs_history_limit, failed_jobs_history_limit }
    @keep batch::JobTemplateSpec { metadata, spec }
    batch::CronJobStatus { active, last_schedule_time, last_successful_time }

    coordination::Lease { metadata, spec }
    coordination::LeaseSpec { holder_identity, lease_duration_seconds, acquire_time, renew_time, lease_transitions }
    policy::Eviction { metadata, delete_options }
    autoscaling::Scale { metadata, spec }
    @keep autoscaling::ScaleSpec { replicas }
}

impl ToJson for core::ConfigMap {
    fn to_json(&self) -> Option<Value> {
        let mut m = Map::new();
        for (k, v) in [("metadata", self.metadata.to_json()), ("immutable", self.immutable.to_json()), ("data", self.data.to_json()), ("binaryData", bytes_map(&self.binary_data))] {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
        Some(Value::Object(m))
    }
}

impl ToJson for core::Secret {
    fn to_json(&self) -> Option<Value> {
        let mut m = Map::new();
        for (k, v) in [
            ("metadata", self.metadata.to_json()),
            ("immutable", self.immutable.to_json()),
            ("data", bytes_map(&self.data)),
            ("stringData", self.string_data.to_json()),
            ("type", self.r#type.to_json()),
        ] {
            if let Some(v) = v {
                m.insert(k.into(), v);
            }
        }
        Some(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope<M: Message>(api_version: &str, kind: &str, m: &M) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(k8s_pb::apimachinery::pkg::runtime::TypeMeta { api_version: Some(api_version.into()), kind: Some(kind.into()) }),
            raw: Some(m.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        let mut out = MAGIC.to_vec();
        out.extend(unknown.encode_to_vec());
        out
    }

    fn meta(name: &str, labels: &[(&str, &str)]) -> Option<meta::ObjectMeta> {
        Some(meta::ObjectMeta {
            name: Some(name.into()),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            creation_timestamp: Some(meta::Time { seconds: Some(0), nanos: Some(0) }),
            ..Default::default()
        })
    }

    #[test]
    fn create_deployment_body() {
        let d = apps::Deployment {
            metadata: meta("web", &[("app", "web")]),
            spec: Some(apps::DeploymentSpec {
                replicas: Some(2),
                selector: Some(meta::LabelSelector { match_labels: [("app".to_string(), "web".to_string())].into(), ..Default::default() }),
                template: Some(core::PodTemplateSpec {
                    metadata: meta("", &[("app", "web")]),
                    spec: Some(core::PodSpec {
                        containers: vec![core::Container { name: Some("nginx".into()), image: Some("nginx".into()), resources: Some(Default::default()), ..Default::default() }],
                        ..Default::default()
                    }),
                }),
                strategy: Some(Default::default()),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let got = decode_object(&envelope("apps/v1", "Deployment", &d)).unwrap();
        assert_eq!(got, json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}}, "template": {"metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx", "resources": {}}]}}},
        }));
    }

    #[test]
    fn run_pod_body() {
        let p = core::Pod {
            metadata: meta("runner", &[("run", "runner")]),
            spec: Some(core::PodSpec {
                containers: vec![core::Container {
                    name: Some("runner".into()),
                    image: Some("busybox".into()),
                    args: vec!["sleep".into(), "10".into()],
                    ports: vec![core::ContainerPort { container_port: Some(80), ..Default::default() }],
                    env: vec![core::EnvVar { name: Some("A".into()), value: Some("b".into()), ..Default::default() }],
                    ..Default::default()
                }],
                restart_policy: Some("Always".into()),
                dns_policy: Some("ClusterFirst".into()),
                ..Default::default()
            }),
            status: Some(Default::default()),
        };
        let got = decode_object(&envelope("v1", "Pod", &p)).unwrap();
        assert_eq!(got["spec"], json!({"containers": [{"name": "runner", "image": "busybox", "args": ["sleep", "10"], "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "b"}]}], "restartPolicy": "Always", "dnsPolicy": "ClusterFirst"}));
    }

    #[test]
    fn configmap_secret_and_service_bodies() {
        let cm = core::ConfigMap { metadata: meta("c", &[]), data: [("a".to_string(), "1".to_string())].into(), binary_data: [("b".to_string(), b"hi".to_vec())].into(), ..Default::default() };
        assert_eq!(decode_object(&envelope("v1", "ConfigMap", &cm)).unwrap(), json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}, "binaryData": {"b": "aGk="}}));
        let s = core::Secret { metadata: meta("s", &[]), data: [("p".to_string(), b"s3cret".to_vec())].into(), r#type: Some("Opaque".into()), ..Default::default() };
        assert_eq!(decode_object(&envelope("v1", "Secret", &s)).unwrap()["data"]["p"], "czNjcmV0");
        let svc = core::Service {
            metadata: meta("svc", &[]),
            spec: Some(core::ServiceSpec {
                ports: vec![
                    core::ServicePort { port: Some(80), target_port: Some(IntOrString { r#type: Some(0), int_val: Some(8080), str_val: None }), protocol: Some("TCP".into()), ..Default::default() },
                    core::ServicePort { name: Some("h".into()), port: Some(81), target_port: Some(IntOrString { r#type: Some(1), int_val: None, str_val: Some("http".into()) }), ..Default::default() },
                ],
                selector: [("app".to_string(), "web".to_string())].into(),
                r#type: Some("ClusterIP".into()),
                cluster_ip: Some(String::new()),
                ..Default::default()
            }),
            status: None,
        };
        let got = decode_object(&envelope("v1", "Service", &svc)).unwrap();
        assert_eq!(got["spec"], json!({"ports": [{"port": 80, "targetPort": 8080, "protocol": "TCP"}, {"name": "h", "port": 81, "targetPort": "http"}], "selector": {"app": "web"}, "type": "ClusterIP"}));
    }

    #[test]
    fn job_and_cronjob_bodies_keep_empty_volume_sources() {
        let tmpl = core::PodTemplateSpec {
            metadata: None,
            spec: Some(core::PodSpec {
                restart_policy: Some("Never".into()),
                containers: vec![core::Container { name: Some("j".into()), image: Some("i".into()), ..Default::default() }],
                volumes: vec![core::Volume { name: Some("scratch".into()), volume_source: Some(core::VolumeSource { empty_dir: Some(Default::default()), ..Default::default() }) }],
                ..Default::default()
            }),
        };
        let job = batch::Job { metadata: meta("j", &[]), spec: Some(batch::JobSpec { template: Some(tmpl.clone()), ..Default::default() }), status: None };
        let got = decode_object(&envelope("batch/v1", "Job", &job)).unwrap();
        assert_eq!(got["spec"]["template"]["spec"]["volumes"], json!([{"name": "scratch", "emptyDir": {}}]));
        let cj = batch::CronJob {
            metadata: meta("c", &[]),
            spec: Some(batch::CronJobSpec { schedule: Some("*/1 * * * *".into()), job_template: Some(batch::JobTemplateSpec { metadata: None, spec: Some(batch::JobSpec { template: Some(tmpl), ..Default::default() }) }), ..Default::default() }),
            status: None,
        };
        let got = decode_object(&envelope("batch/v1", "CronJob", &cj)).unwrap();
        assert_eq!(got["spec"]["schedule"], "*/1 * * * *");
        assert_eq!(got["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"], "Never");
    }

    #[test]
    fn bad_bodies_are_errors() {
        assert!(matches!(decode_object(b"{}"), Err(ProtobufError::BadMagic)));
        assert!(decode_object(b"k8s\0\x0a\xff\xff").is_err());
        let cm = core::ConfigMap::default();
        assert!(matches!(decode_object(&envelope("example.com/v1", "Widget", &cm)), Err(ProtobufError::UnsupportedKind(_))));
        let mut truncated = envelope("v1", "ConfigMap", &core::ConfigMap { metadata: meta("c", &[]), ..Default::default() });
        truncated.truncate(truncated.len() - 3);
        assert!(decode_object(&truncated).is_err());
    }
}
