//! Signed deletion receipts (docs/vault.md, "Receipts").
//!
//! A receipt file is one line of canonical JSON followed by a newline:
//!
//! ```text
//! {"receipt":{…},"signature":{"algorithm":"Ed25519","key_id":"rk-…","value":"<128 hex>"}}
//! ```
//! Canonical JSON here means: object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, strings escaped as serde_json escapes them, integers only (no floats). The
//! signature is Ed25519 over the canonical JSON of the `receipt` object. A verifier re-serialises
//! the whole file canonically and refuses it unless that equals the file byte for byte, so no
//! byte of a receipt can be changed — not even whitespace or the case of a hex digit — without
//! verification failing.

use aws_lc_rs::signature::{self, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::keys::public_key_id;

/// The `format` field of every receipt.
pub const RECEIPT_FORMAT: &str = "vaultcall-deletion-receipt-v1";
/// Algorithm name in the signature object.
pub const ALGORITHM: &str = "Ed25519";

/// Why a receipt did not verify (or could not be made).
#[derive(Debug, thiserror::Error)]
pub enum ReceiptError {
    /// Not JSON.
    #[error("not a receipt: invalid JSON ({0})")]
    Json(String),
    /// JSON, but not byte-for-byte canonical: the file was edited.
    #[error("the file is not in canonical form (edited after signing)")]
    NotCanonical,
    /// Missing or extra fields, wrong types.
    #[error("not a receipt: {0}")]
    Shape(&'static str),
    /// Signed by a different key than the one trusted.
    #[error("signed by key {found}, not by the trusted key {trusted}")]
    WrongKey {
        /// Key id in the file.
        found: String,
        /// Key id of the trusted public key.
        trusted: String,
    },
    /// The signature does not match the receipt.
    #[error("signature does not verify: the receipt was modified or not signed by this key")]
    BadSignature,
    /// A float or other value that has no canonical form here.
    #[error("receipts contain integers, strings, booleans, arrays and objects only")]
    Unsupported,
    /// The public key text is not in a recognised form.
    #[error(
        "cannot read the public key: expected 64 hex digits or `vaultcall keys show-public` output"
    )]
    PublicKey,
    /// The signing key could not be built.
    #[error("invalid signing key seed")]
    Seed,
}

fn write_canonical(v: &Value, out: &mut String) -> Result<(), ReceiptError> {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if !(n.is_i64() || n.is_u64()) {
                return Err(ReceiptError::Unsupported);
            }
            out.push_str(&n.to_string());
        }
        Value::String(s) => {
            out.push_str(&serde_json::to_string(s).map_err(|_| ReceiptError::Unsupported)?)
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out)?;
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).map_err(|_| ReceiptError::Unsupported)?);
                out.push(':');
                write_canonical(&m[k], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The canonical JSON text of `v` (see the module docs).
pub fn canonical_json(v: &Value) -> Result<String, ReceiptError> {
    let mut s = String::with_capacity(512);
    write_canonical(v, &mut s)?;
    Ok(s)
}

/// The appliance's receipt-signing key.
pub struct ReceiptSigner {
    pair: Ed25519KeyPair,
    key_id: String,
}

impl std::fmt::Debug for ReceiptSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReceiptSigner({})", self.key_id)
    }
}

impl ReceiptSigner {
    /// From the 32-byte Ed25519 seed (as unwrapped from the database).
    pub fn from_seed(seed: &Zeroizing<[u8; 32]>) -> Result<Self, ReceiptError> {
        let pair =
            Ed25519KeyPair::from_seed_unchecked(&seed[..]).map_err(|_| ReceiptError::Seed)?;
        let key_id = receipt_key_id(pair.public_key().as_ref());
        Ok(Self { pair, key_id })
    }

    /// `rk-` and 16 hex digits of a hash of the public key.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.pair.public_key().as_ref());
        out
    }

    /// Signs `receipt` and returns the receipt file text (canonical, newline-terminated) and
    /// the raw signature.
    pub fn sign(&self, receipt: &Value) -> Result<(String, Vec<u8>), ReceiptError> {
        let body = canonical_json(receipt)?;
        let sig = self.pair.sign(body.as_bytes());
        let file = file_text(receipt, &self.key_id, sig.as_ref())?;
        Ok((file, sig.as_ref().to_vec()))
    }
}

