"""Real TLS clients for the tests: curl, openssl s_client, and raw sockets
for what no well-behaved client does (plain HTTP, a ClientHello and
nothing after it)."""
import socket
import ssl
import subprocess

TIMEOUT = 20


def curl(srv, cert=None, host="localhost", tls="1.3", paths=("/",),
         port=None, extra=()):
    port = port or srv.port
    args = ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}\\n",
            "--cacert", srv.pki["root"].cert,
            "--resolve", "%s:%d:127.0.0.1" % (host, port)]
    if tls == "1.3":
        args += ["--tlsv1.3", "--tls-max", "1.3"]
    else:
        args += ["--tlsv1.2", "--tls-max", "1.2"]
    if cert:
        args += ["--cert", cert[0], "--key", cert[1]]
    args += list(extra)
    for i, p in enumerate(paths):
        if i:
            args += ["-o", "/dev/null"]
        args.append("https://%s:%d%s" % (host, port, p))
    return subprocess.run(args, capture_output=True, text=True,
                          timeout=TIMEOUT)


def s_client(srv, cert=None, host="localhost", tls="1.3", path="/",
             port=None, extra=(), request=True):
    port = port or srv.port
    args = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port,
            "-servername", host, "-CAfile", srv.pki["root"].cert,
            "-tls1_3" if tls == "1.3" else "-tls1_2", "-ign_eof"]
    if cert:
        args += ["-cert", cert[0], "-key", cert[1]]
    args += list(extra)
    data = ("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
            % (path, host)) if request else ""
    return subprocess.run(args, input=data, capture_output=True, text=True,
                          timeout=TIMEOUT)


def raw(port, data, read=True):
    """Send bytes on a plain TCP connection, read what comes back (until
    close or 3 s), and close."""
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.settimeout(3)
    s.sendall(data)
    got = b""
    if read:
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                got += b
        except (socket.timeout, ConnectionResetError):
            pass
    s.close()
    return got


def client_hello(host="localhost"):
    """The bytes of a real OpenSSL ClientHello (Python's ssl module is
    OpenSSL), taken from a memory BIO without any network."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()
