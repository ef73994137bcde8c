//! The node's image store: pulls wasm artifacts and Linux images from any OCI registry
//! (through `oci-client`) into one content-addressed cache shared by every pod.
//!
//! ```text
//! blobs/sha256/<hex>   manifests, configs and layers, each verified against its digest
//! refs/<reference>     the manifest digest a tag resolved to (for IfNotPresent / Never)
//! tmp/                 downloads in flight; renamed into blobs/ only once verified
//! ```
//!
//! Nothing unverified is ever visible under `blobs/`: bytes are hashed as they arrive,
//! compared with the digest the manifest names, fsynced, then renamed in. Concurrent pulls
//! of one blob in this process wait on a per-digest lock; across processes the rename makes
//! the last writer replace equal bytes.

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use serde_json::Value;
use sha2::Digest as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncWriteExt;

pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer media types that carry a wasm module or component.
pub const WASM_LAYERS: [&str; 3] = ["application/wasm", "application/vnd.wasm.content.layer.v1+wasm", "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"];
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Upstream's default: `Always` for `:latest` or an image with neither tag nor digest,
    /// otherwise `IfNotPresent`.
    pub fn default_for(image: &str) -> PullPolicy {
        if image.contains('@') {
            return PullPolicy::IfNotPresent;
        }
        // A tag is a ':' after the last '/', so `host:5000/x` has none.
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            Some((_, "latest")) | None => PullPolicy::Always,
            Some(_) => PullPolicy::IfNotPresent,
        }
    }

    pub fn parse(s: &str) -> Option<PullPolicy> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// Registries spoken to over plain HTTP: loopback ones always, others only when listed.
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || insecure.iter().any(|r| r == registry)
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pulling {image}: not found: {message}")]
    NotFound { image: String, message: String },
    #[error("pulling {image}: unauthorized: {message}")]
    Unauthorized { image: String, message: String },
    #[error("pulling {image}: {message}")]
    Invalid { image: String, message: String },
    #[error("pulling {image}: digest mismatch: expected {expected}, got {actual}; the registry's content is corrupt or was altered")]
    DigestMismatch { image: String, expected: String, actual: String },
    #[error("Container image \"{image}\" is not present with pull policy of Never")]
    NotPresent { image: String },
    #[error("pulling {image}: {message}")]
    Registry { image: String, message: String },
    #[error("image cache: {0}")]
    Io(#[from] std::io::Error),
}

/// Credentials per registry host, from docker `config.json` files or the
/// `.dockerconfigjson` of `kubernetes.io/dockerconfigjson` Secrets.
#[derive(Clone, Debug, Default)]
pub struct RegistryCredentials {
    /// (normalised registry, user, password), first match wins.
    entries: Vec<(String, String, String)>,
}

impl RegistryCredentials {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn basic(registry: &str, username: &str, password: &str) -> Self {
        Self { entries: vec![(normalise_registry(registry), username.to_owned(), password.to_owned())] }
    }

