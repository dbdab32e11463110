-- Templates, webhook endpoints and the webhook outbox.

-- Message templates, per tenant; the name is the handle senders use.
CREATE TABLE templates (
    tenant_id   uuid NOT NULL REFERENCES tenants (id),
    id          uuid NOT NULL,
    name        text NOT NULL,
    subject     text NOT NULL,
    html        text,
    text        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, id),
    CONSTRAINT templates_tenant_name UNIQUE (tenant_id, name)
);
CREATE INDEX templates_listing ON templates (tenant_id, created_at DESC, id DESC);

-- Webhook endpoints. tenant_id NULL = platform-wide (admin): every tenant's
-- events. The signing secret is sealed with the master key (crypto::Vault).
CREATE TABLE webhooks (
    id               uuid PRIMARY KEY,
    tenant_id        uuid REFERENCES tenants (id),
    url              text NOT NULL,
    events           text[] NOT NULL,
    description      text,
    secret_enc       bytea NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant_listing ON webhooks (tenant_id, created_at DESC, id DESC);
-- The outbox join looks up the enabled endpoints of a tenant and the platform ones.
CREATE INDEX webhooks_subscribers ON webhooks (tenant_id) WHERE enabled;

-- The outbox: one row per (event, endpoint), written in the transaction of
-- the status change that caused it. Its id is the `webhook-id` header, the
-- same on every retry. A claimed row's next_attempt_at is pushed forward by
-- the lease, so a dispatcher that dies leaves it due again when the lease ends.
CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    tenant_id        uuid,
    email_id         uuid,
    event_type       text NOT NULL,
    payload          jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'succeeded', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    completed_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (webhook_id, created_at DESC, id DESC);

-- Every POST made for a delivery: the deliveries log.
CREATE TABLE webhook_attempts (
    delivery_id  uuid NOT NULL REFERENCES webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
