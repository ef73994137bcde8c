#!/usr/bin/env python3
"""Extract the Kubernetes API type definitions wasmkube serves into one JSON data file.

The API server needs, for every field of every served type: its JSON name, its Go
shape (pointer or value, omitempty, inline), its protobuf tag, its patch strategy and
list type, and its documentation. Upstream keeps all of that in the Go source of
k8s.io/api and k8s.io/apimachinery (struct tags, `+` markers, and the generated
swagger docs). This script reads those sources and writes the facts as data:

    scripts/gen-kube-types.py <k8s.io/api dir> <k8s.io/apimachinery dir> <version> \
        > control/src/api/schema/kube-types.json

The output drives protobuf decoding, the OpenAPI documents (`kubectl explain`) and
strategic merge patch keys. Regenerate it when moving to a newer Kubernetes release.
"""

import json
import os
import re
import sys

# Groups whose types we describe: the ones served today and the ones planned next.
API_PACKAGES = [
    "core/v1", "apps/v1", "batch/v1", "policy/v1", "coordination/v1", "discovery/v1",
    "node/v1", "autoscaling/v1", "autoscaling/v2", "networking/v1", "rbac/v1", "storage/v1",
    "scheduling/v1", "events/v1", "authentication/v1", "authorization/v1",
    "admissionregistration/v1", "certificates/v1",
]
MACHINERY_PACKAGES = ["pkg/apis/meta/v1"]

# Types whose JSON and protobuf forms are not their Go structs.
SPECIAL = {
    "k8s.io/apimachinery/pkg/api/resource.Quantity": "quantity",
    "k8s.io/apimachinery/pkg/util/intstr.IntOrString": "intorstring",
    "k8s.io/apimachinery/pkg/apis/meta/v1.Time": "time",
    "k8s.io/apimachinery/pkg/apis/meta/v1.MicroTime": "microtime",
    "k8s.io/apimachinery/pkg/apis/meta/v1.Duration": "duration",
    "k8s.io/apimachinery/pkg/runtime.RawExtension": "rawextension",
    "k8s.io/apimachinery/pkg/apis/meta/v1.FieldsV1": "rawextension",
    "k8s.io/apimachinery/pkg/types.UID": "string",
    "k8s.io/apimachinery/pkg/types.NodeName": "string",
    "k8s.io/apimachinery/pkg/apis/meta/v1.TypeMeta": "typemeta",
}

PRIMITIVES = {
    "string": "string", "bool": "bool", "int32": "int32", "int64": "int64", "int": "int64",
    "float64": "float64", "float32": "float64", "byte": "byte", "uint64": "int64", "uint32": "int32",
}


def schema_name(pkg, name):
    """`k8s.io/api/core/v1`, `Pod` -> `io.k8s.api.core.v1.Pod` (the OpenAPI definition name)."""
    host, _, rest = pkg.partition("/")
    rev = ".".join(reversed(host.split(".")))
    return f"{rev}.{rest.replace('/', '.')}.{name}"


def parse_imports(src):
    imports = {}
    block = re.search(r"^import \((.*?)^\)", src, re.S | re.M)
    lines = block.group(1).splitlines() if block else re.findall(r"^import (.*)$", src, re.M)
    for line in lines:
        m = re.match(r'\s*(?:(\w+)\s+)?"([^"]+)"', line)
        if m:
            path = m.group(2)
            imports[m.group(1) or path.rsplit("/", 1)[-1]] = path
    return imports


def parse_tag(tag):
    return dict(re.findall(r'(\w+):"([^"]*)"', tag))


def markers(comment_lines):
    out = {}
    for line in comment_lines:
        m = re.match(r"\+([\w.:-]+)(?:=(.*))?$", line.strip())
        if m:
            out.setdefault(m.group(1), []).append((m.group(2) or "").strip())
    return out


def parse_go_file(path, pkg):
    """Struct and named types declared in one Go file: {name: decl}."""
    src = open(path, encoding="utf-8").read()
    imports = parse_imports(src)
    decls = {}
    lines = src.splitlines()
    comments = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("//"):
            comments.append(stripped[2:].removeprefix(" "))
            i += 1
            continue
        m = re.match(r"^type (\w+) struct \{\s*$", line)
        if m:
            name = m.group(1)
            fields, i = parse_struct_body(lines, i + 1)
            if fields is not None:
                decls[name] = {"struct": fields, "markers": markers(comments)}
            comments = []
            continue
        m = re.match(r"^type (\w+) (\S.*?)\s*(//.*)?$", line)
        if m and "interface" not in m.group(2) and "func" not in m.group(2):
            decls[m.group(1)] = {"alias": m.group(2), "markers": markers(comments)}
        comments = []
        i += 1
    return decls, imports


