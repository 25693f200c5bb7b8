-- The change feed (`Store::changes_since`): every record a batch writes or deletes, at a position
-- of its own, in commit order. SQLite runs one writer at a time (BEGIN IMMEDIATE), so positions are
-- taken from `change_feed` inside the batch's transaction and commit in order.
CREATE TABLE changes (
    seq INTEGER NOT NULL PRIMARY KEY,
    ns  TEXT    NOT NULL,
    key TEXT    NOT NULL
);
-- One row: the next position to give, and the highest position pruned (every change at or below
-- it is gone; a reader behind it must assume anything changed).
CREATE TABLE change_feed (
    id             INTEGER NOT NULL PRIMARY KEY,
    next_seq       INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL
);
INSERT INTO change_feed (id, next_seq, pruned_through) VALUES (0, 1, 0);
