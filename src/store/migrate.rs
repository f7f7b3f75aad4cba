//! Versioned schema migrations embedded in the binary.
//!
//! All pending migrations are applied in one `BEGIN IMMEDIATE` transaction: either the database
//! reaches the binary's schema version or it is left exactly as it was and the daemon exits 78
//! with the reason. Applied migrations are recorded with the SHA-256 of their text, so an edited
//! migration (a build from a tampered tree) is refused instead of silently diverging.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::StoreError;

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Schema version this migration produces (1, 2, …, no gaps).
    pub version: i64,
    /// Short name, for messages.
    pub name: &'static str,
    /// SQL text.
    pub sql: &'static str,
}

/// The migrations this binary knows, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "script_versions_immutable",
        sql: include_str!("migrations/0002_script_versions_immutable.sql"),
    },
    Migration {
        version: 3,
        name: "vault",
        sql: include_str!("migrations/0003_vault.sql"),
    },
    Migration {
        version: 4,
        name: "suppression_sources",
        sql: include_str!("migrations/0004_suppression_sources.sql"),
    },
    Migration {
        version: 5,
        name: "transcriptions",
        sql: include_str!("migrations/0005_transcriptions.sql"),
    },
];

/// The schema version this binary produces.
pub fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |m| m.version)
}

fn sha256_hex(s: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        s.as_bytes(),
    ))
}

/// Brings the database to the latest version; returns (from, to).
pub fn migrate(
    conn: &mut Connection,
    migrations: &[Migration],
    now_ms: i64,
) -> Result<(i64, i64), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version       INTEGER PRIMARY KEY,
            name          TEXT NOT NULL,
            sha256        TEXT NOT NULL,
            applied_at_ms INTEGER NOT NULL
        ) STRICT;",
    )?;
    let current: i64 = tx.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )?;
    let latest = migrations.last().map_or(0, |m| m.version);
    if current > latest {
        return Err(StoreError::SchemaTooNew {
            database: current,
            binary: latest,
        });
    }
    for m in migrations.iter().filter(|m| m.version <= current) {
        let recorded: Option<String> = tx
            .query_row(
                "SELECT sha256 FROM schema_migrations WHERE version = ?1",
                [m.version],
                |r| r.get(0),
            )
            .optional()?;
        match recorded {
            Some(h) if h == sha256_hex(m.sql) => {}
            _ => {
                return Err(StoreError::MigrationMismatch {
                    version: m.version,
                    name: m.name,
                });
            }
        }
    }
    for m in migrations.iter().filter(|m| m.version > current) {
        tx.execute_batch(m.sql)
            .map_err(|source| StoreError::Migration {
                version: m.version,
                name: m.name,
                source,
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, sha256, applied_at_ms) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![m.version, m.name, sha256_hex(m.sql), now_ms],
        )?;
    }
    tx.commit()?;
    Ok((current, latest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut st = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn fresh_database_reaches_latest_and_second_run_is_a_no_op() {
        let mut c = Connection::open_in_memory().unwrap();
        assert_eq!(
            migrate(&mut c, MIGRATIONS, 1).unwrap(),
            (0, latest_version())
        );
        assert_eq!(
            migrate(&mut c, MIGRATIONS, 2).unwrap(),
            (latest_version(), latest_version())
        );
        let t = tables(&c);
        for want in [
            "admin_tokens",
            "appliance_keys",
            "audit_log",
            "key_rotations",
            "calls",
            "deletion_receipts",
            "recordings",
            "script_versions",
            "tasks",
            "turns",
            "transcriptions",
        ] {
            assert!(t.iter().any(|x| x == want), "missing {want}: {t:?}");
        }
    }

    #[test]
    fn a_failing_migration_leaves_the_database_as_it_was() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, MIGRATIONS, 1).unwrap();
        let before = tables(&c);
        let bad = Migration {
            version: latest_version() + 1,
            name: "broken",
            sql: "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);",
        };
        let mut all = MIGRATIONS.to_vec();
        all.push(bad);
        let err = migrate(&mut c, &all, 2).unwrap_err();
        assert!(
            matches!(err, StoreError::Migration { name: "broken", .. }),
            "{err}"
        );
        assert_eq!(tables(&c), before);
        let v: i64 = c
            .query_row("SELECT max(version) FROM schema_migrations", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(v, latest_version());
    }

    #[test]
    fn newer_database_and_edited_migration_are_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, MIGRATIONS, 1).unwrap();
        let err = migrate(&mut c, &[], 1).unwrap_err();
        assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        let mut edited = MIGRATIONS.to_vec();
        edited[0].sql = "CREATE TABLE x (y INTEGER);";
        let err = migrate(&mut c, &edited, 1).unwrap_err();
        assert!(
            matches!(err, StoreError::MigrationMismatch { version: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn version_4_renames_suppression_sources_and_keeps_every_entry() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, &MIGRATIONS[..3], 1).unwrap();
        for (i, source) in ["erasure", "do_not_call", "blacklist"].iter().enumerate() {
            c.execute(
                "INSERT INTO suppression_list (subject_hash, source, reason, created_at_ms)
                 VALUES (?1, ?2, 'r', ?3)",
                rusqlite::params![vec![i as u8; 32], source, i as i64],
            )
            .unwrap();
        }
        assert_eq!(migrate(&mut c, &MIGRATIONS[..4], 2).unwrap(), (3, 4));
        let mut st = c
            .prepare(
                "SELECT source, reason, created_at_ms FROM suppression_list ORDER BY created_at_ms",
            )
            .unwrap();
        let rows: Vec<(String, String, i64)> = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(
            rows,
            vec![
                ("erasure".into(), "r".into(), 0),
                ("customer_request".into(), "r".into(), 1),
                ("operator".into(), "r".into(), 2),
            ]
        );
        assert!(!tables(&c).iter().any(|t| t == "suppression_list_v1"));
        let old_name = c.execute(
            "INSERT INTO suppression_list (subject_hash, source, created_at_ms) VALUES (?1, 'do_not_call', 1)",
            [vec![9u8; 32]],
        );
        assert!(old_name.is_err());
    }

    #[test]
    fn published_script_versions_are_immutable() {
        let mut c = Connection::open_in_memory().unwrap();
        migrate(&mut c, MIGRATIONS, 1).unwrap();
        c.execute(
            "INSERT INTO script_versions (script_key, version, status, format, content, content_sha256, created_at_ms)
             VALUES ('k', 1, 'published', 'toml', x'00', 'h', 1)",
            [],
        )
        .unwrap();
        let e = c
            .execute("UPDATE script_versions SET content = x'01'", [])
            .unwrap_err();
        assert!(e.to_string().contains("immutable"), "{e}");
        c.execute("UPDATE script_versions SET status = 'archived'", [])
            .unwrap();
    }
}
