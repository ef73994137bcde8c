//! The wasmkube node agent: runs pods' containers as WASI modules and components.
//!
//! Built so far: [`images`], the image store every pod pulls through; [`logs`], the
//! container logs; [`wasm`], the executors (commands run to their end, HTTP containers served
//! with one instance per request). The agent itself (register a Node, watch the pods bound
//! to it through the API, run them, report their status) comes next.

pub mod images;
pub mod logs;
pub mod wasm;
