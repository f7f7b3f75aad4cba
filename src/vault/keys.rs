//! The key hierarchy below the master key (docs/vault.md, "Keys"):
//!
//! ```text
//! master key (KEK, file 0600 / systemd credential)
//!   └─ HKDF "vault.wrap.v1" → wrapping key (AES-256-GCM)
//!        ├─ wraps each subject's data key (random 32 bytes, in data_subjects.wrapped_key)
//!        │     ├─ HKDF(file id, content type, subject) → one key per vault file
//!        │     └─ HKDF "vaultcall-field-v1" → key for encrypted columns (phone, turn text, variables)
//!        └─ wraps the appliance keys (appliance_keys): the subject-lookup HMAC key and the
//!           receipt-signing Ed25519 seed
//! ```
//! Re-wrapping (master-key rotation) changes only the wrapped blobs, never a data key, so no
//! file is re-encrypted. All key bytes live in `Zeroizing` buffers or inside aws-lc, which wipes
//! its contexts when they are freed.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::{hkdf, hmac, rand};
use zeroize::Zeroizing;

use super::MasterKey;
use super::phone::E164;
use crate::ids::SubjectKey;

/// Version byte of wrapped keys and sealed fields.
const SEALED_V1: u8 = 1;
/// Length of a wrapped 32-byte key: version ‖ nonce ‖ ciphertext ‖ tag.
pub const WRAPPED_LEN: usize = 1 + 12 + 32 + 16;

/// Why a key operation failed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The wrapped key does not authenticate under this master key (wrong master key, or the
    /// row was edited).
    #[error("cannot unwrap {0}: wrong master key or modified key record")]
    Unwrap(&'static str),
    /// An encrypted field does not authenticate.
    #[error("encrypted field does not authenticate (modified, or wrong subject)")]
    Field,
    /// A stored blob has the wrong length or version.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// The system random generator failed.
    #[error("the system random number generator failed")]
    Rng,
}

struct Len32;
impl hkdf::KeyType for Len32 {
    fn len(&self) -> usize {
        32
    }
}

fn hkdf32(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    let mut out = Zeroizing::new([0u8; 32]);
    prk.expand(info, Len32)
        .and_then(|okm| okm.fill(&mut out[..]))
        .expect("32-byte HKDF output is always valid");
    out
}

fn aead(bytes: &[u8; 32]) -> LessSafeKey {
    LessSafeKey::new(
        UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte key is valid for AES-256-GCM"),
    )
}

/// Random bytes from the system generator.
pub fn random<const N: usize>() -> Result<[u8; N], KeyError> {
    let mut b = [0u8; N];
    rand::fill(&mut b).map_err(|_| KeyError::Rng)?;
    Ok(b)
}

/// version ‖ random nonce ‖ AES-256-GCM(key, nonce, plaintext, aad).
fn seal(key: &LessSafeKey, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
    let n: [u8; 12] = random()?;
    // Sealed in place: the copy of the plaintext becomes the ciphertext.
    let mut body = plaintext.to_vec();
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(n), Aad::from(aad), &mut body)
        .map_err(|_| KeyError::Rng)?;
    let mut out = Vec::with_capacity(13 + body.len());
    out.push(SEALED_V1);
    out.extend_from_slice(&n);
    out.extend_from_slice(&body);
    Ok(out)
}

fn open(key: &LessSafeKey, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < 1 + 12 + 16 || sealed[0] != SEALED_V1 {
        return None;
    }
    let n: [u8; 12] = sealed[1..13].try_into().ok()?;
    let mut body = Zeroizing::new(sealed[13..].to_vec());
    let len = key
        .open_in_place(
            Nonce::assume_unique_for_key(n),
            Aad::from(aad),
            &mut body[..],
        )
        .ok()?
        .len();
    body.truncate(len);
    Some(body)
}

/// A data subject's data key: 32 random bytes, wiped on drop; `Debug` shows only the id.
pub struct DataKey {
    id: String,
    bytes: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id)
    }
}

impl DataKey {
    /// A new random key with a random id `dk-<16 hex>`.
    pub fn generate() -> Result<Self, KeyError> {
        let id: [u8; 8] = random()?;
        Ok(Self {
            id: format!("dk-{}", hex::encode(id)),
            bytes: Zeroizing::new(random()?),
        })
    }

