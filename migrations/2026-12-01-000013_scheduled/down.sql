ALTER TABLE emails DROP COLUMN scheduled_at;
