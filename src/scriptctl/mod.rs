//! Shell side of the script engine: reading script files, checking their audio files, the
//! `vaultcall script …` commands, the simulator, and the draft/publish lifecycle shared by the
//! CLI and the admin API.

pub mod lifecycle;
pub mod simulate;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::app::{Failure, exit};
use crate::conversation::Script;
use crate::conversation::script::MAX_SCRIPT_BYTES;
use crate::conversation::validate::{CheckEnv, CompiledScript, Problem, compile_text};

/// A script file read from disk.
#[derive(Debug)]
pub struct ScriptFile {
    /// Where it came from.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
    /// The result of validation.
    pub compiled: Result<CompiledScript, Vec<Problem>>,
}

/// Reads a script file (at most [`MAX_SCRIPT_BYTES`]). Unreadable → exit 1; too large or not
/// UTF-8 → exit 78.
pub fn read_text(path: &Path) -> Result<String, Failure> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", path.display())))?;
    if meta.len() > MAX_SCRIPT_BYTES as u64 {
        return Err(Failure::config(format!(
            "{}: larger than {MAX_SCRIPT_BYTES} bytes",
            path.display()
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::runtime(format!("cannot read {}: {e}", path.display())))?;
    String::from_utf8(bytes)
        .map_err(|_| Failure::config(format!("{}: not UTF-8 text", path.display())))
}

/// The audio files a script names that exist, relative to the script's directory.
pub fn audio_present(text: &str, dir: &Path) -> BTreeSet<String> {
    let Ok(s) = Script::parse(text) else {
        return BTreeSet::new();
    };
    s.nodes
        .iter()
        .flat_map(|n| n.prompts.iter().filter_map(|p| p.audio()))
        .filter(|a| dir.join(a).is_file())
        .map(str::to_owned)
        .collect()
}

/// Reads and validates a script file, checking its audio files on disk.
pub fn load(path: &Path) -> Result<ScriptFile, Failure> {
    let text = read_text(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let env = CheckEnv {
        audio_present: Some(audio_present(&text, dir)),
    };
    let compiled = compile_text(&text, &env);
    Ok(ScriptFile {
        path: path.to_owned(),
        text,
        compiled,
    })
}

/// The exit-78 failure for a script with problems.
pub fn invalid(path: &Path, problems: &[Problem]) -> Failure {
    Failure::config(format!(
        "{}: {} problem{} (listed on stdout)",
        path.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    ))
}

/// `vaultcall script validate FILE [--json]`: the report on stdout; exit 78 with problems.
pub fn validate_cmd(path: &Path, json: bool) -> Result<String, Failure> {
    let f = load(path)?;
    match &f.compiled {
        Ok(c) => {
            let s = &c.source;
            if json {
                return Ok(format!(
                    "{}\n",
                    serde_json::json!({"file": path.display().to_string(), "valid": true, "key": s.script.key, "problems": []})
                ));
            }
            Ok(format!(
                "{}: ok — {} ({}), {} nodes, {} intents, {} grading rules\n",
                path.display(),
                s.script.name,
                s.script.key,
                c.nodes.len(),
                c.intents.len(),
                c.grader.rules.len()
            ))
        }
        Err(problems) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"file": path.display().to_string(), "valid": false, "problems": problems})
                );
            } else {
                for p in problems {
                    println!("{}: {p}", path.display());
                }
            }
            Err(invalid(path, problems))
        }
    }
}

/// Parses `--vars name=张先生,amount=3200`.
pub fn parse_vars(s: &str) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else {
            return Err(usage(format!("--vars: '{part}' is not name=value")));
        };
        out.insert(k.trim().to_owned(), v.trim().to_owned());
    }
    Ok(out)
}

/// An exit-64 failure.
pub fn usage(message: impl Into<String>) -> Failure {
    Failure {
        code: exit::USAGE,
        message: message.into(),
    }
}
