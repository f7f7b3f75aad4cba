//! Identifier newtypes, so a call id can never be passed where a task id is expected.
//!
//! Database row ids are `i64` (SQLite's rowid); public ids shown in APIs are the same numbers.
//! [`TokenId`] is text because it is part of the bearer token the operator holds.

use std::fmt;

macro_rules! row_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }
    };
}

row_id!(
    /// One call attempt (a SIP dialog plus its media and script run).
    CallId
);
row_id!(
    /// One outbound task (campaign): a script, a number list and dialing rules.
    TaskId
);
row_id!(
    /// One number imported into a task.
    NumberId
);
row_id!(
    /// One immutable, published version of a call script.
    ScriptVersionId
);
row_id!(
    /// One recording file in the vault.
    RecordingId
);
row_id!(
    /// One entry of the audit log.
    AuditId
);

/// The keyed hash (HMAC-SHA-256) of a data subject's phone number: how the store finds a
/// person's rows without keeping the number in clear.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SubjectKey(pub [u8; 32]);

impl SubjectKey {
    /// Lower-case hex, as used in directory shards and receipts.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for SubjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Already a keyed hash, but keep log lines short.
        write!(f, "SubjectKey({}…)", &self.to_hex()[..12])
    }
}

/// The public identifier of an admin API token (the part before the secret).
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TokenId(pub String);

impl fmt::Display for TokenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
