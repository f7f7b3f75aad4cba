-- vaultcall schema, version 5: the history of `vaultcall transcribe` (batch quality inspection
-- of recordings). One row per file per run. Transcripts are personal data and are not stored
-- here: they go only to the files the operator asked for (--out). Documented in docs/schema.md.

CREATE TABLE transcriptions (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    file_name       TEXT NOT NULL,
    file_sha256     TEXT,
    status          TEXT NOT NULL CHECK (status IN ('ok', 'error')),
    error           TEXT,
    audio_ms        INTEGER NOT NULL DEFAULT 0,
    segments        INTEGER NOT NULL DEFAULT 0,
    corrections     INTEGER NOT NULL DEFAULT 0,
    decode_ms       INTEGER NOT NULL DEFAULT 0,
    precision       TEXT NOT NULL,
    itn             INTEGER NOT NULL CHECK (itn IN (0, 1)),
    hotwords        INTEGER NOT NULL DEFAULT 0,
    output_path     TEXT
);

CREATE INDEX transcriptions_run ON transcriptions (run_id);
CREATE INDEX transcriptions_created ON transcriptions (created_at_ms);
