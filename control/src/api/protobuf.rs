use serde_json::Value;
#[derive(Debug, thiserror::Error)] pub enum ProtobufError { #[error("x")] X }
pub fn decode_object(_b: &[u8]) -> Result<Value, ProtobufError> { Err(ProtobufError::X) }
