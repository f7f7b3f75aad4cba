-- Schema version 4: the suppression list's sources carry the names the admin API, the CLI and
-- the audit log use (docs/vault.md §12): `erasure` (an erasure request), `customer_request`
-- (the customer asked not to be called: do-not-call), `script` (the call script's suppress
-- action) and `operator` (an operator's decision). SQLite cannot change a CHECK constraint in
-- place, so the table is rebuilt; rows made under version 1's names are carried over
-- (`do_not_call` → `customer_request`, `blacklist` → `operator`).
ALTER TABLE suppression_list RENAME TO suppression_list_v1;

CREATE TABLE suppression_list (
    subject_hash    BLOB PRIMARY KEY CHECK (length(subject_hash) = 32),
    source          TEXT NOT NULL
                    CHECK (source IN ('erasure', 'customer_request', 'script', 'operator')),
    reason          TEXT,
    created_at_ms   INTEGER NOT NULL
) STRICT;

INSERT INTO suppression_list (subject_hash, source, reason, created_at_ms)
SELECT subject_hash,
       CASE source
           WHEN 'do_not_call' THEN 'customer_request'
           WHEN 'blacklist' THEN 'operator'
           ELSE source
       END,
       reason,
       created_at_ms
FROM suppression_list_v1;

DROP TABLE suppression_list_v1;

-- Counts by source (GET /api/v1/suppression/stats) without reading the table.
CREATE INDEX suppression_list_by_source ON suppression_list (source);
