"""The interceptors against a real `usher dev` (and `usher serve` for KEYS_UNAVAILABLE): every row of the
code table through real stubs, on grpc.server and grpc.aio.server, with every kind of handler."""

import os
import re
import tempfile
import time
import unittest

import grpc

from support import (AUDIENCE, AUTHORITY, COUNT, HEALTH_CHECK, HEALTH_CHECK_X, SAY, SERVERS, Client, UsherProcess,
                     keys_unavailable_usher, proof, tmp_dir)

import usher_grpc

DPOP_ALGS = "ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"
BEARER = re.compile(r'Bearer realm="([^"\\]*)"((?:, [a-z_]+="[^"\\]*")*)')
DPOP = re.compile(r'DPoP algs="([^"\\]*)"((?:, [a-z_]+="[^"\\]*")*)')
PARAM = re.compile(r', ([a-z_]+)="([^"\\]*)"')

SCOPES = {SAY: ["echo.read"], COUNT: ["echo.stream"]}


def challenge(www_authenticate):
    """(scheme, params) of a www-authenticate value, or fails."""
    for scheme, rx in (("Bearer", BEARER), ("DPoP", DPOP)):
        m = rx.fullmatch(www_authenticate or "")
        if m:
            params = dict(PARAM.findall(m.group(2)))
            params["realm" if scheme == "Bearer" else "algs"] = m.group(1)
            return scheme, params
    raise AssertionError("not an RFC 6750 or RFC 9449 challenge: %r" % www_authenticate)


