ALTER TABLE tenants DROP COLUMN pools;
ALTER TABLE usage_daily DROP COLUMN emails_unsubscribed;
DELETE FROM suppressions WHERE reason = 'unsubscribe';
ALTER TABLE suppressions DROP CONSTRAINT suppressions_reason_check;
ALTER TABLE suppressions ADD CONSTRAINT suppressions_reason_check
    CHECK (reason IN ('hard_bounce', 'complaint', 'manual'));
ALTER TABLE suppressions DROP COLUMN stream;
DROP INDEX email_queue_ready_stream;
ALTER TABLE email_queue DROP COLUMN broadcast;
ALTER TABLE emails DROP COLUMN unsubscribe, DROP COLUMN stream;
