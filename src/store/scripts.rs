//! Script versions (`script_versions`): drafts and published, immutable, content-hashed
//! versions. Validation happens in the caller's transaction before these are called (the
//! store knows nothing of the script format).

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::StoreError;
use crate::ids::ScriptVersionId;

/// Lifecycle state of a version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ScriptStatus {
    /// Editable; not used by calls.
    Draft,
    /// Approved for calls; immutable.
    Published,
    /// A published version superseded by a newer one (still immutable, still referenced by
    /// the calls that ran it).
    Archived,
}

impl ScriptStatus {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::Published => "published",
            Self::Archived => "archived",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        match s {
            "draft" => Ok(Self::Draft),
            "published" => Ok(Self::Published),
            "archived" => Ok(Self::Archived),
            _ => Err(rusqlite::Error::InvalidColumnType(
                3,
                "unknown script status".into(),
                rusqlite::types::Type::Text,
            )),
        }
    }
}

/// One stored version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScriptVersion {
    /// Row id.
    pub id: ScriptVersionId,
    /// Script key.
    pub key: String,
    /// Version number (1, 2, …).
    pub version: i64,
    /// State.
    pub status: ScriptStatus,
    /// `toml`.
    pub format: String,
    /// SHA-256 of the content, hex.
    pub content_sha256: String,
    /// When created (or last replaced, for a draft).
    pub created_at_ms: i64,
    /// When published.
    pub published_at_ms: Option<i64>,
    /// The script text (omitted from lists).
    #[serde(skip)]
    pub content: Vec<u8>,
}

const COLUMNS: &str =
    "id, script_key, version, status, format, content_sha256, created_at_ms, published_at_ms";

fn from_row(r: &Row<'_>, with_content: bool) -> rusqlite::Result<ScriptVersion> {
    Ok(ScriptVersion {
        id: ScriptVersionId(r.get(0)?),
        key: r.get(1)?,
        version: r.get(2)?,
        status: ScriptStatus::parse(&r.get::<_, String>(3)?)?,
        format: r.get(4)?,
        content_sha256: r.get(5)?,
        created_at_ms: r.get(6)?,
        published_at_ms: r.get(7)?,
        content: if with_content { r.get(8)? } else { Vec::new() },
    })
}

/// What saving a draft did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SaveResult {
    /// A new draft version was created.
    Created,
    /// The existing draft was replaced.
    Replaced,
    /// The content equals the latest version (draft or published); nothing changed.
    Unchanged,
}

/// Saves `content` as the draft of `key`: replaces the current draft if there is one, creates
/// the next version otherwise; does nothing if the latest version has the same hash.
pub fn save_draft(
    c: &Connection,
    key: &str,
    format: &str,
    content: &[u8],
    sha256: &str,
    now_ms: i64,
) -> Result<(SaveResult, ScriptVersion), StoreError> {
    if let Some(latest) = latest(c, key)? {
        if latest.content_sha256 == sha256 {
            return Ok((SaveResult::Unchanged, latest));
        }
        if latest.status == ScriptStatus::Draft {
            c.execute(
                "UPDATE script_versions SET content = ?2, content_sha256 = ?3, format = ?4, created_at_ms = ?5 WHERE id = ?1",
                params![latest.id.0, content, sha256, format, now_ms],
            )?;
            let v = get(c, key, latest.version)?.ok_or(StoreError::NotFound)?;
            return Ok((SaveResult::Replaced, v));
        }
    }
    let next: i64 = c.query_row(
        "SELECT coalesce(max(version), 0) + 1 FROM script_versions WHERE script_key = ?1",
        [key],
        |r| r.get(0),
    )?;
    c.execute(
        "INSERT INTO script_versions (script_key, version, status, format, content, content_sha256, created_at_ms)
         VALUES (?1, ?2, 'draft', ?3, ?4, ?5, ?6)",
        params![key, next, format, content, sha256, now_ms],
    )?;
    let v = get(c, key, next)?.ok_or(StoreError::NotFound)?;
    Ok((SaveResult::Created, v))
}

