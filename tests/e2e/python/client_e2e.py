"""The official Python client (the pinned `kubernetes` release) against a fresh wasmkube
cluster: typed CoreV1Api / AppsV1Api / BatchV1Api calls for each kind the client's users
reach for, `kubernetes.utils.create_from_yaml` / `create_from_dict` /
`create_from_directory` on the files in yaml/ (and with server-side apply), a watch, and
the client's quantity helpers.

Environment: KUBECONFIG (the cluster), WEB_IMAGE (the WAGI hello module, pushed to the
cluster's registry) and JOB_IMAGE (the run-to-completion job module). `@WEB_IMAGE@` and
`@JOB_IMAGE@` in the YAML files are replaced by them before the client reads the files.

Every check runs (or those named as arguments), whatever failed before it; the last line
says `N passed, M failed`, and the exit status is non-zero unless all passed.
"""

import os
import shutil
import sys
import tempfile
import time
import traceback
from decimal import Decimal

from kubernetes import client, config, utils, watch
from kubernetes.client.rest import ApiException
from kubernetes.utils.quantity import format_quantity, parse_quantity

HERE = os.path.dirname(os.path.abspath(__file__))
WEB_IMAGE = os.environ["WEB_IMAGE"]
JOB_IMAGE = os.environ["JOB_IMAGE"]
NS = "default"

config.load_kube_config()
api_client = client.ApiClient()
core = client.CoreV1Api(api_client)
apps = client.AppsV1Api(api_client)
batch = client.BatchV1Api(api_client)

CHECKS = []


def check(fn):
    CHECKS.append(fn)
    return fn


def wait_until(what, probe, on, timeout=90):
    """Checks `probe` until it returns something truthy (returned), again each time the
    objects of `on` change: `on` is a list call and its arguments, e.g.
    `(apps.list_namespaced_deployment, NS)`, watched from the resource version read before
    each check, so no change between check and watch is missed. Fails after `timeout` s
    with the last value the probe saw."""
    deadline = time.monotonic() + timeout
    list_call, *args = on
    last = None
    while True:
        since = list_call(*args, limit=1).metadata.resource_version
        try:
            last = probe()
        except ApiException as e:
            last = e
        else:
            if last:
                return last
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last saw {last!r}")
        w = watch.Watch()
        for _ in w.stream(list_call, *args, resource_version=since, timeout_seconds=max(1, int(remaining))):
            w.stop()


def status_of(call, *args, **kwargs):
    """The HTTP status an API call fails with (AssertionError if it succeeds)."""
    try:
        call(*args, **kwargs)
    except ApiException as e:
        return e.status
    raise AssertionError(f"{call.__name__}{args} succeeded")


def gone(read, *args):
    """A probe for wait_until: true once `read(*args)` answers 404."""

    def probe():
        try:
            read(*args)
        except ApiException as e:
            if e.status == 404:
                return True
            raise
        return False

    return probe


def meta(name, **labels):
    return client.V1ObjectMeta(name=name, labels=labels or None)


def web_template(app, annotations=None):
    return client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": app}, annotations={"wasmkube.io/executor": "wagi", **(annotations or {})}),
        spec=client.V1PodSpec(
            termination_grace_period_seconds=1,
            containers=[client.V1Container(name="web", image=WEB_IMAGE, ports=[client.V1ContainerPort(container_port=8080, name="http")])],
        ),
    )


def names(items):
    return sorted(i.metadata.name for i in items)


def pods_of(app, namespace=NS):
    """Pods labelled app=<app> that are not on their way out."""
    pods = core.list_namespaced_pod(namespace, label_selector=f"app={app}").items
    return [p for p in pods if p.metadata.deletion_timestamp is None]


def rendered(*parts):
    """A copy of yaml/<parts> (a file or a directory) with the image placeholders
    replaced, in a temporary directory removed at exit."""
    src = os.path.join(HERE, "yaml", *parts)
    dst = os.path.join(SCRATCH, *parts)
    files = [(src, dst)] if os.path.isfile(src) else [(os.path.join(src, f), os.path.join(dst, f)) for f in sorted(os.listdir(src))]
    for s, d in files:
        os.makedirs(os.path.dirname(d), exist_ok=True)
        with open(s) as f:
            text = f.read().replace("@WEB_IMAGE@", WEB_IMAGE).replace("@JOB_IMAGE@", JOB_IMAGE)
        with open(d, "w") as f:
            f.write(text)
    return dst


