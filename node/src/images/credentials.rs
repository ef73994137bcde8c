//! Registry credentials from docker `config.json` files and imagePullSecrets, matched to
//! images the way kubelet's credential keyring does.

use super::PullError;
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde_json::{Map, Value};

/// Credentials per registry, from docker `config.json` files, the `.dockerconfigjson` of
/// `kubernetes.io/dockerconfigjson` Secrets or the bare map of legacy `.dockercfg` ones.
#[derive(Clone, Debug, Default)]
pub struct RegistryCredentials {
    /// In the order given; among equally specific matches the first wins.
    entries: Vec<Entry>,
}

/// One server key of a docker config. `Debug` shows no secret: `RegistryAuth` redacts.
#[derive(Clone, Debug)]
struct Entry {
    /// Lower-case `host[:port]`; a host label may be a glob (`*.example.com`).
    host: String,
    /// A repository prefix (`team/project`) the credentials are limited to, or empty.
    path: String,
    auth: RegistryAuth,
}

impl RegistryCredentials {
    pub fn none() -> Self {
        Self::default()
    }

    pub fn basic(registry: &str, username: &str, password: &str) -> Self {
        let mut creds = Self::none();
        if let Some((host, path)) = parse_server(registry) {
            creds.entries.push(Entry { host, path, auth: RegistryAuth::Basic(username.to_owned(), password.to_owned()) });
        }
        creds
    }

    /// Reads `{"auths": {"<server>": {"auth": base64("user:pass")} | {"username", "password"}
    /// | {"registrytoken"}}}`. Server keys may be `host`, `host:port`, `host/repo/prefix`,
    /// `https://host/v1/` or `http://host:port/v2/`, with `*` globs in host labels, as
    /// kubelet reads them. A config without `auths` is read as the legacy bare map, so one
    /// holding only `credsStore` or `credHelpers` simply has no credentials, as for docker.
    pub fn from_docker_config(json: &[u8]) -> Result<Self, PullError> {
        let bad = |message: String| PullError::Credentials { message };
        let doc: Value = serde_json::from_slice(json).map_err(|e| bad(format!("the docker config is not valid JSON: {e}")))?;
        let Value::Object(doc) = doc else { return Err(bad("the docker config is not a JSON object".into())) };
        let servers: &Map<String, Value> = match doc.get("auths") {
            Some(Value::Object(auths)) => auths,
            Some(_) => return Err(bad("\"auths\" in the docker config is not an object".into())),
            None => &doc,
        };
        let mut creds = Self::none();
        for (server, entry) in servers {
            let (Some(auth), Some((host, path))) = (entry_auth(server, entry)?, parse_server(server)) else { continue };
            creds.entries.push(Entry { host, path, auth });
        }
        Ok(creds)
    }

    /// Adds `other`'s entries after ours: with several imagePullSecrets the first one that
    /// matches wins.
    pub fn merge(&mut self, other: RegistryCredentials) {
        self.entries.extend(other.entries);
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The credentials for a registry as a whole (`host[:port]`); `Anonymous` when none
    /// match. Keys limited to a repository prefix do not apply here: see [`Self::for_image`].
    pub fn for_registry(&self, registry: &str) -> RegistryAuth {
        let Some((host, _)) = parse_server(registry) else { return RegistryAuth::Anonymous };
        self.matching(&host, "").into_iter().next().unwrap_or(RegistryAuth::Anonymous)
    }

    /// Every credential that applies to an image, most specific key first (a repository
    /// prefix before the bare host, an exact host before a glob), else in the order given.
    /// Like kubelet, a pull tries them in turn; empty means an anonymous pull.
    pub fn for_image(&self, image: &Reference) -> Vec<RegistryAuth> {
        match parse_server(image.registry()) {
            Some((host, _)) => self.matching(&host, image.repository()),
            None => Vec::new(),
        }
    }

    fn matching(&self, host: &str, repository: &str) -> Vec<RegistryAuth> {
        let mut found: Vec<&Entry> = self.entries.iter().filter(|e| host_matches(&e.host, host) && path_matches(&e.path, repository)).collect();
        // A stable sort keeps the given order among equally specific keys.
        found.sort_by_key(|e| (std::cmp::Reverse(e.path.split('/').filter(|s| !s.is_empty()).count()), e.host.contains(['*', '?'])));
        let mut auths: Vec<RegistryAuth> = Vec::new();
        for e in found {
            if !auths.contains(&e.auth) {
                auths.push(e.auth.clone());
            }
        }
        auths
    }
}

/// The credential one server entry carries, if any. A malformed `auth` is an error rather
/// than silently anonymous, so a broken pull secret is reported as such.
fn entry_auth(server: &str, entry: &Value) -> Result<Option<RegistryAuth>, PullError> {
    use base64::Engine as _;
    let bad = |what: &str| PullError::Credentials { message: format!("the docker config entry for {server:?}: \"auth\" {what}") };
    let text = |key: &str| entry.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let Some(token) = text("registrytoken") {
        return Ok(Some(RegistryAuth::Bearer(token.to_owned())));
    }
    if let Some(auth) = text("auth") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(auth.trim()).map_err(|_| bad("is not valid base64"))?;
        let decoded = String::from_utf8(decoded).map_err(|_| bad("is not UTF-8"))?;
        let (user, password) = decoded.split_once(':').ok_or_else(|| bad("is not base64 of user:password"))?;
        return Ok(Some(RegistryAuth::Basic(user.to_owned(), password.to_owned())));
    }
    match (text("username"), entry.get("password").and_then(Value::as_str)) {
        (Some(user), Some(password)) => Ok(Some(RegistryAuth::Basic(user.to_owned(), password.to_owned()))),
        _ => Ok(None),
    }
}

