//! `wasmkube`: Kubernetes for WebAssembly, in one binary.

mod bench;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use wasmkube_control::{ControlPlane, ControlPlaneConfig, Shutdown};

#[derive(Parser)]
#[command(name = "wasmkube", version, about = "Kubernetes for WebAssembly: one binary runs the whole cluster")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a whole cluster in this process: store, API server and everything built so far.
    Up(UpArgs),
    /// Measure wasmkube and print a results table.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
}

#[derive(clap::Args)]
struct UpArgs {
    /// Where the store, certificates and kubeconfig live [default: $WASMKUBE_HOME or ~/.wasmkube]
    #[arg(long, env = "WASMKUBE_HOME")]
    data_dir: Option<PathBuf>,
    /// Address of the Kubernetes API (HTTPS); port 0 picks a free port
    #[arg(long, default_value = "127.0.0.1:6443")]
    api_addr: String,
    /// Address of the embedded OCI registry (reserved: the registry is not served yet)
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry_addr: String,
    /// Address of the embedded DNS server (reserved: DNS is not served yet)
    #[arg(long, default_value = "127.0.0.1:1053")]
    dns_addr: String,
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".wasmkube"))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => default_data_dir()?,
    };
    let (stop, shutdown) = Shutdown::new();
    let cp = ControlPlane::start(ControlPlaneConfig { data_dir: data_dir.clone(), api_addr: args.api_addr }, shutdown)
        .await
        .context("starting the control plane")?;
    tracing::info!(registry = %args.registry_addr, dns = %args.dns_addr, "registry and DNS are not part of this build yet");
    // The one line on stdout that scripts and tests wait for.
    #[allow(clippy::print_stdout)]
    {
        println!("wasmkube ready: API https://{} kubeconfig {}", cp.api_addr, cp.kubeconfig.display());
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    let _ = stop.send(true);
    cp.join().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    match cli.command {
        Command::Up(args) => rt.block_on(up(args)),
        Command::Bench { what } => rt.block_on(bench::run(what)),
    }
}
