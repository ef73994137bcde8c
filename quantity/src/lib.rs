//! Kubernetes resource quantities (`500m`, `128Mi`, `1G`, `0.5`, `1e3`) as numbers: the
//! one parser the control plane (validation, the scheduler) and the node (limits, the
//! downward API, log rotation) share.

/// The value of a quantity: `500m` -> 0.5, `128Mi` -> 134217728, `-1` -> -1 (the grammar
/// allows a sign). `None` if it does not parse.
pub fn parse(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q.find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E').unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    // `1e3` is a number with an exponent; `1E` alone is exa.
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
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ => return None,
    };
    Some(value * scale)
}

/// A memory quantity in bytes, rounded up as kubelet does. `None` if it does not parse
/// or is negative.
pub fn bytes(q: &str) -> Option<u64> {
    parse(q).filter(|v| *v >= 0.0).map(|v| v.ceil() as u64)
}

/// A CPU quantity in millicores (`100m` -> 100, `0.5` -> 500, `2` -> 2000). `None` if it
/// does not parse or is negative.
pub fn millicores(q: &str) -> Option<u64> {
    parse(q).filter(|v| *v >= 0.0).map(|v| (v * 1000.0).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_as_kubernetes_writes_them() {
        assert_eq!(parse("500m"), Some(0.5));
        assert_eq!(parse("128Mi"), Some(134_217_728.0));
        assert_eq!(parse("1G"), Some(1e9));
        assert_eq!(parse("1e3"), Some(1000.0));
        assert_eq!(parse("1E"), Some(1e18));
        assert_eq!(parse("2"), Some(2.0));
        assert_eq!(parse("-1"), Some(-1.0));
        assert_eq!(parse("1Zi"), None);
        assert_eq!(parse("12 apples"), None);
    }

    #[test]
    fn memory_and_cpu_as_the_node_needs_them() {
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
        assert_eq!(millicores("-1"), None);
        assert_eq!(bytes("1Zi"), None);
    }
}
