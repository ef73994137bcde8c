//! `wasmkube`: Kubernetes for WebAssembly, in one binary.

/// `println!` for the command line's output: it returns a write error instead of
/// panicking, and a reader that went away (`wasmkube push ... | head -1`) ends the output
/// without being an error. Use it as `outln!(...)?`.
macro_rules! outln {
    () => {
        $crate::write_stdout(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::write_stdout(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod bench;
mod node;
mod pull;
mod push;

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
    /// Run a node agent that joins a remote control plane.
    Node(node::JoinArgs),
    /// Serve only the OCI registry (the same one `up` embeds).
    Registry(RegistryArgs),
    /// Pack a .wasm module or component as an OCI artifact and push it to a registry.
    Push(push::PushArgs),
    /// Pull an image into the node's image cache, verifying every digest.
    Pull(pull::PullArgs),
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
    /// Address of the embedded OCI registry (plain HTTP; port 0 picks a free port)
    #[arg(long, default_value = "127.0.0.1:5000")]
    registry_addr: String,
    /// Where Service ClusterIPs come from; inside 127/8 so a laptop needs no privileges
    /// (the first address is the `kubernetes` Service)
    #[arg(long, default_value = "127.96.0.0/16")]
    service_cidr: wasmkube_control::api::services::Ipv4Net,
    /// Run the control plane only, without the in-process node agent
    #[arg(long)]
    no_node: bool,
    /// A node silent (no Lease renewal) this long is marked Unknown and tainted
    /// unreachable (upstream: 40s)
    #[arg(long, default_value = "20s", value_parser = node::parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// tolerationSeconds of the not-ready/unreachable NoExecute tolerations every pod gets:
    /// how long its pods stay on an unreachable node before eviction (upstream: 300)
    #[arg(long, default_value_t = 30)]
    default_unreachable_toleration_seconds: i64,
    /// First delay before a Job replaces a failed pod; it doubles per failure up to 6m
    #[arg(long, default_value = "10s", value_parser = node::parse_duration)]
    job_backoff_base: std::time::Duration,
    #[command(flatten)]
    node: node::NodeArgs,
}

#[derive(clap::Args)]
struct RegistryArgs {
    /// Where blobs and manifests are stored [default: $WASMKUBE_HOME/registry or ~/.wasmkube/registry]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Address to serve the registry on (plain HTTP); port 0 picks a free port
    #[arg(long, default_value = "127.0.0.1:5000")]
    addr: String,
}

/// Binds and serves the registry in the background; returns the address it serves on.
async fn start_registry(dir: &std::path::Path, addr: &str, mut shutdown: Shutdown) -> anyhow::Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>)> {
    let storage = wasmkube_registry::Storage::open(dir).with_context(|| format!("opening the registry storage in {}", dir.display()))?;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding the registry to {addr}"))?;
    let local = listener.local_addr()?;
    let task = tokio::spawn(async move {
        if let Err(e) = wasmkube_registry::serve(listener, storage, async move { shutdown.wait().await }).await {
            tracing::error!(error = %e, "the registry stopped");
        }
    });
    Ok((local, task))
}

async fn registry(args: RegistryArgs) -> anyhow::Result<()> {
    let dir = match args.data_dir {
        Some(d) => d,
        None => home_dir()?.join("registry"),
    };
    let (stop, shutdown) = Shutdown::new();
    let (addr, task) = start_registry(&dir, &args.addr, shutdown).await?;
    if let Err(e) = outln!("wasmkube registry ready: http://{addr} storage {}", dir.display()) {
        tracing::warn!(error = %e, "cannot write the ready line to stdout");
    }
    wait_for_signal().await?;
    let _ = stop.send(true);
    let _ = task.await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}

/// Writes to stdout; a closed pipe (`EPIPE`: the reader exited) is not an error, the
/// output just has no reader any more. Rust ignores `SIGPIPE`, so without this every
/// `println!` after the reader went away would panic.
pub(crate) fn write_stdout(text: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_fmt(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The data directory `up`, `node`, `registry` and `pull` share: `$WASMKUBE_HOME`, else
/// `~/.wasmkube`.
pub(crate) fn home_dir() -> anyhow::Result<PathBuf> {
    std::env::var_os("WASMKUBE_HOME").map(PathBuf::from).map_or_else(default_data_dir, Ok)
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    let home = std::env::var_os("HOME").context("HOME is not set; pass --data-dir")?;
    Ok(PathBuf::from(home).join(".wasmkube"))
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let data_dir = match args.data_dir {
        Some(d) => d,
        None => home_dir()?,
    };
    let (stop, shutdown) = Shutdown::new();
    let (registry_addr, registry) = start_registry(&data_dir.join("registry"), &args.registry_addr, shutdown.clone()).await?;
    let shutdown_node = shutdown.clone();
    let cp = ControlPlane::start(ControlPlaneConfig { data_dir: data_dir.clone(), api_addr: args.api_addr, default_toleration_seconds: args.default_unreachable_toleration_seconds, service_cidr: args.service_cidr }, shutdown)
        .await
        .context("starting the control plane")?;
    let dns = args.node.dns().await?;
    let dns_addr = dns.0.local_addr()?;
    // One service table for the proxy, the DNS server and the in-process node's pods.
    let services = {
        let kube = wasmkube_node::agent::kube_config_from_file(&cp.kubeconfig).await?;
        wasmkube_node::service_table::SharedTable::connect(kube).context("building the API client")?
    };
    let network = {
        // The in-process node's proxy serves Services on its address; with --no-node only DNS runs.
        let node_ip = (!args.no_node).then_some(std::net::IpAddr::from([127, 0, 0, 1]));
        let mut stop = shutdown_node.clone();
        tokio::spawn(wasmkube_node::network::run(services.clone(), wasmkube_node::network::NetworkConfig { node_ip, dns: Some(dns) }, async move { stop.wait().await }))
    };
    let controllers = {
        let kube = wasmkube_node::agent::kube_config_from_file(&cp.kubeconfig).await?;
        let mut stop = shutdown_node.clone();
        tokio::spawn(async move {
            let settings = wasmkube_control::controllers::manager::Settings { node_monitor_grace: args.node_monitor_grace_period, job_backoff_base: args.job_backoff_base };
            if let Err(e) = wasmkube_control::controllers::manager::run(kube, settings, async move { stop.wait().await }).await {
                tracing::error!(error = format!("{e:#}"), "the controller manager stopped");
            }
        })
    };
    let node = if args.no_node {
        None
    } else {
        let kube = wasmkube_node::agent::kube_config_from_file(&cp.kubeconfig).await?;
        // The node's endpoint takes the admin token: the API server is its only caller.
        let server_addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
        let cfg = args.node.config(kube, data_dir.join("node"), "127.0.0.1".into(), server_addr, cp.state.admin_token.clone(), services)?;
        let mut stop_node = shutdown_node.clone();
        Some(tokio::spawn(async move {
            if let Err(e) = wasmkube_node::agent::run(cfg, async move { stop_node.wait().await }).await {
                tracing::error!(error = format!("{e:#}"), "the node agent stopped");
            }
        }))
    };
    // The one line on stdout that scripts and tests wait for. Nobody reading it is no
    // reason to stop the cluster.
    if let Err(e) = outln!("wasmkube ready: API https://{} registry {registry_addr} dns {dns_addr} kubeconfig {}", cp.api_addr, cp.kubeconfig.display()) {
        tracing::warn!(error = %e, "cannot write the ready line to stdout");
    }

    wait_for_signal().await?;
    let _ = stop.send(true);
    // The node first: its last words to the API server need the API server.
    if let Some(node) = node {
        let _ = node.await;
    }
    let _ = controllers.await;
    let _ = network.await;
    cp.join().await;
    let _ = registry.await;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain on one line, without a backtrace: this is for users. A closed
            // stderr leaves nowhere to report it; the exit code still does.
            use std::io::Write;
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("WASMKUBE_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    // Several dependencies bring rustls with different crypto backends; pick one for all.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")?;
    match cli.command {
        Command::Up(args) => rt.block_on(up(args)),
        Command::Node(args) => rt.block_on(node::run(args)),
        Command::Registry(args) => rt.block_on(registry(args)),
        Command::Push(args) => rt.block_on(push::run(args)),
        Command::Pull(args) => rt.block_on(pull::run(args)),
        Command::Bench { what } => rt.block_on(bench::run(what)),
    }
}
