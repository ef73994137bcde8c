//! The wasmkube node agent: registers a Node, watches the pods bound to it through the
//! API and runs their containers as WASI modules and components.
//!
//! [`agent`] registration, lease and pod watch; [`pod`] one pod's life; [`wasm`] the
//! executors (commands run to their end, HTTP containers served with one instance per
//! request); [`images`] the image store; [`env`], [`volumes`], [`probes`], [`status`];
//! [`logs`] container logs and [`server`] the node's HTTPS endpoint that serves them.

pub mod agent;
pub mod env;
pub mod images;
pub mod ipam;
pub mod logs;
pub mod pod;
pub mod probes;
pub mod quantity;
pub mod server;
pub mod status;
pub mod volumes;
pub mod wasm;
