"""What the tests share: a real usher (`usher dev`, `usher serve`), a fake usher, the test service's stubs,
protected servers on 127.0.0.1 (grpc.server and grpc.aio.server, with sync or async handlers), and
readers of a refused call's status, ErrorInfo and www-authenticate.

$USHER_BIN names a built usher; without it one is built with `go build` once per run.
"""

import asyncio
import atexit
import base64
import concurrent.futures
import importlib
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
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
PKG = os.path.dirname(HERE)  # client/python
REPO = os.path.normpath(os.path.join(PKG, "..", ".."))
if PKG not in sys.path:
    sys.path.insert(0, PKG)

import grpc  # noqa: E402
import grpc.aio  # noqa: E402

import usher_grpc  # noqa: E402
from usher_grpc import _proto  # noqa: E402

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
CMD_TIMEOUT = 15.0
CALL_TIMEOUT = 10.0

AUDIENCE = "api/invoices"
SAY = "/usher.test.v1.Echo/Say"
COUNT = "/usher.test.v1.Echo/Count"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
HEALTH_CHECK_X = "/grpc.health.v1.Health/CheckX"
# The test service's authority as callers name it (grpc.default_authority) and as the interceptor is told.
AUTHORITY = "invoices.test:50051"

DEV_CLIENT = ("usher-dev", "usher-dev-secret")

_state = {}
_lock = threading.Lock()


def tmp_dir():
    with _lock:
        if "tmp" not in _state:
            _state["tmp"] = tempfile.mkdtemp(prefix="usher-grpc-py-")
            atexit.register(shutil.rmtree, _state["tmp"], True)
        return _state["tmp"]


def usher_bin():
    with _lock:
        if "usher" not in _state:
            path = os.environ.get("USHER_BIN")
            if not path:
                path = os.path.join(tempfile.mkdtemp(prefix="usher-bin-"), "usher")
                atexit.register(shutil.rmtree, os.path.dirname(path), True)
                env = dict(os.environ, GOTOOLCHAIN="local")
                subprocess.run(["go", "build", "-o", path, "./cmd/usher"], cwd=REPO, check=True, timeout=600, env=env)
            _state["usher"] = path
        return _state["usher"]


def stubs():
    """(echo_pb2, echo_pb2_grpc) of tests/proto/usher/test/v1/echo.proto, compiled with grpc_tools once."""
    with _lock:
        if "stubs" not in _state:
            import grpc_tools
            from grpc_tools import protoc

            out = os.path.join(tempfile.mkdtemp(prefix="usher-grpc-stubs-"))
            atexit.register(shutil.rmtree, out, True)
            root = os.path.join(HERE, "proto")
            well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
            rc = protoc.main(["grpc_tools.protoc", "-I" + root, "-I" + well_known, "--python_out=" + out,
                              "--grpc_python_out=" + out, os.path.join(root, "usher/test/v1/echo.proto")])
            if rc != 0:
                raise RuntimeError("protoc failed on echo.proto (exit %d)" % rc)
            for pkg in ("usher", "usher/test", "usher/test/v1"):
                open(os.path.join(out, pkg, "__init__.py"), "a").close()
            sys.path.insert(0, out)
            _state["stubs"] = (importlib.import_module("usher.test.v1.echo_pb2"),
                               importlib.import_module("usher.test.v1.echo_pb2_grpc"))
        return _state["stubs"]


