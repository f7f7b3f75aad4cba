//! Calls, turns, task numbers and vault-file rows: the typed inserts the vault and the call
//! layer share, and the queries erasure and retention run over them.

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::ids::{CallId, RecordingId};

/// A call attempt to record.
#[derive(Debug, Clone, Default)]
pub struct NewCall<'a> {
    /// Task, if the call belongs to one.
    pub task_id: Option<i64>,
    /// Task number, if any.
    pub number_id: Option<i64>,
    /// The callee.
    pub subject_id: i64,
    /// Trunk name.
    pub trunk: Option<&'a str>,
    /// Start time.
    pub started_at_ms: i64,
}

/// Inserts a call row.
pub fn insert_call(c: &Connection, call: &NewCall<'_>) -> Result<CallId, StoreError> {
    c.execute(
        "INSERT INTO calls (task_id, number_id, subject_id, trunk, started_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![call.task_id, call.number_id, call.subject_id, call.trunk, call.started_at_ms],
    )?;
    Ok(CallId(c.last_insert_rowid()))
}

/// How a call ended, for its row (docs/status-codes.md).
#[derive(Debug, Clone, Default)]
pub struct CallEnd {
    /// When it was answered, if it was.
    pub answered_at_ms: Option<i64>,
    /// When it ended.
    pub ended_at_ms: i64,
    /// Call status code 0–12.
    pub status_code: u8,
    /// Final SIP status, if the ending was one.
    pub sip_status: Option<u16>,
    /// `robot`, `customer` or `system`.
    pub hangup_by: &'static str,
    /// Short cause (`bye`, `sip_486`, `ring_timeout`, …).
    pub hangup_cause: String,
    /// Media statistics as JSON.
    pub media_stats_json: Option<String>,
}

/// Records how a call ended.
pub fn finish_call(c: &Connection, call: CallId, end: &CallEnd) -> Result<(), StoreError> {
    c.execute(
        "UPDATE calls SET answered_at_ms = ?2, ended_at_ms = ?3, status_code = ?4, sip_status = ?5,
         hangup_by = ?6, hangup_cause = ?7, media_stats_json = ?8 WHERE id = ?1",
        params![
            call.0,
            end.answered_at_ms,
            end.ended_at_ms,
            end.status_code,
            end.sip_status,
            end.hangup_by,
            end.hangup_cause,
            end.media_stats_json
        ],
    )?;
    Ok(())
}

/// The subject of a call.
pub fn call_subject(c: &Connection, call: CallId) -> Result<Option<i64>, StoreError> {
    Ok(c.query_row(
        "SELECT subject_id FROM calls WHERE id = ?1",
        [call.0],
        |r| r.get::<_, Option<i64>>(0),
    )
    .optional()?
    .flatten())
}

/// A turn to record; `text_enc` is sealed by the vault.
#[derive(Debug, Clone)]
pub struct NewTurn<'a> {
    /// The call.
    pub call_id: CallId,
    /// Position in the call, from 1.
    pub seq: u32,
    /// `robot` or `customer`.
    pub speaker: &'a str,
    /// Script node.
    pub node: Option<&'a str>,
    /// Offset of the start from answer, ms.
    pub start_ms: u64,
    /// Offset of the end from answer, ms.
    pub end_ms: u64,
    /// Sealed text.
    pub text_enc: &'a [u8],
}

/// Inserts a turn.
pub fn insert_turn(c: &Connection, t: &NewTurn<'_>) -> Result<(), StoreError> {
    c.execute(
        "INSERT INTO turns (call_id, seq, speaker, node, start_ms, end_ms, text_enc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![t.call_id.0, t.seq, t.speaker, t.node, t.start_ms as i64, t.end_ms as i64, t.text_enc],
    )?;
    Ok(())
}

/// The sealed text of a turn.
pub fn turn_text(c: &Connection, call: CallId, seq: u32) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(c.query_row(
        "SELECT text_enc FROM turns WHERE call_id = ?1 AND seq = ?2",
        params![call.0, seq],
        |r| r.get::<_, Option<Vec<u8>>>(0),
    )
    .optional()?
    .flatten())
}

/// Inserts a task number with its sealed variables; returns its id.
pub fn insert_task_number(
    c: &Connection,
    task_id: i64,
    subject_id: i64,
    variables_enc: &[u8],
    now_ms: i64,
) -> Result<i64, StoreError> {
    c.execute(
        "INSERT INTO task_numbers (task_id, subject_id, variables_enc, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
        params![task_id, subject_id, variables_enc, now_ms],
    )?;
    Ok(c.last_insert_rowid())
}

