-- OAuth 2.0 client credentials (issue 15). Clients mirror api_keys: a tenant
-- client belongs to one tenant, a platform client to none (tenant_id NULL),
-- and tenant_id leads the listing index.

CREATE TABLE oauth_clients (
    id           uuid PRIMARY KEY,
    tenant_id    uuid REFERENCES tenants (id),
    kind         text NOT NULL CHECK (kind IN ('platform', 'tenant')),
    name         text NOT NULL,
    client_id    text NOT NULL UNIQUE,
    secret_hash  text NOT NULL,
    permissions  text[] NOT NULL,
    revoked_at   timestamptz,
    last_used_at timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((kind = 'platform') = (tenant_id IS NULL))
);

CREATE INDEX oauth_clients_listing ON oauth_clients (tenant_id, created_at DESC, id DESC);

-- The issuer's Ed25519 signing keys (platform-wide: one issuer). The PKCS#8
-- private key is sealed with the master key, bound to the row and column.
-- The newest key without retires_at signs; every key not yet retired
-- verifies and is published in the JWKS.
CREATE TABLE oauth_signing_keys (
    id              uuid PRIMARY KEY,
    kid             text NOT NULL UNIQUE,
    private_key_enc bytea NOT NULL,
    public_key      bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    retires_at      timestamptz
);
