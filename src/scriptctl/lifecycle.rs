//! Drafts and published versions, shared by the `vaultcall script` commands and the admin API.
//! Only valid scripts are stored; publishing validates again (the rules may have grown since
//! the draft was imported). Every change is audited in the same transaction as the change.

use std::path::Path;

use serde_json::json;

use super::{audio_present, invalid, load};
use crate::admin::cli::check_data_dir_owner;
use crate::app::{Failure, open_store};
use crate::config::Config;
use crate::conversation::validate::{CheckEnv, Problem, compile_text};
use crate::store::scripts::{self, SaveResult, ScriptStatus, ScriptVersion};
use crate::store::{Store, StoreError, audit};
use crate::time::{Clock, SystemClock, rfc3339, unix_ms};

/// Who is acting, for the audit log.
#[derive(Debug, Clone, Copy)]
pub struct Actor<'a> {
    /// Token id or `cli`.
    pub id: &'a str,
    /// The token's role.
    pub role: Option<&'static str>,
}

/// Why a lifecycle step failed.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    /// The script has problems.
    #[error("the script has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    /// No such script.
    #[error("no script with key '{0}'")]
    NotFound(String),
    /// The latest version is not a draft.
    #[error("script '{0}' has no draft to publish (import one first)")]
    NoDraft(String),
    /// The draft changed while it was being published.
    #[error("the draft of '{0}' changed while publishing; try again")]
    Changed(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// SHA-256 of content, hex.
pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b))
}

/// Validates `text` and saves it as the draft of its key.
pub fn import(
    store: &Store,
    text: &str,
    env: &CheckEnv,
    actor: Actor<'_>,
    now_ms: i64,
) -> Result<(SaveResult, ScriptVersion), LifecycleError> {
    let compiled = compile_text(text, env).map_err(LifecycleError::Invalid)?;
    let key = compiled.source.script.key.clone();
    let sha = sha256_hex(text.as_bytes());
    let content = text.as_bytes().to_vec();
    let (actor_id, role) = (actor.id.to_owned(), actor.role);
    Ok(store.write(move |c| {
        let (r, v) = scripts::save_draft(c, &key, "toml", &content, &sha, now_ms)?;
        if r != SaveResult::Unchanged {
            audit::append(
                c,
                &audit::NewEntry {
                    at_ms: now_ms,
                    actor: &actor_id,
                    role,
                    action: "script.import",
                    object: Some(&format!("script:{key}@{}", v.version)),
                    result: "ok",
                    detail: json!({"sha256": sha, "draft": if r == SaveResult::Created { "created" } else { "replaced" }}),
                },
            )?;
        }
        Ok((r, v))
    })?)
}

/// Validates the draft of `key` again and publishes it.
pub fn publish(
    store: &Store,
    key: &str,
    actor: Actor<'_>,
    now_ms: i64,
) -> Result<ScriptVersion, LifecycleError> {
    let k = key.to_owned();
    let draft = store
        .read(move |c| scripts::latest(c, &k))?
        .ok_or_else(|| LifecycleError::NotFound(key.to_owned()))?;
    if draft.status != ScriptStatus::Draft {
        return Err(LifecycleError::NoDraft(key.to_owned()));
    }
    let text = String::from_utf8_lossy(&draft.content).into_owned();
    compile_text(&text, &CheckEnv::default()).map_err(LifecycleError::Invalid)?;
    let (k, actor_id, role) = (key.to_owned(), actor.id.to_owned(), actor.role);
    let published = store.write(move |c| {
        let Some(now) = scripts::latest(c, &k)? else {
            return Ok(None);
        };
        if now.version != draft.version || now.content_sha256 != draft.content_sha256 {
            return Ok(None);
        }
        if !scripts::publish(c, &k, now.version, now_ms)? {
            return Err(StoreError::NotFound);
        }
        audit::append(
            c,
            &audit::NewEntry {
                at_ms: now_ms,
                actor: &actor_id,
                role,
                action: "script.publish",
                object: Some(&format!("script:{k}@{}", now.version)),
                result: "ok",
                detail: json!({"sha256": now.content_sha256}),
            },
        )?;
        scripts::get(c, &k, now.version)
    })?;
    published.ok_or_else(|| LifecycleError::Changed(key.to_owned()))
}

