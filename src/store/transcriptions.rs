//! History rows of `vaultcall transcribe` (no transcript text: that is personal data and goes
//! only to the operator's output files).

use rusqlite::{Connection, params};

use super::StoreError;

/// One file of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranscriptionRow {
    /// Run id (shared by the files of one command).
    pub run_id: String,
    /// When the file was done.
    pub created_at_ms: i64,
    /// The file as given on the command line.
    pub file_name: String,
    /// SHA-256 of the file's bytes (absent when it could not be read).
    pub file_sha256: Option<String>,
    /// `ok` or `error`.
    pub status: String,
    /// Why it failed.
    pub error: Option<String>,
    /// Audio length.
    pub audio_ms: i64,
    /// Utterances found by the VAD.
    pub segments: i64,
    /// Hotword corrections made.
    pub corrections: i64,
    /// Total decode time.
    pub decode_ms: i64,
    /// `fp32` or `int8`.
    pub precision: String,
    /// Whether ITN was on.
    pub itn: bool,
    /// Hotwords in use.
    pub hotwords: i64,
    /// The output file written.
    pub output_path: Option<String>,
}

/// Inserts a row.
pub fn insert(conn: &Connection, r: &TranscriptionRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO transcriptions (run_id, created_at_ms, file_name, file_sha256, status, error,
            audio_ms, segments, corrections, decode_ms, precision, itn, hotwords, output_path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            r.run_id,
            r.created_at_ms,
            r.file_name,
            r.file_sha256,
            r.status,
            r.error,
            r.audio_ms,
            r.segments,
            r.corrections,
            r.decode_ms,
            r.precision,
            i64::from(r.itn),
            r.hotwords,
            r.output_path
        ],
    )?;
    Ok(())
}

/// Rows of a run, in insertion order.
pub fn by_run(conn: &Connection, run_id: &str) -> Result<Vec<TranscriptionRow>, StoreError> {
    let mut st = conn.prepare(
        "SELECT run_id, created_at_ms, file_name, file_sha256, status, error, audio_ms, segments,
                corrections, decode_ms, precision, itn, hotwords, output_path
         FROM transcriptions WHERE run_id = ?1 ORDER BY id",
    )?;
    let rows = st
        .query_map([run_id], |r| {
            Ok(TranscriptionRow {
                run_id: r.get(0)?,
                created_at_ms: r.get(1)?,
                file_name: r.get(2)?,
                file_sha256: r.get(3)?,
                status: r.get(4)?,
                error: r.get(5)?,
                audio_ms: r.get(6)?,
                segments: r.get(7)?,
                corrections: r.get(8)?,
                decode_ms: r.get(9)?,
                precision: r.get(10)?,
                itn: r.get::<_, i64>(11)? != 0,
                hotwords: r.get(12)?,
                output_path: r.get(13)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
