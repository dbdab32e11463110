DELETE FROM audit_log WHERE actor_kind = 'system';
ALTER TABLE audit_log DROP CONSTRAINT IF EXISTS audit_log_actor_kind_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_kind_check
    CHECK (actor_kind IN ('admin_key', 'tenant_key', 'oauth_client', 'cli', 'user'));
