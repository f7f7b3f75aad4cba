-- vaultcall schema, version 3: the encrypted recording vault, erasure, receipts, key rotation.
-- Documented in docs/schema.md and docs/vault.md; keep them in step.

-- Appliance-level secrets, wrapped by the master key like the data keys (so a master-key
-- rotation re-wraps them and nothing else changes): the HMAC key of subject lookup hashes and
-- the Ed25519 seed that signs deletion receipts.
CREATE TABLE appliance_keys (
    purpose         TEXT PRIMARY KEY CHECK (purpose IN ('subject_lookup', 'receipt_signing')),
    key_id          TEXT NOT NULL UNIQUE,
    public_key      BLOB,                           -- receipt_signing: raw Ed25519 public key
    wrapped_secret  BLOB NOT NULL,
    master_key_id   TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL
) STRICT;

-- Master-key rotations: which key replaces which, and how far re-wrapping got.
CREATE TABLE key_rotations (
    id                  INTEGER PRIMARY KEY,
    old_master_key_id   TEXT NOT NULL,
    new_master_key_id   TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('rewrapping', 'done')),
    rewrapped           INTEGER NOT NULL DEFAULT 0,
    started_at_ms       INTEGER NOT NULL,
    finished_at_ms      INTEGER
) STRICT;
CREATE UNIQUE INDEX key_rotations_one_open ON key_rotations (state) WHERE state = 'rewrapping';

-- Vault files: the file id (HKDF salt, also in the file's header) and content type, so a file
-- copied over another one is refused.
ALTER TABLE recordings ADD COLUMN file_id BLOB CHECK (file_id IS NULL OR length(file_id) = 16);
ALTER TABLE recordings ADD COLUMN content_type INTEGER CHECK (content_type IS NULL OR content_type BETWEEN 1 AND 3);
CREATE INDEX recordings_created ON recordings (created_at_ms);

-- Erasure: resumable state and what the receipt reports.
ALTER TABLE erasure_requests ADD COLUMN subject_id INTEGER;
ALTER TABLE erasure_requests ADD COLUMN source TEXT NOT NULL DEFAULT 'api' CHECK (source IN ('api', 'cli'));
ALTER TABLE erasure_requests ADD COLUMN requester_role TEXT;
ALTER TABLE erasure_requests ADD COLUMN key_ids_json TEXT NOT NULL DEFAULT '[]';
ALTER TABLE erasure_requests ADD COLUMN counts_json TEXT NOT NULL DEFAULT '{}';
ALTER TABLE erasure_requests ADD COLUMN key_destroyed_at_ms INTEGER;
ALTER TABLE erasure_requests ADD COLUMN files_found INTEGER;
CREATE UNIQUE INDEX erasure_requests_ticket_subject ON erasure_requests (ticket, subject_hash);
CREATE INDEX erasure_requests_open ON erasure_requests (state) WHERE state != 'done';

ALTER TABLE deletion_receipts ADD COLUMN signing_key_id TEXT NOT NULL DEFAULT '';

-- Deleting a subject's task numbers must not scan every call for references to them.
CREATE INDEX calls_number ON calls (number_id);
-- Rotation and start-up checks find keys wrapped by a given master key.
CREATE INDEX data_subjects_master ON data_subjects (master_key_id);
