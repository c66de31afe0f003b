package dev.usher.grpc;

import com.google.protobuf.Any;
import com.google.rpc.ErrorInfo;
import io.grpc.Channel;
import io.grpc.Context;
import io.grpc.Contexts;
import io.grpc.Deadline;
import io.grpc.Grpc;
import io.grpc.Metadata;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.cert.Certificate;
import java.security.cert.CertificateEncodingException;
import java.time.Clock;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import javax.net.ssl.SSLPeerUnverifiedException;
import javax.net.ssl.SSLSession;
import usher.v1.TokenServiceGrpc;
import usher.v1.Usher.Claims;
import usher.v1.Usher.Mismatch;
import usher.v1.Usher.Reason;
import usher.v1.Usher.ValidateTokenRequest;
import usher.v1.Usher.ValidateTokenResponse;

/**
 * A {@link ServerInterceptor} that validates every incoming call's access token (Bearer, or DPoP
 * with its proof) through usher for the service's own audience, and makes the verified claims
 * available to the handler as {@link #CLAIMS}{@code .get()}. The same rules as the Go interceptor
 * (client/interceptor.go):
 *
 * <ul>
 *   <li>exactly one {@code authorization} value, scheme {@code Bearer} or {@code DPoP} (any case);
 *       DPoP needs exactly one {@code dpop} proof, checked for POST to
 *       {@code <https|http>://{:authority}/{package.Service}/{Method}};
 *   <li>the audience is the service's own (the builder's), never anything from the request;
 *   <li>valid: the handler runs; INSUFFICIENT_SCOPE: PERMISSION_DENIED; KEYS_UNAVAILABLE,
 *       ISSUER_UNAVAILABLE, usher unreachable, past the deadline or answering a reason this library
 *       does not know: UNAVAILABLE (fail closed); every other reason: UNAUTHENTICATED;
 *   <li>a rejection carries a {@code google.rpc.Status} with one {@code google.rpc.ErrorInfo}
 *       (domain {@code usher.v1}) in {@code grpc-status-details-bin}, and a {@code www-authenticate}
 *       challenge (RFC 6750 Bearer, or RFC 9449 DPoP) in the trailers;
 *   <li>skipped methods match the exact full method name; every other call, unary or stream, is
 *       checked in {@code interceptCall}, before the handler is started.
 * </ul>
 *
 * <p>The check is a blocking call to usher (bounded by the timeout and the call's own deadline) on
 * the thread that starts the call: the server's executor, as grpc-java runs interceptors there.
 * Do not give the server {@code directExecutor()}, or a slow usher would hold a transport thread.
 */
public final class UsherAuth implements ServerInterceptor {
  /** The domain of every google.rpc.ErrorInfo this interceptor attaches. */
  public static final String ERROR_DOMAIN = "usher.v1";

  /** Never authenticated: health checks and reflection. */
  public static final List<String> DEFAULT_SKIP_METHODS =
      List.of(
          "/grpc.health.v1.Health/Check",
          "/grpc.health.v1.Health/Watch",
          "/grpc.health.v1.Health/List",
          "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
          "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo");

  /** One call to usher, when the incoming call's own deadline is not earlier. */
  public static final Duration DEFAULT_TIMEOUT = Duration.ofSeconds(2);

  public static final int DEFAULT_CACHE_ENTRIES = 10_000;
  public static final Duration DEFAULT_CACHE_TTL = Duration.ofMinutes(1);

  /** The verified claims of the call's token, for the handler: {@code UsherAuth.CLAIMS.get()}. */
  public static final Context.Key<Claims> CLAIMS = Context.key("usher.v1.Claims");

  /** How much a rejection tells the caller. */
  public enum Detail {
    /** Message, hint, expected and actual values (internal callers). */
    FULL,
    /** The reason only (public edges). */
    TERSE
  }

  /** Verdict cache lookups. */
  public record CacheStats(long hits, long misses) {}

