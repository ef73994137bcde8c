//! The embedded OCI registry, `wasmkube push` and `wasmkube pull`, driven by skopeo, curl,
//! raw TCP and Debian's CNCF distribution (`docker-registry`) as the reference registry.

use crate::harness::{wait_for, Cluster, TempDir};
use serde_json::{json, Value};
use sha2::Digest as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Runs a command; returns (success, stdout, stderr).
fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[track_caller]
fn ok(cmd: &mut Command) -> String {
    let (success, stdout, stderr) = run(cmd);
    assert!(success, "{cmd:?} failed:\n{stdout}\n{stderr}");
    stdout
}

fn wasmkube(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wasmkube"));
    c.args(args);
    c
}

/// A valid core module carrying `extra` pseudo-random bytes in a custom section, so
/// round trips compare real content.
fn wasm_module(extra: usize, seed: u64) -> Vec<u8> {
    let mut payload = vec![1u8, b'x'];
    let mut x = seed | 1;
    payload.extend((0..extra).map(|_| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x as u8
    }));
    let mut out = b"\0asm\x01\0\0\0".to_vec();
    out.push(0); // custom section
    let mut n = payload.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(payload);
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// `wasmkube registry` on a fresh directory.
struct Registry {
    child: Child,
    addr: String,
    dir: TempDir,
}

impl Registry {
    fn start() -> Self {
        let dir = TempDir::new("registry");
        let mut child = wasmkube(&["registry", "--addr", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn wasmkube registry");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("ready line");
        assert!(line.contains("wasmkube registry ready"), "{line}");
        let addr = line.split_whitespace().find_map(|w| w.strip_prefix("http://")).expect("address").to_owned();
        Self { child, addr, dir }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Debian's CNCF distribution 2.8, optionally behind htpasswd basic auth.
struct Distribution {
    child: Child,
    addr: String,
    _dir: TempDir,
}

impl Distribution {
    fn start(user: Option<(&str, &str)>) -> Self {
        let dir = TempDir::new("distribution");
        let addr = format!("127.0.0.1:{}", free_port());
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        if let Some((u, p)) = user {
            let line = ok(Command::new("htpasswd").args(["-Bbn", u, p]));
            std::fs::write(dir.path().join("htpasswd"), line.trim()).expect("htpasswd");
            config += &format!("auth:\n  htpasswd:\n    realm: test\n    path: {}\n", dir.path().join("htpasswd").display());
        }
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("config");
        let child = Command::new("docker-registry").arg("serve").arg(&config_path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn docker-registry");
        wait_for(30, "docker-registry to listen", || {
            let (code, _, _) = http("GET", &format!("http://{addr}/v2/"), &[], None);
            (code == 200 || code == 401).then_some(())
        });
        Self { child, addr, _dir: dir }
    }
}

impl Drop for Distribution {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One request through curl: (status, response headers, body).
fn http(method: &str, url: &str, headers: &[&str], body: Option<&[u8]>) -> (u16, String, Vec<u8>) {
    let scratch = TempDir::new("curl");
    let (head, out) = (scratch.path().join("head"), scratch.path().join("body"));
    let mut cmd = Command::new("curl");
    cmd.args(["-s", "--path-as-is", "-w", "%{http_code}", "-D"]).arg(&head).arg("-o").arg(&out);
    if method == "HEAD" {
        cmd.arg("--head");
    } else {
        cmd.args(["-X", method]);
    }
    for h in headers {
        cmd.args(["-H", h]);
    }
    if let Some(b) = body {
        let file = scratch.path().join("upload");
        std::fs::write(&file, b).expect("body file");
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
    }
    let (_, code, _) = run(cmd.arg(url));
    let headers = std::fs::read_to_string(&head).unwrap_or_default().to_ascii_lowercase();
    (code.trim().parse().unwrap_or(0), headers, std::fs::read(&out).unwrap_or_default())
}

fn header<'a>(headers: &'a str, name: &str) -> &'a str {
    headers.lines().find_map(|l| l.strip_prefix(&format!("{name}: "))).map(str::trim).unwrap_or("")
}

#[track_caller]
fn expect_error(resp: (u16, String, Vec<u8>), status: u16, code: &str) {
    let body = String::from_utf8_lossy(&resp.2);
    assert_eq!(resp.0, status, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!(v["errors"][0]["code"], code, "{body}");
}

/// Sends a request whose body is cut short (`sent` of `claimed` bytes), closes the write
/// half, and returns the raw response.
fn cut_off_request(addr: &str, method: &str, path: &str, claimed: u64, sent: usize) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\nContent-Length: {claimed}\r\n\r\n").expect("head");
    s.write_all(&vec![7u8; sent]).expect("body");
    s.shutdown(Shutdown::Write).expect("half close");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response
}

/// An OCI image layout holding one small Linux image tagged `v1`; returns its manifest digest.
fn linux_image_layout(dir: &Path) -> String {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("rootfs");
    std::fs::write(rootfs.join("etc/motd"), "hello from a linux layer\n").expect("file");
    let layout = dir.join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).expect("layout");
    let tar = dir.join("layer.tar");
    ok(Command::new("tar").arg("-C").arg(&rootfs).arg("-cf").arg(&tar).arg("."));
    let diff_id = sha256(&std::fs::read(&tar).expect("tar"));
    ok(Command::new("gzip").args(["-n", "-k"]).arg(&tar));
    let layer = std::fs::read(dir.join("layer.tar.gz")).expect("gz");
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/bin/sh"] },
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    }))
    .expect("config");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len() },
        "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": sha256(&layer), "size": layer.len() }],
    }))
    .expect("manifest");
    for blob in [&layer, &config, &manifest] {
        std::fs::write(layout.join("blobs/sha256").join(&sha256(blob)[7..]), blob).expect("blob");
    }
    let index = json!({ "schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha256(&manifest), "size": manifest.len(),
        "annotations": { "org.opencontainers.image.ref.name": "v1" },
    }]});
    std::fs::write(layout.join("index.json"), index.to_string()).expect("index");
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("oci-layout");
    sha256(&manifest)
}

