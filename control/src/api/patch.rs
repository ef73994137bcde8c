use serde_json::Value;
#[derive(Debug, thiserror::Error)] pub enum PatchError { #[error("x")] X }
pub fn merge_patch(_t: &mut Value, _p: &Value) {}
pub fn json_patch(t: &Value, _p: &Value) -> Result<Value, PatchError> { Ok(t.clone()) }
pub fn strategic_merge_patch(o: &Value, _p: &Value, _k: &str) -> Result<Value, PatchError> { Ok(o.clone()) }
