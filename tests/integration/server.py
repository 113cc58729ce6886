"""A scratch Apache httpd: the real Debian apache2 binary with the built
module, its own ServerRoot, config, PidFile and logs in a temporary
directory, on 127.0.0.1 ports.  It never touches /etc/apache2 or the
system service, and is stopped by its own pid.
"""
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import time

HTTPD = "/usr/sbin/apache2"
MODULES = "/usr/lib/apache2/modules"
TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.path.join(TOP, "build")
# MTLS_ASAN=1: load the module built with AddressSanitizer and UBSan
# (build-asan/) into apache2, with the sanitizer runtime preloaded; every
# report goes to logs/asan.* and fails the run.
ASAN = os.environ.get("MTLS_ASAN") == "1"
MODULE_DIR = os.path.join(TOP, "build-asan") if ASAN else BUILD


_given = set()


def _ephemeral_low():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port():
    """A port on 127.0.0.1 that nothing listens on now and that this run
    has not handed out before (two Listen lines on one port fail the
    configuration, as they once did in CI when the kernel gave a
    just-closed port again).  Taken below the kernel's ephemeral range
    when there is room, so that a client's outgoing connection cannot
    take it as its source port before the server binds it."""
    low = _ephemeral_low()
    for _ in range(200):
        if low > 12000:
            port = random.randrange(10000, low)
        else:
            port = 0
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
            port = s.getsockname()[1]
        except OSError:
            continue
        finally:
            s.close()
        if port not in _given:
            _given.add(port)
            return port
    raise RuntimeError("no free port on 127.0.0.1")


def static_modules():
    out = subprocess.run([HTTPD, "-l"], capture_output=True, text=True).stdout
    return set(l.strip() for l in out.splitlines() if l.strip().endswith(".c"))


