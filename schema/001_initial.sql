-- mod_mtls_audit schema, version 1.
--
-- Tables are the implementation; the v_* views at the end are the stable
-- query interface (PRODUCT.md section 2).  Every table that holds audit
-- data ends with a `hash` column: SHA-256 (or HMAC-SHA256 with
-- MTLSAuditChainKey) over the previous row's hash of the same table and
-- every other column of this row, in column order.  See
-- mod_mtls_audit/mtls_chain.c for the exact encoding.  Never reorder or
-- insert columns in an existing table: add them at the end, before a new
-- `hash`-preserving migration, or the chain of old rows stops verifying.
--
-- Times are integers: microseconds since the Unix epoch, UTC.  The views
-- turn them into ISO 8601 text.

CREATE TABLE certificates (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256        BLOB NOT NULL UNIQUE,   -- SHA-256 of the DER
    subject_dn    TEXT,                   -- RFC 2253, as SSL_CLIENT_S_DN
    issuer_dn     TEXT,                   -- RFC 2253, as SSL_CLIENT_I_DN
    serial        TEXT,                   -- upper-case hex
    not_before    INTEGER,                -- seconds since the epoch
    not_after     INTEGER,
    san           TEXT,                   -- "DNS:a, IP:1.2.3.4, ..."
    key_type      TEXT,                   -- RSA, EC, ED25519, ...
    key_bits      INTEGER,
    sig_alg       TEXT,                   -- OpenSSL long name
    der           BLOB,                   -- NULL with MTLSAuditStoreCertificates Off
    first_seen_us INTEGER NOT NULL,
    hash          BLOB NOT NULL
);

CREATE TABLE handshakes (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    time_us        INTEGER NOT NULL,      -- wall clock at the first byte received
    server_name    TEXT,                  -- the vhost (after SNI)
    sni            TEXT,
    client_addr    TEXT,
    client_port    INTEGER,
    local_port     INTEGER,
    tls_version    INTEGER,               -- wire code: 0x0304 = TLSv1.3
    cipher         TEXT,                  -- OpenSSL name
    resumed        INTEGER,
    outcome        INTEGER NOT NULL,      -- 1 accepted 2 rejected 3 no_certificate 4 failed 5 aborted
    kind           INTEGER NOT NULL,      -- 0 initial 1 renegotiation 2 post-handshake auth
    verify_mode    INTEGER,               -- 0 none 1 require 2 optional 3 optional_no_ca
    verify_result  INTEGER,               -- X509_V_*; NULL when no certificate was verified
    verify_error   TEXT,                  -- OpenSSL's text for verify_result
    verify_depth   INTEGER,
    alert          INTEGER,               -- fatal alert we sent
    alert_received INTEGER,               -- fatal alert the client sent
    cert_id        INTEGER REFERENCES certificates(id),
    chain          TEXT,                  -- JSON array of certificate ids, leaf first
    chain_length   INTEGER,
    handshake_us   INTEGER,
    verify_us      INTEGER,
    pid            INTEGER,               -- the httpd child that served it
    hash           BLOB NOT NULL
);
CREATE INDEX handshakes_time ON handshakes(time_us);
CREATE INDEX handshakes_cert ON handshakes(cert_id);

CREATE TABLE requests (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    handshake_id INTEGER REFERENCES handshakes(id),
    time_us      INTEGER NOT NULL,
    method       TEXT,
    path         TEXT,                    -- never the query string
    status       INTEGER,
    bytes_sent   INTEGER,
    duration_us  INTEGER,
    hash         BLOB NOT NULL
);
CREATE INDEX requests_handshake ON requests(handshake_id);

-- Lifecycle of the auditing itself (start, reload, stop) and gaps: records
-- that could not be written, with the cause.
CREATE TABLE events (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    time_us         INTEGER NOT NULL,
    kind            TEXT NOT NULL,        -- start | reload | stop | gap
    pid             INTEGER,
    server_version  TEXT,
    module_version  TEXT,
    openssl_version TEXT,
    lost            INTEGER,              -- gap: records lost
    gap_start_us    INTEGER,
    gap_end_us      INTEGER,
    detail          TEXT,
    hash            BLOB NOT NULL
);

