use serde_json::Value;
#[derive(Debug, thiserror::Error)] pub enum SelectorError { #[error("x")] X }
#[derive(Clone, Debug, Default, PartialEq)] pub struct LabelSelector;
impl LabelSelector { pub fn parse(_s: &str) -> Result<Self, SelectorError> { Ok(Self) } pub fn from_object(_s: &Value) -> Result<Self, SelectorError> { Ok(Self) } pub fn matches(&self, _l: &Value) -> bool { true } pub fn is_empty(&self) -> bool { true } }
impl std::fmt::Display for LabelSelector { fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { write!(f, "") } }
#[derive(Clone, Debug, Default)] pub struct FieldSelector;
impl FieldSelector { pub fn parse(_s: &str, _k: &str) -> Result<Self, SelectorError> { Ok(Self) } pub fn matches(&self, _o: &Value) -> bool { true } pub fn is_empty(&self) -> bool { true } }
