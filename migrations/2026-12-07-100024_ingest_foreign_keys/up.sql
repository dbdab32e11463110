-- Issue 24: the two rows every message writes at ingest besides its own,
-- `email_recipients` and `email_queue`, no longer check a foreign key to
-- `emails` per inserted row (an SPI query and a row lock of the message,
-- which writes a WAL record). Both are written only in the transaction that
-- inserts their message (`queue::write`), and the one statement that deletes
-- messages (retention, `retention::purge_batch`) deletes their recipients
-- and queue rows in the same statement. `email_events` keeps its foreign key
-- (it is written per message only for scheduled or suppressed mail).
ALTER TABLE email_recipients DROP CONSTRAINT email_recipients_tenant_id_email_id_fkey;
ALTER TABLE email_queue DROP CONSTRAINT email_queue_tenant_id_email_id_fkey;
