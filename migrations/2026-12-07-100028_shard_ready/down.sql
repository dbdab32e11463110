DROP VIEW audit_log;
ALTER TABLE tenant_audit_log DROP CONSTRAINT tenant_audit_log_pkey;
ALTER TABLE tenant_audit_log ADD CONSTRAINT audit_log_pkey PRIMARY KEY (id);
ALTER TABLE tenant_audit_log ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE tenant_audit_log RENAME TO audit_log;
INSERT INTO audit_log (id, tenant_id, at, actor_kind, actor_id, action, target_id, request_id, changes)
SELECT id, NULL, at, actor_kind, actor_id, action, target_id, request_id, changes FROM platform_audit_log;
DROP TABLE platform_audit_log;

ALTER TABLE oauth_clients DROP CONSTRAINT oauth_clients_tenant_client_id;
ALTER TABLE oauth_clients ADD CONSTRAINT oauth_clients_client_id_key UNIQUE (client_id);
ALTER TABLE oauth_clients DROP CONSTRAINT oauth_clients_pkey;
ALTER TABLE oauth_clients ADD PRIMARY KEY (id);
ALTER TABLE oauth_clients ALTER COLUMN tenant_id DROP NOT NULL;
INSERT INTO oauth_clients
    (id, tenant_id, kind, name, client_id, secret_hash, permissions, revoked_at, last_used_at, created_at)
SELECT id, NULL, kind, name, client_id, secret_hash, permissions, revoked_at, last_used_at, created_at
FROM platform_oauth_clients;
DROP TABLE oauth_client_directory;
DROP TABLE platform_oauth_clients;

ALTER TABLE api_keys DROP CONSTRAINT api_keys_tenant_key_id;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_key_id_key UNIQUE (key_id);
ALTER TABLE api_keys DROP CONSTRAINT api_keys_pkey;
ALTER TABLE api_keys ADD PRIMARY KEY (id);
ALTER TABLE api_keys ALTER COLUMN tenant_id DROP NOT NULL;
INSERT INTO api_keys
    (id, tenant_id, kind, name, key_id, secret_hash, permissions, expires_at, revoked_at, last_used_at, created_at)
SELECT id, NULL, kind, name, key_id, secret_hash, permissions, expires_at, revoked_at, last_used_at, created_at
FROM admin_keys;
DROP TABLE api_key_directory;
DROP TABLE admin_keys;

DROP VIEW webhook_subscribers;
ALTER TABLE inbound_routes DROP CONSTRAINT inbound_routes_tenant_id_webhook_id_fkey;
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_tenant_id_delivery_id_fkey;
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_pkey;
ALTER TABLE webhook_attempts ADD PRIMARY KEY (delivery_id, attempt);
ALTER TABLE webhook_attempts DROP COLUMN tenant_id;
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_tenant_id_webhook_id_fkey;
DROP INDEX webhook_deliveries_listing;
CREATE INDEX webhook_deliveries_listing ON webhook_deliveries (webhook_id, created_at DESC, id DESC);
ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_pkey;
ALTER TABLE webhook_deliveries ADD PRIMARY KEY (id);
ALTER TABLE webhook_deliveries ALTER COLUMN tenant_id DROP NOT NULL;
ALTER TABLE webhooks DROP CONSTRAINT webhooks_pkey;
ALTER TABLE webhooks ADD PRIMARY KEY (id);
ALTER TABLE webhooks ALTER COLUMN tenant_id DROP NOT NULL;
INSERT INTO webhooks (id, tenant_id, url, events, description, secret_enc, enabled, disabled_reason, created_at, updated_at)
SELECT id, NULL, url, events, description, secret_enc, enabled, disabled_reason, created_at, updated_at
FROM platform_webhooks;
INSERT INTO webhook_deliveries
    (id, webhook_id, tenant_id, email_id, event_type, payload, status, attempts,
     next_attempt_at, last_status_code, last_error, created_at, completed_at)
SELECT id, webhook_id, tenant_id, email_id, event_type, payload, status, attempts,
       next_attempt_at, last_status_code, last_error, created_at, completed_at
FROM platform_webhook_deliveries;
INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error, duration_ms)
SELECT delivery_id, attempt, at, status_code, error, duration_ms FROM platform_webhook_attempts;
ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_webhook_id_fkey
    FOREIGN KEY (webhook_id) REFERENCES webhooks (id) ON DELETE CASCADE;
ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_delivery_id_fkey
    FOREIGN KEY (delivery_id) REFERENCES webhook_deliveries (id) ON DELETE CASCADE;
ALTER TABLE inbound_routes ADD CONSTRAINT inbound_routes_webhook_id_fkey
    FOREIGN KEY (webhook_id) REFERENCES webhooks (id) ON DELETE SET NULL;
DROP TABLE platform_webhook_attempts;
DROP TABLE platform_webhook_deliveries;
DROP TABLE platform_webhooks;

DROP INDEX domain_dkim_keys_by_id;
CREATE UNIQUE INDEX domain_dkim_keys_id ON domain_dkim_keys (id);

CREATE UNIQUE INDEX domains_verified_name ON domains (name) WHERE status = 'verified';
DROP TABLE verified_domains;

ALTER TABLE idempotency_keys RENAME COLUMN tenant_id TO scope;
INSERT INTO idempotency_keys (scope, key, request_hash, status_code, response, created_at)
SELECT admin_key_id, key, request_hash, status_code, response, created_at
FROM platform_idempotency_keys;
DROP TABLE platform_idempotency_keys;