    /// `{"auths": {"<server>": {"auth": base64("user:pass")} | {"username", "password"}}}`.
    pub fn from_docker_config(json: &[u8]) -> Result<Self, PullError> {
        use base64::Engine as _;
        let bad = |message: String| PullError::Invalid { image: "(credentials)".into(), message };
        let doc: Value = serde_json::from_slice(json).map_err(|e| bad(format!("docker config is not valid JSON: {e}")))?;
        let auths = doc.get("auths").and_then(Value::as_object).ok_or_else(|| bad("docker config has no \"auths\" object".into()))?;
        let mut entries = Vec::new();
        for (server, entry) in auths {
            let (user, pass) = match entry["auth"].as_str().filter(|a| !a.is_empty()) {
                Some(auth) => {
                    let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|e| bad(format!("auths.{server}.auth is not base64: {e}")))?;
                    let text = String::from_utf8(decoded).map_err(|_| bad(format!("auths.{server}.auth is not UTF-8")))?;
                    let (u, p) = text.split_once(':').ok_or_else(|| bad(format!("auths.{server}.auth is not user:password")))?;
                    (u.to_owned(), p.to_owned())
                }
                None => match (entry["username"].as_str(), entry["password"].as_str()) {
                    (Some(u), Some(p)) => (u.to_owned(), p.to_owned()),
                    _ => continue,
                },
            };
            entries.push((normalise_registry(server), user, pass));
        }
        Ok(Self { entries })
    }

    /// Adds `other`'s entries after ours (several imagePullSecrets: the first wins).
    pub fn merge(&mut self, other: RegistryCredentials) {
        self.entries.extend(other.entries);
    }

    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        let wanted = normalise_registry(registry);
        self.entries
            .iter()
            .find(|(r, _, _)| *r == wanted)
            .map_or(RegistryAuth::Anonymous, |(_, u, p)| RegistryAuth::Basic(u.clone(), p.clone()))
    }
}

/// `https://index.docker.io/v1/`, `http://host:5000/path` and `host:5000` name the
/// registry by host[:port], as kubelet matches them; Docker Hub has several names.
fn normalise_registry(server: &str) -> String {
    let s = server.trim();
    let s = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://")).unwrap_or(s);
    let host = s.split('/').next().unwrap_or(s).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "index.docker.io".into(),
        _ => host,
    }
}

#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The normalised reference, e.g. `127.0.0.1:5000/hello:v1`.
    pub reference: String,
    /// The digest of the manifest used (after choosing from an index): the imageID.
    pub digest: String,
    pub content: ImageContent,
}

#[derive(Clone, Debug)]
pub enum ImageContent {
    /// A wasm artifact: exactly one wasm layer.
    Wasm { path: PathBuf, digest: String, media_type: String, size: u64, os: Option<String> },
    /// An ordinary Linux image, layers kept for the container shim.
    Linux { config: PathBuf, layers: Vec<CachedLayer> },
}

#[derive(Clone, Debug)]
pub struct CachedLayer {
    pub path: PathBuf,
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

#[derive(Clone)]
pub struct ImageStore {
    root: Arc<PathBuf>,
    insecure: Arc<Vec<String>>,
    /// One lock per digest being downloaded, so concurrent pulls share one download.
    inflight: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A descriptor as manifests carry it.
struct Descriptor {
    digest: String,
    media_type: String,
    size: u64,
}

impl Descriptor {
    fn from_json(v: &Value) -> Option<Self> {
        Some(Self { digest: v["digest"].as_str()?.to_owned(), media_type: v["mediaType"].as_str().unwrap_or("").to_owned(), size: v["size"].as_u64()? })
    }
}

impl ImageStore {
    pub fn open(root: &Path, insecure_registries: Vec<String>) -> Result<Self, PullError> {
        std::fs::create_dir_all(root.join("blobs/sha256"))?;
        std::fs::create_dir_all(root.join("refs"))?;
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(Self { root: Arc::new(root.to_owned()), insecure: Arc::new(insecure_registries), inflight: Default::default() })
    }

    fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.strip_prefix("sha256:")?;
        (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| self.root.join("blobs/sha256").join(hex))
    }

    fn ref_path(&self, reference: &Reference) -> PathBuf {
        // The reference's characters are [a-z0-9._:/@-]; ':' and '@' are fine in file names.
        self.root.join("refs").join(reference.whole().replace('/', "%2F"))
    }