class Server:
    def __init__(self, root, pki, mpm="event", extra_global="", user="www-data",
                 h2=False):
        self.root = root
        self.pki = pki
        self.mpm = mpm
        self.port = free_port()          # most scenarios
        self.port13 = free_port()        # TLS 1.3 only
        self.db = os.path.join(root, "auditdb", "mtls_audit.db")
        self.error_log = os.path.join(root, "logs", "error.log")
        self.vars_log = os.path.join(root, "logs", "ssl_vars.log")
        self.pidfile = os.path.join(root, "logs", "httpd.pid")
        self.conf = os.path.join(root, "httpd.conf")
        self.extra_global = extra_global
        self.user = user
        # h2: load mod_http2 and offer h2 (then http/1.1) on the audited
        # vhosts localhost and perdir.test of the main port, each request
        # also written to logs/requests.log by mod_log_config.
        self.h2 = h2
        self.requests_log = os.path.join(root, "logs", "requests.log")
        self.err_offset = 0
        os.makedirs(os.path.join(root, "logs"), exist_ok=True)
        os.makedirs(os.path.join(root, "htdocs", "secure"), exist_ok=True)
        for d in ("", "secure"):
            with open(os.path.join(root, "htdocs", d, "index.html"), "w") as f:
                f.write("hello\n")
        os.chmod(root, 0o755)
        self.write_conf()

    def load(self, name, mod):
        if "mod_" + mod + ".c" in static_modules():
            return ""
        return "LoadModule %s_module %s/mod_%s.so\n" % (name, MODULES, mod)

    def write_conf(self):
        p = self.pki
        root = self.root
        mods = ""
        mods += self.load("mpm_%s" % self.mpm, "mpm_%s" % self.mpm)
        for name in ("authz_core", "mime", "dir", "log_config", "ssl",
                     "socache_shmcb"):
            mods += self.load(name, name)
        if self.h2:
            mods += self.load("http2", "http2")
        mods += "LoadModule mtls_audit_module %s/mod_mtls_audit.so\n" % MODULE_DIR
        ssl_common = """
    SSLEngine on
    SSLCertificateFile {srv_cert}
    SSLCertificateKeyFile {srv_key}
    SSLCACertificateFile {ca}
""".format(srv_cert=p["server"][0], srv_key=p["server"][1],
           ca=p["root"].cert)
        conf = """
ServerRoot "{root}"
PidFile "{root}/logs/httpd.pid"
DefaultRuntimeDir "{root}/logs"
Mutex file:{root}/logs default
ErrorLog "{root}/logs/error.log"
LogLevel warn mtls_audit:info
User {user}
Group {user}
ServerName localhost
Listen 127.0.0.1:{port}
Listen 127.0.0.1:{port13}
{mods}
TypesConfig /etc/mime.types
DocumentRoot "{root}/htdocs"
DirectoryIndex index.html
<Directory "{root}/htdocs">
    Require all granted
</Directory>
StartServers 2
KeepAliveTimeout 5
SSLSessionCache shmcb:{root}/logs/ssl_scache(512000)
SSLRandomSeed startup builtin
MTLSAuditDatabase {db}
MTLSAuditFlushInterval 20
{extra_global}
LogFormat "%{{remote}}p|%H|%m|%U|%>s|%B" requests
LogFormat "%{{SSL_CLIENT_S_DN}}x|%{{SSL_CLIENT_I_DN}}x|%{{SSL_CLIENT_M_SERIAL}}x|%{{SSL_PROTOCOL}}x|%{{SSL_CIPHER}}x|%{{SSL_SESSION_RESUMED}}x|%{{SSL_CLIENT_VERIFY}}x|%U" sslvars

# The default vhost of the main port: client certificates required.
<VirtualHost 127.0.0.1:{port}>
    ServerName localhost
{ssl}
    SSLVerifyClient require
    SSLCARevocationFile {crl}
    SSLCARevocationCheck leaf
    MTLSAuditEngine On
    CustomLog "{root}/logs/ssl_vars.log" sslvars
{h2}</VirtualHost>

# Per-directory client authentication: renegotiation (TLS 1.2) and
# post-handshake authentication (TLS 1.3).
<VirtualHost 127.0.0.1:{port}>
    ServerName perdir.test
{ssl}
    SSLVerifyClient none
    MTLSAuditEngine On
    <Location /secure>
        SSLVerifyClient require
    </Location>
    CustomLog "{root}/logs/ssl_vars.log" sslvars
{h2}</VirtualHost>

# optional_no_ca: mod_ssl lets some bad certificates through.
<VirtualHost 127.0.0.1:{port}>
    ServerName nocheck.test
{ssl}
    SSLVerifyClient optional_no_ca
    MTLSAuditEngine On
    CustomLog "{root}/logs/ssl_vars.log" sslvars
</VirtualHost>

# mod_ssl's defaults (SSLVerifyDepth 1), no revocation list.
<VirtualHost 127.0.0.1:{port}>
    ServerName depth.test
{ssl}
    SSLVerifyClient require
    MTLSAuditEngine On
</VirtualHost>

# Not audited: SNI to this vhost leaves no row.
<VirtualHost 127.0.0.1:{port}>
    ServerName off.test
{ssl}
    SSLVerifyClient require
    MTLSAuditEngine Off
</VirtualHost>

# TLS 1.3 only: a TLS 1.2 client is refused.
<VirtualHost 127.0.0.1:{port13}>
    ServerName localhost
{ssl}
    SSLProtocol TLSv1.3
    SSLVerifyClient require
    MTLSAuditEngine On
</VirtualHost>
""".format(root=root, port=self.port, port13=self.port13, mods=mods,
           db=self.db, ssl=ssl_common, crl=p["crl"], user=self.user,
           extra_global=self.extra_global,
           h2=('    Protocols h2 http/1.1\n    CustomLog "%s" requests\n'
               % self.requests_log) if self.h2 else "")
        with open(self.conf, "w") as f:
            f.write(conf)

    # -- process control ----------------------------------------------
    def env(self):
        env = dict(os.environ)
        if ASAN:
            env["LD_PRELOAD"] = "libasan.so.8 libubsan.so.1"
            # httpd's own allocations live until exit: leaks are not ours
            # to judge here; memory errors and undefined behaviour are.
            env["ASAN_OPTIONS"] = ("detect_leaks=0:abort_on_error=0:"
                                   "log_path=%s/logs/asan" % self.root)
            env["UBSAN_OPTIONS"] = ("print_stacktrace=1:log_path=%s/logs/"
                                    "ubsan" % self.root)
        return env

    def sanitizer_reports(self):
        logs = os.path.join(self.root, "logs")
        out = []
        for name in sorted(os.listdir(logs)) if os.path.isdir(logs) else []:
            if name.startswith(("asan.", "ubsan.")):
                out.append(open(os.path.join(logs, name),
                                errors="replace").read()[:3000])
        return out

    def httpd(self, *args):
        return subprocess.run([HTTPD, "-d", self.root, "-f", self.conf] +
                              list(args), capture_output=True, text=True,
                              env=self.env())

    def pid(self):
        try:
            return int(open(self.pidfile).read().strip())
        except (OSError, ValueError):
            return None

    def children(self):
        """Pids of the parent's child processes (from /proc)."""
        pid, out = self.pid(), []
        for p in os.listdir("/proc"):
            try:
                if p.isdigit() and int(open("/proc/%s/stat" % p).read()
                                       .rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(p))
            except (OSError, IndexError, ValueError):
                continue
        return out

    def start(self):
        r = self.httpd("-k", "start")
        if r.returncode != 0:
            raise RuntimeError("httpd did not start: %s%s\n%s" %
                               (r.stdout, r.stderr, self.read_error_log()))
        for _ in range(100):
            if self.pid() and self.accepts():
                break
            time.sleep(0.05)
        else:
            raise RuntimeError("httpd did not come up:\n" +
                               self.read_error_log())
        # The parent listens before its children run: wait until one has
        # opened the database (its writer thread exists once it has).  A
        # test that read the file before that once saw a child fail to open
        # it ("unable to open database file", CI); why is not known (SQLite
        # run as root gives the -wal and -shm it creates to the file's
        # owner), but a read after this wait has not failed since.
        for _ in range(100):
            if self.writers():
                return
            time.sleep(0.05)

    def writers(self):
        """How many children run a writer thread (named mtls-writer)."""
        n, pid = 0, self.pid()
        for p in os.listdir("/proc"):
            try:
                if not p.isdigit() or int(open("/proc/%s/stat" % p).read()
                                          .rsplit(")", 1)[1].split()[1]) != pid:
                    continue
                n += any(open("/proc/%s/task/%s/comm" % (p, t)).read()
                         .strip() == "mtls-writer"
                         for t in os.listdir("/proc/%s/task" % p))
            except (OSError, IndexError, ValueError):
                continue
        return n

    def accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), 0.2).close()
            return True
        except OSError:
            return False

    def signal(self, sig):
        pid = self.pid()
        if pid:
            os.kill(pid, sig)

    def graceful(self):
        self.signal(signal.SIGUSR1)

    def stop(self, graceful=False):
        pid = self.pid()
        if not pid:
            return
        try:
            os.kill(pid, signal.SIGWINCH if graceful else signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(300):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)

    # -- logs ----------------------------------------------------------
    def read_error_log(self):
        try:
            return open(self.error_log, errors="replace").read()
        except OSError:
            return ""

    def new_errors(self, expected=()):
        """Error-log lines at error level or worse since the last call that
        match none of the `expected` regular expressions."""
        text = self.read_error_log()
        new = text[self.err_offset:]
        self.err_offset = len(text)
        bad = []
        for line in new.splitlines():
            if not re.search(r"\[[a-z_]*:(error|crit|alert|emerg)\]", line):
                continue
            if any(re.search(e, line) for e in expected):
                continue
            bad.append(line)
        return bad

    def vars_lines(self):
        try:
            with open(self.vars_log, "rb") as f:
                return [unescape_log(l.rstrip(b"\n")) for l in f]
        except OSError:
            return []

    def requests_lines(self):
        """logs/requests.log of an h2 server: each request as
        mod_log_config saw it, a dict of client_port, protocol, method,
        path (%U: without the query string), status and bytes (%B)."""
        out = []
        for l in self.vars_lines_of(self.requests_log):
            f = l.split("|")
            out.append(dict(client_port=int(f[0]), protocol=f[1],
                            method=f[2], path=f[3], status=int(f[4]),
                            bytes=int(f[5])))
        return out

    def vars_lines_of(self, path):
        try:
            with open(path, "rb") as f:
                return [unescape_log(l.rstrip(b"\n")) for l in f]
        except OSError:
            return []

    # -- database ------------------------------------------------------
    def query(self, sql, args=()):
        con = sqlite3.connect("file:%s?mode=ro" % self.db, uri=True,
                              timeout=10)
        con.row_factory = sqlite3.Row
        try:
            return [dict(r) for r in con.execute(sql, args)]
        finally:
            con.close()

    def max_id(self):
        return self.query("SELECT coalesce(max(id), 0) AS m FROM handshakes")[0]["m"]

    def wait_rows(self, after, count, timeout=10.0):
        """Wait until at least `count` handshake rows with id > after exist;
        returns them (all rows after, ordered by id)."""
        deadline = time.time() + timeout
        rows = []
        while time.time() < deadline:
            rows = self.query("SELECT * FROM v_handshakes WHERE id > ? "
                              "ORDER BY id", (after,))
            if len(rows) >= count:
                # Let stragglers arrive, to catch rows that should not exist.
                time.sleep(0.15)
                return self.query("SELECT * FROM v_handshakes WHERE id > ? "
                                  "ORDER BY id", (after,))
            time.sleep(0.02)
        return rows


def unescape_log(raw):
    """Undo mod_log_config's escaping (\\xhh, \\", \\\\) of a log line."""
    out = bytearray()
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == 0x5c and i + 1 < len(raw):
            n = raw[i + 1]
            if n == ord("x") and i + 3 < len(raw):
                out.append(int(raw[i + 2:i + 4], 16))
                i += 4
                continue
            out.append(n)
            i += 2
            continue
        out.append(c)
        i += 1
    return out.decode("utf-8", errors="replace")
