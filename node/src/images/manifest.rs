//! What a manifest says: its kind, the platform to take from an index, and whether the
//! image is a wasm artifact or a Linux container image (and which blobs that needs).

use super::cache::is_sha256_digest;
use serde::Deserialize;

pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
/// Layer media types that carry a wasm module or component.
pub const WASM_LAYERS: [&str; 3] = ["application/wasm", "application/vnd.wasm.content.layer.v1+wasm", "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm"];
/// Configs of ordinary container images (OCI and Docker).
const LINUX_CONFIGS: [&str; 2] = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];
/// Layers the container shim can unpack. Foreign and non-distributable layers (Windows
/// base layers fetched from elsewhere) are not among them.
const LINUX_LAYERS: [&str; 4] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The `Accept` list for manifest requests.
pub(super) const ACCEPTED_MANIFESTS: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];
/// containerd refuses larger manifests too; real ones are a few KiB.
pub(super) const MAX_MANIFEST_BYTES: usize = 4 << 20;

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub(super) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub(super) struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

#[derive(Debug)]
pub(super) enum Manifest {
    /// An OCI index or Docker manifest list: one manifest per platform.
    Index(Vec<Descriptor>),
    /// An OCI image manifest or Docker schema 2 manifest.
    Image { config: Descriptor, layers: Vec<Descriptor> },
}

impl Manifest {
    pub(super) fn parse(bytes: &[u8]) -> Result<Self, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Raw {
            schema_version: Option<u64>,
            media_type: Option<String>,
            config: Option<Descriptor>,
            #[serde(default)]
            layers: Vec<Descriptor>,
            manifests: Option<Vec<Descriptor>>,
        }
        let raw: Raw = serde_json::from_slice(bytes).map_err(|e| format!("the manifest is not valid: {e}"))?;
        if raw.schema_version != Some(2) {
            return Err(format!("unsupported manifest schemaVersion {}", raw.schema_version.map_or("(none)".into(), |v| v.to_string())));
        }
        // `mediaType` is optional in OCI manifests; the fields then tell the kind.
        let media_type = raw.media_type.as_deref();
        if let Some(m) = media_type.filter(|m| !ACCEPTED_MANIFESTS.contains(m)) {
            return Err(format!("unsupported manifest media type {m}"));
        }
        match (media_type, raw.manifests, raw.config) {
            (Some(OCI_INDEX | DOCKER_LIST) | None, Some(manifests), None) => Ok(Manifest::Index(manifests)),
            (Some(OCI_MANIFEST | DOCKER_MANIFEST) | None, None, Some(config)) => Ok(Manifest::Image { config, layers: raw.layers }),
            _ => Err("the manifest is neither an image manifest nor an index".into()),
        }
    }
}

/// From an index: a wasm platform first, else linux/amd64 for the container shim.
pub(super) fn choose_platform(entries: &[Descriptor]) -> Result<&Descriptor, String> {
    // Nested indexes are not followed; entries without a media type are taken as manifests.
    let images = || entries.iter().filter(|e| matches!(e.media_type.as_str(), OCI_MANIFEST | DOCKER_MANIFEST | ""));
    let platform = |e: &Descriptor| e.platform.clone().unwrap_or_default();
    let is_wasm = |p: &Platform| matches!(p.os.as_str(), "wasip1" | "wasip2" | "wasi") || p.architecture == "wasm";
    let is_linux_amd64 = |p: &Platform| p.os == "linux" && p.architecture == "amd64";
    if let Some(e) = images().find(|e| is_wasm(&platform(e))).or_else(|| images().find(|e| is_linux_amd64(&platform(e)))) {
        return Ok(e);
    }
    let offered: Vec<String> = entries
        .iter()
        .map(|e| {
            let p = platform(e);
            if p.os.is_empty() && p.architecture.is_empty() { "(no platform)".to_owned() } else { format!("{}/{}", p.os, p.architecture) }
        })
        .collect();
    let offered = if offered.is_empty() { "nothing".to_owned() } else { offered.join(", ") };
    Err(format!("the image index has no wasm (wasip1, wasip2, wasi or wasm) or linux/amd64 image; it offers {offered}"))
}

/// What an image manifest is, and so which of its blobs a pod needs.
#[derive(Clone, Debug)]
pub(super) enum Plan {
    Wasm { config: Descriptor, layer: Descriptor },
    Linux { config: Descriptor, layers: Vec<Descriptor> },
}

