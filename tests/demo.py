#!/usr/bin/env python3
"""./apxs-build.sh demo: the module at work, in a scratch directory.

Generates a test CA and client certificates, starts the real apache2 with
the built module on a free 127.0.0.1 port (its own ServerRoot, config and
PidFile: /etc/apache2 is never touched), makes a few handshakes with curl
-- accepted, no certificate, expired, untrusted -- then shows what was
recorded with `mtls-audit query`, `verify` and `report`, and stops the
server.  Pass --keep to keep the scratch directory and its database."""
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "integration"))

import clients  # noqa: E402
import pki      # noqa: E402
import server   # noqa: E402


def main():
    keep = "--keep" in sys.argv
    scratch = tempfile.mkdtemp(prefix="mtls-audit-demo-")
    os.chmod(scratch, 0o755)
    tool = os.path.join(server.BUILD, "mtls-audit")
    print("demo: test CA and certificates in %s/pki" % scratch)
    p = pki.make_pki(os.path.join(scratch, "pki"))
    srv = server.Server(os.path.join(scratch, "srv"), p)
    srv.start()
    print("demo: apache2 with mod_mtls_audit on https://127.0.0.1:%d/, "
          "database %s" % (srv.port, srv.db))
    try:
        for label, cert in (("a good EC certificate", p["ec"]),
                            ("a good RSA certificate", p["rsa"]),
                            ("no certificate", None),
                            ("an expired certificate", p["expired"]),
                            ("a certificate from an unknown CA",
                             p["untrusted"])):
            r = clients.curl(srv, cert, paths=("/", "/index.html?secret=1"))
            status = r.stdout.split()[0] if r.stdout.split() else "-"
            print("demo: curl with %-34s -> HTTP %s" % (label, status))
        srv.wait_rows(0, 5)
    finally:
        srv.stop()
    cols = ("mtls-audit query --limit 10 %s" % srv.db)
    print("\n$ " + cols)
    subprocess.run([tool, "query", "--limit", "10", srv.db])
    print("\n$ sqlite3 %s \"SELECT time_utc, outcome, verify_error, "
          "alert_name, subject_dn, requests FROM v_handshakes\"" % srv.db)
    subprocess.run(["sqlite3", "-column", "-header", srv.db,
                    "SELECT time_utc, outcome, verify_error, alert_name, "
                    "subject_dn, requests FROM v_handshakes"])
    print("\n$ sqlite3 %s \"SELECT handshake_id, method, path, status "
          "FROM v_requests\"" % srv.db)
    subprocess.run(["sqlite3", "-column", "-header", srv.db,
                    "SELECT handshake_id, method, path, status, subject_dn "
                    "FROM v_requests"])
    print("\n$ mtls-audit verify --anchor %s %s" % (srv.error_log, srv.db))
    rc = subprocess.run([tool, "verify", "--anchor", srv.error_log,
                         srv.db]).returncode
    print("\n$ mtls-audit report --standard summary --anchor %s %s"
          % (srv.error_log, srv.db))
    r = subprocess.run([tool, "report", "--standard", "summary", "--anchor",
                        srv.error_log, srv.db])
    if r.returncode not in (0, 1):
        rc = r.returncode
    if keep:
        print("\ndemo: kept %s" % scratch)
    else:
        shutil.rmtree(scratch, ignore_errors=True)
    return rc


if __name__ == "__main__":
    sys.exit(main())
