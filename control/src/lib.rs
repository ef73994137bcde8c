//! The wasmkube control plane: the object store, the Kubernetes-compatible API
//! server, credentials, and the control loops.

pub mod api;
pub mod auth;
pub mod controllers;
/// Kubernetes resource quantities (the parser the node shares).
pub use wasmkube_quantity as quantity;
pub mod store;

use api::request::{Address, Query};
use api::{ApiState, SharedState};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{LocalStore, Store, StoreError};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A cloneable "stop now" signal shared by every task of a process.
#[derive(Clone)]
pub struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    /// The trigger and its first receiver.
    pub fn new() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }
    /// Completes once shutdown has been asked for (or the trigger is gone).
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stop| *stop).await;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, #[source] source: std::io::Error },
    #[error("cannot create data directory {path}: {source}")]
    DataDir { path: PathBuf, #[source] source: std::io::Error },
    #[error("bootstrap failed: {0}")]
    Bootstrap(String),
}

/// Where and how to run the control plane.
pub struct ControlPlaneConfig {
    pub data_dir: PathBuf,
    /// `HOST:PORT`; port 0 picks a free one.
    pub api_addr: String,
    /// tolerationSeconds of the default not-ready/unreachable tolerations pods get.
    pub default_toleration_seconds: i64,
    /// Where Service ClusterIPs come from.
    pub service_cidr: api::services::Ipv4Net,
}

/// A running control plane.
pub struct ControlPlane {
    pub api_addr: SocketAddr,
    pub kubeconfig: PathBuf,
    pub state: SharedState,
    tasks: Vec<JoinHandle<()>>,
}

/// The namespaces every cluster starts with.
pub const INITIAL_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

impl ControlPlane {
    /// Open the store, make credentials, bind the API port and start serving.
    pub async fn start(cfg: ControlPlaneConfig, shutdown: Shutdown) -> Result<Self, ControlError> {
        std::fs::create_dir_all(&cfg.data_dir).map_err(|source| ControlError::DataDir { path: cfg.data_dir.clone(), source })?;
        let store: Arc<dyn Store> = Arc::new(LocalStore::open(&cfg.data_dir.join("store.redb"))?);
        let listener = TcpListener::bind(&cfg.api_addr).await.map_err(|source| ControlError::Listen { addr: cfg.api_addr.clone(), source })?;
        let api_addr = listener.local_addr().map_err(|source| ControlError::Listen { addr: cfg.api_addr.clone(), source })?;
        let host = api_addr.ip().to_string();
        let creds = auth::Credentials::load_or_create(&cfg.data_dir, std::slice::from_ref(&host))?;
        let tls = creds.server_config()?;
        let kubeconfig = cfg.data_dir.join("kubeconfig");
        let server_host = if api_addr.ip().is_unspecified() { "127.0.0.1".to_string() } else { host };
        let server_url = if server_host.contains(':') { format!("https://[{server_host}]:{}", api_addr.port()) } else { format!("https://{server_host}:{}", api_addr.port()) };
        creds.write_kubeconfig(&kubeconfig, &server_url)?;

        api::defaults::set_default_toleration_seconds(cfg.default_toleration_seconds);
        let state: SharedState = Arc::new(ApiState {
            store,
            admin_token: creds.admin_token.clone(),
            namespace_deleted: Default::default(),
            evictions: Default::default(),
            services: api::services::ServiceAllocator::new(cfg.service_cidr),
        });
        bootstrap(&state)?;
        kubernetes_service(&state, api_addr).map_err(|e| ControlError::Bootstrap(format!("the kubernetes Service: {e}")))?;

        let mut tasks = Vec::new();
        let app = api::router(state.clone());
        let mut stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            if let Err(e) = api::serve(listener, tls, app, async move { stop.wait().await }).await {
                tracing::error!(error = %e, "API server stopped");
            }
        }));
        tasks.push(tokio::spawn(controllers::namespace::run(state.clone(), shutdown)));
        tracing::info!(addr = %api_addr, "API server listening");
        Ok(Self { api_addr, kubeconfig, state, tasks })
    }

    /// Wait for every task to finish (after shutdown was signalled).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }

    pub fn data_dir_kubeconfig(data_dir: &Path) -> PathBuf {
        data_dir.join("kubeconfig")
    }
}

/// Create the initial namespaces if they are missing (first start).
fn bootstrap(state: &SharedState) -> Result<(), ControlError> {
    let nsres = api::resources::find("", "v1", "namespaces").ok_or_else(|| ControlError::Bootstrap("namespaces are not served".into()))?;
    for name in INITIAL_NAMESPACES {
        if state.store.get(&nsres.key("", name))?.is_some() {
            continue;
        }
        let addr = Address { resource: nsres, namespace: None, name: None, sub: None };
        let obj = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
        let (obj, _) = api::handlers::prepare_create(state, &addr, obj, &Query::default()).map_err(|e| ControlError::Bootstrap(e.to_string()))?;
        state.store.create(&nsres.key("", name), obj)?;
    }
    Ok(())
}

/// The `kubernetes` Service in `default` (the first ClusterIP) and its endpoints, which
/// name this API server, as upstream's API server keeps them.
fn kubernetes_service(state: &SharedState, api_addr: SocketAddr) -> Result<(), String> {
    use serde_json::json;
    let find = |group, version, plural| api::resources::find(group, version, plural).ok_or_else(|| format!("{plural} are not served"));
    let write = |res: &'static api::resources::Resource, obj: serde_json::Value| -> Result<(), String> {
        let name = obj.pointer("/metadata/name").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        let addr = Address { resource: res, namespace: Some("default".into()), name: Some(name.clone()), sub: None };
        match state.store.get(&res.key("default", &name)).map_err(|e| e.to_string())? {
            None => api::handlers::create_object(state, &addr, obj).map(|_| ()).map_err(|e| e.to_string()),
            Some(current) => {
                let mut new = (*current).clone();
                for field in ["spec", "subsets", "endpoints", "ports", "addressType"] {
                    if let Some(v) = obj.get(field) {
                        new[field] = v.clone();
                    }
                }
                api::handlers::update_object(state, &addr, &current, new, api::handlers::Part::Main, false).map(|_| ()).map_err(|e| e.to_string())
            }
        }
    };
    let ip = if api_addr.ip().is_unspecified() { "127.0.0.1".to_owned() } else { api_addr.ip().to_string() };
    let port = api_addr.port();
    let labels = json!({"component": "apiserver", "provider": "kubernetes"});
    write(find("", "v1", "services")?, json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubernetes", "labels": labels},
        "spec": {"clusterIP": state.services.kubernetes_ip().to_string(), "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}}))?;
    write(find("", "v1", "endpoints")?, json!({"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}))?;
    write(find("discovery.k8s.io", "v1", "endpointslices")?, json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "labels": {"kubernetes.io/service-name": "kubernetes", "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}},
        "addressType": "IPv4", "endpoints": [{"addresses": [ip], "conditions": {"ready": true}}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}))
}
