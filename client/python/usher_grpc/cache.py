"""The verdict cache: usher's answers remembered so that a repeated token costs no network hop."""

import collections
import hashlib
import threading
import time

from . import _reasons

DEFAULT_CACHE_ENTRIES = 10_000
DEFAULT_CACHE_TTL = 60.0  # seconds

CacheStats = collections.namedtuple("CacheStats", "hits misses")


def rule_of(resp):
    """What usher's answer means here, from the reason table (the Go client's ruleOf).

    The handler runs only for valid with REASON_VALID. An answer that contradicts itself (valid with
    another reason, or not valid with REASON_VALID) or names a reason the table does not know fails
    closed: UNKNOWN (UNAVAILABLE, never cached).
    """
    from ._proto import REASON_VALID, reason_name

    if resp.valid != (resp.reason == REASON_VALID):
        return _reasons.UNKNOWN
    if resp.valid:
        return _reasons.RULES["REASON_VALID"]
    rule = _reasons.RULES.get(reason_name(resp.reason))
    if rule is None or rule.grpc_code == "OK":
        return _reasons.UNKNOWN
    return rule


class VerdictCache:
    """A bounded LRU of usher's verdicts, with the Go cache's rules.

    Keyed on (SHA-256 of the token, audience, sorted required scopes): the answer depends on all three.
    An entry never outlives the token's exp (for a valid verdict) nor max_ttl. Only answers the reason
    table marks cacheable are kept: not those that can change without the token changing
    (KEYS_UNAVAILABLE, UNKNOWN_KEY after a rotation...), not an answer that fails closed, never a
    transport error, and never the answer for a sender-constrained token (claims with a confirmation):
    the interceptor does not ask the cache at all for a call with a DPoP proof or a client certificate.

    clock: seconds since the epoch, like time.time (exp is wall-clock time); injectable for tests.
    Thread-safe; the raw token is never kept, only its hash.
    """

    def __init__(self, max_entries=DEFAULT_CACHE_ENTRIES, max_ttl=DEFAULT_CACHE_TTL, clock=time.time):
        if max_entries <= 0 or max_ttl <= 0:
            raise ValueError("VerdictCache: max_entries and max_ttl must be positive (cache=False disables it)")
        self.max_entries, self.max_ttl, self.clock = int(max_entries), float(max_ttl), clock
        self._entries = collections.OrderedDict()  # key -> (response, expires)
        self._lock = threading.Lock()
        self._hits = self._misses = 0

    @staticmethod
    def key(token, audience, scopes):
        return hashlib.sha256(token.encode("utf-8")).digest(), audience, tuple(sorted(scopes))

    def lookup(self, key):
        """A live cached answer, or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and self.clock() < entry[1]:
                self._entries.move_to_end(key)
                self._hits += 1
                return entry[0]
            if entry is not None:
                del self._entries[key]
            self._misses += 1
            return None

    def store(self, key, resp):
        """Keeps resp when the rules allow it."""
        if not rule_of(resp).cacheable:
            return
        # A bound token is good only with its proof or certificate, which a later call may lack.
        if resp.HasField("claims") and resp.claims.HasField("confirmation"):
            return
        now = self.clock()
        expires = now + self.max_ttl
        if resp.valid and resp.HasField("claims") and resp.claims.HasField("expires_at"):
            exp = resp.claims.expires_at.seconds + resp.claims.expires_at.nanos / 1e9
            expires = min(expires, exp)
        if expires <= now:
            return
        with self._lock:
            self._entries[key] = (resp, expires)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self):
        with self._lock:
            return len(self._entries)

    def stats(self):
        with self._lock:
            return CacheStats(self._hits, self._misses)