def parse_struct_body(lines, i):
    fields = []
    comments = []
    in_block = False
    while i < len(lines):
        stripped = lines[i].strip()
        i += 1
        # Block comments inside structs are notes, never documentation.
        if in_block or stripped.startswith("/*"):
            in_block = "*/" not in stripped
            continue
        if stripped == "}":
            return fields, i
        if stripped.startswith("//"):
            comments.append(stripped[2:].removeprefix(" "))
            continue
        if not stripped:
            comments = []
            continue
        m = re.match(r"^(?:(\w+)\s+)?(\*?[\w.\[\]*{}]+)\s*(`.*`)?\s*(//.*)?$", stripped)
        if not m:
            # Not an API type (helpers declared beside them): skip the whole struct.
            while i < len(lines) and lines[i].rstrip() != "}":
                i += 1
            return None, i + 1
        fields.append({"go_name": m.group(1), "go_type": m.group(2), "tag": parse_tag(m.group(3) or ""), "markers": markers(comments)})
        comments = []
    raise SystemExit("unterminated struct")


def parse_swagger_docs(path):
    docs = {}
    if not os.path.exists(path):
        return docs
    src = open(path, encoding="utf-8").read()
    for m in re.finditer(r"var map_(\w+) = map\[string\]string\{\n(.*?)\n\}", src, re.S):
        entries = {}
        for em in re.finditer(r'^\s*"([^"]*)":\s*("(?:[^"\\]|\\.)*"),?\s*$', m.group(2), re.M):
            entries[em.group(1)] = json.loads(em.group(2))
        docs[m.group(1)] = entries
    return docs


class Universe:
    def __init__(self):
        self.packages = {}  # import path -> (decls, imports per type, docs)

    def load(self, import_path, directory):
        decls, imports_of, docs = {}, {}, {}
        for f in sorted(os.listdir(directory)):
            if not f.endswith(".go") or f.endswith("_test.go") or f.startswith("zz_generated") or f == "generated.pb.go":
                continue
            if f == "types_swagger_doc_generated.go":
                docs = parse_swagger_docs(os.path.join(directory, f))
                continue
            d, imports = parse_go_file(os.path.join(directory, f), import_path)
            for k, v in d.items():
                decls[k] = v
                imports_of[k] = imports
        self.packages[import_path] = (decls, imports_of, docs)

    def resolve(self, pkg, owner, go_type):
        """A Go type expression as seen from `owner` in `pkg` -> a type description."""
        if go_type.startswith("*"):
            return self.resolve(pkg, owner, go_type[1:])
        if go_type == "[]byte":
            return {"t": "bytes"}
        if go_type.startswith("[]"):
            return {"t": "array", "items": self.resolve(pkg, owner, go_type[2:])}
        if go_type.startswith("map["):
            depth, j = 0, 3
            while True:
                if go_type[j] == "[":
                    depth += 1
                elif go_type[j] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                j += 1
            return {"t": "map", "values": self.resolve(pkg, owner, go_type[j + 1:])}
        if go_type in ("interface{}", "runtime.Object"):
            return {"t": "any"}
        if go_type in PRIMITIVES:
            return {"t": PRIMITIVES[go_type]}
        if "." in go_type:
            alias, name = go_type.split(".", 1)
            imports = self.packages[pkg][1].get(owner, {})
            target = imports.get(alias)
            if target is None:
                raise SystemExit(f"unknown package {alias} in {pkg}.{owner}")
            return self.named(target, name)
        return self.named(pkg, go_type)

    def named(self, pkg, name):
        full = f"{pkg}.{name}"
        if full in SPECIAL:
            return {"t": SPECIAL[full]}
        if pkg not in self.packages:
            raise SystemExit(f"type {full} is outside the loaded packages")
        decls = self.packages[pkg][0]
        decl = decls.get(name)
        if decl is None:
            raise SystemExit(f"unknown type {full}")
        if "struct" in decl:
            return {"t": "ref", "ref": schema_name(pkg, name)}
        underlying = self.resolve(pkg, name, decl["alias"])
        if underlying["t"] == "array" and underlying["items"]["t"] != "byte":
            # Named slices become wrapper messages in protobuf map values.
            underlying = dict(underlying, named=True)
        enum = decl["markers"].get("enum")
        if enum is not None and underlying["t"] == "string":
            values = self.enum_values(pkg, name)
            if values:
                underlying = dict(underlying, enum=values)
        return underlying

    def enum_values(self, pkg, name):
        """The constants of an `+enum` string type, sorted by value, with their doc comments."""
        values = {}
        directory = self.dirs[pkg]
        for f in sorted(os.listdir(directory)):
            if not f.endswith(".go") or f.endswith("_test.go") or f.startswith("zz_") or f == "generated.pb.go":
                continue
            comments = []
            for line in open(os.path.join(directory, f), encoding="utf-8"):
                stripped = line.strip()
                if stripped.startswith("//"):
                    comments.append(stripped[2:].strip())
                    continue
                m = re.match(rf'(\w+)\s+{name}\s*=\s*"([^"]*)"', stripped)
                if m and m.group(2) not in values:
                    doc = " ".join(c for c in comments if c and not c.startswith("+"))
                    # Upstream's enum docs drop the constant's own name from its comment.
                    values[m.group(2)] = doc.removeprefix(m.group(1)).strip()
                comments = []
        return [{"value": v, "doc": values[v]} for v in sorted(values)]


