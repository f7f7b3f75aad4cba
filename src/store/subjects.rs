//! Data subjects (one per callee phone number), the suppression list, the appliance keys and
//! master-key rotations. Rows hold only keyed hashes, wrapped keys and ciphertext; the crypto
//! is in `vault`, the composition in `records`.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;

/// A `data_subjects` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectRow {
    /// Row id (the public subject id).
    pub id: i64,
    /// HMAC of the normalised number.
    pub subject_hash: [u8; 32],
    /// The number, sealed under the subject's data key.
    pub phone_enc: Option<Vec<u8>>,
    /// The data key's id.
    pub key_id: String,
    /// The data key wrapped by the master key; `None` once shredded.
    pub wrapped_key: Option<Vec<u8>>,
    /// Which master key wrapped it.
    pub master_key_id: Option<String>,
    /// When the row was made.
    pub created_at_ms: i64,
    /// When the key was destroyed.
    pub shredded_at_ms: Option<i64>,
}

fn hash32(v: Vec<u8>) -> rusqlite::Result<[u8; 32]> {
    v.try_into()
        .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, 0))
}

fn subject_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SubjectRow> {
    Ok(SubjectRow {
        id: r.get(0)?,
        subject_hash: hash32(r.get(1)?)?,
        phone_enc: r.get(2)?,
        key_id: r.get(3)?,
        wrapped_key: r.get(4)?,
        master_key_id: r.get(5)?,
        created_at_ms: r.get(6)?,
        shredded_at_ms: r.get(7)?,
    })
}

const SUBJECT_COLS: &str = "id, subject_hash, phone_enc, key_id, wrapped_key, master_key_id, created_at_ms, shredded_at_ms";

/// The subject with this hash.
pub fn by_hash(c: &Connection, hash: &[u8; 32]) -> Result<Option<SubjectRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {SUBJECT_COLS} FROM data_subjects WHERE subject_hash = ?1"),
        [&hash[..]],
        subject_row,
    )
    .optional()?)
}

/// The subject with this id.
pub fn by_id(c: &Connection, id: i64) -> Result<Option<SubjectRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {SUBJECT_COLS} FROM data_subjects WHERE id = ?1"),
        [id],
        subject_row,
    )
    .optional()?)
}

/// A data key to store for a subject.
#[derive(Debug, Clone)]
pub struct KeyRecord<'a> {
    /// HMAC of the number.
    pub subject_hash: &'a [u8; 32],
    /// Sealed number.
    pub phone_enc: &'a [u8],
    /// Data key id.
    pub key_id: &'a str,
    /// Wrapped data key.
    pub wrapped_key: &'a [u8],
    /// Wrapping master key.
    pub master_key_id: &'a str,
    /// Now.
    pub now_ms: i64,
}

/// Inserts a new subject; returns its id.
pub fn insert(c: &Connection, k: &KeyRecord<'_>) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO data_subjects (subject_hash, phone_enc, key_id, wrapped_key, master_key_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![&k.subject_hash[..], k.phone_enc, k.key_id, k.wrapped_key, k.master_key_id, k.now_ms],
    )?;
    Ok(c.last_insert_rowid())
}

/// Gives a shredded subject (a tombstone) a new data key, e.g. when a number whose data
/// expired under retention is called again. Only touches rows whose key is destroyed.
pub fn rekey_shredded(c: &Connection, id: i64, k: &KeyRecord<'_>) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE data_subjects SET phone_enc = ?2, key_id = ?3, wrapped_key = ?4, master_key_id = ?5,
                created_at_ms = ?6, shredded_at_ms = NULL
         WHERE id = ?1 AND wrapped_key IS NULL",
        params![id, k.phone_enc, k.key_id, k.wrapped_key, k.master_key_id, k.now_ms],
    )?;
    Ok(n == 1)
}

