//! Fallback runtime for ordinary Linux images: image layers -> OCI bundle -> runc.
//!
//! Not built yet.
