package dev.usher.grpc;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.ErrorInfo;
import dev.usher.grpc.testing.EchoGrpc;
import dev.usher.grpc.testing.EchoReply;
import dev.usher.grpc.testing.EchoRequest;
import dev.usher.grpc.testing.ProfilesGrpc;
import io.grpc.BindableService;
import io.grpc.ManagedChannel;
import io.grpc.Metadata;
import io.grpc.MethodDescriptor;
import io.grpc.Server;
import io.grpc.ServerInterceptor;
import io.grpc.ServerInterceptors;
import io.grpc.ServerServiceDefinition;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.netty.NettyChannelBuilder;
import io.grpc.netty.NettyServerBuilder;
import io.grpc.protobuf.ProtoUtils;
import io.grpc.protobuf.StatusProto;
import io.grpc.stub.ServerCalls;
import io.grpc.stub.StreamObserver;
import java.net.InetSocketAddress;
import java.time.Clock;
import java.time.Duration;
import java.time.Instant;
import java.time.ZoneId;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import usher.v1.Usher.Claims;

/** Protected test servers on 127.0.0.1 and what the tests read from a rejection. */
final class Harness {
  private Harness() {}

  static final String UNARY = "/usher.test.v1.Echo/Unary";
  static final String STREAM = "/usher.test.v1.Echo/Stream";
  static final String CHAT = "/usher.test.v1.Echo/Chat";
  static final String PROFILES_GET = "/usher.test.v1.Profiles/Get";
  static final String HEALTH_CHECK = "/grpc.health.v1.Health/Check";
  static final String HEALTH_CHECKX = "/grpc.health.v1.Health/CheckX";

  /** Counts handler starts: a rejected call must leave it at zero. */
  static final class Echo extends EchoGrpc.EchoImplBase {
    final AtomicInteger started = new AtomicInteger();
    final AtomicInteger messages = new AtomicInteger();

    @Override
    public void unary(EchoRequest req, StreamObserver<EchoReply> out) {
      started.incrementAndGet();
      out.onNext(reply(req.getText()));
      out.onCompleted();
    }

    @Override
    public void stream(EchoRequest req, StreamObserver<EchoReply> out) {
      started.incrementAndGet();
      for (int i = 0; i < Math.max(req.getCount(), 1); i++) {
        out.onNext(reply(req.getText() + " " + i));
      }
      out.onCompleted();
    }

    @Override
    public StreamObserver<EchoRequest> chat(StreamObserver<EchoReply> out) {
      started.incrementAndGet();
      return new StreamObserver<>() {
        @Override
        public void onNext(EchoRequest r) {
          messages.incrementAndGet();
          out.onNext(reply(r.getText()));
        }

        @Override
        public void onError(Throwable t) {}

        @Override
        public void onCompleted() {
          out.onCompleted();
        }
      };
    }
  }

  static final class Profiles extends ProfilesGrpc.ProfilesImplBase {
    final AtomicInteger started = new AtomicInteger();

    @Override
    public void get(EchoRequest req, StreamObserver<EchoReply> out) {
      started.incrementAndGet();
      out.onNext(reply(req.getText()));
      out.onCompleted();
    }
  }

  /** What the handler sees through UsherAuth.CLAIMS. */
  static EchoReply reply(String text) {
    Claims c = UsherAuth.CLAIMS.get();
    EchoReply.Builder b = EchoReply.newBuilder().setText(text).setHasClaims(c != null);
    if (c != null) {
      b.setSubject(c.getSubject()).addAllAudience(c.getAudienceList()).addAllScopes(c.getScopesList());
    }
    return b.build();
  }

  /**
   * A service named grpc.health.v1.Health with Check and CheckX, built by hand with the Echo
   * messages: only the full method names matter to the skip list.
   */
  static ServerServiceDefinition health(AtomicInteger started) {
    ServerServiceDefinition.Builder b = ServerServiceDefinition.builder("grpc.health.v1.Health");
    for (String m : List.of(HEALTH_CHECK, HEALTH_CHECKX)) {
      b.addMethod(healthMethod(m), ServerCalls.asyncUnaryCall((EchoRequest req, StreamObserver<EchoReply> out) -> {
        started.incrementAndGet();
        out.onNext(reply("serving"));
        out.onCompleted();
      }));
    }
    return b.build();
  }

