//! Erasure by crypto-shredding, with a signed receipt (docs/vault.md, "Erasure").
//!
//! ```text
//! pending ──(1 transaction)──▶ key_destroyed ──(files)──▶ files_deleted ──(1 transaction)──▶ done
//!   data key and encrypted        the subject's vault      calls, turns, file rows, task
//!   number destroyed, number      directory removed,       numbers deleted; receipt signed
//!   added to suppression list     hooks called             and stored; audit entry
//! ```
//! Each arrow is durable before the next starts, and each step is idempotent, so a request
//! interrupted anywhere (crash, power loss, kill) is finished by [`Records::resume_erasures`]
//! at the next start, or by repeating the request. The data key goes first: from that
//! commit on, every file of the subject — including copies in file backups — is ciphertext
//! under a key that no longer exists.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Records, RecordsError, SuppressionSource};
use crate::ids::SubjectKey;
use crate::store::calls::{self, SubjectRowsDeleted};
use crate::store::erasure::{self as rows, ErasureRow, ErasureState};
use crate::store::{audit, subjects};
use crate::time::rfc3339_ms;
use crate::vault::files;
use crate::vault::keys::random;
use crate::vault::phone::E164;
use crate::vault::receipt::{self, RECEIPT_FORMAT};

/// Something outside the vault directory and the database that holds a subject's data and
/// must forget it on erasure — the prompt cache's in-memory index when the speech layer lands
/// (its files live in the subject's vault directory and are removed with it). Implementations
/// must be idempotent: a resumed erasure calls them again.
pub trait ErasureHook: Send + Sync {
    /// Stable name; the receipt reports the hook's count under this key.
    fn name(&self) -> &'static str;
    /// Forgets the subject; returns how many entries were dropped.
    fn erase_subject(&self, subject: &SubjectKey) -> Result<u64, HookError>;
}

/// A hook's failure (the message must not contain personal data).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

/// Whom to erase.
#[derive(Debug, Clone)]
pub enum ErasureTarget {
    /// A phone number (normalised).
    Phone(E164),
    /// A data subject id.
    SubjectId(i64),
}

/// An erasure request.
#[derive(Debug, Clone)]
pub struct ErasureRequest {
    /// Whom.
    pub target: ErasureTarget,
    /// The bank's ticket reference (stored in clear; no personal data).
    pub ticket: String,
    /// Why (stored in clear; no personal data).
    pub reason: String,
    /// Token id or `cli`.
    pub requested_by: String,
    /// The requester's role.
    pub role: Option<String>,
    /// `api` or `cli`.
    pub source: &'static str,
}

/// The result of an erasure.
#[derive(Debug, Clone)]
pub struct ErasureOutcome {
    /// Public id of the request.
    pub request_uid: String,
    /// Whether this call created the request (false: the same ticket and subject existed).
    pub created: bool,
    /// The signed receipt file text.
    pub receipt_file: String,
    /// The receipt object.
    pub receipt: Value,
}

/// Checks a ticket or reason: 1 to `max` characters, no control characters.
fn valid_text(s: &str, max: usize) -> bool {
    let n = s.chars().count();
    (1..=max).contains(&n) && !s.chars().any(char::is_control)
}

/// Appends one erasure step to the audit log, in the step's own transaction.
fn audit_step(
    c: &rusqlite::Connection,
    who: (&str, Option<&str>),
    action: &str,
    uid: &str,
    result: &str,
    detail: Value,
    now: i64,
) -> Result<(), crate::store::StoreError> {
    audit::append(
        c,
        &audit::NewEntry {
            at_ms: now,
            actor: who.0,
            role: who.1,
            action,
            object: Some(&format!("erasure:{uid}")),
            result,
            detail,
        },
    )
    .map(|_| ())
}

