package dev.usher.grpc;

import static dev.usher.grpc.Harness.PROFILES_GET;
import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.sun.net.httpserver.HttpServer;
import dev.usher.grpc.Harness.MutableClock;
import dev.usher.grpc.testing.EchoGrpc;
import dev.usher.grpc.testing.EchoReply;
import dev.usher.grpc.testing.EchoRequest;
import dev.usher.grpc.testing.ProfilesGrpc;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.Server;
import io.grpc.ServerCall;
import io.grpc.ServerCallHandler;
import io.grpc.ServerInterceptor;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import java.io.IOException;
import java.net.InetSocketAddress;
import java.net.URI;
import java.net.URLDecoder;
import java.net.http.HttpClient;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.TimeUnit;
import org.junit.AfterClass;
import org.junit.BeforeClass;
import org.junit.Test;

/**
 * The caller side: AudienceCallCredentials with client-credentials tokens from the real usher dev
 * issuer, sent to two protected APIs (Echo = api/invoices, Profiles = api/users), and the token
 * source's request and cache against a recording token endpoint on 127.0.0.1.
 */
public class CallCredentialsTest {
  static UsherProcess usher;
  static ManagedChannel usherChannel;

  @BeforeClass
  public static void startUsher() throws Exception {
    usher = UsherProcess.dev();
    usherChannel = Harness.channel(usher.addr);
    UsherAuthTest.waitReady(usher, usherChannel);
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

  /** Records the authorization value of every call that reaches a server (before the check). */
  static final class Recorder implements ServerInterceptor {
    final List<String> seen = Collections.synchronizedList(new ArrayList<>());

    @Override
    public <Q, R> ServerCall.Listener<Q> interceptCall(ServerCall<Q, R> call, Metadata h, ServerCallHandler<Q, R> next) {
      seen.add(String.valueOf(h.get(UsherAuth.AUTHORIZATION)));
      return next.startCall(call, h);
    }
  }

  static ClientCredentialsTokenSource.Config devClient() {
    return new ClientCredentialsTokenSource.Config(
        URI.create(usher.issuer() + "/token"), "usher-dev", "usher-dev-secret", List.of());
  }

  static AudienceCallCredentials.AudienceResolver twoApis() {
    return AudienceCallCredentials.serviceAudiences(Map.of(
        "usher.test.v1.Echo", "api/invoices",
        "usher.test.v1.Profiles", "api/users"));
  }

  @Test
  public void eachApiGetsATokenForItsOwnAudience() throws Exception {
    Recorder invoicesSeen = new Recorder();
    Recorder usersSeen = new Recorder();
    Harness.Echo echo = new Harness.Echo();
    Harness.Profiles profiles = new Harness.Profiles();
    // ServerInterceptors.intercept runs the last one first: the recorder sees the call before UsherAuth.
    Server invoices = Harness.server(List.of(UsherAuth.builder(usherChannel, "api/invoices").build(), invoicesSeen), echo);
    Server users = Harness.server(List.of(UsherAuth.builder(usherChannel, "api/users").build(), usersSeen), profiles);
    ManagedChannel ic = Harness.channel(invoices.getPort());
    ManagedChannel uc = Harness.channel(users.getPort());
    try {
      AudienceCallCredentials creds = new AudienceCallCredentials(twoApis(),
          ClientCredentialsTokenSource.forAudiences(devClient(), "api/invoices", "api/users"), true);
      EchoReply r1 = EchoGrpc.newBlockingStub(ic).withCallCredentials(creds).withDeadlineAfter(10, TimeUnit.SECONDS)
          .unary(EchoRequest.getDefaultInstance());
      EchoReply r2 = ProfilesGrpc.newBlockingStub(uc).withCallCredentials(creds).withDeadlineAfter(10, TimeUnit.SECONDS)
          .get(EchoRequest.getDefaultInstance());
      EchoReply r3 = EchoGrpc.newBlockingStub(ic).withCallCredentials(creds).withDeadlineAfter(10, TimeUnit.SECONDS)
          .unary(EchoRequest.getDefaultInstance());
      assertEquals(List.of("api/invoices"), r1.getAudienceList());
      assertEquals(List.of("api/users"), r2.getAudienceList());
      assertEquals(List.of("api/invoices"), r3.getAudienceList());
      assertEquals(2, invoicesSeen.seen.size());
      assertEquals(1, usersSeen.seen.size());
      assertEquals("the invoices token is reused (cached)", invoicesSeen.seen.get(0), invoicesSeen.seen.get(1));
      assertTrue(invoicesSeen.seen.get(0).startsWith("Bearer "));
      assertNotEquals("the Users token never reaches Invoices", usersSeen.seen.get(0), invoicesSeen.seen.get(0));
      assertFalse(invoicesSeen.seen.contains(usersSeen.seen.get(0)));
    } finally {
      Harness.shutdown(invoices, ic);
      Harness.shutdown(users, uc);
    }
  }

  @Test
  public void refusesPlaintextUnlessLoopbackIsAllowedAndAnUnknownServiceFails() throws Exception {
    Recorder seen = new Recorder();
    Harness.Echo echo = new Harness.Echo();
    Server s = Harness.server(List.of(UsherAuth.builder(usherChannel, "api/invoices").build(), seen), echo);
    ManagedChannel ch = Harness.channel(s.getPort());
    try {
      AudienceCallCredentials strict = new AudienceCallCredentials(twoApis(),
          ClientCredentialsTokenSource.forAudiences(devClient(), "api/invoices"), false);
      try {
        EchoGrpc.newBlockingStub(ch).withCallCredentials(strict).withDeadlineAfter(10, TimeUnit.SECONDS)
            .unary(EchoRequest.getDefaultInstance());
        fail("a token was sent without TLS");
      } catch (StatusRuntimeException e) {
        assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode());
        assertTrue(e.getStatus().getDescription(), e.getStatus().getDescription().contains("without TLS"));
      }
      AudienceCallCredentials noProfiles = new AudienceCallCredentials(
          AudienceCallCredentials.serviceAudiences(Map.of("usher.test.v1.Echo", "api/invoices")),
          ClientCredentialsTokenSource.forAudiences(devClient(), "api/invoices"), true);
      ManagedChannel same = ch;
      try {
        ProfilesGrpc.newBlockingStub(same).withCallCredentials(noProfiles).withDeadlineAfter(10, TimeUnit.SECONDS)
            .get(EchoRequest.getDefaultInstance());
        fail("a call without a configured audience went out");
      } catch (StatusRuntimeException e) {
        assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode());
        assertTrue(e.getStatus().getDescription(), e.getStatus().getDescription().contains("no audience configured for "
            + PROFILES_GET));
      }
      assertEquals("nothing reached the server", 0, seen.seen.size());
    } finally {
      Harness.shutdown(s, ch);
    }
  }

  @Test
  public void aMethodsOwnEntryWinsOverItsService() {
    AudienceCallCredentials.AudienceResolver r = AudienceCallCredentials.serviceAudiences(Map.of(
        "usher.test.v1.Echo", "api/invoices", "/usher.test.v1.Echo/Stream", "api/streams"));
    assertEquals("api/invoices", r.audienceFor(Harness.UNARY));
    assertEquals("api/streams", r.audienceFor(Harness.STREAM));
    assertEquals(null, r.audienceFor(PROFILES_GET));
    assertTrue(AudienceCallCredentials.loopback("127.0.0.1:5000"));
    assertTrue(AudienceCallCredentials.loopback("localhost:5000"));
    assertTrue(AudienceCallCredentials.loopback("[::1]:5000"));
    assertFalse(AudienceCallCredentials.loopback("10.0.0.1:5000"));
    assertFalse(AudienceCallCredentials.loopback("127.0.0.1.example.com:5000"));
  }

  // --- the token source against a recording token endpoint ---

  /** A token endpoint on 127.0.0.1 that records each request and answers what the test says. */
  static final class TokenEndpoint implements AutoCloseable {
    final HttpServer http;
    final List<Map<String, String>> forms = Collections.synchronizedList(new ArrayList<>());
    final List<String> auths = Collections.synchronizedList(new ArrayList<>());
    volatile int status = 200;
    volatile String body = "{\"access_token\":\"at-%d\",\"token_type\":\"Bearer\",\"expires_in\":60}";

    TokenEndpoint() throws IOException {
      http = HttpServer.create(new InetSocketAddress("127.0.0.1", 0), 0);
      http.createContext("/token", ex -> {
        String form = new String(ex.getRequestBody().readAllBytes(), StandardCharsets.UTF_8);
        Map<String, String> f = new HashMap<>();
        for (String kv : form.split("&")) {
          String[] p = kv.split("=", 2);
          f.put(URLDecoder.decode(p[0], StandardCharsets.UTF_8), p.length > 1 ? URLDecoder.decode(p[1], StandardCharsets.UTF_8) : "");
        }
        forms.add(f);
        auths.add(ex.getRequestHeaders().getFirst("Authorization"));
        byte[] out = String.format(body, forms.size()).getBytes(StandardCharsets.UTF_8);
        ex.getResponseHeaders().add("Content-Type", "application/json");
        ex.sendResponseHeaders(status, out.length);
        ex.getResponseBody().write(out);
        ex.close();
      });
      http.start();
    }

    URI url() {
      return URI.create("http://127.0.0.1:" + http.getAddress().getPort() + "/token");
    }

    @Override
    public void close() {
      http.stop(0);
    }
  }

  @Test
  public void tokensAreAskedForTheAudienceAndCachedUntilShortlyBeforeExpiry() throws Exception {
    try (TokenEndpoint ep = new TokenEndpoint()) {
      MutableClock clock = new MutableClock(Instant.parse("2030-01-01T00:00:00Z"));
      ClientCredentialsTokenSource src = new ClientCredentialsTokenSource(
          new ClientCredentialsTokenSource.Config(ep.url(), "svc a", "s3cr:et", List.of("invoices.read", "x")),
          "api/invoices", HttpClient.newHttpClient(), clock, Duration.ofSeconds(10));
      assertEquals("at-1", src.token().value());
      assertEquals("at-1", src.token().value());
      assertEquals(1, ep.forms.size());
      Map<String, String> f = ep.forms.get(0);
      assertEquals("client_credentials", f.get("grant_type"));
      assertEquals("api/invoices", f.get("audience"));
      assertEquals("api/invoices", f.get("resource"));
      assertEquals("invoices.read x", f.get("scope"));
      assertFalse("the secret is not in the form", f.containsKey("client_secret"));
      String basic = new String(Base64.getDecoder().decode(ep.auths.get(0).substring("Basic ".length())),
          StandardCharsets.UTF_8);
      assertEquals("svc+a:s3cr%3Aet", basic);
      clock.advance(Duration.ofSeconds(49));
      assertEquals("at-1", src.token().value());
      clock.advance(Duration.ofSeconds(1)); // 10s before exp: renewed
      assertEquals("at-2", src.token().value());
      assertEquals(2, ep.forms.size());
      assertTrue("never printed", !src.token().toString().contains("at-2"));
    }
  }

  @Test
  public void aTokenEndpointErrorFailsTheCallUnavailableWithoutTheSecret() throws Exception {
    try (TokenEndpoint ep = new TokenEndpoint()) {
      ep.status = 401;
      ep.body = "{\"error\":\"invalid_client\",\"error_description\":\"unknown client\"}";
      Harness.Echo echo = new Harness.Echo();
      Server s = Harness.server(UsherAuth.builder(usherChannel, "api/invoices").build(), echo);
      ManagedChannel ch = Harness.channel(s.getPort());
      try {
        ClientCredentialsTokenSource.Config cfg =
            new ClientCredentialsTokenSource.Config(ep.url(), "svc", "top-secret-value", List.of());
        AudienceCallCredentials creds = new AudienceCallCredentials(twoApis(),
            ClientCredentialsTokenSource.forAudiences(cfg, "api/invoices"), true);
        try {
          EchoGrpc.newBlockingStub(ch).withCallCredentials(creds).withDeadlineAfter(10, TimeUnit.SECONDS)
              .unary(EchoRequest.getDefaultInstance());
          fail("went through without a token");
        } catch (StatusRuntimeException e) {
          assertEquals(Status.Code.UNAVAILABLE, e.getStatus().getCode());
          String d = e.getStatus().getDescription();
          assertNotNull(d);
          assertTrue(d, d.contains("401") && d.contains("invalid_client") && d.contains("api/invoices"));
          assertFalse(d, d.contains("top-secret-value"));
        }
        ep.status = 200;
        ep.body = "{\"access_token\":\"bound-%d\",\"token_type\":\"DPoP\",\"expires_in\":60}";
        try {
          EchoGrpc.newBlockingStub(ch).withCallCredentials(creds).withDeadlineAfter(10, TimeUnit.SECONDS)
              .unary(EchoRequest.getDefaultInstance());
          fail("a DPoP-bound token was sent as Bearer");
        } catch (StatusRuntimeException e) {
          assertEquals(Status.Code.UNAUTHENTICATED, e.getStatus().getCode());
          assertTrue(e.getStatus().getDescription(), e.getStatus().getDescription().contains("DPoP-bound"));
        }
        assertEquals(0, echo.started.get());
      } finally {
        Harness.shutdown(s, ch);
      }
    }
  }
}
