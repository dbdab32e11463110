DROP TABLE idempotency_keys;
DROP TABLE email_events;
DROP TABLE emails;
