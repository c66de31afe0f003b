package dev.usher.grpc;

import static dev.usher.grpc.Harness.CHAT;
import static dev.usher.grpc.Harness.UNARY;
import static dev.usher.grpc.Harness.STREAM;
import static dev.usher.grpc.Harness.bearer;
import static dev.usher.grpc.Harness.expectRejected;
import static dev.usher.grpc.Harness.headers;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import com.google.rpc.ErrorInfo;
import dev.usher.grpc.Harness.Rejected;
import dev.usher.grpc.testing.EchoGrpc;
import dev.usher.grpc.testing.EchoReply;
import dev.usher.grpc.testing.EchoRequest;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.stub.ClientCalls;
import io.grpc.stub.MetadataUtils;
import io.grpc.stub.StreamObserver;
import java.net.ServerSocket;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.After;
import org.junit.AfterClass;
import org.junit.Before;
import org.junit.BeforeClass;
import org.junit.Test;
import usher.v1.TokenServiceGrpc;
import usher.v1.Usher.ValidateTokenRequest;

/**
 * The interceptor against a real {@code usher dev} (and {@code usher serve} for KEYS_UNAVAILABLE):
 * a protected gRPC server on 127.0.0.1 called through generated stubs for every row of the code
 * table.
 */
public class UsherAuthTest {
  static final String INVOICES = "api/invoices";
  static final Pattern DPOP_CHALLENGE = Pattern.compile(
      "DPoP algs=\"([A-Za-z0-9 ]+)\", error=\"([a-z_]+)\", error_description=\"([^\"\\\\]*)\"");

  static UsherProcess usher;
  static ManagedChannel usherChannel;
  static Path tmp;

  Harness.Echo echo;
  AtomicInteger healthStarted;
  Server server;
  ManagedChannel channel;
  UsherAuth auth;

  @BeforeClass
  public static void startUsher() throws Exception {
    tmp = Files.createTempDirectory("usher-java-test");
    usher = UsherProcess.dev();
    usherChannel = Harness.channel(usher.addr);
    waitReady(usher, usherChannel);
  }

