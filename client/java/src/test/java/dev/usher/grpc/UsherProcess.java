package dev.usher.grpc;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A real usher process for the tests ({@code usher dev} or {@code usher serve}), and the usher
 * CLI (mint, proof). The binary is $USHER_BIN (system property usher.bin), or built once with
 * {@code go build} from the repository.
 */
final class UsherProcess implements AutoCloseable {
  static final Pattern DEV_ADDR = Pattern.compile("^  gRPC\\s+(\\S+)");
  static final Pattern DEV_ISSUER = Pattern.compile("^  issuer\\s+(\\S+)");
  static final Pattern SERVE_ADDR = Pattern.compile("msg=\"usher listening\" addr=(\\S+)");
  static final long START_TIMEOUT_S = 20;
  static final long STOP_TIMEOUT_S = 10;
  static final long CMD_TIMEOUT_S = 15;

  private static String bin;

  private final List<String> args;
  private final Pattern pattern;
  private final List<String> lines = Collections.synchronizedList(new ArrayList<>());
  private final BlockingQueue<String> found = new LinkedBlockingQueue<>();
  private final List<Thread> readers = new ArrayList<>();
  private Process proc;
  private volatile String issuer;
  String addr;

  private UsherProcess(List<String> args, Pattern pattern) {
    this.args = args;
    this.pattern = pattern;
  }

  /** {@code usher dev --listen 127.0.0.1:0}, started and ready (a fresh token validates). */
  static UsherProcess dev() throws Exception {
    UsherProcess p = new UsherProcess(List.of("dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"), DEV_ADDR);
    p.start();
    return p;
  }

  /** {@code usher serve --config FILE}, started (its gRPC address known). */
  static UsherProcess serve(Path config) throws Exception {
    UsherProcess p = new UsherProcess(List.of("serve", "--config", config.toString()), SERVE_ADDR);
    p.start();
    return p;
  }

  static synchronized String bin() throws Exception {
    if (bin != null) {
      return bin;
    }
    String b = System.getProperty("usher.bin", "");
    if (b.isEmpty() || b.startsWith("${")) {
      b = System.getenv().getOrDefault("USHER_BIN", "");
    }
    if (b.isEmpty()) {
      Path dir = Files.createTempDirectory("usher-java-bin");
      b = dir.resolve("usher").toString();
      File repo = new File(System.getProperty("usher.repo", "../.."));
      Process go = new ProcessBuilder("go", "build", "-o", b, "./cmd/usher")
          .directory(repo).inheritIO().start();
      if (!go.waitFor(600, TimeUnit.SECONDS) || go.exitValue() != 0) {
        go.destroyForcibly();
        throw new AssertionError("go build ./cmd/usher failed in " + repo.getAbsolutePath() + ": set USHER_BIN to a built usher");
      }
    }
    if (!new File(b).canExecute()) {
      throw new AssertionError("USHER_BIN=" + b + " is not an executable file");
    }
    bin = b;
    return bin;
  }

  private void start() throws Exception {
    List<String> cmd = new ArrayList<>();
    cmd.add(bin());
    cmd.addAll(args);
    proc = new ProcessBuilder(cmd).redirectInput(ProcessBuilder.Redirect.from(new File("/dev/null"))).start();
    // Both streams are drained to the end, so usher never blocks on a full pipe.
    readers.add(reader(proc.getInputStream()));
    readers.add(reader(proc.getErrorStream()));
    String a = found.poll(START_TIMEOUT_S, TimeUnit.SECONDS);
    if (a == null || a.isEmpty()) {
      String why = a == null ? "printed no gRPC address within " + START_TIMEOUT_S + "s" : "exited before serving";
      close();
      throw new AssertionError("usher " + String.join(" ", args) + " " + why + ":\n" + String.join("\n", lines));
    }
    addr = a;
  }

  private Thread reader(InputStream in) {
    Thread t = new Thread(() -> {
      try (BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8))) {
        String line;
        while ((line = r.readLine()) != null) {
          lines.add(line);
          Matcher m = pattern.matcher(line);
          if (m.find()) {
            found.add(m.group(1));
          }
          Matcher i = DEV_ISSUER.matcher(line);
          if (i.find()) {
            issuer = i.group(1);
          }
        }
      } catch (IOException e) {
        // the process is gone
      }
      found.add("");
    }, "usher-output");
    t.setDaemon(true);
    t.start();
    return t;
  }

  /** The dev issuer's URL (usher dev only). */
  String issuer() {
    if (issuer == null) {
      throw new AssertionError("usher dev printed no issuer URL:\n" + String.join("\n", lines));
    }
    return issuer;
  }

  boolean alive() {
    return proc != null && proc.isAlive();
  }

  @Override
  public void close() throws InterruptedException {
    if (proc == null) {
      return;
    }
    if (proc.isAlive()) {
      proc.destroy(); // SIGTERM
      if (!proc.waitFor(STOP_TIMEOUT_S, TimeUnit.SECONDS)) {
        proc.destroyForcibly();
        proc.waitFor(STOP_TIMEOUT_S, TimeUnit.SECONDS);
      }
    }
    for (Thread t : readers) {
      t.join(TimeUnit.SECONDS.toMillis(STOP_TIMEOUT_S));
    }
  }

  /** Runs the usher CLI; its stdout, trimmed. */
  static String cli(String... a) throws Exception {
    List<String> cmd = new ArrayList<>();
    cmd.add(bin());
    Collections.addAll(cmd, a);
    Path out = Files.createTempFile("usher-cli", ".out");
    Path err = Files.createTempFile("usher-cli", ".err");
    try {
      Process p = new ProcessBuilder(cmd).redirectOutput(out.toFile()).redirectError(err.toFile()).start();
      if (!p.waitFor(CMD_TIMEOUT_S, TimeUnit.SECONDS)) {
        p.destroyForcibly();
        throw new AssertionError("usher " + a[0] + " did not finish within " + CMD_TIMEOUT_S + "s");
      }
      if (p.exitValue() != 0) {
        throw new AssertionError("usher " + a[0] + " failed (exit " + p.exitValue() + "): " + Files.readString(err));
      }
      return Files.readString(out).strip();
    } finally {
      Files.deleteIfExists(out);
      Files.deleteIfExists(err);
    }
  }

  /** {@code usher mint}: a token from this dev usher's issuer. */
  String mint(String audience, String... scopes) throws Exception {
    return mintWith(audience, null, null, scopes);
  }

  String mintWith(String audience, String ttl, Path dpopKey, String... scopes) throws Exception {
    List<String> a = new ArrayList<>(List.of("mint", "--addr", addr, "--audience", audience));
    for (String s : scopes) {
      a.add("--scope");
      a.add(s);
    }
    if (ttl != null) {
      a.add("--ttl");
      a.add(ttl);
    }
    if (dpopKey != null) {
      a.add("--dpop-key");
      a.add(dpopKey.toString());
    }
    String tok = cli(a.toArray(new String[0]));
    if (tok.chars().filter(c -> c == '.').count() != 2) {
      throw new AssertionError("usher mint printed no compact JWS");
    }
    return tok;
  }

  /** {@code usher proof}: a DPoP proof for method and uri, bound to token. */
  static String proof(Path key, String method, String uri, String token) throws Exception {
    return cli("proof", "--key", key.toString(), "--method", method, "--uri", uri, "--token", token);
  }
}
