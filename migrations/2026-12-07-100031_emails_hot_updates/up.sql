-- Issue 24: a delivery outcome updates its message's row (status, attempts,
-- response, delivered_at). Postgres can make that a heap-only (HOT) update,
-- with no new entry in any of the table's indexes, only when no indexed
-- column changes (columns in a partial index's predicate count) and the
-- page has room for the new version. `emails_content_kept` named `status`
-- in its predicate, so every outcome wrote a new entry into each of the five
-- indexes of `emails`. Retention's query still filters on the status (the
-- rows it reads from this index are checked against the table).
DROP INDEX emails_content_kept;
CREATE INDEX emails_content_kept ON emails (created_at) WHERE content_purged_at IS NULL;
-- Room on each new page for the updated versions of its rows.
ALTER TABLE emails SET (fillfactor = 85);
-- The same for a recipient's row (its status and response change with the
-- outcome; no index names them): about half its updates found no room.
ALTER TABLE email_recipients SET (fillfactor = 90);
