"""A test PKI made with the openssl command line: a root CA, an
intermediate, a second (untrusted) CA, the server's certificate and one
client certificate per scenario, plus a CRL that revokes one of them.

Everything is generated into a scratch directory on each run; nothing is
checked in.  `openssl ca` is used for client certificates because it can
set validity dates in the past or future and keeps the index a CRL needs.
"""
import os
import subprocess

CA_CONF = """
[ ca ]
default_ca = ca_default
[ ca_default ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
crlnumber = {dir}/crlnumber
default_md = sha256
default_crl_days = 30
policy = policy_any
unique_subject = no
copy_extensions = copy
email_in_dn = yes
preserve = yes
string_mask = utf8only
utf8 = yes
[ policy_any ]
commonName = optional
organizationName = optional
organizationalUnitName = optional
countryName = optional
emailAddress = optional
[ client ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[ server_only ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
[ server ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, DNS:perdir.test, DNS:nocheck.test, DNS:off.test, DNS:depth.test, IP:127.0.0.1
[ sub_ca ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def run(*args, **kw):
    r = subprocess.run(list(args), capture_output=True, **kw)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(args),
                                              r.stderr.decode(errors="replace")))
    return r.stdout


def keygen(path, kind):
    if kind == "rsa":
        run("openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
            "rsa_keygen_bits:2048", "-out", path)
    else:
        run("openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
            "ec_paramgen_curve:P-256", "-out", path)


class CA:
    """One certificate authority in its own directory."""

    def __init__(self, base, name, subject, parent=None):
        self.dir = os.path.join(base, name)
        os.makedirs(os.path.join(self.dir, "newcerts"), exist_ok=True)
        open(os.path.join(self.dir, "index.txt"), "w").close()
        with open(os.path.join(self.dir, "serial"), "w") as f:
            f.write("1000\n")
        with open(os.path.join(self.dir, "crlnumber"), "w") as f:
            f.write("01\n")
        self.conf = os.path.join(self.dir, "ca.cnf")
        with open(self.conf, "w") as f:
            f.write(CA_CONF.format(dir=self.dir))
        self.key = os.path.join(self.dir, "ca.key")
        self.cert = os.path.join(self.dir, "ca.pem")
        keygen(self.key, "ec")
        if parent is None:
            run("openssl", "req", "-x509", "-new", "-key", self.key,
                "-subj", subject, "-days", "3650", "-sha256",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                "-out", self.cert)
        else:
            csr = os.path.join(self.dir, "ca.csr")
            run("openssl", "req", "-new", "-key", self.key, "-subj", subject,
                "-out", csr)
            parent.sign(csr, self.cert, ext="sub_ca")

    def sign(self, csr, out, ext="client", start=None, end=None, days=365):
        args = ["openssl", "ca", "-batch", "-config", self.conf, "-notext",
                "-utf8", "-in", csr, "-out", out, "-extensions", ext,
                "-cert", self.cert, "-keyfile", self.key, "-preserveDN"]
        if start:
            args += ["-startdate", start]
        if end:
            args += ["-enddate", end]
        else:
            args += ["-days", str(days)]
        run(*args)

    def issue(self, base, name, subject, kind="ec", ext="client", start=None,
              end=None, extfile=None):
        """A key and certificate for `name`; returns (cert, key) paths."""
        key = os.path.join(base, name + ".key")
        csr = os.path.join(base, name + ".csr")
        cert = os.path.join(base, name + ".pem")
        keygen(key, kind)
        args = ["openssl", "req", "-new", "-utf8", "-key", key, "-subj",
                subject, "-out", csr]
        if extfile:
            args += ["-config", extfile, "-reqexts", "req_ext"]
        run(*args)
        self.sign(csr, cert, ext=ext, start=start, end=end)
        return cert, key

    def revoke(self, cert):
        run("openssl", "ca", "-config", self.conf, "-revoke", cert,
            "-keyfile", self.key, "-cert", self.cert)

    def crl(self, out):
        run("openssl", "ca", "-config", self.conf, "-gencrl", "-keyfile",
            self.key, "-cert", self.cert, "-out", out)


def fingerprint(cert):
    """SHA-256 of a PEM certificate, as `openssl x509 -fingerprint` says."""
    out = run("openssl", "x509", "-in", cert, "-noout", "-fingerprint",
              "-sha256").decode()
    return out.strip().split("=", 1)[1].replace(":", "").lower()


def make_pki(base):
    """Everything the tests use; returns a dict of name -> (cert, key)."""
    os.makedirs(base, exist_ok=True)
    root = CA(base, "root", "/O=mtls-audit tests/CN=Test Root CA")
    inter = CA(base, "inter", "/O=mtls-audit tests/CN=Test Intermediate CA",
               parent=root)
    rogue = CA(base, "rogue", "/O=Somebody else/CN=Untrusted CA")
    p = {"root": root, "inter": inter, "rogue": rogue}

    p["server"] = root.issue(base, "server", "/CN=localhost", ext="server")
    p["ec"] = root.issue(base, "client-ec", "/O=Example/CN=client-ec")
    p["rsa"] = root.issue(base, "client-rsa", "/O=Example/CN=client-rsa",
                          kind="rsa")
    p["expired"] = root.issue(base, "expired", "/CN=expired",
                              start="20200101000000Z", end="20210101000000Z")
    p["future"] = root.issue(base, "future", "/CN=not-yet-valid",
                             start="20400101000000Z", end="20410101000000Z")
    p["revoked"] = root.issue(base, "revoked", "/CN=revoked")
    p["wrong_eku"] = root.issue(base, "wrong-eku", "/CN=server-only",
                                ext="server_only")
    p["untrusted"] = rogue.issue(base, "untrusted", "/CN=untrusted")
    p["via_inter"] = inter.issue(base, "via-inter", "/CN=via-intermediate")
    # The intermediate travels with the leaf.
    bundle = os.path.join(base, "via-inter-chain.pem")
    with open(bundle, "w") as f:
        f.write(open(p["via_inter"][0]).read())
        f.write(open(inter.cert).read())
    p["via_inter_chain"] = (bundle, p["via_inter"][1])
    p["hostile"] = root.issue(
        base, "hostile",
        "/O=Zo\u00eb & S\u00f8ren \u65e5\u672c/CN=<script>alert(1)<\\/script>"
        " \\, '\"\\=;\\+x")
    sans = os.path.join(base, "many-sans.cnf")
    with open(sans, "w") as f:
        f.write("[req]\ndistinguished_name=dn\n[dn]\n[req_ext]\n"
                "subjectAltName=" +
                ",".join("DNS:host%d.example.test" % i for i in range(120)) +
                ",IP:10.1.2.3,email:ops@example.test\n")
    p["many_sans"] = root.issue(base, "many-sans", "/CN=many-sans",
                                extfile=sans)
    # Its mirror line (about 11 KB) is longer than rsyslog's default
    # maxMessageSize of 8k.
    sans = os.path.join(base, "sans-over-8k.cnf")
    with open(sans, "w") as f:
        f.write("[req]\ndistinguished_name=dn\n[dn]\n[req_ext]\n"
                "subjectAltName=" +
                ",".join("DNS:host%d.example.test" % i for i in range(400)) +
                "\n")
    p["sans_over_8k"] = root.issue(base, "sans-over-8k", "/CN=sans-over-8k",
                                   extfile=sans)
    self_key = os.path.join(base, "self.key")
    self_cert = os.path.join(base, "self.pem")
    keygen(self_key, "ec")
    run("openssl", "req", "-x509", "-new", "-key", self_key, "-subj",
        "/CN=self-signed", "-days", "30", "-out", self_cert)
    p["self"] = (self_cert, self_key)

    root.revoke(p["revoked"][0])
    p["crl"] = os.path.join(base, "root.crl")
    root.crl(p["crl"])
    return p
