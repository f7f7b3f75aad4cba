//! Encrypted storage and keys. This module holds the master key-encryption key; the chunked
//! AEAD file format, per-subject data keys, erasure and receipts build on it.

mod master_key;

pub use master_key::{CREDENTIAL_NAME, MasterKey, VaultError};
