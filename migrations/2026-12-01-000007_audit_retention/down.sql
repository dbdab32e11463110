DROP INDEX IF EXISTS emails_content_kept;
ALTER TABLE emails DROP COLUMN IF EXISTS content_purged_at;
ALTER TABLE tenants DROP COLUMN IF EXISTS retention_content_days;
DROP TABLE IF EXISTS audit_log;
