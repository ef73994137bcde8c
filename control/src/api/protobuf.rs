//! Kubernetes protobuf bodies, turned into the JSON form.
//!
//! kubectl's typed-client commands (`create deployment|service|pdb|job|...`, `run`,
//! `expose`) send `application/vnd.kubernetes.protobuf`: the magic `k8s\0`, then a
//! `runtime.Unknown` envelope whose `raw` bytes are the typed message. The decoder
//! walks the wire format with the upstream type table ([`super::schema`]), so every
//! kind the table describes is decoded, every field of it, with no per-kind code.
//!
//! The JSON produced is what upstream's Go JSON encoding of the decoded struct means:
//! fields in declaration order; a zero value of a non-pointer `omitempty` field is
//! dropped (protobuf always carries it, Go's JSON never shows it: `nodePort: 0` on a
//! ClusterIP Service is "no node port"), while a pointer field keeps an explicit zero
//! (`replicas: 0`, `automountServiceAccountToken: false`).

use super::schema::{self, Field, Type, TypeDef};
use base64::Engine;
use serde_json::{Map, Value};

#[derive(Debug, thiserror::Error)]
pub enum ProtobufError {
    #[error("the body does not start with the Kubernetes protobuf magic number")]
    BadMagic,
    #[error("the protobuf envelope cannot be decoded: {0}")]
    Envelope(String),
    #[error("the protobuf {kind} cannot be decoded: {reason}")]
    Object { kind: String, reason: String },
    #[error("no kind \"{kind}\" is registered for version \"{api_version}\"")]
    UnknownKind { api_version: String, kind: String },
}

const MAGIC: &[u8] = b"k8s\0";

/// Protobuf messages nest no deeper than this; the deepest upstream type is far shallower.
const MAX_DEPTH: usize = 64;

/// Decode a protobuf body into the object's JSON form, `apiVersion` and `kind` included.
pub fn decode_object(body: &[u8]) -> Result<Value, ProtobufError> {
    decode_object_at(body, 0)
}

fn decode_object_at(body: &[u8], depth: usize) -> Result<Value, ProtobufError> {
    if depth > MAX_DEPTH {
        return Err(ProtobufError::Envelope("objects embedded in objects nest too deeply".into()));
    }
    let rest = body.strip_prefix(MAGIC).ok_or(ProtobufError::BadMagic)?;
    let env = |reason: String| ProtobufError::Envelope(reason);
    let mut api_version = String::new();
    let mut kind = String::new();
    let mut raw: &[u8] = &[];
    let mut r = Reader::new(rest);
    while let Some((tag, w)) = r.next().map_err(env)? {
        match (tag, w) {
            (1, Wire::Bytes(tm)) => {
                let mut t = Reader::new(tm);
                while let Some((tag, w)) = t.next().map_err(env)? {
                    match (tag, w) {
                        (1, Wire::Bytes(b)) => api_version = utf8(b).map_err(env)?,
                        (2, Wire::Bytes(b)) => kind = utf8(b).map_err(env)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            _ => {}
        }
    }
    let name = schema::kind_name(&api_version, &kind).ok_or_else(|| ProtobufError::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
    let def = schema::get(&name).ok_or_else(|| ProtobufError::UnknownKind { api_version: api_version.clone(), kind: kind.clone() })?;
    let fields = decode_message(def, raw, depth).map_err(|reason| ProtobufError::Object { kind: kind.clone(), reason })?;
    let mut obj = Map::new();
    obj.insert("kind".into(), Value::String(kind));
    obj.insert("apiVersion".into(), Value::String(api_version));
    obj.extend(fields);
    obj.entry("metadata").or_insert_with(|| Value::Object(Map::new()));
    Ok(Value::Object(obj))
}

// ------------------------------------------------------------------ wire format

#[derive(Clone, Copy)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// Never a Kubernetes field's encoding; read past so an unknown field can be skipped.
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self.buf.get(self.pos).ok_or("unexpected end of data in a varint")?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint is longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or("unexpected end of data: a field is truncated")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// The next field's number and value, or `None` at the end.
    fn next(&mut self) -> Result<Option<(u32, Wire<'a>)>, String> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let tag = u32::try_from(key >> 3).map_err(|_| "a field number is out of range")?;
        if tag == 0 {
            return Err("field number 0 is not allowed".into());
        }
        let w = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(self.take(8)?.try_into().map_err(|_| "short fixed64")?)),
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "a length is out of range")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            t => return Err(format!("wire type {t} is not supported")),
        };
        Ok(Some((tag, w)))
    }
}

fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| "a string is not valid UTF-8".into())
}

// ------------------------------------------------------------------ decoding

/// What has been read of one field so far.
enum Slot {
    One(Value),
    Many(Vec<Value>),
    Entries(Map<String, Value>),
}

fn decode_message(def: &TypeDef, bytes: &[u8], depth: usize) -> Result<Map<String, Value>, String> {
    if depth > MAX_DEPTH {
        return Err("the message nests too deeply".into());
    }
    let mut slots: Vec<Option<Slot>> = (0..def.fields.len()).map(|_| None).collect();
    let mut r = Reader::new(bytes);
    while let Some((tag, w)) = r.next()? {
        // Unknown fields are skipped, as upstream's decoder does.
        let Some(index) = def.field_index(tag) else { continue };
        let field = &def.fields[index];
        let name = field.json.as_deref().unwrap_or("(inline)");
        let at = |e: String| format!("{name}: {e}");
        match &field.ty {
            Type::Array { items, .. } => {
                let list = match slots[index].get_or_insert_with(|| Slot::Many(Vec::new())) {
                    Slot::Many(l) => l,
                    _ => return Err(at("repeated and single values mixed".into())),
                };
                match (w, packable(items)) {
                    (Wire::Bytes(b), true) => {
                        let mut p = Reader::new(b);
                        while p.pos < b.len() {
                            let v = if matches!(**items, Type::Float64) { Wire::Fixed64(u64::from_le_bytes(p.take(8).map_err(at)?.try_into().map_err(|_| at("short".into()))?)) } else { Wire::Varint(p.varint().map_err(at)?) };
                            list.push(decode_value(items, v, depth).map_err(at)?);
                        }
                    }
                    _ => list.push(decode_value(items, w, depth).map_err(at)?),
                }
            }
            Type::Map { values } => {
                let Wire::Bytes(b) = w else { return Err(at("a map entry must be length-delimited".into())) };
                let (k, v) = decode_entry(values, b, depth).map_err(at)?;
                match slots[index].get_or_insert_with(|| Slot::Entries(Map::new())) {
                    Slot::Entries(m) => {
                        m.insert(k, v);
                    }
                    _ => return Err(at("map and single values mixed".into())),
                }
            }
            ty => {
                let v = if field.inline {
                    let (Type::Ref { r#ref }, Wire::Bytes(b)) = (ty, w) else { return Err(at("an embedded message must be length-delimited".into())) };
                    let inner = schema::get(r#ref).ok_or_else(|| at(format!("unknown type {ref}")))?;
                    Value::Object(decode_message(inner, b, depth + 1).map_err(at)?)
                } else {
                    decode_value(ty, w, depth).map_err(at)?
                };
                // A repeated occurrence of a message merges into the first, as protobuf says.
                match (&mut slots[index], v) {
                    (Some(Slot::One(Value::Object(old))), Value::Object(new)) => old.extend(new),
                    (slot, v) => *slot = Some(Slot::One(v)),
                }
            }
        }
    }
    let mut out = Map::new();
    for (field, slot) in def.fields.iter().zip(slots) {
        let Some(slot) = slot else { continue };
        let v = match slot {
            Slot::One(v) => v,
            Slot::Many(l) => Value::Array(l),
            Slot::Entries(m) => Value::Object(m),
        };
        if field.inline {
            if let Value::Object(inner) = v {
                out.extend(inner);
            }
            continue;
        }
        if omitted(field, &v) {
            continue;
        }
        out.insert(field.json.clone().unwrap_or_default(), v);
    }
    Ok(out)
}

fn packable(items: &Type) -> bool {
    matches!(items, Type::Bool | Type::Int32 | Type::Int64 | Type::Float64)
}

/// Whether Go's JSON would leave this decoded value out: a zero in a non-pointer field
/// that is `omitempty` (or is a value type whose zero means "unset": IntOrString, Time).
fn omitted(field: &Field, v: &Value) -> bool {
    if field.pointer {
        // Go's JSON writes a nil time as null: no value.
        return matches!(field.ty, Type::Time | Type::Microtime) && v.is_null();
    }
    let zero = match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty() && matches!(field.ty, Type::Map { .. }),
    };
    zero && (field.omitempty || matches!(field.ty, Type::Intorstring | Type::Time | Type::Microtime))
}

fn decode_entry(values: &Type, b: &[u8], depth: usize) -> Result<(String, Value), String> {
    let mut r = Reader::new(b);
    let mut key = String::new();
    let mut value = None;
    while let Some((tag, w)) = r.next()? {
        match (tag, w) {
            (1, Wire::Bytes(k)) => key = utf8(k)?,
            (2, w) => {
                value = Some(match (values, w) {
                    // go-to-protobuf wraps named slices in a message whose field 1 repeats.
                    (Type::Array { items, named: true }, Wire::Bytes(inner)) => {
                        let mut items_out = Vec::new();
                        let mut ir = Reader::new(inner);
                        while let Some((t, iw)) = ir.next()? {
                            if t == 1 {
                                items_out.push(decode_value(items, iw, depth)?);
                            }
                        }
                        Value::Array(items_out)
                    }
                    _ => decode_value(values, w, depth)?,
                })
            }
            _ => {}
        }
    }
    let value = match value {
        Some(v) => v,
        None => zero_value(values),
    };
    Ok((key, value))
}

/// The JSON of a map value that protobuf left out because it was the zero value.
fn zero_value(ty: &Type) -> Value {
    match ty {
        Type::String { .. } | Type::Bytes | Type::Quantity => Value::String(String::new()),
        Type::Bool => Value::Bool(false),
        Type::Int32 | Type::Int64 | Type::Float64 => Value::from(0),
        Type::Array { .. } => Value::Array(Vec::new()),
        _ => Value::Object(Map::new()),
    }
}

fn want_bytes<'a>(w: Wire<'a>, what: &str) -> Result<&'a [u8], String> {
    match w {
        Wire::Bytes(b) => Ok(b),
        _ => Err(format!("{what} must be length-delimited")),
    }
}

