"""Reports judge the recorded TLS policy beside the traffic (issue 21).
Known-truth data sets, each written by a real apache2 configured for it
(test_policy.PolicyServer: one audited vhost, graceful reloads between
configurations) with real handshakes; the report of each is read as JSON
and its statuses, what gave them and the policy rows behind them checked
against what the configuration and the clients did.  The statuses of
every data set are printed (`policy report statuses`)."""
import json
import os
import subprocess
import time

import clients
import pki
from harness import Registry, wait_for
from test_policy import bundle, epoch, field, ossl, start_server
import test_tool

test = Registry()

# The checks that read the policy, per standard.
TOUCHED = {
    "pci-dss": ("4.2.1", "4.2.1 revocation", "4.2.1.1", "12.3.3", "8.2.1"),
    "hipaa": ("164.312(a)(1), (a)(2)(i)", "164.312(d)",
              "164.312(e)(1), (e)(2)(i), (e)(2)(ii)",
              "164.312(e) revocation"),
}
CHANGES = {"pci-dss": "10.2.1.7", "hipaa": "164.312(b) policy"}


def scratch(ctx, name):
    d = os.path.join(ctx.scratch, "policy-report", name)
    os.makedirs(d, exist_ok=True)
    return d


def own_ca(ctx, name):
    """A CA of this data set's own and a client certificate it issued."""
    base = scratch(ctx, name)
    ca = pki.CA(base, "ca", "/O=mtls-audit tests/CN=Report %s CA" % name)
    client = ca.issue(base, "client", "/O=Example/CN=%s-client" % name)
    return base, ca, client


def handshake(srv, cert, tls="1.3", want="200"):
    """One real handshake and request with curl; waits for its row."""
    after = srv.max_id()
    r = clients.curl(srv, cert, tls=tls)
    if want == "200":
        assert r.stdout.strip() == "200", (r.stdout, r.stderr)
    else:
        assert r.stdout.strip() != "200", (r.stdout, r.stderr)
    rows = srv.wait_rows(after, 1, timeout=30)
    assert len(rows) >= 1, "no handshake row"
    return rows[-1]


def report(ctx, db, standard="pci-dss", fmt="json"):
    r = subprocess.run([ctx.tool, "report", "--standard", standard,
                        "--format", fmt, db], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode in (0, 1), (r.returncode, r.stderr)
    return r


def checks(ctx, db, standard="pci-dss"):
    r = report(ctx, db, standard)
    doc = json.loads(r.stdout)
    return {c["id"]: c for c in doc["checks"]}, doc


def pev(c, **want):
    """The policy evidence rows of check c whose columns match want
    (a value ending in '*' matches as a prefix)."""
    out = []
    for row in c.get("policy_evidence", []):
        ok = True
        for k, v in want.items():
            got = row.get(k) or ""
            ok &= got.startswith(v[:-1]) if v.endswith("*") else got == v
        if ok:
            out.append(row)
    return out


def statuses(ctx, name, db):
    """Print the statuses of the data set under both standards (the note
    of issue 21 shows them) and return them."""
    out = {}
    for standard in ("pci-dss", "hipaa"):
        c, _ = checks(ctx, db, standard)
        out[standard] = {k: (v["status"], v.get("status_from"))
                         for k, v in c.items()
                         if k in TOUCHED[standard] or k == CHANGES[standard]}
    print("    policy report statuses, %s: %s" % (name, json.dumps(out)),
          flush=True)
    return out


def no_new_errors(srv, expected=()):
    bad = srv.new_errors(expected)
    assert not bad, bad


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))


def tight_suites():
    """Only approved protocols and suites (NIST SP 800-52r2)."""
    return ("SSLProtocol -all +TLSv1.2 +TLSv1.3",
            "SSLCipherSuite ECDHE-ECDSA-AES128-GCM-SHA256:"
            "ECDHE-ECDSA-AES256-GCM-SHA384",
            "SSLCipherSuite TLSv1.3 TLS_AES_256_GCM_SHA384:"
            "TLS_AES_128_GCM_SHA256")


