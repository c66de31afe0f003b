"""The caller side: per-call credentials that attach a token issued for the audience of the API being
called, so that the Users API's token never reaches the Invoices API (the Go client's
NewAudienceCredentials, ServiceAudiences and ClientCredentialsSources).

    sources = client_credentials_sources("https://auth.example.com/oauth2/token", "billing", secret,
                                         ["api/users", "api/invoices"])
    creds = audience_call_credentials({"users.v1.Users": "api/users",
                                       "billing.v1.Invoices": "api/invoices"}, sources)
    channel = grpc.secure_channel("invoices:443", grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(), creds))

gRPC sends call credentials only over TLS or a local (loopback, UDS) channel: for development on
loopback, use grpc.local_channel_credentials() in place of the TLS credentials.
"""

import base64
import collections
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import grpc

Token = collections.namedtuple("Token", "access_token token_type expires_at")

DEFAULT_EARLY_REFRESH = 10.0  # seconds before expiry a cached token is replaced (golang.org/x/oauth2's)
DEFAULT_NO_EXPIRY_TTL = 60.0  # how long a token without expires_in is reused


class TokenError(Exception):
    """The token endpoint did not give a usable token (its OAuth error and description, never a secret)."""


class ClientCredentialsTokenSource:
    """OAuth 2.0 client credentials (RFC 6749 section 4.4) for one audience, with urllib.

    Asks token_url for a token with both "audience" (Auth0, Okta, usher dev) and RFC 8707 "resource" set
    to audience, and reuses it until early_refresh seconds before it expires. Client authentication:
    auth_method "basic" (client_secret_basic, the default) or "post" (client_secret_post). scopes go in
    "scope"; extra_params are further form fields. clock (seconds since the epoch) is for tests.
    Thread-safe: concurrent callers share one request.
    """

    def __init__(self, token_url, client_id, client_secret, audience, scopes=(), auth_method="basic",
                 extra_params=None, timeout=10.0, early_refresh=DEFAULT_EARLY_REFRESH, clock=time.time):
        if not token_url or not client_id or not audience:
            raise ValueError("ClientCredentialsTokenSource: token_url, client_id and audience are required")
        if auth_method not in ("basic", "post"):
            raise ValueError("ClientCredentialsTokenSource: auth_method is 'basic' or 'post', not %r" % auth_method)
        self.token_url, self.client_id, self.audience = token_url, client_id, audience
        self._secret = client_secret or ""
        self.scopes = list(scopes)
        self.auth_method = auth_method
        self.extra_params = dict(extra_params or {})
        self.timeout, self.early_refresh, self.clock = timeout, early_refresh, clock
        self.fetches = 0  # requests made to the token endpoint
        self._token = None
        self._lock = threading.Lock()

    def __repr__(self):  # never the secret
        return "ClientCredentialsTokenSource(%r, client_id=%r, audience=%r)" % (
            self.token_url, self.client_id, self.audience)

    def token(self):
        """A live Token for the audience: the cached one, or a new one from the token endpoint."""
        with self._lock:
            t = self._token
            if t is not None and (t.expires_at is None or self.clock() < t.expires_at - self.early_refresh):
                return t
            self._token = self._fetch()
            return self._token

    def _fetch(self):
        form = dict(self.extra_params)
        form.update(grant_type="client_credentials", audience=self.audience, resource=self.audience)
        if self.scopes:
            form["scope"] = " ".join(self.scopes)
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
        if self.auth_method == "basic":
            # RFC 6749 section 2.3.1: each part form-urlencoded before base64.
            pair = urllib.parse.quote_plus(self.client_id) + ":" + urllib.parse.quote_plus(self._secret)
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
        else:
            form.update(client_id=self.client_id, client_secret=self._secret)
        req = urllib.request.Request(self.token_url, data=urllib.parse.urlencode(form).encode("ascii"),
                                     headers=headers, method="POST")
        now = self.clock()
        self.fetches += 1
        where = "token endpoint %s (audience %s)" % (self.token_url, self.audience)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(1 << 20)
        except urllib.error.HTTPError as e:
            raise TokenError("%s answered HTTP %d%s" % (where, e.code, _oauth_error(e))) from None
        except (urllib.error.URLError, OSError) as e:
            raise TokenError("%s unreachable: %s" % (where, getattr(e, "reason", e))) from None
        try:
            doc = json.loads(body)
        except ValueError:
            raise TokenError("%s answered something that is not JSON" % where) from None
        access = doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(access, str) or not access:
            raise TokenError("%s answered without an access_token" % where)
        expires_in = doc.get("expires_in")
        if isinstance(expires_in, str) and expires_in.isdigit():
            expires_in = int(expires_in)
        if isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0:
            expires_at = now + expires_in
        else:
            expires_at = now + DEFAULT_NO_EXPIRY_TTL + self.early_refresh
        return Token(access, str(doc.get("token_type") or ""), expires_at)