    pub async fn pull(&self, image: &str, policy: PullPolicy, creds: &RegistryCredentials) -> Result<PulledImage, PullError> {
        let reference: Reference = image.parse().map_err(|e| PullError::Invalid { image: image.to_owned(), message: format!("invalid image reference: {e}") })?;
        let name = reference.whole();
        if policy != PullPolicy::Always {
            if let Some(pulled) = self.cached(&reference) {
                return Ok(pulled);
            }
            if policy == PullPolicy::Never {
                return Err(PullError::NotPresent { image: image.to_owned() });
            }
        }
        let registry = reference.resolve_registry().to_owned();
        let protocol = if plain_http_allowed(&registry, &self.insecure) { ClientProtocol::HttpsExcept(vec![registry.clone()]) } else { ClientProtocol::Https };
        let client = Client::new(ClientConfig { protocol, platform_resolver: None, ..Default::default() });
        let auth = creds.for_registry(&registry);
        let err = |e| registry_error(&name, e);

        let (body, digest) = client.pull_manifest_raw(&reference, &auth, &ACCEPTED_MANIFESTS).await.map_err(err)?;
        self.verify_manifest(&name, &body, &digest, reference.digest())?;
        let mut doc: Value = serde_json::from_slice(&body).map_err(|e| PullError::Invalid { image: name.clone(), message: format!("manifest is not JSON: {e}") })?;
        let (mut body, mut digest) = (body, digest);
        if doc.get("manifests").is_some() {
            let chosen = choose_platform(&doc).map_err(|message| PullError::Invalid { image: name.clone(), message })?;
            let child = reference.clone_with_digest(chosen.clone());
            (body, digest) = client.pull_manifest_raw(&child, &auth, &ACCEPTED_MANIFESTS).await.map_err(err)?;
            self.verify_manifest(&name, &body, &digest, Some(&chosen))?;
            doc = serde_json::from_slice(&body).map_err(|e| PullError::Invalid { image: name.clone(), message: format!("manifest is not JSON: {e}") })?;
        }
        let content = self.fetch_content(&client, &reference, &name, &doc).await?;
        // The manifest goes in last: its presence in the cache means everything it names is there.
        let manifest_path = self.blob_path(&digest).ok_or_else(|| PullError::Invalid { image: name.clone(), message: format!("unsupported digest {digest}") })?;
        write_atomically(&self.root, &manifest_path, &body)?;
        write_atomically(&self.root, &self.ref_path(&reference), digest.as_bytes())?;
        Ok(PulledImage { reference: name, digest, content })
    }

    /// The bytes must hash to the digest the registry claims and to the one asked for.
    fn verify_manifest(&self, image: &str, body: &[u8], claimed: &str, wanted: Option<&str>) -> Result<(), PullError> {
        let actual = format!("sha256:{}", hex::encode(sha2::Sha256::digest(body)));
        for expected in std::iter::once(claimed).chain(wanted) {
            if expected != actual {
                return Err(PullError::DigestMismatch { image: image.to_owned(), expected: expected.to_owned(), actual });
            }
        }
        Ok(())
    }

    /// A previous pull of this reference, if all of its blobs are still in the cache.
    fn cached(&self, reference: &Reference) -> Option<PulledImage> {
        let digest = match reference.digest() {
            Some(d) => d.to_owned(),
            None => std::fs::read_to_string(self.ref_path(reference)).ok()?.trim().to_owned(),
        };
        let body = std::fs::read(self.blob_path(&digest)?).ok()?;
        let doc: Value = serde_json::from_slice(&body).ok()?;
        let (config, layers) = descriptors(&doc).ok()?;
        let present = |d: &Descriptor| self.blob_path(&d.digest).and_then(|p| std::fs::metadata(p).ok()).is_some_and(|m| m.len() == d.size);
        if !present(&config) || !layers.iter().all(present) {
            return None;
        }
        let content = self.content_from(&reference.whole(), &config, layers).ok()?;
        Some(PulledImage { reference: reference.whole(), digest, content })
    }