def closed_port():
    """A 127.0.0.1 port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def jwt_payload(token):
    seg = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


# --- usher processes ---

class UsherProcess:
    """One usher process; start() returns once its banner or log names its gRPC address."""

    DEV_ADDR = re.compile(r"^  gRPC\s+(\S+)")
    DEV_ISSUER = re.compile(r"^  issuer\s+(\S+)")
    SERVE_ADDR = re.compile(r'msg="usher listening" addr=(\S+)')

    def __init__(self, args, pattern):
        self.args, self.pattern = args, pattern
        self.proc, self.addr, self.issuer, self.lines = None, None, None, []
        self._found = queue.Queue()
        self._readers = []

    @classmethod
    def dev(cls):
        u = cls(["dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"], cls.DEV_ADDR)
        u.start()
        u.wait_ready()
        return u

    def start(self):
        self.proc = subprocess.Popen([usher_bin()] + self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
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
            m = self.DEV_ISSUER.search(line)
            if m:
                self.issuer = m.group(1)
            m = self.pattern.search(line)
            if m:
                self._found.put(m.group(1))
        self._found.put(None)

    def wait_ready(self):
        """Until the dev issuer's keys are loaded: a fresh token comes back VALID (polled, bounded)."""
        token = self.mint("api/users")
        channel = grpc.insecure_channel(self.addr)
        validate = usher_grpc._core.validate_method(channel)
        deadline = time.monotonic() + START_TIMEOUT
        try:
            while True:
                try:
                    r = validate(_proto.ValidateTokenRequest(token=token, expected_audience="api/users"), timeout=2)
                    if r.valid:
                        return
                    last = "%s: %s" % (_proto.reason_name(r.reason), r.message)
                except grpc.RpcError as e:
                    last = str(e.code())
                if time.monotonic() > deadline:
                    raise AssertionError("usher not ready after %.0fs: %s" % (START_TIMEOUT, last))
                time.sleep(0.05)
        finally:
            channel.close()

    @property
    def token_url(self):
        return self.issuer + "/token"

    def mint(self, audience, *scopes, ttl=None, kid=None):
        """A JWT from the dev issuer's token endpoint (client credentials)."""
        form = {"grant_type": "client_credentials", "audience": audience}
        if scopes:
            form["scope"] = " ".join(scopes)
        if ttl:
            form["ttl"] = ttl
        if kid:
            form["kid"] = kid
        auth = base64.b64encode(("%s:%s" % DEV_CLIENT).encode()).decode()
        req = urllib.request.Request(self.token_url, data=urllib.parse.urlencode(form).encode(),
                                     headers={"Authorization": "Basic " + auth}, method="POST")
        with urllib.request.urlopen(req, timeout=CMD_TIMEOUT) as r:
            token = json.loads(r.read())["access_token"]
        assert token.count(".") == 2, "not a compact JWS: %r" % token
        return token

    def mint_dpop(self, audience, key, *scopes):
        """A DPoP-bound JWT (usher mint --dpop-key; the key file is created when missing)."""
        cmd = [usher_bin(), "mint", "--addr", self.addr, "--audience", audience, "--dpop-key", key]
        for s in scopes:
            cmd += ["--scope", s]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=CMD_TIMEOUT)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

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