# -- the data sets -------------------------------------------------------
@test(once=True)
def policy_report_crl_configured_nothing_revoked_passes_4_2_1(ctx):
    """A CRL within its nextUpdate and CRL checking on the chain, only
    approved protocols and suites, nothing revoked: PCI 4.2.1 and its
    revocation check PASS, on the configuration and the traffic both, the
    CRL named with its next update; HIPAA 164.312(e) alike."""
    base, ca, client = own_ca(ctx, "crl-ok")
    crl = os.path.join(base, "ca.crl")
    ca.crl(crl)
    next_update = epoch(field(ossl("crl", "-in", crl, "-noout",
                                   "-nextupdate"), "nextUpdate"))
    srv = start_server(ctx, "report-crl-ok", ca_file=ca.cert, extra=(
        "SSLCARevocationFile %s" % crl, "SSLCARevocationCheck chain")
        + tight_suites())
    try:
        handshake(srv, client, tls="1.3")
        handshake(srv, client, tls="1.2")
        no_new_errors(srv)
        c, doc = checks(ctx, srv.db)
        assert doc["report"]["policy_recorded"] is True, doc["report"]
        for cid in ("4.2.1", "4.2.1 revocation"):
            assert c[cid]["status"] == "PASS", c[cid]
            assert c[cid]["status_from"] == "traffic and configuration", \
                c[cid]
            rows = pev(c[cid], item="CRL", finding="within its next update: "
                       "revocation checked by configuration")
            assert len(rows) == 1 and "next update %s" % iso(next_update) \
                in rows[0]["value"], c[cid]["policy_evidence"]
        assert "revocation: checked by configuration" in c["4.2.1"][
            "policy"], c["4.2.1"]["policy"]
        h, _ = checks(ctx, srv.db, "hipaa")
        for cid in ("164.312(e)(1), (e)(2)(i), (e)(2)(ii)",
                    "164.312(e) revocation"):
            assert h[cid]["status"] == "PASS", h[cid]
        statuses(ctx, "CRL configured, nothing revoked", srv.db)
    finally:
        srv.stop()


@test(once=True, asan=False)   # 40 s waiting for the CRL to expire
def policy_report_crl_expiring_mid_period_fails_from_then(ctx):
    """A CRL whose nextUpdate comes 40 s after it was made (openssl ca
    -gencrl -crlsec 40): a handshake before then is accepted, one after is
    refused by mod_ssl; PCI 4.2.1 and its revocation check FAIL on the
    configuration, from the CRL's nextUpdate exactly."""
    base, ca, client = own_ca(ctx, "crl-expiring")
    crl = os.path.join(base, "ca.crl")
    pki.run("openssl", "ca", "-config", ca.conf, "-gencrl", "-crlsec", "40",
            "-keyfile", ca.key, "-cert", ca.cert, "-out", crl)
    next_update = epoch(field(ossl("crl", "-in", crl, "-noout",
                                   "-nextupdate"), "nextUpdate"))
    srv = start_server(ctx, "report-crl-expiring", ca_file=ca.cert, extra=(
        "SSLCARevocationFile %s" % crl, "SSLCARevocationCheck chain")
        + tight_suites())
    try:
        assert time.time() < next_update - 2, "the CRL ran out too early"
        row = handshake(srv, client)
        assert row["outcome"] == "accepted", row
        assert wait_for(lambda: time.time() > next_update + 1, 60)
        row = handshake(srv, client, want="refused")
        # mod_ssl refuses it: the CRL did not pass its checks (expired).
        assert row["outcome"] != "accepted" and (
            row["revocation_method"], row["revocation_status"]) == (
            "crl", "bad_response"), row
        no_new_errors(srv, (r"AH02039", r"CRL", r"SSL Library Error",
                            r"AH02261", r"AH02008"))
        c, _ = checks(ctx, srv.db)
        since = "%s.000Z" % iso(next_update)
        for cid in ("4.2.1", "4.2.1 revocation"):
            assert c[cid]["status"] == "FAIL", c[cid]
            assert c[cid]["status_from"] == "configuration", c[cid]
            rows = pev(c[cid], item="CRL", finding="past its next update "
                       "from %s*" % since)
            assert len(rows) == 1 and rows[0]["time_utc"] == since, \
                c[cid]["policy_evidence"]
        assert since in c["4.2.1 revocation"]["policy"], c["4.2.1 revocation"]
        h, _ = checks(ctx, srv.db, "hipaa")
        assert h["164.312(e) revocation"]["status"] == "FAIL"
        statuses(ctx, "CRL past nextUpdate mid-period", srv.db)
    finally:
        srv.stop()


