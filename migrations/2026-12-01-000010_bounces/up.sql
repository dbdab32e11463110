-- Bounces, complaints and the suppression list (issue 13).

-- Per-recipient delivery state. Written at ingest (suppressed recipients are
-- recorded `suppressed` there), then by the worker's fenced outcomes and by
-- inbound DSNs / complaints. `recipient` is the bare address, lower-cased.
CREATE TABLE email_recipients (
    tenant_id     uuid NOT NULL,
    email_id      uuid NOT NULL,
    recipient     text NOT NULL,
    kind          text NOT NULL CHECK (kind IN ('to', 'cc', 'bcc')),
    status        text NOT NULL DEFAULT 'queued' CHECK (status IN
        ('queued', 'deferred', 'delivered', 'bounced', 'complained', 'suppressed', 'failed')),
    smtp_response text,
    bounce        jsonb,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email_id, recipient),
    FOREIGN KEY (tenant_id, email_id) REFERENCES emails (tenant_id, id) ON DELETE CASCADE
);
-- `GET /v1/emails?recipient=`: a tenant's messages to one address.
CREATE INDEX email_recipients_by_address ON email_recipients (tenant_id, recipient, email_id);

-- The suppression list: one row per tenant and address (lower-cased).
CREATE TABLE suppressions (
    tenant_id       uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email           text NOT NULL,
    reason          text NOT NULL CHECK (reason IN ('hard_bounce', 'complaint', 'manual')),
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Hard bounces expire (suppressions.hard_bounce_days); NULL = never.
    expires_at      timestamptz,
    source_email_id uuid,
    detail          text,
    PRIMARY KEY (tenant_id, email)
);
-- Listing newest first, and the purge of expired entries.
CREATE INDEX suppressions_listing ON suppressions (tenant_id, created_at DESC, email);
CREATE INDEX suppressions_expiry ON suppressions (expires_at) WHERE expires_at IS NOT NULL;

ALTER TABLE usage_daily
    ADD COLUMN emails_complained bigint NOT NULL DEFAULT 0,
    ADD COLUMN emails_suppressed bigint NOT NULL DEFAULT 0;
