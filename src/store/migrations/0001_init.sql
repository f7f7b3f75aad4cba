-- vaultcall schema, version 1. Documented in docs/schema.md; keep the two in step.
-- Times are integer milliseconds since the Unix epoch (UTC), columns named *_ms.
-- Personal data (phone numbers, names, amounts, transcripts) is never stored in clear:
-- *_hash columns are HMAC-SHA-256 keyed hashes for lookup, *_enc columns are AEAD ciphertext
-- under the data subject's key (see docs/vault.md when the vault lands).

-- Admin API bearer tokens. The secret is never stored: only a per-token salt and
-- HMAC-SHA-256(salt, secret).
CREATE TABLE admin_tokens (
    id              TEXT PRIMARY KEY,               -- public part of the token
    name            TEXT NOT NULL,
    role            TEXT NOT NULL CHECK (role IN ('admin', 'operator', 'auditor', 'compliance')),
    salt            BLOB NOT NULL CHECK (length(salt) = 16),
    secret_hash     BLOB NOT NULL CHECK (length(secret_hash) = 32),
    created_at_ms   INTEGER NOT NULL,
    created_by      TEXT,                           -- token id, or 'cli'
    expires_at_ms   INTEGER,
    last_used_at_ms INTEGER,
    revoked_at_ms   INTEGER
) STRICT;

-- Call scripts (话术). A published version is immutable (trigger below); every call stores
-- the version it ran.
CREATE TABLE script_versions (
    id              INTEGER PRIMARY KEY,
    script_key      TEXT NOT NULL,                  -- stable name across versions
    version         INTEGER NOT NULL CHECK (version >= 1),
    status          TEXT NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    format          TEXT NOT NULL,                  -- e.g. 'toml'
    content         BLOB NOT NULL,
    content_sha256  TEXT NOT NULL,
    created_at_ms   INTEGER NOT NULL,
    published_at_ms INTEGER,
    UNIQUE (script_key, version)
) STRICT;

CREATE TRIGGER script_versions_published_immutable
BEFORE UPDATE ON script_versions
WHEN OLD.status = 'published' AND (
    NEW.content IS NOT OLD.content OR NEW.content_sha256 IS NOT OLD.content_sha256
    OR NEW.script_key IS NOT OLD.script_key OR NEW.version IS NOT OLD.version
    OR NEW.status = 'draft')
BEGIN
    SELECT RAISE(ABORT, 'published script versions are immutable');
END;

-- Data subjects: one row per callee phone number. The subject's data key is wrapped by the
-- master key; erasure destroys it (wrapped_key set to NULL) before anything else.
CREATE TABLE data_subjects (
    id              INTEGER PRIMARY KEY,
    subject_hash    BLOB NOT NULL UNIQUE CHECK (length(subject_hash) = 32),
    phone_enc       BLOB,
    key_id          TEXT NOT NULL,
    wrapped_key     BLOB,
    master_key_id   TEXT,
    created_at_ms   INTEGER NOT NULL,
    shredded_at_ms  INTEGER
) STRICT;

-- Outbound tasks (campaigns).
CREATE TABLE tasks (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL,
    script_version_id   INTEGER REFERENCES script_versions (id),
    status              TEXT NOT NULL CHECK (status IN ('draft', 'running', 'paused', 'finished', 'cancelled')),
    settings_json       TEXT NOT NULL DEFAULT '{}',
    created_at_ms       INTEGER NOT NULL,
    updated_at_ms       INTEGER NOT NULL
) STRICT;

-- Numbers imported into a task, with their per-number script variables (encrypted).
-- status_code: the call status codes of docs/status-codes.md (0 waiting, 1 answered, ...).
CREATE TABLE task_numbers (
    id                  INTEGER PRIMARY KEY,
    task_id             INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    subject_id          INTEGER NOT NULL REFERENCES data_subjects (id),
    variables_enc       BLOB,
    status_code         INTEGER NOT NULL DEFAULT 0 CHECK (status_code BETWEEN 0 AND 12),
    attempts            INTEGER NOT NULL DEFAULT 0,
    next_attempt_at_ms  INTEGER,
    created_at_ms       INTEGER NOT NULL,
    UNIQUE (task_id, subject_id)
) STRICT;
CREATE INDEX task_numbers_subject ON task_numbers (subject_id);
CREATE INDEX task_numbers_due ON task_numbers (task_id, status_code, next_attempt_at_ms);

