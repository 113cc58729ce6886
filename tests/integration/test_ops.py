"""Operating it: MTLSAuditMirror (JSON lines to a file and through a
pipe), `mtls-audit export`, and a backup of a live database."""
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time

import clients
import server as server_mod
from harness import Registry

test = Registry()

TOP = server_mod.TOP
SCHEMA = os.path.join(TOP, "schema", "mirror.schema.json")


def count(db, sql):
    con = sqlite3.connect("file:%s?mode=ro" % db, uri=True, timeout=10)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()


def wait_for(fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.1)
    return fn()


def read_lines(path):
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        return [json.loads(l) for l in f if l.strip()]


def validate(lines):
    """Every line against schema/mirror.schema.json, with Debian's
    python3-jsonschema (a real validator, draft 2020-12)."""
    code = ("import json, sys, jsonschema\n"
            "s = json.load(open(sys.argv[1]))\n"
            "v = jsonschema.Draft202012Validator(s)\n"
            "n = 0\n"
            "for line in sys.stdin:\n"
            "    errs = list(v.iter_errors(json.loads(line)))\n"
            "    assert not errs, (line[:300], [e.message for e in errs][:3])\n"
            "    n += 1\n"
            "print(n)\n")
    r = subprocess.run(["/usr/bin/python3", "-c", code, SCHEMA],
                       input="".join(json.dumps(l) + "\n" for l in lines),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert int(r.stdout) == len(lines)


def traffic(srv, pki):
    """Accepted (with a request), rejected and no-certificate handshakes."""
    assert clients.curl(srv, pki["ec"]).stdout.strip() == "200"
    assert clients.curl(srv, pki["rsa"], paths=("/?x=1",)).stdout.strip() == "200"
    clients.curl(srv, pki["untrusted"])
    clients.curl(srv, None)
    return 4


def rows(db):
    return {t: count(db, "SELECT count(*) FROM %s" % t)
            for t in ("handshakes", "requests", "events")}


@test(once=True)
def mirror_to_a_file_matches_the_database_and_the_schema(ctx):
    mirror = os.path.join(ctx.scratch, "mirror-file", "logs", "mirror.jsonl")
    srv = server_mod.Server(os.path.join(ctx.scratch, "mirror-file"),
                            ctx.pki, mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditMirror logs/mirror.jsonl")
    srv.start()
    try:
        n = traffic(srv, ctx.pki)
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == n)
        assert wait_for(lambda: len(read_lines(mirror)) >= n + 2)
    finally:
        srv.stop()
    lines = read_lines(mirror)
    validate(lines)
    by_type = {}
    for l in lines:
        by_type.setdefault(l["type"], []).append(l)
    got = rows(srv.db)
    assert len(by_type["handshake"]) == got["handshakes"] == n, got
    assert len(by_type["request"]) == got["requests"] == 2, got
    assert [e["kind"] for e in by_type["event"]] == ["start", "stop"], \
        by_type["event"]
    assert {l["outcome"] for l in by_type["handshake"]} == {
        "accepted", "rejected", "no_certificate"}, by_type["handshake"]
    assert {l["source"] for l in lines} == {srv.db}, srv.db
    assert oct(os.stat(mirror).st_mode & 0o777) == "0o640"
    # export writes the same lines from the database (a handshake's
    # `requests` counts those stored by then: the mirror may say fewer).
    r = subprocess.run([ctx.tool, "export", "--format", "jsonl", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    exported = [json.loads(l) for l in r.stdout.splitlines()]
    validate(exported)

    def key(l):
        return (l["type"], l["id"])

    ex = {key(l): l for l in exported}
    for l in lines:
        e = dict(ex[key(l)])
        if l["type"] == "handshake":
            assert l["requests"] <= e["requests"], (l, e)
            e["requests"] = l["requests"]
        assert e == l, (e, l)
    # --since keeps later rows only; usage errors exit 2.
    r = subprocess.run([ctx.tool, "export", "--since", "2099-01-01",
                        srv.db], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout == "", r.stdout
    r = subprocess.run([ctx.tool, "export", "--format", "csv", srv.db],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "jsonl" in r.stderr


@test(once=True, expect_errors=(r"piped log program .* failed unexpectedly",
                                r"mirror: cannot write"))
def mirror_through_a_pipe_survives_its_reader_being_killed(ctx):
    base = os.path.join(ctx.scratch, "mirror-pipe")
    os.makedirs(base, exist_ok=True)
    out = os.path.join(base, "received.jsonl")
    pidfile = os.path.join(base, "reader.pid")
    reader = os.path.join(base, "reader.sh")
    with open(reader, "w") as f:
        f.write("#!/bin/sh\necho $$ > %s\nexec cat >> %s\n" % (pidfile, out))
    os.chmod(reader, 0o755)
    srv = server_mod.Server(base, ctx.pki, mpm=ctx.srv.mpm,
                            extra_global="MTLSAuditMirror \"|%s\"" % reader)
    srv.start()
    try:
        made = traffic(srv, ctx.pki)
        assert wait_for(lambda: sum(l["type"] == "handshake"
                                    for l in read_lines(out)) == made), \
            read_lines(out)
        first = int(open(pidfile).read())
        os.kill(first, signal.SIGKILL)
        # httpd starts the reader again (reliable piped logs); what is
        # written meanwhile waits in the pipe.
        for _ in range(3):
            made += traffic(srv, ctx.pki)
            time.sleep(0.3)
        assert wait_for(lambda: os.path.exists(pidfile)
                        and int(open(pidfile).read()) != first, 15), \
            "httpd did not start the mirror program again"
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == made)
        made += traffic(srv, ctx.pki)
        assert wait_for(lambda: count(srv.db, "SELECT count(*) FROM "
                                      "handshakes") == made)
        got = read_lines(out)
        ids = {l["id"] for l in got if l["type"] == "handshake"}
        # Nothing is missing from SQLite; the mirror goes on after the
        # restart (the last handshakes are there).
        last = count(srv.db, "SELECT max(id) FROM handshakes")
        assert wait_for(lambda: last in {l["id"] for l in read_lines(out)
                                         if l["type"] == "handshake"}), ids
        validate(read_lines(out))
        assert count(srv.db, "SELECT count(*) FROM events WHERE kind = "
                     "'gap'") == 0
    finally:
        srv.stop()
    ctx.srv.err_offset = len(ctx.srv.read_error_log())


@test(once=True)
def live_database_backup_while_the_server_writes(ctx):
    """sqlite3 .backup and VACUUM INTO, as the README says, while clients
    handshake: each copy is a consistent database whose chains verify."""
    srv = server_mod.Server(os.path.join(ctx.scratch, "backup"), ctx.pki,
                            mpm=ctx.srv.mpm)
    srv.start()
    done = [False]
    made = [0]

    def load():
        while not done[0]:
            if clients.curl(srv, ctx.pki["ec"]).stdout.strip() == "200":
                made[0] += 1

    ts = [threading.Thread(target=load) for _ in range(4)]
    try:
        for t in ts:
            t.start()
        time.sleep(2)
        copies = []
        for i, how in enumerate((".backup", "VACUUM INTO")):
            dst = os.path.join(ctx.scratch, "backup", "copy%d.db" % i)
            cmd = ".backup '%s'" % dst if how == ".backup" else \
                "VACUUM INTO '%s'" % dst
            r = subprocess.run(["sqlite3", srv.db, cmd], capture_output=True,
                               text=True)
            assert r.returncode == 0, (how, r.stderr)
            copies.append(dst)
            time.sleep(1)
    finally:
        done[0] = True
        for t in ts:
            t.join()
        srv.stop()
    assert made[0] > 20, made
    for dst in copies:
        v = subprocess.run([ctx.tool, "verify", "--no-record", dst],
                           capture_output=True, text=True)
        assert v.returncode == 0, v.stdout + v.stderr
        assert count(dst, "SELECT count(*) FROM handshakes") > 0
    assert count(srv.db, "SELECT count(*) FROM handshakes") == made[0]
    ctx.srv.err_offset = len(ctx.srv.read_error_log())