/// `https://index.docker.io/v1/` -> (`docker.io`, ``); `reg:5000/team/x` -> (`reg:5000`,
/// `team/x`). The scheme is dropped and a leading `/v1/` or `/v2/` names the API, not a
/// repository (docker's ResolveAuthConfig and kubelet agree). Docker Hub's several names
/// become the one image references use.
fn parse_server(server: &str) -> Option<(String, String)> {
    let s = server.trim();
    let lower = s.to_ascii_lowercase();
    let s = if lower.starts_with("https://") {
        &s[8..]
    } else if lower.starts_with("http://") {
        &s[7..]
    } else {
        s
    };
    let (host, path) = s.split_once('/').unwrap_or((s, ""));
    let path = path.trim_matches('/');
    let path = match path.split_once('/') {
        Some(("v1" | "v2", rest)) => rest,
        None if path == "v1" || path == "v2" => "",
        _ => path,
    };
    let host = host.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let host = match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_owned(),
        _ => host,
    };
    Some((host, path.trim_matches('/').to_owned()))
}

/// Kubelet's URLsMatch: equal ports, the same number of host labels, each matching its
/// glob label.
fn host_matches(glob: &str, host: &str) -> bool {
    let (glob_name, glob_port) = split_port(glob);
    let (name, port) = split_port(host);
    if glob_port != port {
        return false;
    }
    let (globs, labels): (Vec<&str>, Vec<&str>) = (glob_name.split('.').collect(), name.split('.').collect());
    globs.len() == labels.len() && globs.iter().zip(&labels).all(|(g, l)| glob_matches(g.as_bytes(), l.as_bytes()))
}

fn split_port(host: &str) -> (&str, &str) {
    // `[::1]:5000`: the colons inside the brackets are not the port's.
    let after_brackets = host.rfind(']').map_or(0, |i| i + 1);
    match host[after_brackets..].rfind(':') {
        Some(i) => (&host[..after_brackets + i], &host[after_brackets + i + 1..]),
        None => (host, ""),
    }
}

/// `*` (any run of characters) and `?` (one character) within one host label.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    match (glob.split_first(), text.split_first()) {
        (None, None) => true,
        (Some((b'*', rest)), _) => glob_matches(rest, text) || (!text.is_empty() && glob_matches(glob, &text[1..])),
        (Some((b'?', rest)), Some((_, text_rest))) => glob_matches(rest, text_rest),
        (Some((g, rest)), Some((t, text_rest))) => g == t && glob_matches(rest, text_rest),
        _ => false,
    }
}

