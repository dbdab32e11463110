ALTER TABLE email_recipients RESET (fillfactor);
ALTER TABLE emails RESET (fillfactor);
DROP INDEX emails_content_kept;
CREATE INDEX emails_content_kept ON emails (created_at)
    WHERE content_purged_at IS NULL
      AND status IN ('delivered', 'bounced', 'failed', 'canceled');
