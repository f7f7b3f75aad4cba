//! The retention sweep: deletes what is older than its class's period (`[retention]` in the
//! config) and shreds the data key of subjects left with no data. Works in batches of
//! [`BATCH`] so it never holds the write lock for long; files go before their rows, so an
//! interrupted sweep leaves at worst a row whose file is gone, which the next sweep removes.
//! Logs and audits counts only.

use serde::Serialize;
use serde_json::json;

use super::{Records, RecordsError};
use crate::config::RetentionConfig;
use crate::ids::{RecordingId, SubjectKey};
use crate::store::calls::{self, RecordingRow};
use crate::store::{audit, subjects};
use crate::vault::files;

/// Rows handled per transaction.
pub const BATCH: usize = 500;
const DAY_MS: i64 = 86_400_000;

/// What a sweep removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// Audio files (and rows) deleted.
    pub recordings: u64,
    /// Transcript files (and rows) deleted.
    pub transcripts: u64,
    /// Turn texts cleared.
    pub turn_texts: u64,
    /// Calls deleted (with their remaining turns).
    pub calls: u64,
    /// Turns deleted with their calls.
    pub turns: u64,
    /// Data subjects whose key was shredded because nothing of theirs remains.
    pub subjects_shredded: u64,
}

impl Records {
    fn remove_files(&self, rows: &[RecordingRow]) -> Result<Vec<RecordingId>, RecordsError> {
        let mut ids = Vec::with_capacity(rows.len());
        for r in rows {
            let rel = std::path::Path::new(&r.path);
            // A row whose path the vault could not have written is not followed; it is
            // deleted, and its file (if any) goes with the subject's directory.
            if files::is_vault_path(rel) {
                files::remove_file(&self.data_dir.join(rel))
                    .map_err(RecordsError::io("removing an expired file"))?;
            }
            ids.push(r.id);
        }
        Ok(ids)
    }

    fn sweep_files(
        &self,
        fetch: impl Fn(&rusqlite::Connection) -> Result<Vec<RecordingRow>, crate::store::StoreError>,
    ) -> Result<u64, RecordsError> {
        let mut n = 0;
        loop {
            let batch = self.store.read(&fetch)?;
            if batch.is_empty() {
                return Ok(n);
            }
            let ids = self.remove_files(&batch)?;
            n += self
                .store
                .write(move |c| calls::delete_recordings(c, &ids))?;
        }
    }

    /// Runs one sweep at `now_ms`.
    pub fn retention_sweep(
        &self,
        cfg: &RetentionConfig,
        now_ms: i64,
    ) -> Result<SweepReport, RecordsError> {
        let mut rep = SweepReport::default();
        let cutoff = |days: u32| now_ms - i64::from(days) * DAY_MS;
        if cfg.recordings_days > 0 {
            let before = cutoff(cfg.recordings_days);
            rep.recordings =
                self.sweep_files(move |c| calls::files_created_before(c, "audio", before, BATCH))?;
        }
        if cfg.transcripts_days > 0 {
            let before = cutoff(cfg.transcripts_days);
            rep.transcripts = self.sweep_files(move |c| {
                calls::files_created_before(c, "transcript", before, BATCH)
            })?;
            loop {
                let n = self
                    .store
                    .write(move |c| calls::clear_turn_texts_before(c, before, BATCH))?;
                rep.turn_texts += n;
                if n == 0 {
                    break;
                }
            }
        }
        if cfg.call_metadata_days > 0 {
            let before = cutoff(cfg.call_metadata_days);
            let files =
                self.sweep_files(move |c| calls::files_of_calls_before(c, before, BATCH))?;
            // Files of expired calls that the per-class periods had not reached yet.
            rep.recordings += files;
            loop {
                let (k, t) = self
                    .store
                    .write(move |c| calls::delete_calls_before(c, before, BATCH))?;
                rep.calls += k;
                rep.turns += t;
                if k == 0 {
                    break;
                }
            }
            loop {
                let batch = self
                    .store
                    .read(move |c| calls::subjects_without_data(c, before, BATCH))?;
                if batch.is_empty() {
                    break;
                }
                let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
                self.store.write(move |c| {
                    for id in &ids {
                        subjects::shred(c, *id, now_ms)?;
                    }
                    Ok(())
                })?;
                for (_, h) in &batch {
                    // Cached prompts and any stray file of the subject.
                    files::remove_subject_dir(&self.data_dir, &SubjectKey(*h))
                        .map_err(RecordsError::io("removing a subject's files"))?;
                }
                rep.subjects_shredded += batch.len() as u64;
            }
        }
        let detail = serde_json::to_value(rep).unwrap_or_else(|_| json!({}));
        self.store.write(move |c| {
            audit::append(
                c,
                &audit::NewEntry {
                    at_ms: now_ms,
                    actor: "system",
                    role: None,
                    action: "retention.sweep",
                    object: None,
                    result: "ok",
                    detail,
                },
            )
            .map(|_| ())
        })?;
        log::info!(
            recordings = rep.recordings,
            transcripts = rep.transcripts,
            turn_texts = rep.turn_texts,
            calls = rep.calls,
            turns = rep.turns,
            subjects_shredded = rep.subjects_shredded;
            "retention sweep finished"
        );
        Ok(rep)
    }
}
