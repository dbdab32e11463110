-- The queue apart from the message store (issue 10). `email_queue` holds one
-- narrow row per message with work left; claims, heartbeats and leases touch
-- only it. `emails` keeps the content and the status a reader sees.

ALTER TABLE emails DROP CONSTRAINT emails_status_check;
ALTER TABLE emails ADD CONSTRAINT emails_status_check CHECK (status IN
    ('queued', 'sending', 'deferred', 'delivered', 'bounced', 'failed', 'canceled',
     'held', 'scheduled', 'suppressed'));

CREATE TABLE email_queue (
    tenant_id        uuid NOT NULL,
    email_id         uuid NOT NULL,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    -- Set while a worker holds it; renewed by that worker's heartbeat.
    lease_until      timestamptz,
    -- Bumped by every claim: an outcome or heartbeat counts only with the
    -- fence of the claim it belongs to (a late worker's writes match nothing).
    fence            bigint NOT NULL DEFAULT 0,
    -- Leases that expired without an outcome (the worker died or hung).
    lost             integer NOT NULL DEFAULT 0,
    -- The tenant is suspended: not claimable until it is active again.
    held             boolean NOT NULL DEFAULT false,
    -- Content bytes (bodies, attachments, headers): bounds memory in flight.
    size_bytes       integer NOT NULL DEFAULT 0,
    PRIMARY KEY (tenant_id, email_id),
    FOREIGN KEY (tenant_id, email_id) REFERENCES emails (tenant_id, id) ON DELETE CASCADE
);

-- Claimable work per tenant in due order: the fair claim walks the tenants
-- of this index (one descent each) and takes each one's earliest rows.
CREATE INDEX email_queue_ready ON email_queue (tenant_id, next_attempt_at)
    WHERE lease_until IS NULL AND NOT held;
-- Leases, for the reclaim of expired ones.
CREATE INDEX email_queue_leases ON email_queue (lease_until) WHERE lease_until IS NOT NULL;

INSERT INTO email_queue (tenant_id, email_id, next_attempt_at, size_bytes)
SELECT tenant_id, id,
       CASE WHEN status = 'sending' THEN now() ELSE next_attempt_at END,
       octet_length(subject) + coalesce(octet_length(text_body), 0)
         + coalesce(octet_length(html_body), 0) + octet_length(attachments::text)
         + octet_length(headers::text)
FROM emails WHERE status IN ('queued', 'deferred', 'sending');
UPDATE emails SET status = 'queued' WHERE status = 'sending';

DROP INDEX emails_due;
DROP INDEX emails_leased;
ALTER TABLE emails DROP COLUMN next_attempt_at, DROP COLUMN locked_until;

-- Usage counters in shards: the quota row (shard 0) is locked only by ingest
-- for quota-bound tenants; every other counter goes to shards 1..n, one
-- statement in key order, so ingest and worker never wait on each other's
-- rows nor lock them in opposite orders. Reads sum the shards.
ALTER TABLE usage_daily ADD COLUMN shard smallint NOT NULL DEFAULT 0;
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey;
ALTER TABLE usage_daily ADD PRIMARY KEY (tenant_id, day, shard);
