"""SIEM-native records: MTLSAuditMirrorFormat ecs|ocsf and `mtls-audit
export --format ecs|ocsf`, every line held field by field against the ECS
9.4.0 and OCSF 1.8.0 definitions in tests/reference (siem.py)."""
import json
import os
import re
import sqlite3
import subprocess

import clients
import server as server_mod
import siem
import test_tool
from harness import Registry, count, wait_for
from test_ops import read_lines, validate

test = Registry()

CHECK = {"ecs": siem.check_ecs, "ocsf": siem.check_ocsf}


def own(doc, fmt):
    """Our own namespace of a document."""
    return doc["mtls_audit"] if fmt == "ecs" else doc["unmapped"]["mtls_audit"]


def key(doc, fmt):
    o = own(doc, fmt)
    return (o["type"], o["id"])


def mirrored(ctx, fmt):
    """A server mirroring in fmt; accepted (EC with a request, many SANs
    with a query string), rejected (untrusted CA; revoked, by the main
    vhost's CRL check) and no-certificate handshakes.
    Returns (server, mirror lines)."""
    base = os.path.join(ctx.scratch, "siem-" + fmt)
    mirror = os.path.join(base, "logs", "mirror.jsonl")
    srv = server_mod.Server(base, ctx.pki, mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditMirror logs/mirror.jsonl\n"
                            "MTLSAuditMirrorFormat %s" % fmt)
    srv.start()
    try:
        assert clients.curl(srv, ctx.pki["ec"]).stdout.strip() == "200"
        assert clients.curl(srv, ctx.pki["many_sans"], paths=("/?card=4111",)
                            ).stdout.strip() == "200"
        clients.curl(srv, ctx.pki["untrusted"])
        clients.curl(srv, ctx.pki["revoked"])
        clients.curl(srv, None)
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == 5)
        assert wait_for(lambda: len(read_lines(mirror)) >= 5 + 2 + 1)
    finally:
        srv.stop()
    assert not srv.sanitizer_reports(), srv.sanitizer_reports()
    return srv, read_lines(mirror)


def view(db, name):
    con = sqlite3.connect(db)
    con.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in
                con.execute("SELECT * FROM %s" % name)}
    finally:
        con.close()


def revocation(docs, hs, fmt):
    """Schema 3's revocation columns, in our own namespace; the main
    vhost checks the CRL: a good and a revoked certificate among them."""
    seen = set()
    for d in docs:
        row = hs[own(d, fmt)["id"]]
        for col in ("revocation_method", "revocation_status"):
            assert own(d, fmt).get(col) == row[col], (col, d, row)
        seen.add((row["revocation_method"], row["revocation_status"]))
    assert {("crl", "good"), ("crl", "revoked")} <= seen, seen


def conforms(lines, fmt):
    for doc in lines:
        bad = CHECK[fmt](doc)
        assert not bad, (fmt, bad, doc)