fn want_varint(w: Wire<'_>, what: &str) -> Result<u64, String> {
    match w {
        Wire::Varint(v) => Ok(v),
        _ => Err(format!("{what} must be a varint")),
    }
}

fn decode_value(ty: &Type, w: Wire<'_>, depth: usize) -> Result<Value, String> {
    Ok(match ty {
        Type::String { .. } => Value::String(utf8(want_bytes(w, "a string")?)?),
        Type::Bool => Value::Bool(want_varint(w, "a bool")? != 0),
        Type::Int32 => Value::from(want_varint(w, "an int32")? as i32),
        Type::Int64 => Value::from(want_varint(w, "an int64")? as i64),
        Type::Byte => Value::from(want_varint(w, "a byte")? as u8),
        Type::Float64 => match w {
            Wire::Fixed64(v) => serde_json::Number::from_f64(f64::from_bits(v)).map(Value::Number).ok_or("a number is not finite")?,
            _ => return Err("a double must be fixed64".into()),
        },
        Type::Bytes => Value::String(base64::engine::general_purpose::STANDARD.encode(want_bytes(w, "bytes")?)),
        Type::Quantity => {
            let mut r = Reader::new(want_bytes(w, "a quantity")?);
            let mut s = String::new();
            while let Some((tag, w)) = r.next()? {
                if tag == 1 {
                    s = utf8(want_bytes(w, "a quantity")?)?;
                }
            }
            Value::String(s)
        }
        Type::Intorstring => {
            let mut r = Reader::new(want_bytes(w, "an int-or-string")?);
            let (mut kind, mut int, mut s) = (0, 0i32, String::new());
            while let Some((tag, w)) = r.next()? {
                match tag {
                    1 => kind = want_varint(w, "an int-or-string type")?,
                    2 => int = want_varint(w, "an int-or-string value")? as i32,
                    3 => s = utf8(want_bytes(w, "an int-or-string value")?)?,
                    _ => {}
                }
            }
            if kind == 1 { Value::String(s) } else { Value::from(int) }
        }
        Type::Time | Type::Microtime => {
            let b = want_bytes(w, "a time")?;
            if b.is_empty() {
                // Upstream marshals the zero time as an empty message.
                return Ok(Value::Null);
            }
            let mut r = Reader::new(b);
            let (mut secs, mut nanos) = (0i64, 0i64);
            while let Some((tag, w)) = r.next()? {
                match tag {
                    1 => secs = want_varint(w, "seconds")? as i64,
                    2 => nanos = i64::from(want_varint(w, "nanos")? as i32),
                    _ => {}
                }
            }
            format_time(secs, nanos, matches!(ty, Type::Microtime))?
        }
        Type::Duration => {
            let mut r = Reader::new(want_bytes(w, "a duration")?);
            let mut ns = 0i64;
            while let Some((tag, w)) = r.next()? {
                if tag == 1 {
                    ns = want_varint(w, "a duration")? as i64;
                }
            }
            Value::String(format_duration(ns))
        }
        Type::Rawextension => {
            let mut r = Reader::new(want_bytes(w, "an embedded object")?);
            let mut raw: &[u8] = &[];
            while let Some((tag, w)) = r.next()? {
                if tag == 1 {
                    raw = want_bytes(w, "an embedded object")?;
                }
            }
            if raw.is_empty() {
                Value::Null
            } else if raw.starts_with(MAGIC) {
                decode_object_at(raw, depth + 1).map_err(|e| e.to_string())?
            } else {
                serde_json::from_slice(raw).map_err(|e| format!("an embedded object is not JSON: {e}"))?
            }
        }
        Type::Any => Value::Null,
        Type::Ref { r#ref } => {
            let def = schema::get(r#ref).ok_or_else(|| format!("unknown type {ref}"))?;
            Value::Object(decode_message(def, want_bytes(w, "a message")?, depth + 1)?)
        }
        Type::Array { .. } | Type::Map { .. } => return Err("a list or map value nested directly in a list".into()),
    })
}

fn format_time(secs: i64, nanos: i64, micro: bool) -> Result<Value, String> {
    use chrono::SecondsFormat;
    // metav1.Time keeps whole seconds (as its JSON does); MicroTime keeps microseconds.
    let nanos = if micro { (nanos.clamp(0, 999_999_999) / 1000) * 1000 } else { 0 };
    let t = chrono::DateTime::from_timestamp(secs, nanos as u32).ok_or("a time is out of range")?;
    Ok(Value::String(t.to_rfc3339_opts(if micro { SecondsFormat::Micros } else { SecondsFormat::Secs }, true)))
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `150ms`, `0s`.
fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let u = ns.unsigned_abs();
    let mut out = String::new();
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 { ("ns", 1) } else if u < 1_000_000 { ("µs", 1_000) } else { ("ms", 1_000_000) };
        out.push_str(&trim_fraction(u, div));
        out.push_str(unit);
    } else {
        let h = u / 3_600_000_000_000;
        let m = (u / 60_000_000_000) % 60;
        let s = u % 60_000_000_000;
        if h > 0 {
            out.push_str(&format!("{h}h{m}m"));
        } else if m > 0 {
            out.push_str(&format!("{m}m"));
        }
        out.push_str(&trim_fraction(s, 1_000_000_000));
        out.push('s');
    }
    if neg { format!("-{out}") } else { out }
}

fn trim_fraction(v: u64, div: u64) -> String {
    let whole = v / div;
    let frac = v % div;
    if frac == 0 {
        return whole.to_string();
    }
    let width = div.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests;