  @AfterClass
  public static void stopUsher() throws Exception {
    if (usherChannel != null) {
      usherChannel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    if (usher != null) {
      usher.close();
    }
  }

  /** Until the dev issuer's keys are loaded: a fresh token must come back valid (bounded). */
  static void waitReady(UsherProcess u, ManagedChannel ch) throws Exception {
    String token = u.mint("api/users");
    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(UsherProcess.START_TIMEOUT_S);
    String last = "";
    while (System.nanoTime() < deadline) {
      try {
        if (TokenServiceGrpc.newBlockingStub(ch).withDeadlineAfter(2, TimeUnit.SECONDS)
            .validateToken(ValidateTokenRequest.newBuilder().setToken(token).setExpectedAudience("api/users").build())
            .getValid()) {
          return;
        }
        last = "not valid yet";
      } catch (StatusRuntimeException e) {
        last = e.getStatus().toString();
      }
      Thread.sleep(50); // polling a starting process, with a deadline
    }
    throw new AssertionError("usher not ready after " + UsherProcess.START_TIMEOUT_S + "s: " + last);
  }

  @Before
  public void startServer() throws Exception {
    echo = new Harness.Echo();
    healthStarted = new AtomicInteger();
    auth = protect(UsherAuth.builder(usherChannel, INVOICES));
    server = Harness.server(auth, echo, Harness.health(healthStarted));
    channel = Harness.channel(server.getPort());
  }

  static UsherAuth protect(UsherAuth.Builder b) {
    return b.requireScopes(UNARY, "invoices.read")
        .requireScopes(STREAM, "invoices.read")
        .requireScopes(CHAT, "invoices.read", "invoices.write")
        .withoutCache()
        .build();
  }

  @After
  public void stopServer() throws Exception {
    Harness.shutdown(server, channel);
  }

  EchoGrpc.EchoBlockingStub stub(Metadata md) {
    return EchoGrpc.newBlockingStub(channel)
        .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(md))
        .withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  EchoReply unary(Metadata md) {
    return stub(md).unary(EchoRequest.newBuilder().setText("hi").build());
  }

  List<EchoReply> stream(Metadata md, int n) {
    Iterator<EchoReply> it = stub(md).stream(EchoRequest.newBuilder().setText("s").setCount(n).build());
    List<EchoReply> out = new ArrayList<>();
    it.forEachRemaining(out::add);
    return out;
  }

  Rejected unaryRejected(Metadata md) {
    return expectRejected(() -> unary(md));
  }

  static void assertBearer(Rejected r, Status.Code code, String reason, String challenge) {
    assertEquals(r.status().toString(), code, r.code());
    assertEquals(reason, r.info().getReason());
    assertEquals(challenge, r.wwwAuthenticate());
  }

  /** The parameters of a Bearer challenge for realm api/invoices, or an AssertionError. */
  static Map<String, String> bearerChallenge(String chal) {
    Matcher m = Pattern.compile("Bearer realm=\"api/invoices\"((?:, [a-z_]+=\"[^\"\\\\]*\")*)").matcher(chal);
    assertTrue("not an RFC 6750 challenge: " + chal, m.matches());
    Map<String, String> out = new java.util.LinkedHashMap<>();
    Matcher p = Pattern.compile(", ([a-z_]+)=\"([^\"\\\\]*)\"").matcher(m.group(1));
    while (p.find()) {
      out.put(p.group(1), p.group(2));
    }
    return out;
  }

  // --- valid ---

  @Test
  public void validTokenRunsTheUnaryHandlerWithClaims() throws Exception {
    EchoReply r = unary(bearer(usher.mint(INVOICES, "invoices.read")));
    assertTrue(r.getHasClaims());
    assertEquals(List.of(INVOICES), r.getAudienceList());
    assertEquals(List.of("invoices.read"), r.getScopesList());
    assertEquals("usher-dev", r.getSubject());
    assertEquals(1, echo.started.get());
  }

  @Test
  public void validTokenRunsTheServerStreamingHandlerWithClaims() throws Exception {
    List<EchoReply> rs = stream(bearer(usher.mint(INVOICES, "invoices.read")), 3);
    assertEquals(3, rs.size());
    for (EchoReply r : rs) {
      assertTrue(r.getHasClaims());
      assertEquals(List.of(INVOICES), r.getAudienceList());
    }
  }

  @Test
  public void schemeIsCaseInsensitiveAndSpacesAreTrimmed() throws Exception {
    String tok = usher.mint(INVOICES, "invoices.read");
    for (String v : List.of("bearer " + tok, "BEARER " + tok, "Bearer   " + tok + "  ")) {
      assertTrue(v.substring(0, 6), unary(headers("authorization", v)).getHasClaims());
    }
  }

  // --- no or unusable credentials ---

  @Test
  public void missingAuthorizationIsUnauthenticatedWithABareChallenge() {
    Rejected r = unaryRejected(new Metadata());
    assertBearer(r, Status.Code.UNAUTHENTICATED, "MISSING_CREDENTIALS", "Bearer realm=\"api/invoices\"");
    assertTrue(r.status().getDescription(), r.status().getDescription().startsWith("no authorization metadata"));
    assertEquals(0, echo.started.get());
  }

  @Test
  public void twoAuthorizationValuesAreRefused() throws Exception {
    String tok = usher.mint(INVOICES, "invoices.read");
    Rejected r = unaryRejected(headers("authorization", "Bearer " + tok, "authorization", "Bearer " + tok));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    assertEquals("INVALID_CREDENTIALS", r.info().getReason());
    assertEquals(Map.of("error", "invalid_request", "error_description", "2 authorization values: send exactly one"),
        bearerChallenge(r.wwwAuthenticate()));
    assertEquals(0, echo.started.get());
  }

  @Test
  public void wrongSchemeOrEmptyTokenIsInvalidRequest() throws Exception {
    String basic = Base64.getEncoder().encodeToString("user:pass".getBytes());
    Rejected r = unaryRejected(headers("authorization", "Basic " + basic));
    assertEquals("INVALID_CREDENTIALS", r.info().getReason());
    assertEquals(Map.of("error", "invalid_request",
            "error_description", "authorization scheme 'Basic': this service takes Bearer or DPoP tokens"),
        bearerChallenge(r.wwwAuthenticate()));
    assertEquals("authorization scheme \"Basic\": this service takes Bearer or DPoP tokens", r.status().getDescription());
    Rejected empty = unaryRejected(headers("authorization", "Bearer"));
    assertEquals("INVALID_CREDENTIALS", empty.info().getReason());
    assertEquals("invalid_request", bearerChallenge(empty.wwwAuthenticate()).get("error"));
    assertEquals("empty Bearer token", empty.status().getDescription());
    Rejected bare = unaryRejected(headers("authorization", usher.mint(INVOICES, "invoices.read")));
    assertEquals("a token without a scheme", "INVALID_CREDENTIALS", bare.info().getReason());
    assertEquals(0, echo.started.get());
  }

  // --- token reasons from usher ---

  @Test
  public void malformedTokenIsUnauthenticated() {
    Rejected r = unaryRejected(bearer("not.a.jwt"));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    assertEquals("MALFORMED", r.info().getReason());
    Map<String, String> c = bearerChallenge(r.wwwAuthenticate());
    assertEquals("invalid_token", c.get("error"));
    assertTrue(c.get("error_description"), c.get("error_description").startsWith("MALFORMED: "));
  }

  @Test
  public void expiredTokenIsUnauthenticated() throws Exception {
    Rejected r = unaryRejected(bearer(usher.mintWith(INVOICES, "-5m", null, "invoices.read")));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    assertEquals("EXPIRED", r.info().getReason());
    assertEquals("invalid_token", bearerChallenge(r.wwwAuthenticate()).get("error"));
    assertEquals("exp", r.info().getMetadataMap().get("claim"));
  }

  @Test
  public void audienceMismatchCarriesTheErrorInfoOfTheGoInterceptor() throws Exception {
    Rejected r = unaryRejected(bearer(usher.mint("api/users", "invoices.read")));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    ErrorInfo info = r.info();
    assertEquals("AUDIENCE_MISMATCH", info.getReason());
    Map<String, String> md = info.getMetadataMap();
    assertEquals(INVOICES, md.get("expected_audience"));
    assertEquals("api/users", md.get("actual_audience"));
    assertEquals("aud", md.get("claim"));
    assertEquals(INVOICES, md.get("expected"));
    assertEquals("api/users", md.get("actual"));
    assertEquals("dev-rs256", md.get("kid"));
    assertEquals(usher.issuer(), md.get("issuer"));
    assertFalse(md.get("message").isEmpty());
    assertFalse(md.get("hint").isEmpty());
    assertEquals(
        java.util.Set.of("expected_audience", "actual_audience", "claim", "expected", "actual", "kid", "issuer",
            "message", "hint"),
        md.keySet());
    String msg = r.status().getDescription();
    assertEquals("AUDIENCE_MISMATCH: " + md.get("message") + " (hint: " + md.get("hint") + ")", msg);
    Map<String, String> c = bearerChallenge(r.wwwAuthenticate());
    assertEquals("invalid_token", c.get("error"));
    assertEquals(UsherAuth.quoteSafe(msg), c.get("error_description"));
    assertEquals(0, echo.started.get());
  }

  @Test
  public void audienceInRequestMetadataIsIgnored() throws Exception {
    Metadata md = bearer(usher.mint("api/users", "invoices.read"));
    for (String k : List.of("audience", "expected_audience", "expected-audience", "x-usher-audience")) {
      md.put(Metadata.Key.of(k, Metadata.ASCII_STRING_MARSHALLER), "api/users");
    }
    Rejected r = unaryRejected(md);
    assertEquals("AUDIENCE_MISMATCH", r.info().getReason());
    assertEquals(INVOICES, r.info().getMetadataMap().get("expected_audience"));
    assertEquals(0, echo.started.get());
  }

  @Test
  public void insufficientScopeIsPermissionDeniedWithTheMissingScopes() throws Exception {
    Rejected r = unaryRejected(bearer(usher.mint(INVOICES, "invoices.list")));
    assertEquals(Status.Code.PERMISSION_DENIED, r.code());
    assertEquals("INSUFFICIENT_SCOPE", r.info().getReason());
    assertEquals("invoices.read", r.info().getMetadataMap().get("missing_scopes"));
    Map<String, String> c = bearerChallenge(r.wwwAuthenticate());
    assertEquals("insufficient_scope", c.get("error"));
    assertEquals("invoices.read", c.get("scope"));
    // Chat needs both: the one granted is not named missing.
    Metadata md = bearer(usher.mint(INVOICES, "invoices.read"));
    Rejected chat = expectRejected(() -> chat(md, 2));
    assertEquals(Status.Code.PERMISSION_DENIED, chat.code());
    assertEquals("invoices.write", chat.info().getMetadataMap().get("missing_scopes"));
    assertEquals(0, echo.started.get());
  }

  // --- streams are checked before the handler ---

  List<EchoReply> chat(Metadata md, int n) {
    CompletableFuture<List<EchoReply>> done = new CompletableFuture<>();
    List<EchoReply> got = new ArrayList<>();
    io.grpc.ClientInterceptor attach = MetadataUtils.newAttachHeadersInterceptor(md);
    io.grpc.Channel ch = io.grpc.ClientInterceptors.intercept(channel, attach);
    StreamObserver<EchoRequest> out = io.grpc.stub.ClientCalls.asyncBidiStreamingCall(
        ch.newCall(EchoGrpc.getChatMethod(), io.grpc.CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS)),
        new StreamObserver<EchoReply>() {
          @Override
          public void onNext(EchoReply r) {
            synchronized (got) {
              got.add(r);
            }
          }

          @Override
          public void onError(Throwable t) {
            done.completeExceptionally(t);
          }

          @Override
          public void onCompleted() {
            done.complete(got);
          }
        });
    for (int i = 0; i < n; i++) {
      out.onNext(EchoRequest.newBuilder().setText("m" + i).build());
    }
    out.onCompleted();
    try {
      return done.get(10, TimeUnit.SECONDS);
    } catch (java.util.concurrent.ExecutionException e) {
      if (e.getCause() instanceof StatusRuntimeException) {
        throw (StatusRuntimeException) e.getCause();
      }
      throw new AssertionError(e.getCause());
    } catch (Exception e) {
      throw new AssertionError(e);
    }
  }

