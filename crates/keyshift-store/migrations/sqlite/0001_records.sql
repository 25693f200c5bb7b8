-- Every record the vault keeps: opaque bytes under (namespace, key), with a revision for
-- compare-and-set. Secrets inside values are sealed by the vault before they get here.
CREATE TABLE records (
    ns       TEXT    NOT NULL,
    key      TEXT    NOT NULL,
    revision INTEGER NOT NULL,
    value    BLOB    NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