@test(once=True)
def policy_report_tls10_enabled_never_used_fails(ctx):
    """SSLProtocol all (with @SECLEVEL=0, which this OpenSSL needs for TLS
    1.0) and only TLS 1.3 clients: no handshake used TLS 1.0, yet PCI
    4.2.1 and 12.3.3 FAIL on the configuration, listing TLSv1 as
    "enabled, never used" and TLSv1.1 as deprecated."""
    base = scratch(ctx, "tls10")
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    srv = start_server(ctx, "report-tls10", ca_file=cafile, extra=(
        "SSLProtocol all", "SSLCipherSuite DEFAULT:@SECLEVEL=0"))
    try:
        for _ in range(2):
            row = handshake(srv, ctx.pki["ec"], tls="1.3")
            assert row["tls_version"] == "TLSv1.3", row
        no_new_errors(srv)
        c, _ = checks(ctx, srv.db)
        for cid in ("4.2.1", "12.3.3"):
            assert c[cid]["status"] == "FAIL", c[cid]
            assert c[cid]["status_from"] == "configuration", c[cid]
            assert len(pev(c[cid], item="protocol", value="TLSv1",
                           finding="prohibited (SSLv3 or TLS 1.0): enabled, "
                           "never used")) == 1, c[cid]["policy_evidence"]
            assert len(pev(c[cid], item="protocol", value="TLSv1.1",
                           finding="deprecated (TLS 1.1): enabled, never "
                           "used")) == 1, c[cid]["policy_evidence"]
            used = pev(c[cid], item="protocol", value="TLSv1.3")
            assert len(used) == 1 and used[0]["finding"].endswith(
                "enabled, used in 2 accepted handshakes"), used
        text = report(ctx, srv.db, fmt="text").stdout
        assert "enabled, never used" in text, text[-3000:]
        statuses(ctx, "TLS 1.0 enabled, never used", srv.db)
    finally:
        srv.stop()


@test(once=True)
def policy_report_trusted_ca_expiring_in_10_days_is_attention(ctx):
    """A trusted CA that expires in 10 days (beside the root that issued
    the client's certificate) joins the inventory of PCI 4.2.1.1:
    ATTENTION, naming it with its days left; the root is listed too."""
    base = scratch(ctx, "ca10")
    key = os.path.join(base, "short.key")
    cert = os.path.join(base, "short.pem")
    pki.keygen(key, "ec")
    pki.run("openssl", "req", "-x509", "-new", "-key", key, "-subj",
            "/O=mtls-audit tests/CN=Short-lived CA", "-days", "10",
            "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", cert)
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert,
                    cert)
    srv = start_server(ctx, "report-ca10", ca_file=cafile,
                       extra=tight_suites())
    try:
        handshake(srv, ctx.pki["ec"])
        no_new_errors(srv)
        c, _ = checks(ctx, srv.db)
        inv = c["4.2.1.1"]
        assert inv["status"] == "ATTENTION", inv
        assert "configuration" in inv["status_from"], inv
        rows = pev(inv, item="trusted CA", value="CN=Short-lived CA*")
        assert len(rows) == 1 and rows[0]["finding"] == (
            "trusted CA expiring within 30 days of the period's end "
            "(10 days)"), inv["policy_evidence"]
        assert pki.fingerprint(cert)[:16] in rows[0]["value"], rows
        root = pev(inv, item="trusted CA", value="CN=Test Root CA*")
        assert len(root) == 1 and root[0]["finding"] == "trusted CA", root
        assert "1 expiring within 30 days" in inv["policy"], inv["policy"]
        statuses(ctx, "trusted CA expiring in 10 days", srv.db)
    finally:
        srv.stop()


