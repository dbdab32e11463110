DELETE FROM email_recipients r
 WHERE NOT EXISTS (SELECT 1 FROM emails e WHERE e.tenant_id = r.tenant_id AND e.id = r.email_id);
DELETE FROM email_queue q
 WHERE NOT EXISTS (SELECT 1 FROM emails e WHERE e.tenant_id = q.tenant_id AND e.id = q.email_id);
ALTER TABLE email_recipients ADD CONSTRAINT email_recipients_tenant_id_email_id_fkey
  FOREIGN KEY (tenant_id, email_id) REFERENCES emails (tenant_id, id) ON DELETE CASCADE;
ALTER TABLE email_queue ADD CONSTRAINT email_queue_tenant_id_email_id_fkey
  FOREIGN KEY (tenant_id, email_id) REFERENCES emails (tenant_id, id) ON DELETE CASCADE;
