//! TLS for the admin API with rustls 0.23 (aws-lc-rs provider), and self-signed pairs for sites
//! without a PKI.
//!
//! The certificate is behind a resolver that SIGHUP can swap, so a renewed certificate takes
//! effect for new connections without a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::aws_lc_rs;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{key}: cannot load {path}: {message}")]
    Load {
        /// Config key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The private key is readable by others.
    #[error(
        "admin.tls.key_file: {path} has mode {mode:o}; it must not be accessible to others (chmod 600 or 640)"
    )]
    KeyTooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// rustls refused the pair.
    #[error("admin.tls: certificate and key do not form a usable pair: {0}")]
    Pair(String),
    /// Generating or writing a self-signed pair failed.
    #[error("self-signed certificate: {0}")]
    Generate(String),
}

/// Reads a PEM certificate chain and private key into a signing identity.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<Arc<CertifiedKey>, TlsError> {
    let load = |key: &'static str, path: &Path, message: String| TlsError::Load {
        key,
        path: path.to_owned(),
        message,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| load("admin.tls.cert_file", cert_file, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| load("admin.tls.cert_file", cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(load(
            "admin.tls.cert_file",
            cert_file,
            "no CERTIFICATE block found".into(),
        ));
    }
    let meta = std::fs::metadata(key_file)
        .map_err(|e| load("admin.tls.key_file", key_file, e.to_string()))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o007 != 0 {
        return Err(TlsError::KeyTooOpen {
            path: key_file.to_owned(),
            mode,
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| load("admin.tls.key_file", key_file, e.to_string()))?;
    let provider = aws_lc_rs::default_provider();
    let ck =
        CertifiedKey::from_der(chain, key, &provider).map_err(|e| TlsError::Pair(e.to_string()))?;
    Ok(Arc::new(ck))
}

/// A certificate resolver whose identity can be replaced at run time.
#[derive(Debug)]
pub struct ReloadableCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableCert {
    /// Starts with `ck`.
    pub fn new(ck: Arc<CertifiedKey>) -> Self {
        Self {
            current: RwLock::new(ck),
        }
    }

    /// Swaps in a new identity for connections accepted from now on.
    pub fn replace(&self, ck: Arc<CertifiedKey>) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = ck;
    }
}

impl ResolvesServerCert for ReloadableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// A rustls server config (TLS 1.2 and 1.3, aws-lc-rs, ALPN http/1.1) over `cert`.
pub fn server_config(cert: Arc<ReloadableCert>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Pair(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(cert);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Files written by [`write_self_signed`].
#[derive(Debug)]
pub struct SelfSigned {
    /// Certificate (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM, PKCS#8, mode 0600).
    pub key_file: PathBuf,
    /// SHA-256 fingerprint of the certificate, for operators to pin or compare.
    pub sha256_fingerprint: String,
}

/// Generates an ECDSA P-256 self-signed certificate for `names` (DNS names or IP addresses),
/// valid from today for `days`, and writes `admin-cert.pem` and `admin-key.pem` into `dir`.
/// Refuses to overwrite existing files.
pub fn write_self_signed(
    dir: &Path,
    names: &[String],
    days: u32,
    today_unix_days: i64,
) -> Result<SelfSigned, TlsError> {
    let g = |e: &dyn std::fmt::Display| TlsError::Generate(e.to_string());
    let key = rcgen::KeyPair::generate().map_err(|e| g(&e))?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(|e| g(&e))?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(
        rcgen::DnType::CommonName,
        names.first().map_or("vaultcall", String::as_str),
    );
    dn.push(rcgen::DnType::OrganizationName, "vaultcall appliance");
    params.distinguished_name = dn;
    let ymd = |d: i64| {
        let (y, m, day) = crate::time::civil_from_days(d);
        rcgen::date_time_ymd(y as i32, m as u8, day as u8)
    };
    params.not_before = ymd(today_unix_days - 1);
    params.not_after = ymd(today_unix_days + i64::from(days));
    let cert = params.self_signed(&key).map_err(|e| g(&e))?;
    std::fs::create_dir_all(dir).map_err(|e| g(&e))?;
    let cert_file = dir.join("admin-cert.pem");
    let key_file = dir.join("admin-key.pem");
    for f in [&cert_file, &key_file] {
        if f.exists() {
            return Err(TlsError::Generate(format!(
                "{} exists; not overwriting",
                f.display()
            )));
        }
    }
    crate::fs::write_new(&key_file, key.serialize_pem().as_bytes(), 0o600).map_err(|e| g(&e))?;
    crate::fs::write_new(&cert_file, cert.pem().as_bytes(), 0o644).map_err(|e| g(&e))?;
    let fp = ::aws_lc_rs::digest::digest(&::aws_lc_rs::digest::SHA256, cert.der());
    let sha256_fingerprint = fp
        .as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":");
    Ok(SelfSigned {
        cert_file,
        key_file,
        sha256_fingerprint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_pair_loads_and_key_is_private() {
        let d = tempfile::tempdir().unwrap();
        let s = write_self_signed(
            d.path(),
            &["127.0.0.1".into(), "vaultcall.local".into()],
            365,
            20_000,
        )
        .unwrap();
        let mode = std::fs::metadata(&s.key_file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(s.sha256_fingerprint.len(), 32 * 3 - 1);
        let ck = load_certified_key(&s.cert_file, &s.key_file).unwrap();
        assert_eq!(ck.cert.len(), 1);
        assert!(
            write_self_signed(d.path(), &["x".into()], 1, 20_000).is_err(),
            "must not overwrite"
        );
    }

    #[test]
    fn world_readable_key_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let s = write_self_signed(d.path(), &["127.0.0.1".into()], 30, 20_000).unwrap();
        std::fs::set_permissions(&s.key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_certified_key(&s.cert_file, &s.key_file),
            Err(TlsError::KeyTooOpen { .. })
        ));
    }

    #[test]
    fn garbage_cert_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("c.pem");
        std::fs::write(&c, "not a pem").unwrap();
        let e = load_certified_key(&c, &d.path().join("k.pem")).unwrap_err();
        assert!(e.to_string().starts_with("admin.tls.cert_file"), "{e}");
    }
}
