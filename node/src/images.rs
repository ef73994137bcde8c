//! The node's image store: pulls wasm artifacts and Linux images from any OCI registry
//! (through `oci-client`) into one content-addressed cache shared by every pod.
//!
//! A pull resolves the reference to a manifest (choosing a platform from an index),
//! decides whether it is a wasm artifact or a container image, and downloads the blobs
//! that needs into [`cache`], each verified against its digest before it becomes visible.
//! Manifests are verified too, and stored after the blobs they name; a tag's resolution
//! is stored last, so whatever the cache shows is complete. `IfNotPresent` and `Never`
//! are then answered from the cache alone.

mod cache;
mod credentials;
mod manifest;

pub use credentials::RegistryCredentials;
pub use manifest::{WASM_CONFIG, WASM_LAYERS};

use cache::{sha256_digest, BlobCache, BlobError};
use futures::{StreamExt, TryStreamExt};
use manifest::{choose_platform, Descriptor, Manifest, Plan, ACCEPTED_MANIFESTS, MAX_MANIFEST_BYTES};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{DigestError, OciDistributionError, OciEnvelope, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A registry that does not answer a connection within this is down, for a pod's purposes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// A download that gets no data for this long is stuck; the pull fails and can be retried.
const READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Blobs downloaded at once for one image.
const PARALLEL_DOWNLOADS: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl PullPolicy {
    /// Upstream's defaulting: `Always` when the tag is `latest`, or when there is neither a
    /// tag nor a digest (which means `latest`); otherwise `IfNotPresent`.
    pub fn default_for(image: &str) -> PullPolicy {
        let (name, digest) = match image.split_once('@') {
            Some((name, digest)) => (name, Some(digest)),
            None => (image, None),
        };
        // A tag is a ':' after the last '/', so `host:5000/x` has none.
        let last = name.rsplit('/').next().unwrap_or(name);
        match (last.split_once(':').map(|(_, tag)| tag), digest) {
            (Some("latest"), _) | (None, None) => PullPolicy::Always,
            _ => PullPolicy::IfNotPresent,
        }
    }

    /// The API's spelling: `Always`, `IfNotPresent` or `Never`.
    pub fn parse(s: &str) -> Option<PullPolicy> {
        match s {
            "Always" => Some(PullPolicy::Always),
            "IfNotPresent" => Some(PullPolicy::IfNotPresent),
            "Never" => Some(PullPolicy::Never),
            _ => None,
        }
    }
}

/// Registries spoken to over plain HTTP: loopback ones always, others only when listed
/// (as `host:port`).
pub fn plain_http_allowed(registry: &str, insecure: &[String]) -> bool {
    let host = match registry.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6),
        None => registry.rsplit_once(':').map_or(registry, |(h, _)| h),
    };
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    loopback || insecure.iter().any(|r| r.eq_ignore_ascii_case(registry))
}

/// Why a pull failed. The messages become pods' `ErrImagePull` messages, so each names the
/// image and carries the registry's own words where there are some.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("pulling {image}: not found: {message}")]
    NotFound { image: String, message: String },
    #[error("pulling {image}: unauthorized: {message}")]
    Unauthorized { image: String, message: String },
    /// The reference or what the registry serves cannot be used (unsupported media type, two
    /// wasm layers, no usable platform, ...).
    #[error("pulling {image}: {message}")]
    Invalid { image: String, message: String },
    #[error("pulling {image}: digest mismatch: expected {expected}, got {actual}; the registry's content is corrupt or was altered")]
    DigestMismatch { image: String, expected: String, actual: String },
    /// Kubelet's wording, so the pod's message reads the same.
    #[error("Container image \"{image}\" is not present with pull policy of Never")]
    NotPresent { image: String },
    /// Anything else the registry or the connection to it said.
    #[error("pulling {image}: {message}")]
    Registry { image: String, message: String },
    /// A docker config or pull secret that cannot be read.
    #[error("invalid registry credentials: {message}")]
    Credentials { message: String },
    #[error("image cache: {0}")]
    Io(#[from] std::io::Error),
}

