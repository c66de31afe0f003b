"""Bearer- and DPoP-token checks for Python HTTP services, answered by usher.

    auth = UsherAuth("127.0.0.1:50051", "api/invoices")
    try:
        claims = auth.check(environ.get("HTTP_AUTHORIZATION"), required_scopes=["invoices.read"],
                            dpop=environ.get("HTTP_DPOP"), method=environ["REQUEST_METHOD"],
                            uri=wsgiref.util.request_uri(environ, include_query=False))
    except UsherAuthError as e:
        start_response(e.status_line, e.headers)
        return [e.body()]

check() asks usher.v1.TokenService/ValidateToken with the service's own
audience and maps the verdict to HTTP: Unauthorized (401, RFC 6750
error="invalid_token") for a token usher rejects, Forbidden (403,
error="insufficient_scope") for a missing scope, ServiceUnavailable (503) when
usher cannot decide (KEYS_UNAVAILABLE, unreachable, past the deadline). It
fails closed: no verdict, no access.

A DPoP-bound token (RFC 9449) comes as "Authorization: DPoP <token>" with a
DPoP header holding a proof made for this request: pass that header, the
request's method and its URI (scheme, host, path; the query is dropped), and
usher checks the proof. Sent as Bearer or without its proof, a bound token is
PROOF_MISSING; a bad proof is INVALID_PROOF. Both, and any rejection of a
request that used the DPoP scheme, are answered with a DPoP challenge
(RFC 9449 section 7.1). client_cert_sha256 (base64url SHA-256 of the DER client
certificate of the TLS connection) is for certificate-bound tokens (RFC 8705).

The gRPC stubs are generated from proto/usher/v1/usher.proto with grpc_tools
(Debian: python3-grpcio, python3-grpc-tools) into gen/ beside this file, or
into $USHER_STUBS_DIR, the first time they are needed.
"""

import dataclasses
import datetime
import importlib
import json
import os
import sys
import threading

import grpc

__all__ = [
    "Claims",
    "UsherAuth",
    "UsherAuthError",
    "Unauthorized",
    "Forbidden",
    "ServiceUnavailable",
    "generate_stubs",
    "load_stubs",
]

_HERE = os.path.dirname(os.path.abspath(__file__))
PROTO_ROOT = os.path.normpath(os.path.join(_HERE, "..", "..", "proto"))
PROTO_FILE = "usher/v1/usher.proto"


def generate_stubs(out_dir, proto_root=PROTO_ROOT):
    """Compiles usher.proto into out_dir/usher/v1/usher_pb2{,_grpc}.py."""
    import grpc_tools
    from grpc_tools import protoc

    well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
    os.makedirs(out_dir, exist_ok=True)
    rc = protoc.main([
        "grpc_tools.protoc",
        "-I" + proto_root,
        "-I" + well_known,
        "--python_out=" + out_dir,
        "--grpc_python_out=" + out_dir,
        os.path.join(proto_root, PROTO_FILE),
    ])
    if rc != 0:
        raise RuntimeError("protoc failed (exit %d) on %s" % (rc, os.path.join(proto_root, PROTO_FILE)))
    for pkg in ("usher", os.path.join("usher", "v1")):
        init = os.path.join(out_dir, pkg, "__init__.py")
        if not os.path.exists(init):
            open(init, "w").close()
    return out_dir


_stubs = None
_stubs_lock = threading.Lock()


def load_stubs(stubs_dir=None):
    """Returns (usher_pb2, usher_pb2_grpc), generating them when absent or older than the .proto."""
    global _stubs
    with _stubs_lock:
        if _stubs is not None:
            return _stubs
        d = os.path.abspath(stubs_dir or os.environ.get("USHER_STUBS_DIR") or os.path.join(_HERE, "gen"))
        grpc_py = os.path.join(d, "usher", "v1", "usher_pb2_grpc.py")
        proto = os.path.join(PROTO_ROOT, PROTO_FILE)
        if not os.path.exists(grpc_py) or (
            os.path.exists(proto) and os.path.getmtime(proto) > os.path.getmtime(grpc_py)
        ):
            generate_stubs(d)
        if d not in sys.path:
            sys.path.insert(0, d)
        pb2 = importlib.import_module("usher.v1.usher_pb2")
        pb2_grpc = importlib.import_module("usher.v1.usher_pb2_grpc")
        _stubs = (pb2, pb2_grpc)
        return _stubs