SCRATCH = tempfile.mkdtemp(prefix="client-e2e-")


# --- typed APIs -------------------------------------------------------------------------


@check
def nodes_list_and_read():
    nodes = core.list_node().items
    assert len(nodes) >= 1, nodes
    node = core.read_node(nodes[0].metadata.name)
    assert node.metadata.uid == nodes[0].metadata.uid
    ready = [c for c in node.status.conditions if c.type == "Ready"]
    assert len(ready) == 1 and ready[0].status == "True", node.status.conditions
    assert parse_quantity(node.status.capacity["pods"]) > 0, node.status.capacity
    assert node.status.node_info is not None and node.status.node_info.kubelet_version, node.status.node_info
    by_field = core.list_node(field_selector=f"metadata.name={node.metadata.name}").items
    assert names(by_field) == [node.metadata.name], names(by_field)
    assert status_of(core.read_node, "no-such-node") == 404


@check
def config_map_create_read_patch_replace_list_delete():
    made = core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("py-cm", suite="typed"), data={"a": "1"}))
    assert made.metadata.uid and made.metadata.resource_version and made.metadata.creation_timestamp, made.metadata
    assert made.data == {"a": "1"}, made.data
    assert core.read_namespaced_config_map("py-cm", NS).data == {"a": "1"}

    patched = core.patch_namespaced_config_map("py-cm", NS, {"data": {"b": "2"}, "metadata": {"labels": {"patched": "yes"}}})
    assert patched.data == {"a": "1", "b": "2"}, patched.data
    assert patched.metadata.labels == {"suite": "typed", "patched": "yes"}, patched.metadata.labels

    patched.data = {"c": "3"}
    replaced = core.replace_namespaced_config_map("py-cm", NS, patched)
    assert replaced.data == {"c": "3"}, replaced.data
    assert int(replaced.metadata.resource_version) > int(patched.metadata.resource_version)
    # A replace from the stale copy is refused: optimistic concurrency.
    patched.data = {"stale": "yes"}
    assert status_of(core.replace_namespaced_config_map, "py-cm", NS, patched) == 409

    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("py-cm-other", suite="other")))
    assert names(core.list_namespaced_config_map(NS, label_selector="suite=typed").items) == ["py-cm"]
    assert "py-cm" in names(core.list_config_map_for_all_namespaces(label_selector="patched=yes").items)

    deleted = core.delete_namespaced_config_map("py-cm", NS)
    assert deleted.status == "Success" or deleted.kind == "ConfigMap", deleted
    try:
        core.read_namespaced_config_map("py-cm", NS)
        raise AssertionError("py-cm still there after delete")
    except ApiException as e:
        assert e.status == 404 and e.reason == "Not Found", (e.status, e.reason)
        assert '"reason":"NotFound"' in e.body and 'configmaps \\"py-cm\\" not found' in e.body, e.body
    core.delete_namespaced_config_map("py-cm-other", NS)