def proof(key, uri, token, method="POST"):
    out = subprocess.run([usher_bin(), "proof", "--key", key, "--method", method, "--uri", uri, "--token", token],
                         capture_output=True, text=True, timeout=CMD_TIMEOUT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def keys_unavailable_usher(tmp):
    """`usher serve` with one issuer whose key set is on a closed loopback port; returns (usher, token)."""
    dead = "http://127.0.0.1:%d/" % closed_port()
    cfg = os.path.join(tmp, "keys-unavailable-%d.yaml" % os.getpid())
    with open(cfg, "w") as f:
        f.write('listen: "127.0.0.1:0"\nissuers:\n  - issuer: "%s"\n    jwks_uri: "%sjwks.json"\n'
                '    fetch_timeout: "1s"\n' % (dead, dead))
    serve = UsherProcess(["serve", "--config", cfg], UsherProcess.SERVE_ADDR)
    serve.start()
    token = "%s.%s.c2ln" % (b64url({"alg": "RS256", "kid": "k1", "typ": "at+jwt"}),
                            b64url({"iss": dead, "aud": AUDIENCE, "exp": int(time.time()) + 600}))
    return serve, token


# --- a fake usher: a real gRPC server answering ValidateToken as a test says ---

class FakeUsher:
    """usher.v1.TokenService/ValidateToken on 127.0.0.1 answering answer(request) -> ValidateTokenResponse
    (or raising grpc.RpcError-like aborts through the context); records every request."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = []
        self._lock = threading.Lock()
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
        handler = grpc.unary_unary_rpc_method_handler(
            self._validate, request_deserializer=_proto.ValidateTokenRequest.FromString,
            response_serializer=_proto.ValidateTokenResponse.SerializeToString)
        self.server.add_generic_rpc_handlers(
            [grpc.method_handlers_generic_handler("usher.v1.TokenService", {"ValidateToken": handler})])
        self.addr = "127.0.0.1:%d" % self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def _validate(self, request, context):
        with self._lock:
            self.requests.append(request)
        return self.answer(request, context)

    @property
    def calls(self):
        with self._lock:
            return len(self.requests)

    def stop(self):
        self.server.stop(grace=None).wait(STOP_TIMEOUT)


def answer(reason, valid=None, exp=None, message="why", hint="what to do", confirmation=None, mismatch=None):
    """A fake usher's answer function."""
    number = reason if isinstance(reason, int) else _proto.REASON.values_by_name[reason].number

    def fn(request, context):
        resp = _proto.ValidateTokenResponse(valid=(number == _proto.REASON_VALID) if valid is None else valid,
                                            reason=number, message=message, hint=hint)
        resp.claims.subject = "fake-subject"
        resp.claims.issuer = "https://issuer.example/"
        resp.claims.key_id = "k1"
        resp.claims.audience.append(request.expected_audience)
        resp.claims.scopes.extend(request.required_scopes)
        if exp is not None:
            resp.claims.expires_at.seconds = int(exp)
        if confirmation:
            resp.claims.confirmation.jkt = confirmation
        if mismatch:
            resp.mismatch.claim, expected, actual = mismatch
            resp.mismatch.expected.extend(expected)
            resp.mismatch.actual.extend(actual)
        return resp

    return fn


# --- the protected test service ---

class Echo:
    """The test service's state: how often each handler started, and what claims each saw."""

    def __init__(self):
        self.lock = threading.Lock()
        self.said = 0
        self.counted = 0
        self.health = 0

    def bump(self, name):
        with self.lock:
            setattr(self, name, getattr(self, name) + 1)

    def reply(self, request, context, index=0):
        pb2, _ = stubs()
        c = usher_grpc.claims()
        auth = [v for k, v in context.invocation_metadata() if k == "authorization"]
        if c is None:
            return pb2.EchoReply(text=request.text, index=index, subject="<no claims>",
                                 authorization=auth[0] if auth else "")
        return pb2.EchoReply(text=request.text, subject=c.subject, audience=list(c.audience), scopes=list(c.scopes),
                             index=index, authorization=auth[0] if auth else "")


def _sync_handlers(echo):
    pb2, _ = stubs()

    def say(request, context):
        echo.bump("said")
        return echo.reply(request, context)

    def count(request, context):
        echo.bump("counted")
        for i in range(request.count):
            yield echo.reply(request, context, i)

    def health(request, context):
        echo.bump("health")
        return echo.reply(request, context)

    return say, count, health


def _async_handlers(echo, writer):
    pb2, _ = stubs()

    async def say(request, context):
        echo.bump("said")
        await asyncio.sleep(0)  # claims survive a suspension
        return echo.reply(request, context)

    async def count_gen(request, context):
        echo.bump("counted")
        for i in range(request.count):
            await asyncio.sleep(0)
            yield echo.reply(request, context, i)

    async def count_writer(request, context):
        echo.bump("counted")
        for i in range(request.count):
            await context.write(echo.reply(request, context, i))

    async def health(request, context):
        echo.bump("health")
        return echo.reply(request, context)

    return say, (count_writer if writer else count_gen), health


def _generic_handlers(say, count, health):
    pb2, _ = stubs()
    kw = dict(request_deserializer=pb2.EchoRequest.FromString, response_serializer=pb2.EchoReply.SerializeToString)
    return [
        grpc.method_handlers_generic_handler("usher.test.v1.Echo", {
            "Say": grpc.unary_unary_rpc_method_handler(say, **kw),
            "Count": grpc.unary_stream_rpc_method_handler(count, **kw),
        }),
        grpc.method_handlers_generic_handler("grpc.health.v1.Health", {
            "Check": grpc.unary_unary_rpc_method_handler(health, **kw),
            "CheckX": grpc.unary_unary_rpc_method_handler(health, **kw),
        }),
    ]


class Outcome:
    """A call's end: code, details, trailers, replies; and the refusal's www-authenticate and ErrorInfo."""

    def __init__(self, code, details, trailers, replies):
        self.code, self.details, self.replies = code, details, replies
        self.trailers = list(trailers or ())
        self.www_authenticate = None
        self.status = self.info = None
        for k, v in self.trailers:
            if k == "www-authenticate":
                self.www_authenticate = v
            elif k == "grpc-status-details-bin":
                self.status = _proto.Status.FromString(v)
                infos = [d for d in self.status.details if d.type_url == _proto.ERROR_INFO_TYPE_URL]
                if len(infos) == 1:
                    self.info = _proto.ErrorInfo.FromString(infos[0].value)

    @property
    def reply(self):
        return self.replies[0] if self.replies else None

    def __repr__(self):
        return "Outcome(%s, %r, www-authenticate=%r, info=%s)" % (
            self.code, self.details, self.www_authenticate,
            None if self.info is None else (self.info.reason, dict(self.info.metadata)))


class Client:
    """Real stubs to a protected server."""

    def __init__(self, port, authority=AUTHORITY, credentials=None, options=()):
        _, pb2_grpc = stubs()
        opts = ([("grpc.default_authority", authority)] if authority else []) + list(options)
        self.address = "127.0.0.1:%d" % port
        if credentials is not None:
            self.channel = grpc.secure_channel(self.address, credentials, options=opts)
        else:
            self.channel = grpc.insecure_channel(self.address, options=opts)
        self.stub = pb2_grpc.EchoStub(self.channel)

    def _call(self, fn, streaming, request, metadata):
        try:
            if streaming:
                it = fn(request, metadata=metadata, timeout=CALL_TIMEOUT)
                replies = list(it)
                return Outcome(it.code(), it.details(), it.trailing_metadata(), replies)
            reply, call = fn.with_call(request, metadata=metadata, timeout=CALL_TIMEOUT)
            return Outcome(call.code(), call.details(), call.trailing_metadata(), [reply])
        except grpc.RpcError as e:
            return Outcome(e.code(), e.details(), e.trailing_metadata(), [])

    def say(self, metadata=(), text="hi"):
        pb2, _ = stubs()
        return self._call(self.stub.Say, False, pb2.EchoRequest(text=text), metadata)

    def count(self, metadata=(), n=3):
        pb2, _ = stubs()
        return self._call(self.stub.Count, True, pb2.EchoRequest(text="n", count=n), metadata)

    def method(self, full_method, metadata=()):
        pb2, _ = stubs()
        fn = self.channel.unary_unary(full_method, request_serializer=pb2.EchoRequest.SerializeToString,
                                      response_deserializer=pb2.EchoReply.FromString)
        return self._call(fn, False, pb2.EchoRequest(text="health"), metadata)

    def close(self):
        self.channel.close()


def _add_port(server, tls):
    """A 127.0.0.1 port: plaintext, or with tls=(key, cert, ca) PEM bytes TLS that requires a client
    certificate signed by ca."""
    if tls is None:
        return server.add_insecure_port("127.0.0.1:0")
    key, cert, ca = tls
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)
    return server.add_secure_port("127.0.0.1:0", creds)


