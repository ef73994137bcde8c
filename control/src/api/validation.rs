use serde_json::Value;
use super::status::FieldError;
pub fn validate(_k: &str, _o: &Value, _old: Option<&Value>) -> Vec<FieldError> { vec![] }
pub fn check_schema(_k: &str, _o: &Value) -> Result<Vec<String>, String> { Ok(vec![]) }