pub(super) fn is_wasm_layer(d: &Descriptor) -> bool {
    WASM_LAYERS.contains(&d.media_type.as_str())
}

impl Plan {
    /// A wasm config or any wasm layer makes a wasm artifact, which must have exactly one
    /// wasm layer (its other layers, e.g. signatures, are not needed). Anything else must be
    /// a container image the shim can unpack.
    pub(super) fn classify(config: Descriptor, layers: Vec<Descriptor>) -> Result<Plan, String> {
        let mut wasm: Vec<Descriptor> = layers.iter().filter(|l| is_wasm_layer(l)).cloned().collect();
        let plan = if config.media_type == WASM_CONFIG || !wasm.is_empty() {
            let (Some(layer), None) = (wasm.pop(), wasm.pop()) else {
                let count = layers.iter().filter(|l| is_wasm_layer(l)).count();
                return Err(format!("a wasm artifact needs exactly one wasm layer ({}), this one has {count}", WASM_LAYERS.join(", ")));
            };
            Plan::Wasm { config, layer }
        } else {
            if !LINUX_CONFIGS.contains(&config.media_type.as_str()) {
                return Err(format!("neither a wasm artifact nor a container image: unsupported config media type {:?}", config.media_type));
            }
            if let Some(l) = layers.iter().find(|l| !LINUX_LAYERS.contains(&l.media_type.as_str())) {
                return Err(format!("unsupported layer media type {:?} ({})", l.media_type, l.digest));
            }
            Plan::Linux { config, layers }
        };
        // Checked before anything is downloaded, so a bad digest fails the pull at once.
        if let Some(d) = plan.blobs().into_iter().find(|d| !is_sha256_digest(&d.digest)) {
            return Err(format!("unsupported digest {:?}: only sha256 is supported", d.digest));
        }
        Ok(plan)
    }