@check
def service_create_read_patch_replace_list_delete():
    svc = client.V1Service(
        metadata=meta("py-svc", suite="typed"),
        spec=client.V1ServiceSpec(selector={"app": "py-svc"}, ports=[client.V1ServicePort(name="http", port=80, target_port=8080)]),
    )
    made = core.create_namespaced_service(NS, svc)
    ip = made.spec.cluster_ip
    assert ip and ip != "None" and made.spec.cluster_i_ps == [ip], made.spec
    assert made.spec.type == "ClusterIP" and made.spec.session_affinity == "None", made.spec
    assert made.spec.ports[0].protocol == "TCP" and made.spec.ports[0].target_port == 8080, made.spec.ports

    read = core.read_namespaced_service("py-svc", NS)
    assert read.spec.cluster_ip == ip and read.metadata.uid == made.metadata.uid
    patched = core.patch_namespaced_service("py-svc", NS, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels == {"suite": "typed", "patched": "yes"}, patched.metadata.labels

    patched.spec.ports = [client.V1ServicePort(name="http", port=8081, target_port="http")]
    replaced = core.replace_namespaced_service("py-svc", NS, patched)
    assert [(p.port, p.target_port) for p in replaced.spec.ports] == [(8081, "http")], replaced.spec.ports
    assert replaced.spec.cluster_ip == ip, "the ClusterIP must stay"

    listed = core.list_namespaced_service(NS, label_selector="patched=yes").items
    assert names(listed) == ["py-svc"], names(listed)
    assert "kubernetes" in names(core.list_service_for_all_namespaces().items)

    core.delete_namespaced_service("py-svc", NS)
    wait_until("py-svc deleted", gone(core.read_namespaced_service, "py-svc", NS), (core.list_namespaced_service, NS))


@check
def deployment_rolls_out_scales_updates_and_deletes():
    dep = client.V1Deployment(
        metadata=meta("py-deploy", suite="typed"),
        spec=client.V1DeploymentSpec(replicas=1, selector=client.V1LabelSelector(match_labels={"app": "py-deploy"}), template=web_template("py-deploy")),
    )
    made = apps.create_namespaced_deployment(NS, dep)
    assert made.spec.strategy.type == "RollingUpdate" and made.spec.revision_history_limit == 10, made.spec
    wait_until("py-deploy ready", lambda: apps.read_namespaced_deployment_status("py-deploy", NS).status.ready_replicas == 1, (apps.list_namespaced_deployment, NS))
    assert len(pods_of("py-deploy")) == 1

    scale = apps.patch_namespaced_deployment_scale("py-deploy", NS, {"spec": {"replicas": 2}})
    assert scale.spec.replicas == 2, scale
    wait_until("py-deploy at 2 ready", lambda: apps.read_namespaced_deployment("py-deploy", NS).status.ready_replicas == 2, (apps.list_namespaced_deployment, NS))
    assert apps.read_namespaced_deployment_scale("py-deploy", NS).status.replicas == 2

    patched = apps.patch_namespaced_deployment("py-deploy", NS, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels == {"suite": "typed", "patched": "yes"}, patched.metadata.labels

    # A new template: a new generation, rolled out to every replica.
    patched.spec.template = web_template("py-deploy", {"rev": "2"})
    replaced = apps.replace_namespaced_deployment("py-deploy", NS, patched)
    assert replaced.metadata.generation > made.metadata.generation, (replaced.metadata.generation, made.metadata.generation)

    def rolled_out():
        d = apps.read_namespaced_deployment("py-deploy", NS)
        s = d.status
        return s.observed_generation == d.metadata.generation and s.updated_replicas == 2 and s.ready_replicas == 2 and s.replicas == 2 and d

    done = wait_until("py-deploy rolled out", rolled_out, (apps.list_namespaced_deployment, NS), 120)
    assert [c.status for c in done.status.conditions if c.type == "Available"] == ["True"], done.status.conditions
    assert all(p.metadata.annotations.get("rev") == "2" for p in pods_of("py-deploy"))
    sets = apps.list_namespaced_replica_set(NS, label_selector="app=py-deploy").items
    assert len(sets) == 2 and all(rs.metadata.owner_references[0].name == "py-deploy" for rs in sets), names(sets)

    assert names(apps.list_namespaced_deployment(NS, label_selector="suite=typed").items) == ["py-deploy"]
    assert "py-deploy" in names(apps.list_deployment_for_all_namespaces().items)

    apps.delete_namespaced_deployment("py-deploy", NS, body=client.V1DeleteOptions(propagation_policy="Foreground"))
    wait_until("py-deploy deleted", gone(apps.read_namespaced_deployment, "py-deploy", NS), (apps.list_namespaced_deployment, NS))
    assert apps.list_namespaced_replica_set(NS, label_selector="app=py-deploy").items == []


@check
def daemon_set_runs_on_every_node_updates_and_deletes():
    ds = client.V1DaemonSet(
        metadata=meta("py-ds", suite="typed"),
        spec=client.V1DaemonSetSpec(selector=client.V1LabelSelector(match_labels={"app": "py-ds"}), template=web_template("py-ds")),
    )
    made = apps.create_namespaced_daemon_set(NS, ds)
    assert made.spec.update_strategy.type == "RollingUpdate", made.spec.update_strategy
    nodes = len(core.list_node().items)

    def all_ready():
        s = apps.read_namespaced_daemon_set_status("py-ds", NS).status
        return s.desired_number_scheduled == nodes and s.number_ready == nodes and s

    wait_until("py-ds ready on every node", all_ready, (apps.list_namespaced_daemon_set, NS))
    assert len(pods_of("py-ds")) == nodes

    patched = apps.patch_namespaced_daemon_set("py-ds", NS, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels == {"suite": "typed", "patched": "yes"}, patched.metadata.labels
    patched.spec.template = web_template("py-ds", {"rev": "2"})
    replaced = apps.replace_namespaced_daemon_set("py-ds", NS, patched)
    assert replaced.metadata.generation == made.metadata.generation + 1, (replaced.metadata.generation, made.metadata.generation)

    def updated():
        d = apps.read_namespaced_daemon_set("py-ds", NS)
        s = d.status
        return s.observed_generation == d.metadata.generation and s.updated_number_scheduled == nodes and s.number_ready == nodes

    wait_until("py-ds updated", updated, (apps.list_namespaced_daemon_set, NS), 120)
    wait_until("py-ds pods of the new template", lambda: [p.metadata.annotations.get("rev") for p in pods_of("py-ds")] == ["2"] * nodes, (core.list_namespaced_pod, NS))

    assert names(apps.list_namespaced_daemon_set(NS, label_selector="patched=yes").items) == ["py-ds"]
    assert "py-ds" in names(apps.list_daemon_set_for_all_namespaces().items)
    apps.delete_namespaced_daemon_set("py-ds", NS)
    wait_until("py-ds deleted", gone(apps.read_namespaced_daemon_set, "py-ds", NS), (apps.list_namespaced_daemon_set, NS))
    wait_until("py-ds pods gone", lambda: pods_of("py-ds") == [], (core.list_namespaced_pod, NS))


@check
def job_runs_to_completion_and_deletes_with_its_pods():
    job = client.V1Job(
        metadata=meta("py-job", suite="typed"),
        spec=client.V1JobSpec(
            backoff_limit=1,
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(restart_policy="Never", containers=[client.V1Container(name="main", image=JOB_IMAGE, args=["0"])])
            ),
        ),
    )
    made = batch.create_namespaced_job(NS, job)
    assert made.spec.completions == 1 and made.spec.parallelism == 1, made.spec
    # The API server picks the selector and labels the template with it.
    uid = made.metadata.uid
    assert made.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}, made.spec.selector
    assert made.spec.template.metadata.labels["job-name"] == "py-job", made.spec.template.metadata.labels

    def complete():
        s = batch.read_namespaced_job_status("py-job", NS).status
        return s.succeeded == 1 and [c.status for c in (s.conditions or []) if c.type == "Complete"] == ["True"] and s

    status = wait_until("py-job complete", complete, (batch.list_namespaced_job, NS))
    assert status.completion_time is not None and status.start_time is not None, status
    pods = core.list_namespaced_pod(NS, label_selector="job-name=py-job").items
    assert [p.status.phase for p in pods] == ["Succeeded"], [p.status.phase for p in pods]
    assert pods[0].metadata.owner_references[0].kind == "Job" and pods[0].metadata.owner_references[0].uid == uid

    patched = batch.patch_namespaced_job("py-job", NS, {"metadata": {"labels": {"patched": "yes"}}})
    assert patched.metadata.labels["patched"] == "yes", patched.metadata.labels
    patched.metadata.annotations = {"note": "replaced"}
    replaced = batch.replace_namespaced_job("py-job", NS, patched)
    assert replaced.metadata.annotations == {"note": "replaced"}, replaced.metadata.annotations
    # The template of a Job is immutable.
    replaced.spec.template.spec.containers[0].args = ["1"]
    assert status_of(batch.replace_namespaced_job, "py-job", NS, replaced) == 422

    assert names(batch.list_namespaced_job(NS, label_selector="patched=yes").items) == ["py-job"]
    assert "py-job" in names(batch.list_job_for_all_namespaces().items)
    batch.delete_namespaced_job("py-job", NS, propagation_policy="Background")
    wait_until("py-job deleted", gone(batch.read_namespaced_job, "py-job", NS), (batch.list_namespaced_job, NS))
    wait_until("py-job's pods gone", lambda: core.list_namespaced_pod(NS, label_selector="job-name=py-job").items == [], (core.list_namespaced_pod, NS))


@check
def replication_controller_scales_updates_and_deletes():
    rc = client.V1ReplicationController(
        metadata=client.V1ObjectMeta(name="py-rc"),
        spec=client.V1ReplicationControllerSpec(replicas=1, template=web_template("py-rc")),
    )
    made = core.create_namespaced_replication_controller(NS, rc)
    # No selector and no labels given: both come from the template's labels.
    assert made.spec.selector == {"app": "py-rc"} and made.metadata.labels == {"app": "py-rc"}, (made.spec.selector, made.metadata.labels)
    wait_until("py-rc ready", lambda: core.read_namespaced_replication_controller_status("py-rc", NS).status.ready_replicas == 1, (core.list_namespaced_replication_controller, NS))

    patched = core.patch_namespaced_replication_controller("py-rc", NS, {"spec": {"replicas": 2}})
    assert patched.spec.replicas == 2
    wait_until("py-rc at 2 ready", lambda: core.read_namespaced_replication_controller("py-rc", NS).status.ready_replicas == 2, (core.list_namespaced_replication_controller, NS))
    assert len(pods_of("py-rc")) == 2
    assert core.read_namespaced_replication_controller_scale("py-rc", NS).spec.replicas == 2

    current = core.read_namespaced_replication_controller("py-rc", NS)
    current.spec.replicas = 0
    replaced = core.replace_namespaced_replication_controller("py-rc", NS, current)
    assert replaced.spec.replicas == 0 and replaced.metadata.generation > made.metadata.generation
    wait_until("py-rc at 0", lambda: core.read_namespaced_replication_controller("py-rc", NS).status.replicas == 0, (core.list_namespaced_replication_controller, NS))
    wait_until("py-rc's pods gone", lambda: pods_of("py-rc") == [], (core.list_namespaced_pod, NS))

    assert names(core.list_namespaced_replication_controller(NS, label_selector="app=py-rc").items) == ["py-rc"]
    assert "py-rc" in names(core.list_replication_controller_for_all_namespaces().items)
    core.delete_namespaced_replication_controller("py-rc", NS)
    wait_until("py-rc deleted", gone(core.read_namespaced_replication_controller, "py-rc", NS), (core.list_namespaced_replication_controller, NS))


# --- kubernetes.utils: objects from YAML and dicts -------------------------------------


@check
def create_from_yaml_multi_document_file():
    created = utils.create_from_yaml(api_client, rendered("multi.yaml"))
    # One list per document that is not empty, in file order.
    kinds = [[type(o).__name__ for o in doc] for doc in created]
    assert kinds == [["V1ConfigMap"], ["V1Service"], ["V1Deployment"]], kinds
    assert core.read_namespaced_config_map("yaml-multi-settings", NS).data == {"greeting": "hello"}
    svc = core.read_namespaced_service("yaml-multi-web", NS)
    assert svc.spec.ports[0].target_port == "http" and svc.spec.cluster_ip, svc.spec
    wait_until("yaml-multi-web ready", lambda: apps.read_namespaced_deployment("yaml-multi-web", NS).status.ready_replicas == 1, (apps.list_namespaced_deployment, NS))

    # The Service selects the Deployment's pod: its endpoints name it, ready.
    def endpoint_addresses():
        subsets = core.read_namespaced_endpoints("yaml-multi-web", NS).subsets or []
        return [a.ip for s in subsets for a in (s.addresses or [])]

    pod_ips = [p.status.pod_ip for p in pods_of("yaml-multi-web")]
    wait_until("yaml-multi-web endpoints", lambda: endpoint_addresses() == pod_ips and pod_ips, (core.list_namespaced_endpoints, NS))

    apps.delete_namespaced_deployment("yaml-multi-web", NS)
    core.delete_namespaced_service("yaml-multi-web", NS)
    core.delete_namespaced_config_map("yaml-multi-settings", NS)


@check
def create_from_yaml_list_file():
    created = utils.create_from_yaml(api_client, rendered("list.yaml"))
    assert len(created) == 1, created
    assert [type(o).__name__ for o in created[0]] == ["V1ConfigMap", "V1Secret", "V1DaemonSet"], created[0]
    assert created[0][0].data == {"mode": "listed"}
    secret = core.read_namespaced_secret("yaml-list-secret", NS)
    # stringData is stored as data, base64 in transit.
    assert secret.data == {"token": "bm90LWEtc2VjcmV0"} and secret.type == "Opaque", (secret.data, secret.type)
    nodes = len(core.list_node().items)
    wait_until("yaml-list-agent ready", lambda: apps.read_namespaced_daemon_set("yaml-list-agent", NS).status.number_ready == nodes, (apps.list_namespaced_daemon_set, NS))
    apps.delete_namespaced_daemon_set("yaml-list-agent", NS)
    core.delete_namespaced_secret("yaml-list-secret", NS)
    core.delete_namespaced_config_map("yaml-list-settings", NS)


@check
def create_from_yaml_into_another_namespace():
    created = utils.create_from_yaml(api_client, rendered("namespaced.yaml"), namespace="yaml-elsewhere")
    placed = [(type(o).__name__, o.metadata.namespace) for doc in created for o in doc]
    assert placed == [("V1Namespace", None), ("V1ConfigMap", "yaml-elsewhere"), ("V1ReplicationController", "yaml-elsewhere"), ("V1ConfigMap", "default")], placed
    assert core.read_namespace("yaml-elsewhere").status.phase == "Active"
    assert core.read_namespaced_config_map("yaml-ns-settings", "yaml-elsewhere").data == {"where": "elsewhere"}
    assert core.read_namespaced_replication_controller("yaml-ns-rc", "yaml-elsewhere").spec.selector == {"app": "yaml-ns-rc"}
    assert status_of(core.read_namespaced_config_map, "yaml-ns-settings", NS) == 404
    assert core.read_namespaced_config_map("yaml-ns-pinned", NS).data == {"where": "default"}
    core.delete_namespaced_config_map("yaml-ns-pinned", NS)

    # Deleting the namespace takes its contents along, then the namespace itself.
    core.delete_namespace("yaml-elsewhere")
    wait_until("yaml-elsewhere deleted", gone(core.read_namespace, "yaml-elsewhere"), (core.list_namespace,), 120)
    assert core.list_namespaced_config_map("yaml-elsewhere").items == []


@check
def create_from_directory_creates_every_file():
    created = utils.create_from_directory(api_client, rendered("dir"))
    # One list per file (in directory order), each with one list per document.
    kinds = sorted(type(o).__name__ for per_file in created for doc in per_file for o in doc)
    assert kinds == ["V1ConfigMap", "V1Job", "V1Service"], kinds
    assert core.read_namespaced_config_map("yaml-dir-settings", NS).data == {"source": "directory"}
    svc = core.read_namespaced_service("yaml-dir-svc", NS)
    assert svc.spec.type == "NodePort" and 30000 <= svc.spec.ports[0].node_port <= 32767, svc.spec
    wait_until("yaml-dir-job complete", lambda: batch.read_namespaced_job("yaml-dir-job", NS).status.succeeded == 1, (batch.list_namespaced_job, NS))
    assert names(core.list_namespaced_config_map(NS, label_selector="suite=yaml-dir").items) == ["yaml-dir-settings"]

    # A second time, every file fails: one AlreadyExists per object, all collected.
    try:
        utils.create_from_directory(api_client, rendered("dir"))
        raise AssertionError("the directory was created twice")
    except utils.FailToCreateError as e:
        assert sorted(x.status for x in e.api_exceptions) == [409, 409, 409], [x.status for x in e.api_exceptions]

    batch.delete_namespaced_job("yaml-dir-job", NS, propagation_policy="Background")
    core.delete_namespaced_service("yaml-dir-svc", NS)
    core.delete_namespaced_config_map("yaml-dir-settings", NS)


@check
def create_from_yaml_conflict_raises_fail_to_create_error():
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("yaml-conflict"), data={"from": "api"}))
    try:
        utils.create_from_yaml(api_client, rendered("conflict.yaml"))
        raise AssertionError("created a ConfigMap that exists")
    except utils.FailToCreateError as e:
        assert len(e.api_exceptions) == 1, [x.status for x in e.api_exceptions]
        err = e.api_exceptions[0]
        assert err.status == 409 and err.reason == "Conflict", (err.status, err.reason)
        assert '"reason":"AlreadyExists"' in err.body, err.body
        assert 'configmaps \\"yaml-conflict\\" already exists' in err.body, err.body
        text = str(e)
        assert text.startswith("Error from server (Conflict): ") and 'configmaps \\"yaml-conflict\\" already exists' in text, text
    # The existing object is untouched; the document after the conflict was created.
    assert core.read_namespaced_config_map("yaml-conflict", NS).data == {"from": "api"}
    assert core.read_namespaced_service("yaml-conflict-after", NS).spec.ports[0].port == 8080
    core.delete_namespaced_service("yaml-conflict-after", NS)
    core.delete_namespaced_config_map("yaml-conflict", NS)


