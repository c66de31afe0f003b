package dev.usher.grpc;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;

import com.google.gson.JsonObject;
import com.google.gson.JsonParser;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashSet;
import java.util.Set;
import org.junit.Test;
import usher.v1.Usher.Reason;

/**
 * Java's reason table is examples/reasons.json (the JSON form of internal/reasons, the single
 * source): fails when a row, the unknown rule or the DPoP algorithms differ.
 */
public class ReasonsTableTest {
  static JsonObject table() throws Exception {
    Path p = Path.of(System.getProperty("usher.reasons.json", "../../examples/reasons.json"));
    assertTrue("reasons.json not found at " + p.toAbsolutePath(), Files.isRegularFile(p));
    return JsonParser.parseString(Files.readString(p)).getAsJsonObject();
  }

  static void assertRule(String what, JsonObject row, Reasons.Rule rule) {
    assertNotNull(what + ": not in the Java table", rule);
    assertEquals(what + " grpc_code", row.get("grpc_code").getAsString(), rule.code().name());
    assertEquals(what + " http_status", row.get("http_status").getAsInt(), rule.httpStatus());
    assertEquals(what + " bearer_error", row.get("bearer_error").getAsString(), rule.bearerError());
    assertEquals(what + " cacheable", row.get("cacheable").getAsBoolean(), rule.cacheable());
    assertEquals(what + " retryable", row.get("retryable").getAsBoolean(), rule.retryable());
    assertEquals(what + " challenge", row.get("challenge").getAsString(), rule.challenge());
  }

  @Test
  public void everyRowOfReasonsJsonIsTheJavaTable() throws Exception {
    JsonObject t = table();
    Set<String> names = new HashSet<>();
    for (var el : t.getAsJsonArray("reasons")) {
      JsonObject row = el.getAsJsonObject();
      String name = row.get("reason").getAsString();
      assertTrue("twice in reasons.json: " + name, names.add(name));
      Reason r;
      try {
        r = Reason.valueOf(name);
      } catch (IllegalArgumentException e) {
        throw new AssertionError("reasons.json names " + name + ", which usher.proto does not");
      }
      assertRule(name, row, Reasons.of(r.getNumber()));
    }
    assertEquals("rows in reasons.json vs the Java table", names.size(), Reasons.table().size());
    for (Reason r : Reasons.table().keySet()) {
      assertTrue("the Java table has " + r + ", reasons.json does not", names.contains(r.name()));
    }
  }

  @Test
  public void unknownReasonsFailClosedAsReasonsJsonSays() throws Exception {
    JsonObject unknown = table().getAsJsonObject("unknown");
    assertRule("unknown", unknown, Reasons.deny(999));
    assertRule("UNSPECIFIED", unknown, Reasons.deny(Reason.REASON_UNSPECIFIED_VALUE));
    assertRule("VALID as a rejection", unknown, Reasons.deny(Reason.REASON_VALID_VALUE));
    assertEquals("REASON_999", Reasons.name(999));
    assertEquals("AUDIENCE_MISMATCH", Reasons.name(Reason.REASON_AUDIENCE_MISMATCH_VALUE));
  }

  @Test
  public void everyReasonOfTheProtoIsInTheTableOrFailsClosed() {
    for (Reason r : Reason.values()) {
      if (r == Reason.UNRECOGNIZED || r == Reason.REASON_UNSPECIFIED) {
        continue;
      }
      assertNotNull(r + " (in usher.proto) has no rule: add it to internal/reasons and to Reasons.java",
          Reasons.of(r.getNumber()));
    }
  }

  @Test
  public void dpopAlgorithmsAreReasonsJsons() throws Exception {
    assertEquals(table().get("dpop_algs").getAsString(), Reasons.DPOP_ALGS);
  }
}