#[derive(Clone, Debug)]
pub struct PulledImage {
    /// The normalised reference, e.g. `127.0.0.1:5000/hello:v1` or
    /// `docker.io/library/busybox:latest`.
    pub reference: String,
    /// The digest of the manifest used (after choosing from an index): the imageID.
    pub digest: String,
    pub content: ImageContent,
    /// The bytes of the blobs the image needs (its config and layers).
    pub size: u64,
    /// Answered from the cache without asking the registry (kubelet's "already present on
    /// machine"); `false` when the pull resolved the reference at the registry.
    pub already_present: bool,
}

#[derive(Clone, Debug)]
pub enum ImageContent {
    /// A wasm artifact: exactly one wasm layer. `os` is the config's (`wasip1`, `wasip2`).
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

/// The image cache of a node, shared by all its pods (clone it freely).
#[derive(Clone)]
pub struct ImageStore {
    cache: BlobCache,
    insecure: Arc<Vec<String>>,
}

/// An image manifest reached from a reference, and the index it came through, if any.
struct Resolved {
    index: Option<(String, Vec<u8>)>,
    digest: String,
    body: Vec<u8>,
    plan: Plan,
}

/// One attempt at a registry with one credential.
struct Remote<'a> {
    client: Client,
    reference: &'a Reference,
    auth: RegistryAuth,
    /// The normalised reference, for messages.
    image: String,
}

impl ImageStore {
    /// Opens (creating it if needed) the cache under `root`. `insecure_registries` are
    /// `host:port`s reached over plain HTTP besides loopback ones, which always are.
    pub fn open(root: &Path, insecure_registries: Vec<String>) -> Result<Self, PullError> {
        Ok(Self { cache: BlobCache::open(root)?, insecure: Arc::new(insecure_registries) })
    }

    /// Makes `image` present in the cache as `policy` asks (kubelet's semantics): `Always`
    /// resolves it at the registry (blobs already cached are not downloaded again),
    /// `IfNotPresent` only when the cache lacks it, `Never` not at all.
    pub async fn pull(&self, image: &str, policy: PullPolicy, creds: &RegistryCredentials) -> Result<PulledImage, PullError> {
        let reference: Reference = image.parse().map_err(|e| invalid(image, format!("invalid image reference: {e}")))?;
        if policy != PullPolicy::Always {
            if let Some(pulled) = self.cached(&reference) {
                tracing::debug!(image = %pulled.reference, digest = %pulled.digest, "image present in the cache");
                return Ok(pulled);
            }
            if policy == PullPolicy::Never {
                return Err(PullError::NotPresent { image: image.to_owned() });
            }
        }
        let mut auths = creds.for_image(&reference);
        if auths.is_empty() {
            auths.push(RegistryAuth::Anonymous);
        }
        // Like kubelet, try each credential that applies until one is accepted.
        let mut last = None;
        for auth in auths {
            match self.pull_from_registry(&reference, auth).await {
                Err(e @ PullError::Unauthorized { .. }) => last = Some(e),
                done => return done,
            }
        }
        Err(last.unwrap_or_else(|| PullError::Unauthorized { image: reference.whole(), message: "no credentials to try".into() }))
    }

    /// Whether `IfNotPresent` would find `image` in the cache, so a pull need not ask the
    /// registry.
    pub fn present(&self, image: &str) -> bool {
        image.parse::<Reference>().is_ok_and(|reference| self.cached(&reference).is_some())
    }

    /// A previous pull of this reference, if everything it needs is still in the cache.
    fn cached(&self, reference: &Reference) -> Option<PulledImage> {
        let name = reference.whole();
        let top = match reference.digest() {
            Some(digest) => digest.to_owned(),
            None => self.cache.read_ref(&name)?,
        };
        let (digest, manifest) = match Manifest::parse(&self.cache.read_verified(&top)?).ok()? {
            Manifest::Index(entries) => {
                let entry = choose_platform(&entries).ok()?;
                (entry.digest.clone(), Manifest::parse(&self.cache.read_verified(&entry.digest)?).ok()?)
            }
            image => (top, image),
        };
        let Manifest::Image { config, layers } = manifest else { return None };
        let plan = Plan::classify(config, layers).ok()?;
        if !plan.blobs().iter().all(|d| self.cache.has(&d.digest, d.size)) {
            return None;
        }
        let content = self.content(&name, &plan).ok()?;
        Some(PulledImage { reference: name, digest, content, size: blobs_size(&plan), already_present: true })
    }