class SyncServer:
    """grpc.server with the sync interceptor and sync handlers."""

    flavor = "sync"

    def __init__(self, usher_addr, audience=AUDIENCE, workers=4, tls=None, **options):
        self.echo = Echo()
        self.interceptor = usher_grpc.UsherServerInterceptor(usher_addr, audience, **options)
        self.server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=workers),
                                  interceptors=[self.interceptor])
        self.server.add_generic_rpc_handlers(_generic_handlers(*_sync_handlers(self.echo)))
        self.port = _add_port(self.server, tls)
        self.server.start()

    def stop(self):
        self.server.stop(grace=None).wait(STOP_TIMEOUT)
        self.interceptor.close()


def aio_loop():
    """The one event loop of every grpc.aio server of the run, in its own thread (grpc.aio is happiest
    with a single loop per process)."""
    with _lock:
        if "loop" not in _state:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="aio-loop", daemon=True).start()
            _state["loop"] = loop
        return _state["loop"]


class AioServer:
    """grpc.aio.server with the aio interceptor, on an event loop in its own thread; handlers async
    (async generator or writer-API stream) or sync (run by grpc.aio in its thread pool)."""

    flavor = "aio"

    def __init__(self, usher_addr, audience=AUDIENCE, handlers="async", tls=None, **options):
        self.tls = tls
        self.echo = Echo()
        self.interceptor = usher_grpc.UsherAioServerInterceptor(usher_addr, audience, **options)
        self.loop = aio_loop()
        if handlers == "sync":
            fns = _sync_handlers(self.echo)
        else:
            fns = _async_handlers(self.echo, writer=(handlers == "writer"))
        self.port = self._run(self._start(fns))

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(START_TIMEOUT)

    async def _start(self, fns):
        self.server = grpc.aio.server(interceptors=[self.interceptor],
                                      migration_thread_pool=concurrent.futures.ThreadPoolExecutor(max_workers=4))
        self.server.add_generic_rpc_handlers(_generic_handlers(*fns))
        port = _add_port(self.server, self.tls)
        await self.server.start()
        return port

    async def _stop(self):
        await self.server.stop(None)
        await self.interceptor.close()

    def stop(self):
        self._run(self._stop())


SERVERS = {
    "sync": SyncServer,
    "aio": lambda *a, **kw: AioServer(*a, handlers="async", **kw),
    "aio-writer": lambda *a, **kw: AioServer(*a, handlers="writer", **kw),
    "aio-sync-handlers": lambda *a, **kw: AioServer(*a, handlers="sync", **kw),
}
