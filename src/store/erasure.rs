//! Erasure requests and their signed deletion receipts.
//!
//! A request moves `pending` → `key_destroyed` → `files_deleted` → `done`; each transition is
//! one durable transaction, so an erasure interrupted at any point resumes where it stopped.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// States of an erasure request, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErasureState {
    /// Recorded, nothing destroyed yet.
    Pending,
    /// The data key is destroyed and the number suppressed.
    KeyDestroyed,
    /// The subject's files are removed.
    FilesDeleted,
    /// Rows deleted and the receipt signed.
    Done,
}

impl ErasureState {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::KeyDestroyed => "key_destroyed",
            Self::FilesDeleted => "files_deleted",
            Self::Done => "done",
        }
    }

    /// From the stored text.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "key_destroyed" => Self::KeyDestroyed,
            "files_deleted" => Self::FilesDeleted,
            "done" => Self::Done,
            _ => return None,
        })
    }
}

/// An `erasure_requests` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureRow {
    /// Row id.
    pub id: i64,
    /// Public id (`er-…`).
    pub request_uid: String,
    /// The subject's keyed hash.
    pub subject_hash: [u8; 32],
    /// The subject's row, if one existed.
    pub subject_id: Option<i64>,
    /// The bank's ticket reference.
    pub ticket: String,
    /// Why.
    pub reason: String,
    /// Token id or `cli`.
    pub requested_by: String,
    /// The requester's role.
    pub requester_role: Option<String>,
    /// `api` or `cli`.
    pub source: String,
    /// Where it stands.
    pub state: ErasureState,
    /// Data key ids destroyed (JSON array).
    pub key_ids_json: String,
    /// Counts gathered so far (JSON object).
    pub counts_json: String,
    /// Files found in the subject's directory on the first pass.
    pub files_found: Option<i64>,
    /// Start.
    pub started_at_ms: i64,
    /// When the key was destroyed.
    pub key_destroyed_at_ms: Option<i64>,
    /// End.
    pub finished_at_ms: Option<i64>,
}

const COLS: &str = "id, request_uid, subject_hash, subject_id, ticket, reason, requested_by, requester_role, source, state, key_ids_json, counts_json, files_found, started_at_ms, key_destroyed_at_ms, finished_at_ms";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ErasureRow> {
    let hash: Vec<u8> = r.get(2)?;
    let state: String = r.get(9)?;
    Ok(ErasureRow {
        id: r.get(0)?,
        request_uid: r.get(1)?,
        subject_hash: hash
            .try_into()
            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(2, 0))?,
        subject_id: r.get(3)?,
        ticket: r.get(4)?,
        reason: r.get(5)?,
        requested_by: r.get(6)?,
        requester_role: r.get(7)?,
        source: r.get(8)?,
        state: ErasureState::parse(&state).ok_or(rusqlite::Error::IntegralValueOutOfRange(9, 0))?,
        key_ids_json: r.get(10)?,
        counts_json: r.get(11)?,
        files_found: r.get(12)?,
        started_at_ms: r.get(13)?,
        key_destroyed_at_ms: r.get(14)?,
        finished_at_ms: r.get(15)?,
    })
}

/// A request to record.
#[derive(Debug, Clone)]
pub struct NewErasure<'a> {
    /// Public id.
    pub request_uid: &'a str,
    /// Subject hash.
    pub subject_hash: &'a [u8; 32],
    /// Subject row, if any.
    pub subject_id: Option<i64>,
    /// Ticket.
    pub ticket: &'a str,
    /// Reason.
    pub reason: &'a str,
    /// Token id or `cli`.
    pub requested_by: &'a str,
    /// Role.
    pub requester_role: Option<&'a str>,
    /// `api` or `cli`.
    pub source: &'a str,
    /// Now.
    pub now_ms: i64,
}

/// Inserts a pending request; returns its id.
pub fn insert(c: &Connection, e: &NewErasure<'_>) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO erasure_requests (request_uid, subject_hash, subject_id, ticket, reason, requested_by, requester_role, source, state, started_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9)",
        params![e.request_uid, &e.subject_hash[..], e.subject_id, e.ticket, e.reason, e.requested_by, e.requester_role, e.source, e.now_ms],
    )?;
    Ok(c.last_insert_rowid())
}