class Cases:
    """The code table, for one server flavor (set by the subclasses at the end of this file)."""

    flavor = None

    @classmethod
    def setUpClass(cls):
        cls.usher = UsherProcess.dev()

    @classmethod
    def tearDownClass(cls):
        cls.usher.stop()

    def serve(self, usher_addr=None, **options):
        options.setdefault("required_scopes", SCOPES)
        server = SERVERS[self.flavor](usher_addr or self.usher.addr, **options)
        self.addCleanup(server.stop)
        client = Client(server.port)
        self.addCleanup(client.close)
        return server, client

    def bearer(self, token):
        return (("authorization", "Bearer " + token),)

    def good(self, *extra_scopes):
        return self.usher.mint(AUDIENCE, "echo.read", "echo.stream", *extra_scopes)

    def assert_refused(self, out, code, reason, error=None, scheme="Bearer"):
        """The refusal's code, ErrorInfo and challenge; returns the challenge's parameters."""
        self.assertEqual(out.code, code, out)
        self.assertEqual(out.replies, [], "a refused call got replies")
        self.assertIsNotNone(out.info, "no google.rpc.ErrorInfo in grpc-status-details-bin: %r" % out)
        self.assertEqual((out.info.reason, out.info.domain), (reason, "usher.v1"))
        self.assertEqual(out.status.code, code.value[0])
        self.assertEqual(out.status.message, out.details)
        self.assertEqual(len(out.status.details), 1)
        got_scheme, params = challenge(out.www_authenticate)
        self.assertEqual(got_scheme, scheme, out.www_authenticate)
        if scheme == "Bearer":
            self.assertEqual(params["realm"], AUDIENCE)
        else:
            self.assertEqual(params["algs"], DPOP_ALGS)
        self.assertEqual(params.get("error"), error, out.www_authenticate)
        if error:
            self.assertEqual(params["error_description"], out.details.replace('"', "'"))
        return params

    # --- valid ---

    def test_valid_token_runs_unary_and_stream_handlers_with_the_claims(self):
        server, client = self.serve()
        md = self.bearer(self.good())
        out = client.say(md)
        self.assertEqual(out.code, grpc.StatusCode.OK, out)
        self.assertEqual((out.reply.subject, list(out.reply.audience)), ("usher-dev", [AUDIENCE]))
        self.assertEqual(sorted(out.reply.scopes), ["echo.read", "echo.stream"])
        out = client.count(md, n=3)
        self.assertEqual(out.code, grpc.StatusCode.OK, out)
        self.assertEqual([r.index for r in out.replies], [0, 1, 2])
        for r in out.replies:  # every message of the stream was made with the claims in reach
            self.assertEqual((r.subject, list(r.audience)), ("usher-dev", [AUDIENCE]))
        self.assertEqual((server.echo.said, server.echo.counted), (1, 1))

    def test_scheme_is_case_insensitive(self):
        _, client = self.serve()
        for scheme in ("bearer", "BEARER", "bEaReR"):
            out = client.say((("authorization", "%s %s" % (scheme, self.good())),))
            self.assertEqual(out.code, grpc.StatusCode.OK, (scheme, out))

    def test_claims_are_per_call_and_absent_outside_protected_calls(self):
        server, client = self.serve(workers=1) if self.flavor == "sync" else self.serve()
        self.assertEqual(client.say(self.bearer(self.good())).reply.subject, "usher-dev")
        # The same worker thread (sync: one worker) then runs a skipped method: no claims there.
        out = client.method(HEALTH_CHECK)
        self.assertEqual((out.code, out.reply.subject), (grpc.StatusCode.OK, "<no claims>"))
        self.assertIsNone(usher_grpc.claims())

    # --- the authorization metadata ---

    def test_no_authorization_is_unauthenticated_with_a_bare_challenge(self):
        server, client = self.serve()
        for out in (client.say(), client.count()):
            self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")
            self.assertEqual(out.www_authenticate, 'Bearer realm="api/invoices"')  # RFC 6750 section 3.1
            self.assertEqual(dict(out.info.metadata), {})
            self.assertIn('"authorization: Bearer <access token>"', out.details)
        self.assertEqual((server.echo.said, server.echo.counted), (0, 0))

    def test_two_authorization_values_are_refused(self):
        server, client = self.serve()
        token = self.good()
        out = client.say((("authorization", "Bearer " + token), ("authorization", "Bearer " + token)))
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid_request")
        self.assertEqual(out.details, "2 authorization values: send exactly one")
        self.assertEqual(server.echo.said, 0)

    def test_wrong_scheme_or_no_token_is_invalid_request(self):
        server, client = self.serve()
        token = self.good()
        cases = (("Basic dXNlcjpwYXNz", 'authorization scheme "Basic": this service takes Bearer or DPoP tokens'),
                 (token, None), ("Bearer", "empty Bearer token"), ("Bearer    ", "empty Bearer token"),
                 ("Token " + token, 'authorization scheme "Token": this service takes Bearer or DPoP tokens'))
        for value, details in cases:
            with self.subTest(value=value[:20]):
                out = client.say((("authorization", value),))
                self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid_request")
                if details:
                    self.assertEqual(out.details, details)
        self.assertEqual(server.echo.said, 0)

    # --- usher's verdicts ---

    def test_malformed_token_is_unauthenticated(self):
        _, client = self.serve()
        out = client.say(self.bearer("a.b.c"))
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "MALFORMED", "invalid_token")
        self.assertTrue(out.details.startswith("MALFORMED: "), out.details)

    def test_expired_token_is_unauthenticated(self):
        _, client = self.serve()
        out = client.say(self.bearer(self.usher.mint(AUDIENCE, "echo.read", ttl="-5m")))
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "EXPIRED", "invalid_token")
        md = out.info.metadata
        self.assertEqual((md["expected_audience"], md["actual_audience"], md["kid"]), (AUDIENCE, AUDIENCE, "dev-rs256"))
        self.assertTrue(md["hint"])

    def test_audience_mismatch_says_expected_and_actual(self):
        server, client = self.serve()
        out = client.say(self.bearer(self.usher.mint("api/users", "echo.read")))
        params = self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "AUDIENCE_MISMATCH", "invalid_token")
        self.assertTrue(params["error_description"].startswith("AUDIENCE_MISMATCH: "))
        md = dict(out.info.metadata)
        self.assertEqual(set(md), {"message", "hint", "expected_audience", "actual_audience", "issuer", "kid", "claim",
                                   "expected", "actual"})
        self.assertEqual((md["expected_audience"], md["actual_audience"]), (AUDIENCE, "api/users"))
        self.assertEqual((md["claim"], md["expected"], md["actual"]), ("aud", AUDIENCE, "api/users"))
        self.assertEqual((md["issuer"], md["kid"]), (self.usher.issuer, "dev-rs256"))
        self.assertEqual(out.details, "AUDIENCE_MISMATCH: %s (hint: %s)" % (md["message"], md["hint"]))
        self.assertEqual(server.echo.said, 0)

    def test_insufficient_scope_is_permission_denied_per_method(self):
        server, client = self.serve()
        md = self.bearer(self.usher.mint(AUDIENCE, "echo.read"))
        self.assertEqual(client.say(md).code, grpc.StatusCode.OK)
        out = client.count(md)
        params = self.assert_refused(out, grpc.StatusCode.PERMISSION_DENIED, "INSUFFICIENT_SCOPE", "insufficient_scope")
        self.assertEqual(params["scope"], "echo.stream")
        self.assertEqual(out.info.metadata["missing_scopes"], "echo.stream")
        self.assertEqual((server.echo.said, server.echo.counted), (1, 0))

    def test_audience_in_request_metadata_is_ignored(self):
        server, client = self.serve()
        users = self.usher.mint("api/users", "echo.read")
        md = self.bearer(users) + (("expected_audience", "api/users"), ("audience", "api/users"),
                                   ("x-usher-audience", "api/users"), ("expected-audience", "api/users"))
        out = client.say(md)
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "AUDIENCE_MISMATCH", "invalid_token")
        self.assertEqual(out.info.metadata["expected_audience"], AUDIENCE)
        self.assertEqual(server.echo.said, 0)

    def test_stream_is_checked_before_its_handler_runs(self):
        server, client = self.serve()
        out = client.count(self.bearer(self.usher.mint("api/users", "echo.stream")), n=5)
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "AUDIENCE_MISMATCH", "invalid_token")
        self.assertEqual(server.echo.counted, 0, "the streaming handler started for a refused call")
        out = client.count(self.bearer(self.good()), n=2)
        self.assertEqual((out.code, len(out.replies), server.echo.counted), (grpc.StatusCode.OK, 2, 1))

    # --- the skip list ---

    def test_skip_list_matches_exact_full_method_names(self):
        server, client = self.serve()
        out = client.method(HEALTH_CHECK)
        self.assertEqual(out.code, grpc.StatusCode.OK, out)
        out = client.method(HEALTH_CHECK_X)
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")
        self.assertEqual(server.echo.health, 1)

    def test_own_skip_list_entries(self):
        server, client = self.serve(skip_methods=[SAY])
        self.assertEqual(client.say().code, grpc.StatusCode.OK)
        self.assert_refused(client.count(), grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")
        server, client = self.serve(skip_defaults=False)
        self.assert_refused(client.method(HEALTH_CHECK), grpc.StatusCode.UNAUTHENTICATED, "MISSING_CREDENTIALS")

    # --- DPoP ---

    def dpop(self):
        key = os.path.join(tempfile.mkdtemp(dir=tmp_dir()), "dpop.pem")
        return key, self.usher.mint_dpop(AUDIENCE, key, "echo.read", "echo.stream")

    def test_dpop_bound_token_with_its_proof_is_valid(self):
        server, client = self.serve(authority=AUTHORITY)
        key, token = self.dpop()
        for call, method in ((client.say, SAY), (client.count, COUNT)):
            md = (("authorization", "DPoP " + token), ("dpop", proof(key, "http://" + AUTHORITY + method, token)))
            out = call(md)
            self.assertEqual(out.code, grpc.StatusCode.OK, out)
            self.assertEqual(out.reply.subject, "usher-dev")
        # A proof is for one call: the same one again is a replay.
        out = client.say(md)
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_PROOF", "invalid_dpop_proof", "DPoP")

    def test_dpop_bound_token_as_bearer_is_refused_with_a_dpop_challenge(self):
        server, client = self.serve(authority=AUTHORITY)
        key, token = self.dpop()
        out = client.say(self.bearer(token))
        params = self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "PROOF_MISSING", "invalid_token", "DPoP")
        self.assertTrue(params["error_description"].startswith("PROOF_MISSING: "))
        self.assertEqual(server.echo.said, 0)

    def test_dpop_without_one_proof_or_with_a_proof_for_another_method(self):
        server, client = self.serve(authority=AUTHORITY)
        key, token = self.dpop()
        auth = ("authorization", "DPoP " + token)
        out = client.say((auth,))
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "PROOF_MISSING", "invalid_token", "DPoP")
        p = proof(key, "http://" + AUTHORITY + SAY, token)
        out = client.say((auth, ("dpop", p), ("dpop", p)))
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_PROOF", "invalid_dpop_proof", "DPoP")
        self.assertIn("2 dpop values", out.details)
        out = client.say((auth, ("dpop", proof(key, "http://" + AUTHORITY + COUNT, token))))
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_PROOF", "invalid_dpop_proof", "DPoP")
        self.assertEqual((out.info.metadata["claim"], out.info.metadata["expected"]),
                         ("htu", "http://" + AUTHORITY + SAY))
        out = client.say((("authorization", "DPoP "),))  # a DPoP request's refusal is a DPoP challenge
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_CREDENTIALS", "invalid_request", "DPoP")
        self.assertEqual(server.echo.said, 0)

    # --- terse ---

    def test_terse_mode_says_the_reason_only(self):
        _, client = self.serve(terse=True)
        out = client.say(self.bearer(self.usher.mint("api/users", "echo.read")))
        self.assertEqual(out.code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(out.details, "AUDIENCE_MISMATCH")
        self.assertEqual(out.www_authenticate, 'Bearer realm="api/invoices", error="invalid_token"')
        self.assertEqual((out.info.reason, dict(out.info.metadata)), ("AUDIENCE_MISMATCH", {}))
        out = client.count(self.bearer(self.usher.mint(AUDIENCE, "echo.read")))
        self.assertEqual(out.code, grpc.StatusCode.PERMISSION_DENIED)
        self.assertEqual(out.www_authenticate,
                         'Bearer realm="api/invoices", error="insufficient_scope", scope="echo.stream"')
        self.assertEqual(dict(out.info.metadata), {"missing_scopes": "echo.stream"})

    # --- fail closed ---

    def test_usher_stopped_is_unavailable(self):
        usher = UsherProcess.dev()
        self.addCleanup(usher.stop)
        server, client = self.serve(usher.addr, timeout=2.0, cache=False)
        md = self.bearer(usher.mint(AUDIENCE, "echo.read"))
        self.assertEqual(client.say(md).code, grpc.StatusCode.OK)
        usher.stop()
        start = time.monotonic()
        for out in (client.say(md), client.count(md)):
            self.assert_refused(out, grpc.StatusCode.UNAVAILABLE, "VALIDATION_UNAVAILABLE")
            self.assertEqual(out.www_authenticate, 'Bearer realm="api/invoices"')
            self.assertTrue(out.details.startswith("usher could not validate the token: "), out.details)
        self.assertLess(time.monotonic() - start, 2 * (2.0 + 1.0))
        self.assertEqual((server.echo.said, server.echo.counted), (1, 0))

    def test_keys_unavailable_is_unavailable(self):
        serve, token = keys_unavailable_usher(tmp_dir())
        self.addCleanup(serve.stop)
        server, client = self.serve(serve.addr, timeout=5.0)
        for _ in range(2):  # never cached
            out = client.say(self.bearer(token))
            self.assert_refused(out, grpc.StatusCode.UNAVAILABLE, "KEYS_UNAVAILABLE")
            self.assertEqual(out.www_authenticate, 'Bearer realm="api/invoices"')
        self.assertEqual(server.interceptor.cache_stats().hits, 0)
        self.assertEqual(server.echo.said, 0)

    # --- the cache, with a real usher ---

    def test_cached_verdict_serves_until_exp_then_usher_is_asked(self):
        usher = UsherProcess.dev()
        self.addCleanup(usher.stop)
        now = [time.time()]
        server, client = self.serve(usher.addr, clock=lambda: now[0], cache_ttl=3600, timeout=2.0)
        token = usher.mint(AUDIENCE, "echo.read", ttl="30s")
        exp = __import__("support").jwt_payload(token)["exp"]
        self.assertEqual(client.say(self.bearer(token)).code, grpc.StatusCode.OK)
        usher.stop()
        now[0] = exp - 1  # before exp: the cached verdict, usher not asked
        out = client.say(self.bearer(token))
        self.assertEqual(out.code, grpc.StatusCode.OK, out)
        self.assertEqual(server.interceptor.cache_stats().hits, 1)
        now[0] = exp  # at exp the entry is gone: usher is asked, and it is down
        self.assert_refused(client.say(self.bearer(token)), grpc.StatusCode.UNAVAILABLE, "VALIDATION_UNAVAILABLE")


class AioOnly:
    def test_dpop_without_an_authority_is_refused_saying_why(self):
        server, client = self.serve()  # grpc.aio cannot see :authority, and none is configured
        key, token = self.dpop()
        md = (("authorization", "DPoP " + token), ("dpop", proof(key, "http://" + AUTHORITY + SAY, token)))
        out = client.say(md)
        self.assert_refused(out, grpc.StatusCode.UNAUTHENTICATED, "INVALID_PROOF", "invalid_dpop_proof", "DPoP")
        self.assertIn('authority="host:port"', out.details)


class SyncServerTest(Cases, unittest.TestCase):
    flavor = "sync"

    def test_dpop_htu_uses_the_calls_authority_when_none_is_configured(self):
        server, client = self.serve()
        key, token = self.dpop()
        md = (("authorization", "DPoP " + token), ("dpop", proof(key, "http://" + AUTHORITY + SAY, token)))
        out = client.say(md)
        self.assertEqual(out.code, grpc.StatusCode.OK, out)


class AioServerTest(Cases, AioOnly, unittest.TestCase):
    flavor = "aio"


class AioWriterStreamTest(Cases, unittest.TestCase):
    """grpc.aio with a streaming handler that writes through context.write (a coroutine)."""

    flavor = "aio-writer"


class AioSyncHandlersTest(Cases, unittest.TestCase):
    """grpc.aio running plain (sync) handlers in its thread pool."""

    flavor = "aio-sync-handlers"


if __name__ == "__main__":
    unittest.main()
