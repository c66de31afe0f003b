package dev.usher.grpc;

import java.time.Instant;

/**
 * An access token from an issuer: its value (never logged), its token_type ("Bearer", or "DPoP"
 * for a DPoP-bound one) and when it expires (null when the issuer did not say).
 */
public record AccessToken(String value, String type, Instant expiresAt) {
  @Override
  public String toString() {
    return "AccessToken[type=" + type + ", expiresAt=" + expiresAt + ", value=<redacted>]";
  }
}
