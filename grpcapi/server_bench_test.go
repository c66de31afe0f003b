package grpcapi_test

import (
	"context"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/metrics"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// BenchmarkServerValidateToken is the gRPC adapter for a repeated token:
// the engine's cache hit plus the conversion to the response and its
// encoding, which a server pays on every call.
func BenchmarkServerValidateToken(b *testing.B) {
	k := testkit.RSAKey(b, "rsa-1")
	ti := testkit.NewIssuer(b, k)
	ctx := testkit.Context(b)
	v := testkit.NewValidator(b, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	if err := v.WaitTried(ctx); err != nil {
		b.Fatal(err)
	}
	srv := grpcapi.NewServer(v, slog.New(slog.DiscardHandler))
	req := &usherv1.ValidateTokenRequest{Token: k.Token(b, testkit.Claims(ti.URL())), ExpectedAudience: "api/users"}
	b.ReportAllocs()
	for b.Loop() {
		resp, err := srv.ValidateToken(context.Background(), req)
		if err != nil || !resp.GetValid() {
			b.Fatal(err)
		}
		if _, err := proto.Marshal(resp); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerWire is what a gRPC server runs for ValidateToken past
// the transport: the request decoded, the registered handler and its
// interceptors, and the response encoded by grpc's proto codec. "bare" has
// the in-flight limit alone and discards the log; "wired" is usher serve's
// wiring with metrics_listen: the Prometheus observer on the engine,
// grpc's server metrics then the in-flight limit as interceptors, and a
// text log at info. "hit" is a repeated valid token, "hit-mismatch" the
// same token for another API (a rejection: a mismatch, a hint, violations
// and, at info, a log line).
func BenchmarkServerWire(b *testing.B) {
	k := testkit.RSAKey(b, "rsa-1")
	ti := testkit.NewIssuer(b, k)
	ctx := testkit.Context(b)
	handler := benchHandler(b)
	codec := encoding.GetCodecV2("proto")
	tok := k.Token(b, testkit.Claims(ti.URL()))
	for _, wired := range []bool{false, true} {
		srv, ic := wireServer(b, ctx, ti, wired)
		for _, c := range []struct{ name, aud string }{{"hit", "api/users"}, {"hit-mismatch", "api/invoices"}} {
			req, err := proto.Marshal(&usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: c.aud})
			if err != nil {
				b.Fatal(err)
			}
			dec := func(m any) error { return proto.Unmarshal(req, m.(proto.Message)) }
			name := map[bool]string{false: "bare/", true: "wired/"}[wired] + c.name
			b.Run(name, func(b *testing.B) {
				b.ReportAllocs()
				cpu := processCPU(b)
				for b.Loop() {
					reply, err := handler(srv, ctx, dec, ic)
					if err != nil {
						b.Fatal(err)
					}
					data, err := codec.Marshal(reply)
					if err != nil {
						b.Fatal(err)
					}
					data.Free()
				}
				b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// wireServer is a Server over ti's keys and its interceptors: the
// in-flight limit, and when wired as usher serve wires them with metrics:
// the engine's Prometheus observer, grpc's server metrics before the limit,
// and a text log at info (to io.Discard).
func wireServer(b *testing.B, ctx context.Context, ti *testkit.Issuer, wired bool) (*grpcapi.Server, grpc.UnaryServerInterceptor) {
	var opts []service.Option
	log := slog.New(slog.DiscardHandler)
	limit := grpcapi.LimitInFlight(1000)
	ic := limit
	if wired {
		reg := prometheus.NewRegistry()
		opts = append(opts, service.WithObserver(metrics.New(reg)))
		log = slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelInfo}))
		outer := grpcprom.NewServerMetrics().UnaryServerInterceptor()
		ic = func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			return outer(ctx, req, info, func(ctx context.Context, req any) (any, error) { return limit(ctx, req, info, h) })
		}
	}
	v := testkit.NewValidator(b, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()}, opts...)
	if err := v.WaitTried(ctx); err != nil {
		b.Fatal(err)
	}
	return grpcapi.NewServer(v, log), ic
}

// benchHandler is the ValidateToken handler Register registers.
func benchHandler(b *testing.B) grpc.MethodHandler {
	for _, m := range grpcapi.TokenServiceDesc().Methods {
		if m.MethodName == "ValidateToken" {
			return m.Handler
		}
	}
	b.Fatal("no ValidateToken handler")
	return nil
}

// processCPU is the CPU time the process has used, user and system, its
// garbage collector's workers included: cpu-ns/op is steadier than the
// wall clock's ns/op on a machine others share.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
