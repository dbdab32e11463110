ALTER TABLE usage_daily DROP COLUMN emails_complained, DROP COLUMN emails_suppressed;
DROP TABLE suppressions;
DROP TABLE email_recipients;