    async fn pull_from_registry(&self, reference: &Reference, auth: RegistryAuth) -> Result<PulledImage, PullError> {
        let remote = self.remote(reference, auth)?;
        let resolved = self.resolve(&remote).await?;
        // The futures are made first: a `map` closure inside the stream would make the
        // pull's future not `Send` (a higher-ranked lifetime the compiler cannot prove).
        let fetches: Vec<_> = resolved.plan.blobs().into_iter().map(|d| self.fetch_blob(&remote, d)).collect();
        futures::stream::iter(fetches).buffer_unordered(PARALLEL_DOWNLOADS).try_collect::<()>().await?;
        // Manifests after the blobs they name, the tag last: what the cache shows is complete.
        self.store_manifest(&remote, &resolved.digest, &resolved.body).await?;
        if let Some((digest, body)) = &resolved.index {
            self.store_manifest(&remote, digest, body).await?;
        }
        if reference.digest().is_none() {
            let top = resolved.index.as_ref().map_or(&resolved.digest, |(digest, _)| digest);
            self.cache.write_ref(&remote.image, top).await?;
        }
        let content = self.content(&remote.image, &resolved.plan)?;
        tracing::info!(image = %remote.image, digest = %resolved.digest, "pulled image");
        Ok(PulledImage { reference: remote.image, digest: resolved.digest, content, size: blobs_size(&resolved.plan), already_present: false })
    }

    fn remote<'a>(&self, reference: &'a Reference, auth: RegistryAuth) -> Result<Remote<'a>, PullError> {
        let registry = reference.resolve_registry();
        let protocol = if plain_http_allowed(registry, &self.insecure) { ClientProtocol::HttpsExcept(vec![registry.to_owned()]) } else { ClientProtocol::Https };
        // Indexes are resolved here (wasm first), not by the client's platform resolver.
        let config = ClientConfig { protocol, platform_resolver: None, connect_timeout: Some(CONNECT_TIMEOUT), read_timeout: Some(READ_TIMEOUT), ..Default::default() };
        // `Client::new` would fall back to a default (HTTPS) client on error; say why instead.
        let client = Client::try_from(config).map_err(|e| PullError::Registry { image: reference.whole(), message: format!("creating the registry client: {}", error_chain(&e)) })?;
        Ok(Remote { client, reference, auth, image: reference.whole() })
    }

    /// The image manifest to use: the one named, or the chosen platform's from an index.
    async fn resolve(&self, remote: &Remote<'_>) -> Result<Resolved, PullError> {
        let (digest, body) = remote.manifest(remote.reference, None).await?;
        let entries = match Manifest::parse(&body).map_err(|m| invalid(&remote.image, m))? {
            Manifest::Image { config, layers } => {
                let plan = Plan::classify(config, layers).map_err(|m| invalid(&remote.image, m))?;
                return Ok(Resolved { index: None, digest, body, plan });
            }
            Manifest::Index(entries) => entries,
        };
        let entry = choose_platform(&entries).map_err(|m| invalid(&remote.image, m))?;
        let child = remote.reference.clone_with_digest(entry.digest.clone());
        let (child_digest, child_body) = remote.manifest(&child, Some(entry)).await?;
        match Manifest::parse(&child_body).map_err(|m| invalid(&remote.image, m))? {
            Manifest::Image { config, layers } => {
                let plan = Plan::classify(config, layers).map_err(|m| invalid(&remote.image, m))?;
                Ok(Resolved { index: Some((digest, body)), digest: child_digest, body: child_body, plan })
            }
            Manifest::Index(_) => Err(invalid(&remote.image, format!("{} is an index inside an index, which is not supported", entry.digest))),
        }
    }

    /// Downloads one blob into the cache unless it is there already. The per-digest lock
    /// makes concurrent pulls of one image share the download.
    async fn fetch_blob(&self, remote: &Remote<'_>, d: &Descriptor) -> Result<(), PullError> {
        let _lock = self.cache.lock(&d.digest).await;
        if self.cache.has(&d.digest, d.size) {
            return Ok(());
        }
        tracing::debug!(image = %remote.image, digest = %d.digest, size = d.size, "downloading blob");
        let download = remote.client.pull_blob_stream(remote.reference, d.digest.as_str()).await.map_err(|e| remote.error(e))?;
        self.cache.write_stream(&d.digest, d.size, download.stream).await.map_err(|e| blob_error(&remote.image, d, e))?;
        Ok(())
    }

    async fn store_manifest(&self, remote: &Remote<'_>, digest: &str, body: &[u8]) -> Result<(), PullError> {
        let d = Descriptor { media_type: String::new(), digest: digest.to_owned(), size: body.len() as u64, platform: None };
        self.cache.write_bytes(digest, body).await.map_err(|e| blob_error(&remote.image, &d, e))?;
        Ok(())
    }

    fn content(&self, image: &str, plan: &Plan) -> Result<ImageContent, PullError> {
        let path = |d: &Descriptor| self.cache.path(&d.digest).ok_or_else(|| invalid(image, format!("unsupported digest {}", d.digest)));
        match plan {
            Plan::Wasm { config, layer } => {
                let os = config_os(&path(config)?);
                Ok(ImageContent::Wasm { path: path(layer)?, digest: layer.digest.clone(), media_type: layer.media_type.clone(), size: layer.size, os })
            }
            Plan::Linux { config, layers } => {
                let layers = layers
                    .iter()
                    .map(|l| Ok(CachedLayer { path: path(l)?, digest: l.digest.clone(), media_type: l.media_type.clone(), size: l.size }))
                    .collect::<Result<_, PullError>>()?;
                Ok(ImageContent::Linux { config: path(config)?, layers })
            }
        }
    }
}

