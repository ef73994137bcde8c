//! Control loops running in the API server's process: the namespace lifecycle, which the
//! API contract itself needs, and a first scheduler so pods reach a node.
pub mod namespace;
pub mod scheduler;
