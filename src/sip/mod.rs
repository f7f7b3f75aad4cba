//! SIP user agent (sans-IO core): message framing and normalisation in front of rsip, the
//! out-of-dialog request policy, and — built on these — transactions, dialogs, authentication
//! and registration.

pub mod auth;
pub mod dialog;
pub mod message;
pub mod outcome;
pub mod registration;
pub mod sdp;
pub mod syntax;
pub mod transaction;
pub mod uas;

/// Identifiers for tags, branches, Call-IDs and client nonces, from an injected seed
/// (production seeds it from the system CSPRNG; tests from a constant). xorshift64* is not a
/// CSPRNG, but these values need uniqueness, not secrecy.
#[derive(Debug, Clone)]
pub struct IdGen(u64);

impl IdGen {
    /// A generator from a seed (0 is replaced: xorshift needs a non-zero state).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    /// 64 fresh bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A token of 16 hex digits.
    pub fn token(&mut self) -> String {
        format!("{:016x}", self.next_u64())
    }

    /// An RFC 3261 branch (magic cookie + 16 hex digits).
    pub fn branch(&mut self) -> String {
        format!("{}{}", transaction::MAGIC_COOKIE, self.token())
    }
}