impl Remote<'_> {
    /// A manifest's digest and bytes, verified. oci-client already checks the body against
    /// the `Docker-Content-Digest` header and the reference's digest, in whatever algorithm
    /// they use; this checks again in sha256, the cache's key, so nothing unverified is ever
    /// stored even if the registry sent no header. `expected` is the index entry followed.
    async fn manifest(&self, reference: &Reference, expected: Option<&Descriptor>) -> Result<(String, Vec<u8>), PullError> {
        let (body, claimed) = self.client.pull_manifest_raw(reference, &self.auth, &ACCEPTED_MANIFESTS).await.map_err(|e| self.error(e))?;
        if body.len() > MAX_MANIFEST_BYTES {
            return Err(invalid(&self.image, format!("the manifest is {} bytes, more than the {MAX_MANIFEST_BYTES} allowed", body.len())));
        }
        let actual = sha256_digest(&body);
        let wanted = [Some(claimed.as_str()), reference.digest()];
        if let Some(expected) = wanted.into_iter().flatten().find(|d| d.starts_with("sha256:") && **d != actual) {
            return Err(PullError::DigestMismatch { image: self.image.clone(), expected: expected.to_owned(), actual });
        }
        if let Some(d) = reference.digest().filter(|d| !d.starts_with("sha256:")) {
            return Err(invalid(&self.image, format!("unsupported digest {d}: only sha256 is supported")));
        }
        if let Some(entry) = expected.filter(|e| e.size != body.len() as u64) {
            return Err(invalid(&self.image, format!("manifest {} has {} bytes, the index says {}", entry.digest, body.len(), entry.size)));
        }
        Ok((actual, body.to_vec()))
    }

    fn error(&self, e: OciDistributionError) -> PullError {
        let mut err = registry_error(&self.image, e);
        if let PullError::Unauthorized { message, .. } = &mut err {
            if self.auth != RegistryAuth::Anonymous {
                message.push_str(&format!(" (the credentials for {} were not accepted)", self.reference.registry()));
            }
        }
        err
    }
}

/// The bytes of the blobs an image needs, as its `Pulled` Event reports its size.
fn blobs_size(plan: &Plan) -> u64 {
    plan.blobs().iter().map(|d| d.size).sum()
}

