-- Issue 11, part B: the audit log and content retention.

-- Who changed what (API.md "Audit log"). Platform actions (admin keys, the
-- CLI) belong to no tenant, so tenant_id is nullable and cannot lead a
-- primary key (docs/ARCHITECTURE.md "Deviations"): the key is the id, and
-- tenant-scoped reads walk audit_log_tenant, which tenant_id leads.
CREATE TABLE audit_log (
    id          uuid PRIMARY KEY,
    tenant_id   uuid,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_kind  text NOT NULL
                CHECK (actor_kind IN ('admin_key', 'tenant_key', 'oauth_client', 'cli', 'user')),
    actor_id    text,
    action      text NOT NULL,
    target_id   text,
    request_id  text,
    changes     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_tenant ON audit_log (tenant_id, at DESC, id DESC);
CREATE INDEX audit_log_listing ON audit_log (at DESC, id DESC);

-- Content retention: per-tenant override of retention.content_days (NULL =
-- the platform default).
ALTER TABLE tenants ADD COLUMN retention_content_days integer
    CHECK (retention_content_days BETWEEN 1 AND 3650);

-- Set when bodies, headers and attachments were purged; the message row,
-- its status and its events stay until retention.metadata_days.
ALTER TABLE emails ADD COLUMN content_purged_at timestamptz;
-- The purge walks finished messages whose content is still there, oldest first.
CREATE INDEX emails_content_kept ON emails (created_at)
    WHERE content_purged_at IS NULL
      AND status IN ('delivered', 'bounced', 'failed', 'canceled');