/// The request for this ticket and subject, if any (requests are idempotent per pair).
pub fn find(
    c: &Connection,
    ticket: &str,
    hash: &[u8; 32],
) -> Result<Option<ErasureRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {COLS} FROM erasure_requests WHERE ticket = ?1 AND subject_hash = ?2"),
        params![ticket, &hash[..]],
        row,
    )
    .optional()?)
}

/// A request by public id.
pub fn by_uid(c: &Connection, uid: &str) -> Result<Option<ErasureRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {COLS} FROM erasure_requests WHERE request_uid = ?1"),
        [uid],
        row,
    )
    .optional()?)
}

/// A request by row id.
pub fn by_id(c: &Connection, id: i64) -> Result<Option<ErasureRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {COLS} FROM erasure_requests WHERE id = ?1"),
        [id],
        row,
    )
    .optional()?)
}

/// Requests not yet done, oldest first.
pub fn unfinished(c: &Connection) -> Result<Vec<i64>, StoreError> {
    let mut st = c.prepare("SELECT id FROM erasure_requests WHERE state != 'done' ORDER BY id")?;
    let ids = st
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

/// Whether an erasure of this subject hash has not reached `done`.
pub fn unfinished_for(c: &Connection, hash: &[u8; 32]) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT 1 FROM erasure_requests WHERE subject_hash = ?1 AND state != 'done' LIMIT 1",
        [&hash[..]],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// Requests with id greater than `after`, oldest first.
pub fn page(c: &Connection, after: i64, limit: usize) -> Result<Vec<ErasureRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {COLS} FROM erasure_requests WHERE id > ?1 ORDER BY id LIMIT ?2"
    ))?;
    let rows = st
        .query_map(params![after, limit as i64], row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Moves a request to `to` if it is in `from`, setting the given columns.
#[allow(clippy::too_many_arguments)]
pub fn advance(
    c: &Connection,
    id: i64,
    from: ErasureState,
    to: ErasureState,
    key_ids_json: Option<&str>,
    counts_json: Option<&str>,
    files_found: Option<i64>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE erasure_requests SET state = ?3,
            key_ids_json = coalesce(?4, key_ids_json),
            counts_json = coalesce(?5, counts_json),
            files_found = coalesce(files_found, ?6),
            key_destroyed_at_ms = CASE WHEN ?3 = 'key_destroyed' THEN ?7 ELSE key_destroyed_at_ms END,
            finished_at_ms = CASE WHEN ?3 = 'done' THEN ?7 ELSE finished_at_ms END
         WHERE id = ?1 AND state = ?2",
        params![id, from.as_str(), to.as_str(), key_ids_json, counts_json, files_found, now_ms],
    )?;
    Ok(n == 1)
}

/// A stored receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptRow {
    /// The request.
    pub request_id: i64,
    /// Canonical JSON of the receipt object.
    pub receipt_json: String,
    /// Ed25519 signature.
    pub signature: Vec<u8>,
    /// Signing key id.
    pub signing_key_id: String,
    /// When.
    pub created_at_ms: i64,
}

/// Stores a receipt.
pub fn insert_receipt(c: &Connection, r: &ReceiptRow) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO deletion_receipts (request_id, receipt_json, signature, signing_key_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5)",
        params![r.request_id, r.receipt_json, r.signature, r.signing_key_id, r.created_at_ms],
    )?;
    Ok(())
}

/// The receipt of a request.
pub fn receipt(c: &Connection, request_id: i64) -> Result<Option<ReceiptRow>, StoreError> {
    Ok(c.query_row(
        "SELECT request_id, receipt_json, signature, signing_key_id, created_at_ms FROM deletion_receipts WHERE request_id = ?1",
        [request_id],
        |r| {
            Ok(ReceiptRow {
                request_id: r.get(0)?,
                receipt_json: r.get(1)?,
                signature: r.get(2)?,
                signing_key_id: r.get(3)?,
                created_at_ms: r.get(4)?,
            })
        },
    )
    .optional()?)
}
