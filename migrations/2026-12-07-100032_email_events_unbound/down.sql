ALTER TABLE emails
  ALTER COLUMN text_body SET COMPRESSION default,
  ALTER COLUMN html_body SET COMPRESSION default,
  ALTER COLUMN raw_message SET COMPRESSION default,
  ALTER COLUMN headers SET COMPRESSION default,
  ALTER COLUMN attachments SET COMPRESSION default;
DELETE FROM email_events ev
 WHERE NOT EXISTS (SELECT 1 FROM emails e WHERE e.tenant_id = ev.tenant_id AND e.id = ev.email_id);
ALTER TABLE email_events ADD CONSTRAINT email_events_tenant_id_email_id_fkey
  FOREIGN KEY (tenant_id, email_id) REFERENCES emails (tenant_id, id) ON DELETE CASCADE;
