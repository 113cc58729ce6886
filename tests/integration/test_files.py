"""mtls-audit over many files: directories and globs in any order, read in
the order of their chains; files outside a report's period left unread;
sealed files checked by the SHA-256 their successor recorded; a file
missing from the middle named; the same rows in two files refused.  The
files are written by build/mtls-gen through the store's real rotation
(mtls_store_rotate: -s N seals after N handshakes, -t a strftime name)."""
import json
import os
import re
import shutil
import sqlite3
import subprocess

from harness import Registry
from test_tool import GEN, NOW, DAY, iso, private_dir, gen, tool_run

test = Registry()


def year_script():
    """A year and five weeks of traffic: 6,000 handshakes over 20
    certificates, most with a request, with start and stop events."""
    return "\n".join([
        "event start %s" % iso(NOW - 400 * DAY),
        "bulk 6000 %s %s 20" % (iso(NOW - 399 * DAY), iso(NOW - DAY)),
        "event stop %s" % iso(NOW - DAY),
    ]) + "\n"


def short_script():
    """Two months: 4,000 handshakes."""
    return "\n".join([
        "event start %s" % iso(NOW - 61 * DAY),
        "bulk 4000 %s %s 20" % (iso(NOW - 60 * DAY), iso(NOW - DAY)),
        "event stop %s" % iso(NOW - DAY),
    ]) + "\n"


