//! The append-only, hash-chained audit log.
//!
//! Each entry's hash is SHA-256 over a domain tag, the previous entry's hash and a canonical,
//! length-prefixed encoding of the entry (its id included), so editing, deleting, inserting or
//! reordering entries breaks the chain at a point [`verify`] reports. The first entry's previous
//! hash is 32 zero bytes. SQL triggers refuse UPDATE and DELETE to catch our own bugs; the chain
//! is what catches someone with write access to the file.

use aws_lc_rs::digest;
use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::ids::AuditId;

const DOMAIN: &[u8] = b"vaultcall-audit-v1";

/// An entry to append. `detail` must never contain personal data (use keyed hashes).
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// Wall time.
    pub at_ms: i64,
    /// Token id, `cli` or `system`.
    pub actor: &'a str,
    /// The actor's role, if a token.
    pub role: Option<&'a str>,
    /// What was done (`token.create`, `erasure.request`, …).
    pub action: &'a str,
    /// On which object (`token:ab12…`, `call:42`).
    pub object: Option<&'a str>,
    /// `ok`, `denied`, `failed`, …
    pub result: &'a str,
    /// Extra facts as JSON.
    pub detail: serde_json::Value,
}

/// A stored entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Entry {
    /// Position in the log.
    pub id: AuditId,
    /// Wall time.
    pub at_ms: i64,
    /// Who.
    pub actor: String,
    /// Their role.
    pub role: Option<String>,
    /// What.
    pub action: String,
    /// On what.
    pub object: Option<String>,
    /// Outcome.
    pub result: String,
    /// Extra facts (JSON text).
    pub detail_json: String,
    /// Previous entry's hash (hex in JSON).
    #[serde(serialize_with = "as_hex")]
    pub prev_hash: Vec<u8>,
    /// This entry's hash (hex in JSON).
    #[serde(serialize_with = "as_hex")]
    pub hash: Vec<u8>,
}

fn as_hex<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(v))
}

fn put(buf: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        Some(b) => {
            buf.extend_from_slice(&(b.len() as u32).to_be_bytes());
            buf.extend_from_slice(b);
        }
        None => buf.extend_from_slice(&u32::MAX.to_be_bytes()),
    }
}

