//! Control loops. For now only the namespace lifecycle, which the API contract
//! itself needs (deleting a namespace removes its contents before it goes).
pub mod namespace;