-- One row per call attempt.
CREATE TABLE calls (
    id                  INTEGER PRIMARY KEY,
    task_id             INTEGER REFERENCES tasks (id) ON DELETE SET NULL,
    number_id           INTEGER REFERENCES task_numbers (id) ON DELETE SET NULL,
    subject_id          INTEGER REFERENCES data_subjects (id),
    script_version_id   INTEGER REFERENCES script_versions (id),
    trunk               TEXT,
    sip_call_id         TEXT,
    started_at_ms       INTEGER NOT NULL,
    answered_at_ms      INTEGER,
    ended_at_ms         INTEGER,
    status_code         INTEGER NOT NULL DEFAULT 0 CHECK (status_code BETWEEN 0 AND 12),
    sip_status          INTEGER,
    hangup_by           TEXT CHECK (hangup_by IN ('robot', 'customer', 'system')),
    hangup_cause        TEXT,
    level               TEXT,
    level_rule          TEXT,
    level_reason        TEXT,
    tags_json           TEXT NOT NULL DEFAULT '[]',
    score               INTEGER NOT NULL DEFAULT 0,
    rounds              INTEGER NOT NULL DEFAULT 0,
    media_stats_json    TEXT
) STRICT;
CREATE INDEX calls_subject ON calls (subject_id);
CREATE INDEX calls_task ON calls (task_id, started_at_ms);
CREATE INDEX calls_started ON calls (started_at_ms);

-- Turns of a call: what the robot said and what the customer said (text encrypted).
CREATE TABLE turns (
    id              INTEGER PRIMARY KEY,
    call_id         INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    seq             INTEGER NOT NULL,
    speaker         TEXT NOT NULL CHECK (speaker IN ('robot', 'customer')),
    node            TEXT,
    start_ms        INTEGER NOT NULL,               -- offset from answer
    end_ms          INTEGER NOT NULL,
    text_enc        BLOB,
    intent          TEXT,
    rule            TEXT,
    confidence      REAL,
    decode_ms       INTEGER,
    UNIQUE (call_id, seq)
) STRICT;

-- Encrypted recording and transcript files (paths relative to the data directory).
CREATE TABLE recordings (
    id              INTEGER PRIMARY KEY,
    call_id         INTEGER NOT NULL REFERENCES calls (id) ON DELETE CASCADE,
    subject_id      INTEGER REFERENCES data_subjects (id),
    kind            TEXT NOT NULL CHECK (kind IN ('audio', 'transcript')),
    path            TEXT NOT NULL UNIQUE,
    key_id          TEXT NOT NULL,
    bytes           INTEGER NOT NULL DEFAULT 0,
    duration_ms     INTEGER,
    complete        INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    created_at_ms   INTEGER NOT NULL
) STRICT;
CREATE INDEX recordings_call ON recordings (call_id);
CREATE INDEX recordings_subject ON recordings (subject_id);

-- Numbers that must never be dialled again (erasure, do-not-call request, blacklist).
CREATE TABLE suppression_list (
    subject_hash    BLOB PRIMARY KEY CHECK (length(subject_hash) = 32),
    source          TEXT NOT NULL CHECK (source IN ('erasure', 'do_not_call', 'blacklist')),
    reason          TEXT,
    created_at_ms   INTEGER NOT NULL
) STRICT;

-- Compliance erasure requests and their signed receipts.
CREATE TABLE erasure_requests (
    id              INTEGER PRIMARY KEY,
    request_uid     TEXT NOT NULL UNIQUE,
    subject_hash    BLOB NOT NULL CHECK (length(subject_hash) = 32),
    ticket          TEXT NOT NULL,
    reason          TEXT NOT NULL,
    requested_by    TEXT NOT NULL,
    state           TEXT NOT NULL CHECK (state IN ('pending', 'key_destroyed', 'files_deleted', 'done')),
    started_at_ms   INTEGER NOT NULL,
    finished_at_ms  INTEGER
) STRICT;

CREATE TABLE deletion_receipts (
    id              INTEGER PRIMARY KEY,
    request_id      INTEGER NOT NULL UNIQUE REFERENCES erasure_requests (id),
    receipt_json    TEXT NOT NULL,
    signature       BLOB NOT NULL,
    created_at_ms   INTEGER NOT NULL
) STRICT;

-- Append-only, hash-chained audit log: hash = SHA-256(prev_hash || canonical entry).
CREATE TABLE audit_log (
    id              INTEGER PRIMARY KEY,
    at_ms           INTEGER NOT NULL,
    actor           TEXT NOT NULL,                  -- token id, 'cli' or 'system'
    role            TEXT,
    action          TEXT NOT NULL,
    object          TEXT,
    result          TEXT NOT NULL,
    detail_json     TEXT NOT NULL DEFAULT '{}',
    prev_hash       BLOB NOT NULL CHECK (length(prev_hash) = 32),
    hash            BLOB NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only');
END;
