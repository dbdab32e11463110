CREATE TEMP TABLE usage_fold AS
  SELECT tenant_id, day, sum(emails_sent) s, sum(emails_delivered) d, sum(emails_bounced) b,
         sum(emails_failed) f, sum(api_requests) a
  FROM usage_daily GROUP BY tenant_id, day;
DELETE FROM usage_daily;
ALTER TABLE usage_daily DROP CONSTRAINT usage_daily_pkey;
ALTER TABLE usage_daily DROP COLUMN shard;
INSERT INTO usage_daily SELECT tenant_id, day, s, d, b, f, a FROM usage_fold;
ALTER TABLE usage_daily ADD PRIMARY KEY (tenant_id, day);

ALTER TABLE emails ADD COLUMN next_attempt_at timestamptz NOT NULL DEFAULT now(),
                   ADD COLUMN locked_until timestamptz;
UPDATE emails e SET next_attempt_at = q.next_attempt_at FROM email_queue q
  WHERE e.tenant_id = q.tenant_id AND e.id = q.email_id;
UPDATE emails SET status = 'queued' WHERE status IN ('held', 'scheduled');
UPDATE emails SET status = 'failed' WHERE status = 'suppressed';
DROP TABLE email_queue;
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status IN ('queued', 'deferred');
CREATE INDEX emails_leased ON emails (locked_until) WHERE status = 'sending';
ALTER TABLE emails DROP CONSTRAINT emails_status_check;
ALTER TABLE emails ADD CONSTRAINT emails_status_check CHECK (status IN
    ('queued', 'sending', 'deferred', 'delivered', 'bounced', 'failed', 'canceled'));
