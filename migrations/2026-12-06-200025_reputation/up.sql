-- Issue 25: tenant reputation (DESIGN §15). Figures are kept as outcomes are
-- recorded, in hourly buckets per tenant and sending domain; decisions read
-- the buckets, never `emails`.
CREATE TABLE reputation_hourly (
    tenant_id uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour timestamptz NOT NULL,
    -- The sending (From) domain, lower-cased; '' when unknown.
    domain text NOT NULL,
    delivered bigint NOT NULL DEFAULT 0,
    hard_bounced bigint NOT NULL DEFAULT 0,
    complained bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, hour, domain)
);

-- One row per tenant whose reputation was ever decided or reinstated
-- (absent = healthy).
CREATE TABLE tenant_reputation (
    tenant_id uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    status text NOT NULL DEFAULT 'healthy' CHECK (status IN ('healthy', 'warning', 'paused')),
    reason text,
    paused_at timestamptz,
    reinstated_at timestamptz,
    changed_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenant_reputation_status ON tenant_reputation (status) WHERE status <> 'healthy';

-- The per-tenant policy override (`PATCH /v1/tenants/{id}` `reputation_policy`);
-- NULL = the platform's `[reputation]` defaults.
ALTER TABLE tenants ADD COLUMN reputation_policy jsonb;
