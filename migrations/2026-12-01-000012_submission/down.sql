ALTER TABLE emails DROP COLUMN raw_message;