#[test]
fn skopeo_copies_linux_images_in_and_out_with_identical_digests() {
    let reg = Registry::start();
    let work = TempDir::new("skopeo");
    let original = linux_image_layout(work.path());
    let src = format!("oci:{}:v1", work.path().join("layout").display());
    let dest = format!("docker://{}/linux/hello:v1", reg.addr);
    let digest_file = work.path().join("pushed.digest");
    ok(Command::new("skopeo").args(["copy", "--dest-tls-verify=false", "--digestfile"]).arg(&digest_file).arg(&src).arg(&dest));
    assert_eq!(std::fs::read_to_string(&digest_file).expect("digest").trim(), original);

    let inspect: Value = serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--tls-verify=false", &dest]))).expect("inspect json");
    assert_eq!((inspect["Digest"].as_str(), inspect["Os"].as_str(), inspect["Layers"].as_array().map(Vec::len)), (Some(original.as_str()), Some("linux"), Some(1)));

    // Out again: the manifest and every blob come back byte for byte.
    let out = work.path().join("out");
    ok(Command::new("skopeo").args(["copy", "--src-tls-verify=false", &dest]).arg(format!("oci:{}:v1", out.display())));
    let index: Value = serde_json::from_slice(&std::fs::read(out.join("index.json")).expect("index")).expect("index json");
    assert_eq!(index["manifests"][0]["digest"], original.as_str());
    for entry in std::fs::read_dir(work.path().join("layout/blobs/sha256")).expect("blobs").flatten() {
        assert_eq!(std::fs::read(entry.path()).ok(), std::fs::read(out.join("blobs/sha256").join(entry.file_name())).ok(), "{:?}", entry.file_name());
    }

    // Docker schema 2: converted by skopeo on the way in, served back unchanged.
    let docker = format!("docker://{}/linux/hello:docker", reg.addr);
    let docker_digest = work.path().join("docker.digest");
    ok(Command::new("skopeo").args(["copy", "--dest-tls-verify=false", "--format", "v2s2", "--digestfile"]).arg(&docker_digest).arg(&src).arg(&docker));
    let raw: Value = serde_json::from_str(&ok(Command::new("skopeo").args(["inspect", "--raw", "--tls-verify=false", &docker]))).expect("raw");
    assert_eq!(raw["mediaType"], "application/vnd.docker.distribution.manifest.v2+json");
    let dir_out = work.path().join("dir-out");
    ok(Command::new("skopeo").args(["copy", "--src-tls-verify=false", &docker]).arg(format!("dir:{}", dir_out.display())));
    assert_eq!(sha256(&std::fs::read(dir_out.join("manifest.json")).expect("manifest")), std::fs::read_to_string(&docker_digest).expect("digest").trim());

    // Registry to registry within ours (skopeo mounts blobs across repositories).
    ok(Command::new("skopeo").args(["copy", "--src-tls-verify=false", "--dest-tls-verify=false", &dest, &format!("docker://{}/copies/hello:v1", reg.addr)]));
    let tags: Value = serde_json::from_str(&ok(Command::new("skopeo").args(["list-tags", "--tls-verify=false", &format!("docker://{}/linux/hello", reg.addr)]))).expect("tags");
    assert_eq!(tags["Tags"], json!(["docker", "v1"]));
    let base = format!("http://{}/v2", reg.addr);
    let (code, _, body) = http("GET", &format!("{base}/copies/hello/manifests/v1"), &["Accept: application/vnd.oci.image.manifest.v1+json"], None);
    assert_eq!((code, sha256(&body)), (200, original.clone()));

    // An explicit cross-repository mount, tag pages, an index and the referrers API.
    let manifest: Value = serde_json::from_slice(&body).expect("manifest");
    let layer = manifest["layers"][0]["digest"].as_str().expect("layer digest");
    let (code, headers, _) = http("POST", &format!("{base}/mounted/blobs/uploads/?mount={layer}&from=linux/hello"), &[], None);
    assert_eq!((code, header(&headers, "location")), (201, format!("/v2/mounted/blobs/{layer}").as_str()));
    let (code, headers, body) = http("GET", &format!("{base}/linux/hello/tags/list?n=1"), &[], None);
    assert_eq!((code, serde_json::from_slice::<Value>(&body).expect("tags")["tags"].clone()), (200, json!(["docker"])));
    assert!(header(&headers, "link").contains("last=docker"), "{headers}");
    let (_, _, body) = http("GET", &format!("{base}/linux/hello/tags/list?n=1&last=docker"), &[], None);
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("tags")["tags"], json!(["v1"]));
    let index = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
        { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": original, "size": manifest.to_string().len(), "platform": { "os": "linux", "architecture": "amd64" } }
    ]});
    let (code, _, body) = http("PUT", &format!("{base}/linux/hello/manifests/multi"), &["Content-Type: application/vnd.oci.image.index.v1+json"], Some(index.to_string().as_bytes()));
    assert_eq!(code, 201, "{}", String::from_utf8_lossy(&body));
    let empty = b"{}";
    http("POST", &format!("{base}/linux/hello/blobs/uploads/?digest={}", sha256(empty)), &[], Some(empty));
    let sbom = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "artifactType": "application/vnd.example.sbom",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": sha256(empty), "size": 2 }, "layers": [],
        "subject": { "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": original, "size": 1 } });
    let (code, headers, _) = http("PUT", &format!("{base}/linux/hello/manifests/{}", sha256(sbom.to_string().as_bytes())), &["Content-Type: application/vnd.oci.image.manifest.v1+json"], Some(sbom.to_string().as_bytes()));
    assert_eq!((code, header(&headers, "oci-subject")), (201, original.as_str()));
    let (_, _, body) = http("GET", &format!("{base}/linux/hello/referrers/{original}?artifactType=application/vnd.example.sbom"), &[], None);
    let referrers: Value = serde_json::from_slice(&body).expect("referrers");
    assert_eq!(referrers["manifests"][0]["digest"], sha256(sbom.to_string().as_bytes()), "{referrers}");
    let (_, _, body) = http("GET", &format!("{base}/linux/hello/referrers/{original}?artifactType=application/other"), &[], None);
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("referrers")["manifests"], json!([]));
}

