//! Admin API handlers of the suppression (do-not-call) list: add, check, lift, counts
//! (docs/admin-api.md, docs/vault.md §12). Numbers arrive only in POST bodies, are normalised
//! and hashed at once, and never reach a log line, an error message or the audit log (whose
//! object is the subject hash). The records service audits each change in its transaction.

use serde::Deserialize;
use serde_json::{Value, json};

use super::AdminContext;
use super::api::{ApiError, ApiResponse, Caller, PhoneField, opt_time, parse_json};
use super::vault_api::records;
use crate::records::{Requester, Suppression, SuppressionSource};

fn requester(c: &Caller) -> Requester<'_> {
    Requester {
        actor: &c.token_id,
        role: Some(c.role.as_str()),
        via: "api",
    }
}

fn entry_json(e: &Suppression) -> Value {
    json!({
        "source": e.source.as_str(),
        "reason": e.reason,
        "created_at": opt_time(Some(e.created_at_ms)),
    })
}

/// Body of `POST /api/v1/suppression`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddBody {
    phone: PhoneField,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

pub(super) fn add(ctx: &AdminContext, c: &Caller, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let r = records(ctx)?;
    let req: AddBody = parse_json(body)?;
    let source = match req.source.as_deref() {
        None => SuppressionSource::CustomerRequest,
        Some(s) => SuppressionSource::parse(s)
            .filter(|s| s.manual())
            .ok_or_else(|| {
                ApiError::bad_request(
                    "source: customer_request or operator (erasure and script entries are made by the appliance)",
                )
            })?,
    };
    let number = r.normalize(&req.phone.0)?;
    let out = r.suppress(&number, source, req.reason.as_deref(), &requester(c))?;
    let mut v = entry_json(&out.entry);
    v["subject_hash"] = json!(out.subject.to_hex());
    v["added"] = json!(out.added);
    Ok(ApiResponse::json(if out.added { 201 } else { 200 }, &v))
}

/// Body of `POST /api/v1/suppression/check`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    phone: PhoneField,
}

pub(super) fn check(ctx: &AdminContext, c: &Caller, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let r = records(ctx)?;
    let req: CheckBody = parse_json(body)?;
    let number = r.normalize(&req.phone.0)?;
    let found = r.check_suppression(&number, &requester(c))?;
    let mut v = match &found {
        Some(e) => entry_json(e),
        None => json!({}),
    };
    v["suppressed"] = json!(found.is_some());
    v["subject_hash"] = json!(r.subject_key(&number).to_hex());
    Ok(ApiResponse::json(200, &v))
}

/// Body of `POST /api/v1/suppression/lift`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LiftBody {
    phone: PhoneField,
    consent_ref: String,
}

pub(super) fn lift(ctx: &AdminContext, c: &Caller, body: &[u8]) -> Result<ApiResponse, ApiError> {
    let r = records(ctx)?;
    let req: LiftBody = parse_json(body)?;
    let number = r.normalize(&req.phone.0)?;
    let subject = r.subject_key(&number).to_hex();
    match r.lift_suppression(&number, &req.consent_ref, &requester(c))? {
        Some(e) => Ok(ApiResponse::json(
            200,
            &json!({
                "subject_hash": subject,
                "lifted": true,
                "was": entry_json(&e),
            }),
        )),
        None => Err(ApiError::new(
            404,
            "not_suppressed",
            "this number is not on the suppression list",
        )),
    }
}

pub(super) fn stats(ctx: &AdminContext) -> Result<ApiResponse, ApiError> {
    let counts = records(ctx)?.suppression_counts()?;
    let total: i64 = counts.iter().map(|(_, n)| n).sum();
    let by_source: serde_json::Map<String, Value> = counts
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    Ok(ApiResponse::json(
        200,
        &json!({"total": total, "by_source": by_source}),
    ))
}