def field_entry(u, pkg, owner, f, docs):
    tag = f["tag"]
    json_tag = tag.get("json", "")
    json_name, _, opts = json_tag.partition(",")
    opts = opts.split(",") if opts else []
    if json_name == "-":
        return None
    go_type = f["go_type"]
    inline = "inline" in opts or (f["go_name"] is None and json_name == "")
    entry = {}
    if not inline:
        entry["json"] = json_name
    entry["type"] = u.resolve(pkg, owner, go_type)
    if inline:
        entry["inline"] = True
    if go_type.startswith("*"):
        entry["pointer"] = True
    if "omitempty" in opts:
        entry["omitempty"] = True
    pb = tag.get("protobuf")
    if pb:
        parts = pb.split(",")
        entry["tag"] = int(parts[1])
        entry["wire"] = parts[0]
    if "patchStrategy" in tag:
        entry["patchStrategy"] = tag["patchStrategy"]
    if "patchMergeKey" in tag:
        entry["patchMergeKey"] = tag["patchMergeKey"]
    mk = f["markers"]
    if "listType" in mk:
        entry["listType"] = mk["listType"][0]
    if "listMapKey" in mk:
        entry["listMapKeys"] = mk["listMapKey"]
    if "mapType" in mk:
        entry["mapType"] = mk["mapType"][0]
    optional = "optional" in mk or "omitempty" in opts
    if "required" in mk:
        optional = False
    if not optional and not inline:
        entry["required"] = True
    if not inline and json_name in docs:
        entry["description"] = docs[json_name]
    return entry


def main():
    api_dir, machinery_dir, version = sys.argv[1], sys.argv[2], sys.argv[3]
    u = Universe()
    u.dirs = {}
    for p in API_PACKAGES:
        path = f"k8s.io/api/{p}"
        u.dirs[path] = os.path.join(api_dir, p)
        u.load(path, u.dirs[path])
    for p in MACHINERY_PACKAGES + ["pkg/runtime", "pkg/api/resource", "pkg/util/intstr", "pkg/types"]:
        path = f"k8s.io/apimachinery/{p}"
        u.dirs[path] = os.path.join(machinery_dir, p)
        u.load(path, u.dirs[path])

    types = {}
    for pkg, (decls, _, docs) in sorted(u.packages.items()):
        for name, decl in sorted(decls.items()):
            if "struct" not in decl or f"{pkg}.{name}" in SPECIAL:
                continue
            if pkg.startswith("k8s.io/apimachinery/") and not pkg.endswith("meta/v1"):
                continue
            mk = decl["markers"]
            if "k8s:openapi-gen" in mk and mk["k8s:openapi-gen"][0] == "false":
                continue
            type_docs = docs.get(name, {})
            fields = []
            has_type_meta = False
            for f in decl["struct"]:
                if f["go_type"] in ("metav1.TypeMeta", "TypeMeta") and f["go_name"] is None:
                    has_type_meta = True
                e = field_entry(u, pkg, name, f, type_docs)
                if e is not None and e["type"]["t"] != "typemeta":
                    fields.append(e)
            t = {"fields": fields}
            if type_docs.get(""):
                t["description"] = type_docs[""]
            if has_type_meta:
                t["object"] = True
            types[schema_name(pkg, name)] = t

    json.dump({"version": version, "types": types}, sys.stdout, indent=None, separators=(",", ":"), sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