/// `wasmkube pull` into a fresh cache; returns (stdout, the pulled bytes).
fn pull(reference: &str, extra: &[&str]) -> Result<(String, Vec<u8>), String> {
    let scratch = TempDir::new("pull");
    let out = scratch.path().join("pulled.wasm");
    let mut cmd = wasmkube(&["pull", reference, "--cache-dir"]);
    cmd.arg(scratch.path().join("cache")).arg("--output").arg(&out).args(extra);
    let (success, stdout, stderr) = run(&mut cmd);
    if !success {
        return Err(stderr);
    }
    Ok((stdout, std::fs::read(&out).expect("pulled file")))
}

fn pushed_digest(stdout: &str) -> String {
    stdout.lines().find_map(|l| l.strip_prefix("digest: ")).expect("digest line").trim().to_owned()
}

#[test]
fn wasm_pushed_with_wasmkube_pulls_back_byte_identical_from_ours_and_from_distribution() {
    let (c, _dir) = Cluster::start();
    let work = TempDir::new("wasm");
    let module = wasm_module(300 << 10, 42);
    let file = work.path().join("hello.wasm");
    std::fs::write(&file, &module).expect("module");

    // The registry `wasmkube up` embeds.
    let reference = format!("{}/wasm/hello:v1", c.registry);
    let stdout = ok(wasmkube(&["push"]).arg(&file).arg(&reference));
    let digest = pushed_digest(&stdout);
    assert!(stdout.contains("wasip1"), "{stdout}");
    let (pulled_out, pulled) = pull(&reference, &[]).expect("pull from the embedded registry");
    assert_eq!(pulled, module, "round trip through the embedded registry changed the bytes");
    assert!(pulled_out.contains(&digest), "{pulled_out}");
    // Concurrent pulls of one image into one shared cache all get the whole, verified file.
    let shared = TempDir::new("shared-cache");
    let pullers: Vec<_> = (0..4)
        .map(|i| {
            let out = shared.path().join(format!("out-{i}.wasm"));
            let child = wasmkube(&["pull", &reference, "--pull-policy", "Always", "--cache-dir"])
                .arg(shared.path().join("cache"))
                .arg("--output")
                .arg(&out)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn pull");
            (child, out)
        })
        .collect();
    for (child, out) in pullers {
        let result = child.wait_with_output().expect("pull");
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        assert_eq!(std::fs::read(out).expect("pulled"), module);
    }
    assert_eq!(std::fs::read_dir(shared.path().join("cache/tmp")).map(|d| d.count()).unwrap_or(1), 0, "downloads left behind");

    // The artifact is the CNCF wasm layout.
    let (_, _, body) = http("GET", &format!("http://{}/v2/wasm/hello/manifests/v1", c.registry), &[], None);
    let manifest: Value = serde_json::from_slice(&body).expect("manifest");
    assert_eq!((manifest["config"]["mediaType"].as_str(), manifest["layers"][0]["mediaType"].as_str()), (Some("application/vnd.wasm.config.v0+json"), Some("application/wasm")));
    let (_, _, config) = http("GET", &format!("http://{}/v2/wasm/hello/blobs/{}", c.registry, manifest["config"]["digest"].as_str().unwrap_or("")), &[], None);
    let config: Value = serde_json::from_slice(&config).expect("config");
    assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("wasip1"), Some("wasm")));

    // CNCF distribution: same artifact, same digest (packing is reproducible), same bytes back.
    let dist = Distribution::start(None);
    let reference = format!("{}/wasm/hello:v1", dist.addr);
    assert_eq!(pushed_digest(&ok(wasmkube(&["push"]).arg(&file).arg(&reference))), digest);
    let (_, pulled) = pull(&reference, &[]).expect("pull from distribution");
    assert_eq!(pulled, module);
    // By digest too.
    let (_, pulled) = pull(&format!("{}/wasm/hello@{digest}", dist.addr), &[]).expect("pull by digest");
    assert_eq!(pulled, module);
    c.stop();
}

