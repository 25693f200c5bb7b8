-- Every record the vault keeps: opaque bytes under (namespace, key). Secrets inside values are
-- sealed by the vault before they get here.
--
-- `key` is BYTEA (the UTF-8 bytes of the key), not TEXT: BYTEA compares byte by byte on
-- PostgreSQL, CockroachDB and YugabyteDB whatever the database's locale, which is the order of
-- SQLite's BINARY collation, so listings and cursors behave alike on every backend. (TEXT would
-- sort by the database's collation, and CockroachDB refuses columns with COLLATE "C".)
--
-- Every migration can be run again over a partial application of itself (IF NOT EXISTS):
-- YugabyteDB runs each DDL statement in a transaction of its own unless transactional DDL is on.
CREATE TABLE IF NOT EXISTS records (
    ns    TEXT  NOT NULL,
    key   BYTEA NOT NULL,
    value BYTEA NOT NULL,
    PRIMARY KEY (ns, key)
);
