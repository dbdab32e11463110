ALTER TABLE usage_daily DROP COLUMN emails_clicked;
ALTER TABLE usage_daily DROP COLUMN emails_opened;
ALTER TABLE email_recipients DROP COLUMN first_clicked_at;
ALTER TABLE email_recipients DROP COLUMN first_opened_at;
ALTER TABLE emails DROP COLUMN track;