def rotated(ctx, name, script, args):
    """The files mtls-gen writes with rotation args (-s N, or -t with a
    pattern) into a fresh directory; returns (dir, files in the order they
    were written)."""
    d = os.path.join(private_dir(ctx, "files"), name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    r = subprocess.run([GEN] + args + [os.path.join(d, "audit.db")
                                       if args[0] == "-s" else
                                       os.path.join(d, "audit-%Y-%m.db")],
                       input=script, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    # "mtls-gen: sealed A -> B" lines give the order of writing.
    order = []
    for a, b in re.findall(r"mtls-gen: sealed (\S+) -> (\S+)", r.stderr):
        if not order:
            order.append(a)
        assert order[-1] == a, (order, a)
        order.append(b)
    assert len(order) >= 2, r.stderr
    # What the module writes to its error log (the seals' lines).
    with open(os.path.join(os.path.dirname(d), name + ".log"), "w") as f:
        f.write(r.stderr)
    return d, order


def file_headers(out, files):
    """The files in the order verify printed them."""
    return [line for line in out.splitlines() if line in files]


def records(lines, types=("handshake", "request")):
    """export's lines of those types by type and id, without the file they
    came from and the certificates' fingerprint and serial (mtls-gen makes
    new keys on each run)."""
    out = []
    for line in lines.splitlines():
        o = json.loads(line)
        if o["type"] in types:
            for k in ("source", "cert_sha256", "serial"):
                o.pop(k, None)
            out.append((o["type"], o["id"], json.dumps(o, sort_keys=True)))
    return sorted(out)


def sources(lines):
    """The files export's lines came from, in the order they came."""
    out = []
    for line in lines.splitlines():
        src = json.loads(line)["source"]
        if not out or out[-1] != src:
            out.append(src)
    return out


def norm(c):
    """A check's status and metric, the number of files read and the reads
    recorded taken out (they differ between one file and many)."""
    return (c["status"], re.sub(r"\d+ of \d+ databases|over \d+ files|"
                                r"\d+ recorded reads", "N", c["metric"]))


@test(once=True)
def files_in_any_order_are_read_in_the_order_of_their_chains(ctx):
    d, order = rotated(ctx, "seq", short_script(), ["-s", "300"])
    one = gen(ctx, "seq-one", short_script())
    assert len(order) >= 12, order
    # A shell glob sorts audit.10.db before audit.2.db, audit.db last.
    glob = sorted(os.path.join(d, f) for f in os.listdir(d)
                  if f.endswith(".db"))
    assert glob != order
    for given in (glob, list(reversed(glob)), [d]):
        v = tool_run(ctx, "verify", "--no-record", *given)
        assert v.returncode == 0, v.stdout + v.stderr
        assert file_headers(v.stdout, order) == order, v.stdout
        for a, b in zip(order, order[1:]):
            assert "%s continues into %s: ok" % (a, b) in v.stdout, v.stdout
        # Every sealed file by its hash, the live one walked.
        sealed = re.findall(r"sealed +ok +its SHA-256 matches the one (\S+) "
                            r"recorded", v.stdout)
        assert sealed == order[1:], (sealed, v.stdout)
        assert v.stdout.count("rows not walked") == len(order) - 1
    # --deep walks every row of every file.
    v = tool_run(ctx, "verify", "--no-record", "--deep", *glob)
    assert v.returncode == 0, v.stdout
    assert "rows not walked" not in v.stdout
    assert len(re.findall(r"handshakes +ok +\d+ rows", v.stdout)) == len(order)
    # Every record once, in the original order: the same lines as the
    # file written without rotation.
    a = tool_run(ctx, "export", *glob)
    b = tool_run(ctx, "export", one)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert records(a.stdout) == records(b.stdout)
    assert len(records(b.stdout)) > 7000
    assert sources(a.stdout) == order, sources(a.stdout)
    # A query with a period reads the files that meet it.
    since = iso(NOW - 5 * DAY)
    q = [tool_run(ctx, "query", "--since", since, "--limit", "0", "--format",
                  "json", *given) for given in (glob, [one])]
    assert q[0].returncode == 0, q[0].stderr
    rows = [[{k: v for k, v in x.items() if k not in ("source", "cert_sha256",
                                                       "serial")}
             for x in json.loads(r.stdout)] for r in q]
    assert rows[0] == rows[1] and rows[0], (len(rows[0]), len(rows[1]))
    assert {x["source"] for x in json.loads(q[0].stdout)} <= set(order[-3:])


@test(once=True)
def a_report_over_a_directory_equals_the_report_over_one_file(ctx):
    d, order = rotated(ctx, "year", year_script(), ["-t"])
    one = gen(ctx, "year-one", year_script())
    assert len(order) >= 13, order
    for since, until in ((NOW - 30 * DAY, NOW), (NOW - 200 * DAY,
                                                 NOW - 150 * DAY)):
        for std in ("pci-dss", "hipaa", "summary"):
            args = ["report", "--standard", std, "--since", iso(since),
                    "--until", iso(until), "--format", "json"]
            a = tool_run(ctx, *(args + [d]))
            b = tool_run(ctx, *(args + [one]))
            assert a.returncode in (0, 1), a.stderr
            assert b.returncode in (0, 1), b.stderr
            ja, jb = json.loads(a.stdout), json.loads(b.stdout)
            ca = {c["id"]: c for c in ja["checks"]}
            cb = {c["id"]: c for c in jb["checks"]}
            assert list(ca) == list(cb)
            for cid in cb:
                assert norm(ca[cid]) == norm(cb[cid]), (std, cid, ca[cid],
                                                        cb[cid])
            # The same handshakes and requests (rotation adds its own
            # events: seal, rotate, sealed).
            for k in ("handshakes", "failed", "requests"):
                assert ja["report"]["records"][k] == \
                    jb["report"]["records"][k], (k, ja["report"]["records"],
                                                 jb["report"]["records"])
            # The cover: each file given, read or not, and how its
            # integrity was established.
            dbs = {x["path"]: x for x in ja["report"]["databases"]}
            assert set(dbs) == set(order)
            lo = (until - 90 * DAY) if until - 90 * DAY < since else since
            for f in order:
                con = sqlite3.connect(f)
                first, last = con.execute(
                    "SELECT json_extract(detail, '$.first_us'), json_extract("
                    "detail, '$.last_us') FROM events WHERE kind = 'seal'"
                ).fetchone() or con.execute(
                    "SELECT min(time_us), max(time_us) FROM (SELECT time_us "
                    "FROM handshakes UNION ALL SELECT time_us FROM events "
                    "UNION ALL SELECT time_us FROM requests)").fetchone()
                con.close()
                meets = (last >= lo.timestamp() * 1e6
                         and first < until.timestamp() * 1e6)
                assert dbs[f]["read"] == meets, (f, dbs[f], lo, until)
                want = ("none" if not meets else "walked"
                        if f == order[-1] else "sha256")
                assert dbs[f]["established"] == want, (f, dbs[f])
                if not meets:
                    assert "outside the period" in dbs[f]["integrity"]
            assert sum(x["read"] for x in dbs.values()) <= 5, dbs


def flip_digit(path, needle):
    """Change one byte of the file: a digit of the first occurrence of
    needle (bytes) after the file's first pages."""
    with open(path, "r+b") as f:
        data = f.read()
        at = data.find(needle, 8192)
        assert at > 0, needle
        k = at + len(needle) - 1
        f.seek(k)
        f.write(b"7" if data[k:k + 1] != b"7" else b"8")


@test(once=True)
def a_sealed_file_changed_afterwards_is_found_by_verify_and_report(ctx):
    d, order = rotated(ctx, "alter", short_script(), ["-s", "1000"])
    victim = order[1]
    # One byte: a digit of a client address in a row of a sealed file.
    con = sqlite3.connect(victim)
    addr = con.execute("SELECT client_addr FROM handshakes ORDER BY id "
                       "LIMIT 1 OFFSET 100").fetchone()[0]
    con.close()
    before = tool_run(ctx, "verify", "--no-record", d)
    assert before.returncode == 0, before.stdout
    flip_digit(victim, addr.encode())
    for given in ([d], list(reversed(order))):
        v = tool_run(ctx, "verify", "--no-record", *given)
        assert v.returncode == 1, v.stdout + v.stderr
        assert re.search(r"sealed +BROKEN +sealed file CHANGED: its SHA-256 "
                         r"is [0-9a-f]{64} .* as %s recorded" %
                         re.escape(order[2]), v.stdout), v.stdout
    r = tool_run(ctx, "report", "--standard", "pci-dss", "--since",
                 iso(NOW - 70 * DAY), "--format", "json", d)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    c = {x["id"]: x for x in doc["checks"]}
    assert c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    dbs = {x["path"]: x for x in doc["report"]["databases"]}
    assert "sealed file CHANGED" in dbs[victim]["integrity"], dbs[victim]
    assert dbs[victim]["chain_broken"] is True
    # One row, changed through SQLite in another sealed file: its hash,
    # and with --deep its chain, give it away.
    d2, order2 = rotated(ctx, "alter-row", short_script(), ["-s", "1000"])
    victim = order2[2]
    con = sqlite3.connect(victim)
    hid = con.execute("SELECT id FROM handshakes ORDER BY id LIMIT 1 "
                      "OFFSET 10").fetchone()[0]
    con.execute("UPDATE handshakes SET client_addr = '6.6.6.6' WHERE id = ?",
                (hid,))
    con.commit()
    con.close()
    v = tool_run(ctx, "verify", "--no-record", d2)
    assert v.returncode == 1 and "sealed file CHANGED" in v.stdout, v.stdout
    v = tool_run(ctx, "verify", "--no-record", "--deep", d2)
    assert v.returncode == 1, v.stdout
    assert "handshakes   BROKEN at id %d" % hid in v.stdout, v.stdout
    r = tool_run(ctx, "report", "--standard", "hipaa", "--since",
                 iso(NOW - 70 * DAY), "--format", "json", d2)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    dbs = {x["path"]: x for x in doc["report"]["databases"]}
    assert "sealed file CHANGED" in dbs[victim]["integrity"], dbs[victim]
    c = {x["id"]: x for x in doc["checks"]}
    assert c["164.312(b)"]["status"] == "FAIL", c["164.312(b)"]


@test(once=True)
def a_file_missing_from_the_middle_is_named_and_overlaps_are_refused(ctx):
    d, order = rotated(ctx, "gap", short_script(), ["-s", "500"])
    gone = order[3]
    con = sqlite3.connect(order[2])
    end = con.execute("SELECT id FROM chain_cut WHERE tbl = 'handshakes' AND "
                      "side = 'end'").fetchone()[0]
    con.close()
    con = sqlite3.connect(order[4])
    base = con.execute("SELECT id FROM chain_cut WHERE tbl = 'handshakes' "
                       "AND side = 'base'").fetchone()[0]
    con.close()
    os.unlink(gone)
    v = tool_run(ctx, "verify", "--no-record", d)
    assert v.returncode == 1, v.stdout + v.stderr
    want = ("handshakes rows %d-%d are in no file given: %s starts after row "
            "%d (its cut names %s), %s ends at row %d" %
            (end + 1, base, order[4], base, gone, order[2], end))
    assert "MISSING  " + want in v.stdout, v.stdout
    r = tool_run(ctx, "report", "--standard", "pci-dss", "--since",
                 iso(NOW - 70 * DAY), "--format", "json", d)
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    c = {x["id"]: x for x in doc["checks"]}
    assert c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    dbs = {x["path"]: x for x in doc["report"]["databases"]}
    assert "MISSING: " + want in dbs[order[4]]["integrity"], dbs[order[4]]
    # The same rows in two files (a copy beside the original): an error
    # that names both, for every command.
    d, order = rotated(ctx, "dup", short_script(), ["-s", "500"])
    copy = os.path.join(d, "copy-of-2.db")
    shutil.copy(order[2], copy)
    for cmd in (["verify", "--no-record"], ["query"], ["export"],
                ["report", "--standard", "summary"], ["certs"]):
        r = tool_run(ctx, *(cmd + [d]))
        assert r.returncode == 3, (cmd, r.returncode, r.stderr)
        assert re.search(r"(%s and %s|%s and %s) both hold row \d+ of "
                         r"(handshakes|requests|events)" % (
                             re.escape(order[2]), re.escape(copy),
                             re.escape(copy), re.escape(order[2])),
                         r.stderr), r.stderr
    # A directory without databases, and a file given twice.
    empty = os.path.join(private_dir(ctx, "files"), "empty")
    os.makedirs(empty, exist_ok=True)
    r = tool_run(ctx, "verify", "--no-record", empty)
    assert r.returncode == 2 and "no *.db file" in r.stderr, r.stderr
    os.unlink(copy)
    v = tool_run(ctx, "verify", "--no-record", d, order[0], order[-1])
    assert v.returncode == 0, v.stdout + v.stderr
    assert file_headers(v.stdout, order) == order, v.stdout


@test(once=True)
def a_seals_record_outside_the_period_is_checked_against_the_error_log(ctx):
    # A report over a past period checks the months it reads by the hashes
    # their successors recorded; the successor of the last one read lies
    # outside the period and is not checked in this run: the cover says
    # so, and with --anchor the error log's line for each seal is the
    # record kept outside the files.
    d, order = rotated(ctx, "past", year_script(), ["-t"])
    log = d + ".log"
    since, until = iso(NOW - 100 * DAY), iso(NOW - 70 * DAY)
    args = ["report", "--standard", "pci-dss", "--since", since, "--until",
            until, "--format", "json"]
    r = tool_run(ctx, *(args + [d]))
    assert r.returncode in (0, 1), r.stderr
    dbs = [x for x in json.loads(r.stdout)["report"]["databases"]
           if x["read"]]
    assert all(x["established"] == "sha256" for x in dbs), dbs
    last = dbs[-1]
    nxt = order[order.index(last["path"]) + 1]
    assert "(%s, outside the period, was not checked in this run" % nxt \
        in last["integrity"], last
    r = tool_run(ctx, *(args + ["--anchor", log, d]))
    assert r.returncode in (0, 1), r.stderr
    doc = json.loads(r.stdout)
    for x in doc["report"]["databases"]:
        if x["read"]:
            assert "the error log's sealed line for it" in x["integrity"] \
                and "gives the same SHA-256" in x["integrity"], x
    # A seal's line that does not hold: the anchor is broken, 10.3.4 FAILs.
    con = sqlite3.connect(last["path"])
    seal = con.execute("SELECT id FROM events WHERE kind = 'seal'"
                       ).fetchone()[0]
    con.close()
    text = open(log).read()
    forged = re.sub(r"(sealed \S+ sha256=)([0-9a-f])(\S* bytes=\d+ seal=%d )"
                    % seal, lambda m: m.group(1) + ("0" if m.group(2) != "0"
                                                    else "1") + m.group(3),
                    text)
    assert forged != text
    bad = log + ".forged"
    with open(bad, "w") as f:
        f.write(forged)
    r = tool_run(ctx, *(args + ["--anchor", bad, d]))
    assert r.returncode == 1, r.stderr
    doc = json.loads(r.stdout)
    c = {x["id"]: x for x in doc["checks"]}
    assert c["10.3.4"]["status"] == "FAIL", c["10.3.4"]
    x = [x for x in doc["report"]["databases"] if x["path"] == last["path"]]
    assert "ANCHOR BROKEN: the error log's sealed line" in x[0]["integrity"]
    v = tool_run(ctx, "verify", "--no-record", "--anchor", bad, d)
    assert v.returncode == 1, v.stdout
    assert re.search(r"sealed +BROKEN +the error log's sealed line for it",
                     v.stdout), v.stdout


def without(rows, keys=("source", "sources", "cert_sha256", "sha256",
                        "serial")):
    """Rows of query or certs (json) without the file they came from and
    the certificates' fingerprint and serial (mtls-gen makes new keys on
    each run)."""
    return [{k: v for k, v in x.items() if k not in keys} for x in rows]


@test(once=True)
def more_files_than_sqlite_attaches_are_read_as_one(ctx):
    # SQLite attaches at most SQLITE_MAX_ATTACHED files to one connection
    # (10 in Debian's build); a year of monthly files is 13 or more, a
    # month of daily files 30: report, query and certs read them all, with
    # the results of one file holding the same rows.
    con = sqlite3.connect(":memory:")
    opts = [r[0] for r in con.execute("PRAGMA compile_options")]
    con.close()
    limit = [int(o.split("=")[1]) for o in opts
             if o.startswith("MAX_ATTACHED=")] or [10]
    d, order = rotated(ctx, "many", year_script(), ["-t"])
    one = gen(ctx, "many-one", year_script())
    assert len(order) > limit[0], (len(order), limit)
    since, until = iso(NOW - 400 * DAY), iso(NOW)
    for std in ("pci-dss", "hipaa"):
        args = ["report", "--standard", std, "--since", since, "--until",
                until, "--format", "json"]
        a = tool_run(ctx, *(args + [d]))
        b = tool_run(ctx, *(args + [one]))
        assert a.returncode in (0, 1), a.stderr
        assert b.returncode in (0, 1), b.stderr
        ja, jb = json.loads(a.stdout), json.loads(b.stdout)
        dbs = ja["report"]["databases"]
        assert sum(x["read"] for x in dbs) == len(order), dbs
        ca = {c["id"]: c for c in ja["checks"]}
        cb = {c["id"]: c for c in jb["checks"]}
        assert list(ca) == list(cb)
        for cid in cb:
            assert norm(ca[cid]) == norm(cb[cid]), (std, cid, ca[cid],
                                                    cb[cid])
        for k in ("handshakes", "failed", "requests"):
            assert ja["report"]["records"][k] == jb["report"]["records"][k]
        assert jb["report"]["records"]["handshakes"] == 6000
    # query: every handshake, newest first, from every file.
    q = [tool_run(ctx, "query", "--limit", "0", "--format", "json", *given)
         for given in ([d], [one])]
    assert q[0].returncode == 0 and q[1].returncode == 0, \
        q[0].stderr + q[1].stderr
    rows = [json.loads(r.stdout) for r in q]
    assert len(rows[1]) == 6000
    assert without(rows[0]) == without(rows[1])
    assert {x["source"] for x in rows[0]} == set(order)
    # With filters and a limit: the same rows.
    q = [tool_run(ctx, "query", "--outcome", "accepted", "--limit", "50",
                  "--format", "json", *given) for given in ([d], [one])]
    assert q[0].returncode == 0, q[0].stderr
    a, b = (without(json.loads(r.stdout)) for r in q)
    assert a == b and len(a) == 50
    # certs: one row per certificate, seen in every file it was used in.
    c = [tool_run(ctx, "certs", "--format", "json", *given)
         for given in ([d], [one])]
    assert c[0].returncode == 0 and c[1].returncode == 0, \
        c[0].stderr + c[1].stderr
    a, b = (json.loads(r.stdout) for r in c)
    key = lambda x: (x["subject_dn"], x["not_after"])
    assert sorted(without(a), key=key) == sorted(without(b), key=key)
    assert len(b) == 20, len(b)
    used = set()
    for x in a:
        used |= set(x["sources"].split(","))
    assert used == set(order), (used, order)
