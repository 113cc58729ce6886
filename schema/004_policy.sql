-- mod_mtls_audit schema, version 4: the TLS policy of each audited
-- virtual host, as the module read it at a start or reload.
--
-- Policy rows are rows of the chained events table with kind 'policy',
-- written by the parent right after the start or reload event, one per
-- audited virtual host; detail holds a JSON object (README, "Policy
-- events"): the full policy with its digest, or, when nothing changed
-- since the vhost's last policy row, the short form naming that row in
-- unchanged_since.  A changed policy names the keys that differ in
-- changed and the row it replaces in previous.  This view only reads
-- them; no table changes, so the chain is as before.

CREATE VIEW v_policy AS
SELECT e.id,
       strftime('%Y-%m-%dT%H:%M:%fZ', e.time_us / 1000000.0, 'unixepoch') AS time_utc,
       CASE WHEN json_valid(e.detail) THEN json_extract(e.detail, '$.vhost') END AS vhost,
       CASE WHEN json_valid(e.detail) THEN json_extract(e.detail, '$.digest') END AS digest,
       CASE WHEN json_valid(e.detail) THEN json_extract(e.detail, '$.unchanged_since') END AS unchanged_since,
       CASE WHEN json_valid(e.detail) THEN json_extract(e.detail, '$.changed') END AS changed,
       e.detail AS policy
  FROM events e
 WHERE e.kind = 'policy';

PRAGMA user_version = 4;
