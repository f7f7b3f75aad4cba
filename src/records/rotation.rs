//! Master-key rotation: re-wraps every data key and appliance key under a new master key.
//! No file is re-encrypted — files are encrypted under keys derived from the data keys, which
//! do not change.
//!
//! Safe to interrupt: the rotation is recorded in `key_rotations` first; keys are re-wrapped in
//! batches, each one transaction that changes a row only if it is still wrapped by the old key
//! (compare-and-set on `master_key_id`), so a resumed run picks up exactly the rows left. The
//! key file is replaced only when no key is wrapped by the old key any more, and the
//! rotation is marked done after that, so every interruption point is recognised on the next
//! run (see [`plan`]). While a rotation is open, the daemon and the other commands refuse to
//! use the database.

use serde_json::json;

use super::RecordsError;
use crate::store::{Store, audit, subjects};
use crate::vault::MasterKey;
use crate::vault::keys::{KeyWrapper, WrapContext};

/// Where a rotation stands, given the key the configuration loads and the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing open: start a rotation from the loaded key to the new key.
    Start,
    /// Open, the loaded key is the old one: continue re-wrapping with the new key file.
    Continue {
        /// Rotation row id.
        id: i64,
        /// The id the new key must have.
        new_master_key_id: String,
    },
    /// Open, and the loaded key is already the new one (the file was replaced, the run
    /// stopped before marking it done): only finish.
    Finish {
        /// Rotation row id.
        id: i64,
    },
}

/// Decides what to do from the open rotation (if any) and the loaded key's id.
pub fn plan(store: &Store, loaded_id: &str) -> Result<Plan, RecordsError> {
    let open = store.read(subjects::open_rotation)?;
    match open {
        None => Ok(Plan::Start),
        Some(r) if r.old_master_key_id == loaded_id => Ok(Plan::Continue {
            id: r.id,
            new_master_key_id: r.new_master_key_id,
        }),
        Some(r) if r.new_master_key_id == loaded_id => Ok(Plan::Finish { id: r.id }),
        Some(r) => Err(RecordsError::RotationInProgress {
            old: r.old_master_key_id,
            new: r.new_master_key_id,
        }),
    }
}

/// Records the start of a rotation from `old` to `new`; returns its id.
pub fn start(
    store: &Store,
    old: &MasterKey,
    new: &MasterKey,
    now_ms: i64,
) -> Result<i64, RecordsError> {
    if old.id() == new.id() {
        return Err(RecordsError::Invalid(
            "the new master key is the current one",
        ));
    }
    super::check_master_key(store, old.id())?;
    let (o, n) = (old.id().to_owned(), new.id().to_owned());
    Ok(store.write(move |c| {
        let id = subjects::start_rotation(c, &o, &n, now_ms)?;
        audit::append(
            c,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: "cli",
                role: None,
                action: "keys.rotate.start",
                object: Some(&format!("rotation:{id}")),
                result: "ok",
                detail: json!({"old_master_key_id": o, "new_master_key_id": n}),
            },
        )?;
        Ok(id)
    })?)
}

/// Re-wraps every key still wrapped by `old` under `new`, `batch` keys per transaction,
/// calling `progress(done_so_far, total)` after each batch. `max_batches` stops early (as an
/// interruption would); `None` runs to the end. Returns the keys re-wrapped by this call.
pub fn rewrap(
    store: &Store,
    id: i64,
    old: &MasterKey,
    new: &MasterKey,
    batch: usize,
    max_batches: Option<usize>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64, RecordsError> {
    let (ow, nw) = (KeyWrapper::new(old), KeyWrapper::new(new));
    let (oid, nid) = (old.id().to_owned(), new.id().to_owned());
    let o = oid.clone();
    let total = store.read(move |c| {
        Ok(c.query_row(
            "SELECT (SELECT count(*) FROM data_subjects WHERE wrapped_key IS NOT NULL AND master_key_id = ?1)
                  + (SELECT count(*) FROM appliance_keys WHERE master_key_id = ?1)",
            [&o],
            |r| r.get::<_, i64>(0),
        )?)
    })? as u64;
    let mut done = 0u64;
    // Appliance keys first (two rows, one transaction).
    let rows = store.read(subjects::appliance_keys)?;
    let mut wrapped = Vec::new();
    for r in rows.iter().filter(|r| r.master_key_id == oid) {
        let secret = ow.unwrap(
            WrapContext::Appliance {
                purpose: &r.purpose,
                key_id: &r.key_id,
            },
            &r.wrapped_secret,
        )?;
        let w = nw.wrap(
            WrapContext::Appliance {
                purpose: &r.purpose,
                key_id: &r.key_id,
            },
            &secret,
        )?;
        wrapped.push((r.purpose.clone(), w));
    }
    if !wrapped.is_empty() {
        let (o, n) = (oid.clone(), nid.clone());
        done += store.write(move |c| {
            let mut k = 0;
            for (p, w) in &wrapped {
                k += u64::from(subjects::rewrap_appliance_key(c, p, &o, &n, w)?);
            }
            subjects::add_rewrapped(c, id, k as i64)?;
            Ok(k)
        })?;
        progress(done, total);
    }
    let mut batches = 0;
    loop {
        if max_batches.is_some_and(|m| batches >= m) {
            return Ok(done);
        }
        let o = oid.clone();
        let keys = store.read(move |c| subjects::wrapped_by(c, &o, batch))?;
        if keys.is_empty() {
            return Ok(done);
        }
        let mut out = Vec::with_capacity(keys.len());
        for k in &keys {
            let subject = crate::ids::SubjectKey(k.subject_hash);
            let ctx = WrapContext::DataKey {
                subject: &subject,
                key_id: &k.key_id,
            };
            let secret = ow.unwrap(ctx, &k.wrapped_key)?;
            out.push((k.id, nw.wrap(ctx, &secret)?));
        }
        let (o, n) = (oid.clone(), nid.clone());
        done += store.write(move |c| {
            let mut k = 0;
            for (sid, w) in &out {
                k += u64::from(subjects::rewrap_data_key(c, *sid, &o, &n, w)?);
            }
            subjects::add_rewrapped(c, id, k as i64)?;
            Ok(k)
        })?;
        batches += 1;
        progress(done, total);
    }
}

/// Keys still wrapped by anything but `new_id`.
pub fn remaining(store: &Store, new_id: &str) -> Result<i64, RecordsError> {
    let n = new_id.to_owned();
    Ok(store.read(move |c| subjects::count_wrapped_by_other(c, &n))?)
}

/// Marks the rotation done (after the key file was replaced).
pub fn finish(store: &Store, id: i64, now_ms: i64) -> Result<(), RecordsError> {
    store.write(move |c| {
        let row = subjects::open_rotation(c)?;
        subjects::finish_rotation(c, id, now_ms)?;
        audit::append(
            c,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: "cli",
                role: None,
                action: "keys.rotate",
                object: Some(&format!("rotation:{id}")),
                result: "ok",
                detail: json!({
                    "old_master_key_id": row.as_ref().map(|r| r.old_master_key_id.clone()),
                    "new_master_key_id": row.as_ref().map(|r| r.new_master_key_id.clone()),
                    "rewrapped": row.as_ref().map(|r| r.rewrapped),
                }),
            },
        )?;
        Ok(())
    })?;
    Ok(())
}