  static MethodDescriptor<EchoRequest, EchoReply> healthMethod(String fullMethod) {
    return MethodDescriptor.<EchoRequest, EchoReply>newBuilder()
        .setType(MethodDescriptor.MethodType.UNARY)
        .setFullMethodName(fullMethod.substring(1))
        .setRequestMarshaller(ProtoUtils.marshaller(EchoRequest.getDefaultInstance()))
        .setResponseMarshaller(ProtoUtils.marshaller(EchoReply.getDefaultInstance()))
        .build();
  }

  /** A server on 127.0.0.1 with every service behind the interceptors. */
  static Server server(List<ServerInterceptor> interceptors, Object... services) throws Exception {
    NettyServerBuilder b = NettyServerBuilder.forAddress(new InetSocketAddress("127.0.0.1", 0));
    for (Object s : services) {
      ServerServiceDefinition def = s instanceof BindableService
          ? ((BindableService) s).bindService() : (ServerServiceDefinition) s;
      b.addService(ServerInterceptors.intercept(def, interceptors));
    }
    return b.build().start();
  }

  static Server server(ServerInterceptor auth, Object... services) throws Exception {
    return server(List.of(auth), services);
  }

  static ManagedChannel channel(int port) {
    return NettyChannelBuilder.forAddress("127.0.0.1", port).usePlaintext().build();
  }

  static ManagedChannel channel(String addr) {
    return NettyChannelBuilder.forTarget(addr).usePlaintext().build();
  }

  static void shutdown(Server s, ManagedChannel... chans) throws InterruptedException {
    for (ManagedChannel c : chans) {
      if (c != null) {
        c.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
      }
    }
    if (s != null) {
      s.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** Metadata with these (key, value) pairs, in order; a key may repeat. */
  static Metadata headers(String... kv) {
    Metadata md = new Metadata();
    for (int i = 0; i < kv.length; i += 2) {
      md.put(Metadata.Key.of(kv[i], Metadata.ASCII_STRING_MARSHALLER), kv[i + 1]);
    }
    return md;
  }

  static Metadata bearer(String token) {
    return headers("authorization", "Bearer " + token);
  }

  /** A rejected call as the caller sees it. */
  record Rejected(Status status, String wwwAuthenticate, ErrorInfo info, com.google.rpc.Status details) {
    Status.Code code() {
      return status.getCode();
    }
  }

  static Rejected rejected(StatusRuntimeException e) {
    Metadata trailers = e.getTrailers();
    assertNotNull("no trailers on " + e.getStatus(), trailers);
    List<String> chal = new ArrayList<>();
    Iterable<String> all = trailers.getAll(UsherAuth.WWW_AUTHENTICATE);
    if (all != null) {
      all.forEach(chal::add);
    }
    assertTrue("expected at most one www-authenticate, got " + chal, chal.size() <= 1);
    com.google.rpc.Status details = StatusProto.fromThrowable(e);
    assertNotNull("no grpc-status-details-bin on " + e.getStatus(), details);
    assertEquals("details' code", e.getStatus().getCode().value(), details.getCode());
    assertEquals("details' message", e.getStatus().getDescription(), details.getMessage());
    assertEquals("one detail", 1, details.getDetailsCount());
    Any any = details.getDetails(0);
    assertEquals("type.googleapis.com/google.rpc.ErrorInfo", any.getTypeUrl());
    ErrorInfo info;
    try {
      info = any.unpack(ErrorInfo.class);
    } catch (InvalidProtocolBufferException ex) {
      throw new AssertionError(ex);
    }
    assertEquals("usher.v1", info.getDomain());
    return new Rejected(e.getStatus(), chal.isEmpty() ? null : chal.get(0), info, details);
  }

  /** Runs call, which must fail; the rejection. */
  static Rejected expectRejected(Runnable call) {
    try {
      call.run();
    } catch (StatusRuntimeException e) {
      return rejected(e);
    }
    fail("the call went through");
    return null;
  }

  /** A clock the tests move. */
  static final class MutableClock extends Clock {
    private volatile Instant now;

    MutableClock(Instant start) {
      this.now = start;
    }

    void advance(Duration d) {
      now = now.plus(d);
    }

    @Override
    public Instant instant() {
      return now;
    }

    @Override
    public ZoneId getZone() {
      return ZoneOffset.UTC;
    }

    @Override
    public Clock withZone(ZoneId zone) {
      return this;
    }
  }
}
