package dev.usher.grpc;

import io.grpc.Status;
import java.util.Collections;
import java.util.EnumMap;
import java.util.Map;
import usher.v1.Usher.Reason;

/**
 * What each {@code usher.v1.Reason} means to the caller of a protected API: Java's copy of the
 * Go table in internal/reasons, whose JSON form is examples/reasons.json. ReasonsTableTest fails
 * when the two differ.
 *
 * <p>A reason this table does not know (sent by a newer usher), UNSPECIFIED, and an answer that
 * contradicts itself are answered like an unavailable usher: fail closed.
 */
public final class Reasons {
  /** RFC 6750 §3.1 error of a Bearer challenge. */
  public static final String INVALID_TOKEN = "invalid_token";
  /** RFC 6750 §3.1 error of a Bearer challenge. */
  public static final String INSUFFICIENT_SCOPE = "insufficient_scope";
  /** RFC 9449 §7.1 error of a DPoP challenge. */
  public static final String INVALID_DPOP_PROOF = "invalid_dpop_proof";
  /** The scheme of RFC 9449's challenge. */
  public static final String DPOP = "DPoP";
  /** The algs of a DPoP challenge: the proof algorithms usher accepts. */
  public static final String DPOP_ALGS = "ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512";

  /**
   * A reason's meaning.
   *
   * @param code the gRPC status of the protected call (OK: the handler runs)
   * @param httpStatus the HTTP status of a protected request
   * @param bearerError the RFC 6750 / 9449 error of the challenge; "" when the token is not at fault
   * @param cacheable the verdict holds for the same token, audience and scopes until the token expires
   * @param retryable not the token's fault: the same call may succeed later
   * @param challenge "DPoP" when the answer must be a DPoP challenge whatever the scheme; ""
   *     for the request's own scheme
   */
  public record Rule(
      Status.Code code,
      int httpStatus,
      String bearerError,
      boolean cacheable,
      boolean retryable,
      String challenge) {}

  static final Rule VALID = new Rule(Status.Code.OK, 200, "", true, false, "");
  static final Rule BAD_TOKEN = new Rule(Status.Code.UNAUTHENTICATED, 401, INVALID_TOKEN, true, false, "");
  static final Rule CHANGEABLE = new Rule(Status.Code.UNAUTHENTICATED, 401, INVALID_TOKEN, false, false, "");
  static final Rule NO_SCOPE = new Rule(Status.Code.PERMISSION_DENIED, 403, INSUFFICIENT_SCOPE, true, false, "");
  /** Also the rule of every reason the table does not know. */
  static final Rule UNAVAILABLE = new Rule(Status.Code.UNAVAILABLE, 503, "", false, true, "");
  static final Rule NO_PROOF = new Rule(Status.Code.UNAUTHENTICATED, 401, INVALID_TOKEN, false, false, DPOP);
  static final Rule BAD_PROOF = new Rule(Status.Code.UNAUTHENTICATED, 401, INVALID_DPOP_PROOF, false, false, DPOP);

  private static final Map<Reason, Rule> TABLE;

  static {
    Map<Reason, Rule> t = new EnumMap<>(Reason.class);
    t.put(Reason.REASON_VALID, VALID);
    t.put(Reason.REASON_MALFORMED, BAD_TOKEN);
    t.put(Reason.REASON_UNSUPPORTED_ALGORITHM, BAD_TOKEN);
    t.put(Reason.REASON_UNTRUSTED_ISSUER, CHANGEABLE); // trusted after a config change
    t.put(Reason.REASON_UNKNOWN_KEY, CHANGEABLE); // known after a key rotation
    t.put(Reason.REASON_INVALID_SIGNATURE, BAD_TOKEN);
    t.put(Reason.REASON_WRONG_TOKEN_TYPE, BAD_TOKEN);
    t.put(Reason.REASON_EXPIRED, BAD_TOKEN);
    t.put(Reason.REASON_NOT_YET_VALID, CHANGEABLE); // valid once its time comes
    t.put(Reason.REASON_MISSING_CLAIM, BAD_TOKEN);
    t.put(Reason.REASON_AUDIENCE_MISMATCH, BAD_TOKEN);
    t.put(Reason.REASON_INSUFFICIENT_SCOPE, NO_SCOPE);
    t.put(Reason.REASON_KEYS_UNAVAILABLE, UNAVAILABLE);
    t.put(Reason.REASON_INACTIVE, BAD_TOKEN); // revoked, expired or never issued: it stays so
    t.put(Reason.REASON_ISSUER_UNAVAILABLE, UNAVAILABLE);
    t.put(Reason.REASON_PROOF_MISSING, NO_PROOF); // a proof is made for one request
    t.put(Reason.REASON_INVALID_PROOF, BAD_PROOF);
    TABLE = Collections.unmodifiableMap(t);
  }

  private Reasons() {}

  /** The rule of a reason number, or null when this table does not know it. */
  public static Rule of(int reasonNumber) {
    Reason r = Reason.forNumber(reasonNumber);
    return r == null ? null : TABLE.get(r);
  }

  /** Every reason this table knows, with its rule. */
  public static Map<Reason, Rule> table() {
    return TABLE;
  }

  /**
   * The rule for a rejection: the reason's own when it is a reason to reject, UNAVAILABLE (fail
   * closed) for a reason this table does not know, for UNSPECIFIED and for VALID.
   */
  public static Rule deny(int reasonNumber) {
    Rule rule = of(reasonNumber);
    return rule != null && rule.code() != Status.Code.OK ? rule : UNAVAILABLE;
  }

  /** The reason's name without REASON_ ("AUDIENCE_MISMATCH"), or REASON_n for an unknown one. */
  public static String name(int reasonNumber) {
    Reason r = Reason.forNumber(reasonNumber);
    if (r == null || r == Reason.UNRECOGNIZED) {
      return "REASON_" + reasonNumber;
    }
    return r.name().substring("REASON_".length());
  }
}
