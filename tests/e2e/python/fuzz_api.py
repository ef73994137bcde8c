"""Throw random and mutated bodies at create and patch endpoints.

Usage: fuzz_api.py API_URL CA_FILE TOKEN COUNT
Fails if any request gets a 5xx or no answer, or if an object is lost or changed
by a request that should not have touched it.
"""
import http.client
import json
import random
import ssl
import sys
import urllib.parse

api, ca, token, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
url = urllib.parse.urlparse(api)
ctx = ssl.create_default_context(cafile=ca)
rng = random.Random(20261122)

conn = None


def request(method, path, body=b"", ctype="application/json"):
    global conn
    for attempt in range(2):
        if conn is None:
            conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx, timeout=30)
        try:
            conn.request(method, path, body=body, headers={
                "Authorization": "Bearer " + token, "Content-Type": ctype, "Accept": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            if resp.getheader("Connection", "").lower() == "close":
                conn.close()
                conn = None
            return resp.status, data
        except (http.client.HTTPException, ConnectionError, OSError):
            # The server may close a connection after refusing a body; retry once on a new one.
            conn.close()
            conn = None
            if attempt == 1:
                raise


def cm(name):
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": {"fuzz": "yes"}}, "data": {"k": "v"}}


BASES = {
    "/api/v1/namespaces/default/configmaps": cm("base"),
    "/api/v1/namespaces/default/secrets": {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "type": "Opaque", "data": {"a": "YQ=="}},
    "/api/v1/namespaces/default/pods": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}], "env": [{"name": "A", "value": "b"}]}]}},
    "/api/v1/namespaces/default/services": {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc"}, "spec": {"selector": {"a": "b"}, "ports": [{"port": 80, "targetPort": "http"}]}},
    "/apis/apps/v1/namespaces/default/deployments": {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
    "/apis/batch/v1/namespaces/default/cronjobs": {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "cj"}, "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "i"}]}}}}}},
}

WEIRD = [None, True, False, 0, -1, 2**31, 2**63, -2**63, 1.5e308, "", "x" * 300, "Ünïcødé", "../../etc", [], {}, [None], {"$patch": "delete"},
         {"$retainKeys": 5}, {"$setElementOrder/containers": "x"}, [[[[[]]]]], "\u0000", "-1", "%00", {"metadata": None}]


def random_value(depth=0):
    r = rng.random()
    if depth > 3 or r < 0.5:
        # A fresh copy: shared containers would make documents refer to themselves.
        return json.loads(json.dumps(rng.choice(WEIRD)))
    if r < 0.75:
        return [random_value(depth + 1) for _ in range(rng.randint(0, 3))]
    return {rng.choice(["name", "spec", "metadata", "replicas", "containers", "ports", "data", "$patch", "labels", "x"]): random_value(depth + 1) for _ in range(rng.randint(0, 3))}


def paths(obj, prefix=()):
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from paths(v, prefix + (i,))


def mutate_structure(doc):
    doc = json.loads(json.dumps(doc))
    for _ in range(rng.randint(1, 4)):
        ps = [p for p in paths(doc) if p]
        if not ps:
            return random_value()
        p = rng.choice(ps)
        parent = doc
        for k in p[:-1]:
            parent = parent[k]
        if rng.random() < 0.2 and isinstance(parent, dict):
            del parent[p[-1]]
        else:
            parent[p[-1]] = random_value()
    return doc


def mutate_bytes(raw):
    raw = bytearray(raw)
    choice = rng.random()
    if choice < 0.3 and raw:
        raw = raw[: rng.randrange(len(raw))]
    elif choice < 0.6:
        for _ in range(rng.randint(1, 8)):
            if raw:
                raw[rng.randrange(len(raw))] = rng.randrange(256)
    elif choice < 0.8:
        raw = b"[" * rng.randint(1, 5000) + raw
    else:
        pos = rng.randrange(len(raw) + 1)
        raw[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 30)))
    return bytes(raw)


def pb_varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def pb_bytes(tag, b):
    return pb_varint(tag << 3 | 2) + pb_varint(len(b)) + b


def pb_int(tag, n):
    return pb_varint(tag << 3) + pb_varint(n)


def pb_envelope(api_version, kind, raw):
    type_meta = pb_bytes(1, api_version.encode()) + pb_bytes(2, kind.encode())
    return b"k8s\0" + pb_bytes(1, type_meta) + pb_bytes(2, raw)


def pb_meta(name):
    return pb_bytes(1, name.encode()) + pb_bytes(11, pb_bytes(1, b"fuzz") + pb_bytes(2, b"yes"))


