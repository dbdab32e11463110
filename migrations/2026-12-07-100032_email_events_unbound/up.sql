-- Issue 24: an event row no longer checks a foreign key to `emails`. The
-- check (an SPI query that locks the message row FOR KEY SHARE, walking the
-- HOT chain the outcome update of the same transaction just extended) was a
-- third of Postgres's CPU per delivered message end to end. Every writer of
-- events either holds the message row in its transaction (ingest, outcomes,
-- bounce reports, cancel and reschedule, tenant deletion) or locks it first
-- and writes only the events of messages still there (tracking,
-- `emails::model::lock_present`); retention deletes a message's
-- events in the statement that deletes the message.
ALTER TABLE email_events DROP CONSTRAINT email_events_tenant_id_email_id_fkey;

-- The bodies are compressed with lz4 where the server has it (`--with-lz4`,
-- as Debian's and the PGDG packages are): pglz compressing 10 KB bodies took
-- ~4 % of the machine's CPU end to end, and the `emails` insert went from
-- 113 to 56-65 us per message with lz4. Values already
-- stored keep their compression; a server without lz4 keeps pglz.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_settings
             WHERE name = 'default_toast_compression' AND 'lz4' = ANY (enumvals)) THEN
    ALTER TABLE emails
      ALTER COLUMN text_body SET COMPRESSION lz4,
      ALTER COLUMN html_body SET COMPRESSION lz4,
      ALTER COLUMN raw_message SET COMPRESSION lz4,
      ALTER COLUMN headers SET COMPRESSION lz4,
      ALTER COLUMN attachments SET COMPRESSION lz4;
  END IF;
END
$$;