CREATE VIEW v_handshakes AS
SELECT h.id,
       strftime('%Y-%m-%dT%H:%M:%fZ', h.time_us / 1000000.0, 'unixepoch') AS time_utc,
       h.server_name, h.sni, h.client_addr, h.client_port, h.local_port,
       CASE h.tls_version WHEN 772 THEN 'TLSv1.3' WHEN 771 THEN 'TLSv1.2'
            WHEN 770 THEN 'TLSv1.1' WHEN 769 THEN 'TLSv1' WHEN 768 THEN 'SSLv3'
            ELSE NULL END AS tls_version,
       h.cipher, h.resumed,
       CASE h.outcome WHEN 1 THEN 'accepted' WHEN 2 THEN 'rejected'
            WHEN 3 THEN 'no_certificate' WHEN 4 THEN 'failed'
            WHEN 5 THEN 'aborted' END AS outcome,
       CASE h.kind WHEN 0 THEN 'initial' WHEN 1 THEN 'renegotiation'
            WHEN 2 THEN 'post_handshake' END AS kind,
       CASE h.verify_mode WHEN 0 THEN 'none' WHEN 1 THEN 'require'
            WHEN 2 THEN 'optional' WHEN 3 THEN 'optional_no_ca' END AS verify_mode,
       h.verify_result, h.verify_error, h.verify_depth,
       h.alert,
       CASE h.alert WHEN 0 THEN 'close_notify' WHEN 10 THEN 'unexpected_message'
            WHEN 20 THEN 'bad_record_mac' WHEN 22 THEN 'record_overflow'
            WHEN 40 THEN 'handshake_failure' WHEN 42 THEN 'bad_certificate'
            WHEN 43 THEN 'unsupported_certificate' WHEN 44 THEN 'certificate_revoked'
            WHEN 45 THEN 'certificate_expired' WHEN 46 THEN 'certificate_unknown'
            WHEN 47 THEN 'illegal_parameter' WHEN 48 THEN 'unknown_ca'
            WHEN 49 THEN 'access_denied' WHEN 50 THEN 'decode_error'
            WHEN 51 THEN 'decrypt_error' WHEN 70 THEN 'protocol_version'
            WHEN 71 THEN 'insufficient_security' WHEN 80 THEN 'internal_error'
            WHEN 86 THEN 'inappropriate_fallback' WHEN 90 THEN 'user_canceled'
            WHEN 109 THEN 'missing_extension' WHEN 110 THEN 'unsupported_extension'
            WHEN 112 THEN 'unrecognized_name' WHEN 116 THEN 'certificate_required'
            WHEN 120 THEN 'no_application_protocol'
            ELSE NULL END AS alert_name,
       h.alert_received,
       CASE WHEN c.sha256 IS NOT NULL THEN lower(hex(c.sha256)) END AS cert_sha256,
       c.subject_dn, c.issuer_dn, c.serial,
       strftime('%Y-%m-%dT%H:%M:%SZ', c.not_before, 'unixepoch') AS not_before,
       strftime('%Y-%m-%dT%H:%M:%SZ', c.not_after, 'unixepoch') AS not_after,
       c.san, c.key_type, c.key_bits, c.sig_alg,
       h.chain_length,
       (SELECT group_concat(lower(hex(cc.sha256)), ' ')
          FROM json_each(h.chain) j JOIN certificates cc ON cc.id = j.value) AS chain_sha256,
       h.handshake_us, h.verify_us,
       (SELECT count(*) FROM requests r WHERE r.handshake_id = h.id) AS requests,
       h.pid
  FROM handshakes h LEFT JOIN certificates c ON c.id = h.cert_id;

CREATE VIEW v_requests AS
SELECT r.id, r.handshake_id,
       strftime('%Y-%m-%dT%H:%M:%fZ', r.time_us / 1000000.0, 'unixepoch') AS time_utc,
       r.method, r.path, r.status, r.bytes_sent, r.duration_us,
       CASE WHEN c.sha256 IS NOT NULL THEN lower(hex(c.sha256)) END AS cert_sha256, c.subject_dn
  FROM requests r
  LEFT JOIN handshakes h ON h.id = r.handshake_id
  LEFT JOIN certificates c ON c.id = h.cert_id;

CREATE VIEW v_certificates AS
SELECT CASE WHEN c.sha256 IS NOT NULL THEN lower(hex(c.sha256)) END AS cert_sha256, c.subject_dn, c.issuer_dn, c.serial,
       strftime('%Y-%m-%dT%H:%M:%SZ', c.not_before, 'unixepoch') AS not_before,
       strftime('%Y-%m-%dT%H:%M:%SZ', c.not_after, 'unixepoch') AS not_after,
       c.san, c.key_type, c.key_bits, c.sig_alg,
       strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(min(h.time_us), c.first_seen_us) / 1000000.0, 'unixepoch') AS first_seen,
       strftime('%Y-%m-%dT%H:%M:%fZ', coalesce(max(h.time_us), c.first_seen_us) / 1000000.0, 'unixepoch') AS last_seen,
       count(CASE WHEN h.outcome = 1 THEN 1 END) AS accepted,
       count(CASE WHEN h.outcome = 2 THEN 1 END) AS rejected
  FROM certificates c LEFT JOIN handshakes h ON h.cert_id = c.id
 GROUP BY c.id;

CREATE VIEW v_events AS
SELECT id, strftime('%Y-%m-%dT%H:%M:%fZ', time_us / 1000000.0, 'unixepoch') AS time_utc,
       kind, pid, server_version, module_version, openssl_version, lost,
       strftime('%Y-%m-%dT%H:%M:%fZ', gap_start_us / 1000000.0, 'unixepoch') AS gap_start,
       strftime('%Y-%m-%dT%H:%M:%fZ', gap_end_us / 1000000.0, 'unixepoch') AS gap_end,
       detail
  FROM events;

PRAGMA user_version = 1;