fn counts(row: &ErasureRow) -> Map<String, Value> {
    match serde_json::from_str(&row.counts_json) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

impl Records {
    /// Erases a data subject and returns the signed receipt. Idempotent per ticket and
    /// subject: repeating a request returns the first one's receipt (finishing it first if it
    /// was interrupted).
    pub fn erase(&self, req: &ErasureRequest) -> Result<ErasureOutcome, RecordsError> {
        let _one = self.erase_lock.lock().unwrap_or_else(|p| p.into_inner());
        let (id, created) = self.file(req)?;
        let row = self.run_to_done(id)?;
        let (receipt_file, receipt) = self.stored_receipt(&row)?;
        Ok(ErasureOutcome {
            request_uid: row.request_uid,
            created,
            receipt_file,
            receipt,
        })
    }

    /// Records an erasure request without running it (state `pending`, or the existing
    /// request for this ticket and subject); returns its row id. [`Records::erase`] is this
    /// followed by every step.
    pub fn file_erasure(&self, req: &ErasureRequest) -> Result<i64, RecordsError> {
        Ok(self.file(req)?.0)
    }

    fn file(&self, req: &ErasureRequest) -> Result<(i64, bool), RecordsError> {
        if !valid_text(&req.ticket, 128) {
            return Err(RecordsError::Invalid(
                "ticket: 1 to 128 characters, no control characters",
            ));
        }
        if !valid_text(&req.reason, 1000) {
            return Err(RecordsError::Invalid(
                "reason: 1 to 1000 characters, no control characters",
            ));
        }
        let (hash, subject_id) = match &req.target {
            ErasureTarget::Phone(n) => {
                let h = self.subject_key(n).0;
                let id = self
                    .store
                    .read(move |c| subjects::by_hash(c, &h))?
                    .map(|r| r.id);
                (h, id)
            }
            ErasureTarget::SubjectId(id) => {
                let id = *id;
                let row = self
                    .store
                    .read(move |c| subjects::by_id(c, id))?
                    .ok_or(RecordsError::NotFound("data subject"))?;
                (row.subject_hash, Some(row.id))
            }
        };
        let uid = format!("er-{}", hex::encode(random::<8>()?));
        let (ticket, reason, by, role, source, now) = (
            req.ticket.clone(),
            req.reason.clone(),
            req.requested_by.clone(),
            req.role.clone(),
            req.source,
            self.now_ms(),
        );
        let (id, created) = self.store.write(move |c| {
            if let Some(existing) = rows::find(c, &ticket, &hash)? {
                return Ok((existing.id, false));
            }
            let id = rows::insert(
                c,
                &rows::NewErasure {
                    request_uid: &uid,
                    subject_hash: &hash,
                    subject_id,
                    ticket: &ticket,
                    reason: &reason,
                    requested_by: &by,
                    requester_role: role.as_deref(),
                    source,
                    now_ms: now,
                },
            )?;
            audit_step(
                c,
                (&by, role.as_deref()),
                "erasure.request",
                &uid,
                "accepted",
                json!({"ticket": ticket, "source": source, "subject_known": subject_id.is_some()}),
                now,
            )?;
            Ok((id, true))
        })?;
        Ok((id, created))
    }

    fn load(&self, id: i64) -> Result<ErasureRow, RecordsError> {
        self.store
            .read(move |c| rows::by_id(c, id))?
            .ok_or(RecordsError::NotFound("erasure request"))
    }

    fn run_to_done(&self, id: i64) -> Result<ErasureRow, RecordsError> {
        loop {
            if self.erasure_step(id)? == ErasureState::Done {
                let row = self.load(id)?;
                match self.store.checkpoint_truncate() {
                    Ok(c) if c.complete => {}
                    Ok(_) => {
                        log::warn!(request_id = row.request_uid.as_str(); "WAL not truncated after erasure (a reader was active); it is reset at the next checkpoint")
                    }
                    Err(e) => log::warn!(error:% = e; "WAL checkpoint after erasure failed"),
                }
                return Ok(row);
            }
        }
    }

    /// Finishes every erasure left unfinished (after a crash); returns how many.
    pub fn resume_erasures(&self) -> Result<usize, RecordsError> {
        let ids = self.store.read(rows::unfinished)?;
        let _one = self.erase_lock.lock().unwrap_or_else(|p| p.into_inner());
        for &id in &ids {
            let row = self.run_to_done(id)?;
            log::warn!(request_id = row.request_uid.as_str(); "interrupted erasure resumed and finished");
        }
        Ok(ids.len())
    }

    /// Performs one state transition of an erasure request and returns the new state (`Done`
    /// stays `Done`). Public so that tests can stop between steps, as a crash would.
    pub fn erasure_step(&self, id: i64) -> Result<ErasureState, RecordsError> {
        let row = self.load(id)?;
        let now = self.now_ms();
        match row.state {
            ErasureState::Pending => {
                let hash = row.subject_hash;
                let uid = row.request_uid.clone();
                let (by, role) = (row.requested_by.clone(), row.requester_role.clone());
                self.store.write(move |c| {
                    let subject = subjects::by_hash(c, &hash)?;
                    let before = match &subject {
                        None => "unknown",
                        Some(s) if s.wrapped_key.is_some() => "active",
                        Some(_) => "already_erased",
                    };
                    let mut key_ids = Vec::new();
                    if let Some(s) = &subject
                        && let Some(k) = subjects::shred(c, s.id, now)?
                    {
                        key_ids.push(k);
                    }
                    subjects::suppress(
                        c,
                        &hash,
                        SuppressionSource::Erasure.as_str(),
                        Some(&format!("erasure {uid}")),
                        now,
                    )?;
                    let keys = serde_json::to_string(&key_ids).unwrap_or_else(|_| "[]".into());
                    let counts = json!({"subject_state_before": before}).to_string();
                    rows::advance(
                        c,
                        id,
                        ErasureState::Pending,
                        ErasureState::KeyDestroyed,
                        Some(&keys),
                        Some(&counts),
                        None,
                        now,
                    )?;
                    audit_step(
                        c,
                        (&by, role.as_deref()),
                        "erasure.key_destroyed",
                        &uid,
                        "ok",
                        json!({"keys_destroyed": key_ids, "subject_state_before": before}),
                        now,
                    )?;
                    Ok(())
                })?;
                Ok(ErasureState::KeyDestroyed)
            }
            ErasureState::KeyDestroyed => {
                let subject = SubjectKey(row.subject_hash);
                let found = files::count_subject_files(&self.data_dir, &subject)
                    .map_err(RecordsError::io("listing a subject's files"))?;
                files::remove_subject_dir(&self.data_dir, &subject)
                    .map_err(RecordsError::io("removing a subject's files"))?;
                let mut c = counts(&row);
                for h in &self.hooks {
                    let n = h.erase_subject(&subject).map_err(|e| RecordsError::Hook {
                        name: h.name(),
                        message: e.0,
                    })?;
                    let prev = c.get(h.name()).and_then(Value::as_u64).unwrap_or(0);
                    c.insert(h.name().to_owned(), json!(prev + n));
                }
                let counts = Value::Object(c).to_string();
                self.store.write(move |conn| {
                    rows::advance(
                        conn,
                        id,
                        ErasureState::KeyDestroyed,
                        ErasureState::FilesDeleted,
                        None,
                        Some(&counts),
                        Some(found as i64),
                        now,
                    )
                    .map(|_| ())
                })?;
                Ok(ErasureState::FilesDeleted)
            }
            ErasureState::FilesDeleted => {
                let signer = Arc::clone(&self.signer);
                let hook_names: Vec<&'static str> = self.hooks.iter().map(|h| h.name()).collect();
                let (uid, files_found) = (row.request_uid.clone(), row.files_found.unwrap_or(0));
                let deleted = self.store.write_with(
                    move |c| -> Result<SubjectRowsDeleted, RecordsError> {
                        let deleted = match row.subject_id {
                            Some(sid) => calls::delete_subject_rows(c, sid)?,
                            None => SubjectRowsDeleted::default(),
                        };
                        let receipt =
                            build_receipt(&row, &deleted, &hook_names, signer.key_id(), now);
                        let body = receipt::canonical_json(&receipt)?;
                        let (file, sig) = signer.sign(&receipt)?;
                        rows::insert_receipt(
                            c,
                            &rows::ReceiptRow {
                                request_id: id,
                                receipt_json: body,
                                signature: sig,
                                signing_key_id: signer.key_id().to_owned(),
                                created_at_ms: now,
                            },
                        )?;
                        let counts = receipt["deleted"].to_string();
                        rows::advance(
                            c,
                            id,
                            ErasureState::FilesDeleted,
                            ErasureState::Done,
                            None,
                            Some(&counts),
                            None,
                            now,
                        )?;
                        let digest =
                            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, file.as_bytes());
                        audit_step(
                            c,
                            (&row.requested_by, row.requester_role.as_deref()),
                            "erasure.done",
                            &row.request_uid,
                            "ok",
                            json!({
                                "deleted": receipt["deleted"],
                                "receipt_sha256": hex::encode(digest.as_ref()),
                            }),
                            now,
                        )?;
                        Ok(deleted)
                    },
                )?;
                log::info!(
                    request_id = uid.as_str(),
                    calls = deleted.calls,
                    turns = deleted.turns,
                    task_numbers = deleted.task_numbers,
                    files = files_found;
                    "erasure finished"
                );
                Ok(ErasureState::Done)
            }
            ErasureState::Done => Ok(ErasureState::Done),
        }
    }

    /// The signed receipt file of a finished request.
    pub fn stored_receipt(&self, row: &ErasureRow) -> Result<(String, Value), RecordsError> {
        let id = row.id;
        let r = self
            .store
            .read(move |c| rows::receipt(c, id))?
            .ok_or(RecordsError::NotFound("receipt"))?;
        let receipt: Value = serde_json::from_str(&r.receipt_json)
            .map_err(|_| RecordsError::Inconsistent("receipt JSON"))?;
        let file = receipt::file_text(&receipt, &r.signing_key_id, &r.signature)?;
        Ok((file, receipt))
    }
}