    /// From stored parts (after unwrapping) or for tests.
    pub fn from_parts(id: String, bytes: [u8; 32]) -> Self {
        Self {
            id,
            bytes: Zeroizing::new(bytes),
        }
    }

    /// The key's public id (stored in clear; names the key in receipts).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The raw key, for HKDF.
    pub(crate) fn expose(&self) -> &[u8; 32] {
        &self.bytes
    }

    fn field_key(&self) -> LessSafeKey {
        aead(&hkdf32(b"vaultcall-field-v1", &self.bytes[..], &[b"field"]))
    }

    /// Encrypts a column value. `context` names the column and row (`turns.text_enc|call=4|seq=2`)
    /// and is authenticated, so a value copied to another row or column does not decrypt.
    pub fn seal_field(&self, context: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        seal(&self.field_key(), context.as_bytes(), plaintext)
    }

    /// Decrypts a column value sealed with the same `context`.
    pub fn open_field(&self, context: &str, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        open(&self.field_key(), context.as_bytes(), sealed).ok_or(KeyError::Field)
    }

    /// A stable, non-reversible name for a cached prompt of this subject (HMAC of its text),
    /// so the prompt cache finds entries without storing the text.
    pub fn prompt_name(&self, text: &str) -> String {
        let k = hkdf32(b"vaultcall-prompt-v1", &self.bytes[..], &[b"name"]);
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &k[..]), text.as_bytes());
        hex::encode(&tag.as_ref()[..16])
    }
}

/// What a wrapped key is bound to; part of the AAD so a wrapped blob moved to another row
/// does not unwrap.
#[derive(Debug, Clone, Copy)]
pub enum WrapContext<'a> {
    /// A subject's data key.
    DataKey {
        /// The subject.
        subject: &'a SubjectKey,
        /// The data key's id.
        key_id: &'a str,
    },
    /// An appliance key (`subject_lookup`, `receipt_signing`).
    Appliance {
        /// Its purpose.
        purpose: &'a str,
        /// Its id.
        key_id: &'a str,
    },
}

impl WrapContext<'_> {
    fn aad(&self) -> Vec<u8> {
        let mut a = Vec::with_capacity(96);
        match self {
            Self::DataKey { subject, key_id } => {
                a.extend_from_slice(b"vaultcall-dk-v1\0");
                a.extend_from_slice(&subject.0);
                a.extend_from_slice(key_id.as_bytes());
            }
            Self::Appliance { purpose, key_id } => {
                a.extend_from_slice(b"vaultcall-appliance-v1\0");
                a.extend_from_slice(purpose.as_bytes());
                a.push(0);
                a.extend_from_slice(key_id.as_bytes());
            }
        }
        a
    }

    fn what(&self) -> &'static str {
        match self {
            Self::DataKey { .. } => "data key",
            Self::Appliance { .. } => "appliance key",
        }
    }
}

/// Wraps and unwraps 32-byte keys under a master key (through an HKDF subkey, so the master
/// key's bytes are used for nothing else).
pub struct KeyWrapper {
    key: LessSafeKey,
    master_key_id: String,
}

impl std::fmt::Debug for KeyWrapper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyWrapper({})", self.master_key_id)
    }
}

impl KeyWrapper {
    /// The wrapper of `master`.
    pub fn new(master: &MasterKey) -> Self {
        Self {
            key: aead(&master.derive("vault.wrap.v1")),
            master_key_id: master.id().to_owned(),
        }
    }

    /// Id of the master key (stored next to every wrapped key).
    pub fn master_key_id(&self) -> &str {
        &self.master_key_id
    }

    /// Wraps a key.
    pub fn wrap(&self, ctx: WrapContext<'_>, secret: &[u8; 32]) -> Result<Vec<u8>, KeyError> {
        seal(&self.key, &ctx.aad(), secret)
    }