/// The receipt file for a receipt and its signature (also used to rebuild a stored receipt).
pub fn file_text(receipt: &Value, key_id: &str, signature: &[u8]) -> Result<String, ReceiptError> {
    let mut sig = Map::new();
    sig.insert("algorithm".into(), Value::String(ALGORITHM.into()));
    sig.insert("key_id".into(), Value::String(key_id.into()));
    sig.insert("value".into(), Value::String(hex::encode(signature)));
    let mut top = Map::new();
    top.insert("receipt".into(), receipt.clone());
    top.insert("signature".into(), Value::Object(sig));
    let mut text = canonical_json(&Value::Object(top))?;
    text.push('\n');
    Ok(text)
}

/// The id of a receipt-verification key.
pub fn receipt_key_id(public: &[u8]) -> String {
    public_key_id("rk", public)
}

/// The public key as a PEM SubjectPublicKeyInfo (for OpenSSL and other tools).
pub fn public_key_pem(public: &[u8; 32]) -> String {
    use base64::Engine;
    // RFC 8410 §4: SEQUENCE { SEQUENCE { OID 1.3.101.112 }, BIT STRING (0 unused bits) key }.
    let mut der = vec![
        0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
    ];
    der.extend_from_slice(public);
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        base64::engine::general_purpose::STANDARD.encode(der)
    )
}

/// Reads a public key from 64 hex digits, a PEM block, or the output of
/// `vaultcall keys show-public` (which contains both).
pub fn parse_public_key(text: &str) -> Result<[u8; 32], ReceiptError> {
    use base64::Engine;
    for word in text.split_whitespace() {
        if word.len() == 64
            && let Ok(b) = hex::decode(word)
        {
            let mut out = [0u8; 32];
            out.copy_from_slice(&b);
            return Ok(out);
        }
    }
    if let (Some(a), Some(b)) = (
        text.find("-----BEGIN PUBLIC KEY-----"),
        text.find("-----END PUBLIC KEY-----"),
    ) && a < b
    {
        let body: String = text[a + 26..b].split_whitespace().collect();
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| ReceiptError::PublicKey)?;
        if der.len() == 44
            && der[..12]
                == [
                    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
                ]
        {
            let mut out = [0u8; 32];
            out.copy_from_slice(&der[12..]);
            return Ok(out);
        }
    }
    Err(ReceiptError::PublicKey)
}

