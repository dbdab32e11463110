-- Issue 26: message streams, stream-scoped suppressions (RFC 8058 unsubscribe),
-- egress pools per tenant and stream.
ALTER TABLE emails
    ADD COLUMN stream text NOT NULL DEFAULT 'transactional'
        CHECK (stream IN ('transactional', 'broadcast')),
    -- List-Unsubscribe requested on a transactional message.
    ADD COLUMN unsubscribe boolean NOT NULL DEFAULT false;

-- The claim takes a tenant's transactional rows before its broadcast ones.
ALTER TABLE email_queue ADD COLUMN broadcast boolean NOT NULL DEFAULT false;
CREATE INDEX email_queue_ready_stream ON email_queue (tenant_id, broadcast, next_attempt_at)
    WHERE lease_until IS NULL AND NOT held;

-- NULL: every stream (hard bounces, complaints, manual); 'broadcast': an unsubscribe.
ALTER TABLE suppressions
    ADD COLUMN stream text CHECK (stream IN ('transactional', 'broadcast'));
ALTER TABLE suppressions DROP CONSTRAINT suppressions_reason_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason_check
    CHECK (reason IN ('hard_bounce', 'complaint', 'manual', 'unsubscribe'));

ALTER TABLE usage_daily ADD COLUMN emails_unsubscribed bigint NOT NULL DEFAULT 0;

-- {"transactional": "<pool>", "broadcast": "<pool>"}; absent = "default".
ALTER TABLE tenants ADD COLUMN pools jsonb NOT NULL DEFAULT '{}'::jsonb;
