//! The wasmkube node agent: runs pods' containers as WASI modules and components.
//!
//! Not built yet. It will register a Node, watch the pods bound to it through the
//! API (never the store), run them in wasmtime, and report their status.
