-- Usage by message stream (issue 26): the counters a message's stream can be
-- told for, per tenant, UTC day and stream, in shards like usage_daily. No
-- foreign key: usage outlives its tenant. usage_daily keeps the totals.
CREATE TABLE usage_stream_daily (
    tenant_id           uuid NOT NULL,
    day                 date NOT NULL,
    stream              text NOT NULL CHECK (stream IN ('transactional', 'broadcast')),
    shard               smallint NOT NULL,
    emails_sent         bigint NOT NULL DEFAULT 0,
    emails_delivered    bigint NOT NULL DEFAULT 0,
    emails_bounced      bigint NOT NULL DEFAULT 0,
    emails_failed       bigint NOT NULL DEFAULT 0,
    emails_complained   bigint NOT NULL DEFAULT 0,
    emails_unsubscribed bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, day, stream, shard)
);
CREATE INDEX usage_stream_daily_day ON usage_stream_daily (day);
