//! Admin API handlers of the vault: erasure requests and receipts, the receipt key, and
//! decrypting playback of recordings and transcripts (streamed, never written to disk).
//! Every change, every decryption and every receipt read is appended to the audit log.

use std::io::Read;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminContext;
use super::api::{
    ApiError, ApiResponse, Caller, PhoneField, opt_time, paging, parse_json, query_param, record,
};
use crate::ids::{CallId, RecordingId};
use crate::records::{ErasureRequest, ErasureTarget, Records, RecordsError};
use crate::store::{Store, audit, calls, erasure};
use crate::time::unix_ms;
use crate::vault::format::ContentType;
use crate::vault::receipt::public_key_pem;

pub(super) fn records(ctx: &AdminContext) -> Result<&Arc<Records>, ApiError> {
    ctx.records
        .as_ref()
        .ok_or_else(|| ApiError::new(503, "unavailable", "the vault is not available"))
}

impl From<RecordsError> for ApiError {
    fn from(e: RecordsError) -> Self {
        match e {
            RecordsError::Store(s) => s.into(),
            RecordsError::NotFound(_) => ApiError::not_found(),
            RecordsError::Invalid(m) => ApiError::bad_request(m),
            RecordsError::Phone(p) => ApiError::bad_request(format!("phone: {p}")),
            RecordsError::Shredded => ApiError::new(
                410,
                "erased",
                "the data subject was erased; this data no longer exists",
            ),
            RecordsError::Suppressed => {
                ApiError::new(409, "suppressed", "the number is on the suppression list")
            }
            RecordsError::ErasureInProgress => ApiError::new(
                409,
                "erasure_in_progress",
                "an erasure of this number has not finished yet; try again after it completes",
            ),
            RecordsError::Format(_) | RecordsError::Key(_) | RecordsError::Inconsistent(_) => {
                log::error!(error:% = e; "vault integrity check failed");
                ApiError::new(
                    500,
                    "integrity",
                    "the stored data failed its integrity check; see the daemon log",
                )
            }
            other => {
                log::error!(error:% = other; "vault operation failed");
                ApiError::new(500, "internal", "internal error; see the daemon log")
            }
        }
    }
}

/// Body of `POST /api/v1/erasure-requests`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateErasure {
    #[serde(default)]
    phone: Option<PhoneField>,
    #[serde(default)]
    subject_id: Option<i64>,
    reason: String,
    ticket: String,
}

pub(super) fn erasure_create(
    ctx: &AdminContext,
    c: &Caller,
    body: &[u8],
) -> Result<ApiResponse, ApiError> {
    let r = records(ctx)?;
    let req: CreateErasure = parse_json(body)?;
    let target = match (req.phone, req.subject_id) {
        (Some(p), None) => ErasureTarget::Phone(r.normalize(&p.0)?),
        (None, Some(id)) => ErasureTarget::SubjectId(id),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of phone and subject_id",
            ));
        }
    };
    let out = r.erase(&ErasureRequest {
        target,
        ticket: req.ticket,
        reason: req.reason,
        requested_by: c.token_id.clone(),
        role: Some(c.role.as_str().to_owned()),
        source: "api",
    });
    let out = match out {
        Ok(o) => o,
        Err(e) => {
            record(
                ctx,
                c,
                "erasure.request",
                None,
                "failed",
                json!({"error": e.to_string()}),
            );
            return Err(e.into());
        }
    };
    let file: Value = serde_json::from_str(&out.receipt_file).unwrap_or(Value::Null);
    let mut resp = ApiResponse::json(
        if out.created { 201 } else { 200 },
        &json!({
            "request_id": out.request_uid,
            "created": out.created,
            "state": "done",
            "receipt": file,
        }),
    );
    resp.headers.push((
        "Location",
        format!("/api/v1/erasure-requests/{}", out.request_uid),
    ));
    Ok(resp)
}

fn erasure_json(row: &erasure::ErasureRow) -> Value {
    let counts: Value = serde_json::from_str(&row.counts_json).unwrap_or(json!({}));
    let keys: Value = serde_json::from_str(&row.key_ids_json).unwrap_or(json!([]));
    json!({
        "request_id": row.request_uid,
        "ticket": row.ticket,
        "reason": row.reason,
        "state": row.state.as_str(),
        "requested_by": row.requested_by,
        "requester_role": row.requester_role,
        "source": row.source,
        "subject_id": row.subject_id,
        "subject_hash": hex::encode(row.subject_hash),
        "keys_destroyed": keys,
        "counts": counts,
        "files": row.files_found,
        "started_at": opt_time(Some(row.started_at_ms)),
        "key_destroyed_at": opt_time(row.key_destroyed_at_ms),
        "finished_at": opt_time(row.finished_at_ms),
    })
}

pub(super) fn erasure_list(ctx: &AdminContext, query: &str) -> Result<ApiResponse, ApiError> {
    let (after, limit) = paging(query)?;
    let rows = ctx.store.read(move |c| erasure::page(c, after, limit))?;
    let next = rows.last().map(|r| r.id);
    let list: Vec<Value> = rows.iter().map(erasure_json).collect();
    Ok(ApiResponse::json(
        200,
        &json!({"erasure_requests": list, "next_after": next}),
    ))
}

fn find(store: &Store, uid: &str) -> Result<erasure::ErasureRow, ApiError> {
    let uid = uid.to_owned();
    store
        .read(move |c| erasure::by_uid(c, &uid))?
        .ok_or_else(ApiError::not_found)
}