@test(once=True)
def policy_report_verify_weakened_by_reload_is_listed_with_its_time(ctx):
    """require, then optional by a graceful reload: PCI 8.2.1 and HIPAA
    164.312(d) name the vhost whose mode lets a request through without a
    verified certificate (ATTENTION on the configuration), with the change
    and its time; 10.2.1.7 / 164.312(b) policy list it as a weakening
    change; `mtls-audit policy` shows each mode at its time."""
    base = scratch(ctx, "weaken")
    cafile = bundle(os.path.join(base, "cas.pem"), ctx.pki["root"].cert)
    srv = start_server(ctx, "report-weaken", ca_file=cafile,
                       extra=tight_suites())
    try:
        handshake(srv, ctx.pki["ec"])
        before = srv.policies()[-1]
        srv.reload(verify="optional")
        after = srv.policies()[-1]
        assert after["changed"] == ["verify"], after
        handshake(srv, ctx.pki["ec"])
        no_new_errors(srv)
        # The tool's times: milliseconds, cut (not rounded as v_policy's).
        us = srv.query("SELECT time_us FROM events WHERE id = ?",
                       (after["id"],))[0]["time_us"]
        when = "%s.%03dZ" % (iso(us // 1000000), us // 1000 % 1000)
        c, _ = checks(ctx, srv.db)
        h, _ = checks(ctx, srv.db, "hipaa")
        for cid, chk in (("8.2.1", c["8.2.1"]),
                         ("164.312(d)", h["164.312(d)"])):
            assert chk["status"] == "ATTENTION", (cid, chk)
            assert chk["status_from"] == "configuration", (cid, chk)
            assert len(pev(chk, item="verify", value="vhost mode optional",
                           finding="lets a request through without a "
                           "verified certificate")) == 1, chk
            ch = pev(chk, item="change", value="verify require -> optional*")
            assert len(ch) == 1 and ch[0]["time_utc"] == when and \
                ch[0]["finding"] == "changed in the period: weakened", chk
        for chk in (c["10.2.1.7"], h["164.312(b) policy"]):
            assert chk["status"] == "ATTENTION", chk
            rows = [e for e in chk["evidence"]
                    if e["event"] == "changed (event %d)" % after["id"]]
            assert len(rows) == 1 and rows[0]["time_utc"] == when and \
                rows[0]["weakened"] == "yes" and rows[0]["what"].startswith(
                    "verify require -> optional"), chk["evidence"]
        # The policy command: each mode at its time, and the change.
        r = subprocess.run([ctx.tool, "policy", "--history", "--format",
                            "json", srv.db], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        hist = json.loads(r.stdout)
        assert [(x["id"], x["event"], x["weakened"]) for x in hist] == [
            (before["id"], "first recorded", False),
            (after["id"], "changed", True)], hist
        assert hist[1]["time_utc"] == when and hist[1]["policy"] == \
            after["policy"], hist[1]
        r = subprocess.run([ctx.tool, "policy", srv.db], capture_output=True,
                           text=True)
        assert r.returncode == 0 and "\nverify          optional, depth" \
            in r.stdout, r.stdout + r.stderr
        # Between the two: the first policy.
        mid = (srv.query("SELECT time_us FROM events WHERE id = ?",
                         (before["id"],))[0]["time_us"] + us) // 2
        mid = "%s.%03dZ" % (iso(mid // 1000000), mid // 1000 % 1000)
        r = subprocess.run([ctx.tool, "policy", "--at", mid,
                            "--format", "json", srv.db],
                           capture_output=True, text=True)
        at = json.loads(r.stdout)
        assert [x["policy"]["verify"]["mode"] for x in at] == ["require"], at
        html = report(ctx, srv.db, fmt="html").stdout
        assert "<h2>Policy in force</h2>" in html and \
            "<h3>Policy changes in the period</h3>" in html
        assert "verify require -&gt; optional" in html, html[-3000:]
        statuses(ctx, "verify mode weakened by a reload", srv.db)
    finally:
        srv.stop()


@test(once=True)
def policy_report_database_without_policy_rows_says_evidence_missing(ctx):
    """A database without policy rows (mtls-gen writes through the core's
    write path, as the module did before it recorded its policy): the
    statuses are those the tool's known-truth clean month always had,
    from the traffic alone, and the report says the policy evidence is
    missing (cover, each check that would read it, every format); no
    policy-change check; `policy` says there is none and exits 0."""
    db = test_tool.gen(ctx, "policy-none", test_tool.base_script())
    for standard in ("pci-dss", "hipaa", "summary"):
        r = test_tool.report(ctx, db, standard=standard)
        c, doc = test_tool.checks(r)
        assert r.returncode == 0, (standard, r.stdout[-2000:])
        assert doc["report"]["policy_recorded"] is False
        assert "policy_in_force" not in doc["report"]
        touched = [v for v in c.values() if "status_from" in v]
        assert len(touched) == {"pci-dss": 5, "hipaa": 4,
                                "summary": 4}[standard], c.keys()
        for v in touched:
            assert v["status_from"] == "traffic", v
            assert v["policy"].startswith("policy evidence missing"), v
            assert "policy_evidence" not in v, v
        assert not ({"10.2.1.7", "164.312(b) policy", "policy"} & set(c))
    c, _ = test_tool.checks(test_tool.report(ctx, db))
    # The clean month's statuses, as before (test_tool).
    assert [c[k]["status"] for k in ("4.2.1", "4.2.1 revocation", "4.2.1.1",
                                     "12.3.3", "8.2.1", "10.6")] == [
        "ATTENTION", "ATTENTION", "PASS", "PASS", "PASS", "MANUAL"], c
    for fmt, text in (("text", "policy evidence missing"),
                      ("html", "Policy evidence missing")):
        r = test_tool.report(ctx, db, fmt=fmt)
        assert r.returncode == 0 and text in r.stdout, r.stdout[:3000]
    r = subprocess.run([ctx.tool, "policy", db], capture_output=True,
                       text=True)
    assert r.returncode == 0 and r.stdout.startswith("no policy recorded"), \
        r.stdout + r.stderr
    r = subprocess.run([ctx.tool, "policy", "--format", "json", db],
                       capture_output=True, text=True)
    assert r.returncode == 0 and json.loads(r.stdout) == [], r.stdout
    # Exit codes as the other commands: 2 usage, 3 a database error.
    for args, code in ((["--at", "yesterday", db], 2),
                       (["--format", "csv", db], 2), (["--bogus", db], 2),
                       ([os.path.join(os.path.dirname(db), "absent.db")], 3)):
        r = subprocess.run([ctx.tool, "policy"] + args, capture_output=True,
                           text=True)
        assert r.returncode == code and r.stderr.startswith("mtls-audit: "), \
            (args, r.returncode, r.stderr)
    print("    policy report statuses, no policy rows: %s" % json.dumps(
        {k: c[k]["status"] for k in TOUCHED["pci-dss"]}), flush=True)