def pb_body(path, name):
    """A valid protobuf body for the kinds whose fields are few: ConfigMap and Service."""
    if path.endswith("/services"):
        port = pb_bytes(1, b"http") + pb_int(3, 80) + pb_bytes(4, pb_int(1, 0) + pb_int(2, 8080)) + pb_int(5, 0)
        spec = pb_bytes(1, port) + pb_bytes(2, pb_bytes(1, b"a") + pb_bytes(2, b"b")) + pb_bytes(4, b"ClusterIP")
        return pb_envelope("v1", "Service", pb_bytes(1, pb_meta(name)) + pb_bytes(2, spec))
    raw = pb_bytes(1, pb_meta(name)) + pb_bytes(2, pb_bytes(1, b"k") + pb_bytes(2, b"v"))
    return pb_envelope("v1", "ConfigMap", raw)


def body_for(base, name, path):
    doc = json.loads(json.dumps(base))
    doc["metadata"]["name"] = name
    r = rng.random()
    if r < 0.45:
        return json.dumps(mutate_structure(doc)).encode(), "application/json"
    if r < 0.85:
        return mutate_bytes(json.dumps(doc).encode()), "application/json"
    if r < 0.9:
        return mutate_bytes(b"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  a: b\n"), "application/yaml"
    if r < 0.95:
        # Protobuf: truncated, flipped, padded, or an unknown field appended.
        body = pb_body(path, name)
        if rng.random() < 0.2:
            return body + pb_bytes(rng.randint(50, 2000), b"unknown"), "application/vnd.kubernetes.protobuf"
        return mutate_bytes(body), "application/vnd.kubernetes.protobuf"
    return bytes(rng.randrange(256) for _ in range(rng.randint(0, 200))), rng.choice(["application/vnd.kubernetes.protobuf", "application/json"])


failures = []


def check(status, data, what):
    if status >= 500:
        failures.append(f"{what}: {status} {data[:300]!r}")
    elif status >= 400:
        try:
            s = json.loads(data)
            if s.get("kind") != "Status":
                failures.append(f"{what}: {status} without a Status: {data[:200]!r}")
        except ValueError:
            failures.append(f"{what}: {status} body is not JSON: {data[:200]!r}")


# A sentinel nobody targets, and victims that patches aim at.
status, data = request("POST", "/api/v1/namespaces/default/configmaps", json.dumps(cm("sentinel")).encode())
assert status == 201, (status, data)
sentinel = json.loads(data)
victims = {}
for path, base in BASES.items():
    doc = json.loads(json.dumps(base))
    doc["metadata"]["name"] = "victim"
    status, data = request("POST", path, json.dumps(doc).encode())
    assert status == 201, (path, status, data)
    victims[path] = json.loads(data)

PATCH_TYPES = ["application/merge-patch+json", "application/strategic-merge-patch+json", "application/json-patch+json", "application/apply-patch+yaml"]
for i in range(count):
    path = rng.choice(list(BASES))
    if rng.random() < 0.5:
        body, ctype = body_for(BASES[path], f"fz{i}", path)
        status, data = request("POST", path, body, ctype)
        check(status, data, f"create {path} {body[:120]!r}")
    else:
        base = BASES[path]
        if rng.random() < 0.5:
            patch = json.dumps(mutate_structure(base)).encode()
        elif rng.random() < 0.5:
            patch = json.dumps([{"op": rng.choice(["add", "remove", "replace", "move", "copy", "test", "bogus"]),
                                 "path": "/" + "/".join(str(x) for x in rng.choice([p for p in paths(base) if p] or [("x",)])),
                                 "value": random_value(), "from": "/metadata"}]).encode()
        else:
            patch = mutate_bytes(json.dumps(base).encode())
        ctype = rng.choice(PATCH_TYPES)
        status, data = request("PATCH", f"{path}/victim", patch, ctype)
        check(status, data, f"patch {path} {ctype} {patch[:120]!r}")

status, data = request("GET", "/api/v1/namespaces/default/configmaps/sentinel")
if status != 200 or json.loads(data) != sentinel:
    failures.append(f"sentinel changed or lost: {status} {data[:200]!r}")
for path in BASES:
    status, data = request("GET", f"{path}/victim")
    if status != 200:
        failures.append(f"victim at {path} lost: {status}")
status, _ = request("GET", "/api/v1/namespaces/default/configmaps?limit=5")
if status != 200:
    failures.append(f"list failed after fuzzing: {status}")

for f in failures[:40]:
    print("FAIL", f)
print(f"fuzz: {count} requests, {len(failures)} failures")
sys.exit(1 if failures else 0)