/// A `recordings` row (a vault file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    /// Row id.
    pub id: RecordingId,
    /// The call.
    pub call_id: CallId,
    /// The subject.
    pub subject_id: Option<i64>,
    /// `audio` or `transcript`.
    pub kind: String,
    /// Path relative to the data directory.
    pub path: String,
    /// Data key id.
    pub key_id: String,
    /// File bytes (when finished).
    pub bytes: i64,
    /// Duration (audio).
    pub duration_ms: Option<i64>,
    /// Whether the writer finished it.
    pub complete: bool,
    /// Creation time.
    pub created_at_ms: i64,
    /// File id (header binding).
    pub file_id: Option<Vec<u8>>,
    /// Content type code.
    pub content_type: Option<i64>,
}

const REC_COLS: &str = "id, call_id, subject_id, kind, path, key_id, bytes, duration_ms, complete, created_at_ms, file_id, content_type";

fn rec_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        id: RecordingId(r.get(0)?),
        call_id: CallId(r.get(1)?),
        subject_id: r.get(2)?,
        kind: r.get(3)?,
        path: r.get(4)?,
        key_id: r.get(5)?,
        bytes: r.get(6)?,
        duration_ms: r.get(7)?,
        complete: r.get::<_, i64>(8)? == 1,
        created_at_ms: r.get(9)?,
        file_id: r.get(10)?,
        content_type: r.get(11)?,
    })
}

/// A vault file being started.
#[derive(Debug, Clone)]
pub struct NewRecording<'a> {
    /// The call.
    pub call_id: CallId,
    /// The subject.
    pub subject_id: i64,
    /// `audio` or `transcript`.
    pub kind: &'a str,
    /// Relative path.
    pub path: &'a str,
    /// Data key id.
    pub key_id: &'a str,
    /// File id.
    pub file_id: &'a [u8; 16],
    /// Content type code.
    pub content_type: u8,
    /// Now.
    pub created_at_ms: i64,
}

/// Inserts a recording row (not complete yet).
pub fn insert_recording(c: &Connection, r: &NewRecording<'_>) -> Result<RecordingId, StoreError> {
    c.execute(
        "INSERT INTO recordings (call_id, subject_id, kind, path, key_id, file_id, content_type, created_at_ms)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![r.call_id.0, r.subject_id, r.kind, r.path, r.key_id, &r.file_id[..], r.content_type, r.created_at_ms],
    )?;
    Ok(RecordingId(c.last_insert_rowid()))
}

/// Marks a recording finished.
pub fn finish_recording(
    c: &Connection,
    id: RecordingId,
    bytes: u64,
    duration_ms: Option<u64>,
) -> Result<(), StoreError> {
    c.execute(
        "UPDATE recordings SET complete = 1, bytes = ?2, duration_ms = ?3 WHERE id = ?1",
        params![id.0, bytes as i64, duration_ms.map(|d| d as i64)],
    )?;
    Ok(())
}

/// One recording.
pub fn recording(c: &Connection, id: RecordingId) -> Result<Option<RecordingRow>, StoreError> {
    Ok(c.query_row(
        &format!("SELECT {REC_COLS} FROM recordings WHERE id = ?1"),
        [id.0],
        rec_row,
    )
    .optional()?)
}

