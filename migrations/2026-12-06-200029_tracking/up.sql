-- Issue 29: open and click tracking.
-- What a message asked for, resolved at acceptance (send body, else the
-- tenant's `settings.tracking`): bit 1 opens, bit 2 HTML links, bit 4 text
-- links. 0 (every message before this migration) = untouched.
ALTER TABLE emails ADD COLUMN track smallint NOT NULL DEFAULT 0;
-- First human open and click per recipient (machine events never set them).
ALTER TABLE email_recipients ADD COLUMN first_opened_at timestamptz;
ALTER TABLE email_recipients ADD COLUMN first_clicked_at timestamptz;
-- Unique human opens and clicks (a recipient's first of each).
ALTER TABLE usage_daily ADD COLUMN emails_opened bigint NOT NULL DEFAULT 0;
ALTER TABLE usage_daily ADD COLUMN emails_clicked bigint NOT NULL DEFAULT 0;