/// A key's path limits it to that repository and those below it.
fn path_matches(prefix: &str, repository: &str) -> bool {
    prefix.is_empty() || repository == prefix || repository.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn basic(auth: Option<RegistryAuth>) -> String {
        match auth {
            Some(RegistryAuth::Basic(u, p)) => format!("{u}:{p}"),
            Some(other) => format!("{other:?}"),
            None => "Anonymous".into(),
        }
    }

    fn for_image(creds: &RegistryCredentials, image: &str) -> Vec<String> {
        let reference: Reference = image.parse().expect("reference");
        creds.for_image(&reference).into_iter().map(|a| basic(Some(a))).collect()
    }

    fn from(doc: serde_json::Value) -> RegistryCredentials {
        RegistryCredentials::from_docker_config(doc.to_string().as_bytes()).expect("valid config")
    }

    #[test]
    fn docker_configs_as_kubectl_and_docker_write_them() {
        let creds = from(json!({ "auths": {
            "https://index.docker.io/v1/": { "auth": "dTE6cDE=" },                  // u1:p1
            "http://reg.lan:5000/v2/": { "username": "u2", "password": "p:2" },
            "ghcr.io": { "registrytoken": "tok" },
            "quay.io": { "email": "nobody@example.com" },                             // no credential
        }}));
        assert_eq!(basic(Some(creds.for_registry("docker.io"))), "u1:p1");
        assert_eq!(basic(Some(creds.for_registry("index.docker.io"))), "u1:p1");
        assert_eq!(for_image(&creds, "busybox"), ["u1:p1"], "docker.io/library/busybox");
        assert_eq!(basic(Some(creds.for_registry("REG.lan:5000"))), "u2:p:2");
        assert_eq!(for_image(&creds, "reg.lan:5000/x/y:v1"), ["u2:p:2"]);
        assert_eq!(basic(Some(creds.for_registry("reg.lan:5001"))), "Anonymous", "the port must match");
        assert_eq!(basic(Some(creds.for_registry("reg.lan"))), "Anonymous");
        assert!(matches!(creds.for_registry("ghcr.io"), RegistryAuth::Bearer(t) if t == "tok"));
        assert_eq!(basic(Some(creds.for_registry("quay.io"))), "Anonymous");
        assert!(for_image(&creds, "quay.io/x").is_empty());
    }

    #[test]
    fn keys_may_be_limited_to_repositories_or_be_globs() {
        let creds = from(json!({ "auths": {
            "reg.lan/team": { "auth": "dGVhbTpw" },        // team:p
            "reg.lan": { "auth": "aG9zdDpw" },             // host:p
            "*.corp.example": { "auth": "Z2xvYjpw" },      // glob:p
            "a.corp.example": { "auth": "ZXhhY3Q6cA==" },  // exact:p
        }}));
        assert_eq!(for_image(&creds, "reg.lan/team/app:v1"), ["team:p", "host:p"], "most specific first; both are tried");
        assert_eq!(for_image(&creds, "reg.lan/teammate/app:v1"), ["host:p"], "a prefix is whole path segments");
        assert_eq!(basic(Some(creds.for_registry("reg.lan"))), "host:p");
        assert_eq!(for_image(&creds, "a.corp.example/x"), ["exact:p", "glob:p"]);
        assert_eq!(for_image(&creds, "b.corp.example/x"), ["glob:p"]);
        assert!(for_image(&creds, "x.b.corp.example/x").is_empty(), "a glob label matches one label");
    }

    #[test]
    fn several_secrets_merge_and_the_first_wins() {
        let mut creds = RegistryCredentials::basic("reg.lan:5000", "first", "1");
        creds.merge(from(json!({ "auths": { "reg.lan:5000": { "auth": "c2Vjb25kOjI=" }, "other:5000": { "auth": "c2Vjb25kOjI=" } } })));
        assert_eq!(basic(Some(creds.for_registry("reg.lan:5000"))), "first:1");
        assert_eq!(for_image(&creds, "reg.lan:5000/x"), ["first:1", "second:2"]);
        assert_eq!(basic(Some(creds.for_registry("other:5000"))), "second:2");
        assert!(RegistryCredentials::none().is_empty() && !creds.is_empty());
        assert_eq!(basic(Some(RegistryCredentials::basic("[::1]:5000", "v6", "p").for_registry("[::1]:5000"))), "v6:p");
    }

    #[test]
    fn legacy_and_helper_only_configs_and_broken_ones() {
        // A kubernetes.io/dockercfg Secret: the servers at the top level.
        let legacy = from(json!({ "reg.lan:5000": { "auth": "dTE6cDE=", "email": "x@y" } }));
        assert_eq!(basic(Some(legacy.for_registry("reg.lan:5000"))), "u1:p1");
        // docker with a credential helper writes no auths: no credentials, no error.
        assert!(from(json!({ "credsStore": "desktop", "credHelpers": { "gcr.io": "gcloud" } })).is_empty());
        assert!(from(json!({})).is_empty());

        let err = |doc: &[u8]| RegistryCredentials::from_docker_config(doc).expect_err("invalid").to_string();
        assert!(err(b"not json").contains("not valid JSON"));
        assert!(err(b"[]").contains("not a JSON object"));
        assert!(err(br#"{"auths": []}"#).contains("not an object"));
        let e = err(br#"{"auths":{"reg.lan":{"auth":"!!"}}}"#);
        assert!(e.contains("\"reg.lan\"") && e.contains("base64"), "{e}");
        assert!(err(br#"{"auths":{"reg.lan":{"auth":"bm9jb2xvbg=="}}}"#).contains("user:password"));
    }

    #[test]
    fn server_keys_normalise_like_kubelet() {
        let p = |s: &str| parse_server(s).map(|(h, p)| format!("{h}|{p}"));
        assert_eq!(p("https://index.docker.io/v1/").as_deref(), Some("docker.io|"));
        assert_eq!(p("registry-1.docker.io").as_deref(), Some("docker.io|"));
        assert_eq!(p("HTTP://Reg.Lan:5000/v2/").as_deref(), Some("reg.lan:5000|"));
        assert_eq!(p("reg.lan:5000/v2/team/app/").as_deref(), Some("reg.lan:5000|team/app"));
        assert_eq!(p("reg.lan/Team").as_deref(), Some("reg.lan|Team"));
        assert_eq!(p("https://"), None);
        assert_eq!(split_port("[::1]:5000"), ("[::1]", "5000"));
        assert_eq!(split_port("[::1]"), ("[::1]", ""));
        assert!(glob_matches(b"r?g*", b"registry") && !glob_matches(b"r?g", b"registry"));
    }
}
