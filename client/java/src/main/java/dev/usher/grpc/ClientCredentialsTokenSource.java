package dev.usher.grpc;

import com.google.gson.JsonElement;
import com.google.gson.JsonObject;
import com.google.gson.JsonParseException;
import com.google.gson.JsonParser;
import java.io.IOException;
import java.net.URI;
import java.net.URLEncoder;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.Base64;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * OAuth 2.0 client credentials (RFC 6749 §4.4) for one audience, asked for with both the
 * "audience" parameter (Auth0, Okta, usher dev) and RFC 8707 "resource"; the client authenticates
 * with HTTP Basic (client_secret_basic). The token is cached until {@link #DEFAULT_EXPIRY_MARGIN}
 * before it expires; a token without expires_in is kept until {@link #DEFAULT_NO_EXPIRY_TTL}.
 * Thread-safe: concurrent callers share one request.
 */
public final class ClientCredentialsTokenSource implements TokenSource {
  /** A token is renewed this long before its expiry (the Go oauth2 package's margin). */
  public static final Duration DEFAULT_EXPIRY_MARGIN = Duration.ofSeconds(10);
  /** How long a token whose answer has no expires_in is reused. */
  public static final Duration DEFAULT_NO_EXPIRY_TTL = Duration.ofMinutes(5);
  /** One request to the token endpoint. */
  public static final Duration DEFAULT_REQUEST_TIMEOUT = Duration.ofSeconds(10);

  /** What every audience's source shares: the endpoint, the client and its scopes. */
  public record Config(URI tokenUrl, String clientId, String clientSecret, List<String> scopes) {
    public Config {
      if (tokenUrl == null || clientId == null || clientId.isEmpty() || clientSecret == null) {
        throw new IllegalArgumentException(
            "usher credentials: a token URL, a client id and a client secret are required");
      }
      scopes = scopes == null ? List.of() : List.copyOf(scopes);
    }
  }

  private final Config config;
  private final String audience;
  private final HttpClient http;
  private final Clock clock;
  private final Duration margin;
  private AccessToken cached;
  private Instant renewAt;

  public ClientCredentialsTokenSource(Config config, String audience, HttpClient http, Clock clock, Duration margin) {
    if (audience == null || audience.isEmpty()) {
      throw new IllegalArgumentException("usher credentials: an audience is required, e.g. api/invoices");
    }
    this.config = config;
    this.audience = audience;
    this.http = http;
    this.clock = clock;
    this.margin = margin;
  }

  public ClientCredentialsTokenSource(Config config, String audience) {
    this(config, audience,
        HttpClient.newBuilder().connectTimeout(DEFAULT_REQUEST_TIMEOUT).build(),
        Clock.systemUTC(), DEFAULT_EXPIRY_MARGIN);
  }

  /** One cached source per audience, sharing config and one HTTP client. */
  public static Map<String, TokenSource> forAudiences(Config config, String... audiences) {
    HttpClient http = HttpClient.newBuilder().connectTimeout(DEFAULT_REQUEST_TIMEOUT).build();
    Map<String, TokenSource> out = new LinkedHashMap<>();
    for (String aud : audiences) {
      out.put(aud, new ClientCredentialsTokenSource(config, aud, http, Clock.systemUTC(), DEFAULT_EXPIRY_MARGIN));
    }
    return out;
  }

  public String audience() {
    return audience;
  }

  @Override
  public synchronized AccessToken token() throws IOException {
    Instant now = clock.instant();
    if (cached != null && now.isBefore(renewAt)) {
      return cached;
    }
    AccessToken fresh = fetch();
    cached = fresh;
    renewAt = fresh.expiresAt() == null ? now.plus(DEFAULT_NO_EXPIRY_TTL) : fresh.expiresAt().minus(margin);
    return fresh;
  }

  private AccessToken fetch() throws IOException {
    List<String> form = new ArrayList<>();
    form.add(param("grant_type", "client_credentials"));
    form.add(param("audience", audience));
    form.add(param("resource", audience));
    if (!config.scopes().isEmpty()) {
      form.add(param("scope", String.join(" ", config.scopes())));
    }
    // RFC 6749 §2.3.1: id and secret each form-urlencoded, then Basic.
    String basic = Base64.getEncoder().encodeToString(
        (enc(config.clientId()) + ":" + enc(config.clientSecret())).getBytes(StandardCharsets.UTF_8));
    HttpRequest req = HttpRequest.newBuilder(config.tokenUrl())
        .timeout(DEFAULT_REQUEST_TIMEOUT)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .header("Authorization", "Basic " + basic)
        .POST(HttpRequest.BodyPublishers.ofString(String.join("&", form)))
        .build();
    Instant sent = clock.instant();
    HttpResponse<String> resp;
    try {
      resp = http.send(req, HttpResponse.BodyHandlers.ofString(StandardCharsets.UTF_8));
    } catch (InterruptedException e) {
      Thread.currentThread().interrupt();
      throw new IOException("usher credentials: interrupted asking " + config.tokenUrl() + " for a token for " + audience, e);
    }
    JsonObject body;
    try {
      JsonElement el = JsonParser.parseString(resp.body());
      body = el.isJsonObject() ? el.getAsJsonObject() : new JsonObject();
    } catch (JsonParseException e) {
      body = new JsonObject();
    }
    if (resp.statusCode() != 200) {
      throw new IOException(String.format(
          "usher credentials: token endpoint %s answered %d for audience %s: %s%s",
          config.tokenUrl(), resp.statusCode(), audience,
          str(body, "error", "(no OAuth error)"),
          body.has("error_description") ? " (" + str(body, "error_description", "") + ")" : ""));
    }
    String token = str(body, "access_token", "");
    if (token.isEmpty()) {
      throw new IOException("usher credentials: token endpoint " + config.tokenUrl()
          + " answered 200 without an access_token for audience " + audience);
    }
    Instant expires = null;
    if (body.has("expires_in") && body.get("expires_in").isJsonPrimitive()) {
      try {
        long secs = body.get("expires_in").getAsLong();
        if (secs > 0) {
          expires = sent.plusSeconds(secs);
        }
      } catch (NumberFormatException e) {
        // no usable expiry: kept for DEFAULT_NO_EXPIRY_TTL
      }
    }
    return new AccessToken(token, str(body, "token_type", "Bearer"), expires);
  }

  private static String str(JsonObject o, String k, String dflt) {
    JsonElement e = o.get(k);
    return e != null && e.isJsonPrimitive() ? e.getAsString() : dflt;
  }

  private static String param(String k, String v) {
    return enc(k) + "=" + enc(v);
  }

  private static String enc(String s) {
    return URLEncoder.encode(s, StandardCharsets.UTF_8);
  }
}
