//! `wasmkube pull`: fetch an image into a node's image cache, as the node agent does before
//! starting a container (a `crictl pull` for wasmkube). Handy to check a registry, its
//! credentials and an artifact's layout without creating a pod.

use anyhow::Context;
use std::path::PathBuf;
use wasmkube_node::images::{ImageContent, ImageStore, PullPolicy};

#[derive(clap::Args)]
pub struct PullArgs {
    /// The image, e.g. 127.0.0.1:5000/hello:v1, ghcr.io/me/hello@sha256:...
    reference: String,
    /// The image cache [default: the one `up` and `node` use: $WASMKUBE_HOME/node/images or ~/.wasmkube/node/images]
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// Always, IfNotPresent or Never [default: Always for :latest or no tag, else IfNotPresent]
    #[arg(long)]
    pull_policy: Option<String>,
    /// Copy the wasm module or component to this file
    #[arg(long)]
    output: Option<PathBuf>,
    #[command(flatten)]
    auth: crate::push::RegistryAuthArgs,
}

pub async fn run(args: PullArgs) -> anyhow::Result<()> {
    let policy = match &args.pull_policy {
        Some(p) => PullPolicy::parse(p).with_context(|| format!("unknown pull policy {p:?}; use Always, IfNotPresent or Never"))?,
        None => PullPolicy::default_for(&args.reference),
    };
    let reference: oci_client::Reference = args.reference.parse().with_context(|| format!("invalid image reference {:?}", args.reference))?;
    let registry = reference.resolve_registry().to_owned();
    let creds = args.auth.credentials(&registry)?;
    let cache = match args.cache_dir {
        Some(d) => d,
        // Where `up`'s in-process node (and `wasmkube node`) keeps its images, so what is
        // pulled here is what their pods start from.
        None => crate::home_dir()?.join("node").join("images"),
    };
    let store = ImageStore::open(&cache, args.auth.insecure_registries).with_context(|| format!("opening the image cache {}", cache.display()))?;
    let image = store.pull(&args.reference, policy, &creds).await?;
    let mut lines = vec![format!("pulled {}", image.reference), format!("digest: {}", image.digest)];
    match &image.content {
        ImageContent::Wasm { path, digest, media_type, size, os } => {
            lines.push(format!("wasm: {media_type} {digest} {size} bytes os {}", os.as_deref().unwrap_or("unknown")));
            lines.push(format!("cached: {}", path.display()));
            if let Some(out) = &args.output {
                std::fs::copy(path, out).with_context(|| format!("copying to {}", out.display()))?;
            }
        }
        ImageContent::Linux { layers, .. } => {
            lines.push(format!("linux image: {} layers", layers.len()));
            if args.output.is_some() {
                anyhow::bail!("{} is a Linux container image, not a wasm artifact: --output needs one wasm layer", image.reference);
            }
        }
    }
    outln!("{}", lines.join("\n"))?;
    Ok(())
}
