package grpcapi_test

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/grpcapi"
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