  static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  static final Metadata.Key<String> DPOP_HEADER = Metadata.Key.of("dpop", Metadata.ASCII_STRING_MARSHALLER);
  /** The challenge, in the trailers of every rejection. */
  public static final Metadata.Key<String> WWW_AUTHENTICATE =
      Metadata.Key.of("www-authenticate", Metadata.ASCII_STRING_MARSHALLER);

  private final Channel usherChannel;
  private final String audience;
  private final Map<String, List<String>> scopes;
  private final Set<String> skip;
  private final Duration timeout;
  private final Detail detail;
  private final VerdictCache cache;

  private UsherAuth(Builder b) {
    this.usherChannel = b.usherChannel;
    this.audience = b.audience;
    Map<String, List<String>> s = new HashMap<>();
    b.scopes.forEach((m, l) -> s.put(m, List.copyOf(l)));
    this.scopes = Collections.unmodifiableMap(s);
    this.skip = Set.copyOf(b.skip);
    this.timeout = b.timeout;
    this.detail = b.detail;
    this.cache = b.cacheEntries > 0 ? new VerdictCache(b.cacheEntries, b.cacheTtl, b.clock) : null;
  }

  /**
   * A builder for a service whose own audience is {@code audience} (from the service's
   * configuration, e.g. "api/invoices"), asking usher over {@code usher} (a channel the caller owns
   * and shuts down).
   */
  public static Builder builder(Channel usher, String audience) {
    return new Builder(usher, audience);
  }

  /** Configures an {@link UsherAuth}. */
  public static final class Builder {
    private final Channel usherChannel;
    private final String audience;
    private final Map<String, List<String>> scopes = new LinkedHashMap<>();
    private final Set<String> skip = new HashSet<>(DEFAULT_SKIP_METHODS);
    private Duration timeout = DEFAULT_TIMEOUT;
    private Detail detail = Detail.FULL;
    private int cacheEntries = DEFAULT_CACHE_ENTRIES;
    private Duration cacheTtl = DEFAULT_CACHE_TTL;
    private Clock clock = Clock.systemUTC();

    private Builder(Channel usher, String audience) {
      if (usher == null) {
        throw new IllegalArgumentException("usher auth: a Channel to usher is required");
      }
      if (audience == null || audience.isEmpty()) {
        throw new IllegalArgumentException(
            "usher auth: the service's own audience is required (e.g. api/invoices): it comes from"
                + " the service's configuration, never from the request");
      }
      this.usherChannel = usher;
      this.audience = audience;
    }

    /** Requires scopes on one full method name ("/pkg.Service/Method"): a missing one is PERMISSION_DENIED. */
    public Builder requireScopes(String fullMethod, String... required) {
      checkFullMethod("requireScopes", fullMethod);
      List<String> l = scopes.computeIfAbsent(fullMethod, k -> new ArrayList<>());
      for (String s : required) {
        if (s == null || s.isEmpty()) {
          throw new IllegalArgumentException("usher auth: requireScopes(" + fullMethod + "): an empty scope");
        }
        l.add(s);
      }
      return this;
    }

    /** Lets these exact full method names through without a token, besides DEFAULT_SKIP_METHODS. */
    public Builder skipMethods(String... fullMethods) {
      for (String m : fullMethods) {
        checkFullMethod("skipMethods", m);
        skip.add(m);
      }
      return this;
    }

    /** Bounds one call to usher (default 2s); the incoming call's deadline bounds it too. */
    public Builder timeout(Duration d) {
      if (d == null || d.isNegative() || d.isZero()) {
        throw new IllegalArgumentException("usher auth: timeout must be positive");
      }
      this.timeout = d;
      return this;
    }

    /** How much a rejection tells the caller (default FULL). */
    public Builder detail(Detail d) {
      this.detail = d == null ? Detail.FULL : d;
      return this;
    }

    /** The reason only, no message, hint or claim values: for public edges. */
    public Builder terse() {
      return detail(Detail.TERSE);
    }

    /** Bounds the verdict cache (defaults 10,000 entries, one minute). */
    public Builder cache(int maxEntries, Duration maxTtl) {
      if (maxEntries <= 0 || maxTtl == null || maxTtl.isNegative() || maxTtl.isZero()) {
        throw new IllegalArgumentException(
            "usher auth: cache(maxEntries, maxTtl) must both be positive (use withoutCache() to disable it)");
      }
      this.cacheEntries = maxEntries;
      this.cacheTtl = maxTtl;
      return this;
    }

