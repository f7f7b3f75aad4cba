//! Encrypted storage and keys: the master key, the key hierarchy below it, the chunked AEAD
//! file format and its streaming readers and writers, phone-number normalisation, and signed
//! deletion receipts. docs/vault.md is the specification (format, keys, normalisation,
//! receipts) for auditors.
//!
//! This module depends only on plain types (ids, bytes, `std::io`); composing it with the
//! database — subjects, recordings, erasure, retention, rotation — is [`crate::records`].

pub mod files;
pub mod format;
pub mod keys;
mod master_key;
pub mod phone;
pub mod receipt;
pub mod stream;

pub use master_key::{CREDENTIAL_NAME, MasterKey, VaultError, create_key};