fn lifecycle_failure(path_or_key: &str, e: LifecycleError) -> Failure {
    match e {
        LifecycleError::Invalid(p) => {
            for x in &p {
                println!("{path_or_key}: {x}");
            }
            invalid(Path::new(path_or_key), &p)
        }
        LifecycleError::Store(s) => s.into(),
        other => Failure::runtime(other),
    }
}

fn cli_actor() -> Actor<'static> {
    Actor {
        id: "cli",
        role: None,
    }
}

/// `vaultcall script import FILE`.
pub fn import_cmd(cfg: &Config, path: &Path) -> Result<String, Failure> {
    let f = load(path)?;
    if let Err(p) = &f.compiled {
        for x in p {
            println!("{}: {x}", path.display());
        }
        return Err(invalid(path, p));
    }
    check_data_dir_owner(cfg)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let env = CheckEnv {
        audio_present: Some(audio_present(&f.text, dir)),
    };
    let store = open_store(cfg)?;
    let res = import(
        &store,
        &f.text,
        &env,
        cli_actor(),
        unix_ms(SystemClock.wall()),
    );
    store.close();
    let (r, v) = res.map_err(|e| lifecycle_failure(&path.display().to_string(), e))?;
    Ok(match r {
        SaveResult::Unchanged => format!(
            "{} version {} ({}) already has this content (sha256 {})\n",
            v.key,
            v.version,
            v.status.as_str(),
            &v.content_sha256[..12]
        ),
        SaveResult::Created | SaveResult::Replaced => format!(
            "{} draft version {} saved (sha256 {}); publish it with: vaultcall script publish {}\n",
            v.key,
            v.version,
            &v.content_sha256[..12],
            v.key
        ),
    })
}

/// `vaultcall script publish KEY`.
pub fn publish_cmd(cfg: &Config, key: &str) -> Result<String, Failure> {
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let res = publish(&store, key, cli_actor(), unix_ms(SystemClock.wall()));
    store.close();
    let v = res.map_err(|e| lifecycle_failure(key, e))?;
    Ok(format!(
        "{} version {} published (sha256 {})\n",
        v.key, v.version, v.content_sha256
    ))
}

fn time_text(ms: Option<i64>) -> String {
    ms.map_or_else(
        || "-".to_owned(),
        |m| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_millis(m.max(0) as u64)),
    )
}

/// `vaultcall script list`.
pub fn list_cmd(cfg: &Config) -> Result<String, Failure> {
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let rows = store.read(scripts::list);
    store.close();
    let mut out = format!(
        "{:<32} {:>7} {:<10} {:<14} {:<25} {}\n",
        "KEY", "VERSION", "STATUS", "SHA256", "CREATED", "PUBLISHED"
    );
    for v in rows? {
        out.push_str(&format!(
            "{:<32} {:>7} {:<10} {:<14} {:<25} {}\n",
            v.key,
            v.version,
            v.status.as_str(),
            &v.content_sha256[..12.min(v.content_sha256.len())],
            time_text(Some(v.created_at_ms)),
            time_text(v.published_at_ms)
        ));
    }
    Ok(out)
}

/// `vaultcall script export KEY [--version N]`: the exact stored text. Without a version: the
/// published one, else the latest draft.
pub fn export_cmd(cfg: &Config, key: &str, version: Option<i64>) -> Result<String, Failure> {
    check_data_dir_owner(cfg)?;
    let store = open_store(cfg)?;
    let k = key.to_owned();
    let row = store.read(move |c| match version {
        Some(n) => scripts::get(c, &k, n),
        None => match scripts::published(c, &k)? {
            Some(v) => Ok(Some(v)),
            None => scripts::latest(c, &k),
        },
    });
    store.close();
    let v = row?.ok_or_else(|| {
        Failure::runtime(match version {
            Some(n) => format!("script '{key}' has no version {n}"),
            None => format!("no script with key '{key}'"),
        })
    })?;
    String::from_utf8(v.content).map_err(|_| Failure::runtime("stored script is not UTF-8"))
}