@dataclasses.dataclass(frozen=True)
class Claims:
    """The verified claims of a token usher accepted."""

    issuer: str
    subject: str
    audience: list
    scopes: list
    client_id: str
    expires_at: object  # datetime.datetime (UTC) or None
    issued_at: object
    not_before: object
    jwt_id: str
    key_id: str
    algorithm: str
    token_type: str
    raw: dict  # every payload claim, as JSON values
    token_format: str = ""  # "jwt", or "opaque" for a token usher introspected
    # The token's cnf: {"jkt": ...} for a DPoP-bound token, {"x5t#S256": ...} for a certificate-bound one.
    confirmation: dict = dataclasses.field(default_factory=dict)


class UsherAuthError(Exception):
    """A request that must not reach the handler, with what to answer."""

    status = 500
    title = "Internal Server Error"

    def __init__(self, reason, message, hint="", www_authenticate=None, mismatch=None,
                 missing_scopes=(), verdict=None):
        super().__init__("%s: %s" % (reason, message))
        self.reason = reason  # usher's Reason without the REASON_ prefix, or MISSING_CREDENTIALS, ...
        self.message = message
        self.hint = hint
        self.www_authenticate = www_authenticate
        self.mismatch = mismatch  # {"claim", "expected", "actual"} or None
        self.missing_scopes = list(missing_scopes)
        self.verdict = verdict  # the ValidateTokenResponse, when usher answered

    @property
    def status_line(self):
        return "%d %s" % (self.status, self.title)

    @property
    def headers(self):
        h = [("Content-Type", "application/json"), ("Cache-Control", "no-store")]
        if self.www_authenticate:
            h.append(("WWW-Authenticate", self.www_authenticate))
        return h

    def body(self):
        doc = {"error": self.title, "reason": self.reason, "message": self.message}
        if self.hint:
            doc["hint"] = self.hint
        return json.dumps(doc).encode("utf-8")


class Unauthorized(UsherAuthError):
    status = 401
    title = "Unauthorized"


class Forbidden(UsherAuthError):
    status = 403
    title = "Forbidden"


class ServiceUnavailable(UsherAuthError):
    status = 503
    title = "Service Unavailable"


# What each usher.v1.Reason of a rejection means to the caller: (HTTP status, RFC 6750
# error, "" when the token is not at fault, the challenge's scheme when it must be DPoP
# whatever scheme the token came with). The same list as internal/reasons, whose JSON
# form examples/reasons.json test_usher_auth checks this against. A reason not listed
# (UNSPECIFIED, VALID in a rejection, one a newer usher sends) fails closed like an
# unavailable usher: _UNKNOWN.
_REJECTIONS = {
    "REASON_MALFORMED": (401, "invalid_token", ""),
    "REASON_UNSUPPORTED_ALGORITHM": (401, "invalid_token", ""),
    "REASON_UNTRUSTED_ISSUER": (401, "invalid_token", ""),
    "REASON_UNKNOWN_KEY": (401, "invalid_token", ""),
    "REASON_INVALID_SIGNATURE": (401, "invalid_token", ""),
    "REASON_WRONG_TOKEN_TYPE": (401, "invalid_token", ""),
    "REASON_EXPIRED": (401, "invalid_token", ""),
    "REASON_NOT_YET_VALID": (401, "invalid_token", ""),
    "REASON_MISSING_CLAIM": (401, "invalid_token", ""),
    "REASON_AUDIENCE_MISMATCH": (401, "invalid_token", ""),
    "REASON_INSUFFICIENT_SCOPE": (403, "insufficient_scope", ""),
    "REASON_KEYS_UNAVAILABLE": (503, "", ""),
    "REASON_INACTIVE": (401, "invalid_token", ""),
    "REASON_ISSUER_UNAVAILABLE": (503, "", ""),
    "REASON_PROOF_MISSING": (401, "invalid_token", "DPoP"),
    "REASON_INVALID_PROOF": (401, "invalid_dpop_proof", "DPoP"),
}
_UNKNOWN = (503, "", "")

