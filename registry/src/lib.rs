//! The embedded OCI distribution registry and the `wasmkube push` helper.
//!
//! Not built yet.