def exported_matches(ctx, srv, lines, fmt):
    """export --format fmt over the server's database gives the mirror's
    documents for the same records; only a handshake's request count may
    be higher (the mirror wrote it before its requests were stored)."""
    r = subprocess.run([ctx.tool, "export", "--format", fmt, srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exported = [json.loads(l) for l in r.stdout.splitlines()]
    conforms(exported, fmt)
    ex = {key(d, fmt): d for d in exported}
    assert len(ex) == len(exported)
    for doc in lines:
        e = json.loads(json.dumps(ex[key(doc, fmt)]))
        if own(doc, fmt)["type"] == "handshake":
            assert own(doc, fmt)["requests"] <= own(e, fmt)["requests"]
            own(e, fmt)["requests"] = own(doc, fmt)["requests"]
        assert e == doc, (e, doc)
    return exported


@test(once=True)
def mirror_and_export_in_ecs_conform_to_ecs(ctx):
    srv, lines = mirrored(ctx, "ecs")
    conforms(lines, "ecs")
    hs, rq = view(srv.db, "v_handshakes"), view(srv.db, "v_requests")
    by = {}
    for d in lines:
        by.setdefault(d["mtls_audit"]["type"], []).append(d)
    assert len(by["handshake"]) == len(hs) == 5
    assert len(by["request"]) == len(rq) == 2
    assert [d["event"]["action"] for d in by["event"]] == (
        ["start"] + ["policy"] * 5 + ["stop"])
    for d in by["event"]:
        if d["event"]["action"] == "policy":
            assert d["event"]["category"] == ["configuration"], d
            assert d["event"]["type"] == ["creation"], d
            assert json.loads(d["message"])["digest"], d
    for d in by["handshake"]:
        row = hs[d["mtls_audit"]["id"]]
        assert d["@timestamp"] == row["time_utc"]
        assert d["event"]["category"] == ["authentication", "network"]
        assert d["event"]["outcome"] == (
            "success" if row["outcome"] == "accepted" else "failure"), d
        assert d["mtls_audit"]["outcome"] == row["outcome"]
        assert d["source"]["ip"] == row["client_addr"] == "127.0.0.1"
        assert d["source"]["port"] == row["client_port"]
        assert d["destination"]["port"] == row["local_port"]
        assert d["tls"]["version"] == row["tls_version"][4:]
        assert d["tls"]["established"] == (row["outcome"] == "accepted")
        assert d["event"]["duration"] == row["handshake_us"] * 1000
        client = d["tls"].get("client", {})
        if row["cert_sha256"]:
            assert client["hash"]["sha256"] == row["cert_sha256"]
            x = client["x509"]
            assert x["subject"]["distinguished_name"] == row["subject_dn"]
            assert x["issuer"]["distinguished_name"] == row["issuer_dn"]
            assert x["serial_number"] == row["serial"]
            assert x["not_after"] == row["not_after"]
            if row["san"]:
                assert x["alternative_names"] == [
                    n.split(":", 1)[1] for n in row["san"].split(", ")]
            else:
                assert "alternative_names" not in x
            assert d["mtls_audit"]["chain_sha256"] == \
                row["chain_sha256"].split(" ")
        else:
            assert row["outcome"] == "no_certificate"
            assert "hash" not in client and "x509" not in client
        if row["verify_error"]:
            assert d["event"]["reason"] == row["verify_error"]
    assert {d["mtls_audit"]["outcome"] for d in by["handshake"]} == {
        "accepted", "rejected", "no_certificate"}
    revocation(by["handshake"], hs, "ecs")
    for d in by["request"]:
        row = rq[d["mtls_audit"]["id"]]
        assert d["url"]["path"] == row["path"] and "?" not in row["path"]
        assert d["http"]["request"]["method"] == row["method"]
        assert d["http"]["response"]["status_code"] == row["status"] == 200
        assert d["tls"]["client"]["hash"]["sha256"] == row["cert_sha256"]
        assert d["mtls_audit"]["handshake_id"] == row["handshake_id"]
    assert [d["url"]["path"] for d in by["request"]] == ["/", "/"]
    exported_matches(ctx, srv, lines, "ecs")


@test(once=True)
def mirror_and_export_in_ocsf_conform_to_ocsf(ctx):
    srv, lines = mirrored(ctx, "ocsf")
    conforms(lines, "ocsf")
    hs, rq = view(srv.db, "v_handshakes"), view(srv.db, "v_requests")
    by = {}
    for d in lines:
        by.setdefault(d["class_uid"], []).append(d)
    assert len(by[3002]) == len(hs) == 5
    assert len(by[4002]) == len(rq) == 2
    assert [d["activity_name"] for d in by[0]] == (
        ["start"] + ["policy"] * 5 + ["stop"])
    for d in by[3002]:
        row = hs[d["unmapped"]["mtls_audit"]["id"]]
        ok = row["outcome"] == "accepted"
        assert (d["status_id"], d["status"]) == ((1, "Success") if ok
                                                 else (2, "Failure")), d
        assert d["status_code"] == row["outcome"]
        assert d["src_endpoint"] == {"ip": row["client_addr"],
                                     "port": row["client_port"]}
        assert d["dst_endpoint"]["port"] == row["local_port"]
        assert d["unmapped"]["tls"]["version"] == row["tls_version"][4:]
        if row["cert_sha256"]:
            c = d["certificate"]
            assert c["fingerprints"] == [{"algorithm": "SHA-256",
                                          "algorithm_id": 3,
                                          "value": row["cert_sha256"]}]
            assert c["subject"] == row["subject_dn"] == d["user"]["name"]
            assert c["issuer"] == row["issuer_dn"]
            assert c["serial_number"] == row["serial"]
            if row["san"]:
                assert [s["type"] + ":" + s["name"] for s in c["sans"]] \
                    == row["san"].split(", ")
            else:
                assert "sans" not in c
        else:
            assert "certificate" not in d and d["user"]["type_id"] == 0
    revocation(by[3002], hs, "ocsf")
    for d in by[4002]:
        row = rq[d["unmapped"]["mtls_audit"]["id"]]
        assert d["activity_id"] == 3 and d["type_uid"] == 400203
        assert d["http_request"] == {"http_method": "GET",
                                     "url": {"path": row["path"]}}
        assert d["http_response"]["code"] == row["status"] == 200
        assert d["actor"]["user"]["uid"] == row["cert_sha256"]
    times = sorted(d["time"] for d in lines)
    assert times[0] > 1700000000000 and times[-1] < 4102444800000, times
    exported_matches(ctx, srv, lines, "ocsf")


@test(once=True)
def native_mirror_format_is_the_schema_lines(ctx):
    # The default and an explicit `native` write the lines of
    # schema/mirror.schema.json, unchanged by the other formats.
    srv, lines = mirrored(ctx, "native")
    validate(lines)
    assert {l["type"] for l in lines} == {"handshake", "request", "event"}


@test(once=True)
def siem_formats_refuse_unknown_names(ctx):
    srv = server_mod.Server(os.path.join(ctx.scratch, "siem-bad"), ctx.pki,
                            mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditMirrorFormat xml")
    r = srv.httpd("-t")
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "MTLSAuditMirrorFormat: 'xml' is not native, ecs or ocsf" in out, \
        out
    assert re.search(r"line \d+ of .*httpd.conf", out), out
    srv = server_mod.Server(os.path.join(ctx.scratch, "siem-vhost"),
                            ctx.pki, mpm=ctx.srv.mpm, extra_global=(
                                "<VirtualHost 127.0.0.1:1>\n"
                                "MTLSAuditMirrorFormat ecs\n"
                                "</VirtualHost>"))
    r = srv.httpd("-t")
    assert r.returncode != 0 and "MTLSAuditMirrorFormat" in r.stderr + \
        r.stdout, r.stderr
    for bad in ("xml", "native", "ECS", ""):
        r = subprocess.run([ctx.tool, "export", "--format", bad,
                            ctx.srv.db], capture_output=True, text=True)
        assert r.returncode == 2 and r.stdout == "", (bad, r)
        assert r.stderr.startswith("mtls-audit: --format: '%s' is not "
                                   "jsonl, ecs or ocsf" % bad), r.stderr


@test(once=True)
def siem_checker_finds_what_breaks_the_standards(ctx):
    # The checker itself: a conforming document with one thing broken at a
    # time is refused, naming the field; the reference folder missing is
    # a failure that says where to find it, not a skip.
    srv_db = test_tool.gen(ctx, "siem-check", test_tool.base_script())
    for fmt in ("ecs", "ocsf"):
        r = subprocess.run([ctx.tool, "export", "--format", fmt, srv_db],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        docs = [json.loads(l) for l in r.stdout.splitlines()]
        assert docs and all(not CHECK[fmt](d) for d in docs)
    hs = next(d for d in docs if d["class_uid"] == 3002)
    for breaks, want in (
            (lambda d: d.pop("user"), "user: required, missing"),
            (lambda d: d.update(time="2026-01-01"), "time: '2026-01-01' is "
             "not timestamp_t"),
            (lambda d: d.update(status_id=7), "status_id: 7 is not one of"),
            (lambda d: d.update(tls={"version": "1.3"}), "tls: not an "
             "attribute here"),
            (lambda d: d["src_endpoint"].update(port=70000), "src_endpoint."
             "port: 70000 out of"),
            (lambda d: d.update(type_uid=300299), "type_uid: 300299"),
            (lambda d: d["metadata"].pop("product"), "metadata.product: "
             "required, missing")):
        d = json.loads(json.dumps(hs))
        breaks(d)
        got = siem.check_ocsf(d)
        assert any(g.startswith(want) for g in got), (want, got)
    r = subprocess.run([ctx.tool, "export", "--format", "ecs", srv_db],
                       capture_output=True, text=True)
    e = json.loads(r.stdout.splitlines()[0])
    for breaks, want in (
            (lambda d: d["event"].update(category="authentication"),
             "event.category: is an array"),
            (lambda d: d["event"].update(duration="1"), "event.duration: "
             "'1' is not of ECS type long"),
            (lambda d: d.update(tls_version="1.3"), "tls_version: not an "
             "ECS"),
            (lambda d: d.pop("@timestamp"), "@timestamp: required")):
        d = json.loads(json.dumps(e))
        breaks(d)
        got = siem.check_ecs(d)
        assert any(g.startswith(want) for g in got), (want, got)
    saved = siem.ECS_DIR, siem._cache.copy()
    siem.ECS_DIR = os.path.join(ctx.scratch, "no-such-reference")
    siem._cache.clear()
    try:
        siem.check_ecs(e)
        raise RuntimeError("no failure without the reference")
    except AssertionError as x:
        assert "reference file missing" in str(x) and \
            "tests/reference/README.md" in str(x), x
    finally:
        siem.ECS_DIR = saved[0]
        siem._cache.update(saved[1])