    async fn fetch_content(&self, client: &Client, reference: &Reference, name: &str, doc: &Value) -> Result<ImageContent, PullError> {
        let (config, layers) = descriptors(doc).map_err(|message| PullError::Invalid { image: name.to_owned(), message })?;
        self.fetch_blob(client, reference, name, &config).await?;
        let is_wasm = config.media_type == WASM_CONFIG || layers.iter().any(|l| WASM_LAYERS.contains(&l.media_type.as_str()));
        for layer in &layers {
            // A wasm artifact's other layers (signatures, docs) are not needed to run it.
            if is_wasm && !WASM_LAYERS.contains(&layer.media_type.as_str()) {
                continue;
            }
            self.fetch_blob(client, reference, name, layer).await?;
        }
        self.content_from(name, &config, layers)
    }

    fn content_from(&self, name: &str, config: &Descriptor, layers: Vec<Descriptor>) -> Result<ImageContent, PullError> {
        let invalid = |message: String| PullError::Invalid { image: name.to_owned(), message };
        let path = |d: &Descriptor| self.blob_path(&d.digest).ok_or_else(|| invalid(format!("unsupported digest {}", d.digest)));
        let wasm: Vec<&Descriptor> = layers.iter().filter(|l| WASM_LAYERS.contains(&l.media_type.as_str())).collect();
        if config.media_type == WASM_CONFIG || !wasm.is_empty() {
            let [layer] = wasm.as_slice() else {
                return Err(invalid(format!("a wasm artifact needs exactly one wasm layer, this one has {}", wasm.len())));
            };
            let os = std::fs::read(path(config)?).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok()).and_then(|c| c["os"].as_str().map(str::to_owned));
            return Ok(ImageContent::Wasm { path: path(layer)?, digest: layer.digest.clone(), media_type: layer.media_type.clone(), size: layer.size, os });
        }
        let mut cached = Vec::new();
        for l in &layers {
            cached.push(CachedLayer { path: path(l)?, digest: l.digest.clone(), media_type: l.media_type.clone(), size: l.size });
        }
        Ok(ImageContent::Linux { config: path(config)?, layers: cached })
    }

    /// Downloads one blob into the cache unless it is there already, verified.
    async fn fetch_blob(&self, client: &Client, reference: &Reference, name: &str, d: &Descriptor) -> Result<(), PullError> {
        let dest = self.blob_path(&d.digest).ok_or_else(|| PullError::Invalid { image: name.to_owned(), message: format!("unsupported digest {}", d.digest) })?;
        let lock = {
            let mut inflight = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
            inflight.entry(d.digest.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        if std::fs::metadata(&dest).is_ok_and(|m| m.len() == d.size) {
            return Ok(());
        }
        let tmp = self.root.join("tmp").join(format!("{}-{}", &d.digest[7..], uuid::Uuid::new_v4()));
        let result = self.download(client, reference, name, d, &tmp, &dest).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&tmp).await;
        }
        result
    }

    async fn download(&self, client: &Client, reference: &Reference, name: &str, d: &Descriptor, tmp: &Path, dest: &Path) -> Result<(), PullError> {
        let mut stream = client.pull_blob_stream(reference, d.digest.as_str()).await.map_err(|e| registry_error(name, e))?;
        let mut file = tokio::fs::File::create(tmp).await?;
        let mut out = tokio::io::BufWriter::with_capacity(1 << 20, &mut file);
        let mut hasher = sha2::Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| PullError::Registry { image: name.to_owned(), message: format!("downloading {}: {e}", d.digest) })?;
            size += chunk.len() as u64;
            if size > d.size {
                return Err(PullError::Invalid { image: name.to_owned(), message: format!("blob {} is larger than the {} bytes its descriptor says", d.digest, d.size) });
            }
            hasher.update(&chunk);
            out.write_all(&chunk).await?;
        }
        out.flush().await?;
        let actual = format!("sha256:{}", hex::encode(hasher.finalize()));
        if actual != d.digest {
            return Err(PullError::DigestMismatch { image: name.to_owned(), expected: d.digest.clone(), actual });
        }
        if size != d.size {
            return Err(PullError::Invalid { image: name.to_owned(), message: format!("blob {} has {size} bytes, its descriptor says {}", d.digest, d.size) });
        }
        file.sync_all().await?;
        tokio::fs::rename(tmp, dest).await?;
        Ok(())
    }
}

