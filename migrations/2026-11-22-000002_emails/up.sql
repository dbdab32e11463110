-- The durable queue and the message store. tenant_id leads every key.

CREATE TABLE emails (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'sending', 'deferred', 'delivered', 'bounced', 'failed', 'canceled')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    expires_at       timestamptz NOT NULL,
    last_error       text,
    smtp_response    text,
    message_id       text NOT NULL,
    from_addr        text NOT NULL,
    envelope_from    text NOT NULL,
    to_addrs         text[] NOT NULL DEFAULT '{}',
    cc_addrs         text[] NOT NULL DEFAULT '{}',
    bcc_addrs        text[] NOT NULL DEFAULT '{}',
    reply_to         text[] NOT NULL DEFAULT '{}',
    subject          text NOT NULL,
    text_body        text,
    html_body        text,
    headers          jsonb NOT NULL DEFAULT '{}'::jsonb,
    attachments      jsonb NOT NULL DEFAULT '[]'::jsonb,
    tags             jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    PRIMARY KEY (tenant_id, id)
);

-- Due work only: the claim query walks this small partial index.
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status IN ('queued', 'deferred');
-- Expired leases are found here.
CREATE INDEX emails_leased ON emails (locked_until) WHERE status = 'sending';
-- Listings: per tenant, and across tenants for platform admins.
CREATE INDEX emails_tenant_listing ON emails (tenant_id, created_at DESC, id DESC);
CREATE INDEX emails_listing ON emails (created_at DESC, id DESC);

CREATE TABLE email_events (
    tenant_id  uuid NOT NULL,
    email_id   uuid NOT NULL,
    seq        bigserial,
    type       text NOT NULL,
    detail     jsonb NOT NULL DEFAULT '{}'::jsonb,
    at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, email_id, seq),
    FOREIGN KEY (tenant_id, email_id) REFERENCES emails (tenant_id, id) ON DELETE CASCADE
);

-- Idempotency-Key: the unique key makes concurrent duplicates safe; the
-- stored response is replayed for 24 h. The scope is the tenant, or the admin
-- key for a platform-style batch that may span tenants.
CREATE TABLE idempotency_keys (
    scope         uuid NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status_code   integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_age ON idempotency_keys (created_at);