  @Test
  public void streamsAreCheckedBeforeTheHandlerRuns() throws Exception {
    String users = usher.mint("api/users", "invoices.read");
    Rejected s = expectRejected(() -> stream(bearer(users), 3));
    assertEquals(Status.Code.UNAUTHENTICATED, s.code());
    assertEquals("AUDIENCE_MISMATCH", s.info().getReason());
    Rejected c = expectRejected(() -> chat(new Metadata(), 3));
    assertEquals("MISSING_CREDENTIALS", c.info().getReason());
    Rejected c2 = expectRejected(() -> chat(bearer("not.a.jwt"), 3));
    assertEquals("MALFORMED", c2.info().getReason());
    assertEquals("no handler started", 0, echo.started.get());
    assertEquals("no message delivered", 0, echo.messages.get());
    // and a good one streams both ways
    List<EchoReply> ok = chat(bearer(usher.mint(INVOICES, "invoices.read", "invoices.write")), 3);
    assertEquals(3, ok.size());
    assertTrue(ok.get(0).getHasClaims());
    assertEquals(3, echo.messages.get());
  }

  // --- skip list ---

  @Test
  public void skipListMatchesTheExactFullMethodName() throws Exception {
    EchoRequest req = EchoRequest.getDefaultInstance();
    EchoReply ok = ClientCalls.blockingUnaryCall(channel, Harness.healthMethod(Harness.HEALTH_CHECK),
        io.grpc.CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS), req);
    assertFalse("a skipped method has no claims", ok.getHasClaims());
    Rejected r = expectRejected(() -> ClientCalls.blockingUnaryCall(channel,
        Harness.healthMethod(Harness.HEALTH_CHECKX), io.grpc.CallOptions.DEFAULT.withDeadlineAfter(10, TimeUnit.SECONDS),
        req));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    assertEquals("MISSING_CREDENTIALS", r.info().getReason());
    assertEquals("only Check ran", 1, healthStarted.get());
  }

  @Test
  public void configuredSkipMethodsAreExactToo() throws Exception {
    Harness.Echo e2 = new Harness.Echo();
    UsherAuth a = UsherAuth.builder(usherChannel, INVOICES).skipMethods(UNARY).withoutCache().build();
    Server s = Harness.server(a, e2);
    ManagedChannel ch = Harness.channel(s.getPort());
    try {
      EchoReply r = EchoGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
          .unary(EchoRequest.getDefaultInstance());
      assertFalse(r.getHasClaims());
      Rejected rs = expectRejected(() -> EchoGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
          .stream(EchoRequest.getDefaultInstance()).forEachRemaining(x -> {}));
      assertEquals("MISSING_CREDENTIALS", rs.info().getReason());
    } finally {
      Harness.shutdown(s, ch);
    }
    for (String bad : List.of("usher.test.v1.Echo/Unary", "/usher.test.v1.Echo", "/a/b/c", "")) {
      try {
        UsherAuth.builder(usherChannel, INVOICES).skipMethods(bad);
        throw new AssertionError("accepted " + bad);
      } catch (IllegalArgumentException expected) {
        assertTrue(expected.getMessage(), expected.getMessage().contains("full method name"));
      }
    }
  }

  // --- terse ---

  @Test
  public void terseModeTellsTheReasonOnly() throws Exception {
    UsherAuth a = protect(UsherAuth.builder(usherChannel, INVOICES).terse());
    Harness.Echo e2 = new Harness.Echo();
    Server s = Harness.server(a, e2);
    ManagedChannel ch = Harness.channel(s.getPort());
    try {
      EchoGrpc.EchoBlockingStub st = EchoGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS);
      String users = usher.mint("api/users", "invoices.read");
      Rejected r = expectRejected(() -> st.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer(users)))
          .unary(EchoRequest.getDefaultInstance()));
      assertEquals("AUDIENCE_MISMATCH", r.status().getDescription());
      assertEquals("AUDIENCE_MISMATCH", r.info().getReason());
      assertEquals(Map.of(), r.info().getMetadataMap());
      assertEquals("Bearer realm=\"api/invoices\", error=\"invalid_token\"", r.wwwAuthenticate());
      String noScope = usher.mint(INVOICES, "invoices.list");
      Rejected p = expectRejected(() -> st.withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer(noScope)))
          .unary(EchoRequest.getDefaultInstance()));
      assertEquals(Status.Code.PERMISSION_DENIED, p.code());
      assertEquals(Map.of("missing_scopes", "invoices.read"), p.info().getMetadataMap());
      assertEquals("Bearer realm=\"api/invoices\", error=\"insufficient_scope\", scope=\"invoices.read\"",
          p.wwwAuthenticate());
      assertEquals(0, e2.started.get());
    } finally {
      Harness.shutdown(s, ch);
    }
  }

  // --- DPoP ---

  String htu(String method) {
    return "http://127.0.0.1:" + server.getPort() + method;
  }

  static Metadata dpop(String token, String... proofs) {
    Metadata md = headers("authorization", "DPoP " + token);
    for (String p : proofs) {
      md.put(Metadata.Key.of("dpop", Metadata.ASCII_STRING_MARSHALLER), p);
    }
    return md;
  }

  static void assertDpopChallenge(Rejected r, String error, String descriptionPrefix) {
    Matcher m = DPOP_CHALLENGE.matcher(r.wwwAuthenticate() == null ? "" : r.wwwAuthenticate());
    assertTrue("not an RFC 9449 DPoP challenge: " + r.wwwAuthenticate(), m.matches());
    assertEquals(Reasons.DPOP_ALGS, m.group(1));
    assertEquals(error, m.group(2));
    assertTrue(m.group(3), m.group(3).startsWith(descriptionPrefix));
  }

  @Test
  public void dpopBoundTokenWithItsProofIsValid() throws Exception {
    Path key = tmp.resolve("dpop-valid.pem");
    String token = usher.mintWith(INVOICES, null, key, "invoices.read");
    EchoReply r = unary(dpop(token, UsherProcess.proof(key, "POST", htu(UNARY), token)));
    assertTrue(r.getHasClaims());
    List<EchoReply> rs = stream(dpop(token, UsherProcess.proof(key, "POST", htu(STREAM), token)), 2);
    assertEquals(2, rs.size());
    // any case of the scheme
    EchoReply lower = unary(headers("authorization", "dpop " + token, "dpop",
        UsherProcess.proof(key, "POST", htu(UNARY), token)));
    assertTrue(lower.getHasClaims());
  }

  @Test
  public void dpopBoundTokenAsBearerIsProofMissingWithADpopChallenge() throws Exception {
    Path key = tmp.resolve("dpop-bearer.pem");
    String token = usher.mintWith(INVOICES, null, key, "invoices.read");
    Rejected r = unaryRejected(bearer(token));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    assertEquals("PROOF_MISSING", r.info().getReason());
    assertDpopChallenge(r, "invalid_token", "PROOF_MISSING: ");
    // with a proof, still sent as Bearer
    Metadata md = bearer(token);
    md.put(Metadata.Key.of("dpop", Metadata.ASCII_STRING_MARSHALLER), UsherProcess.proof(key, "POST", htu(UNARY), token));
    Rejected r2 = unaryRejected(md);
    assertEquals("PROOF_MISSING", r2.info().getReason());
    assertDpopChallenge(r2, "invalid_token", "PROOF_MISSING: ");
    assertEquals(0, echo.started.get());
  }

  @Test
  public void dpopWithoutOrWithTwoProofsIsRefusedBeforeUsher() throws Exception {
    Path key = tmp.resolve("dpop-count.pem");
    String token = usher.mintWith(INVOICES, null, key, "invoices.read");
    Rejected none = unaryRejected(dpop(token));
    assertEquals("PROOF_MISSING", none.info().getReason());
    assertDpopChallenge(none, "invalid_token", "authorization scheme DPoP without a proof");
    String p = UsherProcess.proof(key, "POST", htu(UNARY), token);
    Rejected two = unaryRejected(dpop(token, p, p));
    assertEquals("INVALID_PROOF", two.info().getReason());
    assertDpopChallenge(two, "invalid_dpop_proof", "2 dpop values");
    Rejected empty = unaryRejected(headers("authorization", "DPoP "));
    assertEquals("INVALID_CREDENTIALS", empty.info().getReason());
    assertTrue(empty.wwwAuthenticate(), empty.wwwAuthenticate().startsWith("DPoP algs=\""));
    assertEquals(0, echo.started.get());
  }

  @Test
  public void proofForAnotherMethodIsInvalidProof() throws Exception {
    Path key = tmp.resolve("dpop-htu.pem");
    String token = usher.mintWith(INVOICES, null, key, "invoices.read");
    Rejected r = unaryRejected(dpop(token, UsherProcess.proof(key, "POST", htu(STREAM), token)));
    assertEquals(Status.Code.UNAUTHENTICATED, r.code());
    assertEquals("INVALID_PROOF", r.info().getReason());
    assertEquals("htu", r.info().getMetadataMap().get("claim"));
    assertEquals(htu(UNARY), r.info().getMetadataMap().get("expected"));
    assertDpopChallenge(r, "invalid_dpop_proof", "INVALID_PROOF: ");
    // a replayed proof
    String proof = UsherProcess.proof(key, "POST", htu(UNARY), token);
    assertTrue(unary(dpop(token, proof)).getHasClaims());
    Rejected replay = unaryRejected(dpop(token, proof));
    assertEquals("INVALID_PROOF", replay.info().getReason());
  }

  @Test
  public void anyRejectionOfTheDpopSchemeHasADpopChallenge() throws Exception {
    Path key = tmp.resolve("dpop-aud.pem");
    String token = usher.mintWith("api/users", null, key, "invoices.read");
    Rejected r = unaryRejected(dpop(token, UsherProcess.proof(key, "POST", htu(UNARY), token)));
    assertEquals("AUDIENCE_MISMATCH", r.info().getReason());
    assertDpopChallenge(r, "invalid_token", "AUDIENCE_MISMATCH: ");
  }

  // --- fail closed ---

  @Test
  public void keysUnavailableIsUnavailable() throws Exception {
    int closed;
    try (ServerSocket s = new ServerSocket(0, 1, java.net.InetAddress.getLoopbackAddress())) {
      closed = s.getLocalPort();
    }
    String dead = "http://127.0.0.1:" + closed + "/";
    Path cfg = tmp.resolve("keys-unavailable.yaml");
    Files.writeString(cfg, "listen: \"127.0.0.1:0\"\nissuers:\n  - issuer: \"" + dead + "\"\n    jwks_uri: \""
        + dead + "jwks.json\"\n    fetch_timeout: \"1s\"\n");
    String token = b64("{\"alg\":\"RS256\",\"kid\":\"k1\",\"typ\":\"at+jwt\"}") + "."
        + b64("{\"iss\":\"" + dead + "\",\"aud\":\"api/users\",\"exp\":" + (System.currentTimeMillis() / 1000 + 600)
            + "}") + ".c2ln";
    try (UsherProcess serve = UsherProcess.serve(cfg)) {
      ManagedChannel uc = Harness.channel(serve.addr);
      UsherAuth a = UsherAuth.builder(uc, "api/users").timeout(java.time.Duration.ofSeconds(5)).build();
      Harness.Echo e2 = new Harness.Echo();
      Server s = Harness.server(a, e2);
      ManagedChannel ch = Harness.channel(s.getPort());
      try {
        EchoGrpc.EchoBlockingStub st = EchoGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer(token)));
        for (int i = 0; i < 2; i++) { // never cached
          Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
          assertEquals(Status.Code.UNAVAILABLE, r.code());
          assertEquals("KEYS_UNAVAILABLE", r.info().getReason());
          assertEquals("Bearer realm=\"api/users\"", r.wwwAuthenticate());
        }
        assertEquals(0, a.cacheStats().hits());
        assertEquals(0, e2.started.get());
      } finally {
        Harness.shutdown(s, ch, uc);
      }
    }
  }

  @Test
  public void usherStoppedIsUnavailableWithinTheTimeout() throws Exception {
    try (UsherProcess own = UsherProcess.dev()) {
      ManagedChannel uc = Harness.channel(own.addr);
      waitReady(own, uc);
      UsherAuth a = UsherAuth.builder(uc, INVOICES).timeout(java.time.Duration.ofSeconds(2)).withoutCache().build();
      Harness.Echo e2 = new Harness.Echo();
      Server s = Harness.server(a, e2);
      ManagedChannel ch = Harness.channel(s.getPort());
      try {
        EchoGrpc.EchoBlockingStub st = EchoGrpc.newBlockingStub(ch).withDeadlineAfter(10, TimeUnit.SECONDS)
            .withInterceptors(MetadataUtils.newAttachHeadersInterceptor(bearer(own.mint(INVOICES))));
        assertTrue(st.unary(EchoRequest.getDefaultInstance()).getHasClaims());
        own.close();
        assertFalse(own.alive());
        long start = System.nanoTime();
        Rejected r = expectRejected(() -> st.unary(EchoRequest.getDefaultInstance()));
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        assertTrue("took " + ms + "ms", ms < 3000);
        assertEquals(Status.Code.UNAVAILABLE, r.code());
        assertEquals("VALIDATION_UNAVAILABLE", r.info().getReason());
        assertTrue(r.status().getDescription(), r.status().getDescription().startsWith("usher could not validate the token: "));
        assertEquals("Bearer realm=\"api/invoices\"", r.wwwAuthenticate());
        assertEquals(1, e2.started.get());
      } finally {
        Harness.shutdown(s, ch, uc);
      }
    }
  }

  static String b64(String s) {
    return Base64.getUrlEncoder().withoutPadding().encodeToString(s.getBytes(java.nio.charset.StandardCharsets.UTF_8));
  }
}
