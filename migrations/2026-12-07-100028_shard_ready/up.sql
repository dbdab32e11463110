-- Ready to shard by tenant (issue 27): every tenant table's keys lead with
-- tenant_id and its foreign keys include it; platform rows move out of the
-- tenant tables into reference tables (`postline:reference <why>`).
-- An installation upgrades in place: existing rows are moved, not dropped.

-- Idempotency keys: a tenant's keys by (tenant_id, key); an admin batch
-- across tenants is scoped by the admin key, in a reference table.
CREATE TABLE platform_idempotency_keys (
    admin_key_id  uuid NOT NULL,
    key           text NOT NULL,
    request_hash  bytea NOT NULL,
    status_code   integer NOT NULL,
    response      jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (admin_key_id, key)
);
CREATE INDEX platform_idempotency_keys_age ON platform_idempotency_keys (created_at);
COMMENT ON TABLE platform_idempotency_keys IS
    'postline:reference Idempotency-Key replies of admin batches that span tenants, scoped by the admin key';
INSERT INTO platform_idempotency_keys (admin_key_id, key, request_hash, status_code, response, created_at)
SELECT scope, key, request_hash, status_code, response, created_at
FROM idempotency_keys WHERE scope NOT IN (SELECT id FROM tenants);
DELETE FROM idempotency_keys WHERE scope NOT IN (SELECT id FROM tenants);
ALTER TABLE idempotency_keys RENAME COLUMN scope TO tenant_id;

-- Verified domain names: one verified owner per name, platform-wide. The
-- partial unique index on domains(name) cannot be checked by one shard; the
-- directory (a reference table) holds the name instead, kept in step by
-- the domain model (src/domains/model.rs).
CREATE TABLE verified_domains (
    name       text PRIMARY KEY,
    tenant_id  uuid NOT NULL,
    domain_id  uuid NOT NULL
);
CREATE INDEX verified_domains_domain ON verified_domains (tenant_id, domain_id);
COMMENT ON TABLE verified_domains IS
    'postline:reference which tenant holds each verified domain name (ownership is platform-wide)';
INSERT INTO verified_domains (name, tenant_id, domain_id)
SELECT name, tenant_id, id FROM domains WHERE status = 'verified';
DROP INDEX domains_verified_name;

-- DKIM key ids: unique per tenant (the primary key); the rotation pages by id.
DROP INDEX domain_dkim_keys_id;
CREATE INDEX domain_dkim_keys_by_id ON domain_dkim_keys (id);