    /// Unwraps a key.
    pub fn unwrap(
        &self,
        ctx: WrapContext<'_>,
        wrapped: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, KeyError> {
        if wrapped.len() != WRAPPED_LEN {
            return Err(KeyError::Malformed("wrapped key"));
        }
        let plain = open(&self.key, &ctx.aad(), wrapped).ok_or(KeyError::Unwrap(ctx.what()))?;
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(&plain[..]);
        Ok(out)
    }

    /// Unwraps a subject's data key.
    pub fn unwrap_data_key(
        &self,
        subject: &SubjectKey,
        key_id: &str,
        wrapped: &[u8],
    ) -> Result<DataKey, KeyError> {
        let b = self.unwrap(WrapContext::DataKey { subject, key_id }, wrapped)?;
        Ok(DataKey::from_parts(key_id.to_owned(), *b))
    }
}

/// The appliance's HMAC key for phone-number lookup hashes. Random, wrapped in the database,
/// never rotated (a new key would orphan every subject and suppression entry).
pub struct LookupKey {
    key: hmac::Key,
    redaction: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupKey")
    }
}

impl LookupKey {
    /// From the unwrapped secret.
    pub fn new(secret: &[u8; 32]) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            redaction: hkdf32(b"vaultcall-redaction-v1", secret, &[b"log"]),
        }
    }

    /// HMAC-SHA-256(lookup key, "vaultcall-subject-v1:" ‖ E.164 number).
    pub fn subject_key(&self, number: &E164) -> SubjectKey {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"vaultcall-subject-v1:");
        ctx.update(number.as_str().as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        SubjectKey(out)
    }

    /// The key for log redaction tags: stable across master-key rotations, so operators can
    /// follow one customer through the journal over months.
    pub fn redaction_key(&self) -> &[u8; 32] {
        &self.redaction
    }
}

/// The public id of an appliance key: prefix and 16 hex digits of SHA-256(domain ‖ bytes).
pub fn public_key_id(prefix: &str, public_bytes: &[u8]) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(b"vaultcall-key-id-v1");
    ctx.update(public_bytes);
    format!("{prefix}-{}", hex::encode(&ctx.finish().as_ref()[..8]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn master(b: u8) -> MasterKey {
        MasterKey::from_bytes([b; 32])
    }

    #[test]
    fn wrapped_keys_unwrap_only_in_their_context_and_under_their_master() {
        let w = KeyWrapper::new(&master(1));
        let s = SubjectKey([5; 32]);
        let dk = DataKey::generate().unwrap();
        let wrapped = w
            .wrap(
                WrapContext::DataKey {
                    subject: &s,
                    key_id: dk.id(),
                },
                dk.expose(),
            )
            .unwrap();
        assert_eq!(wrapped.len(), WRAPPED_LEN);
        let back = w.unwrap_data_key(&s, dk.id(), &wrapped).unwrap();
        assert_eq!(back.expose(), dk.expose());
        assert!(
            w.unwrap_data_key(&SubjectKey([6; 32]), dk.id(), &wrapped)
                .is_err()
        );
        assert!(w.unwrap_data_key(&s, "dk-other", &wrapped).is_err());
        assert!(
            KeyWrapper::new(&master(2))
                .unwrap_data_key(&s, dk.id(), &wrapped)
                .is_err()
        );
        let mut edited = wrapped.clone();
        edited[20] ^= 1;
        assert!(w.unwrap_data_key(&s, dk.id(), &edited).is_err());
        assert!(!format!("{dk:?}").contains(&hex::encode(dk.expose())));
    }

    #[test]
    fn fields_are_bound_to_their_context() {
        let dk = DataKey::generate().unwrap();
        let sealed = dk
            .seal_field("turns.text_enc|call=1|seq=1", "您好".as_bytes())
            .unwrap();
        assert_eq!(
            &dk.open_field("turns.text_enc|call=1|seq=1", &sealed)
                .unwrap()[..],
            "您好".as_bytes()
        );
        assert!(
            dk.open_field("turns.text_enc|call=1|seq=2", &sealed)
                .is_err()
        );
        assert!(
            DataKey::generate()
                .unwrap()
                .open_field("turns.text_enc|call=1|seq=1", &sealed)
                .is_err()
        );
        // Two seals of the same text differ (random nonces).
        assert_ne!(
            sealed,
            dk.seal_field("turns.text_enc|call=1|seq=1", "您好".as_bytes())
                .unwrap()
        );
    }

    #[test]
    fn lookup_hash_is_keyed_and_stable() {
        let n = super::super::phone::normalize("13812345678", "86").unwrap();
        let a = LookupKey::new(&[1; 32]).subject_key(&n);
        assert_eq!(a, LookupKey::new(&[1; 32]).subject_key(&n));
        assert_ne!(a, LookupKey::new(&[2; 32]).subject_key(&n));
    }
}
