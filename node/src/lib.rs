//! The wasmkube node agent: registers a Node, watches the pods bound to it through the
//! API and runs their containers as WASI modules and components.
//!
//! [`agent`] registration, lease and pod watch; [`pod`] one pod's life; [`wasm`] the
//! executors (commands run to their end, HTTP containers served with one instance per
//! request); [`images`] the image store; [`env`], [`volumes`], [`probes`], [`status`], [`events`];
//! [`logs`] container logs and [`server`] the node's HTTPS endpoint that serves them;
//! [`network`] the node's Service proxy ([`proxy`]) and DNS server ([`dns`]), both fed by
//! the [`service_table`].

pub mod agent;
pub mod dns;
pub mod env;
pub mod events;
pub mod exec;
pub mod images;
pub mod ipam;
pub mod logs;
pub mod network;
pub mod pod;
pub mod probes;
pub mod proxy;
/// Kubernetes resource quantities (the parser the control plane shares).
pub use wasmkube_quantity as quantity;
pub mod server;
pub mod service_table;
pub mod spdy;
pub mod status;
pub mod streams;
pub mod toolbox;
pub mod volumes;
pub mod wasm;
