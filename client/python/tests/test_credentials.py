"""The caller side: per-call credentials that attach a token for the audience of the API called, from the
dev issuer's client-credentials endpoint (real usher dev) and from a fake token endpoint (a real HTTP
server on 127.0.0.1) for the token source's rules."""

import base64
import concurrent.futures
import http.server
import json
import threading
import unittest
import urllib.parse

import grpc

import support
from support import DEV_CLIENT, Echo, UsherProcess, jwt_payload, stubs

import usher_grpc
from usher_grpc import (ClientCredentialsTokenSource, TokenError, audience_call_credentials,
                        client_credentials_sources, service_audiences)

USERS, INVOICES = "usher.test.v1.Users", "usher.test.v1.Invoices"


def api_server(usher_addr, service, audience):
    """A grpc.server with one protected one-method service (Get), answering with what it saw."""
    pb2, _ = stubs()
    echo = Echo()

    def get(request, context):
        echo.bump("said")
        return echo.reply(request, context)

    interceptor = usher_grpc.UsherServerInterceptor(usher_addr, audience)
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=2), interceptors=[interceptor])
    kw = dict(request_deserializer=pb2.EchoRequest.FromString, response_serializer=pb2.EchoReply.SerializeToString)
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        service, {"Get": grpc.unary_unary_rpc_method_handler(get, **kw)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()

    def stop():
        server.stop(grace=None).wait(support.STOP_TIMEOUT)
        interceptor.close()

    return port, echo, stop


class TwoAPIsTest(unittest.TestCase):
    """A caller of the Users and the Invoices APIs, each protected by usher for its own audience."""

    @classmethod
    def setUpClass(cls):
        cls.usher = UsherProcess.dev()

    @classmethod
    def tearDownClass(cls):
        cls.usher.stop()

    def channel(self, port, creds):
        # Call credentials travel over TLS or a local channel only: local credentials on loopback.
        ch = grpc.secure_channel("127.0.0.1:%d" % port,
                                 grpc.composite_channel_credentials(grpc.local_channel_credentials(), creds))
        self.addCleanup(ch.close)
        return ch

    def get(self, channel, service):
        pb2, _ = stubs()
        fn = channel.unary_unary("/%s/Get" % service, request_serializer=pb2.EchoRequest.SerializeToString,
                                 response_deserializer=pb2.EchoReply.FromString)
        try:
            return grpc.StatusCode.OK, fn(pb2.EchoRequest(text="x"), timeout=support.CALL_TIMEOUT)
        except grpc.RpcError as e:
            return e.code(), e.details()

    def serve(self, service, audience):
        port, echo, stop = api_server(self.usher.addr, service, audience)
        self.addCleanup(stop)
        return port, echo

    def test_each_api_gets_only_a_token_for_its_own_audience(self):
        users_port, users = self.serve(USERS, "api/users")
        invoices_port, invoices = self.serve(INVOICES, "api/invoices")
        sources = client_credentials_sources(self.usher.token_url, *DEV_CLIENT, ["api/users", "api/invoices"],
                                             scopes=["users.read"])
        creds = audience_call_credentials({USERS: "api/users", INVOICES: "api/invoices"}, sources)
        to_users, to_invoices = self.channel(users_port, creds), self.channel(invoices_port, creds)
        for _ in range(2):
            for channel, service, audience in ((to_users, USERS, "api/users"), (to_invoices, INVOICES, "api/invoices")):
                code, reply = self.get(channel, service)
                self.assertEqual(code, grpc.StatusCode.OK, reply)
                self.assertEqual(list(reply.audience), [audience])  # usher said valid for the API's own audience
                scheme, token = reply.authorization.split(" ", 1)
                self.assertEqual(scheme, "Bearer")
                self.assertEqual(jwt_payload(token)["aud"], audience, "a token for another API was sent")
        self.assertEqual((users.said, invoices.said), (2, 2))
        self.assertEqual((sources["api/users"].fetches, sources["api/invoices"].fetches), (1, 1), "tokens not reused")

    def test_a_method_without_an_audience_fails_before_anything_is_sent(self):
        invoices_port, invoices = self.serve(INVOICES, "api/invoices")
        sources = client_credentials_sources(self.usher.token_url, *DEV_CLIENT, ["api/users"])
        creds = audience_call_credentials({USERS: "api/users"}, sources)
        code, details = self.get(self.channel(invoices_port, creds), INVOICES)
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("no audience configured for /usher.test.v1.Invoices/Get", details)
        self.assertEqual((invoices.said, sources["api/users"].fetches), (0, 0))

    def test_without_credentials_the_api_refuses(self):
        users_port, users = self.serve(USERS, "api/users")
        ch = grpc.insecure_channel("127.0.0.1:%d" % users_port)
        self.addCleanup(ch.close)
        code, _ = self.get(ch, USERS)
        self.assertEqual((code, users.said), (grpc.StatusCode.UNAUTHENTICATED, 0))


class FakeTokenEndpoint:
    """A client-credentials endpoint on 127.0.0.1 that records requests and answers what the test sets."""

    def __init__(self):
        self.requests = []
        self.status, self.body = 200, {"access_token": "tok-1", "token_type": "Bearer", "expires_in": 100}
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
                outer.requests.append((dict(self.headers), form))
                data = json.dumps(outer.body).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = "http://127.0.0.1:%d/oauth2/token" % self.httpd.server_port
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(support.STOP_TIMEOUT)


class TokenSourceTest(unittest.TestCase):
    def setUp(self):
        self.endpoint = FakeTokenEndpoint()
        self.addCleanup(self.endpoint.stop)
        self.now = [1_000_000.0]

    def source(self, **kw):
        return ClientCredentialsTokenSource(self.endpoint.url, "billing client", "s3cr=t&x", "api/invoices",
                                            clock=lambda: self.now[0], **kw)

    def test_request_asks_for_the_audience_with_basic_auth(self):
        tok = self.source(scopes=["invoices.read", "invoices.list"]).token()
        self.assertEqual(tok.access_token, "tok-1")
        (headers, form), = self.endpoint.requests
        self.assertEqual(form, {"grant_type": ["client_credentials"], "audience": ["api/invoices"],
                                "resource": ["api/invoices"], "scope": ["invoices.read invoices.list"]})
        scheme, b64 = headers["Authorization"].split(" ")
        # RFC 6749 section 2.3.1: id and secret each form-urlencoded, then base64.
        self.assertEqual((scheme, base64.b64decode(b64).decode()), ("Basic", "billing+client:s3cr%3Dt%26x"))

    def test_client_secret_post(self):
        self.source(auth_method="post").token()
        (headers, form), = self.endpoint.requests
        self.assertNotIn("Authorization", headers)
        self.assertEqual((form["client_id"], form["client_secret"]), (["billing client"], ["s3cr=t&x"]))

    def test_token_is_reused_until_shortly_before_expiry(self):
        src = self.source()
        src.token()
        self.now[0] += 89.9  # expires_in 100, replaced 10 s early
        self.assertEqual(src.token().access_token, "tok-1")
        self.assertEqual(len(self.endpoint.requests), 1)
        self.endpoint.body = dict(self.endpoint.body, access_token="tok-2")
        self.now[0] += 0.1
        self.assertEqual(src.token().access_token, "tok-2")
        self.assertEqual(src.fetches, 2)

    def test_endpoint_errors_say_what_and_never_the_secret(self):
        self.endpoint.status = 401
        self.endpoint.body = {"error": "invalid_client", "error_description": "unknown client"}
        src = self.source()
        with self.assertRaises(TokenError) as cm:
            src.token()
        msg = str(cm.exception)
        self.assertIn("HTTP 401: invalid_client (unknown client)", msg)
        self.assertIn("api/invoices", msg)
        self.assertNotIn("s3cr", msg)
        self.assertNotIn("s3cr", repr(src))
        self.endpoint.status, self.endpoint.body = 200, {"token_type": "Bearer"}
        with self.assertRaises(TokenError) as cm:
            src.token()
        self.assertIn("without an access_token", str(cm.exception))

    def test_unreachable_endpoint(self):
        src = ClientCredentialsTokenSource("http://127.0.0.1:%d/token" % support.closed_port(), "c", "s", "api/x",
                                           timeout=2)
        with self.assertRaises(TokenError) as cm:
            src.token()
        self.assertIn("unreachable", str(cm.exception))

    def test_a_dpop_bound_token_is_not_sent_as_bearer(self):
        self.endpoint.body = {"access_token": "bound", "token_type": "DPoP", "expires_in": 100}
        plugin = usher_grpc.AudienceMetadataPlugin({INVOICES: "api/invoices"}, {"api/invoices": self.source()})
        with self.assertRaises(TokenError) as cm:
            plugin.metadata_for("/%s/Get" % INVOICES)
        self.assertIn("DPoP-bound", str(cm.exception))

    def test_service_audiences_method_entry_wins(self):
        aud = service_audiences({USERS: "api/users", "/%s/Export" % USERS: "api/exports"})
        self.assertEqual(aud("/%s/Get" % USERS), "api/users")
        self.assertEqual(aud("/%s/Export" % USERS), "api/exports")
        with self.assertRaises(LookupError):
            aud("/%s/Get" % INVOICES)


if __name__ == "__main__":
    unittest.main()
