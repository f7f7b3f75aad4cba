//! Admin token rows. Secrets are never stored, only a salt and a keyed hash of the secret.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;
use crate::ids::TokenId;

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    /// Public id.
    pub id: TokenId,
    /// Operator-chosen label.
    pub name: String,
    /// Role name (`admin`, `operator`, `auditor`, `compliance`).
    pub role: String,
    /// Per-token salt.
    pub salt: [u8; 16],
    /// HMAC-SHA-256(salt, secret).
    pub secret_hash: [u8; 32],
    /// Creation time.
    pub created_at_ms: i64,
    /// Who created it (token id or `cli`).
    pub created_by: Option<String>,
    /// Optional expiry.
    pub expires_at_ms: Option<i64>,
    /// Last successful use.
    pub last_used_at_ms: Option<i64>,
    /// Revocation time.
    pub revoked_at_ms: Option<i64>,
}

impl TokenRow {
    /// Usable at `now_ms`: not revoked and not expired.
    pub fn is_active(&self, now_ms: i64) -> bool {
        self.revoked_at_ms.is_none() && self.expires_at_ms.is_none_or(|e| e > now_ms)
    }
}

const COLUMNS: &str = "id, name, role, salt, secret_hash, created_at_ms, created_by, expires_at_ms, last_used_at_ms, revoked_at_ms";

/// A fixed-length blob column (the schema's CHECK constraints guarantee the length).
fn fixed<const N: usize>(r: &Row<'_>, i: usize) -> rusqlite::Result<[u8; N]> {
    let v: Vec<u8> = r.get(i)?;
    v.try_into().map_err(|_| {
        rusqlite::Error::InvalidColumnType(
            i,
            "blob of unexpected length".into(),
            rusqlite::types::Type::Blob,
        )
    })
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<TokenRow> {
    Ok(TokenRow {
        id: TokenId(r.get(0)?),
        name: r.get(1)?,
        role: r.get(2)?,
        salt: fixed(r, 3)?,
        secret_hash: fixed(r, 4)?,
        created_at_ms: r.get(5)?,
        created_by: r.get(6)?,
        expires_at_ms: r.get(7)?,
        last_used_at_ms: r.get(8)?,
        revoked_at_ms: r.get(9)?,
    })
}

/// Inserts a new token.
pub fn insert(c: &Connection, t: &TokenRow) -> Result<(), StoreError> {
    c.execute(
        &format!(
            "INSERT INTO admin_tokens ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ),
        params![
            t.id.0,
            t.name,
            t.role,
            &t.salt[..],
            &t.secret_hash[..],
            t.created_at_ms,
            t.created_by,
            t.expires_at_ms,
            t.last_used_at_ms,
            t.revoked_at_ms
        ],
    )?;
    Ok(())
}

/// One token by id.
pub fn get(c: &Connection, id: &str) -> Result<Option<TokenRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS} FROM admin_tokens WHERE id = ?1"),
        [id],
        from_row,
    )
    .optional()?)
}

/// All tokens, oldest first.
pub fn list(c: &Connection) -> Result<Vec<TokenRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS} FROM admin_tokens ORDER BY created_at_ms, id"
    ))?;
    let rows = st.query_map([], from_row)?.collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Revokes a token; returns false if it does not exist or was revoked already.
pub fn revoke(c: &Connection, id: &str, now_ms: i64) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE admin_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL",
        params![id, now_ms],
    )?;
    Ok(n == 1)
}

/// Records a successful use (at most once a minute per token, to spare the writer).
pub fn touch(c: &Connection, id: &str, now_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE admin_tokens SET last_used_at_ms = ?2
         WHERE id = ?1 AND (last_used_at_ms IS NULL OR last_used_at_ms < ?2 - 60000)",
        params![id, now_ms],
    )?;
    Ok(())
}

/// Active tokens with this role.
pub fn count_active(c: &Connection, role: &str, now_ms: i64) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT count(*) FROM admin_tokens WHERE role = ?1 AND revoked_at_ms IS NULL
         AND (expires_at_ms IS NULL OR expires_at_ms > ?2)",
        params![role, now_ms],
        |r| r.get(0),
    )?)
}
