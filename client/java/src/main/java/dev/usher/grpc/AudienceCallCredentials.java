package dev.usher.grpc;

import io.grpc.CallCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import java.io.IOException;
import java.util.Map;
import java.util.concurrent.Executor;
import java.util.regex.Pattern;

/**
 * {@link CallCredentials} that attach, to each call, a token issued for the audience of the API
 * being called (picked from the call's full method name), so that a caller can no longer send the
 * Users API's token to the Invoices API. The caller side of client/credentials.go.
 *
 * <pre>{@code
 * var sources = ClientCredentialsTokenSource.forAudiences(config, "api/users", "api/invoices");
 * var creds = new AudienceCallCredentials(AudienceCallCredentials.serviceAudiences(Map.of(
 *     "users.v1.Users", "api/users", "billing.v1.Invoices", "api/invoices")), sources, false);
 * InvoicesGrpc.newBlockingStub(channel).withCallCredentials(creds).get(req);
 * }</pre>
 */
public final class AudienceCallCredentials extends CallCredentials {
  /** The audience of the API a call goes to, from its full method name ("/pkg.Service/Method"). */
  @FunctionalInterface
  public interface AudienceResolver {
    /** The audience, or null when none is configured (the call then fails). */
    String audienceFor(String fullMethod);
  }

  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);
  private static final Pattern IPV4_LOOPBACK = Pattern.compile("127(\\.\\d{1,3}){3}");

  private final AudienceResolver resolver;
  private final Map<String, TokenSource> sources;
  private final boolean insecureAllowLoopback;

  /**
   * @param resolver names the audience of each call ({@link #serviceAudiences})
   * @param sources one token source per audience ({@link ClientCredentialsTokenSource#forAudiences})
   * @param insecureAllowLoopback let tokens travel without TLS, to loopback addresses only
   *     (development and tests); false refuses every call without TLS
   */
  public AudienceCallCredentials(
      AudienceResolver resolver, Map<String, TokenSource> sources, boolean insecureAllowLoopback) {
    if (resolver == null || sources == null || sources.isEmpty()) {
      throw new IllegalArgumentException(
          "usher credentials: an AudienceResolver and at least one token source are required");
    }
    this.resolver = resolver;
    this.sources = Map.copyOf(sources);
    this.insecureAllowLoopback = insecureAllowLoopback;
  }

  /**
   * Maps gRPC service names ("billing.v1.Invoices") or full method names
   * ("/billing.v1.Invoices/Get") to audiences; a method's own entry wins over its service's.
   */
  public static AudienceResolver serviceAudiences(Map<String, String> m) {
    Map<String, String> copy = Map.copyOf(m);
    return fullMethod -> {
      String aud = copy.get(fullMethod);
      if (aud != null) {
        return aud;
      }
      String svc = fullMethod.startsWith("/") ? fullMethod.substring(1) : fullMethod;
      int slash = svc.indexOf('/');
      return copy.get(slash < 0 ? svc : svc.substring(0, slash));
    };
  }

  @Override
  public void applyRequestMetadata(RequestInfo info, Executor appExecutor, MetadataApplier applier) {
    String method = "/" + info.getMethodDescriptor().getFullMethodName();
    if (info.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY) {
      if (!insecureAllowLoopback) {
        applier.fail(Status.UNAUTHENTICATED.withDescription(
            "usher credentials: refusing to send a token over a connection without TLS to "
                + info.getAuthority() + " (method " + method + ")"));
        return;
      }
      if (!loopback(info.getAuthority())) {
        applier.fail(Status.UNAUTHENTICATED.withDescription(
            "usher credentials: insecureAllowLoopback allows plaintext to loopback only, not "
                + info.getAuthority()));
        return;
      }
    }
    String aud = resolver.audienceFor(method);
    if (aud == null || aud.isEmpty()) {
      applier.fail(Status.UNAUTHENTICATED.withDescription(
          "usher credentials: no audience configured for " + method));
      return;
    }
    TokenSource src = sources.get(aud);
    if (src == null) {
      applier.fail(Status.UNAUTHENTICATED.withDescription(
          "usher credentials: no token source for audience " + aud + " (method " + method + ")"));
      return;
    }
    // The token endpoint may be slow: never on the transport's thread.
    appExecutor.execute(() -> {
      AccessToken tok;
      try {
        tok = src.token();
      } catch (IOException | RuntimeException e) {
        applier.fail(Status.UNAVAILABLE
            .withDescription("usher credentials: token for audience " + aud + ": " + e.getMessage())
            .withCause(e));
        return;
      }
      if ("DPoP".equalsIgnoreCase(tok.type())) {
        applier.fail(Status.UNAUTHENTICATED.withDescription(
            "usher credentials: the token for audience " + aud
                + " is DPoP-bound (token_type DPoP): these credentials send Bearer tokens only"));
        return;
      }
      Metadata md = new Metadata();
      md.put(AUTHORIZATION, "Bearer " + tok.value());
      applier.apply(md);
    });
  }

  /** grpc-java 1.41's CallCredentials requires it; later versions dropped it. */
  public void thisUsesUnstableApi() {}

  static boolean loopback(String authority) {
    if (authority == null) {
      return false;
    }
    String host = authority;
    if (host.startsWith("[")) {
      int end = host.indexOf(']');
      return end > 0 && host.substring(1, end).equals("::1");
    }
    int colon = host.lastIndexOf(':');
    if (colon >= 0) {
      host = host.substring(0, colon);
    }
    return host.equals("localhost") || IPV4_LOOPBACK.matcher(host).matches();
  }
}
