//! Kubernetes resource quantities (`128Mi`, `1G`, `500m`, `0.5`, `1e3`) as the node needs them.

/// Bytes (or plain units) of a quantity: `128Mi` → 134217728. `None` if it does not parse.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    // `1e3` is a number with an exponent; `1E` alone is exa (handled as a suffix below).
    let (number, suffix) = if number.ends_with(['e', 'E']) && suffix.is_empty() { (&number[..number.len() - 1], &q[number.len() - 1..]) } else { (number, suffix) };
    let value: f64 = number.parse().ok()?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    (value >= 0.0).then_some(value * scale)
}

/// A memory quantity in bytes, rounded up as kubelet does.
pub fn bytes(q: &str) -> Option<u64> {
    parse(q).map(|v| v.ceil() as u64)
}

/// A CPU quantity in millicores (`100m` → 100, `0.5` → 500, `2` → 2000).
pub fn millicores(q: &str) -> Option<u64> {
    parse(q).map(|v| (v * 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_and_cpu_as_kubernetes_writes_them() {
        assert_eq!(bytes("128Mi"), Some(128 << 20));
        assert_eq!(bytes("1G"), Some(1_000_000_000));
        assert_eq!(bytes("64Ki"), Some(65536));
        assert_eq!(bytes("1e3"), Some(1000));
        assert_eq!(bytes("12345"), Some(12345));
        assert_eq!(millicores("100m"), Some(100));
        assert_eq!(millicores("0.5"), Some(500));
        assert_eq!(millicores("2"), Some(2000));
        assert_eq!(bytes("12 apples"), None);
        assert_eq!(bytes("-1"), None);
        assert_eq!(bytes("1Zi"), None);
    }
}