/// The config and layer descriptors of an image manifest.
fn descriptors(doc: &Value) -> Result<(Descriptor, Vec<Descriptor>), String> {
    let config = Descriptor::from_json(&doc["config"]).ok_or("the manifest has no valid config descriptor")?;
    let layers = doc["layers"].as_array().map(Vec::as_slice).unwrap_or_default();
    let layers = layers.iter().map(|l| Descriptor::from_json(l).ok_or("the manifest has an invalid layer descriptor")).collect::<Result<Vec<_>, _>>()?;
    Ok((config, layers))
}

/// From an index: a wasm platform first, else linux/amd64 (for the container shim).
fn choose_platform(index: &Value) -> Result<String, String> {
    let entries = index["manifests"].as_array().map(Vec::as_slice).unwrap_or_default();
    let platform = |e: &Value| (e["platform"]["os"].as_str().unwrap_or("").to_owned(), e["platform"]["architecture"].as_str().unwrap_or("").to_owned());
    let wasm = entries.iter().find(|e| {
        let (os, arch) = platform(e);
        matches!(os.as_str(), "wasip1" | "wasip2" | "wasi") || arch == "wasm"
    });
    let linux = || entries.iter().find(|e| platform(e) == ("linux".into(), "amd64".into()));
    match wasm.or_else(linux).and_then(|e| e["digest"].as_str()) {
        Some(d) => Ok(d.to_owned()),
        None => {
            let offered: Vec<String> = entries.iter().map(|e| { let (os, arch) = platform(e); format!("{os}/{arch}") }).collect();
            Err(format!("no wasm or linux/amd64 image in the index (it offers: {})", offered.join(", ")))
        }
    }
}

/// Turns oci-client's errors into messages a pod status can show.
fn registry_error(image: &str, e: OciDistributionError) -> PullError {
    let image = image.to_owned();
    match e {
        OciDistributionError::UnauthorizedError { url } => PullError::Unauthorized { image, message: format!("authentication required ({url})") },
        OciDistributionError::AuthenticationFailure(message) => PullError::Unauthorized { image, message },
        OciDistributionError::ImageManifestNotFoundError(message) => PullError::NotFound { image, message },
        OciDistributionError::DigestError(d) => PullError::Registry { image, message: format!("digest check failed: {d}") },
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<String> = envelope.errors.iter().map(|e| format!("{:?}", e.code)).collect();
            let message = envelope.errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            let message = format!("{message} ({url})");
            if codes.iter().any(|c| c == "Unauthorized" || c == "Denied") {
                PullError::Unauthorized { image, message }
            } else if codes.iter().any(|c| c.ends_with("Unknown")) {
                PullError::NotFound { image, message }
            } else {
                PullError::Registry { image, message }
            }
        }
        OciDistributionError::ServerError { code: 401, url, message } => PullError::Unauthorized { image, message: format!("{message} ({url})") },
        OciDistributionError::ServerError { code: 404, url, message } => PullError::NotFound { image, message: format!("{message} ({url})") },
        other => PullError::Registry { image, message: other.to_string() },
    }
}