/// Publishes draft `version` of `key`; the previously published version becomes archived.
/// Returns false if that version is not a draft.
pub fn publish(c: &Connection, key: &str, version: i64, now_ms: i64) -> Result<bool, StoreError> {
    let is_draft: bool = c.query_row(
        "SELECT count(*) FROM script_versions WHERE script_key = ?1 AND version = ?2 AND status = 'draft'",
        params![key, version],
        |r| r.get::<_, i64>(0),
    )? == 1;
    if !is_draft {
        return Ok(false);
    }
    c.execute(
        "UPDATE script_versions SET status = 'archived' WHERE script_key = ?1 AND status = 'published'",
        [key],
    )?;
    let n = c.execute(
        "UPDATE script_versions SET status = 'published', published_at_ms = ?3
         WHERE script_key = ?1 AND version = ?2 AND status = 'draft'",
        params![key, version, now_ms],
    )?;
    Ok(n == 1)
}

/// One version with its content.
pub fn get(c: &Connection, key: &str, version: i64) -> Result<Option<ScriptVersion>, StoreError> {
    Ok(c.query_row(
        &format!(
            "SELECT {COLUMNS}, content FROM script_versions WHERE script_key = ?1 AND version = ?2"
        ),
        params![key, version],
        |r| from_row(r, true),
    )
    .optional()?)
}

/// The highest version of `key`, with its content.
pub fn latest(c: &Connection, key: &str) -> Result<Option<ScriptVersion>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS}, content FROM script_versions WHERE script_key = ?1 ORDER BY version DESC LIMIT 1"),
        [key],
        |r| from_row(r, true),
    )
    .optional()?)
}

/// The published version of `key`, with its content.
pub fn published(c: &Connection, key: &str) -> Result<Option<ScriptVersion>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {COLUMNS}, content FROM script_versions WHERE script_key = ?1 AND status = 'published'"),
        [key],
        |r| from_row(r, true),
    )
    .optional()?)
}

/// Every version (without content), by key and version.
pub fn list(c: &Connection) -> Result<Vec<ScriptVersion>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS} FROM script_versions ORDER BY script_key, version"
    ))?;
    let rows = st
        .query_map([], |r| from_row(r, false))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The versions of one key (without content).
pub fn versions(c: &Connection, key: &str) -> Result<Vec<ScriptVersion>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {COLUMNS} FROM script_versions WHERE script_key = ?1 ORDER BY version"
    ))?;
    let rows = st
        .query_map([key], |r| from_row(r, false))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate::migrate(&mut c, crate::store::migrate::MIGRATIONS, 0).unwrap();
        c
    }

    #[test]
    fn drafts_are_replaced_published_versions_are_immutable() {
        let c = db();
        let (r, v1) = save_draft(&c, "k", "toml", b"a", "ha", 1).unwrap();
        assert_eq!(
            (r, v1.version, v1.status),
            (SaveResult::Created, 1, ScriptStatus::Draft)
        );
        let (r, v) = save_draft(&c, "k", "toml", b"b", "hb", 2).unwrap();
        assert_eq!((r, v.version), (SaveResult::Replaced, 1));
        assert_eq!(
            save_draft(&c, "k", "toml", b"b", "hb", 3).unwrap().0,
            SaveResult::Unchanged
        );
        assert!(publish(&c, "k", 1, 4).unwrap());
        assert!(!publish(&c, "k", 1, 5).unwrap(), "published twice");
        // The trigger refuses edits of a published version.
        let refuses_edit = |c: &Connection| {
            let e = c
                .execute(
                    "UPDATE script_versions SET content = x'00' WHERE version = 1",
                    [],
                )
                .unwrap_err();
            assert!(e.to_string().contains("immutable"), "{e}");
        };
        refuses_edit(&c);
        // Archived versions are immutable too (migration 2), and neither can be deleted.
        assert!(
            c.execute("DELETE FROM script_versions WHERE version = 1", [])
                .is_err()
        );
        // A new import after publishing is version 2; publishing it archives version 1.
        let (r, v2) = save_draft(&c, "k", "toml", b"c", "hc", 6).unwrap();
        assert_eq!((r, v2.version), (SaveResult::Created, 2));
        assert!(publish(&c, "k", 2, 7).unwrap());
        let all = versions(&c, "k").unwrap();
        assert_eq!(
            all.iter().map(|v| v.status).collect::<Vec<_>>(),
            vec![ScriptStatus::Archived, ScriptStatus::Published]
        );
        assert_eq!(published(&c, "k").unwrap().unwrap().content, b"c");
        assert_eq!(get(&c, "k", 1).unwrap().unwrap().content, b"b");
        refuses_edit(&c);
        assert!(
            c.execute(
                "UPDATE script_versions SET status = 'draft' WHERE version = 1",
                []
            )
            .is_err()
        );
        assert_eq!(list(&c).unwrap().len(), 2);
    }
}
