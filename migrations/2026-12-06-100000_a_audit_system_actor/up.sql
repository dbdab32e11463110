-- Issue 22, finding 12: Postline's own jobs act in the audit log too (the
-- domain recheck verifying a domain): actor kind `system`, no id.
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_actor_kind_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_kind_check
    CHECK (actor_kind IN ('admin_key', 'tenant_key', 'oauth_client', 'cli', 'user', 'system'));
