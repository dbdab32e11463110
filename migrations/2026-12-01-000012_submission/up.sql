-- SMTP submission (issue 14): a message accepted over SMTP is kept as sent.
-- NULL for messages built from the API's fields (the worker builds their MIME).
ALTER TABLE emails ADD COLUMN raw_message bytea;
