"""usher_grpc: protect a Python gRPC service with usher, and call usher-protected services.

Server side: UsherServerInterceptor (grpc.server) and UsherAioServerInterceptor (grpc.aio.server) ask
usher.v1.TokenService/ValidateToken about every call's token, for the service's own audience, and let
the handler run only when usher says valid; the handler reads the verified claims with claims().
Caller side: audience_call_credentials attaches to each call a token for the audience of the API called.

The rules are the Go interceptor's (client/interceptor.go in the usher repository), see README.md.
"""

from ._core import (
    DEFAULT_SKIP_METHODS,
    DEFAULT_TIMEOUT,
    ERROR_DOMAIN,
    Authenticator,
    Rejection,
    claims,
)
from .aio import UsherAioServerInterceptor
from .cache import DEFAULT_CACHE_ENTRIES, DEFAULT_CACHE_TTL, CacheStats, VerdictCache
from .credentials import (
    AudienceMetadataPlugin,
    ClientCredentialsTokenSource,
    Token,
    TokenError,
    audience_call_credentials,
    client_credentials_sources,
    service_audiences,
)
from .server import UsherServerInterceptor

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_CACHE_ENTRIES",
    "DEFAULT_CACHE_TTL",
    "DEFAULT_SKIP_METHODS",
    "DEFAULT_TIMEOUT",
    "ERROR_DOMAIN",
    "AudienceMetadataPlugin",
    "Authenticator",
    "CacheStats",
    "ClientCredentialsTokenSource",
    "Rejection",
    "Token",
    "TokenError",
    "UsherAioServerInterceptor",
    "UsherServerInterceptor",
    "VerdictCache",
    "audience_call_credentials",
    "claims",
    "client_credentials_sources",
    "service_audiences",
]