    /** Asks usher on every call. */
    public Builder withoutCache() {
      this.cacheEntries = 0;
      return this;
    }

    /** The verdict cache's clock (tests). */
    public Builder clock(Clock c) {
      if (c == null) {
        throw new IllegalArgumentException("usher auth: clock is null");
      }
      this.clock = c;
      return this;
    }

    public UsherAuth build() {
      return new UsherAuth(this);
    }

    private static void checkFullMethod(String what, String m) {
      if (m == null || !m.startsWith("/") || m.chars().filter(c -> c == '/').count() != 2) {
        throw new IllegalArgumentException(
            "usher auth: " + what + ": \"" + m + "\" is not a full method name like /pkg.Service/Method");
      }
    }
  }

  /** Verdict cache hits and misses (zero without a cache). */
  public CacheStats cacheStats() {
    return cache == null ? new CacheStats(0, 0) : new CacheStats(cache.hits(), cache.misses());
  }

  VerdictCache cache() {
    return cache;
  }

  @Override
  public <ReqT, RespT> ServerCall.Listener<ReqT> interceptCall(
      ServerCall<ReqT, RespT> call, Metadata headers, ServerCallHandler<ReqT, RespT> next) {
    String method = "/" + call.getMethodDescriptor().getFullMethodName();
    if (skip.contains(method)) {
      return next.startCall(call, headers);
    }
    Claims claims;
    try {
      claims = authenticate(call, headers, method);
    } catch (Rejection r) {
      call.close(r.status, r.trailers);
      return new ServerCall.Listener<ReqT>() {};
    }
    return Contexts.interceptCall(Context.current().withValue(CLAIMS, claims), call, headers, next);
  }

  /** The rejection of a call: its status and trailers. */
  private static final class Rejection extends Exception {
    private static final long serialVersionUID = 1L;
    final transient Status status;
    final transient Metadata trailers;

    Rejection(Status status, Metadata trailers) {
      super(status.getDescription(), null, false, false);
      this.status = status;
      this.trailers = trailers;
    }
  }

  private Claims authenticate(ServerCall<?, ?> call, Metadata headers, String method) throws Rejection {
    ValidateTokenRequest req = request(call, headers, method);
    boolean dpop = Reasons.DPOP.equals(req.getScheme());
    ValidateTokenResponse resp;
    try {
      resp = ask(req);
    } catch (RuntimeException e) {
      throw unavailable(e, dpop);
    }
    Reasons.Rule rule = ruleOf(resp);
    if (rule.code() != Status.Code.OK) {
      throw reject(resp, rule, dpop || Reasons.DPOP.equals(rule.challenge()));
    }
    return resp.getClaims();
  }

  /**
   * What an answer of usher means here, from the reason table: the handler runs only for valid
   * with REASON_VALID. An answer that contradicts itself, or names a reason this library does not
   * know, fails closed.
   */
  static Reasons.Rule ruleOf(ValidateTokenResponse r) {
    boolean validReason = r.getReasonValue() == Reason.REASON_VALID_VALUE;
    if (r.getValid() != validReason) {
      return Reasons.UNAVAILABLE;
    }
    if (r.getValid()) {
      return Reasons.VALID;
    }
    return Reasons.deny(r.getReasonValue());
  }

  /**
   * A sender-constrained call (a DPoP proof, or a client certificate): its verdict holds for this
   * call only, neither looked up in nor stored in the cache, nor shared with a concurrent call.
   */
  private static boolean senderConstrained(ValidateTokenRequest r) {
    return Reasons.DPOP.equals(r.getScheme())
        || !r.getDpopProof().isEmpty()
        || !r.getClientCertificateSha256().isEmpty();
  }

