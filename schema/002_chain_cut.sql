-- mod_mtls_audit schema, version 2: archiving.
--
-- `mtls-audit archive` moves the oldest rows of the tables to another
-- file.  Both files record the cut, per table, so each still verifies on
-- its own and together they prove that no row fell between them:
--   side 'base', in the live file: the rows up to id were moved out; the
--        first row left chains to hash (the hash of row id).  The module
--        continues the chain from it when every row was moved.
--   side 'end', in the archive: the chain goes on after row id (whose
--        hash is hash) in the live file; anchors for later rows are
--        checked there.
-- A file that was never archived has no rows here.

CREATE TABLE chain_cut (
    tbl      TEXT NOT NULL,           -- certificates | handshakes | requests | events
    side     TEXT NOT NULL,           -- base | end
    id       INTEGER NOT NULL,        -- the last row in the archive
    hash     BLOB NOT NULL,           -- its hash
    time_us  INTEGER NOT NULL,        -- when the cut was made
    other    TEXT,                    -- the other file, as given to archive
    PRIMARY KEY (tbl, side)
);

PRAGMA user_version = 2;
