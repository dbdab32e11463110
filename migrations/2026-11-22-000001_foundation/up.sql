-- Tenants and API keys. Every tenant-owned table leads with tenant_id so the
-- schema can later be distributed by tenant (Citus) without redesign.

CREATE TABLE tenants (
    id                  uuid PRIMARY KEY,
    external_id         text,
    name                text NOT NULL,
    domain              text,
    settings            jsonb NOT NULL DEFAULT '{}'::jsonb,
    smtp_host           text,
    smtp_port           integer,
    smtp_username       text,
    smtp_password_enc   bytea,
    smtp_tls            text,
    requests_per_minute integer,
    emails_per_day      integer,
    emails_per_second   integer,
    status              text NOT NULL DEFAULT 'active'
                        CHECK (status IN ('active', 'suspended', 'deleted')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    deleted_at          timestamptz,
    CHECK (smtp_tls IS NULL OR smtp_tls IN ('none', 'starttls', 'tls'))
);

-- external_id is unique among live tenants; a deleted tenant frees its slug.
CREATE UNIQUE INDEX tenants_external_id_live ON tenants (external_id)
    WHERE external_id IS NOT NULL AND status <> 'deleted';
CREATE INDEX tenants_listing ON tenants (created_at DESC, id DESC) WHERE status <> 'deleted';

CREATE TABLE api_keys (
    id           uuid PRIMARY KEY,
    tenant_id    uuid REFERENCES tenants (id),
    kind         text NOT NULL CHECK (kind IN ('admin', 'live')),
    name         text NOT NULL,
    key_id       text NOT NULL UNIQUE,
    secret_hash  text NOT NULL,
    permissions  text[] NOT NULL,
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'admin') = (tenant_id IS NULL))
);

CREATE INDEX api_keys_tenant ON api_keys (tenant_id, created_at DESC, id DESC);
