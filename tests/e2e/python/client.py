"""The official Kubernetes Python client against wasmkube: list, create, patch, watch, delete."""
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

config.load_kube_config()
core = client.CoreV1Api()
apps = client.AppsV1Api()

names = {n.metadata.name for n in core.list_namespace().items}
assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names, names

meta = client.V1ObjectMeta(name="py-cm", labels={"from": "python"})
core.create_namespaced_config_map("default", client.V1ConfigMap(metadata=meta, data={"a": "1"}))
core.patch_namespaced_config_map("py-cm", "default", {"data": {"b": "2"}})
got = core.read_namespaced_config_map("py-cm", "default")
assert got.data == {"a": "1", "b": "2"}, got.data

listed = core.list_namespaced_config_map("default", label_selector="from=python")
assert [c.metadata.name for c in listed.items] == ["py-cm"]
rv = listed.metadata.resource_version
# Made after the list: the watch from its resourceVersion must report it.
core.create_namespaced_config_map(
    "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-cm2", labels={"from": "python"}), data={})
)
seen = []
w = watch.Watch()
for ev in w.stream(core.list_namespaced_config_map, "default", label_selector="from=python",
                   resource_version=rv, timeout_seconds=20):
    seen.append((ev["type"], ev["object"].metadata.name))
    if ev["object"].metadata.name == "py-cm2":
        w.stop()
assert ("ADDED", "py-cm2") in seen, seen

deployment = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "py-deploy"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "py"}},
        "template": {"metadata": {"labels": {"app": "py"}},
                     "spec": {"containers": [{"name": "main", "image": "example/py:1"}]}},
    },
}
apps.create_namespaced_deployment("default", deployment)
apps.patch_namespaced_deployment_scale("py-deploy", "default", {"spec": {"replicas": 4}})
assert apps.read_namespaced_deployment("py-deploy", "default").spec.replicas == 4

for name in ["py-cm", "py-cm2"]:
    core.delete_namespaced_config_map(name, "default")
apps.delete_namespaced_deployment("py-deploy", "default")
try:
    core.read_namespaced_config_map("py-cm", "default")
    raise AssertionError("py-cm still exists")
except ApiException as e:
    assert e.status == 404, e
print("python client: ok")
