//! `Redacted<T>`: how personal data appears in logs — as a short keyed hash.
//!
//! The hash is HMAC-SHA-256 under a key derived from the appliance's master key, so the same
//! number gives the same tag across lines and restarts (operators can follow one customer's
//! calls in the journal) but the tag cannot be reversed by hashing all phone numbers without the
//! key. Before the key is set (early start-up), a random per-process key is used.

use std::fmt;
use std::sync::OnceLock;

use aws_lc_rs::hmac;
use zeroize::Zeroize;

static KEY: OnceLock<hmac::Key> = OnceLock::new();

/// Sets the redaction key; only the first call has an effect. Returns whether it was set.
pub fn set_redaction_key(key: &[u8; 32]) -> bool {
    KEY.set(hmac::Key::new(hmac::HMAC_SHA256, key)).is_ok()
}

fn key() -> &'static hmac::Key {
    KEY.get_or_init(|| {
        let mut k = [0u8; 32];
        // If the system RNG fails we still must not log the value: a zero key keeps it hashed.
        let _ = aws_lc_rs::rand::fill(&mut k);
        let key = hmac::Key::new(hmac::HMAC_SHA256, &k);
        k.zeroize();
        key
    })
}

/// The tag a value gets in logs: `h:` and 12 hex digits of its keyed hash.
pub fn redaction_tag(bytes: &[u8]) -> String {
    let tag = hmac::sign(key(), bytes);
    format!("h:{}", hex::encode(&tag.as_ref()[..6]))
}

/// Wraps a value that must never appear in logs: phone numbers, names, transcripts, amounts,
/// digest material. `Display` and `Debug` print a keyed hash of the value's `Display` text.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Redacted<T>(pub T);

impl<T: fmt::Display> Redacted<T> {
    fn tag(&self) -> String {
        let mut text = self.0.to_string();
        let tag = redaction_tag(text.as_bytes());
        text.zeroize();
        tag
    }
}

impl<T: fmt::Display> fmt::Display for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.tag())
    }
}

impl<T: fmt::Display> fmt::Debug for Redacted<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redacted({})", self.tag())
    }
}

impl<T: fmt::Display> log::kv::ToValue for Redacted<T> {
    fn to_value(&self) -> log::kv::Value<'_> {
        log::kv::Value::from_display(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_hides_the_value_and_is_stable() {
        let n = "13812345678";
        let a = Redacted(n).to_string();
        assert!(!a.contains("1381") && !a.contains("5678"), "{a}");
        assert!(a.starts_with("h:") && a.len() == 14, "{a}");
        assert_eq!(a, Redacted(n.to_owned()).to_string());
        assert_ne!(a, Redacted("13812345679").to_string());
        assert!(!format!("{:?}", Redacted(n)).contains(n));
    }
}