def _oauth_error(e):
    try:
        doc = json.loads(e.read(64 << 10))
        out = ": " + str(doc.get("error", ""))
        if doc.get("error_description"):
            out += " (" + str(doc["error_description"])[:300] + ")"
        return out
    except Exception:
        return ""


def client_credentials_sources(token_url, client_id, client_secret, audiences, **options):
    """One cached ClientCredentialsTokenSource per audience: {audience: source}."""
    return {aud: ClientCredentialsTokenSource(token_url, client_id, client_secret, aud, **options)
            for aud in audiences}


def service_audiences(mapping):
    """An audience_for function from {service or full method: audience}: gRPC service names
    ("billing.v1.Invoices") or full method names ("/billing.v1.Invoices/Get"); a method's own entry wins
    over its service's. A method with neither raises LookupError: no token is sent."""
    mapping = dict(mapping)

    def audience_for(full_method):
        if full_method in mapping:
            return mapping[full_method]
        service = full_method.lstrip("/").split("/", 1)[0]
        if service in mapping:
            return mapping[service]
        raise LookupError("usher credentials: no audience configured for %s (service %s)" % (full_method, service))

    return audience_for


class AudienceMetadataPlugin(grpc.AuthMetadataPlugin):
    """A grpc.AuthMetadataPlugin that attaches "authorization: Bearer <token>" to each call, the token
    coming from the source of the audience of the API being called.

    audience_for: a {service or full method: audience} mapping (see service_audiences) or a function of
    the full method name ("/pkg.Service/Method"). sources: {audience: source}, a source being anything
    with a token() method returning a Token (ClientCredentialsTokenSource), or a callable returning the
    access token string. A failure (no audience for the method, no source, the token endpoint) fails the
    call before anything is sent: gRPC answers it UNAVAILABLE with this plugin's message.
    """

    def __init__(self, audience_for, sources):
        if not callable(audience_for):
            audience_for = service_audiences(audience_for)
        if not sources:
            raise ValueError("AudienceMetadataPlugin: at least one token source is required")
        self._audience_for, self._sources = audience_for, dict(sources)

    def metadata_for(self, full_method):
        aud = self._audience_for(full_method)
        src = self._sources.get(aud)
        if src is None:
            raise LookupError("usher credentials: no token source for audience %s (method %s)" % (aud, full_method))
        tok = src.token() if hasattr(src, "token") else src()
        if isinstance(tok, str):
            tok = Token(tok, "Bearer", None)
        if tok.token_type.lower() == "dpop":
            raise TokenError("usher credentials: the token for audience %s is DPoP-bound (token_type DPoP): it "
                             "needs a proof with every call, which these credentials do not make" % aud)
        return (("authorization", "Bearer " + tok.access_token),)

    def __call__(self, context, callback):
        # context.service_url is "<scheme>://<authority>/<package.Service>"; method_name the method.
        service = context.service_url.rsplit("/", 1)[-1]
        try:
            md = self.metadata_for("/%s/%s" % (service, context.method_name))
        except Exception as e:
            callback(None, e)
            return
        callback(md, None)


def audience_call_credentials(audience_for, sources):
    """grpc.CallCredentials for AudienceMetadataPlugin(audience_for, sources); combine them with the
    channel's TLS (or local) credentials through grpc.composite_channel_credentials."""
    return grpc.metadata_call_credentials(AudienceMetadataPlugin(audience_for, sources), name="usher")
