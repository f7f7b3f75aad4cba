-- vaultcall schema, version 2: archived script versions (published ones superseded by a newer
-- publication) are as immutable as published ones, and neither can be deleted: calls keep
-- referring to the version they ran. Documented in docs/schema.md.

CREATE TRIGGER script_versions_archived_immutable
BEFORE UPDATE ON script_versions
WHEN OLD.status = 'archived' AND (
    NEW.content IS NOT OLD.content OR NEW.content_sha256 IS NOT OLD.content_sha256
    OR NEW.script_key IS NOT OLD.script_key OR NEW.version IS NOT OLD.version
    OR NEW.status IS NOT OLD.status OR NEW.published_at_ms IS NOT OLD.published_at_ms)
BEGIN
    SELECT RAISE(ABORT, 'archived script versions are immutable');
END;

CREATE TRIGGER script_versions_published_undeletable
BEFORE DELETE ON script_versions
WHEN OLD.status IN ('published', 'archived')
BEGIN
    SELECT RAISE(ABORT, 'published script versions cannot be deleted');
END;
