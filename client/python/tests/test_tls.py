"""Over TLS with a client certificate (certificates made with openssl for the test): the interceptor sends
usher the SHA-256 thumbprint of the caller's certificate (RFC 8705) and https DPoP htu without :443, and
never answers such a call from the cache."""

import base64
import hashlib
import os
import shutil
import ssl
import subprocess
import tempfile
import unittest

import grpc

import support
from support import SAY, SERVERS, Client, FakeUsher, answer

FAR = 4102444800


def make_certs(d):
    """CA, a server certificate for invoices.test and a client certificate, as PEM files in d."""
    def run(*args):
        out = subprocess.run(["openssl"] + list(args), cwd=d, capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise AssertionError("openssl %s: %s" % (" ".join(args), out.stderr))

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1", "-subj", "/CN=usher-test-ca")
    for name, ext in (("server", "subjectAltName=DNS:invoices.test\nextendedKeyUsage=serverAuth\n"),
                      ("client", "extendedKeyUsage=clientAuth\n")):
        with open(os.path.join(d, name + ".ext"), "w") as f:
            f.write(ext)
        run("req", *ec, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + name)
        run("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", name + ".pem", "-days", "1", "-extfile", name + ".ext")

    def read(name):
        with open(os.path.join(d, name), "rb") as f:
            return f.read()

    return {n: read(n) for n in ("ca.pem", "server.key", "server.pem", "client.key", "client.pem")}


class TLS:
    flavor = None

    @classmethod
    def setUpClass(cls):
        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl is not installed (Debian: openssl)")
        cls.certs = make_certs(tempfile.mkdtemp(dir=support.tmp_dir()))

    def test_client_certificate_thumbprint_and_https_htu(self):
        c = self.certs
        fake = FakeUsher(answer("REASON_VALID", exp=FAR))
        self.addCleanup(fake.stop)
        options = {} if self.flavor == "sync" else {"authority": "invoices.test:443"}
        server = SERVERS[self.flavor](fake.addr, tls=(c["server.key"], c["server.pem"], c["ca.pem"]), **options)
        self.addCleanup(server.stop)
        creds = grpc.ssl_channel_credentials(c["ca.pem"], c["client.key"], c["client.pem"])
        client = Client(server.port, authority="invoices.test:443", credentials=creds,
                        options=[("grpc.ssl_target_name_override", "invoices.test")])
        self.addCleanup(client.close)
        for _ in range(2):
            out = client.say((("authorization", "Bearer tok"),))
            self.assertEqual(out.code, grpc.StatusCode.OK, out)
        out = client.say((("authorization", "DPoP tok"), ("dpop", "a.proof.jwt")))
        self.assertEqual(out.code, grpc.StatusCode.OK, out)
        der = ssl.PEM_cert_to_DER_cert(c["client.pem"].decode())
        want = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
        self.assertEqual(fake.calls, 3, "a call with a client certificate was answered from the cache")
        a, b, d = fake.requests
        self.assertEqual((a.client_certificate_sha256, b.client_certificate_sha256), (want, want))
        self.assertEqual((d.scheme, d.http_method, d.http_uri), ("DPoP", "POST", "https://invoices.test" + SAY))


class SyncTLSTest(TLS, unittest.TestCase):
    flavor = "sync"


class AioTLSTest(TLS, unittest.TestCase):
    flavor = "aio"


if __name__ == "__main__":
    unittest.main()
