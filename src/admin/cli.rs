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
