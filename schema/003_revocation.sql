-- mod_mtls_audit schema, version 3: the revocation check of a handshake.
--
-- mod_ssl checks revocation by CRL (SSLCARevocationCheck, inside OpenSSL)
-- or by OCSP (SSLOCSPEnable, in its verify callback).  A failed check and
-- a revoked certificate used to look alike in verify_result (50, or 23
-- for both methods); these columns say which check ran and what it said:
--   revocation_method   'crl' | 'ocsp' (the check that gave the status;
--                       OCSP runs only after a CRL check passed); NULL
--                       when none ran
--   revocation_status   'good' | 'revoked' | 'unknown' (the responder,
--                       or the CRLs, know nothing of the certificate) |
--                       'unreachable' (no answer from the responder) |
--                       'bad_response' (an answer that failed its checks,
--                       or a CRL that did) | 'error' (the check failed
--                       and its cause was not logged: see README)
--
-- ALTER TABLE ADD COLUMN puts them after `hash`.  The hash chain encodes
-- the columns after `hash` only up to the last one that is not NULL
-- (mtls_chain.h): rows written before this step hash as they did, and a
-- value written since is covered.

ALTER TABLE handshakes ADD COLUMN revocation_method TEXT;
ALTER TABLE handshakes ADD COLUMN revocation_status TEXT;

DROP VIEW v_handshakes;
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
       h.pid,
       h.revocation_method, h.revocation_status
  FROM handshakes h LEFT JOIN certificates c ON c.id = h.cert_id;

PRAGMA user_version = 3;
