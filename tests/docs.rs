//! Documentation stays true to the code: every config key is in the shipped config, the
//! permission table in docs matches the code, every table is in the schema document, and the
//! README gives the two commands.

use std::collections::BTreeSet;
use std::path::Path;

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(rel))
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Keys in a TOML file, commented-out ones included, as dotted paths.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let l = line.trim().trim_start_matches('#').trim();
        if l.starts_with('[') && l.ends_with(']') && !l.contains(' ') {
            section = l.trim_matches(|c| c == '[' || c == ']').to_owned();
        } else if let Some((k, v)) = l.split_once(" = ") {
            // Explanations such as "normal = fsync at checkpoints" are not TOML values.
            let is_value = toml::from_str::<toml::Table>(&format!("x = {v}")).is_ok();
            if is_value
                && !k.is_empty()
                && k.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                keys.insert(if section.is_empty() {
                    k.to_owned()
                } else {
                    format!("{section}.{k}")
                });
            }
        }
    }
    keys
}

#[test]
fn shipped_config_documents_every_key() {
    let keys = documented_keys(&read("packaging/vaultcall.toml"));
    let missing: Vec<String> = vaultcall::config::Config::key_paths()
        .into_iter()
        .filter(|k| !keys.contains(k))
        .collect();
    assert!(
        missing.is_empty(),
        "not documented in packaging/vaultcall.toml: {missing:?}"
    );
    let known: BTreeSet<String> = vaultcall::config::Config::key_paths().into_iter().collect();
    let stale: Vec<&String> = keys.iter().filter(|k| !known.contains(*k)).collect();
    assert!(
        stale.is_empty(),
        "packaging/vaultcall.toml documents keys that do not exist: {stale:?}"
    );
}

#[test]
fn permission_table_in_docs_matches_the_code() {
    let doc = read("docs/admin-api.md");
    let table = vaultcall::admin::auth::permission_table_markdown();
    assert!(
        doc.contains(&table),
        "docs/admin-api.md must contain exactly:\n{table}"
    );
}

#[test]
fn schema_doc_covers_every_table() {
    let sql: String = vaultcall::store::migrate::MIGRATIONS
        .iter()
        .map(|m| m.sql)
        .collect();
    let doc = read("docs/schema.md");
    for line in sql.lines() {
        if let Some(rest) = line.strip_prefix("CREATE TABLE ") {
            let name = rest.split_whitespace().next().unwrap();
            assert!(
                doc.contains(&format!("### `{name}`")),
                "docs/schema.md lacks a section for {name}"
            );
        }
    }
}

#[test]
fn readme_gives_the_two_commands() {
    let readme = read("README.md");
    assert!(readme.contains("make demo") && readme.contains("make test"));
}

#[test]
#[ignore = "prints the permission table for pasting into docs"]
fn print_permission_table() {
    print!("{}", vaultcall::admin::auth::permission_table_markdown());
}
