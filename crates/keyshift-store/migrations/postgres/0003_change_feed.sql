-- The change feed (`Store::changes_since`), by which nodes learn what other nodes changed.
--
-- A batch records the keys it writes or deletes in `pending_changes`, in its own transaction, under
-- a batch id of its own: no row that other batches write too, so no new contention between
-- writers. Positions are given later, by whichever node reads the feed next: it locks the one
-- `change_feed` row, moves every pending change into `changes` at the next positions and commits
-- (READ COMMITTED). Since positions are only ever given under that lock, to changes already
-- committed, a reader can never see a position and later a lower one: a writer that commits late
-- simply gets a later position. (Positions taken by the writers themselves would commit out of
-- order; a counter row updated by every batch would make every two concurrent SERIALIZABLE
-- batches conflict.)
CREATE TABLE IF NOT EXISTS pending_changes (
    batch BYTEA NOT NULL,
    ns    TEXT  NOT NULL,
    key   BYTEA NOT NULL,
    PRIMARY KEY (batch, ns, key)
);
CREATE TABLE IF NOT EXISTS changes (
    seq BIGINT NOT NULL PRIMARY KEY,
    ns  TEXT   NOT NULL,
    key BYTEA  NOT NULL
);
-- One row (id 0): the next position to give, and the highest position pruned (every change at or
-- below it is gone; a reader behind it must assume anything changed).
CREATE TABLE IF NOT EXISTS change_feed (
    id             BIGINT NOT NULL PRIMARY KEY,
    next_seq       BIGINT NOT NULL,
    pruned_through BIGINT NOT NULL
);
INSERT INTO change_feed (id, next_seq, pruned_through) VALUES (0, 1, 0) ON CONFLICT (id) DO NOTHING;
