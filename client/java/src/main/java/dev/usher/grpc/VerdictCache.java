package dev.usher.grpc;

import com.google.protobuf.ByteString;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import usher.v1.Usher.ValidateTokenResponse;

/**
 * usher's answers, so that a repeated token costs no network hop: the Go cache's rules
 * (client/cache.go). Keyed on (SHA-256 of the token, audience, sorted required scopes): the answer
 * depends on all three. An entry never outlives the token's exp nor maxTtl. Only answers the
 * reason table marks cacheable are kept: not those that can change without the token changing
 * (KEYS_UNAVAILABLE, UNKNOWN_KEY after a rotation, ...), not an answer that fails closed, never a
 * transport error, never claims with a confirmation (a bound token is good only with its proof).
 * Calls that carry a proof or a client certificate never reach the cache (UsherAuth). Bounded: the
 * least recently used entry goes first. Concurrent identical misses share one call to usher.
 */
final class VerdictCache {
  /** A cache key; the token itself is never kept, only its hash. */
  record Key(ByteString tokenHash, String audienceAndScopes) {}

  private record Entry(ValidateTokenResponse resp, Instant expires) {}

  private final int maxEntries;
  private final Duration maxTtl;
  private final Clock clock;
  private final LinkedHashMap<Key, Entry> entries;
  private final ConcurrentHashMap<Key, CompletableFuture<ValidateTokenResponse>> inFlight =
      new ConcurrentHashMap<>();
  private final AtomicLong hits = new AtomicLong();
  private final AtomicLong misses = new AtomicLong();
  private final AtomicLong joined = new AtomicLong();

  VerdictCache(int maxEntries, Duration maxTtl, Clock clock) {
    this.maxEntries = maxEntries;
    this.maxTtl = maxTtl;
    this.clock = clock;
    this.entries = new LinkedHashMap<>(16, 0.75f, true);
  }

  static Key key(String token, String audience, List<String> scopes) {
    MessageDigest sha;
    try {
      sha = MessageDigest.getInstance("SHA-256");
    } catch (NoSuchAlgorithmException e) {
      throw new IllegalStateException("SHA-256 is required of every Java platform", e);
    }
    ByteString hash = ByteString.copyFrom(sha.digest(token.getBytes(StandardCharsets.UTF_8)));
    if (scopes.isEmpty()) {
      return new Key(hash, audience);
    }
    List<String> sorted = new ArrayList<>(scopes);
    Collections.sort(sorted);
    return new Key(hash, audience + "\0" + String.join("\0", sorted));
  }

  /** A live cached answer, or null. */
  ValidateTokenResponse lookup(Key key) {
    synchronized (entries) {
      Entry e = entries.get(key);
      if (e == null) {
        misses.incrementAndGet();
        return null;
      }
      if (!clock.instant().isBefore(e.expires())) {
        entries.remove(key);
        misses.incrementAndGet();
        return null;
      }
      hits.incrementAndGet();
      return e.resp();
    }
  }

  /**
   * The one call in flight for this key: created (and to be run by the caller, who gets {@code
   * leader[0] = true}) or joined.
   */
  CompletableFuture<ValidateTokenResponse> flight(Key key, boolean[] leader) {
    CompletableFuture<ValidateTokenResponse> mine = new CompletableFuture<>();
    CompletableFuture<ValidateTokenResponse> existing = inFlight.putIfAbsent(key, mine);
    leader[0] = existing == null;
    if (existing != null) {
      joined.incrementAndGet();
    }
    return existing == null ? mine : existing;
  }

  /** Ends the leader's flight: stores the answer when it may be kept, and wakes the others. */
  void land(Key key, CompletableFuture<ValidateTokenResponse> f, ValidateTokenResponse resp, Throwable err) {
    try {
      if (err == null) {
        store(key, resp);
      }
    } finally {
      inFlight.remove(key, f);
      if (err == null) {
        f.complete(resp);
      } else {
        f.completeExceptionally(err);
      }
    }
  }

  /** How many calls joined another's flight so far (tests). */
  long joined() {
    return joined.get();
  }

  void store(Key key, ValidateTokenResponse resp) {
    if (!UsherAuth.ruleOf(resp).cacheable() || resp.getClaims().hasConfirmation()) {
      return;
    }
    Instant now = clock.instant();
    Instant expires = now.plus(maxTtl);
    if (resp.getValid() && resp.getClaims().hasExpiresAt()) {
      com.google.protobuf.Timestamp ts = resp.getClaims().getExpiresAt();
      Instant exp = Instant.ofEpochSecond(ts.getSeconds(), ts.getNanos());
      if (exp.isBefore(expires)) {
        expires = exp;
      }
    }
    if (!expires.isAfter(now)) {
      return;
    }
    synchronized (entries) {
      entries.put(key, new Entry(resp, expires));
      if (entries.size() > maxEntries) {
        Map.Entry<Key, Entry> eldest = entries.entrySet().iterator().next();
        entries.remove(eldest.getKey());
      }
    }
  }

  int size() {
    synchronized (entries) {
      return entries.size();
    }
  }

  long hits() {
    return hits.get();
  }

  long misses() {
    return misses.get();
  }
}