  private ValidateTokenResponse ask(ValidateTokenRequest req) {
    if (cache == null || senderConstrained(req)) {
      return TokenServiceGrpc.newBlockingStub(usherChannel)
          .withDeadlineAfter(timeout.toNanos(), TimeUnit.NANOSECONDS)
          .validateToken(req);
    }
    VerdictCache.Key key = VerdictCache.key(req.getToken(), audience, req.getRequiredScopesList());
    ValidateTokenResponse hit = cache.lookup(key);
    if (hit != null) {
      return hit;
    }
    Deadline deadline = Deadline.after(timeout.toNanos(), TimeUnit.NANOSECONDS);
    Deadline own = Context.current().getDeadline();
    if (own != null && own.isBefore(deadline)) {
      deadline = own;
    }
    boolean[] leader = new boolean[1];
    CompletableFuture<ValidateTokenResponse> flight = cache.flight(key, leader);
    if (leader[0]) {
      // Shared by every call waiting on it: not cancelled with this call, but bounded by its deadline.
      ValidateTokenResponse resp;
      Context forked = Context.current().fork();
      Context prev = forked.attach();
      try {
        resp = TokenServiceGrpc.newBlockingStub(usherChannel).withDeadline(deadline).validateToken(req);
      } catch (RuntimeException e) {
        cache.land(key, flight, null, e);
        throw e;
      } finally {
        forked.detach(prev);
      }
      cache.land(key, flight, resp, null);
      return resp;
    }
    try {
      return flight.get(Math.max(deadline.timeRemaining(TimeUnit.NANOSECONDS), 0), TimeUnit.NANOSECONDS);
    } catch (TimeoutException e) {
      throw Status.DEADLINE_EXCEEDED
          .withDescription("waiting for usher's answer to a concurrent call with the same token")
          .asRuntimeException();
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw Status.CANCELLED.withDescription("interrupted while waiting for usher").asRuntimeException();
    } catch (ExecutionException e) {
      Throwable c = e.getCause();
      throw c instanceof RuntimeException ? (RuntimeException) c : new IllegalStateException(c);
    }
  }

  /**
   * The question for usher: exactly one "authorization: Bearer|DPoP token"; for DPoP exactly one
   * "dpop" proof for POST to {@code <https|http>://{:authority}/{package.Service}/{Method}}; and the
   * SHA-256 thumbprint of the caller's TLS client certificate, when it sent one.
   */
  private ValidateTokenRequest request(ServerCall<?, ?> call, Metadata headers, String method)
      throws Rejection {
    String[] schemeToken = authorization(headers);
    String scheme = schemeToken[0];
    ValidateTokenRequest.Builder req =
        ValidateTokenRequest.newBuilder()
            .setToken(schemeToken[1])
            .setExpectedAudience(audience)
            .addAllRequiredScopes(scopes.getOrDefault(method, List.of()))
            .setScheme(scheme);
    SSLSession tls = call.getAttributes().get(Grpc.TRANSPORT_ATTR_SSL_SESSION);
    if (tls != null) {
      String thumb = clientCertificateThumbprint(tls);
      if (thumb != null) {
        req.setClientCertificateSha256(thumb);
      }
    }
    if (!Reasons.DPOP.equals(scheme)) {
      return req.build();
    }
    List<String> proofs = values(headers, DPOP_HEADER);
    String authority = call.getAuthority();
    if (proofs.isEmpty()) {
      throw challenge(true, Status.Code.UNAUTHENTICATED, Reasons.INVALID_TOKEN,
          "authorization scheme DPoP without a proof: send one \"dpop: <proof JWT>\" with the call (RFC 9449 §7)",
          "PROOF_MISSING", null);
    }
    if (proofs.size() > 1) {
      throw challenge(true, Status.Code.UNAUTHENTICATED, Reasons.INVALID_DPOP_PROOF,
          proofs.size() + " dpop values: send exactly one proof per call (RFC 9449 §4.3)",
          "INVALID_PROOF", null);
    }
    if (authority == null || authority.isEmpty()) {
      throw challenge(true, Status.Code.UNAUTHENTICATED, Reasons.INVALID_DPOP_PROOF,
          "the call has no :authority to check the proof's htu against", "INVALID_PROOF", null);
    }
    return req.setDpopProof(proofs.get(0))
        .setHttpMethod("POST")
        .setHttpUri(grpcHtu(tls != null, authority, method))
        .build();
  }