fn write_atomically(root: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = root.join("tmp").join(uuid::Uuid::new_v4().to_string());
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pull_policy_defaults_follow_upstream() {
        assert_eq!(PullPolicy::default_for("nginx"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("nginx:latest"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("nginx:1.27"), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for("host:5000/x"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("host:5000/x:v1"), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for(&format!("x@sha256:{}", "a".repeat(64))), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::parse("Never"), Some(PullPolicy::Never));
        assert_eq!(PullPolicy::parse("never"), None);
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        assert!(plain_http_allowed("127.0.0.1:5000", &[]));
        assert!(plain_http_allowed("localhost:5000", &[]));
        assert!(plain_http_allowed("[::1]:5000", &[]));
        assert!(!plain_http_allowed("ghcr.io", &[]));
        assert!(plain_http_allowed("reg.lan:5000", &["reg.lan:5000".into()]));
    }

    #[test]
    fn docker_configs_as_kubectl_and_docker_write_them() {
        let config = json!({ "auths": {
            "https://index.docker.io/v1/": { "auth": "dTE6cDE=" },            // u1:p1
            "http://reg.lan:5000/v2/": { "username": "u2", "password": "p:2" },
            "reg.lan:5000": { "auth": "c2Vjb25kOndpbnM=" },                     // second:wins, but is second
        }});
        let creds = RegistryCredentials::from_docker_config(config.to_string().as_bytes()).unwrap();
        let basic = |r: &str| match creds.for_registry(r) {
            RegistryAuth::Basic(u, p) => format!("{u}:{p}"),
            other => format!("{other:?}"),
        };
        assert_eq!(basic("docker.io"), "u1:p1");
        assert_eq!(basic("reg.lan:5000"), "u2:p:2");
        assert_eq!(basic("other:5000"), "Anonymous");
        let mut merged = RegistryCredentials::basic("other:5000", "a", "b");
        merged.merge(creds);
        assert!(matches!(merged.for_registry("other:5000"), RegistryAuth::Basic(u, _) if u == "a"));
        assert!(RegistryCredentials::from_docker_config(b"{}").is_err());
        assert!(RegistryCredentials::from_docker_config(br#"{"auths":{"x":{"auth":"!!"}}}"#).is_err());
    }

    #[test]
    fn index_entries_prefer_wasm_then_linux_amd64() {
        let entry = |os: &str, arch: &str, d: &str| json!({ "mediaType": OCI_MANIFEST, "digest": d, "size": 1, "platform": { "os": os, "architecture": arch } });
        let index = json!({ "manifests": [entry("linux", "arm64", "a"), entry("linux", "amd64", "b"), entry("wasip2", "wasm", "c")] });
        assert_eq!(choose_platform(&index).unwrap(), "c");
        let index = json!({ "manifests": [entry("linux", "arm64", "a"), entry("linux", "amd64", "b")] });
        assert_eq!(choose_platform(&index).unwrap(), "b");
        let err = choose_platform(&json!({ "manifests": [entry("windows", "amd64", "a")] })).unwrap_err();
        assert!(err.contains("windows/amd64"), "{err}");
    }

    #[test]
    fn wasm_artifacts_need_exactly_one_wasm_layer() {
        let dir = std::env::temp_dir().join(format!("wasmkube-images-test-{}", std::process::id()));
        let store = ImageStore::open(&dir, vec![]).unwrap();
        let d = |n: char, media: &str| Descriptor { digest: format!("sha256:{}", n.to_string().repeat(64)), media_type: media.into(), size: 3 };
        let config = d('0', WASM_CONFIG);
        match store.content_from("x", &config, vec![d('1', "application/wasm"), d('2', "application/vnd.example.sig")]).unwrap() {
            ImageContent::Wasm { digest, .. } => assert!(digest.ends_with('1')),
            other => panic!("{other:?}"),
        }
        let err = store.content_from("x", &config, vec![d('1', "application/wasm"), d('2', WASM_LAYERS[2])]).unwrap_err();
        assert!(err.to_string().contains("exactly one wasm layer"), "{err}");
        let linux = store.content_from("x", &d('0', "application/vnd.oci.image.config.v1+json"), vec![d('1', "application/vnd.oci.image.layer.v1.tar+gzip")]).unwrap();
        assert!(matches!(linux, ImageContent::Linux { layers, .. } if layers.len() == 1));
        let _ = std::fs::remove_dir_all(dir);
    }
}