/// The `os` of a wasm artifact's config (`wasip1`, `wasip2`), if it says.
fn config_os(config: &Path) -> Option<String> {
    let bytes = std::fs::read(config).ok()?;
    let doc: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    doc["os"].as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

fn invalid(image: &str, message: impl Into<String>) -> PullError {
    PullError::Invalid { image: image.to_owned(), message: message.into() }
}

/// Why a blob was not stored, as a pull error naming the image.
fn blob_error(image: &str, d: &Descriptor, e: BlobError) -> PullError {
    let image = image.to_owned();
    match e {
        BlobError::UnsupportedDigest => PullError::Invalid { image, message: format!("unsupported digest {}", d.digest) },
        BlobError::Source(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<DigestError>()) {
            // oci-client's own check at the end of the stream.
            Some(DigestError::VerificationError { expected, actual }) => PullError::DigestMismatch { image, expected: expected.clone(), actual: actual.clone() },
            _ => PullError::Registry { image, message: format!("downloading {}: {}", d.digest, error_chain(&e)) },
        },
        BlobError::TooLarge => PullError::Invalid { image, message: format!("blob {} is larger than the {} bytes its descriptor says", d.digest, d.size) },
        BlobError::SizeMismatch { actual } => PullError::Invalid { image, message: format!("blob {} has {actual} bytes, its descriptor says {}", d.digest, d.size) },
        BlobError::DigestMismatch { actual } => PullError::DigestMismatch { image, expected: d.digest.clone(), actual },
        BlobError::Io(e) => PullError::Io(e),
    }
}

/// Turns oci-client's errors into messages a pod status can show.
fn registry_error(image: &str, e: OciDistributionError) -> PullError {
    let image = image.to_owned();
    match e {
        // oci-client drops a 401's body; "authentication required" is what registries say.
        OciDistributionError::UnauthorizedError { .. } => PullError::Unauthorized { image, message: "authentication required".into() },
        OciDistributionError::AuthenticationFailure(message) => PullError::Unauthorized { image, message },
        OciDistributionError::ImageManifestNotFoundError(message) => PullError::NotFound { image, message },
        OciDistributionError::DigestError(DigestError::VerificationError { expected, actual }) => PullError::DigestMismatch { image, expected, actual },
        OciDistributionError::RegistryError { envelope, .. } => envelope_error(image, &envelope),
        OciDistributionError::ServerError { code, url, message } => {
            let message = match message.trim() {
                "" => format!("HTTP {code} from {url}"),
                text => format!("HTTP {code}: {text}"),
            };
            match code {
                401 | 403 => PullError::Unauthorized { image, message },
                404 => PullError::NotFound { image, message },
                _ => PullError::Registry { image, message },
            }
        }
        other => PullError::Registry { image, message: error_chain(&other) },
    }
}

/// A registry's error document: its codes decide the kind, its messages are kept.
fn envelope_error(image: String, envelope: &OciEnvelope) -> PullError {
    let message = envelope
        .errors
        .iter()
        .map(|e| if e.message.is_empty() { format!("{:?}", e.code) } else { e.message.clone() })
        .collect::<Vec<_>>()
        .join("; ");
    let has = |wanted: &[OciErrorCode]| envelope.errors.iter().any(|e| wanted.contains(&e.code));
    if has(&[OciErrorCode::Unauthorized, OciErrorCode::Denied]) {
        PullError::Unauthorized { image, message }
    } else if has(&[OciErrorCode::ManifestUnknown, OciErrorCode::BlobUnknown, OciErrorCode::NameUnknown, OciErrorCode::NotFound]) {
        PullError::NotFound { image, message }
    } else {
        PullError::Registry { image, message }
    }
}

/// An error and its causes: reqwest's own message hides the useful part ("connection
/// refused", a certificate problem) in its sources.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
pub(crate) mod test_support {
    use std::path::PathBuf;

    /// A directory removed when the test ends.
    pub(crate) struct TempDir(pub PathBuf);

    impl TempDir {
        pub(crate) fn new(label: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("wasmkube-{label}-{}", uuid::Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("temp dir");
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::TempDir;
    use super::*;
    use serde_json::json;

    #[test]
    fn pull_policy_defaults_follow_upstream() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(PullPolicy::default_for("x"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("x:latest"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("x:v1"), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for(&format!("x@{digest}")), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for(&format!("x:latest@{digest}")), PullPolicy::Always, "upstream looks at the tag only");
        assert_eq!(PullPolicy::default_for(&format!("x:v1@{digest}")), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for("host:5000/x"), PullPolicy::Always);
        assert_eq!(PullPolicy::default_for("host:5000/x:v1"), PullPolicy::IfNotPresent);
        assert_eq!(PullPolicy::default_for("host:5000/x:latest"), PullPolicy::Always);
        assert_eq!(PullPolicy::parse("Never"), Some(PullPolicy::Never));
        assert_eq!(PullPolicy::parse("IfNotPresent"), Some(PullPolicy::IfNotPresent));
        assert_eq!(PullPolicy::parse("Always"), Some(PullPolicy::Always));
        assert_eq!(PullPolicy::parse("never"), None);
    }

    #[test]
    fn plain_http_only_for_loopback_and_listed_registries() {
        assert!(plain_http_allowed("127.0.0.1:5000", &[]));
        assert!(plain_http_allowed("127.8.9.1:5000", &[]));
        assert!(plain_http_allowed("localhost:5000", &[]));
        assert!(plain_http_allowed("localhost", &[]));
        assert!(plain_http_allowed("[::1]:5000", &[]));
        assert!(!plain_http_allowed("ghcr.io", &[]));
        assert!(!plain_http_allowed("10.0.0.1:5000", &[]));
        assert!(plain_http_allowed("reg.lan:5000", &["Reg.Lan:5000".into()]));
        assert!(!plain_http_allowed("reg.lan:5001", &["reg.lan:5000".into()]));
    }

    #[test]
    fn registry_errors_read_well_in_a_pod_status() {
        let image = "127.0.0.1:5000/x:v1";
        let e = registry_error(image, OciDistributionError::UnauthorizedError { url: "http://127.0.0.1:5000/v2/x/manifests/v1".into() });
        assert_eq!(e.to_string(), "pulling 127.0.0.1:5000/x:v1: unauthorized: authentication required");
        let envelope = |code: &str, message: &str| -> OciEnvelope { serde_json::from_value(json!({ "errors": [{ "code": code, "message": message }] })).expect("envelope") };
        let e = registry_error(image, OciDistributionError::RegistryError { envelope: envelope("MANIFEST_UNKNOWN", "manifest unknown"), url: String::new() });
        assert_eq!(e.to_string(), "pulling 127.0.0.1:5000/x:v1: not found: manifest unknown");
        let e = registry_error(image, OciDistributionError::RegistryError { envelope: envelope("DENIED", "requested access to the resource is denied"), url: String::new() });
        assert!(matches!(e, PullError::Unauthorized { .. }), "{e}");
        let e = registry_error(image, OciDistributionError::RegistryError { envelope: envelope("TOOMANYREQUESTS", "pull rate limit exceeded"), url: String::new() });
        assert_eq!(e.to_string(), "pulling 127.0.0.1:5000/x:v1: pull rate limit exceeded");
        let e = registry_error(image, OciDistributionError::ServerError { code: 502, url: "u".into(), message: "bad gateway".into() });
        assert_eq!(e.to_string(), "pulling 127.0.0.1:5000/x:v1: HTTP 502: bad gateway");
        let e = registry_error(image, DigestError::VerificationError { expected: "sha256:a".into(), actual: "sha256:b".into() }.into());
        assert!(matches!(e, PullError::DigestMismatch { .. }), "{e}");
        let io = std::io::Error::other(DigestError::VerificationError { expected: "sha256:a".into(), actual: "sha256:b".into() });
        let d = Descriptor { media_type: String::new(), digest: "sha256:a".into(), size: 1, platform: None };
        assert!(matches!(blob_error(image, &d, BlobError::Source(io)), PullError::DigestMismatch { .. }));
        let never = PullError::NotPresent { image: "x".into() };
        assert_eq!(never.to_string(), "Container image \"x\" is not present with pull policy of Never");
    }

    /// Puts an image in the cache the way a pull leaves it, without a registry.
    async fn seed(store: &ImageStore, manifest: &serde_json::Value) -> String {
        let body = manifest.to_string().into_bytes();
        let digest = sha256_digest(&body);
        store.cache.write_bytes(&digest, &body).await.expect("seed manifest");
        digest
    }

    async fn seed_blob(store: &ImageStore, bytes: &[u8], media_type: &str) -> serde_json::Value {
        let digest = sha256_digest(bytes);
        store.cache.write_bytes(&digest, bytes).await.expect("seed blob");
        json!({ "mediaType": media_type, "digest": digest, "size": bytes.len() })
    }

    #[tokio::test]
    async fn cached_images_serve_if_not_present_and_never_without_a_registry() {
        let dir = TempDir::new("images");
        let store = ImageStore::open(&dir.0, vec![]).expect("open");
        let none = RegistryCredentials::none();
        // Nothing listens on port 9; only the cache can answer.
        let image = "127.0.0.1:9/hello:v1";
        let err = store.pull(image, PullPolicy::Never, &none).await.expect_err("empty cache");
        assert_eq!(err.to_string(), "Container image \"127.0.0.1:9/hello:v1\" is not present with pull policy of Never");

        let config = seed_blob(&store, br#"{"os":"wasip2","architecture":"wasm"}"#, WASM_CONFIG).await;
        let module = seed_blob(&store, b"\0asm\x01\0\0\0", "application/wasm").await;
        // A signature layer that was never downloaded: not needed to run the artifact.
        let sig = json!({ "mediaType": "application/vnd.example.sig", "digest": format!("sha256:{}", "e".repeat(64)), "size": 9 });
        let wasm = json!({ "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": config, "layers": [module, sig] });
        let wasm_digest = seed(&store, &wasm).await;
        let linux = json!({ "schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST, "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "f".repeat(64)), "size": 2 }, "layers": [] });
        let linux_digest = seed(&store, &linux).await;
        let index = json!({ "schemaVersion": 2, "mediaType": manifest::OCI_INDEX, "manifests": [
            { "mediaType": manifest::OCI_MANIFEST, "digest": linux_digest, "size": linux.to_string().len(), "platform": { "os": "linux", "architecture": "amd64" } },
            { "mediaType": manifest::OCI_MANIFEST, "digest": wasm_digest, "size": wasm.to_string().len(), "platform": { "os": "wasip2", "architecture": "wasm" } },
        ]});
        let index_digest = seed(&store, &index).await;
        assert!(!store.present(image), "the tag is not resolved yet");
        store.cache.write_ref(image, &index_digest).await.expect("ref");
        assert!(store.present(image));
        assert!(!store.present("UPPER/Case"));

        for policy in [PullPolicy::Never, PullPolicy::IfNotPresent] {
            let pulled = store.pull(image, policy, &none).await.expect("from the cache");
            assert_eq!(pulled.reference, image);
            assert!(pulled.already_present);
            assert_eq!(pulled.size, 37 + 8, "the config's and the module's bytes");
            assert_eq!(pulled.digest, wasm_digest, "the index's wasm entry");
            match pulled.content {
                ImageContent::Wasm { path, os, size, .. } => {
                    assert_eq!(std::fs::read(path).expect("module"), b"\0asm\x01\0\0\0");
                    assert_eq!((os.as_deref(), size), (Some("wasip2"), 8));
                }
                other => panic!("{other:?}"),
            }
        }
        // By digest: of the index, or of the manifest itself; no ref needed.
        for digest in [&index_digest, &wasm_digest] {
            let pulled = store.pull(&format!("127.0.0.1:9/hello@{digest}"), PullPolicy::Never, &none).await.expect("by digest");
            assert_eq!(pulled.digest, wasm_digest);
        }
        // A missing layer (here the Linux image's config) means not present.
        let err = store.pull(&format!("127.0.0.1:9/hello@{linux_digest}"), PullPolicy::Never, &none).await.expect_err("incomplete");
        assert!(matches!(err, PullError::NotPresent { .. }), "{err}");
        // Always goes to the registry even when cached.
        let err = store.pull(image, PullPolicy::Always, &none).await.expect_err("no registry");
        assert!(matches!(err, PullError::Registry { .. }) && err.to_string().starts_with("pulling 127.0.0.1:9/hello:v1: "), "{err}");
    }

    #[test]
    fn the_store_and_its_pulls_can_be_shared_across_tasks() {
        fn send_sync<T: Send + Sync + Clone + 'static>(_: &T) {}
        fn send<T: Send>(_: T) {}
        let dir = TempDir::new("images");
        let store = ImageStore::open(&dir.0, vec![]).expect("open");
        send_sync(&store);
        let creds = RegistryCredentials::none();
        send(store.pull("x", PullPolicy::Never, &creds));
    }

    #[tokio::test]
    async fn bad_references_are_invalid() {
        let dir = TempDir::new("images");
        let store = ImageStore::open(&dir.0, vec![]).expect("open");
        let err = store.pull("UPPER/Case", PullPolicy::IfNotPresent, &RegistryCredentials::none()).await.expect_err("invalid");
        assert!(matches!(err, PullError::Invalid { .. }) && err.to_string().contains("invalid image reference"), "{err}");
    }
}
