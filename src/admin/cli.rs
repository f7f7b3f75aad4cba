//! The `vaultcall admin …` commands: bootstrap the first admin token, list and revoke tokens
//! from the shell, make a self-signed TLS pair.

use std::path::Path;

use serde_json::json;

use super::auth::{self, Role};
use super::tls;
use crate::app::{Failure, open_store};
use crate::config::Config;
use crate::store::{StoreError, audit, tokens};
use crate::time::{Clock, SystemClock, rfc3339, unix_days, unix_ms};

/// Refuses to run as a user who does not own the data directory (root creating files the
/// daemon's user cannot open would break the daemon).
pub fn check_data_dir_owner(cfg: &Config) -> Result<(), Failure> {
    use std::os::unix::fs::MetadataExt;
    let dir = cfg.resolve_paths(&|k| std::env::var(k).ok()).data_dir;
    let Ok(meta) = std::fs::metadata(&dir) else {
        return Ok(());
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(Failure::runtime(format!(
            "{} belongs to uid {}, not to you (uid {me}); run this as its owner, e.g. sudo -u vaultcall vaultcall …",
            dir.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// `vaultcall admin bootstrap`: creates an admin token if none is active (or `force`).
/// Returns the text to print.
pub fn bootstrap(
    cfg: &Config,
    name: &str,
    force: bool,
    token_only: bool,
) -> Result<String, Failure> {
    if !super::api::valid_token_name(name) {
        return Err(Failure {
            code: crate::app::exit::USAGE,
            message: "--name: 1 to 64 characters, no control characters".into(),
        });
    }
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let now_ms = unix_ms(SystemClock.wall());
    let minted = auth::mint(name, Role::Admin, now_ms, "cli", None).map_err(Failure::runtime)?;
    let row = minted.row.clone();
    let res = store.write(move |c| {
        if !force && tokens::count_active(c, "admin", now_ms)? > 0 {
            return Ok(false);
        }
        tokens::insert(c, &row)?;
        audit::append(
            c,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: "cli",
                role: None,
                action: "token.bootstrap",
                object: Some(&format!("token:{}", row.id)),
                result: "ok",
                detail: json!({"role": "admin", "forced": force}),
            },
        )?;
        Ok(true)
    });
    store.close();
    match res {
        Ok(true) if token_only => Ok(format!("{}\n", minted.bearer.as_str())),
        Ok(true) => Ok(format!(
            "Admin token (shown only this once; keep it in a password manager):\n\n  {}\n\n\
             id: {}  role: admin  name: {name}\n\
             Use it as:  curl -H \"Authorization: Bearer <token>\" http://{}/api/v1/whoami\n",
            minted.bearer.as_str(),
            minted.row.id,
            cfg.admin.listen
        )),
        Ok(false) => Err(Failure::runtime(
            "an active admin token exists already; use --force to create another (and revoke the old one if it is lost)",
        )),
        Err(e) => Err(e.into()),
    }
}

/// `vaultcall admin tokens`: the token list, without secrets.
pub fn list(cfg: &Config) -> Result<String, Failure> {
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let rows = store.read(tokens::list);
    store.close();
    let now_ms = unix_ms(SystemClock.wall());
    let mut out = format!(
        "{:<12} {:<11} {:<8} {:<26} {}\n",
        "ID", "ROLE", "ACTIVE", "CREATED", "NAME"
    );
    for t in rows? {
        let created = rfc3339(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(t.created_at_ms.max(0) as u64),
        );
        out.push_str(&format!(
            "{:<12} {:<11} {:<8} {:<26} {}\n",
            t.id,
            t.role,
            if t.is_active(now_ms) { "yes" } else { "no" },
            created,
            t.name
        ));
    }
    Ok(out)
}

/// `vaultcall admin revoke ID`.
pub fn revoke(cfg: &Config, id: &str) -> Result<String, Failure> {
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let now_ms = unix_ms(SystemClock.wall());
    let owned = id.to_owned();
    let res = store.write(move |c| {
        if !tokens::revoke(c, &owned, now_ms)? {
            return Err(StoreError::NotFound);
        }
        audit::append(
            c,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: "cli",
                role: None,
                action: "token.revoke",
                object: Some(&format!("token:{owned}")),
                result: "ok",
                detail: json!({}),
            },
        )?;
        Ok(())
    });
    store.close();
    match res {
        Ok(()) => Ok(format!("revoked {id}\n")),
        Err(StoreError::NotFound) => Err(Failure::runtime(format!("no active token with id {id}"))),
        Err(e) => Err(e.into()),
    }
}

/// `vaultcall admin self-signed`.
pub fn self_signed(out_dir: &Path, names: &[String], days: u32) -> Result<String, Failure> {
    if names.is_empty() || !(1..=3650).contains(&days) {
        return Err(Failure {
            code: crate::app::exit::USAGE,
            message: "give at least one --name and --days between 1 and 3650".into(),
        });
    }
    let today = unix_days(SystemClock.wall());
    let s = tls::write_self_signed(out_dir, names, days, today).map_err(Failure::runtime)?;
    Ok(format!(
        "wrote {} and {} (valid {days} days for {})\nSHA-256 fingerprint: {}\n\nIn vaultcall.toml:\n\n[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
        s.cert_file.display(),
        s.key_file.display(),
        names.join(", "),
        s.sha256_fingerprint,
        s.cert_file.display(),
        s.key_file.display()
    ))
}

/// `vaultcall audit verify`: walks the hash chain and compares any checkpoints (from the
/// journal's "audit log checkpoint" lines). Ok with a report, or a failure saying where the
/// chain breaks.
pub fn audit_verify(cfg: &Config, checkpoints: &[String]) -> Result<String, Failure> {
    let mut parsed = Vec::with_capacity(checkpoints.len());
    for c in checkpoints {
        parsed.push(audit::Checkpoint::parse(c).ok_or_else(|| Failure {
            code: crate::app::exit::USAGE,
            message: format!("--checkpoint {c}: expected ID:HASH (64 hex digits) as logged"),
        })?);
    }
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let res = store.read(move |c| {
        let chain = audit::verify(c)?;
        let mut cps = Vec::new();
        for cp in &parsed {
            cps.push((cp.id, audit::check_checkpoint(c, cp)?));
        }
        Ok((chain, cps, audit::head(c)?))
    });
    let now_ms = unix_ms(SystemClock.wall());
    let (chain, cps, head) = match res {
        Ok(v) => v,
        Err(e) => {
            store.close();
            return Err(e.into());
        }
    };
    let mut problems = Vec::new();
    match &chain {
        Ok(_) => {}
        Err(audit::Break::Content { id }) => problems.push(format!(
            "entry {id} does not match its hash: it was edited"
        )),
        Err(audit::Break::Link { id, expected_id }) if id == expected_id => problems.push(format!(
            "entry {id} does not link to entry {}: an entry before it was deleted, inserted or moved",
            id - 1
        )),
        Err(audit::Break::Link { id, expected_id }) => problems.push(format!(
            "entry {expected_id} is missing (found {id} in its place): entries were deleted or reordered"
        )),
    }
    for (id, v) in &cps {
        match v {
            audit::CheckpointVerdict::Matches => {}
            audit::CheckpointVerdict::Differs => problems.push(format!(
                "checkpoint {id} does not match: the chain was rewritten at or before entry {id}"
            )),
            audit::CheckpointVerdict::Missing => problems.push(format!(
                "checkpoint {id} names an entry that no longer exists: the log was cut back"
            )),
        }
    }
    let ok = problems.is_empty();
    let detail = json!({"checkpoints": cps.len(), "problems": problems.len()});
    let _ = store.write(move |c| {
        audit::append(
            c,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: "cli",
                role: None,
                action: "audit.verify",
                object: None,
                result: if ok { "ok" } else { "broken" },
                detail,
            },
        )
        .map(|_| ())
    });
    store.close();
    if ok {
        let n = chain.unwrap_or(0);
        let head = head.map_or("empty".to_owned(), |(id, h)| {
            format!("{id}:{}", hex::encode(h))
        });
        Ok(format!(
            "audit log intact: {n} entries verified, {} checkpoint(s) match\nhead {head}\n",
            cps.len()
        ))
    } else {
        Err(Failure::runtime(format!(
            "audit log BROKEN: {}",
            problems.join("; ")
        )))
    }
}

/// `vaultcall audit export`: entries at or after `since` as JSON Lines (for a SIEM), to `out`
/// (created 0600) or returned for stdout. The export itself is audited.
pub fn audit_export(cfg: &Config, since: &str, out: Option<&Path>) -> Result<String, Failure> {
    let since_ms = crate::time::parse_rfc3339(since).ok_or_else(|| Failure {
        code: crate::app::exit::USAGE,
        message: format!(
            "--since {since}: expected YYYY-MM-DD or an RFC 3339 time such as 2026-11-21T08:00:00Z"
        ),
    })?;
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let mut text = String::new();
    let mut after = 0;
    let mut n = 0u64;
    let res = (|| -> Result<(), Failure> {
        loop {
            let page = store.read(move |c| audit::page_since(c, after, since_ms, 1000))?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.id.0;
            for e in page {
                let detail: serde_json::Value =
                    serde_json::from_str(&e.detail_json).unwrap_or(serde_json::Value::Null);
                let line = json!({
                    "id": e.id.0,
                    "at": crate::time::rfc3339_ms(e.at_ms),
                    "at_ms": e.at_ms,
                    "actor": e.actor,
                    "role": e.role,
                    "action": e.action,
                    "object": e.object,
                    "result": e.result,
                    "detail": detail,
                    "prev_hash": hex::encode(&e.prev_hash),
                    "hash": hex::encode(&e.hash),
                });
                text.push_str(&line.to_string());
                text.push('\n');
                n += 1;
            }
        }
    })();
    let now_ms = unix_ms(SystemClock.wall());
    let since_s = since.to_owned();
    let audited = res.and_then(|()| {
        store
            .write(move |c| {
                audit::append(
                    c,
                    &audit::NewEntry {
                        at_ms: now_ms,
                        actor: "cli",
                        role: None,
                        action: "audit.export",
                        object: None,
                        result: "ok",
                        detail: json!({"since": since_s, "entries": n}),
                    },
                )
                .map(|_| ())
            })
            .map_err(Failure::from)
    });
    store.close();
    audited?;
    match out {
        Some(p) => {
            crate::fs::write_new(p, text.as_bytes(), 0o600)
                .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", p.display())))?;
            Ok(format!("exported {n} audit entries to {}\n", p.display()))
        }
        None => Ok(text),
    }
}