/// The recordings of a call.
pub fn recordings_of_call(c: &Connection, call: CallId) -> Result<Vec<RecordingRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {REC_COLS} FROM recordings WHERE call_id = ?1 ORDER BY id"
    ))?;
    let rows = st
        .query_map([call.0], rec_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Vault files of a given kind created before `before_ms`, at most `limit`, oldest first.
pub fn files_created_before(
    c: &Connection,
    kind: &str,
    before_ms: i64,
    limit: usize,
) -> Result<Vec<RecordingRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {REC_COLS} FROM recordings WHERE kind = ?1 AND created_at_ms < ?2 ORDER BY created_at_ms LIMIT ?3"
    ))?;
    let rows = st
        .query_map(params![kind, before_ms, limit as i64], rec_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Vault files of calls started before `before_ms`, at most `limit`.
pub fn files_of_calls_before(
    c: &Connection,
    before_ms: i64,
    limit: usize,
) -> Result<Vec<RecordingRow>, StoreError> {
    let mut st = c.prepare(&format!(
        "SELECT {REC_COLS} FROM recordings WHERE call_id IN (SELECT id FROM calls WHERE started_at_ms < ?1) LIMIT ?2"
    ))?;
    let rows = st
        .query_map(params![before_ms, limit as i64], rec_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Deletes recording rows.
pub fn delete_recordings(c: &Connection, ids: &[RecordingId]) -> Result<u64, StoreError> {
    let mut st = c.prepare_cached("DELETE FROM recordings WHERE id = ?1")?;
    let mut n = 0;
    for id in ids {
        n += st.execute([id.0])? as u64;
    }
    Ok(n)
}

/// Clears the text of turns of calls started before `before_ms` (transcript retention), at
/// most `limit` turns; returns how many.
pub fn clear_turn_texts_before(
    c: &Connection,
    before_ms: i64,
    limit: usize,
) -> Result<u64, StoreError> {
    Ok(c.execute(
        "UPDATE turns SET text_enc = NULL WHERE id IN (
            SELECT t.id FROM turns t JOIN calls k ON k.id = t.call_id
            WHERE k.started_at_ms < ?1 AND t.text_enc IS NOT NULL LIMIT ?2)",
        params![before_ms, limit as i64],
    )? as u64)
}

/// Deletes up to `limit` calls started before `before_ms` (their turns and file rows go with
/// them); returns (calls, turns) deleted.
pub fn delete_calls_before(
    c: &Connection,
    before_ms: i64,
    limit: usize,
) -> Result<(u64, u64), StoreError> {
    let doomed = "(SELECT id FROM calls WHERE started_at_ms < ?1 ORDER BY id LIMIT ?2)";
    let turns: i64 = c.query_row(
        &format!("SELECT count(*) FROM turns WHERE call_id IN {doomed}"),
        params![before_ms, limit as i64],
        |r| r.get(0),
    )?;
    let calls = c.execute(
        &format!("DELETE FROM calls WHERE id IN {doomed}"),
        params![before_ms, limit as i64],
    )?;
    Ok((calls as u64, turns as u64))
}

/// Subjects with a live key but no calls and no task numbers left, created before
/// `before_ms`: their key can be shredded.
pub fn subjects_without_data(
    c: &Connection,
    before_ms: i64,
    limit: usize,
) -> Result<Vec<(i64, [u8; 32])>, StoreError> {
    let mut st = c.prepare(
        "SELECT s.id, s.subject_hash FROM data_subjects s
         WHERE s.wrapped_key IS NOT NULL AND s.created_at_ms < ?1
           AND NOT EXISTS (SELECT 1 FROM calls WHERE subject_id = s.id)
           AND NOT EXISTS (SELECT 1 FROM task_numbers WHERE subject_id = s.id)
         LIMIT ?2",
    )?;
    let rows = st
        .query_map(params![before_ms, limit as i64], |r| {
            let h: Vec<u8> = r.get(1)?;
            let h: [u8; 32] = h
                .try_into()
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, 0))?;
            Ok((r.get(0)?, h))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// What deleting a subject's rows removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubjectRowsDeleted {
    /// Call rows.
    pub calls: u64,
    /// Turn rows (transcript text).
    pub turns: u64,
    /// Audio file rows.
    pub recordings: u64,
    /// Transcript file rows.
    pub transcripts: u64,
    /// Task numbers (with their script variables).
    pub task_numbers: u64,
}

/// Deletes every call (with turns and file rows) and task number of a subject.
pub fn delete_subject_rows(
    c: &Connection,
    subject_id: i64,
) -> Result<SubjectRowsDeleted, StoreError> {
    let count = |sql: &str| -> Result<u64, StoreError> {
        Ok(c.query_row(sql, [subject_id], |r| r.get::<_, i64>(0))? as u64)
    };
    let calls_of = "(SELECT id FROM calls WHERE subject_id = ?1
                     OR number_id IN (SELECT id FROM task_numbers WHERE subject_id = ?1))";
    let out = SubjectRowsDeleted {
        calls: count(&format!("SELECT count(*) FROM {calls_of} AS x"))?,
        turns: count(&format!(
            "SELECT count(*) FROM turns WHERE call_id IN {calls_of}"
        ))?,
        recordings: count(&format!(
            "SELECT count(*) FROM recordings WHERE kind = 'audio' AND (subject_id = ?1 OR call_id IN {calls_of})"
        ))?,
        transcripts: count(&format!(
            "SELECT count(*) FROM recordings WHERE kind = 'transcript' AND (subject_id = ?1 OR call_id IN {calls_of})"
        ))?,
        task_numbers: count("SELECT count(*) FROM task_numbers WHERE subject_id = ?1")?,
    };
    c.execute(
        &format!("DELETE FROM recordings WHERE subject_id = ?1 OR call_id IN {calls_of}"),
        [subject_id],
    )?;
    c.execute(
        &format!("DELETE FROM calls WHERE id IN {calls_of}"),
        [subject_id],
    )?;
    c.execute(
        "DELETE FROM task_numbers WHERE subject_id = ?1",
        [subject_id],
    )?;
    Ok(out)
}
