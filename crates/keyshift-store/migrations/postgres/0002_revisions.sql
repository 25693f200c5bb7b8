-- Revisions for compare-and-set: 1 on the first write, one more on every write. Records written
-- before this migration start at 1.
ALTER TABLE records ADD COLUMN IF NOT EXISTS revision BIGINT NOT NULL DEFAULT 1;
