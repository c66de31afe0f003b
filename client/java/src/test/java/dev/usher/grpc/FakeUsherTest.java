package dev.usher.grpc;

import static dev.usher.grpc.Harness.STREAM;
import static dev.usher.grpc.Harness.UNARY;
import static dev.usher.grpc.Harness.bearer;
import static dev.usher.grpc.Harness.expectRejected;
import static dev.usher.grpc.Harness.headers;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;

import com.google.gson.JsonObject;
import com.google.protobuf.Timestamp;
import dev.usher.grpc.Harness.MutableClock;
import dev.usher.grpc.Harness.Rejected;
import dev.usher.grpc.testing.EchoGrpc;
import dev.usher.grpc.testing.EchoReply;
import dev.usher.grpc.testing.EchoRequest;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.net.InetSocketAddress;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import org.junit.After;
import org.junit.Before;
import org.junit.Test;
import usher.v1.TokenServiceGrpc;
import usher.v1.Usher.Claims;
import usher.v1.Usher.Confirmation;
import usher.v1.Usher.Mismatch;
import usher.v1.Usher.Reason;
import usher.v1.Usher.ValidateTokenRequest;
import usher.v1.Usher.ValidateTokenResponse;

/**
 * The interceptor against a fake usher (a TokenService on 127.0.0.1 that answers what the test
 * says): every reason of the proto and reasons unknown to this library, contradictory answers, an
 * usher that never answers, what the interceptor asks, and the verdict cache's rules with an
 * injected clock.
 */
public class FakeUsherTest {
  static final Instant T0 = Instant.parse("2030-01-01T00:00:00Z");

  /** A TokenService that records every request and answers with answer (or holds, or hangs). */
  static final class FakeUsher extends TokenServiceGrpc.TokenServiceImplBase {
    final List<ValidateTokenRequest> requests = Collections.synchronizedList(new ArrayList<>());
    volatile Function<ValidateTokenRequest, ValidateTokenResponse> answer = r -> valid(null);
    volatile CountDownLatch hold;
    volatile boolean hang;
    volatile Status fail;

    @Override
    public void validateToken(ValidateTokenRequest req, StreamObserver<ValidateTokenResponse> out) {
      requests.add(req);
      if (hang) {
        return; // never answers; the server's shutdownNow ends it
      }
      CountDownLatch h = hold;
      if (h != null) {
        try {
          if (!h.await(10, TimeUnit.SECONDS)) {
            out.onError(Status.INTERNAL.withDescription("fake usher held too long").asRuntimeException());
            return;
          }
        } catch (InterruptedException e) {
          Thread.currentThread().interrupt();
          return;
        }
      }
      Status f = fail;
      if (f != null) {
        fail = null;
        out.onError(f.asRuntimeException());
        return;
      }
      out.onNext(answer.apply(req));
      out.onCompleted();
    }
  }

  static ValidateTokenResponse valid(Instant exp) {
    Claims.Builder c = Claims.newBuilder().setSubject("svc-a").addAudience("api/invoices").addScopes("invoices.read");
    if (exp != null) {
      c.setExpiresAt(Timestamp.newBuilder().setSeconds(exp.getEpochSecond()));
    }
    return ValidateTokenResponse.newBuilder().setValid(true).setReason(Reason.REASON_VALID).setClaims(c).build();
  }

  static ValidateTokenResponse rejection(int reason) {
    return ValidateTokenResponse.newBuilder().setValid(false).setReasonValue(reason)
        .setMessage("why").setHint("what to do")
        .setMismatch(Mismatch.newBuilder().setClaim("scope").addExpected("invoices.read").addExpected("x.y")
            .addActual("invoices.read"))
        .build();
  }

  FakeUsher fake;
  Server usherServer;
  ManagedChannel usherChannel;
  MutableClock clock;
  List<Server> servers = new ArrayList<>();
  List<ManagedChannel> channels = new ArrayList<>();