/// Destroys a subject's data key and encrypted number (crypto-shredding). Returns the id of
/// the key destroyed, or `None` if it was destroyed already.
pub fn shred(c: &Connection, id: i64, now_ms: i64) -> Result<Option<String>, StoreError> {
    let key_id: Option<String> = c
        .query_row(
            "SELECT key_id FROM data_subjects WHERE id = ?1 AND wrapped_key IS NOT NULL",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    c.execute(
        "UPDATE data_subjects SET wrapped_key = NULL, phone_enc = NULL,
                shredded_at_ms = coalesce(shredded_at_ms, ?2)
         WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(key_id)
}

/// A `suppression_list` row: why a number must not be dialled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuppressionRow {
    /// `erasure`, `customer_request`, `script` or `operator` (a CHECK constraint keeps it so).
    pub source: String,
    /// Free text without personal data (e.g. the erasure request id).
    pub reason: Option<String>,
    /// When the number was added.
    pub created_at_ms: i64,
}

/// Whether the number's hash is on the suppression list.
pub fn is_suppressed(c: &Connection, hash: &[u8; 32]) -> Result<bool, StoreError> {
    Ok(c.query_row(
        "SELECT 1 FROM suppression_list WHERE subject_hash = ?1",
        [&hash[..]],
        |_| Ok(()),
    )
    .optional()?
    .is_some())
}

/// The suppression entry of a hash, if any.
pub fn suppression(c: &Connection, hash: &[u8; 32]) -> Result<Option<SuppressionRow>, StoreError> {
    Ok(c.query_row(
        "SELECT source, reason, created_at_ms FROM suppression_list WHERE subject_hash = ?1",
        [&hash[..]],
        |r| {
            Ok(SuppressionRow {
                source: r.get(0)?,
                reason: r.get(1)?,
                created_at_ms: r.get(2)?,
            })
        },
    )
    .optional()?)
}

/// Adds a hash to the suppression list; returns whether it was new. An existing entry is
/// left as it is (its source and time stay those of the first addition).
pub fn suppress(
    c: &Connection,
    hash: &[u8; 32],
    source: &str,
    reason: Option<&str>,
    now_ms: i64,
) -> Result<bool, StoreError> {
    // `ON CONFLICT … DO NOTHING`, not `INSERT OR IGNORE`: OR IGNORE would also swallow a
    // CHECK violation (an unknown source) and report it as "already listed".
    let n = c.execute(
        "INSERT INTO suppression_list (subject_hash, source, reason, created_at_ms)
         VALUES (?1, ?2, ?3, ?4) ON CONFLICT (subject_hash) DO NOTHING",
        params![&hash[..], source, reason, now_ms],
    )?;
    Ok(n == 1)
}

/// Removes a hash from the suppression list; returns the entry removed, or `None` if the hash
/// was not on it. Touches nothing else: a shredded subject stays shredded.
pub fn lift(c: &Connection, hash: &[u8; 32]) -> Result<Option<SuppressionRow>, StoreError> {
    let row = suppression(c, hash)?;
    if row.is_some() {
        c.execute(
            "DELETE FROM suppression_list WHERE subject_hash = ?1",
            [&hash[..]],
        )?;
    }
    Ok(row)
}

/// How many entries the suppression list holds per source (sources without entries are
/// absent), ordered by source.
pub fn suppression_counts(c: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st =
        c.prepare("SELECT source, count(*) FROM suppression_list GROUP BY source ORDER BY source")?;
    let rows = st
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// An `appliance_keys` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplianceKeyRow {
    /// `subject_lookup` or `receipt_signing`.
    pub purpose: String,
    /// Public id.
    pub key_id: String,
    /// Public key, for signing keys.
    pub public_key: Option<Vec<u8>>,
    /// The secret wrapped by the master key.
    pub wrapped_secret: Vec<u8>,
    /// Which master key wrapped it.
    pub master_key_id: String,
    /// When it was made.
    pub created_at_ms: i64,
}

/// Every appliance key.
pub fn appliance_keys(c: &Connection) -> Result<Vec<ApplianceKeyRow>, StoreError> {
    let mut st = c.prepare(
        "SELECT purpose, key_id, public_key, wrapped_secret, master_key_id, created_at_ms
         FROM appliance_keys ORDER BY purpose",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(ApplianceKeyRow {
                purpose: r.get(0)?,
                key_id: r.get(1)?,
                public_key: r.get(2)?,
                wrapped_secret: r.get(3)?,
                master_key_id: r.get(4)?,
                created_at_ms: r.get(5)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Stores an appliance key unless one exists for its purpose; returns whether it was stored.
pub fn insert_appliance_key(c: &Connection, k: &ApplianceKeyRow) -> Result<bool, StoreError> {
    let n = c.execute(
        "INSERT OR IGNORE INTO appliance_keys (purpose, key_id, public_key, wrapped_secret, master_key_id, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![k.purpose, k.key_id, k.public_key, k.wrapped_secret, k.master_key_id, k.created_at_ms],
    )?;
    Ok(n == 1)
}

/// Keys (data keys and appliance keys) wrapped by a master key other than `master_key_id`.
pub fn count_wrapped_by_other(c: &Connection, master_key_id: &str) -> Result<i64, StoreError> {
    Ok(c.query_row(
        "SELECT (SELECT count(*) FROM data_subjects WHERE wrapped_key IS NOT NULL AND master_key_id IS NOT ?1)
              + (SELECT count(*) FROM appliance_keys WHERE master_key_id IS NOT ?1)",
        [master_key_id],
        |r| r.get(0),
    )?)
}

/// The master key ids that wrap at least one live key, with counts.
pub fn wrapping_master_keys(c: &Connection) -> Result<Vec<(String, i64)>, StoreError> {
    let mut st = c.prepare(
        "SELECT m, count(*) FROM (
            SELECT master_key_id AS m FROM data_subjects WHERE wrapped_key IS NOT NULL
            UNION ALL SELECT master_key_id FROM appliance_keys)
         GROUP BY m ORDER BY m",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?.unwrap_or_default(),
                r.get(1)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// A wrapped data key to re-wrap.
#[derive(Debug, Clone)]
pub struct WrappedDataKey {
    /// Subject id.
    pub id: i64,
    /// Subject hash (part of the wrapping AAD).
    pub subject_hash: [u8; 32],
    /// Data key id.
    pub key_id: String,
    /// The wrapped key.
    pub wrapped_key: Vec<u8>,
}

/// Up to `limit` live data keys wrapped by `master_key_id`.
pub fn wrapped_by(
    c: &Connection,
    master_key_id: &str,
    limit: usize,
) -> Result<Vec<WrappedDataKey>, StoreError> {
    let mut st = c.prepare(
        "SELECT id, subject_hash, key_id, wrapped_key FROM data_subjects
         WHERE master_key_id = ?1 AND wrapped_key IS NOT NULL ORDER BY id LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![master_key_id, limit as i64], |r| {
            Ok(WrappedDataKey {
                id: r.get(0)?,
                subject_hash: hash32(r.get(1)?)?,
                key_id: r.get(2)?,
                wrapped_key: r.get(3)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Replaces a data key's wrapping if it is still wrapped by `old` (compare-and-set, so a
/// resumed or concurrent rotation never overwrites a newer wrapping).
pub fn rewrap_data_key(
    c: &Connection,
    id: i64,
    old: &str,
    new: &str,
    wrapped: &[u8],
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE data_subjects SET wrapped_key = ?4, master_key_id = ?3
         WHERE id = ?1 AND master_key_id = ?2 AND wrapped_key IS NOT NULL",
        params![id, old, new, wrapped],
    )?;
    Ok(n == 1)
}

/// Replaces an appliance key's wrapping if it is still wrapped by `old`.
pub fn rewrap_appliance_key(
    c: &Connection,
    purpose: &str,
    old: &str,
    new: &str,
    wrapped: &[u8],
) -> Result<bool, StoreError> {
    let n = c.execute(
        "UPDATE appliance_keys SET wrapped_secret = ?4, master_key_id = ?3
         WHERE purpose = ?1 AND master_key_id = ?2",
        params![purpose, old, new, wrapped],
    )?;
    Ok(n == 1)
}

/// A `key_rotations` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RotationRow {
    /// Row id.
    pub id: i64,
    /// The key being replaced.
    pub old_master_key_id: String,
    /// The replacement.
    pub new_master_key_id: String,
    /// `rewrapping` or `done`.
    pub state: String,
    /// Keys re-wrapped so far.
    pub rewrapped: i64,
    /// Start.
    pub started_at_ms: i64,
    /// End.
    pub finished_at_ms: Option<i64>,
}

/// The rotation in progress, if any.
pub fn open_rotation(c: &Connection) -> Result<Option<RotationRow>, StoreError> {
    Ok(c.query_row(
        "SELECT id, old_master_key_id, new_master_key_id, state, rewrapped, started_at_ms, finished_at_ms
         FROM key_rotations WHERE state = 'rewrapping'",
        [],
        |r| {
            Ok(RotationRow {
                id: r.get(0)?,
                old_master_key_id: r.get(1)?,
                new_master_key_id: r.get(2)?,
                state: r.get(3)?,
                rewrapped: r.get(4)?,
                started_at_ms: r.get(5)?,
                finished_at_ms: r.get(6)?,
            })
        },
    )
    .optional()?)
}

/// Records the start of a rotation; returns its id.
pub fn start_rotation(
    c: &Connection,
    old: &str,
    new: &str,
    now_ms: i64,
) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO key_rotations (old_master_key_id, new_master_key_id, state, started_at_ms)
         VALUES (?1, ?2, 'rewrapping', ?3)",
        params![old, new, now_ms],
    )?;
    Ok(c.last_insert_rowid())
}

/// Adds to a rotation's progress counter.
pub fn add_rewrapped(c: &Connection, id: i64, n: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE key_rotations SET rewrapped = rewrapped + ?2 WHERE id = ?1",
        params![id, n],
    )?;
    Ok(())
}

/// Marks a rotation finished.
pub fn finish_rotation(c: &Connection, id: i64, now_ms: i64) -> Result<(), StoreError> {
    c.execute(
        "UPDATE key_rotations SET state = 'done', finished_at_ms = ?2 WHERE id = ?1",
        params![id, now_ms],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        crate::store::migrate::migrate(&mut c, crate::store::migrate::MIGRATIONS, 1).unwrap();
        c
    }

    #[test]
    fn suppression_add_is_idempotent_and_keeps_the_first_entry() {
        let c = db();
        let h = [3u8; 32];
        assert!(!is_suppressed(&c, &h).unwrap());
        assert_eq!(suppression(&c, &h).unwrap(), None);
        assert!(suppress(&c, &h, "customer_request", Some("asked on the call"), 10).unwrap());
        assert!(!suppress(&c, &h, "operator", None, 20).unwrap());
        assert!(is_suppressed(&c, &h).unwrap());
        assert_eq!(
            suppression(&c, &h).unwrap(),
            Some(SuppressionRow {
                source: "customer_request".into(),
                reason: Some("asked on the call".into()),
                created_at_ms: 10,
            })
        );
    }

    #[test]
    fn lift_removes_only_that_entry_and_reports_what_it_removed() {
        let c = db();
        let (a, b) = ([1u8; 32], [2u8; 32]);
        suppress(&c, &a, "erasure", Some("erasure er-1"), 5).unwrap();
        suppress(&c, &b, "operator", None, 6).unwrap();
        let gone = lift(&c, &a).unwrap().unwrap();
        assert_eq!((gone.source.as_str(), gone.created_at_ms), ("erasure", 5));
        assert_eq!(lift(&c, &a).unwrap(), None);
        assert!(!is_suppressed(&c, &a).unwrap());
        assert!(is_suppressed(&c, &b).unwrap());
    }

    #[test]
    fn counts_by_source_and_only_known_sources() {
        let c = db();
        for (i, s) in [
            "erasure",
            "customer_request",
            "customer_request",
            "script",
            "operator",
        ]
        .iter()
        .enumerate()
        {
            suppress(&c, &[i as u8; 32], s, None, 1).unwrap();
        }
        assert_eq!(
            suppression_counts(&c).unwrap(),
            vec![
                ("customer_request".to_owned(), 2),
                ("erasure".to_owned(), 1),
                ("operator".to_owned(), 1),
                ("script".to_owned(), 1),
            ]
        );
        for bad in ["do_not_call", "blacklist", ""] {
            assert!(suppress(&c, &[9; 32], bad, None, 1).is_err(), "{bad}");
        }
        assert!(suppress(&c, &[9; 32], "operator", None, 1).is_ok());
    }

    #[test]
    fn a_shredded_subject_can_be_rekeyed_and_a_live_one_cannot() {
        let c = db();
        let h = [4u8; 32];
        let rec = |key_id: &'static str, now_ms| KeyRecord {
            subject_hash: &h,
            phone_enc: b"enc",
            key_id,
            wrapped_key: b"wrapped",
            master_key_id: "kek-1",
            now_ms,
        };
        let id = insert(&c, &rec("dk-old", 1)).unwrap();
        assert!(!rekey_shredded(&c, id, &rec("dk-new", 2)).unwrap());
        assert_eq!(shred(&c, id, 3).unwrap().as_deref(), Some("dk-old"));
        let tomb = by_id(&c, id).unwrap().unwrap();
        assert_eq!((tomb.wrapped_key, tomb.phone_enc), (None, None));
        assert!(rekey_shredded(&c, id, &rec("dk-new", 4)).unwrap());
        let row = by_hash(&c, &h).unwrap().unwrap();
        assert_eq!((row.id, row.key_id.as_str()), (id, "dk-new"));
        assert_eq!((row.shredded_at_ms, row.created_at_ms), (None, 4));
    }
}
