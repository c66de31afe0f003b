"""The reason table and the verdict cache through the interceptors, against a fake usher (a real gRPC
server on 127.0.0.1 that answers what each test needs and counts the questions): every row of
../../examples/reasons.json, a reason no table knows, answers that contradict themselves, what the
interceptor asks usher, and the cache's rules with an injected clock."""

import json
import os
import threading
import time
import unittest

import grpc

import support
from support import AUDIENCE, AUTHORITY, COUNT, REPO, SAY, SERVERS, Client, FakeUsher, answer


REASONS_JSON = os.path.join(REPO, "examples", "reasons.json")
SCOPES = {SAY: ["echo.read"], COUNT: ["echo.stream"]}
FAR = 4102444800  # 2100-01-01: an exp that never bounds a test


def table():
    with open(REASONS_JSON) as f:
        return json.load(f)


class Rules:
    flavor = None

    def serve(self, fake, **options):
        options.setdefault("required_scopes", SCOPES)
        server = SERVERS[self.flavor](fake.addr, **options)
        self.addCleanup(server.stop)
        client = Client(server.port)
        self.addCleanup(client.close)
        return server, client

    def fake(self, fn):
        f = FakeUsher(fn)
        self.addCleanup(f.stop)
        return f

    def rows(self):
        """(label, answer fn, rule) for every row of reasons.json, a contradiction, and unknown numbers."""
        t = table()
        unknown = t["unknown"]
        for r in t["reasons"]:
            exp = FAR if r["reason"] == "REASON_VALID" else None
            yield r["reason"], answer(r["reason"], exp=exp, mismatch=("scope", ["echo.read"], [])), r
        yield "VALID with valid=false", answer("REASON_VALID", valid=False), unknown
        yield "EXPIRED with valid=true", answer("REASON_EXPIRED", valid=True, exp=FAR), unknown
        yield "UNSPECIFIED", answer(0), unknown
        yield "999 (a newer usher)", answer(999), unknown

    def test_every_row_of_the_reason_table(self):
        """Each answer gives the table's code and challenge (DPoP's when the table says so or the call
        used DPoP), the handler runs for VALID alone, and a second identical call is answered from the
        cache exactly when the row is cacheable and the call carries no proof."""
        seen = 0
        for label, fn, rule in self.rows():
            for scheme in ("Bearer", "DPoP"):
                with self.subTest(reason=label, scheme=scheme):
                    seen += 1
                    fake = self.fake(fn)
                    server, client = self.serve(fake, authority=AUTHORITY)
                    md = (("authorization", "%s tok-%d" % (scheme, seen)),)
                    if scheme == "DPoP":
                        md += (("dpop", "a.proof.jwt"),)
                    outs = [client.say(md) for _ in range(2)]
                    code = getattr(grpc.StatusCode, rule["grpc_code"])
                    for out in outs:
                        self.assertEqual(out.code, code, out)
                    cached = rule["cacheable"] and scheme == "Bearer"
                    self.assertEqual(fake.calls, 1 if cached else 2, "usher asked %d times" % fake.calls)
                    if code == grpc.StatusCode.OK:
                        self.assertEqual((server.echo.said, outs[0].reply.subject), (2, "fake-subject"))
                        continue
                    self.assertEqual(server.echo.said, 0)
                    out = outs[0]
                    want_reason = label.split()[0].replace("REASON_", "")
                    if label.startswith("999"):
                        want_reason = "REASON_999"
                    self.assertEqual((out.info.reason, out.info.domain), (want_reason, "usher.v1"))
                    want_scheme = "DPoP" if "DPoP" in (rule["challenge"], scheme) else "Bearer"
                    self.assertTrue(out.www_authenticate.startswith(want_scheme + " "), out.www_authenticate)
                    if rule["bearer_error"]:
                        self.assertIn(', error="%s"' % rule["bearer_error"], out.www_authenticate)
                    else:
                        self.assertNotIn("error=", out.www_authenticate)
                    if rule["bearer_error"] == "insufficient_scope":
                        self.assertIn(', scope="echo.read"', out.www_authenticate)
                        self.assertEqual(out.info.metadata["missing_scopes"], "echo.read")
        self.assertEqual(seen, 2 * (len(table()["reasons"]) + 4))

    def test_what_the_interceptor_asks_usher(self):
        fake = self.fake(answer("REASON_VALID", exp=FAR))
        _, client = self.serve(fake, authority=AUTHORITY, cache=False)
        md = (("authorization", "Bearer t1"), ("expected_audience", "api/users"), ("audience", "api/users"))
        self.assertEqual(client.say(md).code, grpc.StatusCode.OK)
        self.assertEqual(client.count((("authorization", "Bearer t1"),)).code, grpc.StatusCode.OK)
        self.assertEqual(client.method(support.HEALTH_CHECK).code, grpc.StatusCode.OK)  # skipped: not asked
        client.say((("authorization", "DPoP t2"), ("dpop", "p.r.f")))
        a, b, c = fake.requests
        self.assertEqual((a.token, a.expected_audience, list(a.required_scopes), a.scheme),
                         ("t1", AUDIENCE, ["echo.read"], "Bearer"))
        self.assertEqual((a.dpop_proof, a.http_method, a.http_uri, a.client_certificate_sha256), ("", "", "", ""))
        self.assertEqual(list(b.required_scopes), ["echo.stream"])
        self.assertEqual((c.token, c.scheme, c.dpop_proof, c.http_method, c.http_uri),
                         ("t2", "DPoP", "p.r.f", "POST", "http://%s%s" % (AUTHORITY, SAY)))

    def test_an_error_status_from_usher_is_unavailable(self):
        def fn(request, context):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected_audience is required")

        fake = self.fake(fn)
        _, client = self.serve(fake)
        out = client.say((("authorization", "Bearer t"),))
        self.assertEqual((out.code, out.info.reason), (grpc.StatusCode.UNAVAILABLE, "VALIDATION_UNAVAILABLE"))
        self.assertIn("INVALID_ARGUMENT", out.details)
        _, terse = self.serve(fake, terse=True)
        out = terse.say((("authorization", "Bearer t"),))
        self.assertEqual((out.code, out.details), (grpc.StatusCode.UNAVAILABLE, "token validation unavailable; retry later"))
        self.assertEqual((out.info.reason, dict(out.info.metadata)), ("VALIDATION_UNAVAILABLE", {}))

    def test_a_slow_usher_is_unavailable_within_the_timeout(self):
        release = threading.Event()

        def slow(request, context):
            release.wait(support.CALL_TIMEOUT)  # held until the test ends, bounded
            return answer("REASON_VALID", exp=FAR)(request, context)

        fake = self.fake(slow)
        self.addCleanup(release.set)  # runs before the fake usher stops (cleanups run last-in first-out)
        server, client = self.serve(fake, timeout=0.5)
        start = time.monotonic()
        out = client.say((("authorization", "Bearer t"),))
        elapsed = time.monotonic() - start
        self.assertEqual((out.code, out.info.reason), (grpc.StatusCode.UNAVAILABLE, "VALIDATION_UNAVAILABLE"))
        self.assertIn("DEADLINE_EXCEEDED", out.details)
        self.assertLess(elapsed, 0.5 + 2.0)
        self.assertEqual(server.echo.said, 0)

    # --- the cache ---

    def test_cache_hit_and_key(self):
        fake = self.fake(answer("REASON_VALID", exp=FAR))
        server, client = self.serve(fake)
        for _ in range(3):
            self.assertEqual(client.say((("authorization", "Bearer a"),)).code, grpc.StatusCode.OK)
        self.assertEqual(fake.calls, 1)
        self.assertEqual(server.interceptor.cache_stats(), (2, 1))
        client.count((("authorization", "Bearer a"),))  # other scopes: another key
        client.say((("authorization", "Bearer b"),))  # another token: another key
        self.assertEqual(fake.calls, 3)
        # Each call gets its own copy of the claims: a handler's changes never reach the next call.
        self.assertEqual(client.say((("authorization", "Bearer a"),)).reply.subject, "fake-subject")

    def test_cache_never_past_exp_nor_max_ttl(self):
        now = [1_000_000.0]
        fake = self.fake(answer("REASON_VALID", exp=1_000_030))
        server, client = self.serve(fake, clock=lambda: now[0], cache_ttl=60)
        md = (("authorization", "Bearer a"),)
        client.say(md)
        now[0] = 1_000_029.9
        client.say(md)
        self.assertEqual(fake.calls, 1, "asked again before exp")
        now[0] = 1_000_030.0
        client.say(md)
        self.assertEqual(fake.calls, 2, "a verdict served at or past the token's exp")
        # max_ttl bounds a token with a far exp.
        fake2 = self.fake(answer("REASON_VALID", exp=FAR))
        _, client2 = self.serve(fake2, clock=lambda: now[0], cache_ttl=60)
        client2.say(md)
        now[0] += 59.9
        client2.say(md)
        self.assertEqual(fake2.calls, 1)
        now[0] += 0.1
        client2.say(md)
        self.assertEqual(fake2.calls, 2, "a verdict served past cache_ttl")
        # A verdict whose exp has passed by the time it arrives is not kept.
        fake3 = self.fake(answer("REASON_VALID", exp=now[0] - 1))
        _, client3 = self.serve(fake3, clock=lambda: now[0])
        client3.say(md)
        client3.say(md)
        self.assertEqual(fake3.calls, 2)

    def test_cache_is_bounded(self):
        fake = self.fake(answer("REASON_VALID", exp=FAR))
        server, client = self.serve(fake, cache_entries=2)
        for t in ("a", "b", "c", "a"):  # a is evicted by c
            client.say((("authorization", "Bearer " + t),))
        self.assertEqual(fake.calls, 4)
        self.assertEqual(len(server.interceptor.auth.cache), 2)
        client.say((("authorization", "Bearer c"),))
        self.assertEqual(fake.calls, 4)

    def test_sender_constrained_calls_and_bound_tokens_are_never_cached(self):
        fake = self.fake(answer("REASON_VALID", exp=FAR))
        _, client = self.serve(fake, authority=AUTHORITY)
        for _ in range(2):
            client.say((("authorization", "DPoP a"), ("dpop", "p.r.f")))
        self.assertEqual(fake.calls, 2, "a call with a proof answered from the cache")
        bound = self.fake(answer("REASON_VALID", exp=FAR, confirmation="jkt-thumbprint"))
        _, client = self.serve(bound)
        for _ in range(2):
            client.say((("authorization", "Bearer a"),))
        self.assertEqual(bound.calls, 2, "a verdict for a bound token (cnf) was cached")

    def test_cache_can_be_off(self):
        fake = self.fake(answer("REASON_VALID", exp=FAR))
        server, client = self.serve(fake, cache=False)
        for _ in range(2):
            client.say((("authorization", "Bearer a"),))
        self.assertEqual((fake.calls, server.interceptor.cache_stats()), (2, None))


class SyncRulesTest(Rules, unittest.TestCase):
    flavor = "sync"


class AioRulesTest(Rules, unittest.TestCase):
    flavor = "aio"


if __name__ == "__main__":
    unittest.main()
