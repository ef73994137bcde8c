//! `wasmkube push`: the command line around `wasmkube_registry::push`.

use anyhow::Context;
use std::path::PathBuf;
use wasmkube_node::images::RegistryCredentials;
use wasmkube_registry::push::{push_wasm, PushTarget};

#[derive(clap::Args)]
pub struct PushArgs {
    /// The .wasm file: a core module (pushed as os wasip1) or a component (wasip2)
    file: PathBuf,
    /// Where to push it, e.g. 127.0.0.1:5000/hello:v1 or ghcr.io/me/hello:v1
    reference: String,
    #[command(flatten)]
    pub auth: RegistryAuthArgs,
}

/// How to reach and log in to a registry; shared by `push` and `pull`.
#[derive(clap::Args)]
pub struct RegistryAuthArgs {
    /// User name for the registry (with --password)
    #[arg(long, requires = "password")]
    username: Option<String>,
    /// Password or token for the registry (with --username)
    #[arg(long, env = "WASMKUBE_REGISTRY_PASSWORD", hide_env_values = true, requires = "username")]
    password: Option<String>,
    /// A docker config.json, or the `.dockerconfigjson` of an imagePullSecret
    /// [default: $DOCKER_CONFIG/config.json or ~/.docker/config.json]
    #[arg(long)]
    docker_config: Option<PathBuf>,
    /// Registries (host:port) to reach over plain HTTP; loopback registries always are
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
}

impl RegistryAuthArgs {
    /// Credentials from the flags, else from the docker config (an explicit one must exist).
    pub fn credentials(&self, registry: &str) -> anyhow::Result<RegistryCredentials> {
        if let (Some(u), Some(p)) = (&self.username, &self.password) {
            return Ok(RegistryCredentials::basic(registry, u, p));
        }
        let explicit = self.docker_config.is_some();
        let Some(path) = self.docker_config.clone().or_else(default_docker_config) else { return Ok(RegistryCredentials::none()) };
        match std::fs::read(&path) {
            Ok(bytes) => RegistryCredentials::from_docker_config(&bytes).with_context(|| format!("reading credentials from {}", path.display())),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(RegistryCredentials::none()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

fn default_docker_config() -> Option<PathBuf> {
    match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => Some(PathBuf::from(dir).join("config.json")),
        None => std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
    }
}

pub async fn run(args: PushArgs) -> anyhow::Result<()> {
    let reference: oci_client::Reference = args.reference.parse().with_context(|| format!("invalid image reference {:?}", args.reference))?;
    let registry = reference.resolve_registry().to_owned();
    let creds = args.auth.credentials(&registry)?;
    let target = PushTarget {
        reference: args.reference.clone(),
        auth: creds.for_registry(&registry),
        plain_http: wasmkube_node::images::plain_http_allowed(&registry, &args.auth.insecure_registries),
    };
    let pushed = push_wasm(&args.file, &target).await?;
    outln!("pushed {} ({}, {} bytes)\ndigest: {}", pushed.reference, pushed.os, pushed.size, pushed.digest)?;
    Ok(())
}
