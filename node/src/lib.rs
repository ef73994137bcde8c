//! The wasmkube node agent: registration, pod sync, the wasm runtime, images, volumes,
//! probes, logs and the node's HTTPS endpoint.

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
