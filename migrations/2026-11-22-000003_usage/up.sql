-- Per tenant, per UTC day counters for billing. No foreign key: usage must
-- outlive its tenant's deletion.
CREATE TABLE usage_daily (
    tenant_id        uuid NOT NULL,
    day              date NOT NULL,
    emails_sent      bigint NOT NULL DEFAULT 0,
    emails_delivered bigint NOT NULL DEFAULT 0,
    emails_bounced   bigint NOT NULL DEFAULT 0,
    emails_failed    bigint NOT NULL DEFAULT 0,
    api_requests     bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day)
);
CREATE INDEX usage_daily_day ON usage_daily (day);
