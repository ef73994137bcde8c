//! A `.wasm` file as the CNCF wasm OCI artifact: config `application/vnd.wasm.config.v0+json`
//! (`architecture: wasm`, `os: wasip1|wasip2`) and one `application/wasm` layer.
//!
//! The config carries no timestamp, so packing the same bytes twice gives the same manifest
//! digest and a re-push is a no-op.

use crate::names::Digest;
use serde_json::json;

pub const WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const WASM_LAYER: &str = "application/wasm";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WasmKind {
    /// A core module: runs under WASI preview 1.
    Module,
    /// A component: runs under WASI preview 2.
    Component,
}

impl WasmKind {
    /// Reads the 8-byte preamble: `\0asm` then version 1 (module) or `0x0d` layer 1 (component).
    pub fn detect(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
            return Err("not a WebAssembly binary (it does not start with \\0asm)".into());
        }
        match [bytes[4], bytes[5], bytes[6], bytes[7]] {
            [1, 0, 0, 0] => Ok(Self::Module),
            [0x0d, 0, 1, 0] => Ok(Self::Component),
            [a, b, c, d] => Err(format!("unknown WebAssembly version/layer bytes {a:#04x} {b:#04x} {c:#04x} {d:#04x}")),
        }
    }

    pub fn os(self) -> &'static str {
        match self {
            Self::Module => "wasip1",
            Self::Component => "wasip2",
        }
    }
}

/// The three documents of a wasm artifact, ready to push.
pub struct WasmArtifact {
    pub kind: WasmKind,
    pub layer_digest: Digest,
    pub config: Vec<u8>,
    pub config_digest: Digest,
    pub manifest: Vec<u8>,
    pub manifest_digest: Digest,
}

/// Packs `wasm` (whose digest and size the caller has, so a large file is hashed once,
/// streaming). `title` becomes the layer's `org.opencontainers.image.title`.
pub fn pack(header: &[u8], layer_digest: Digest, layer_size: u64, title: Option<&str>) -> Result<WasmArtifact, String> {
    let kind = WasmKind::detect(header)?;
    let config = serde_json::to_vec(&json!({
        "architecture": "wasm",
        "os": kind.os(),
        "layerDigests": [layer_digest.as_str()],
    }))
    .map_err(|e| e.to_string())?;
    let config_digest = Digest::of(&config);
    let mut layer = json!({ "mediaType": WASM_LAYER, "digest": layer_digest.as_str(), "size": layer_size });
    if let Some(title) = title {
        layer["annotations"] = json!({ "org.opencontainers.image.title": title });
    }
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": crate::server::OCI_MANIFEST,
        "artifactType": WASM_CONFIG,
        "config": { "mediaType": WASM_CONFIG, "digest": config_digest.as_str(), "size": config.len() },
        "layers": [layer],
    }))
    .map_err(|e| e.to_string())?;
    let manifest_digest = Digest::of(&manifest);
    Ok(WasmArtifact { kind, layer_digest, config, config_digest, manifest, manifest_digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_and_components_are_told_apart() {
        assert_eq!(WasmKind::detect(b"\0asm\x01\0\0\0rest").unwrap(), WasmKind::Module);
        assert_eq!(WasmKind::detect(b"\0asm\x0d\0\x01\0rest").unwrap(), WasmKind::Component);
        assert!(WasmKind::detect(b"\x7fELF\x02\x01\x01\0").unwrap_err().contains("not a WebAssembly"));
        assert!(WasmKind::detect(b"\0asm").is_err());
    }

    #[test]
    fn packing_is_reproducible_and_names_the_platform() {
        let bytes = b"\0asm\x0d\0\x01\0";
        let a = pack(bytes, Digest::of(bytes), 8, Some("app.wasm")).unwrap();
        let b = pack(bytes, Digest::of(bytes), 8, Some("app.wasm")).unwrap();
        assert_eq!(a.manifest_digest, b.manifest_digest);
        let config: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!((config["os"].as_str(), config["architecture"].as_str()), (Some("wasip2"), Some("wasm")));
        let manifest: serde_json::Value = serde_json::from_slice(&a.manifest).unwrap();
        assert_eq!(manifest["layers"][0]["mediaType"], WASM_LAYER);
        assert_eq!(manifest["config"]["digest"], a.config_digest.as_str());
    }
}