/// The chain hash of one entry.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev: &[u8],
    id: i64,
    at_ms: i64,
    actor: &str,
    role: Option<&str>,
    action: &str,
    object: Option<&str>,
    result: &str,
    detail_json: &str,
) -> [u8; 32] {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(DOMAIN);
    put(&mut buf, Some(prev));
    put(&mut buf, Some(&id.to_be_bytes()));
    put(&mut buf, Some(&at_ms.to_be_bytes()));
    put(&mut buf, Some(actor.as_bytes()));
    put(&mut buf, role.map(str::as_bytes));
    put(&mut buf, Some(action.as_bytes()));
    put(&mut buf, object.map(str::as_bytes));
    put(&mut buf, Some(result.as_bytes()));
    put(&mut buf, Some(detail_json.as_bytes()));
    let d = digest::digest(&digest::SHA256, &buf);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Appends an entry in the caller's transaction.
pub fn append(c: &Connection, e: &NewEntry<'_>) -> Result<AuditId, StoreError> {
    let last: Option<(i64, Vec<u8>)> = c
        .query_row(
            "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (id, prev) = match last {
        Some((id, h)) => (id + 1, h),
        None => (1, vec![0u8; 32]),
    };
    let detail = e.detail.to_string();
    let hash = entry_hash(
        &prev, id, e.at_ms, e.actor, e.role, e.action, e.object, e.result, &detail,
    );
    c.execute(
        "INSERT INTO audit_log (id, at_ms, actor, role, action, object, result, detail_json, prev_hash, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![id, e.at_ms, e.actor, e.role, e.action, e.object, e.result, detail, prev, &hash[..]],
    )?;
    Ok(AuditId(id))
}

/// Entries with id greater than `after`, oldest first, at most `limit`.
pub fn page(c: &Connection, after: i64, limit: usize) -> Result<Vec<Entry>, StoreError> {
    let mut st = c.prepare(
        "SELECT id, at_ms, actor, role, action, object, result, detail_json, prev_hash, hash
         FROM audit_log WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![after, limit as i64], entry_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The last entry's id and hash (the head of the chain), if any.
pub fn head(c: &Connection) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
    Ok(c.query_row(
        "SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()?)
}

/// Entries with id greater than `after` and `at_ms >= since_ms`, oldest first, at most
/// `limit` (for exports).
pub fn page_since(
    c: &Connection,
    after: i64,
    since_ms: i64,
    limit: usize,
) -> Result<Vec<Entry>, StoreError> {
    let mut st = c.prepare(
        "SELECT id, at_ms, actor, role, action, object, result, detail_json, prev_hash, hash
         FROM audit_log WHERE id > ?1 AND at_ms >= ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = st
        .query_map(params![after, since_ms, limit as i64], entry_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn entry_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    Ok(Entry {
        id: AuditId(r.get(0)?),
        at_ms: r.get(1)?,
        actor: r.get(2)?,
        role: r.get(3)?,
        action: r.get(4)?,
        object: r.get(5)?,
        result: r.get(6)?,
        detail_json: r.get(7)?,
        prev_hash: r.get(8)?,
        hash: r.get(9)?,
    })
}

/// A head recorded earlier (in the journal): entry `id` had hash `hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Entry id.
    pub id: i64,
    /// Its hash.
    pub hash: [u8; 32],
}

impl Checkpoint {
    /// Parses `ID:HEX` as written in the checkpoint log line.
    pub fn parse(s: &str) -> Option<Self> {
        let (id, h) = s.split_once(':')?;
        let mut hash = [0u8; 32];
        hex::decode_to_slice(h.trim(), &mut hash).ok()?;
        Some(Self {
            id: id.trim().parse().ok()?,
            hash,
        })
    }
}

/// How a checkpoint compares with the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointVerdict {
    /// The entry exists with that hash.
    Matches,
    /// The entry exists with another hash: the chain was rewritten from there or earlier.
    Differs,
    /// No such entry: the log was cut back (entries deleted from the end).
    Missing,
}

/// Compares a checkpoint with the stored chain.
pub fn check_checkpoint(c: &Connection, cp: &Checkpoint) -> Result<CheckpointVerdict, StoreError> {
    let h: Option<Vec<u8>> = c
        .query_row("SELECT hash FROM audit_log WHERE id = ?1", [cp.id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match h {
        None => CheckpointVerdict::Missing,
        Some(h) if h[..] == cp.hash[..] => CheckpointVerdict::Matches,
        Some(_) => CheckpointVerdict::Differs,
    })
}

/// Where the chain first breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Break {
    /// An entry's stored hash does not match its content (edited).
    Content {
        /// The entry.
        id: i64,
    },
    /// An entry does not link to the one before it (deleted, inserted or reordered).
    Link {
        /// The entry whose `prev_hash` is wrong.
        id: i64,
        /// The id expected at this position.
        expected_id: i64,
    },
}

/// Walks the whole chain; `Ok(n)` is the number of entries verified.
pub fn verify(c: &Connection) -> Result<Result<u64, Break>, StoreError> {
    let mut prev = vec![0u8; 32];
    let mut expected_id = 1;
    let mut n = 0;
    loop {
        let batch = page(c, expected_id - 1, 1000)?;
        if batch.is_empty() {
            return Ok(Ok(n));
        }
        for e in batch {
            if e.id.0 != expected_id || e.prev_hash != prev {
                return Ok(Err(Break::Link {
                    id: e.id.0,
                    expected_id,
                }));
            }
            let h = entry_hash(
                &e.prev_hash,
                e.id.0,
                e.at_ms,
                &e.actor,
                e.role.as_deref(),
                &e.action,
                e.object.as_deref(),
                &e.result,
                &e.detail_json,
            );
            if h[..] != e.hash[..] {
                return Ok(Err(Break::Content { id: e.id.0 }));
            }
            prev = e.hash;
            expected_id += 1;
            n += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrate::migrate(&mut c, super::super::migrate::MIGRATIONS, 1).unwrap();
        for i in 0..5 {
            append(
                &c,
                &NewEntry {
                    at_ms: i,
                    actor: "tok1",
                    role: Some("admin"),
                    action: "token.create",
                    object: Some(&format!("token:{i}")),
                    result: "ok",
                    detail: serde_json::json!({"n": i}),
                },
            )
            .unwrap();
        }
        // Simulate an attacker with write access: triggers are theirs to drop.
        c.execute_batch("DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete;")
            .unwrap();
        c
    }

    #[test]
    fn intact_chain_verifies() {
        assert_eq!(verify(&db()).unwrap(), Ok(5));
    }

    #[test]
    fn edit_delete_insert_and_reorder_are_found() {
        let c = db();
        c.execute("UPDATE audit_log SET result = 'denied' WHERE id = 3", [])
            .unwrap();
        assert_eq!(verify(&c).unwrap(), Err(Break::Content { id: 3 }));

        let c = db();
        c.execute("DELETE FROM audit_log WHERE id = 2", []).unwrap();
        assert_eq!(
            verify(&c).unwrap(),
            Err(Break::Link {
                id: 3,
                expected_id: 2
            })
        );

        let c = db();
        c.execute("DELETE FROM audit_log WHERE id = 5", []).unwrap();
        c.execute(
            "INSERT INTO audit_log SELECT 5, at_ms, actor, role, action, object, result, detail_json, prev_hash, hash FROM audit_log WHERE id = 4",
            [],
        )
        .unwrap();
        assert!(verify(&c).unwrap().is_err());

        let c = db();
        c.execute_batch(
            "UPDATE audit_log SET id = 100 WHERE id = 2; UPDATE audit_log SET id = 2 WHERE id = 3; UPDATE audit_log SET id = 3 WHERE id = 100;",
        )
        .unwrap();
        assert_eq!(
            verify(&c).unwrap(),
            Err(Break::Link {
                id: 2,
                expected_id: 2
            })
        );
    }

    #[test]
    fn checkpoints_catch_a_rewritten_or_shortened_chain() {
        let c = db();
        let (id, hash) = head(&c).unwrap().unwrap();
        let cp = Checkpoint::parse(&format!("{id}:{}", hex::encode(&hash))).unwrap();
        assert_eq!(
            check_checkpoint(&c, &cp).unwrap(),
            CheckpointVerdict::Matches
        );
        // Someone with write access rewrites entry 5 and recomputes its hash: the chain
        // verifies, the checkpoint does not.
        let e = page(&c, 4, 1).unwrap().remove(0);
        let forged = entry_hash(
            &e.prev_hash,
            5,
            e.at_ms,
            &e.actor,
            e.role.as_deref(),
            "token.revoke",
            e.object.as_deref(),
            &e.result,
            &e.detail_json,
        );
        c.execute(
            "UPDATE audit_log SET action = 'token.revoke', hash = ?1 WHERE id = 5",
            [&forged[..]],
        )
        .unwrap();
        assert_eq!(verify(&c).unwrap(), Ok(5));
        assert_eq!(
            check_checkpoint(&c, &cp).unwrap(),
            CheckpointVerdict::Differs
        );
        c.execute("DELETE FROM audit_log WHERE id = 5", []).unwrap();
        assert_eq!(
            verify(&c).unwrap(),
            Ok(4),
            "a cut tail is invisible to the chain alone"
        );
        assert_eq!(
            check_checkpoint(&c, &cp).unwrap(),
            CheckpointVerdict::Missing
        );
        assert!(Checkpoint::parse("5:zz").is_none());
        assert_eq!(page_since(&c, 0, 3, 10).unwrap().len(), 1);
    }

    #[test]
    fn triggers_refuse_changes() {
        let mut c = Connection::open_in_memory().unwrap();
        super::super::migrate::migrate(&mut c, super::super::migrate::MIGRATIONS, 1).unwrap();
        let e = NewEntry {
            at_ms: 1,
            actor: "cli",
            role: None,
            action: "x",
            object: None,
            result: "ok",
            detail: serde_json::json!({}),
        };
        append(&c, &e).unwrap();
        assert!(c.execute("DELETE FROM audit_log", []).is_err());
        assert!(c.execute("UPDATE audit_log SET action = 'y'", []).is_err());
    }
}
