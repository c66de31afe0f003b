"""usher_auth against a real usher: `usher dev` (and `usher serve` for KEYS_UNAVAILABLE) started per test,
and against the table of reasons, ../reasons.json (ReasonsTableTest, without usher).

    cd examples/python && /usr/bin/python3 -m unittest -v

$USHER_BIN names a built usher; without it the tests build one with `go build`.
"""

import base64
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request
from wsgiref.simple_server import WSGIRequestHandler, make_server

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import usher_auth  # noqa: E402
from usher_auth import Forbidden, ServiceUnavailable, Unauthorized, UsherAuth  # noqa: E402

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CMD_TIMEOUT = 15.0

TMP = None
USHER = None


def setUpModule():
    global TMP, USHER
    TMP = tempfile.mkdtemp(prefix="usher-py-")
    usher_auth.load_stubs(usher_auth.generate_stubs(os.path.join(TMP, "gen")))
    USHER = os.environ.get("USHER_BIN")
    if not USHER:
        USHER = os.path.join(TMP, "usher")
        subprocess.run(["go", "build", "-o", USHER, "./cmd/usher"], cwd=REPO, check=True, timeout=600)


def tearDownModule():
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def closed_port():
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


class UsherProcess:
    """One usher process; start() returns once `pattern` names its gRPC address."""

    DEV_ADDR = re.compile(r"^  gRPC\s+(\S+)")
    SERVE_ADDR = re.compile(r'msg="usher listening" addr=(\S+)')

    def __init__(self, args, pattern):
        self.args, self.pattern = args, pattern
        self.proc, self.addr, self.lines = None, None, []
        self._found = queue.Queue()
        self._readers = []

    def start(self):
        self.proc = subprocess.Popen([USHER] + self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        for stream in (self.proc.stdout, self.proc.stderr):
            t = threading.Thread(target=self._read, args=(stream,), daemon=True)
            t.start()
            self._readers.append(t)
        try:
            self.addr = self._found.get(timeout=START_TIMEOUT)
        except queue.Empty:
            self.stop()
            raise AssertionError("usher %s printed no gRPC address within %.0fs:\n%s"
                                 % (" ".join(self.args), START_TIMEOUT, "".join(self.lines)))
        if self.addr is None:
            self.stop()
            raise AssertionError("usher %s exited before serving:\n%s" % (" ".join(self.args), "".join(self.lines)))
        return self.addr

    def _read(self, stream):
        for line in stream:  # drained to the end so usher never blocks on a full pipe
            self.lines.append(line)
            m = self.pattern.search(line)
            if m:
                self._found.put(m.group(1))
        self._found.put(None)

    def stop(self):
        if self.proc is None or self.proc.stdout.closed:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        for t in self._readers:
            t.join(timeout=STOP_TIMEOUT)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


REASONS_JSON = os.path.join(HERE, "..", "reasons.json")
CHALLENGE = re.compile(r'(Bearer realm|DPoP algs)="[^"\\]*"((?:, [a-z_]+="[^"\\]*")*)')
PARAM = re.compile(r', ([a-z_]+)="([^"\\]*)"')
DPOP_CHALLENGE = re.compile(r'DPoP algs="([A-Za-z0-9 ]+)", error="([a-z_]+)", error_description="([^"\\]*)"'
                            r'(?:, scope="([^"\\]*)")?')


class ReasonsTableTest(unittest.TestCase):
    """_reject follows ../reasons.json (internal/reasons): every reason usher sends, and the fail-closed rest."""

    @classmethod
    def setUpClass(cls):
        with open(REASONS_JSON) as f:
            cls.table = json.load(f)
        cls.pb2, _ = usher_auth.load_stubs()
        cls.auth = UsherAuth("127.0.0.1:%d" % closed_port(), "api/reasons")  # never called

    @classmethod
    def tearDownClass(cls):
        cls.auth.close()

    def verdict(self, number):
        """A rejection with this reason number, through the wire format as grpc hands it to check()."""
        pb2 = self.pb2
        resp = pb2.ValidateTokenResponse(
            valid=False, reason=number, message="why", hint="what to do",
            mismatch=pb2.Mismatch(claim="scope", expected=["a.read", "a.write"], actual=["a.read"]))
        return pb2.ValidateTokenResponse.FromString(resp.SerializeToString())

    def cases(self):
        """(label, reason number, rule): each reason of the table, each reason of the .proto, and unknowns."""
        rules = {r["reason"]: r for r in self.table["reasons"]}
        unknown = self.table["unknown"]
        names = list(rules) + [n for n in self.pb2.Reason.keys() if n not in rules]
        for name in names:
            try:
                number = self.pb2.Reason.Value(name)
            except ValueError:
                self.fail("reasons.json names %s, which usher.proto does not" % name)
            # A rejection that says VALID is not to be trusted: fail closed, like a reason not listed.
            rule = unknown if name == "REASON_VALID" else rules.get(name, unknown)
            yield name, number, rule
        yield "REASON_999 (a newer usher)", 999, unknown

    def test_helper_table_is_reasons_json(self):
        rules = {r["reason"]: (r["http_status"], r["bearer_error"], r["challenge"]) for r in self.table["reasons"]
                 if r["reason"] != "REASON_VALID"}
        self.assertEqual(usher_auth._REJECTIONS, rules)
        unknown = self.table["unknown"]
        self.assertEqual(usher_auth._UNKNOWN, (unknown["http_status"], unknown["bearer_error"], unknown["challenge"]))
        self.assertEqual([r["reason"] for r in self.table["reasons"] if r["challenge"] == "DPoP"],
                         ["REASON_PROOF_MISSING", "REASON_INVALID_PROOF"])
        self.assertEqual(usher_auth.DPOP_ALGS, self.table["dpop_algs"])

    def test_dpop_header_and_scheme_checked_before_usher(self):
        with self.assertRaises(Unauthorized) as cm:
            self.auth.check("DPoP tok", dpop=["a.b.c", "d.e.f"], method="GET", uri="https://api.example/x")
        e = cm.exception
        self.assertEqual(e.reason, "INVALID_PROOF")
        m = DPOP_CHALLENGE.fullmatch(e.www_authenticate)
        self.assertIsNotNone(m, e.www_authenticate)
        self.assertEqual(m.group(1), usher_auth.DPOP_ALGS)
        self.assertEqual(m.group(2), "invalid_dpop_proof")
        self.assertIn("2 DPoP header values", m.group(3))
        for header in ("DPoP", "dpop   "):
            with self.subTest(header=header):
                with self.assertRaises(Unauthorized) as cm:
                    self.auth.check(header)
                m = DPOP_CHALLENGE.fullmatch(cm.exception.www_authenticate)
                self.assertIsNotNone(m, cm.exception.www_authenticate)
                self.assertEqual((cm.exception.reason, m.group(2)), ("INVALID_CREDENTIALS", "invalid_request"))

    def test_table_is_complete(self):
        names = [r["reason"] for r in self.table["reasons"]]
        self.assertIn("REASON_INSUFFICIENT_SCOPE", names)
        self.assertIn("REASON_AUDIENCE_MISMATCH", names)
        self.assertNotIn("REASON_UNSPECIFIED", names)
        self.assertEqual(len(names), len(set(names)))
        self.assertEqual(self.table["unknown"]["http_status"], 503)
        self.assertEqual(self.table["unknown"]["bearer_error"], "")

    def test_reject_follows_reasons_json(self):
        for scheme in ("Bearer", "DPoP"):
            self.check_reject(scheme)

    def check_reject(self, scheme):
        """Every rejection as reasons.json says; its challenge is DPoP when the table says so or the token came so."""
        classes = {401: Unauthorized, 403: Forbidden, 503: ServiceUnavailable}
        seen = 0
        for label, number, rule in self.cases():
            with self.subTest(reason=label, scheme=scheme):
                seen += 1
                e = self.auth._reject(self.verdict(number), scheme)
                self.assertEqual(e.status, rule["http_status"])
                self.assertIs(type(e), classes[rule["http_status"]])
                self.assertTrue(e.status_line.startswith("%d " % rule["http_status"]))
                if e.status == 401:
                    self.assertTrue(e.www_authenticate, "401 without WWW-Authenticate (RFC 7235 section 3.1)")
                if e.www_authenticate is None:
                    params = {}
                else:
                    m = CHALLENGE.fullmatch(e.www_authenticate)
                    self.assertIsNotNone(m, "not an RFC 6750 or RFC 9449 challenge: %r" % e.www_authenticate)
                    want = "DPoP algs" if "DPoP" in (rule["challenge"], scheme) else "Bearer realm"
                    self.assertEqual(m.group(1), want, e.www_authenticate)
                    params = dict(PARAM.findall(m.group(2)))
                    self.assertIn(("WWW-Authenticate", e.www_authenticate), e.headers)
                self.assertEqual(params.get("error", ""), rule["bearer_error"], e.www_authenticate)
                if rule["bearer_error"]:
                    self.assertTrue(params.get("error_description"), e.www_authenticate)
                if rule["bearer_error"] == "insufficient_scope":
                    self.assertEqual(params.get("scope"), "a.write", e.www_authenticate)
                    self.assertEqual(e.missing_scopes, ["a.write"])
                else:
                    self.assertNotIn("scope", params)
        self.assertGreaterEqual(seen, len(self.table["reasons"]) + 2)


class UsherAuthTest(unittest.TestCase):
    def setUp(self):
        self.usher = UsherProcess(["dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"], UsherProcess.DEV_ADDR)
        self.addCleanup(self.usher.stop)
        self.addr = self.usher.start()
        self.auths = []
        self.wait_ready()

    def tearDown(self):
        for a in self.auths:
            a.close()
        self.usher.stop()
        self.assertIsNotNone(self.usher.proc.poll(), "usher still running after SIGTERM")

    def auth(self, audience, target=None, **kw):
        a = UsherAuth(target or self.addr, audience, **kw)
        self.auths.append(a)
        return a

    def mint(self, audience, *scopes, ttl=None, opaque=False, dpop_key=None):
        cmd = [USHER, "mint", "--addr", self.addr, "--audience", audience]
        for s in scopes:
            cmd += ["--scope", s]
        if ttl:
            cmd += ["--ttl", ttl]
        if opaque:
            cmd += ["--opaque"]
        if dpop_key:
            cmd += ["--dpop-key", dpop_key]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        token = out.stdout.strip()
        if opaque:
            self.assertNotIn(".", token, "not an opaque token: %r" % token)
        else:
            self.assertEqual(token.count("."), 2, "not a compact JWS: %r" % token)
        return token

    def dpop_key(self, name="dpop"):
        """A path for a DPoP key of this test, which `usher mint --dpop-key` creates."""
        d = tempfile.mkdtemp(dir=TMP)
        return os.path.join(d, name + ".pem")

    def proof(self, key, method, uri, token):
        out = subprocess.run([USHER, "proof", "--key", key, "--method", method, "--uri", uri, "--token", token],
                             capture_output=True, text=True, timeout=CMD_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        proof = out.stdout.strip()
        self.assertEqual(proof.count("."), 2, "not a compact JWS: %r" % proof)
        return proof

    def assert_dpop_challenge(self, err, error, description_prefix):
        m = DPOP_CHALLENGE.fullmatch(err.www_authenticate or "")
        self.assertIsNotNone(m, "not an RFC 9449 DPoP challenge: %r" % err.www_authenticate)
        algs, got_error, description, scope = m.groups()
        self.assertIn("ES256", algs.split())
        self.assertEqual(got_error, error)
        self.assertTrue(description.startswith(description_prefix), description)
        self.assertIsNone(scope)
        self.assertIn(("WWW-Authenticate", err.www_authenticate), err.headers)

    def revoke(self, token):
        out = subprocess.run([USHER, "revoke", "--addr", self.addr, token], capture_output=True, text=True,
                             timeout=CMD_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)

    def wait_ready(self):
        """Until the dev issuer's keys are loaded: a fresh token must come back VALID."""
        auth = self.auth("api/users")
        token = self.mint("api/users")
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                auth.check("Bearer " + token)
                return
            except ServiceUnavailable as e:
                if time.monotonic() > deadline:
                    raise AssertionError("usher not ready after %.0fs: %s" % (START_TIMEOUT, e))
                time.sleep(0.05)

    def assert_challenge(self, err, error, description_prefix=None, scope=None):
        m = re.fullmatch(r'Bearer realm="([^"\\]*)", error="([a-z_]+)", error_description="([^"\\]*)"'
                         r'(?:, scope="([^"\\]*)")?', err.www_authenticate or "")
        self.assertIsNotNone(m, "not an RFC 6750 challenge: %r" % err.www_authenticate)
        realm, got_error, description, got_scope = m.groups()
        self.assertEqual(got_error, error)
        if description_prefix is not None:
            self.assertTrue(description.startswith(description_prefix), description)
        self.assertEqual(got_scope, scope)
        self.assertIn(("WWW-Authenticate", err.www_authenticate), err.headers)
        return realm, description

    # --- verdicts ---

    def test_valid_token_returns_claims(self):
        token = self.mint("api/users", "users.read")
        claims = self.auth("api/users").check("Bearer " + token, required_scopes=["users.read"])
        self.assertEqual(claims.audience, ["api/users"])
        self.assertEqual(claims.scopes, ["users.read"])
        self.assertEqual(claims.subject, "usher-dev")
        self.assertEqual(claims.client_id, "usher-dev")
        self.assertEqual(claims.token_type, "at+jwt")
        self.assertEqual(claims.algorithm, "RS256")
        self.assertRegex(claims.issuer, r"^http://127\.0\.0\.1:\d+$")
        self.assertGreater(claims.expires_at.timestamp(), time.time())
        self.assertEqual(claims.raw["aud"], "api/users")
        self.assertEqual(claims.raw["scope"], "users.read")

    def test_scheme_is_case_insensitive(self):
        token = self.mint("api/users")
        claims = self.auth("api/users").check("bearer  " + token + " ")
        self.assertEqual(claims.audience, ["api/users"])

    def test_token_for_another_api_is_401_audience_mismatch(self):
        token = self.mint("api/users", "users.read")
        with self.assertRaises(Unauthorized) as cm:
            self.auth("api/invoices").check("Bearer " + token)
        e = cm.exception
        self.assertEqual(e.status, 401)
        self.assertEqual(e.status_line, "401 Unauthorized")
        self.assertEqual(e.reason, "AUDIENCE_MISMATCH")
        self.assertEqual(e.message, "token audience [api/users] does not include api/invoices")
        self.assertIn("Users API", e.hint)
        self.assertIn("api/invoices", e.hint)
        self.assertEqual(e.mismatch, {"claim": "aud", "expected": ["api/invoices"], "actual": ["api/users"]})
        realm, description = self.assert_challenge(e, "invalid_token", "AUDIENCE_MISMATCH: token audience")
        self.assertEqual(realm, "api/invoices")
        self.assertIn("Users API", description)
        body = json.loads(e.body())
        self.assertEqual(body["reason"], "AUDIENCE_MISMATCH")
        self.assertIn("Users API", body["hint"])

    def test_missing_scope_is_403(self):
        token = self.mint("api/invoices", "invoices.read")
        with self.assertRaises(Forbidden) as cm:
            self.auth("api/invoices").check("Bearer " + token, required_scopes=["invoices.read", "invoices.write"])
        e = cm.exception
        self.assertEqual(e.status, 403)
        self.assertEqual(e.reason, "INSUFFICIENT_SCOPE")
        self.assertEqual(e.missing_scopes, ["invoices.write"])
        self.assertTrue(e.message)
        self.assert_challenge(e, "insufficient_scope", "INSUFFICIENT_SCOPE: ", scope="invoices.write")

    def test_garbage_is_401_malformed(self):
        with self.assertRaises(Unauthorized) as cm:
            self.auth("api/users").check("Bearer not.a.jwt")
        e = cm.exception
        self.assertEqual((e.status, e.reason), (401, "MALFORMED"))
        self.assertIsNone(e.mismatch)
        self.assert_challenge(e, "invalid_token", "MALFORMED: ")

    def test_opaque_token_is_valid_and_revoked_one_401_inactive(self):
        auth = self.auth("api/users")
        claims = auth.check("Bearer " + self.mint("api/users", "users.read", opaque=True))
        self.assertEqual(claims.token_format, "opaque")
        self.assertEqual(claims.scopes, ["users.read"])
        # Revoked before usher has seen it: no cached answer, so introspection says inactive at once
        # (revocation of a cached token, within cache_ttl, is covered by the Go tests with a fake clock).
        token = self.mint("api/users", "users.read", opaque=True)
        self.revoke(token)
        with self.assertRaises(Unauthorized) as cm:
            auth.check("Bearer " + token)
        e = cm.exception
        self.assertEqual((e.status, e.reason), (401, "INACTIVE"))
        self.assert_challenge(e, "invalid_token", "INACTIVE: ")

    def test_unknown_opaque_token_is_401_inactive(self):
        with self.assertRaises(Unauthorized) as cm:
            self.auth("api/users").check("Bearer not-a-jwt")
        e = cm.exception
        self.assertEqual((e.status, e.reason), (401, "INACTIVE"))
        self.assertTrue(e.hint)
        self.assert_challenge(e, "invalid_token", "INACTIVE: ")

    def test_expired_is_401(self):
        token = self.mint("api/users", ttl="-5m")
        with self.assertRaises(Unauthorized) as cm:
            self.auth("api/users").check("Bearer " + token)
        self.assertEqual(cm.exception.reason, "EXPIRED")
        self.assertTrue(cm.exception.hint)

    # --- DPoP-bound tokens (RFC 9449) ---

    INVOICES = "https://invoices.example/invoices"

    def test_mint_dpop_key_creates_a_private_key_file_once(self):
        key = self.dpop_key()
        cmd = [USHER, "mint", "--addr", self.addr, "--audience", "api/users", "--dpop-key", key]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("created " + key, out.stderr)
        self.assertEqual(os.stat(key).st_mode & 0o777, 0o600)
        with open(key) as f:
            self.assertTrue(f.read().startswith("-----BEGIN PRIVATE KEY-----"))
        again = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        self.assertEqual((again.returncode, again.stderr), (0, ""))
        self.assertNotEqual(again.stdout, out.stdout)

    def test_dpop_bound_token_with_its_proof_is_valid(self):
        key = self.dpop_key()
        token = self.mint("api/invoices", "invoices.read", dpop_key=key)
        claims = self.auth("api/invoices").check(
            "DPoP " + token, required_scopes=["invoices.read"], dpop=self.proof(key, "GET", self.INVOICES, token),
            method="GET", uri=self.INVOICES + "?page=2")
        self.assertEqual(claims.scopes, ["invoices.read"])
        self.assertEqual(list(claims.confirmation), ["jkt"])
        self.assertEqual(claims.confirmation["jkt"], claims.raw["cnf"]["jkt"])

    def test_dpop_bound_token_as_bearer_is_401_proof_missing(self):
        key = self.dpop_key()
        token = self.mint("api/invoices", "invoices.read", dpop_key=key)
        auth = self.auth("api/invoices")
        proof = self.proof(key, "GET", self.INVOICES, token)
        for label, kw in (("no proof", {}), ("a proof, scheme Bearer", dict(dpop=proof, method="GET", uri=self.INVOICES))):
            with self.subTest(label):
                with self.assertRaises(Unauthorized) as cm:
                    auth.check("Bearer " + token, **kw)
                e = cm.exception
                self.assertEqual((e.status, e.reason), (401, "PROOF_MISSING"))
                self.assertIn("DPoP", e.hint)
                self.assert_dpop_challenge(e, "invalid_token", "PROOF_MISSING: ")

    def test_proof_for_another_uri_or_key_or_used_twice_is_401_invalid_proof(self):
        key, other = self.dpop_key("mine"), self.dpop_key("other")
        token = self.mint("api/invoices", "invoices.read", dpop_key=key)
        self.mint("api/users", dpop_key=other)  # creates the other key
        auth = self.auth("api/invoices")
        users = "https://users.example/users"
        cases = (("another URI", self.proof(key, "GET", users, token), "htu", [self.INVOICES], [users]),
                 ("another key", self.proof(other, "GET", self.INVOICES, token), "jkt", None, None))
        for label, proof, claim, expected, actual in cases:
            with self.subTest(label):
                with self.assertRaises(Unauthorized) as cm:
                    auth.check("DPoP " + token, dpop=proof, method="GET", uri=self.INVOICES)
                e = cm.exception
                self.assertEqual((e.status, e.reason), (401, "INVALID_PROOF"))
                self.assertEqual(e.mismatch["claim"], claim)
                if expected is not None:
                    self.assertEqual((e.mismatch["expected"], e.mismatch["actual"]), (expected, actual))
                self.assert_dpop_challenge(e, "invalid_dpop_proof", "INVALID_PROOF: ")
        proof = self.proof(key, "GET", self.INVOICES, token)
        auth.check("DPoP " + token, dpop=proof, method="GET", uri=self.INVOICES)
        with self.assertRaises(Unauthorized) as cm:
            auth.check("DPoP " + token, dpop=proof, method="GET", uri=self.INVOICES)
        self.assertEqual(cm.exception.reason, "INVALID_PROOF", "a replayed proof")
        self.assert_dpop_challenge(cm.exception, "invalid_dpop_proof", "INVALID_PROOF: ")

    def test_any_rejection_of_the_dpop_scheme_has_a_dpop_challenge(self):
        key = self.dpop_key()
        token = self.mint("api/users", "users.read", dpop_key=key)
        with self.assertRaises(Unauthorized) as cm:
            self.auth("api/invoices").check("DPoP " + token, dpop=self.proof(key, "GET", self.INVOICES, token),
                                            method="GET", uri=self.INVOICES)
        self.assertEqual(cm.exception.reason, "AUDIENCE_MISMATCH")
        self.assert_dpop_challenge(cm.exception, "invalid_token", "AUDIENCE_MISMATCH: ")

    # --- the Authorization header ---

    def test_no_header_is_401_without_error_code(self):
        auth = self.auth("api/users")
        for header in (None, "", "   ", []):
            with self.subTest(header=header):
                with self.assertRaises(Unauthorized) as cm:
                    auth.check(header)
                e = cm.exception
                self.assertEqual((e.status, e.reason), (401, "MISSING_CREDENTIALS"))
                self.assertEqual(e.www_authenticate, 'Bearer realm="api/users"')  # RFC 6750 section 3.1
                self.assertIn("Bearer", e.hint)

    def test_wrong_scheme_or_empty_token_is_401_invalid_request(self):
        auth = self.auth("api/users", realm="example")
        token = self.mint("api/users")
        for header in ("Basic dXNlcjpwYXNz", token, "Bearer", "Bearer   ", ["Bearer " + token, "Bearer " + token]):
            with self.subTest(header=header):
                with self.assertRaises(Unauthorized) as cm:
                    auth.check(header)
                e = cm.exception
                self.assertEqual((e.status, e.reason), (401, "INVALID_CREDENTIALS"))
                realm, _ = self.assert_challenge(e, "invalid_request")
                self.assertEqual(realm, "example")

    def test_empty_audience_is_refused(self):
        with self.assertRaises(ValueError):
            UsherAuth(self.addr, "")

    # --- fail closed ---

    def test_usher_stopped_is_503(self):
        auth = self.auth("api/users", timeout=2.0)
        token = self.mint("api/users")
        self.assertEqual(auth.check("Bearer " + token).audience, ["api/users"])
        self.usher.stop()
        start = time.monotonic()
        with self.assertRaises(ServiceUnavailable) as cm:
            auth.check("Bearer " + token)
        e = cm.exception
        self.assertLess(time.monotonic() - start, 2.0 + 1.0)
        self.assertEqual((e.status, e.reason), (503, "VALIDATION_UNAVAILABLE"))
        self.assertIn(self.addr, e.message)
        self.assertIn("not the token's fault", e.hint)
        self.assertIsNone(e.www_authenticate)

    def test_closed_port_is_503(self):
        target = "127.0.0.1:%d" % closed_port()
        with self.assertRaises(ServiceUnavailable) as cm:
            self.auth("api/users", target=target, timeout=2.0).check("Bearer " + self.mint("api/users"))
        self.assertEqual((cm.exception.status, cm.exception.reason), (503, "VALIDATION_UNAVAILABLE"))
        self.assertIn("UNAVAILABLE", cm.exception.message)

    def test_keys_unavailable_is_503(self):
        dead = "http://127.0.0.1:%d/" % closed_port()
        cfg = os.path.join(TMP, "keys-unavailable-%d.yaml" % os.getpid())
        with open(cfg, "w") as f:
            f.write('listen: "127.0.0.1:0"\nissuers:\n  - issuer: "%s"\n    jwks_uri: "%sjwks.json"\n'
                    '    fetch_timeout: "1s"\n' % (dead, dead))
        serve = UsherProcess(["serve", "--config", cfg], UsherProcess.SERVE_ADDR)
        self.addCleanup(serve.stop)
        addr = serve.start()
        token = "%s.%s.c2ln" % (b64url({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}),
                                b64url({"iss": dead, "aud": "api/users", "exp": int(time.time()) + 600}))
        with self.assertRaises(ServiceUnavailable) as cm:
            self.auth("api/users", target=addr, timeout=5.0).check("Bearer " + token)
        e = cm.exception
        self.assertEqual((e.status, e.reason), (503, "KEYS_UNAVAILABLE"))
        self.assertIn("not the token's fault", e.hint)
        self.assertIsNone(e.www_authenticate)
        serve.stop()

    # --- the example WSGI app, over HTTP ---

    def test_example_app_over_http(self):
        import example_app

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args):
                pass

        srv = make_server("127.0.0.1", 0, example_app.make_app(self.auth("api/invoices")), handler_class=Quiet)
        t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        t.start()

        def stop_server():
            srv.shutdown()
            srv.server_close()
            t.join(timeout=STOP_TIMEOUT)

        self.addCleanup(stop_server)
        url = "http://127.0.0.1:%d/invoices" % srv.server_port

        def get(authorization=None, dpop=None):
            headers = {"Authorization": authorization} if authorization else {}
            if dpop:
                headers["DPoP"] = dpop
            req = urllib.request.Request(url, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status, dict(r.headers), json.loads(r.read())
            except urllib.error.HTTPError as e:
                return e.code, dict(e.headers), json.loads(e.read())

        status, _, body = get("Bearer " + self.mint("api/invoices", "invoices.read"))
        self.assertEqual((status, body["subject"]), (200, "usher-dev"))

        status, headers, body = get("Bearer " + self.mint("api/users", "users.read"))
        self.assertEqual((status, body["reason"]), (401, "AUDIENCE_MISMATCH"))
        self.assertTrue(headers["WWW-Authenticate"].startswith(
            'Bearer realm="api/invoices", error="invalid_token", error_description="AUDIENCE_MISMATCH: '))
        self.assertIn("Users API", body["hint"])

        status, headers, body = get("Bearer " + self.mint("api/invoices"))
        self.assertEqual((status, body["reason"]), (403, "INSUFFICIENT_SCOPE"))
        self.assertIn('error="insufficient_scope"', headers["WWW-Authenticate"])

        status, headers, body = get()
        self.assertEqual((status, body["reason"]), (401, "MISSING_CREDENTIALS"))
        self.assertEqual(headers["WWW-Authenticate"], 'Bearer realm="api/invoices"')

        key = self.dpop_key()
        bound = self.mint("api/invoices", "invoices.read", dpop_key=key)
        status, _, body = get("DPoP " + bound, self.proof(key, "GET", url, bound))
        self.assertEqual((status, body["subject"]), (200, "usher-dev"))
        status, headers, body = get("DPoP " + bound, self.proof(key, "GET", url + "/other", bound))
        self.assertEqual((status, body["reason"]), (401, "INVALID_PROOF"))
        self.assertTrue(headers["WWW-Authenticate"].startswith('DPoP algs="'), headers["WWW-Authenticate"])
        self.assertIn('error="invalid_dpop_proof"', headers["WWW-Authenticate"])
        status, headers, body = get("Bearer " + bound)
        self.assertEqual((status, body["reason"]), (401, "PROOF_MISSING"))
        self.assertTrue(headers["WWW-Authenticate"].startswith('DPoP algs="'), headers["WWW-Authenticate"])

        token = self.mint("api/invoices", "invoices.read")
        self.usher.stop()
        status, headers, body = get("Bearer " + token)
        self.assertEqual((status, body["reason"]), (503, "VALIDATION_UNAVAILABLE"))
        self.assertNotIn("WWW-Authenticate", headers)


if __name__ == "__main__":
    unittest.main()
