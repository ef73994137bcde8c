//! Cluster credentials: a CA and serving certificate made on first start, the
//! admin bearer token, and the admin kubeconfig.
//!
//! Everything lives under `<data-dir>/pki/`; the CA and token persist across
//! restarts so kubeconfigs handed out stay valid. The serving certificate is
//! re-issued at every start so it always names the addresses in use.

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot read or write {path}: {source}")]
    Io { path: PathBuf, #[source] source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error("bad PEM in {0}")]
    Pem(PathBuf),
}

/// The CA, serving identity and admin token of one cluster.
pub struct Credentials {
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    pub admin_token: String,
}

fn read(path: &Path) -> Result<Option<String>, AuthError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuthError::Io { path: path.into(), source }),
    }
}

/// Write a file readable only by its owner (keys and tokens).
fn write_private(path: &Path, contents: &str) -> Result<(), AuthError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| AuthError::Io { path: path.into(), source };
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path).map_err(io)?;
    f.write_all(contents.as_bytes()).map_err(io)
}

fn ca_params() -> Result<CertificateParams, AuthError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "wasmkube-ca");
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2099, 1, 1);
    Ok(p)
}

impl Credentials {
    /// Load the CA and token from `data_dir/pki`, creating them on first start, and
    /// issue a serving certificate for `hosts` (IPs or DNS names).
    pub fn load_or_create(data_dir: &Path, hosts: &[String]) -> Result<Self, AuthError> {
        let pki = data_dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(|source| AuthError::Io { path: pki.clone(), source })?;
        let (ca_cert_path, ca_key_path, token_path) = (pki.join("ca.crt"), pki.join("ca.key"), pki.join("admin.token"));

        let (ca_pem, ca_key) = match (read(&ca_cert_path)?, read(&ca_key_path)?) {
            (Some(cert), Some(key)) => (cert, KeyPair::from_pem(&key).map_err(|_| AuthError::Pem(ca_key_path.clone()))?),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write_private(&ca_key_path, &key.serialize_pem())?;
                write_private(&ca_cert_path, &cert.pem())?;
                (cert.pem(), key)
            }
        };
        // The issuer needs only the CA's name and key; its parameters are fixed.
        let issuer = Issuer::new(ca_params()?, ca_key);

        let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "kubernetes".into(), "kubernetes.default.svc".into()];
        names.extend(hosts.iter().cloned());
        names.dedup();
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "wasmkube-apiserver");
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2099, 1, 1);
        for n in names {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.try_into()?),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        let server_key = KeyPair::generate()?;
        let server_cert = params.signed_by(&server_key, &issuer)?;

        let admin_token = match read(&token_path)? {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => {
                let t = format!("{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
                write_private(&token_path, &t)?;
                t
            }
        };
        Ok(Self { ca_pem, server_cert_pem: server_cert.pem(), server_key_pem: server_key.serialize_pem(), admin_token })
    }

    /// The rustls server configuration, offering HTTP/2 and HTTP/1.1 (kubectl uses h2).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, AuthError> {
        let bad = || AuthError::Pem(PathBuf::from("apiserver.crt"));
        let certs = CertificateDer::pem_slice_iter(self.server_cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|_| bad())?;
        let key = PrivateKeyDer::from_pem_slice(self.server_key_pem.as_bytes()).map_err(|_| bad())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// An admin kubeconfig for the API at `server` (e.g. `https://127.0.0.1:6443`).
    pub fn kubeconfig(&self, server: &str) -> String {
        use base64::Engine;
        let ca = base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: wasmkube\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: wasmkube-admin\n  user:\n    token: {token}\ncontexts:\n- name: wasmkube\n  context:\n    cluster: wasmkube\n    user: wasmkube-admin\n    namespace: default\ncurrent-context: wasmkube\n",
            token = self.admin_token
        )
    }

    /// Write the admin kubeconfig to `path` (owner-only: it carries the token).
    pub fn write_kubeconfig(&self, path: &Path, server: &str) -> Result<(), AuthError> {
        write_private(path, &self.kubeconfig(server))
    }
}

/// Constant-time comparison of a presented bearer token with the expected one.
pub fn token_matches(presented: &str, expected: &str) -> bool {
    let (a, b) = (presented.as_bytes(), expected.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_and_token_persist_and_server_cert_is_reissued() {
        let dir = std::env::temp_dir().join(format!("wasmkube-auth-{}", uuid::Uuid::new_v4()));
        let a = Credentials::load_or_create(&dir, &["10.0.0.1".into()]).unwrap();
        let b = Credentials::load_or_create(&dir, &[]).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.admin_token, b.admin_token);
        assert_ne!(a.server_key_pem, b.server_key_pem);
        a.server_config().unwrap();
        assert!(a.kubeconfig("https://127.0.0.1:6443").contains("certificate-authority-data"));
        assert!(token_matches(&a.admin_token, &b.admin_token));
        assert!(!token_matches("x", &a.admin_token));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