-- Webhook endpoints: the platform-wide ones (admin, every tenant's events)
-- move to `platform_webhooks`, a reference table; their deliveries and
-- attempts (the platform's own outbox) to `platform_webhook_deliveries` and
-- `platform_webhook_attempts`. What stays is keyed (tenant_id, id).
CREATE TABLE platform_webhooks (
    id               uuid PRIMARY KEY,
    url              text NOT NULL,
    events           text[] NOT NULL,
    description      text,
    secret_enc       bytea NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    disabled_reason  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX platform_webhooks_listing ON platform_webhooks (created_at DESC, id DESC);
COMMENT ON TABLE platform_webhooks IS
    'postline:reference the platform''s webhook endpoints (admin), subscribed to every tenant''s events';

-- A delivery to a platform endpoint: `tenant_id` is the event's tenant
-- (NULL for a test ping), not an owner.
CREATE TABLE platform_webhook_deliveries (
    id               uuid PRIMARY KEY,
    webhook_id       uuid NOT NULL REFERENCES platform_webhooks (id) ON DELETE CASCADE,
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
CREATE INDEX platform_webhook_deliveries_due ON platform_webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX platform_webhook_deliveries_listing
    ON platform_webhook_deliveries (webhook_id, created_at DESC, id DESC);
COMMENT ON TABLE platform_webhook_deliveries IS
    'postline:reference the outbox of the platform''s webhook endpoints (events of every tenant)';

CREATE TABLE platform_webhook_attempts (
    delivery_id  uuid NOT NULL REFERENCES platform_webhook_deliveries (id) ON DELETE CASCADE,
    attempt      integer NOT NULL,
    at           timestamptz NOT NULL DEFAULT now(),
    status_code  integer,
    error        text,
    duration_ms  integer NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);
COMMENT ON TABLE platform_webhook_attempts IS
    'postline:reference the POSTs made for the platform''s webhook deliveries';

INSERT INTO platform_webhooks
    (id, url, events, description, secret_enc, enabled, disabled_reason, created_at, updated_at)
SELECT id, url, events, description, secret_enc, enabled, disabled_reason, created_at, updated_at
FROM webhooks WHERE tenant_id IS NULL;
INSERT INTO platform_webhook_deliveries
    (id, webhook_id, tenant_id, email_id, event_type, payload, status, attempts,
     next_attempt_at, last_status_code, last_error, created_at, completed_at)
SELECT d.id, d.webhook_id, d.tenant_id, d.email_id, d.event_type, d.payload, d.status, d.attempts,
       d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.completed_at
FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id WHERE w.tenant_id IS NULL;
INSERT INTO platform_webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
SELECT a.delivery_id, a.attempt, a.at, a.status_code, a.error, a.duration_ms
FROM webhook_attempts a JOIN platform_webhook_deliveries d ON d.id = a.delivery_id;
-- Cascades to the moved deliveries and attempts; a route naming a platform
-- endpoint could not exist (routes take their tenant's endpoints only).
DELETE FROM webhooks WHERE tenant_id IS NULL;

-- Tenant endpoints: keyed (tenant_id, id); children reference both.
ALTER TABLE inbound_routes DROP CONSTRAINT inbound_routes_webhook_id_fkey;
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_delivery_id_fkey;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_webhook_id_fkey;
ALTER TABLE webhooks ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE webhooks DROP CONSTRAINT webhooks_pkey;
ALTER TABLE webhooks ADD PRIMARY KEY (tenant_id, id);
DROP INDEX webhooks_subscribers;
CREATE INDEX webhooks_subscribers ON webhooks (tenant_id) WHERE enabled;

-- A tenant endpoint's deliveries carry its tenant (a ping's row always did).
UPDATE webhook_deliveries d SET tenant_id = w.tenant_id
FROM webhooks w WHERE w.id = d.webhook_id AND d.tenant_id IS DISTINCT FROM w.tenant_id;
ALTER TABLE webhook_deliveries ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_pkey;
ALTER TABLE webhook_deliveries ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE webhook_deliveries ADD FOREIGN KEY (tenant_id, webhook_id)
    REFERENCES webhooks (tenant_id, id) ON DELETE CASCADE;
DROP INDEX webhook_deliveries_listing;
CREATE INDEX webhook_deliveries_listing
    ON webhook_deliveries (tenant_id, webhook_id, created_at DESC, id DESC);

ALTER TABLE webhook_attempts ADD COLUMN tenant_id uuid;
UPDATE webhook_attempts a SET tenant_id = d.tenant_id
FROM webhook_deliveries d WHERE d.id = a.delivery_id;
ALTER TABLE webhook_attempts ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_pkey;
ALTER TABLE webhook_attempts ADD PRIMARY KEY (tenant_id, delivery_id, attempt);
ALTER TABLE webhook_attempts ADD FOREIGN KEY (tenant_id, delivery_id)
    REFERENCES webhook_deliveries (tenant_id, id) ON DELETE CASCADE;

-- A route's endpoint is one of its tenant's; deleting the endpoint clears
-- the route's webhook_id only (PostgreSQL 15's column list).
ALTER TABLE inbound_routes ADD FOREIGN KEY (tenant_id, webhook_id)
    REFERENCES webhooks (tenant_id, id) ON DELETE SET NULL (webhook_id);

-- What the outbox joins: the enabled endpoints of a tenant and the platform's.
CREATE VIEW webhook_subscribers AS
    SELECT tenant_id, id, events, enabled FROM webhooks
    UNION ALL
    SELECT NULL::uuid, id, events, enabled FROM platform_webhooks;

-- API keys: admin keys move to `admin_keys` (a reference table); tenant
-- keys are keyed (tenant_id, id). Authentication has only the token's key
-- id: `api_key_directory` (a reference table) says whose it is (NULL: an
-- admin key) and holds key ids unique across the platform.
CREATE TABLE admin_keys (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL DEFAULT 'admin' CHECK (kind = 'admin'),
    name         text NOT NULL,
    key_id       text NOT NULL UNIQUE,
    secret_hash  text NOT NULL,
    permissions  text[] NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX admin_keys_listing ON admin_keys (created_at DESC, id DESC);
COMMENT ON TABLE admin_keys IS 'postline:reference the platform''s admin API keys';
CREATE TABLE api_key_directory (
    key_id     text PRIMARY KEY,
    tenant_id  uuid
);
COMMENT ON TABLE api_key_directory IS
    'postline:reference whose each API key id is (NULL: an admin key): authentication reads it before it knows the tenant';
INSERT INTO admin_keys
    (id, kind, name, key_id, secret_hash, permissions, expires_at, revoked_at, last_used_at, created_at)
SELECT id, kind, name, key_id, secret_hash, permissions, expires_at, revoked_at, last_used_at, created_at
FROM api_keys WHERE tenant_id IS NULL;
INSERT INTO api_key_directory (key_id, tenant_id) SELECT key_id, tenant_id FROM api_keys;
DELETE FROM api_keys WHERE tenant_id IS NULL;
ALTER TABLE api_keys ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE api_keys DROP CONSTRAINT api_keys_pkey;
ALTER TABLE api_keys ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_key_id_key;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_tenant_key_id UNIQUE (tenant_id, key_id);

-- OAuth clients, the same way: platform clients to `platform_oauth_clients`,
-- the token endpoint's `client_id` lookup through `oauth_client_directory`.
CREATE TABLE platform_oauth_clients (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL DEFAULT 'platform' CHECK (kind = 'platform'),
    name         text NOT NULL,
    client_id    text NOT NULL UNIQUE,
    secret_hash  text NOT NULL,
    permissions  text[] NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX platform_oauth_clients_listing ON platform_oauth_clients (created_at DESC, id DESC);
COMMENT ON TABLE platform_oauth_clients IS 'postline:reference the platform''s OAuth clients (admin)';
CREATE TABLE oauth_client_directory (
    client_id  text PRIMARY KEY,
    tenant_id  uuid
);
COMMENT ON TABLE oauth_client_directory IS
    'postline:reference whose each OAuth client_id is (NULL: the platform''s): the token endpoint reads it before it knows the tenant';
INSERT INTO platform_oauth_clients
    (id, kind, name, client_id, secret_hash, permissions, revoked_at, last_used_at, created_at)
SELECT id, kind, name, client_id, secret_hash, permissions, revoked_at, last_used_at, created_at
FROM oauth_clients WHERE tenant_id IS NULL;
INSERT INTO oauth_client_directory (client_id, tenant_id) SELECT client_id, tenant_id FROM oauth_clients;
DELETE FROM oauth_clients WHERE tenant_id IS NULL;
ALTER TABLE oauth_clients ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE oauth_clients DROP CONSTRAINT oauth_clients_pkey;
ALTER TABLE oauth_clients ADD PRIMARY KEY (tenant_id, id);
ALTER TABLE oauth_clients DROP CONSTRAINT oauth_clients_client_id_key;
ALTER TABLE oauth_clients ADD CONSTRAINT oauth_clients_tenant_client_id UNIQUE (tenant_id, client_id);

-- The audit log: a tenant's entries in `tenant_audit_log` (keyed
-- (tenant_id, id)), the platform's (admin and CLI actions on no tenant) in
-- `platform_audit_log`; `audit_log` becomes the view of both.
CREATE TABLE platform_audit_log (
    id          uuid PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor_kind  text NOT NULL
                CHECK (actor_kind IN ('admin_key', 'tenant_key', 'oauth_client', 'cli', 'user', 'system')),
    actor_id    text,
    action      text NOT NULL,
    target_id   text,
    request_id  text,
    changes     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX platform_audit_log_listing ON platform_audit_log (at DESC, id DESC);
COMMENT ON TABLE platform_audit_log IS
    'postline:reference audit entries of platform actions (admin keys, the CLI) that belong to no tenant';
INSERT INTO platform_audit_log (id, at, actor_kind, actor_id, action, target_id, request_id, changes)
SELECT id, at, actor_kind, actor_id, action, target_id, request_id, changes
FROM audit_log WHERE tenant_id IS NULL;
DELETE FROM audit_log WHERE tenant_id IS NULL;
ALTER TABLE audit_log RENAME TO tenant_audit_log;
ALTER TABLE tenant_audit_log ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE tenant_audit_log DROP CONSTRAINT audit_log_pkey;
ALTER TABLE tenant_audit_log ADD CONSTRAINT tenant_audit_log_pkey PRIMARY KEY (tenant_id, id);
CREATE VIEW audit_log AS
    SELECT id, tenant_id, at, actor_kind, actor_id, action, target_id, request_id, changes
    FROM tenant_audit_log
    UNION ALL
    SELECT id, NULL::uuid, at, actor_kind, actor_id, action, target_id, request_id, changes
    FROM platform_audit_log;
