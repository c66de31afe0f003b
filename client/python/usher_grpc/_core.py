"""The interceptors' engine, shared by the grpc and grpc.aio interceptors: what a call's metadata asks,
what usher's answer means, and the status, ErrorInfo and www-authenticate a refused call gets.

It is the Go interceptor's (client/interceptor.go) rules, written once for both Python stacks.
"""

import base64
import contextvars
import hashlib
import json
import ssl
import time

import grpc

from . import _proto, _reasons
from .cache import DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TTL, VerdictCache, rule_of

ERROR_DOMAIN = "usher.v1"
DEFAULT_TIMEOUT = 2.0  # seconds one call to usher may take, when the caller's deadline is not earlier

# Never authenticated: health checks and reflection (exact full method names).
DEFAULT_SKIP_METHODS = (
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
    "/grpc.health.v1.Health/List",
    "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
)

DPOP = "DPoP"
INVALID_TOKEN = "invalid_token"
INVALID_DPOP_PROOF = "invalid_dpop_proof"
INSUFFICIENT_SCOPE = "insufficient_scope"

# The Go client's service config: every resolved usher address, and UNAVAILABLE retried (the RPC is an
# idempotent read).
SERVICE_CONFIG = json.dumps({
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": "usher.v1.TokenService"}],
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.05s",
            "maxBackoff": "0.5s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        },
    }],
})
CHANNEL_OPTIONS = (
    ("grpc.service_config", SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
)

CLAIMS = contextvars.ContextVar("usher_grpc_claims", default=None)


def claims():
    """The verified usher.v1.Claims of the current call's token, or None outside an authenticated call.

    Set by the interceptors for the handler of every protected call (unary or streaming, grpc or
    grpc.aio). Each call has its own copy, which the handler may change.
    """
    return CLAIMS.get()


class Rejection(Exception):
    """A call that must not reach its handler: the status code, message and trailers to answer with."""

    def __init__(self, code, message, trailers, reason):
        super().__init__("%s: %s" % (reason, message))
        self.code, self.message, self.trailers, self.reason = code, message, trailers, reason


def quote_safe(s):
    """Printable ASCII without quotes or backslashes, as an RFC 6750 quoted-string needs."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "'" for c in s)


def printable(s):
    if len(s) > 32:
        s = s[:32] + "..."
    return quote_safe(s)


def check_full_method(what, name):
    if not isinstance(name, str) or not name.startswith("/") or name.count("/") != 2 or name.endswith("/"):
        raise ValueError("%s: %r is not a full method name like /pkg.Service/Method" % (what, name))
    return name


def grpc_htu(is_tls, authority, full_method):
    """The URI a DPoP proof for a gRPC call is made for (the Go client's grpcHTU): https over TLS, http
    otherwise, the authority without its scheme's default port, then the full method."""
    scheme, port = ("https", ":443") if is_tls else ("http", ":80")
    if authority.endswith(port):
        authority = authority[: -len(port)]
    return scheme + "://" + authority + full_method


def peer_tls(auth_context):
    """(is_tls, base64url SHA-256 of the DER client certificate or "") from a ServicerContext's auth_context()."""
    auth_context = auth_context or {}
    kinds = [v.decode() if isinstance(v, bytes) else v for v in auth_context.get("transport_security_type", ())]
    if "ssl" not in kinds:
        return False, ""
    pems = auth_context.get("x509_pem_cert") or ()
    if not pems:
        return True, ""
    pem = pems[0].decode("ascii") if isinstance(pems[0], bytes) else pems[0]
    der = ssl.PEM_cert_to_DER_cert(pem)
    return True, base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


class Prepared:
    """One call's question for usher, and whether the call came with DPoP."""

    __slots__ = ("request", "dpop", "cache_key")

    def __init__(self, request, dpop, cache_key):
        self.request, self.dpop, self.cache_key = request, dpop, cache_key


class Authenticator:
    """Validates every protected call's access token through usher for the service's own audience.

    audience: the audience this service answers to (required; from its own configuration, never from
      the request).
    required_scopes: {"/pkg.Service/Method": ["scope", ...]}: a missing one is PERMISSION_DENIED.
    skip_methods: exact full method names let through without a token, besides DEFAULT_SKIP_METHODS
      (skip_defaults=False drops those).
    terse: True for public edges: a rejection says its reason only (no message, hint or claim values).
    timeout: seconds one call to usher may take (earlier when the call's own deadline is).
    cache: False asks usher on every call; cache_entries and cache_ttl bound the verdict cache; clock
      (seconds since the epoch) is the cache's, for tests.
    authority: the host[:port] callers reach this service by, for the htu of DPoP proofs. Default: the
      call's own :authority where grpcio exposes it (grpc.server); grpc.aio does not, so a grpc.aio
      service that takes DPoP tokens must set it.
    """

    def __init__(self, audience, required_scopes=None, skip_methods=(), skip_defaults=True, terse=False,
                 timeout=DEFAULT_TIMEOUT, cache=True, cache_entries=DEFAULT_CACHE_ENTRIES,
                 cache_ttl=DEFAULT_CACHE_TTL, clock=time.time, authority=None):
        if not audience or not isinstance(audience, str):
            raise ValueError("usher_grpc: the service's own audience is required (e.g. api/invoices): it comes "
                             "from the service's configuration, never from the request")
        if timeout is None or timeout <= 0:
            raise ValueError("usher_grpc: timeout must be a positive number of seconds")
        self.audience = audience
        self.scopes = {}
        for method, scopes in (required_scopes or {}).items():
            if isinstance(scopes, str):
                scopes = [scopes]
            self.scopes[check_full_method("required_scopes", method)] = list(scopes)
        if isinstance(skip_methods, str):
            skip_methods = [skip_methods]
        self.skip = frozenset((DEFAULT_SKIP_METHODS if skip_defaults else ()) +
                              tuple(check_full_method("skip_methods", m) for m in skip_methods))
        self.terse = bool(terse)
        self.timeout = float(timeout)
        self.authority = authority
        self.cache = VerdictCache(cache_entries, cache_ttl, clock) if cache else None

    def protected(self, method):
        return method not in self.skip

    def call_timeout(self, time_remaining):
        if time_remaining is not None and time_remaining < self.timeout:
            return max(time_remaining, 0.0)
        return self.timeout

    # --- the call's credentials ---

    def prepare(self, method, metadata, is_tls=False, cert_sha256="", call_authority=None):
        """The question for usher from the call's metadata, or raises Rejection."""
        scheme, token = self._authorization(metadata)
        req = _proto.ValidateTokenRequest(token=token, expected_audience=self.audience,
                                          required_scopes=self.scopes.get(method, ()), scheme=scheme)
        # Every certificate grpc's TLS stack hands over was proven in the handshake (RFC 8705 section 2.2).
        if is_tls and cert_sha256:
            req.client_certificate_sha256 = cert_sha256
        if scheme == DPOP:
            proofs = [v for k, v in metadata if k.lower() == "dpop"]
            authority = self.authority or call_authority
            if not proofs:
                raise self.challenge(True, grpc.StatusCode.UNAUTHENTICATED, INVALID_TOKEN,
                                     'authorization scheme DPoP without a proof: send one "dpop: <proof JWT>" '
                                     "metadata value with the call (RFC 9449 section 7)", "PROOF_MISSING")
            if len(proofs) > 1:
                raise self.challenge(True, grpc.StatusCode.UNAUTHENTICATED, INVALID_DPOP_PROOF,
                                     "%d dpop values: send exactly one proof per call (RFC 9449 section 4.3)"
                                     % len(proofs), "INVALID_PROOF")
            if not authority:
                raise self.challenge(True, grpc.StatusCode.UNAUTHENTICATED, INVALID_DPOP_PROOF,
                                     "the call has no :authority to check the proof's htu against (grpc.aio "
                                     "does not expose it: configure the interceptor with authority=\"host:port\", "
                                     "the address callers use)", "INVALID_PROOF")
            req.dpop_proof, req.http_method, req.http_uri = proofs[0], "POST", grpc_htu(is_tls, authority, method)
        sender_constrained = scheme == DPOP or bool(req.dpop_proof) or bool(req.client_certificate_sha256)
        key = None
        if self.cache is not None and not sender_constrained:
            key = VerdictCache.key(token, self.audience, req.required_scopes)
        return Prepared(req, scheme == DPOP, key)

    def _authorization(self, metadata):
        """(scheme, token) of exactly one "authorization: <Bearer|DPoP> <token>" value."""
        values = [v for k, v in metadata if k.lower() == "authorization"]
        dpop = False
        if not values:
            raise self.challenge(False, grpc.StatusCode.UNAUTHENTICATED, "",
                                 'no authorization metadata: send "authorization: Bearer <access token>" '
                                 "(or DPoP with a dpop proof)", "MISSING_CREDENTIALS")
        if len(values) > 1:
            why = "%d authorization values: send exactly one" % len(values)
        else:
            value = values[0].decode("latin-1") if isinstance(values[0], bytes) else values[0]
            word, _, token = value.strip().partition(" ")
            token = token.strip()
            dpop = word.lower() == "dpop"
            if not dpop and word.lower() != "bearer":
                why = 'authorization scheme "%s": this service takes Bearer or DPoP tokens' % printable(word)
            elif not token:
                why = "empty %s token" % printable(word)
            else:
                return (DPOP if dpop else "Bearer"), token
        raise self.challenge(dpop, grpc.StatusCode.UNAUTHENTICATED, "invalid_request", why, "INVALID_CREDENTIALS")

    # --- the cache ---

    def cached(self, prepared):
        if prepared.cache_key is None:
            return None
        return self.cache.lookup(prepared.cache_key)

    def remember(self, prepared, resp):
        if prepared.cache_key is not None:
            self.cache.store(prepared.cache_key, resp)

    # --- usher's answer ---

    def verdict(self, prepared, resp):
        """The call's own copy of the claims when usher says valid, or raises Rejection."""
        rule = rule_of(resp)
        if rule.grpc_code != "OK":
            raise self.reject(resp, rule, prepared.dpop or rule.challenge == DPOP)
        own = _proto.Claims()
        own.CopyFrom(resp.claims)
        return own

    def unavailable(self, prepared, err):
        """The refusal when usher could not answer (unreachable, deadline, an error status)."""
        msg = "token validation unavailable; retry later"
        if not self.terse:
            msg = "usher could not validate the token: " + describe_error(err)
        return self.challenge(prepared.dpop, grpc.StatusCode.UNAVAILABLE, "", msg, "VALIDATION_UNAVAILABLE")

    def reject(self, resp, rule, dpop):
        """A verdict as a refusal, through the reason table."""
        reason = _proto.reason_name(resp.reason)
        if reason.startswith("REASON_") and resp.reason in _proto.REASON.values_by_number:
            reason = reason[len("REASON_"):]
        md = {}
        msg = reason
        if not self.terse:
            msg = reason + ": " + resp.message
            if resp.hint:
                msg += " (hint: " + resp.hint + ")"
                md["hint"] = resp.hint
            md["message"] = resp.message
            md["expected_audience"] = self.audience
            if resp.claims.audience:
                md["actual_audience"] = " ".join(resp.claims.audience)
            if resp.HasField("claims"):
                md["issuer"], md["kid"] = resp.claims.issuer, resp.claims.key_id
            if resp.HasField("mismatch"):
                md["claim"] = resp.mismatch.claim
                md["expected"] = " ".join(resp.mismatch.expected)
                md["actual"] = " ".join(resp.mismatch.actual)
        if rule.bearer_error == INSUFFICIENT_SCOPE:
            granted = set(resp.mismatch.actual)
            md["missing_scopes"] = " ".join(s for s in resp.mismatch.expected if s not in granted)
        return self.challenge(dpop, getattr(grpc.StatusCode, rule.grpc_code), rule.bearer_error, msg, reason, md)

    def challenge(self, dpop, code, auth_error, msg, reason, md=None):
        """The Rejection: status code and message, a google.rpc.Status with one ErrorInfo in
        grpc-status-details-bin, and www-authenticate: RFC 6750's Bearer challenge, or with dpop RFC 9449
        section 7.1's DPoP challenge with the proof algorithms usher accepts."""
        md = {k: v for k, v in (md or {}).items() if v}
        chal = 'Bearer realm="%s"' % quote_safe(self.audience)
        if dpop:
            chal = 'DPoP algs="%s"' % _reasons.DPOP_ALGS
        if auth_error:
            chal += ', error="%s"' % auth_error
            if not self.terse:
                chal += ', error_description="%s"' % quote_safe(msg)
            if auth_error == INSUFFICIENT_SCOPE:
                chal += ', scope="%s"' % quote_safe(md.get("missing_scopes", ""))
        info = _proto.ErrorInfo(reason=reason, domain=ERROR_DOMAIN, metadata=md)
        st = _proto.Status(code=code.value[0], message=msg)
        st.details.add(type_url=_proto.ERROR_INFO_TYPE_URL, value=info.SerializeToString())
        trailers = (("www-authenticate", chal), ("grpc-status-details-bin", st.SerializeToString()))
        return Rejection(code, msg, trailers, reason)


def describe_error(err):
    """An error of the call to usher in one line (never with the token: grpc's messages do not hold it)."""
    if isinstance(err, grpc.RpcError) and hasattr(err, "code"):
        try:
            return "%s: %s" % (err.code().name, err.details())
        except Exception:  # a RpcError that is not a Call
            pass
    return "%s: %s" % (type(err).__name__, err)


def new_channel(target, credentials, aio=False):
    mod = grpc.aio if aio else grpc
    if credentials is not None:
        return mod.secure_channel(target, credentials, options=CHANNEL_OPTIONS)
    return mod.insecure_channel(target, options=CHANNEL_OPTIONS)


def validate_method(channel):
    return channel.unary_unary(_proto.VALIDATE_TOKEN,
                               request_serializer=_proto.ValidateTokenRequest.SerializeToString,
                               response_deserializer=_proto.ValidateTokenResponse.FromString)
