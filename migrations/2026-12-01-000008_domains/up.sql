-- Sending domains (issue 12): per-tenant, verified by DNS, with DKIM keys.
CREATE TABLE domains (
    tenant_id        uuid NOT NULL REFERENCES tenants (id),
    id               uuid NOT NULL,
    name             text NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'verified', 'failed')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    verified_at      timestamptz,
    last_checked_at  timestamptz,
    -- When a verified domain's required records were first seen missing;
    -- it becomes `failed` once this is older than `domains.grace_secs`.
    failing_since    timestamptz,
    -- The periodic recheck claims due domains by this column.
    next_check_at    timestamptz NOT NULL DEFAULT now(),
    -- The last check's status per record ("<purpose>:<name>" -> ok|missing|mismatch).
    checks           jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (tenant_id, id),
    UNIQUE (tenant_id, name)
);
-- Ownership: at most one tenant holds a name verified (the service also
-- refuses names under another tenant's verified name; this index closes the
-- race between two tenants verifying the same name at once).
CREATE UNIQUE INDEX domains_verified_name ON domains (name) WHERE status = 'verified';
-- The sending rule and ownership checks look names up across tenants.
CREATE INDEX domains_name ON domains (name);
CREATE INDEX domains_due ON domains (next_check_at);

-- DKIM keys per domain. The private key is sealed with the Vault, bound to
-- the key row (context `dkim_key:<id>:private_key`).
CREATE TABLE domain_dkim_keys (
    tenant_id        uuid NOT NULL,
    domain_id        uuid NOT NULL,
    id               uuid NOT NULL,
    selector         text NOT NULL,
    algorithm        text NOT NULL CHECK (algorithm IN ('rsa-sha256', 'ed25519-sha256')),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'active', 'retiring')),
    private_key_enc  bytea NOT NULL,
    public_key       text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    activated_at     timestamptz,
    retire_at        timestamptz,
    PRIMARY KEY (tenant_id, domain_id, id),
    UNIQUE (tenant_id, domain_id, selector),
    FOREIGN KEY (tenant_id, domain_id) REFERENCES domains (tenant_id, id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX domain_dkim_keys_id ON domain_dkim_keys (id);

-- A tenant's legacy `domain` becomes its first domain resource, pending; its
-- DKIM key is generated on first read or check (keys cannot be sealed in SQL).
INSERT INTO domains (tenant_id, id, name, status)
SELECT id, gen_random_uuid(), lower(domain), 'pending'
FROM tenants
WHERE domain IS NOT NULL AND status <> 'deleted'
ON CONFLICT DO NOTHING;
