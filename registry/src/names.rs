//! Repository names, tags and digests, with the grammar of the OCI distribution spec.

use crate::error::{ErrorCode, RegistryError};
use std::fmt;

/// A validated repository name such as `library/hello`.
///
/// Every path component matches `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`, so a name can never
/// contain `..`, start a component with `_` (the storage's own `_manifests` folders), or
/// escape the storage root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoName(String);

impl RepoName {
    pub fn parse(name: &str) -> Result<Self, RegistryError> {
        let bad = |why: &str| RegistryError::new(ErrorCode::NameInvalid, format!("invalid repository name {name:?}: {why}"));
        if name.is_empty() || name.len() > 255 {
            return Err(bad("must be 1 to 255 characters"));
        }
        for component in name.split('/') {
            if !valid_component(component) {
                return Err(bad("each path component must be lower-case letters and digits, separated by '.', '_', '__' or '-'"));
            }
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__' or one or more '-', always between alphanumerics.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

/// A tag: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`.
pub fn valid_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|&x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

/// A `sha256:<64 lower-case hex>` digest, the only algorithm this registry stores.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        let invalid = |why: &str| RegistryError::new(ErrorCode::DigestInvalid, format!("invalid digest {s:?}: {why}"));
        let (algorithm, hex) = s.split_once(':').ok_or_else(|| invalid("expected algorithm:hex"))?;
        match algorithm {
            "sha256" => {}
            "sha384" | "sha512" => {
                return Err(RegistryError::new(ErrorCode::Unsupported, format!("digest algorithm {algorithm} is not supported; use sha256")))
            }
            _ => return Err(invalid("unknown algorithm")),
        }
        if hex.len() != 64 || !hex.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x)) {
            return Err(invalid("sha256 needs 64 lower-case hex digits"));
        }
        Ok(Self(s.to_owned()))
    }

    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest as _;
        Self::from_hash(sha2::Sha256::digest(bytes).as_slice())
    }

    pub fn from_hash(hash: &[u8]) -> Self {
        Self(format!("sha256:{}", hex::encode(hash)))
    }

    /// The hex part, used as the file name in storage.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The `<reference>` of a manifest URL: a tag or a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl ManifestRef {
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if s.contains(':') {
            return Digest::parse(s).map(Self::Digest);
        }
        if valid_tag(s) {
            Ok(Self::Tag(s.to_owned()))
        } else {
            Err(RegistryError::new(ErrorCode::ManifestInvalid, format!("invalid tag {s:?}")).with_status(400))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repository_names_follow_the_spec_grammar() {
        for ok in ["hello", "library/hello", "a.b/c_d/e__f/g-h/i---j", "x0/1y"] {
            assert!(RepoName::parse(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Hello", "a/../b", "..", "a//b", "/a", "a/", "_x", "a_", "a___b", "a/.b", "a..b", "a/_manifests"] {
            let err = RepoName::parse(bad).unwrap_err();
            assert_eq!(err.code, ErrorCode::NameInvalid, "{bad}");
        }
    }

    #[test]
    fn tags_and_digests() {
        assert!(valid_tag("v1.0_rc-1") && valid_tag("_x") && !valid_tag("-x") && !valid_tag(".x") && !valid_tag(&"a".repeat(129)));
        let d = Digest::of(b"");
        assert_eq!(d.as_str(), "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(Digest::parse(d.as_str()).unwrap(), d);
        assert_eq!(Digest::parse("sha256:ABC").unwrap_err().code, ErrorCode::DigestInvalid);
        assert_eq!(Digest::parse("md5:abc").unwrap_err().code, ErrorCode::DigestInvalid);
        assert_eq!(Digest::parse(&format!("sha512:{}", "a".repeat(128))).unwrap_err().code, ErrorCode::Unsupported);
        assert_eq!(ManifestRef::parse("v1").unwrap(), ManifestRef::Tag("v1".into()));
        assert_eq!(ManifestRef::parse(d.as_str()).unwrap(), ManifestRef::Digest(d));
    }
}