  /**
   * The URI a DPoP proof for a gRPC call is made for: https over TLS, http otherwise, the authority
   * without its scheme's default port, and the full method.
   */
  public static String grpcHtu(boolean tls, String authority, String fullMethod) {
    String scheme = tls ? "https" : "http";
    String port = tls ? ":443" : ":80";
    String host = authority.endsWith(port) ? authority.substring(0, authority.length() - port.length()) : authority;
    return scheme + "://" + host + fullMethod;
  }

  private static String clientCertificateThumbprint(SSLSession tls) {
    Certificate[] chain;
    try {
      chain = tls.getPeerCertificates();
    } catch (SSLPeerUnverifiedException e) {
      return null; // no client certificate
    }
    if (chain == null || chain.length == 0) {
      return null;
    }
    try {
      byte[] sum = MessageDigest.getInstance("SHA-256").digest(chain[0].getEncoded());
      return Base64.getUrlEncoder().withoutPadding().encodeToString(sum);
    } catch (NoSuchAlgorithmException | CertificateEncodingException e) {
      return null;
    }
  }

  private static List<String> values(Metadata headers, Metadata.Key<String> key) {
    Iterable<String> all = headers.getAll(key);
    List<String> out = new ArrayList<>();
    if (all != null) {
      all.forEach(out::add);
    }
    return out;
  }

  /** Exactly one "authorization: Bearer|DPoP token": {scheme ("Bearer" or "DPoP"), token}. */
  private String[] authorization(Metadata headers) throws Rejection {
    List<String> vals = values(headers, AUTHORIZATION);
    String why;
    boolean dpop = false;
    if (vals.isEmpty()) {
      throw challenge(false, Status.Code.UNAUTHENTICATED, "",
          "no authorization metadata: send \"authorization: Bearer <access token>\" (or DPoP with a dpop proof)",
          "MISSING_CREDENTIALS", null);
    } else if (vals.size() > 1) {
      why = vals.size() + " authorization values: send exactly one";
    } else {
      String v = vals.get(0).strip();
      int sp = v.indexOf(' ');
      String word = sp < 0 ? v : v.substring(0, sp);
      String tok = sp < 0 ? "" : v.substring(sp + 1).strip();
      dpop = word.equalsIgnoreCase(Reasons.DPOP);
      if (!dpop && !word.equalsIgnoreCase("bearer")) {
        why = "authorization scheme \"" + printable(word) + "\": this service takes Bearer or DPoP tokens";
      } else if (tok.isEmpty()) {
        why = "empty " + printable(word) + " token";
      } else {
        return new String[] {dpop ? Reasons.DPOP : "Bearer", tok};
      }
    }
    throw challenge(dpop, Status.Code.UNAUTHENTICATED, "invalid_request", why, "INVALID_CREDENTIALS", null);
  }

  private Rejection unavailable(RuntimeException err, boolean dpop) {
    String msg = "token validation unavailable; retry later";
    if (detail == Detail.FULL) {
      msg = "usher could not validate the token: " + describe(err);
    }
    return challenge(dpop, Status.Code.UNAVAILABLE, "", msg, "VALIDATION_UNAVAILABLE", null);
  }

  private static String describe(RuntimeException err) {
    if (err instanceof StatusRuntimeException) {
      Status s = ((StatusRuntimeException) err).getStatus();
      return s.getCode() + (s.getDescription() == null ? "" : ": " + s.getDescription());
    }
    return err.getClass().getSimpleName() + (err.getMessage() == null ? "" : ": " + err.getMessage());
  }

