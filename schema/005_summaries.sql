-- mod_mtls_audit schema, version 5: summaries.
--
-- The counts the reports need, kept once a file is sealed (by the module
-- at rotation, by `mtls-audit archive` for its output), so that a report
-- over many files reads these rows and the evidence rows they point to,
-- not every handshake.  Written in the sealing transaction by
-- mtls_summary_fill() (mod_mtls_audit/mtls_summary.c); a live file has
-- none.  The file's SHA-256, recorded by its successor, covers them.
--
-- Every row is a group of rows of one hour (`hour` = time_us / 3600 s),
-- of one kind:
--   handshakes   the handshakes of the hour by vhost, SNI, version and
--                suite, outcome, verify result and text, alert sent,
--                whether a stored certificate was presented (cert_id 1,
--                else 0) and the revocation check; n rows, of which
--                `complete` have client, vhost and (when accepted) a
--                certificate, and `outside` were accepted outside their
--                certificate's validity; first_us, last_us their times
--   certificate  the handshakes that presented certificate cert_id, by
--                outcome, per day (hour = the day's
--                first hour): a certificate's use is read per day, and a
--                row per certificate and hour would come close to the row
--                count
--   failure      the handshakes not accepted, by half hour (slot 0, 1),
--                outcome, verify text, alert, client address, SNI and
--                certificate; first_id the first of them: the failures by
--                client and the bursts (per 30 minutes) come from them
--   shared       an accepted certificate presented from more than 3
--                client addresses in the hour: n addresses, client_addr
--                the first 4 of them (in row order, comma-separated)
--   backwards    handshakes of the hour whose time is more than a second
--                before the previous handshake of the same child (pid),
--                in row order: n (a report reads the rows of a file that
--                has any)
--   requests     the requests of the hour by status; `unauth` of them were
--                made on a handshake without a verified certificate, `pan`
--                have a card number in their path (as the reports find
--                them)
-- Columns a kind does not group by are NULL.  A NULL in a grouping
-- column is a NULL of the rows.

CREATE TABLE summaries (
    hour              INTEGER NOT NULL,
    kind              TEXT NOT NULL,
    slot              INTEGER,
    server_name       TEXT,
    sni               TEXT,
    tls_version       INTEGER,
    cipher            TEXT,
    outcome           INTEGER,
    verify_result     INTEGER,
    verify_error      TEXT,
    alert             INTEGER,
    cert_id           INTEGER,
    revocation_method TEXT,
    revocation_status TEXT,
    client_addr       TEXT,
    status            INTEGER,
    n                 INTEGER NOT NULL,
    complete          INTEGER,
    outside           INTEGER,
    unauth            INTEGER,
    pan               INTEGER,
    first_id          INTEGER,
    first_us          INTEGER,
    last_us           INTEGER
);
CREATE INDEX summaries_hour ON summaries(kind, hour);

PRAGMA user_version = 5;