# The proof algorithms usher accepts, announced in a DPoP challenge (RFC 9449 section 7.1).
DPOP_ALGS = "ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"  # reasons.json "dpop_algs"

# The authorization schemes check() takes, by their lower-case name.
_SCHEMES = {"bearer": "Bearer", "dpop": "DPoP"}
_SEND = 'send "Authorization: Bearer <access token>" (or "Authorization: DPoP <access token>" with a DPoP proof header)'


def _header_safe(s):
    """Printable ASCII without quotes or backslashes, as RFC 6750 requires of error_description."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "'" for c in s)


def _time(msg, field):
    if not msg.HasField(field):
        return None
    ts = getattr(msg, field)
    return datetime.datetime.fromtimestamp(ts.seconds, tz=datetime.timezone.utc) + datetime.timedelta(
        microseconds=ts.nanos // 1000)


class UsherAuth:
    """Checks Authorization headers against usher for one API (audience).

    target: usher's gRPC address, e.g. "127.0.0.1:50051" or "dns:///usher-headless.platform.svc.cluster.local:50051".
    audience: the audience this service answers to, e.g. "api/invoices".
    realm: the RFC 6750 realm in WWW-Authenticate (default: the audience).
    timeout: seconds one validation may take before the request is answered 503.
    credentials: grpc.ChannelCredentials for TLS; None means a plaintext channel.
    """

    def __init__(self, target, audience, realm=None, timeout=2.0, credentials=None, channel=None,
                 stubs_dir=None):
        if not audience:
            raise ValueError("UsherAuth: audience is required (the audience this API answers to)")
        self.target = target
        self.audience = audience
        self.realm = realm or audience
        self.timeout = timeout
        self._pb2, pb2_grpc = load_stubs(stubs_dir)
        if channel is not None:
            self._channel, self._own_channel = channel, False
        elif credentials is not None:
            self._channel, self._own_channel = grpc.secure_channel(target, credentials), True
        else:
            self._channel, self._own_channel = grpc.insecure_channel(target), True
        self._stub = pb2_grpc.TokenServiceStub(self._channel)

    def close(self):
        if self._own_channel:
            self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def check(self, authorization_header, required_scopes=(), dpop=None, method=None, uri=None,
              client_cert_sha256=None):
        """Returns the token's Claims, or raises Unauthorized, Forbidden or ServiceUnavailable.

        authorization_header: the request's Authorization value (str, None, or a
        list of values when the framework keeps repeated headers), "Bearer <token>"
        or "DPoP <token>".
        dpop: the request's DPoP header (str, None, or a list of values).
        method, uri: the request's method and URI (scheme, host and path; a query
        or fragment is dropped), which a DPoP proof must have been made for.
        client_cert_sha256: base64url SHA-256 of the DER client certificate of the
        TLS connection, for a certificate-bound token.
        """
        scheme, token = self._credentials(authorization_header)
        proof = self._proof(dpop)
        req = self._pb2.ValidateTokenRequest(
            token=token, expected_audience=self.audience, required_scopes=list(required_scopes),
            scheme=scheme, dpop_proof=proof, http_method=method or "", http_uri=_without_query(uri),
            client_certificate_sha256=client_cert_sha256 or "")
        try:
            resp = self._stub.ValidateToken(req, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise ServiceUnavailable(
                "VALIDATION_UNAVAILABLE",
                "usher at %s did not answer: %s: %s" % (self.target, getattr(code, "name", code), details),
                hint="not the token's fault: retry shortly, and check that usher runs and is reachable at %s"
                     % self.target,
            ) from None
        if resp.valid and resp.reason == self._pb2.REASON_VALID:
            return self._claims(resp.claims)
        raise self._reject(resp, scheme)

    def _credentials(self, header):
        """(scheme, token) of an Authorization value: scheme "Bearer" or "DPoP"."""
        if isinstance(header, (list, tuple)):
            if len(header) > 1:
                raise self._invalid_request("%d Authorization values: send exactly one" % len(header))
            header = header[0] if header else None
        if header is None or not header.strip():
            raise Unauthorized(
                "MISSING_CREDENTIALS", "no Authorization header", hint=_SEND,
                www_authenticate='Bearer realm="%s"' % _header_safe(self.realm))
        scheme, _, token = header.strip().partition(" ")
        token = token.strip()
        canonical = _SCHEMES.get(scheme.lower())
        if canonical is None:
            raise self._invalid_request(
                "authorization scheme %r: this service takes Bearer or DPoP tokens" % scheme[:32])
        if not token:
            raise self._invalid_request("empty %s token" % canonical, canonical)
        return canonical, token

    def _proof(self, dpop):
        """The one DPoP header value, or ""."""
        if isinstance(dpop, (list, tuple)):
            if len(dpop) > 1:  # RFC 9449 section 4.3: not more than one DPoP header
                why = "%d DPoP header values: send exactly one proof" % len(dpop)
                raise Unauthorized(
                    "INVALID_PROOF", why, hint="make one fresh proof per request",
                    www_authenticate=self._dpop_challenge("invalid_dpop_proof", why))
            dpop = dpop[0] if dpop else None
        return (dpop or "").strip()

    def _dpop_challenge(self, error, description):
        return 'DPoP algs="%s", error="%s", error_description="%s"' % (DPOP_ALGS, error, _header_safe(description))

    def _invalid_request(self, why, scheme="Bearer"):
        challenge = 'Bearer realm="%s", error="invalid_request", error_description="%s"' % (
            _header_safe(self.realm), _header_safe(why))
        if scheme == "DPoP":
            challenge = self._dpop_challenge("invalid_request", why)
        return Unauthorized("INVALID_CREDENTIALS", why, hint=_SEND, www_authenticate=challenge)

    def _reject(self, resp, scheme="Bearer"):
        pb2 = self._pb2
        try:
            name = pb2.Reason.Name(resp.reason)
        except ValueError:
            name = "REASON_%d" % resp.reason
        reason = name[len("REASON_"):] if name.startswith("REASON_") else name
        mismatch = None
        if resp.HasField("mismatch"):
            m = resp.mismatch
            mismatch = {"claim": m.claim, "expected": list(m.expected), "actual": list(m.actual)}
        description = reason + ": " + resp.message
        if resp.hint:
            description += " (hint: " + resp.hint + ")"
        kw = dict(hint=resp.hint, mismatch=mismatch, verdict=resp)
        status, error, challenge_scheme = _REJECTIONS.get(name, _UNKNOWN)
        cls = {401: Unauthorized, 403: Forbidden}.get(status, ServiceUnavailable)
        if cls is ServiceUnavailable:  # not the token's fault: no challenge
            return ServiceUnavailable(reason, resp.message, **kw)

        if challenge_scheme == "DPoP" or scheme == "DPoP":
            challenge = 'DPoP algs="%s"' % DPOP_ALGS
        else:
            challenge = 'Bearer realm="%s"' % _header_safe(self.realm)
        if error:
            challenge += ', error="%s", error_description="%s"' % (error, _header_safe(description))
        if error == "insufficient_scope":
            granted = set(mismatch["actual"]) if mismatch else set()
            missing = [s for s in (mismatch["expected"] if mismatch else []) if s not in granted]
            challenge += ', scope="%s"' % _header_safe(" ".join(missing))
            kw["missing_scopes"] = missing
        return cls(reason, resp.message, www_authenticate=challenge, **kw)

    def _claims(self, c):
        from google.protobuf import json_format

        return Claims(
            issuer=c.issuer,
            subject=c.subject,
            audience=list(c.audience),
            scopes=list(c.scopes),
            client_id=c.client_id,
            expires_at=_time(c, "expires_at"),
            issued_at=_time(c, "issued_at"),
            not_before=_time(c, "not_before"),
            jwt_id=c.jwt_id,
            key_id=c.key_id,
            algorithm=c.algorithm,
            token_type=c.token_type,
            raw=json_format.MessageToDict(c.raw) if c.HasField("raw") else {},
            token_format=c.token_format,
            confirmation={k: v for k, v in (("jkt", c.confirmation.jkt), ("x5t#S256", c.confirmation.x5t_s256)) if v},
        )


def _without_query(uri):
    """uri without its query and fragment, as a proof's htu is compared (RFC 9449 section 4.3)."""
    return (uri or "").split("#", 1)[0].split("?", 1)[0]