pub(super) fn erasure_get(ctx: &AdminContext, uid: &str) -> Result<ApiResponse, ApiError> {
    let row = find(&ctx.store, uid)?;
    Ok(ApiResponse::json(200, &erasure_json(&row)))
}

pub(super) fn erasure_receipt(
    ctx: &AdminContext,
    c: &Caller,
    uid: &str,
) -> Result<ApiResponse, ApiError> {
    let r = records(ctx)?;
    let row = find(&ctx.store, uid)?;
    let (file, _) = r.stored_receipt(&row)?;
    record(
        ctx,
        c,
        "erasure.receipt.read",
        Some(format!("erasure:{}", row.request_uid)),
        "ok",
        json!({}),
    );
    let mut resp = ApiResponse::json(200, &Value::Null);
    resp.body = file.into_bytes();
    resp.headers.push((
        "Content-Disposition",
        format!("attachment; filename=\"{}.receipt.json\"", row.request_uid),
    ));
    Ok(resp)
}

pub(super) fn receipt_key(ctx: &AdminContext) -> Result<ApiResponse, ApiError> {
    let (id, pk) = records(ctx)?.receipt_public_key();
    Ok(ApiResponse::json(
        200,
        &json!({
            "key_id": id,
            "algorithm": "Ed25519",
            "public_key_hex": hex::encode(pk),
            "public_key_pem": public_key_pem(&pk),
        }),
    ))
}

pub(super) fn call_recordings(ctx: &AdminContext, call: i64) -> Result<ApiResponse, ApiError> {
    let rows = ctx
        .store
        .read(move |c| calls::recordings_of_call(c, CallId(call)))?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "id": r.id.0,
                "kind": r.kind,
                "complete": r.complete,
                "bytes": r.bytes,
                "duration_ms": r.duration_ms,
                "created_at": opt_time(Some(r.created_at_ms)),
                "content": format!("/api/v1/recordings/{}/content", r.id.0),
            })
        })
        .collect();
    Ok(ApiResponse::json(200, &json!({"recordings": list})))
}

/// Appends a `failed` audit entry if the stream breaks midway (tampered or damaged chunk),
/// so the log never shows a playback as successful that was cut short.
struct AuditOnError<R> {
    inner: R,
    store: Store,
    actor: String,
    role: &'static str,
    object: String,
    action: &'static str,
    failed: bool,
}

impl<R: Read> Read for AuditOnError<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let r = self.inner.read(buf);
        if let Err(e) = &r
            && !self.failed
        {
            self.failed = true;
            log::error!(error:% = e, object = self.object.as_str(); "vault stream failed its integrity check midway; response cut short");
            let (actor, role, object, action, err) = (
                self.actor.clone(),
                self.role,
                self.object.clone(),
                self.action,
                e.to_string(),
            );
            let at_ms = unix_ms(crate::time::Clock::wall(&crate::time::SystemClock));
            let res = self.store.write(move |c| {
                audit::append(
                    c,
                    &audit::NewEntry {
                        at_ms,
                        actor: &actor,
                        role: Some(role),
                        action,
                        object: Some(&object),
                        result: "failed",
                        detail: json!({"error": err}),
                    },
                )
                .map(|_| ())
            });
            if let Err(e) = res {
                log::error!(error:% = e; "could not audit a failed playback");
            }
        }
        r
    }
}

pub(super) fn recording_content(
    ctx: &AdminContext,
    c: &Caller,
    id: i64,
    query: &str,
) -> Result<ApiResponse, ApiError> {
    let r = records(ctx)?;
    let download = query_param(query, "download") == Some("1");
    let object = format!("recording:{id}");
    let playback = match r.open_playback(RecordingId(id)) {
        Ok(p) => p,
        Err(RecordsError::NotFound(_)) => return Err(ApiError::not_found()),
        Err(e) => {
            record(
                ctx,
                c,
                "recording.play",
                Some(object),
                "failed",
                json!({"error": e.to_string()}),
            );
            return Err(e.into());
        }
    };
    let (action, content_type, ext) = match playback.content_type {
        ContentType::CallAudio | ContentType::PromptAudio if download => {
            ("recording.download", "audio/wav", "wav")
        }
        ContentType::CallAudio | ContentType::PromptAudio => ("recording.play", "audio/wav", "wav"),
        ContentType::Transcript if download => (
            "transcript.download",
            "application/x-ndjson; charset=utf-8",
            "jsonl",
        ),
        ContentType::Transcript => (
            "transcript.read",
            "application/x-ndjson; charset=utf-8",
            "jsonl",
        ),
    };
    record(
        ctx,
        c,
        action,
        Some(object.clone()),
        "ok",
        json!({
            "call_id": playback.recording.call_id.0,
            "bytes": playback.len,
            "complete": playback.recording.complete,
        }),
    );
    let mut headers = Vec::new();
    if download {
        headers.push((
            "Content-Disposition",
            format!("attachment; filename=\"recording-{id}.{ext}\""),
        ));
    }
    let len = playback.len;
    let stream = AuditOnError {
        inner: playback.stream,
        store: ctx.store.clone(),
        actor: c.token_id.clone(),
        role: c.role.as_str(),
        object,
        action,
        failed: false,
    };
    Ok(ApiResponse {
        status: 200,
        content_type,
        headers,
        body: Vec::new(),
        route: "unmatched",
        stream: Some((Box::new(stream), len)),
    })
}