@check
def create_from_dict_single_object_and_typed_list():
    dep = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "dict-deploy"},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "dict-deploy"}},
            "template": {"metadata": {"labels": {"app": "dict-deploy"}}, "spec": {"containers": [{"name": "web", "image": WEB_IMAGE}]}},
        },
    }
    created = utils.create_from_dict(api_client, dep)
    assert [type(o).__name__ for o in created] == ["V1Deployment"] and created[0].spec.replicas == 0, created
    assert apps.read_namespaced_deployment("dict-deploy", NS).metadata.uid == created[0].metadata.uid

    # A typed list: its items take the list's apiVersion and kind.
    cms = {"apiVersion": "v1", "kind": "ConfigMapList", "items": [{"metadata": {"name": f"dict-cm-{i}", "labels": {"suite": "dict"}}, "data": {"i": str(i)}} for i in range(3)]}
    created = utils.create_from_dict(api_client, cms)
    assert [o.data for o in created] == [{"i": "0"}, {"i": "1"}, {"i": "2"}], created
    assert names(core.list_namespaced_config_map(NS, label_selector="suite=dict").items) == ["dict-cm-0", "dict-cm-1", "dict-cm-2"]

    # dry run: answered as if created, nothing stored.
    dry = utils.create_from_dict(api_client, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dict-dry"}}, dry_run="All")
    assert dry[0].metadata.name == "dict-dry"
    assert status_of(core.read_namespaced_config_map, "dict-dry", NS) == 404

    core.delete_collection_namespaced_config_map(NS, label_selector="suite=dict")
    wait_until("dict ConfigMaps deleted", lambda: core.list_namespaced_config_map(NS, label_selector="suite=dict").items == [], (core.list_namespaced_config_map, NS))
    apps.delete_namespaced_deployment("dict-deploy", NS)


@check
def create_from_dict_with_server_side_apply_is_idempotent():
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied", "labels": {"suite": "apply"}}, "data": {"v": "1"}}
    first = utils.create_from_dict(api_client, cm, apply=True)
    uid = first[0].metadata.uid
    assert uid and first[0].data.v == "1", first
    # Applying again changes nothing; applying a change updates the same object.
    again = utils.create_from_dict(api_client, cm, apply=True)
    assert again[0].metadata.uid == uid and again[0].metadata.resourceVersion == first[0].metadata.resourceVersion, (again, first)
    cm["data"] = {"v": "2"}
    changed = utils.create_from_dict(api_client, cm, apply=True)
    assert changed[0].metadata.uid == uid and changed[0].data.v == "2", changed
    assert core.read_namespaced_config_map("applied", NS).data == {"v": "2"}
    core.delete_namespaced_config_map("applied", NS)


@check
def watch_reports_added_modified_deleted():
    rv = core.list_namespaced_config_map(NS, label_selector="suite=watched").metadata.resource_version
    core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=meta("watched", suite="watched"), data={"n": "0"}))
    core.patch_namespaced_config_map("watched", NS, {"data": {"n": "1"}})
    core.delete_namespaced_config_map("watched", NS)
    seen = []
    w = watch.Watch()
    for event in w.stream(core.list_namespaced_config_map, NS, label_selector="suite=watched", resource_version=rv, timeout_seconds=30):
        seen.append((event["type"], event["object"].metadata.name, (event["object"].data or {}).get("n")))
        if event["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "watched", "0"), ("MODIFIED", "watched", "1"), ("DELETED", "watched", "1")], seen


# --- kubernetes.utils: quantities --------------------------------------------------------


@check
def parse_and_format_quantities():
    assert parse_quantity("100m") == Decimal("0.1")
    assert parse_quantity("1Ki") == 1024
    assert parse_quantity("2Gi") == 2 * 1024**3
    assert parse_quantity("5M") == 5_000_000
    assert parse_quantity("1e3") == 1000
    assert parse_quantity("1.5") == Decimal("1.5")
    assert parse_quantity(3) == 3
    for bad in ["1Zi", "one", "1.2.3"]:
        try:
            parse_quantity(bad)
            raise AssertionError(f"parsed {bad!r}")
        except ValueError:
            pass
    assert format_quantity(parse_quantity("2Gi"), "Mi") == "2048Mi"
    assert format_quantity(Decimal(1500), "k") == "1.5k"
    assert format_quantity(Decimal("0.25"), "m", quantize=Decimal(1)) == "250m"
    assert format_quantity(parse_quantity("1.5Gi"), "Mi", quantize=Decimal(1)) == "1536Mi"
    try:
        format_quantity(Decimal(1), "ki")
        raise AssertionError("formatted with suffix ki")
    except ValueError:
        pass

    # Quantities the server stores parse to what was sent. (Upstream also rewrites them
    # in canonical form, `0.5` as `500m`; wasmkube keeps them as written.)
    pod = client.V1Pod(
        metadata=meta("py-quantities"),
        spec=client.V1PodSpec(
            scheduler_name="nobody",
            containers=[client.V1Container(name="c", image=WEB_IMAGE, resources=client.V1ResourceRequirements(limits={"cpu": "0.5", "memory": "64Mi"}))],
        ),
    )
    core.create_namespaced_pod(NS, pod)
    limits = core.read_namespaced_pod("py-quantities", NS).spec.containers[0].resources.limits
    assert sorted(limits) == ["cpu", "memory"], limits
    assert parse_quantity(limits["cpu"]) == Decimal("0.5") and parse_quantity(limits["memory"]) == 64 * 1024 * 1024, limits
    assert format_quantity(parse_quantity(limits["cpu"]), "m", quantize=Decimal(1)) == "500m", limits
    core.delete_namespaced_pod("py-quantities", NS, grace_period_seconds=0)


def main(only):
    """Runs every check, or those named in `only`."""
    passed, failed = 0, []
    unknown = set(only) - {fn.__name__ for fn in CHECKS}
    if unknown:
        print(f"no such checks: {sorted(unknown)}")
        return 2
    for fn in CHECKS:
        if only and fn.__name__ not in only:
            continue
        started = time.monotonic()
        try:
            fn()
        except Exception:
            failed.append(fn.__name__)
            print(f"FAIL {fn.__name__} ({time.monotonic() - started:.1f}s)")
            traceback.print_exc(file=sys.stdout)
        else:
            passed += 1
            print(f"ok   {fn.__name__} ({time.monotonic() - started:.1f}s)")
        sys.stdout.flush()
    shutil.rmtree(SCRATCH, ignore_errors=True)
    if failed:
        print(f"failed: {', '.join(failed)}")
    print(f"{passed} passed, {len(failed)} failed")
    return 0 if passed and not failed else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