    /// The blobs to download: the config first, then the layers.
    pub(super) fn blobs(&self) -> Vec<&Descriptor> {
        match self {
            Plan::Wasm { config, layer } => vec![config, layer],
            Plan::Linux { config, layers } => std::iter::once(config).chain(layers).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(n: char, media_type: &str) -> Descriptor {
        Descriptor { digest: format!("sha256:{}", n.to_string().repeat(64)), media_type: media_type.into(), size: 3, platform: None }
    }

    fn entry(os: &str, arch: &str, n: char) -> Descriptor {
        Descriptor { platform: Some(Platform { os: os.into(), architecture: arch.into() }), ..d(n, OCI_MANIFEST) }
    }

    fn parse(doc: serde_json::Value) -> Result<Manifest, String> {
        Manifest::parse(doc.to_string().as_bytes())
    }

    #[test]
    fn manifests_and_indexes_of_both_formats_are_recognised() {
        let desc = json!({ "mediaType": "application/vnd.oci.image.config.v1+json", "digest": format!("sha256:{}", "a".repeat(64)), "size": 2 });
        for media_type in [Some(OCI_MANIFEST), Some(DOCKER_MANIFEST), None] {
            let mut doc = json!({ "schemaVersion": 2, "config": desc, "layers": [desc] });
            if let Some(m) = media_type {
                doc["mediaType"] = json!(m);
            }
            assert!(matches!(parse(doc), Ok(Manifest::Image { layers, .. }) if layers.len() == 1), "{media_type:?}");
        }
        for media_type in [Some(OCI_INDEX), Some(DOCKER_LIST), None] {
            let mut doc = json!({ "schemaVersion": 2, "manifests": [desc] });
            if let Some(m) = media_type {
                doc["mediaType"] = json!(m);
            }
            assert!(matches!(parse(doc), Ok(Manifest::Index(m)) if m.len() == 1), "{media_type:?}");
        }
        assert!(parse(json!({ "schemaVersion": 1, "fsLayers": [] })).unwrap_err().contains("schemaVersion 1"));
        let err = parse(json!({ "schemaVersion": 2, "mediaType": "application/vnd.oci.artifact.manifest.v1+json" })).unwrap_err();
        assert!(err.contains("unsupported manifest media type"), "{err}");
        let err = parse(json!({ "schemaVersion": 2, "mediaType": OCI_INDEX, "config": desc })).unwrap_err();
        assert!(err.contains("neither"), "{err}");
        assert!(parse(json!({ "schemaVersion": 2, "config": { "digest": "sha256:x" } })).is_err(), "a descriptor needs a size");
    }

    #[test]
    fn index_entries_prefer_wasm_then_linux_amd64() {
        let all = [entry("linux", "arm64", 'a'), entry("linux", "amd64", 'b'), entry("wasip2", "wasm", 'c')];
        assert_eq!(choose_platform(&all).unwrap(), &all[2]);
        assert_eq!(choose_platform(&all[..2]).unwrap(), &all[1]);
        let wasi = [entry("linux", "amd64", 'b'), entry("wasi", "wasm32", 'd')];
        assert_eq!(choose_platform(&wasi).unwrap(), &wasi[1]);
        let arch_only = [entry("linux", "amd64", 'b'), entry("unknown", "wasm", 'e')];
        assert_eq!(choose_platform(&arch_only).unwrap(), &arch_only[1]);
        // A nested index is not an image, whatever its platform says.
        let nested = [Descriptor { media_type: OCI_INDEX.into(), ..entry("wasip1", "wasm", 'f') }, entry("linux", "amd64", 'b')];
        assert_eq!(choose_platform(&nested).unwrap(), &nested[1]);

        let err = choose_platform(&[entry("windows", "amd64", 'a'), entry("linux", "arm64", 'b'), d('c', OCI_MANIFEST)]).unwrap_err();
        assert!(err.contains("it offers windows/amd64, linux/arm64, (no platform)"), "{err}");
        assert!(choose_platform(&[]).unwrap_err().contains("offers nothing"));
    }

    #[test]
    fn wasm_artifacts_need_exactly_one_wasm_layer() {
        let sig = d('2', "application/vnd.example.signature");
        match Plan::classify(d('0', WASM_CONFIG), vec![d('1', "application/wasm"), sig.clone()]).unwrap() {
            plan @ Plan::Wasm { .. } => {
                let blobs: Vec<char> = plan.blobs().iter().map(|b| b.digest.chars().last().unwrap_or('?')).collect();
                assert_eq!(blobs, ['0', '1'], "the signature layer is not needed");
            }
            other => panic!("{other:?}"),
        }
        // Any of the three wasm layer types, under any config.
        for media_type in WASM_LAYERS {
            let plan = Plan::classify(d('0', "application/vnd.oci.image.config.v1+json"), vec![d('1', media_type)]).unwrap();
            assert!(matches!(plan, Plan::Wasm { layer, .. } if layer.media_type == media_type));
        }
        let err = Plan::classify(d('0', WASM_CONFIG), vec![d('1', WASM_LAYERS[0]), d('2', WASM_LAYERS[2])]).unwrap_err();
        assert!(err.contains("exactly one wasm layer") && err.contains("has 2"), "{err}");
        let err = Plan::classify(d('0', WASM_CONFIG), vec![sig]).unwrap_err();
        assert!(err.contains("has 0"), "{err}");
    }

    #[test]
    fn other_images_must_be_container_images() {
        let layers = vec![d('1', "application/vnd.oci.image.layer.v1.tar+gzip"), d('2', "application/vnd.docker.image.rootfs.diff.tar.gzip")];
        let plan = Plan::classify(d('0', "application/vnd.oci.image.config.v1+json"), layers).unwrap();
        assert!(matches!(&plan, Plan::Linux { layers, .. } if layers.len() == 2));
        assert_eq!(plan.blobs().len(), 3);
        let err = Plan::classify(d('0', "application/vnd.cncf.helm.config.v1.tar+json"), vec![]).unwrap_err();
        assert!(err.contains("unsupported config media type"), "{err}");
        let foreign = d('1', "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip");
        let err = Plan::classify(d('0', "application/vnd.docker.container.image.v1+json"), vec![foreign]).unwrap_err();
        assert!(err.contains("unsupported layer media type"), "{err}");
        let sha512 = Descriptor { digest: format!("sha512:{}", "a".repeat(128)), ..d('1', WASM_LAYERS[0]) };
        let err = Plan::classify(d('0', WASM_CONFIG), vec![sha512]).unwrap_err();
        assert!(err.contains("only sha256"), "{err}");
    }
}
