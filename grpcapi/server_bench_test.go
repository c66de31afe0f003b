package grpcapi_test

import (
	"context"
	"log/slog"
	"testing"

	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// BenchmarkServerValidateToken is the gRPC adapter for a repeated token:
// the engine's cache hit plus the conversion to the response and its
// encoding, which a server pays on every call.
func BenchmarkServerValidateToken(b *testing.B) {
	k := newRSAKey(b, "rsa-1")
	ti := newTestIssuer(b, k)
	ctx := testContext(b)
	v := newValidator(b, ctx, ti.config(0))
	waitTried(ctx, b, v)
	srv := service.NewServer(v, slog.New(slog.DiscardHandler))
	req := &usherv1.ValidateTokenRequest{Token: k.token(b, claims(ti.URL())), ExpectedAudience: "api/users"}
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