  @Before
  public void startFake() throws Exception {
    fake = new FakeUsher();
    usherServer = io.grpc.netty.NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0))
        .addService(fake).build().start();
    usherChannel = Harness.channel(usherServer.getPort());
    clock = new MutableClock(T0);
  }

  @After
  public void stop() throws Exception {
    for (int i = 0; i < servers.size(); i++) {
      Harness.shutdown(servers.get(i), channels.get(i));
    }
    Harness.shutdown(usherServer, usherChannel);
  }

  UsherAuth.Builder builder() {
    return UsherAuth.builder(usherChannel, "api/invoices")
        .requireScopes(UNARY, "invoices.read")
        .requireScopes(STREAM, "invoices.list")
        .clock(clock);
  }

  Harness.Echo echo;

  /** A protected Echo server; its blocking stub with md attached. */
  EchoGrpc.EchoBlockingStub serve(UsherAuth auth, Metadata md) throws Exception {
    echo = new Harness.Echo();
    Server s = Harness.server(auth, echo);
    ManagedChannel ch = Harness.channel(s.getPort());
    servers.add(s);
    channels.add(ch);
    return EchoGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md));
  }

  static EchoStubCall unary(EchoGrpc.EchoBlockingStub st) {
    return () -> st.unary(EchoRequest.getDefaultInstance());
  }

  interface EchoStubCall {
    EchoReply call();
  }

  // --- the code table, row by row ---

  @Test
  public void everyReasonGetsTheCodeAndChallengeOfReasonsJson() throws Exception {
    JsonObject table = ReasonsTableTest.table();
    Map<Integer, JsonObject> rows = new HashMap<>();
    for (var el : table.getAsJsonArray("reasons")) {
      JsonObject row = el.getAsJsonObject();
      rows.put(Reason.valueOf(row.get("reason").getAsString()).getNumber(), row);
    }
    List<Integer> numbers = new ArrayList<>();
    for (Reason r : Reason.values()) {
      if (r != Reason.UNRECOGNIZED && r != Reason.REASON_UNSPECIFIED) {
        numbers.add(r.getNumber());
      }
    }
    numbers.add(999); // a newer usher's reason
    numbers.add(Reason.REASON_UNSPECIFIED_VALUE);
    EchoGrpc.EchoBlockingStub st = serve(builder().withoutCache().build(), bearer("tok"));
    for (int n : numbers) {
      String label = Reasons.name(n);
      fake.answer = r -> n == Reason.REASON_VALID_VALUE ? valid(null) : rejection(n);
      JsonObject row = rows.getOrDefault(n, n == Reason.REASON_VALID_VALUE ? null : table.getAsJsonObject("unknown"));
      if (n == Reason.REASON_VALID_VALUE) {
        EchoReply ok = st.unary(EchoRequest.getDefaultInstance());
        assertTrue(label, ok.getHasClaims());
        assertEquals(label, "svc-a", ok.getSubject());
        continue;
      }
      Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
      assertEquals(label, row.get("grpc_code").getAsString(), r.code().name());
      assertEquals(label, label, r.info().getReason());
      String err = row.get("bearer_error").getAsString();
      String chal = r.wwwAuthenticate();
      if (row.get("challenge").getAsString().equals("DPoP")) {
        assertTrue(label + ": " + chal, chal.startsWith("DPoP algs=\"" + Reasons.DPOP_ALGS + "\", error=\"" + err + "\""));
      } else if (err.isEmpty()) {
        assertEquals(label, "Bearer realm=\"api/invoices\"", chal);
      } else {
        assertTrue(label + ": " + chal, chal.startsWith("Bearer realm=\"api/invoices\", error=\"" + err + "\""));
      }
      if (err.equals("insufficient_scope")) {
        assertEquals("x.y", r.info().getMetadataMap().get("missing_scopes"));
        assertTrue(chal, chal.endsWith(", scope=\"x.y\""));
      }
    }
    assertEquals("only the valid call reached the handler", 1, echo.started.get());
  }

  @Test
  public void contradictoryAnswersFailClosed() throws Exception {
    EchoGrpc.EchoBlockingStub st = serve(builder().withoutCache().build(), bearer("tok"));
    List<ValidateTokenResponse> answers = List.of(
        valid(null).toBuilder().setReason(Reason.REASON_MALFORMED).build(), // valid, but a reason to reject
        rejection(Reason.REASON_VALID_VALUE), // not valid, but VALID
        valid(null).toBuilder().setReasonValue(999).build()); // valid with a reason unknown here
    for (ValidateTokenResponse a : answers) {
      fake.answer = r -> a;
      Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
      assertEquals(a.toString(), Status.Code.UNAVAILABLE, r.code());
    }
    assertEquals(0, echo.started.get());
  }

  @Test
  public void usherThatNeverAnswersIsUnavailableAtTheTimeout() throws Exception {
    fake.hang = true;
    EchoGrpc.EchoBlockingStub st = serve(builder().timeout(Duration.ofMillis(300)).build(), bearer("tok"));
    long start = System.nanoTime();
    Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
    long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
    assertTrue("took " + ms + "ms", ms < 2000);
    assertEquals(Status.Code.UNAVAILABLE, r.code());
    assertEquals("VALIDATION_UNAVAILABLE", r.info().getReason());
    assertTrue(r.status().getDescription(), r.status().getDescription().contains("DEADLINE_EXCEEDED"));
    // terse: no detail about usher
    EchoGrpc.EchoBlockingStub terse = serve(builder().timeout(Duration.ofMillis(300)).terse().build(), bearer("tok"));
    Rejected t = expectRejected(() -> terse.unary(EchoRequest.getDefaultInstance()));
    assertEquals(Status.Code.UNAVAILABLE, t.code());
    assertEquals("token validation unavailable; retry later", t.status().getDescription());
  }

  @Test
  public void usherOnAClosedPortIsUnavailable() throws Exception {
    int closed;
    try (java.net.ServerSocket s = new java.net.ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      closed = s.getLocalPort();
    }
    ManagedChannel dead = Harness.channel(closed);
    try {
      EchoGrpc.EchoBlockingStub st = serve(UsherAuth.builder(dead, "api/invoices").build(), bearer("tok"));
      Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
      assertEquals(Status.Code.UNAVAILABLE, r.code());
      assertEquals("VALIDATION_UNAVAILABLE", r.info().getReason());
    } finally {
      dead.shutdownNow();
    }
  }

  // --- what is asked ---

  @Test
  public void usherIsAskedWithTheServicesOwnAudienceAndTheMethodsScopes() throws Exception {
    Metadata md = bearer("tok-1");
    md.put(Metadata.Key.of("audience", Metadata.ASCII_STRING_MARSHALLER), "api/users");
    md.put(Metadata.Key.of("expected_audience", Metadata.ASCII_STRING_MARSHALLER), "api/users");
    EchoGrpc.EchoBlockingStub st = serve(builder().withoutCache().build(), md);
    st.unary(EchoRequest.getDefaultInstance());
    st.stream(EchoRequest.getDefaultInstance()).forEachRemaining(x -> {});
    assertEquals(2, fake.requests.size());
    ValidateTokenRequest u = fake.requests.get(0);
    assertEquals("tok-1", u.getToken());
    assertEquals("api/invoices", u.getExpectedAudience());
    assertEquals(List.of("invoices.read"), u.getRequiredScopesList());
    assertEquals("Bearer", u.getScheme());
    assertEquals("", u.getDpopProof());
    assertEquals("", u.getHttpUri());
    assertEquals("", u.getClientCertificateSha256());
    ValidateTokenRequest s = fake.requests.get(1);
    assertEquals("api/invoices", s.getExpectedAudience());
    assertEquals(List.of("invoices.list"), s.getRequiredScopesList());
  }

  @Test
  public void dpopCallsSendTheProofAndTheHtuOfTheCall() throws Exception {
    Metadata md = headers("authorization", "dPoP tok-d", "dpop", "proof.jwt.sig");
    EchoGrpc.EchoBlockingStub st = serve(builder().build(), md);
    st.unary(EchoRequest.getDefaultInstance());
    ValidateTokenRequest r = fake.requests.get(0);
    assertEquals("tok-d", r.getToken());
    assertEquals("DPoP", r.getScheme());
    assertEquals("proof.jwt.sig", r.getDpopProof());
    assertEquals("POST", r.getHttpMethod());
    assertEquals("http://127.0.0.1:" + servers.get(0).getPort() + UNARY, r.getHttpUri());
  }

  /**
   * Over TLS: the htu is https, and the caller's client certificate thumbprint goes to usher. A
   * real TLS connection cannot be made with Debian 12's netty 4.1.48 on JDK 17 ("JDK provider does
   * not support ALPN protocol", and no netty-tcnative package), so the call is handed to the
   * interceptor directly, with the SSLSession attribute a TLS transport sets; usher is the fake one.
   */
  @Test
  public void overTlsTheHtuIsHttpsAndTheClientCertificateIsSent() throws Exception {
    byte[] der = "a DER certificate".getBytes(java.nio.charset.StandardCharsets.UTF_8);
    java.security.cert.Certificate cert = new java.security.cert.Certificate("X.509") {
      @Override
      public byte[] getEncoded() {
        return der.clone();
      }

      @Override
      public void verify(java.security.PublicKey key) {}

      @Override
      public void verify(java.security.PublicKey key, String sigProvider) {}

      @Override
      public String toString() {
        return "test certificate";
      }

      @Override
      public java.security.PublicKey getPublicKey() {
        return null;
      }
    };
    javax.net.ssl.SSLSession tls = (javax.net.ssl.SSLSession) java.lang.reflect.Proxy.newProxyInstance(
        getClass().getClassLoader(), new Class<?>[] {javax.net.ssl.SSLSession.class}, (proxy, m, args) -> {
          if (m.getName().equals("getPeerCertificates")) {
            return new java.security.cert.Certificate[] {cert};
          }
          throw new UnsupportedOperationException(m.getName());
        });
    String thumb = java.util.Base64.getUrlEncoder().withoutPadding()
        .encodeToString(java.security.MessageDigest.getInstance("SHA-256").digest(der));
    UsherAuth auth = builder().build();
    java.util.concurrent.atomic.AtomicInteger started = new java.util.concurrent.atomic.AtomicInteger();
    List<Status> closed = new ArrayList<>();
    io.grpc.ServerCall<EchoRequest, EchoReply> call = new io.grpc.ServerCall<>() {
      @Override
      public void request(int n) {}

      @Override
      public void sendHeaders(Metadata headers) {}

      @Override
      public void sendMessage(EchoReply message) {}

      @Override
      public void close(Status status, Metadata trailers) {
        closed.add(status);
      }

      @Override
      public boolean isCancelled() {
        return false;
      }

      @Override
      public io.grpc.MethodDescriptor<EchoRequest, EchoReply> getMethodDescriptor() {
        return EchoGrpc.getUnaryMethod();
      }

      @Override
      public io.grpc.Attributes getAttributes() {
        return io.grpc.Attributes.newBuilder().set(io.grpc.Grpc.TRANSPORT_ATTR_SSL_SESSION, tls).build();
      }

      @Override
      public String getAuthority() {
        return "invoices.example:443";
      }
    };
    io.grpc.ServerCallHandler<EchoRequest, EchoReply> handler = (c, h) -> {
      started.incrementAndGet();
      return new io.grpc.ServerCall.Listener<EchoRequest>() {};
    };
    auth.interceptCall(call, headers("authorization", "DPoP tok-tls", "dpop", "p.r.f"), handler);
    assertEquals(List.of(), closed);
    assertEquals(1, started.get());
    ValidateTokenRequest r = fake.requests.get(0);
    assertEquals("https://invoices.example" + UNARY, r.getHttpUri());
    assertEquals(thumb, r.getClientCertificateSha256());
    auth.interceptCall(call, bearer("tok-mtls"), handler);
    auth.interceptCall(call, bearer("tok-mtls"), handler);
    assertEquals("a call with a client certificate is never cached", 3, fake.requests.size());
    assertEquals(thumb, fake.requests.get(2).getClientCertificateSha256());
    assertEquals("Bearer", fake.requests.get(2).getScheme());
  }

  @Test
  public void htuDropsTheSchemesDefaultPortOnly() {
    assertEquals("https://api.example/a.B/C", UsherAuth.grpcHtu(true, "api.example:443", "/a.B/C"));
    assertEquals("https://api.example:80/a.B/C", UsherAuth.grpcHtu(true, "api.example:80", "/a.B/C"));
    assertEquals("http://api.example/a.B/C", UsherAuth.grpcHtu(false, "api.example:80", "/a.B/C"));
    assertEquals("http://127.0.0.1:8443/a.B/C", UsherAuth.grpcHtu(false, "127.0.0.1:8443", "/a.B/C"));
  }

  // --- the verdict cache ---

  @Test
  public void aValidVerdictIsCachedButNeverPastTheTokensExp() throws Exception {
    fake.answer = r -> valid(T0.plusSeconds(30));
    UsherAuth auth = builder().cache(100, Duration.ofMinutes(1)).build();
    EchoGrpc.EchoBlockingStub st = serve(auth, bearer("tok"));
    assertTrue(st.unary(EchoRequest.getDefaultInstance()).getHasClaims());
    EchoReply hit = st.unary(EchoRequest.getDefaultInstance());
    assertTrue("claims on a cache hit", hit.getHasClaims());
    assertEquals(1, fake.requests.size());
    assertEquals(new UsherAuth.CacheStats(1, 1), auth.cacheStats());
    clock.advance(Duration.ofSeconds(29));
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals(1, fake.requests.size());
    clock.advance(Duration.ofSeconds(1)); // exp reached
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals(2, fake.requests.size());
  }

  @Test
  public void anEntryNeverOutlivesTheCachesMaxTtl() throws Exception {
    fake.answer = r -> valid(T0.plus(Duration.ofHours(1)));
    EchoGrpc.EchoBlockingStub st = serve(builder().cache(100, Duration.ofSeconds(60)).build(), bearer("tok"));
    st.unary(EchoRequest.getDefaultInstance());
    clock.advance(Duration.ofSeconds(59));
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals(1, fake.requests.size());
    clock.advance(Duration.ofSeconds(1));
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals(2, fake.requests.size());
  }

  @Test
  public void anExpiredTokensValidVerdictIsNotStored() throws Exception {
    fake.answer = r -> valid(T0.minusSeconds(1)); // usher's leeway said valid; exp already passed here
    EchoGrpc.EchoBlockingStub st = serve(builder().build(), bearer("tok"));
    st.unary(EchoRequest.getDefaultInstance());
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals(2, fake.requests.size());
  }

  @Test
  public void theKeyIsTokenAudienceAndScopes() throws Exception {
    fake.answer = r -> valid(null);
    Metadata md = bearer("tok");
    EchoGrpc.EchoBlockingStub st = serve(builder().build(), md);
    st.unary(EchoRequest.getDefaultInstance());
    st.stream(EchoRequest.getDefaultInstance()).forEachRemaining(x -> {}); // other scopes
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals(2, fake.requests.size());
    EchoGrpc.EchoBlockingStub other = st.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(
        headers("x-unused", "1")));
    other.unary(EchoRequest.getDefaultInstance());
    assertEquals("same token, same scopes", 2, fake.requests.size());
    List<String> ab = List.of("a", "b");
    assertEquals(VerdictCache.key("t", "api/x", ab), VerdictCache.key("t", "api/x", List.of("b", "a")));
    assertNotEquals(VerdictCache.key("t", "api/x", ab), VerdictCache.key("t", "api/y", ab));
    assertNotEquals(VerdictCache.key("t", "api/x", ab), VerdictCache.key("u", "api/x", ab));
    assertNotEquals(VerdictCache.key("t", "api/x", ab), VerdictCache.key("t", "api/x", List.of("a")));
    assertNotEquals(VerdictCache.key("t", "api/x", List.of()), VerdictCache.key("t", "api/x", List.of("")));
  }

  @Test
  public void onlyCacheableReasonsOfReasonsJsonAreCached() throws Exception {
    JsonObject table = ReasonsTableTest.table();
    EchoGrpc.EchoBlockingStub st = serve(builder().build(), new Metadata());
    int token = 0;
    List<Integer> numbers = new ArrayList<>();
    Map<Integer, Boolean> cacheable = new HashMap<>();
    for (var el : table.getAsJsonArray("reasons")) {
      JsonObject row = el.getAsJsonObject();
      int n = Reason.valueOf(row.get("reason").getAsString()).getNumber();
      if (n != Reason.REASON_VALID_VALUE) {
        numbers.add(n);
        cacheable.put(n, row.get("cacheable").getAsBoolean());
      }
    }
    numbers.add(999);
    cacheable.put(999, table.getAsJsonObject("unknown").get("cacheable").getAsBoolean());
    for (int n : numbers) {
      fake.answer = r -> rejection(n);
      EchoGrpc.EchoBlockingStub t = st.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(
          headers("authorization", "Bearer tok-" + (token++))));
      int before = fake.requests.size();
      expectRejected(() -> t.unary(EchoRequest.getDefaultInstance()));
      expectRejected(() -> t.unary(EchoRequest.getDefaultInstance()));
      int asked = fake.requests.size() - before;
      assertEquals(Reasons.name(n) + " asked usher", cacheable.get(n) ? 1 : 2, asked);
    }
    assertTrue("KEYS_UNAVAILABLE is never cached", !cacheable.get(Reason.REASON_KEYS_UNAVAILABLE_VALUE));
  }

  @Test
  public void boundTokensAndDpopCallsAreNeverCached() throws Exception {
    fake.answer = r -> {
      ValidateTokenResponse v = valid(null);
      return v.toBuilder().setClaims(v.getClaims().toBuilder().setConfirmation(Confirmation.newBuilder().setJkt("abc")))
          .build();
    };
    EchoGrpc.EchoBlockingStub none = serve(builder().build(), new Metadata());
    EchoGrpc.EchoBlockingStub st = none.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer("bound")));
    st.unary(EchoRequest.getDefaultInstance());
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals("claims with cnf", 2, fake.requests.size());
    fake.answer = r -> valid(null);
    EchoGrpc.EchoBlockingStub d = none.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(
        headers("authorization", "DPoP dpop-tok", "dpop", "p.r.f")));
    d.unary(EchoRequest.getDefaultInstance());
    d.unary(EchoRequest.getDefaultInstance());
    assertEquals("a call with a proof", 4, fake.requests.size());
  }

  @Test
  public void aTransportErrorIsNotCached() throws Exception {
    fake.fail = Status.UNAVAILABLE.withDescription("fake outage");
    EchoGrpc.EchoBlockingStub st = serve(builder().build(), bearer("tok"));
    Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
    assertEquals(Status.Code.UNAVAILABLE, r.code());
    assertTrue(r.status().getDescription(), r.status().getDescription().contains("fake outage"));
    assertTrue(st.unary(EchoRequest.getDefaultInstance()).getHasClaims());
    assertEquals(2, fake.requests.size());
  }

  @Test
  public void theCacheIsBoundedLeastRecentlyUsedFirst() throws Exception {
    UsherAuth auth = builder().cache(2, Duration.ofMinutes(1)).build();
    EchoGrpc.EchoBlockingStub st = serve(auth, new Metadata());
    Function<String, EchoGrpc.EchoBlockingStub> with = t -> st.withInterceptors(
        MetadataUtils.newAttachHeadersInterceptor(bearer(t)));
    with.apply("t1").unary(EchoRequest.getDefaultInstance());
    with.apply("t2").unary(EchoRequest.getDefaultInstance());
    with.apply("t1").unary(EchoRequest.getDefaultInstance()); // t1 used: t2 is now the oldest
    with.apply("t3").unary(EchoRequest.getDefaultInstance()); // evicts t2
    assertEquals(3, fake.requests.size());
    assertEquals(2, auth.cache().size());
    with.apply("t1").unary(EchoRequest.getDefaultInstance());
    with.apply("t3").unary(EchoRequest.getDefaultInstance());
    assertEquals(3, fake.requests.size());
    with.apply("t2").unary(EchoRequest.getDefaultInstance());
    assertEquals(4, fake.requests.size());
  }

  @Test
  public void concurrentIdenticalMissesShareOneCall() throws Exception {
    CountDownLatch release = new CountDownLatch(1);
    fake.hold = release;
    UsherAuth auth = builder().build();
    EchoGrpc.EchoBlockingStub st = serve(auth, bearer("tok"));
    EchoGrpc.EchoFutureStub fut = EchoGrpc.newFutureStub(channels.get(0)).withDeadlineAfter(10, TimeUnit.SECONDS)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer("tok")));
    List<Future<EchoReply>> calls = new ArrayList<>();
    for (int i = 0; i < 3; i++) {
      calls.add(fut.unary(EchoRequest.getDefaultInstance()));
    }
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
    while ((auth.cache().joined() < 2 || fake.requests.isEmpty()) && System.nanoTime() < deadline) {
      Thread.sleep(5); // polling for the leader's request and the two followers, with a deadline
    }
    assertEquals("two calls joined the first one's flight", 2, auth.cache().joined());
    assertEquals(1, fake.requests.size());
    release.countDown();
    for (Future<EchoReply> f : calls) {
      assertTrue(f.get(10, TimeUnit.SECONDS).getHasClaims());
    }
    assertEquals(1, fake.requests.size());
    assertEquals(3, echo.started.get());
    st.unary(EchoRequest.getDefaultInstance());
    assertEquals("then a cache hit", 1, fake.requests.size());
  }
}