#[test]
fn basic_auth_registry_works_with_a_pull_secret_and_fails_clearly_without() {
    let (c, _dir) = Cluster::start();
    let dist = Distribution::start(Some(("alice", "s3cret")));
    let work = TempDir::new("auth");
    let file = work.path().join("app.wasm");
    let module = wasm_module(4096, 7);
    std::fs::write(&file, &module).expect("module");
    let reference = format!("{}/team/app:v2", dist.addr);

    let (success, _, stderr) = run(wasmkube(&["push"]).arg(&file).arg(&reference));
    assert!(!success && stderr.to_lowercase().contains("unauthorized"), "{stderr}");
    ok(wasmkube(&["push", "--username", "alice", "--password", "s3cret"]).arg(&file).arg(&reference));

    let err = pull(&reference, &[]).expect_err("an anonymous pull must fail");
    assert!(err.to_lowercase().contains("unauthorized") && err.contains(&reference), "{err}");

    // The credentials as a Kubernetes imagePullSecret, exactly as kubectl writes them.
    let server = dist.addr.as_str();
    for (name, password) in [("regcred", "s3cret"), ("wrongcred", "nope")] {
        c.ok(&["create", "secret", "docker-registry", name, &format!("--docker-server={server}"), "--docker-username=alice", &format!("--docker-password={password}")]);
        let encoded = c.jsonpath(&["secret", name], "{.data.\\.dockerconfigjson}");
        let decoded = ok(Command::new("base64").arg("-d").arg(write_tmp(&work, name, encoded.as_bytes())));
        std::fs::write(work.path().join(format!("{name}.json")), decoded).expect("config");
    }
    let good = work.path().join("regcred.json");
    let (_, pulled) = pull(&reference, &["--docker-config", good.to_str().expect("path")]).expect("pull with the secret");
    assert_eq!(pulled, module);
    let bad = work.path().join("wrongcred.json");
    let err = pull(&reference, &["--docker-config", bad.to_str().expect("path")]).expect_err("wrong password must fail");
    assert!(err.to_lowercase().contains("unauthorized"), "{err}");
    c.stop();
}

