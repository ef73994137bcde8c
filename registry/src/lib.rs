//! The embedded OCI distribution registry (`wasmkube registry`, and the one `wasmkube up`
//! serves) and the client side of `wasmkube push`.
//!
//! - [`names`]: repository names, tags and digests as the distribution spec defines them.
//! - [`error`]: the spec's error codes and their JSON body.
//! - [`storage`]: content-addressed blobs on disk, per-repository links, uploads.
//! - [`server`]: the `/v2/` HTTP API on top of the storage.
//! - [`artifact`]: what a `.wasm` file is (module or component, wasip1 or wasip2) and how it is
//!   packed as an OCI artifact.
//! - [`push`]: pushing that artifact to any registry.

pub mod artifact;
pub mod error;
pub mod names;
pub mod push;
pub mod server;
pub mod storage;

pub use error::{ErrorCode, RegistryError};
pub use server::serve;
pub use storage::Storage;