/// Verifies a receipt file against a trusted public key; returns the receipt object.
pub fn verify(file: &[u8], trusted: &[u8; 32]) -> Result<Value, ReceiptError> {
    let v: Value = serde_json::from_slice(file).map_err(|e| ReceiptError::Json(e.to_string()))?;
    let mut canon = canonical_json(&v)?;
    canon.push('\n');
    if canon.as_bytes() != file {
        return Err(ReceiptError::NotCanonical);
    }
    let Value::Object(top) = v else {
        return Err(ReceiptError::Shape("the top level must be an object"));
    };
    if top.len() != 2 {
        return Err(ReceiptError::Shape(
            "expected exactly `receipt` and `signature`",
        ));
    }
    let receipt = top
        .get("receipt")
        .ok_or(ReceiptError::Shape("no `receipt`"))?;
    if !receipt.is_object() {
        return Err(ReceiptError::Shape("`receipt` must be an object"));
    }
    if receipt.get("format").and_then(Value::as_str) != Some(RECEIPT_FORMAT) {
        return Err(ReceiptError::Shape("unknown receipt format"));
    }
    let sig = top
        .get("signature")
        .and_then(Value::as_object)
        .ok_or(ReceiptError::Shape("no `signature` object"))?;
    if sig.len() != 3 || sig.get("algorithm").and_then(Value::as_str) != Some(ALGORITHM) {
        return Err(ReceiptError::Shape(
            "signature must be {algorithm: Ed25519, key_id, value}",
        ));
    }
    let key_id = sig
        .get("key_id")
        .and_then(Value::as_str)
        .ok_or(ReceiptError::Shape("no key_id"))?;
    let trusted_id = receipt_key_id(trusted);
    if key_id != trusted_id {
        return Err(ReceiptError::WrongKey {
            found: key_id.to_owned(),
            trusted: trusted_id,
        });
    }
    let value = sig
        .get("value")
        .and_then(Value::as_str)
        .ok_or(ReceiptError::Shape("no signature value"))?;
    let raw = hex::decode(value).map_err(|_| ReceiptError::BadSignature)?;
    if raw.len() != 64 || hex::encode(&raw) != value {
        return Err(ReceiptError::BadSignature);
    }
    let body = canonical_json(receipt)?;
    UnparsedPublicKey::new(&signature::ED25519, trusted)
        .verify(body.as_bytes(), &raw)
        .map_err(|_| ReceiptError::BadSignature)?;
    Ok(receipt.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signer(b: u8) -> ReceiptSigner {
        ReceiptSigner::from_seed(&Zeroizing::new([b; 32])).unwrap()
    }

    fn sample() -> Value {
        json!({
            "format": RECEIPT_FORMAT,
            "request_id": "er-0011223344556677",
            "ticket": "DPO-2026-117",
            "subject_hash": "ab".repeat(32),
            "deleted": {"calls": 3, "turns": 41, "files": 6},
            "keys_destroyed": ["dk-0123456789abcdef"],
            "started_at": "2026-11-21T08:00:00.000Z",
            "note": "工单 \"quoted\"\n",
        })
    }

    #[test]
    fn canonical_form_sorts_keys_and_has_no_whitespace() {
        let v = json!({"b": 1, "a": {"d": [1, "x"], "c": null}});
        assert_eq!(
            canonical_json(&v).unwrap(),
            r#"{"a":{"c":null,"d":[1,"x"]},"b":1}"#
        );
        assert!(canonical_json(&json!({"f": 1.5})).is_err());
    }

    #[test]
    fn a_signed_receipt_verifies_with_the_right_key_only() {
        let s = signer(7);
        let (file, sig) = s.sign(&sample()).unwrap();
        assert_eq!(sig.len(), 64);
        assert!(file.ends_with("}\n") && file.lines().count() == 1);
        let r = verify(file.as_bytes(), &s.public_key()).unwrap();
        assert_eq!(r, sample());
        assert!(matches!(
            verify(file.as_bytes(), &signer(8).public_key()),
            Err(ReceiptError::WrongKey { .. })
        ));
    }

    #[test]
    fn every_edited_byte_fails() {
        let s = signer(7);
        let (file, _) = s.sign(&sample()).unwrap();
        let pk = s.public_key();
        let bytes = file.as_bytes();
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x20, 0x80] {
                let mut b = bytes.to_vec();
                b[i] ^= mask;
                assert!(
                    verify(&b, &pk).is_err(),
                    "edit of byte {i} with {mask:#x} verified"
                );
            }
        }
        // Whitespace and re-ordering that keep the JSON meaning are refused too.
        let spaced = file.replacen(",", ", ", 1);
        assert!(matches!(
            verify(spaced.as_bytes(), &pk),
            Err(ReceiptError::NotCanonical)
        ));
        assert!(verify(file.trim_end().as_bytes(), &pk).is_err());
    }

    #[test]
    fn public_key_forms_parse() {
        let s = signer(3);
        let pk = s.public_key();
        assert_eq!(parse_public_key(&hex::encode(pk)).unwrap(), pk);
        let pem = public_key_pem(&pk);
        assert_eq!(parse_public_key(&pem).unwrap(), pk);
        let shown = format!(
            "key_id: {}\ned25519: {}\n{pem}",
            s.key_id(),
            hex::encode(pk)
        );
        assert_eq!(parse_public_key(&shown).unwrap(), pk);
        assert!(parse_public_key("nonsense").is_err());
    }
}
