//! `wasmkube push FILE.wasm REF`: pack a module or component as the wasm OCI artifact and
//! push it to any distribution-spec registry (through `oci-client`, which speaks the token
//! and basic auth schemes real registries use).

use crate::artifact::{self, WasmArtifact, WASM_CONFIG};
use crate::names::Digest;
use anyhow::Context;
use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use sha2::Digest as _;
use std::io::{IsTerminal, Read};
use std::path::Path;

pub struct PushTarget {
    /// e.g. `127.0.0.1:5000/hello:v1`
    pub reference: String,
    pub auth: RegistryAuth,
    /// Speak plain HTTP to this registry (loopback or listed as insecure).
    pub plain_http: bool,
}

/// What was pushed.
pub struct Pushed {
    pub reference: String,
    pub digest: Digest,
    pub os: &'static str,
    pub size: u64,
}

/// Hashes the file in one streaming pass and keeps its first bytes for [`artifact::pack`].
fn hash_file(path: &Path) -> anyhow::Result<(Digest, u64, Vec<u8>)> {
    let mut file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut header = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        if header.len() < 8 {
            header.extend_from_slice(&buf[..n.min(8 - header.len())]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_hash(hasher.finalize().as_slice()), size, header))
}

pub fn client(registry: &str, plain_http: bool) -> Client {
    let protocol = if plain_http { ClientProtocol::HttpsExcept(vec![registry.to_owned()]) } else { ClientProtocol::Https };
    // Monolithic: one streaming PUT per blob instead of a PATCH per chunk.
    Client::new(ClientConfig { protocol, use_monolithic_push: true, ..Default::default() })
}

pub async fn push_wasm(file: &Path, target: &PushTarget) -> anyhow::Result<Pushed> {
    let owned = file.to_owned();
    let (layer_digest, size, header) = tokio::task::spawn_blocking(move || hash_file(&owned)).await??;
    let title = file.file_name().and_then(|n| n.to_str());
    let art: WasmArtifact = artifact::pack(&header, layer_digest, size, title).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let reference: Reference = target.reference.parse().with_context(|| format!("invalid image reference {:?}", target.reference))?;
    let client = client(reference.resolve_registry(), target.plain_http);
    let fail = |what: &str| format!("pushing {} to {}: {what}", file.display(), target.reference);

    client.auth(&reference, &target.auth, RegistryOperation::Push).await.with_context(|| fail("authenticating"))?;
    if !client.blob_exists(&reference, art.config_digest.as_str()).await.unwrap_or(false) {
        client.push_blob(&reference, art.config.clone(), art.config_digest.as_str()).await.with_context(|| fail("uploading the config"))?;
    }
    if !client.blob_exists(&reference, art.layer_digest.as_str()).await.unwrap_or(false) {
        let bar = progress_bar(size);
        let stream_bar = bar.clone();
        let reader = tokio::fs::File::open(file).await.with_context(|| format!("opening {}", file.display()))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(reader, 1 << 20).map(move |chunk| {
            if let Ok(c) = &chunk {
                stream_bar.inc(c.len() as u64);
            }
            chunk.map_err(oci_client::errors::OciDistributionError::from)
        });
        client.push_blob_stream(&reference, stream, art.layer_digest.as_str(), Some(size)).await.with_context(|| fail("uploading the module"))?;
        bar.finish_and_clear();
    }
    let content_type = axum::http::HeaderValue::from_static(crate::server::OCI_MANIFEST);
    client.push_manifest_raw(&reference, art.manifest.clone(), content_type).await.with_context(|| fail("uploading the manifest"))?;
    Ok(Pushed { reference: reference.whole(), digest: art.manifest_digest, os: art.kind.os(), size })
}

/// A byte progress bar on a terminal; nothing when stderr is a pipe or file.
fn progress_bar(size: u64) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size);
    if let Ok(style) = indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}") {
        bar.set_style(style);
    }
    bar
}

/// The artifact type `wasmkube push` writes, for callers that check what they pulled.
pub const ARTIFACT_TYPE: &str = WASM_CONFIG;