fn write_tmp(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write");
    p
}

#[test]
fn bad_input_gets_spec_errors_and_nothing_partial_is_served() {
    let reg = Registry::start();
    let base = format!("http://{}/v2", reg.addr);
    let blob_state = |digest: &str| http("HEAD", &format!("{base}/bad/blobs/{digest}"), &[], None).0;

    // Bytes that do not match their digest.
    let claimed = sha256(b"hello");
    expect_error(http("POST", &format!("{base}/bad/blobs/uploads/?digest={claimed}"), &[], Some(b"hellx")), 400, "DIGEST_INVALID");
    assert_eq!(blob_state(&claimed), 404);

    // A manifest naming a blob the registry does not have.
    let manifest = json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": claimed, "size": 5 }, "layers": [] });
    expect_error(http("PUT", &format!("{base}/bad/manifests/v1"), &["Content-Type: application/vnd.oci.image.manifest.v1+json"], Some(manifest.to_string().as_bytes())), 400, "MANIFEST_BLOB_UNKNOWN");
    expect_error(http("GET", &format!("{base}/bad/manifests/v1"), &[], None), 404, "MANIFEST_UNKNOWN");
    expect_error(http("PUT", &format!("{base}/bad/manifests/v1"), &["Content-Type: application/vnd.oci.image.manifest.v1+json"], Some(b"{not json")), 400, "MANIFEST_INVALID");

    // Names with `..` or upper case.
    expect_error(http("GET", &format!("{base}/a/../b/tags/list"), &[], None), 400, "NAME_INVALID");
    expect_error(http("POST", &format!("{base}/Upper/blobs/uploads/"), &[], None), 400, "NAME_INVALID");
    expect_error(http("GET", &format!("{base}/never/pushed/tags/list"), &[], None), 404, "NAME_UNKNOWN");

    // An upload cut off half way: the partial chunk is dropped, the upload can go on.
    let (code, headers, _) = http("POST", &format!("{base}/bad/blobs/uploads/"), &[], None);
    assert_eq!(code, 202);
    let location = header(&headers, "location").to_owned();
    let response = cut_off_request(&reg.addr, "PATCH", &location, 1 << 20, 300 << 10);
    assert!(response.starts_with("HTTP/1.1 400") && response.contains("BLOB_UPLOAD_INVALID"), "{response}");
    let (code, headers, _) = http("GET", &format!("http://{}{location}", reg.addr), &[], None);
    assert_eq!((code, header(&headers, "range")), (204, "0-0"));
    let data = wasm_module(1 << 20, 3);
    let digest = sha256(&data);
    let (code, headers, _) = http("PATCH", &format!("http://{}{location}", reg.addr), &["Content-Type: application/octet-stream"], Some(&data));
    assert_eq!((code, header(&headers, "range")), (202, format!("0-{}", data.len() - 1).as_str()));
    expect_error(http("PATCH", &format!("http://{}{location}", reg.addr), &["Content-Range: 5-9"], Some(b"12345")), 416, "RANGE_INVALID");
    let (code, _, _) = http("PUT", &format!("http://{}{location}?digest={digest}", reg.addr), &[], None);
    assert_eq!(code, 201);
    let (code, _, body) = http("GET", &format!("{base}/bad/blobs/{digest}"), &[], None);
    assert!(code == 200 && body == data, "chunked upload served wrong bytes");
    let (code, headers, body) = http("GET", &format!("{base}/bad/blobs/{digest}"), &["Range: bytes=10-19"], None);
    assert_eq!((code, body.as_slice(), header(&headers, "content-range")), (206, &data[10..20], format!("bytes 10-19/{}", data.len()).as_str()));

    // A 2 GiB Content-Length lie on a monolithic upload.
    let lie = sha256(b"never sent");
    let response = cut_off_request(&reg.addr, "POST", &format!("/v2/bad/blobs/uploads/?digest={lie}"), 2 << 30, 64 << 10);
    assert!(response.starts_with("HTTP/1.1 400") && response.contains("BLOB_UPLOAD_INVALID"), "{response}");
    assert_eq!(blob_state(&lie), 404);

    // Two concurrent pushes of the same blob both succeed and the blob is whole.
    let big = wasm_module(8 << 20, 11);
    let big_digest = sha256(&big);
    let pushes: Vec<_> = (0..2)
        .map(|_| {
            let (url, body) = (format!("{base}/bad/blobs/uploads/?digest={big_digest}"), big.clone());
            std::thread::spawn(move || http("POST", &url, &["Content-Type: application/octet-stream"], Some(&body)).0)
        })
        .collect();
    for p in pushes {
        assert_eq!(p.join().expect("push thread"), 201);
    }
    let (code, _, body) = http("GET", &format!("{base}/bad/blobs/{big_digest}"), &[], None);
    assert!(code == 200 && sha256(&body) == big_digest);

    // Nothing half-written is left behind, and the registry still serves.
    let leftovers = std::fs::read_dir(reg.data().join("tmp")).map(|d| d.count()).unwrap_or(0);
    assert_eq!(leftovers, 0, "temporary files left in the registry");
    assert_eq!(http("GET", &format!("{base}/"), &[], None).0, 200);
}

#[test]
fn content_altered_on_the_registry_disk_is_refused_by_digest() {
    let reg = Registry::start();
    let work = TempDir::new("altered");
    let module = wasm_module(64 << 10, 5);
    let file = write_tmp(&work, "m.wasm", &module);
    let reference = format!("{}/tampered/app:v1", reg.addr);
    ok(wasmkube(&["push"]).arg(&file).arg(&reference));
    pull(&reference, &[]).expect("an intact pull works");

    let blob = reg.data().join("blobs/sha256").join(&sha256(&module)[7..]);
    let mut altered = std::fs::read(&blob).expect("stored blob");
    let last = altered.len() - 1;
    altered[last] ^= 0xff;
    std::fs::write(&blob, &altered).expect("alter blob");
    let err = pull(&reference, &[]).expect_err("altered content must be refused");
    assert!(err.contains("digest") && err.contains(&sha256(&module)), "{err}");
}
