-- Scheduled send (issue 14). A scheduled message is an ordinary message
-- whose queue row waits until `scheduled_at` (email_queue.next_attempt_at =
-- scheduled_at), so claiming it uses the same ready index as the rest. The
-- status `scheduled` was allowed by the queue migration already.
ALTER TABLE emails ADD COLUMN scheduled_at timestamptz;