fn opt_time(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |m| Value::String(rfc3339_ms(m)))
}

fn build_receipt(
    row: &ErasureRow,
    deleted: &SubjectRowsDeleted,
    hook_names: &[&'static str],
    key_id: &str,
    now: i64,
) -> Value {
    let c = counts(row);
    let mut d = Map::new();
    d.insert("calls".into(), json!(deleted.calls));
    d.insert("turns".into(), json!(deleted.turns));
    d.insert("recordings".into(), json!(deleted.recordings));
    d.insert("transcripts".into(), json!(deleted.transcripts));
    d.insert("task_numbers".into(), json!(deleted.task_numbers));
    d.insert("files".into(), json!(row.files_found.unwrap_or(0)));
    for name in hook_names {
        d.insert((*name).into(), c.get(*name).cloned().unwrap_or(json!(0)));
    }
    let keys: Value = serde_json::from_str(&row.key_ids_json).unwrap_or_else(|_| json!([]));
    json!({
        "format": RECEIPT_FORMAT,
        "request_id": row.request_uid,
        "ticket": row.ticket,
        "reason": row.reason,
        "requested_by": {"actor": row.requested_by, "role": row.requester_role, "source": row.source},
        "subject_hash": hex::encode(row.subject_hash),
        "subject_state_before": c.get("subject_state_before").cloned().unwrap_or(json!("unknown")),
        "deleted": Value::Object(d),
        "keys_destroyed": keys,
        "suppressed": true,
        "started_at": rfc3339_ms(row.started_at_ms),
        "key_destroyed_at": opt_time(row.key_destroyed_at_ms),
        "finished_at": rfc3339_ms(now),
        "appliance": {"software": format!("vaultcall {}", env!("CARGO_PKG_VERSION")), "receipt_key_id": key_id},
    })
}