  /** A verdict as a status, through the reason table. The challenge is DPoP's when dpop is set. */
  private Rejection reject(ValidateTokenResponse r, Reasons.Rule rule, boolean dpop) {
    String reason = Reasons.name(r.getReasonValue());
    Map<String, String> md = new HashMap<>();
    String msg = reason;
    if (detail == Detail.FULL) {
      msg = reason + ": " + r.getMessage();
      if (!r.getHint().isEmpty()) {
        msg += " (hint: " + r.getHint() + ")";
        md.put("hint", r.getHint());
      }
      md.put("message", r.getMessage());
      md.put("expected_audience", audience);
      if (r.getClaims().getAudienceCount() > 0) {
        md.put("actual_audience", String.join(" ", r.getClaims().getAudienceList()));
      }
      if (r.hasClaims()) {
        md.put("issuer", r.getClaims().getIssuer());
        md.put("kid", r.getClaims().getKeyId());
      }
      if (r.hasMismatch()) {
        Mismatch m = r.getMismatch();
        md.put("claim", m.getClaim());
        md.put("expected", String.join(" ", m.getExpectedList()));
        md.put("actual", String.join(" ", m.getActualList()));
      }
    }
    if (Reasons.INSUFFICIENT_SCOPE.equals(rule.bearerError())) {
      List<String> missing = new ArrayList<>();
      for (String s : r.getMismatch().getExpectedList()) {
        if (!r.getMismatch().getActualList().contains(s)) {
          missing.add(s);
        }
      }
      md.put("missing_scopes", String.join(" ", missing));
    }
    return challenge(dpop, rule.code(), rule.bearerError(), msg, reason, md);
  }

  /**
   * The status with its google.rpc.ErrorInfo, and the www-authenticate challenge: RFC 6750's Bearer
   * one, or with dpop RFC 9449 §7.1's DPoP one with the proof algorithms usher accepts.
   */
  private Rejection challenge(
      boolean dpop, Status.Code code, String authErr, String msg, String reason, Map<String, String> md) {
    StringBuilder chal = new StringBuilder();
    if (dpop) {
      chal.append("DPoP algs=\"").append(Reasons.DPOP_ALGS).append('"');
    } else {
      chal.append("Bearer realm=").append(goQuote(audience));
    }
    if (!authErr.isEmpty()) {
      chal.append(", error=\"").append(authErr).append('"');
      if (detail == Detail.FULL) {
        chal.append(", error_description=\"").append(quoteSafe(msg)).append('"');
      }
      if (Reasons.INSUFFICIENT_SCOPE.equals(authErr)) {
        chal.append(", scope=\"").append(quoteSafe(md.getOrDefault("missing_scopes", ""))).append('"');
      }
    }
    Map<String, String> meta = new HashMap<>();
    if (md != null) {
      md.forEach((k, v) -> {
        if (v != null && !v.isEmpty()) {
          meta.put(k, v);
        }
      });
    }
    ErrorInfo info = ErrorInfo.newBuilder().setReason(reason).setDomain(ERROR_DOMAIN).putAllMetadata(meta).build();
    com.google.rpc.Status st =
        com.google.rpc.Status.newBuilder().setCode(code.value()).setMessage(msg).addDetails(Any.pack(info)).build();
    Metadata trailers = new Metadata();
    trailers.put(WWW_AUTHENTICATE, chal.toString());
    StatusRuntimeException e = StatusProto.toStatusRuntimeException(st, trailers);
    return new Rejection(e.getStatus(), e.getTrailers());
  }

  /** A header value kept to printable ASCII without quotes or backslashes. */
  static String quoteSafe(String s) {
    StringBuilder b = new StringBuilder(s.length());
    s.codePoints().forEach(c -> b.append(c < 0x20 || c > 0x7e || c == '"' || c == '\\' ? '\'' : (char) c));
    return b.toString();
  }

  private static String printable(String s) {
    if (s.length() > 32) {
      s = s.substring(0, 32) + "...";
    }
    return quoteSafe(s);
  }

  /** A double-quoted string as Go's %q writes printable ASCII. */
  private static String goQuote(String s) {
    StringBuilder b = new StringBuilder("\"");
    s.codePoints().forEach(c -> {
      if (c == '"' || c == '\\') {
        b.append('\\').append((char) c);
      } else if (c < 0x20 || c == 0x7f) {
        b.append(String.format(Locale.ROOT, "\\x%02x", c));
      } else {
        b.appendCodePoint(c);
      }
    });
    return b.append('"').toString();
  }
}
