//! The master key-encryption key (KEK): 32 random bytes in a file of mode 0600 (or a systemd
//! credential), never in config, environment, argv or logs.
//!
//! Subkeys for other purposes are derived with HKDF-SHA-256 under distinct labels, so the master
//! key itself is used for one thing only (wrapping data keys).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::hkdf;
use zeroize::{Zeroize, Zeroizing};

/// Name of the systemd credential (`LoadCredential=master.key:…`) that carries the key.
pub const CREDENTIAL_NAME: &str = "master.key";

/// Why the master key is unusable.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The key file is missing and creating one is not allowed.
    #[error(
        "master key {0} does not exist (the package creates it at install; set vault.create_master_key = true only for a demo)"
    )]
    MissingKey(PathBuf),
    /// Group or others can read it.
    #[error(
        "master key {path} has mode {mode:o}; it must not be accessible to group or others (chmod 600)"
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not exactly 32 bytes.
    #[error("master key {path} has {len} bytes; expected exactly 32")]
    BadLength {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// Reading or creating it failed.
    #[error("master key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// OS error.
        source: std::io::Error,
    },
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

/// The loaded master key. Zeroized on drop; `Debug` shows only its id.
pub struct MasterKey {
    bytes: Zeroizing<[u8; 32]>,
    id: String,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

impl MasterKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(b"vaultcall-kek-id");
        ctx.update(&bytes[..]);
        let id = format!("kek-{}", hex::encode(&ctx.finish().as_ref()[..8]));
        Self { bytes, id }
    }

    /// A public, stable identifier of this key (a hash prefix; reveals nothing of the key).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Derives a 32-byte subkey for `label` (HKDF-SHA-256, salt fixed, info = label).
    pub fn derive(&self, label: &str) -> Zeroizing<[u8; 32]> {
        let salt = hkdf::Salt::new(hkdf::HKDF_SHA256, b"vaultcall-v1");
        let prk = salt.extract(&self.bytes[..]);
        let info = [label.as_bytes()];
        let mut out = Zeroizing::new([0u8; 32]);
        // expand/fill fail only for lengths above 255 * 32 bytes.
        prk.expand(&info, Len32)
            .and_then(|okm| okm.fill(&mut out[..]))
            .expect("32-byte HKDF output is always valid");
        out
    }

    /// The raw key, for wrapping data keys.
    pub fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }

    /// Loads the key: from `$CREDENTIALS_DIRECTORY/master.key` when systemd passes it, else from
    /// `path`, creating it (mode 0600) if it is missing and `create` is set.
    pub fn load(
        path: &Path,
        create: bool,
        credentials_dir: Option<&Path>,
    ) -> Result<Self, VaultError> {
        if let Some(dir) = credentials_dir {
            let cred = dir.join(CREDENTIAL_NAME);
            if cred.exists() {
                // systemd's credential directory is private to the service; on tmpfs it grants
                // read access through a group ACL, so the file may show 0440.
                return read_key(&cred, 0o007);
            }
        }
        if !path.exists() {
            if !create {
                return Err(VaultError::MissingKey(path.to_owned()));
            }
            create_key(path)?;
            log::warn!(key_file:% = path.display(); "created a new master key; back it up: without it recordings cannot be decrypted");
        }
        read_key(path, 0o077)
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> VaultError + '_ {
    move |source| VaultError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Reads a key file; `forbidden` are the mode bits that make it too open.
fn read_key(path: &Path, forbidden: u32) -> Result<MasterKey, VaultError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & forbidden != 0 {
        return Err(VaultError::TooOpen {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() != 32 {
        return Err(VaultError::BadLength {
            path: path.to_owned(),
            len: meta.len(),
        });
    }
    let mut raw = Zeroizing::new(std::fs::read(path).map_err(io(path))?);
    let mut bytes = [0u8; 32];
    bytes.copy_from_slice(&raw[..32]);
    raw.zeroize();
    Ok(MasterKey::from_bytes(bytes))
}

/// Creates a new random key file with mode 0600; fails if the file exists.
pub fn create_key(path: &Path) -> Result<(), VaultError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fs::ensure_private_dir(dir).map_err(io(dir))?;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut key[..]).map_err(|_| VaultError::Rng)?;
    crate::fs::write_new(path, &key[..], 0o600).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_key_is_private_and_stable() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k/master.key");
        let k1 = MasterKey::load(&p, true, None).unwrap();
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = MasterKey::load(&p, false, None).unwrap();
        assert_eq!(k1.id(), k2.id());
        assert_eq!(*k1.derive("a"), *k2.derive("a"));
        assert_ne!(*k1.derive("a"), *k1.derive("b"));
        assert!(!format!("{k1:?}").contains(&hex::encode(k1.expose())));
    }

    #[test]
    fn missing_open_or_short_keys_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("master.key");
        assert!(matches!(
            MasterKey::load(&p, false, None),
            Err(VaultError::MissingKey(_))
        ));
        std::fs::write(&p, [7u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKey::load(&p, false, None),
            Err(VaultError::TooOpen { .. })
        ));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, [7u8; 31]).unwrap();
        assert!(matches!(
            MasterKey::load(&p, false, None),
            Err(VaultError::BadLength { len: 31, .. })
        ));
    }

    #[test]
    fn systemd_credential_takes_precedence() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("creds");
        std::fs::create_dir(&creds).unwrap();
        let cred = creds.join(CREDENTIAL_NAME);
        create_key(&cred).unwrap();
        let from_cred = MasterKey::load(&d.path().join("absent.key"), false, Some(&creds)).unwrap();
        let direct = MasterKey::load(&cred, false, None).unwrap();
        assert_eq!(from_cred.id(), direct.id());
        // A credential on tmpfs shows 0440 (group ACL): accepted there, never for the file.
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o440)).unwrap();
        assert!(MasterKey::load(&d.path().join("absent.key"), false, Some(&creds)).is_ok());
        assert!(matches!(
            MasterKey::load(&cred, false, None),
            Err(VaultError::TooOpen { .. })
        ));
        std::fs::set_permissions(&cred, std::fs::Permissions::from_mode(0o444)).unwrap();
        assert!(MasterKey::load(&d.path().join("absent.key"), false, Some(&creds)).is_err());
    }
}
