package grpcapi_test

import (
	"context"
	"crypto/elliptic"
	"log/slog"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// rawCodec encodes requests as protobuf and keeps a response's bytes as
// they came, into a *[]byte.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return encoding.GetCodecV2("proto").Marshal(v)
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}
func (rawCodec) Name() string { return "proto" }

// fieldOrder lists the field numbers of an encoded message, in order.
func fieldOrder(t *testing.T, b []byte) []protowire.Number {
	t.Helper()
	var out []protowire.Number
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			t.Fatalf("bad tag: %v", protowire.ParseError(n))
		}
		m := protowire.ConsumeFieldValue(num, typ, b[n:])
		if m < 0 {
			t.Fatalf("bad field %d: %v", num, protowire.ParseError(m))
		}
		out = append(out, num)
		b = b[n+m:]
	}
	return out
}

// What a client reads off the wire decodes, for every kind of verdict and
// for a repeated token (its encoded claims reused from the cache), to a
// response proto.Equal to the one ValidateToken returns in process
// (encoded field by field by protobuf). A verdict with violations shows
// the claims field last: the server sent the claims' kept encoding.
func TestServer_WireEqualsResponse(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	conn, srv := serveWith(t, ctx, v, slog.New(slog.DiscardHandler), []grpc.ServerOption{grpc.ChainUnaryInterceptor(grpcapi.LimitInFlight(10))})
	dk := testkit.ECKey(t, "dpop", elliptic.P256())
	rich := k.Token(t, testkit.Claims(ti.URL(), "extra", map[string]any{"n": 1.5, "list": []any{"a", true, nil}, "deep": map[string]any{"x": "é"}}))
	expired := k.Token(t, testkit.Claims(ti.URL(), "exp", testkit.Now.Add(-time.Hour).Unix(), "nbf", testkit.Now.Add(-2*time.Hour).Unix()))
	bound := k.Token(t, testkit.Claims(ti.URL(), "cnf", dk.Cnf()))
	for _, c := range []struct {
		name           string
		req            *usherv1.ValidateTokenRequest
		claimsLast     bool // violations precede the claims on the wire
		want           usherv1.Reason
		wantClaimsNone bool
	}{
		{"valid", &usherv1.ValidateTokenRequest{Token: rich, ExpectedAudience: "api/users", RequiredScopes: []string{"users.read"}}, false, usherv1.Reason_REASON_VALID, false},
		{"expired and audience mismatch", &usherv1.ValidateTokenRequest{Token: expired, ExpectedAudience: "api/invoices"}, true, usherv1.Reason_REASON_EXPIRED, false},
		{"insufficient scope", &usherv1.ValidateTokenRequest{Token: rich, ExpectedAudience: "api/users", RequiredScopes: []string{"users.delete"}}, true, usherv1.Reason_REASON_INSUFFICIENT_SCOPE, false},
		{"proof missing", &usherv1.ValidateTokenRequest{Token: bound, ExpectedAudience: "api/users"}, true, usherv1.Reason_REASON_PROOF_MISSING, false},
		{"malformed", &usherv1.ValidateTokenRequest{Token: "not.a.jwt", ExpectedAudience: "api/users"}, false, usherv1.Reason_REASON_MALFORMED, true},
		{"untrusted issuer", &usherv1.ValidateTokenRequest{Token: k.Token(t, testkit.Claims("https://evil.example")), ExpectedAudience: "api/users"}, false, usherv1.Reason_REASON_UNTRUSTED_ISSUER, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			for round := range 3 { // a miss, then hits (the second moves the token into the cache's main part)
				var raw []byte
				if err := conn.Invoke(ctx, usherv1.TokenService_ValidateToken_FullMethodName, c.req, &raw, grpc.ForceCodecV2(rawCodec{})); err != nil {
					t.Fatal(err)
				}
				got := new(usherv1.ValidateTokenResponse)
				if err := proto.Unmarshal(raw, got); err != nil {
					t.Fatalf("round %d: the wire does not decode: %v", round, err)
				}
				want, err := srv.ValidateToken(ctx, c.req)
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(got, want) {
					t.Fatalf("round %d: the wire decodes to\n%v\nValidateToken returns\n%v", round, got, want)
				}
				if got.GetReason() != c.want || (got.GetClaims() == nil) != c.wantClaimsNone || len(got.ProtoReflect().GetUnknown()) != 0 {
					t.Fatalf("round %d: %v", round, got)
				}
				if order := fieldOrder(t, raw); c.claimsLast && order[len(order)-1] != 6 {
					t.Errorf("round %d: fields %v: the claims were encoded in place, not spliced", round, order)
				}
			}
		})
	}
}

// An interceptor that answers with a response of its own has it sent as
// it is: the kept claims go only with the response ValidateToken made.
func TestServer_WireKeepsInterceptorResponse(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	other := &usherv1.ValidateTokenResponse{Reason: usherv1.Reason_REASON_INVALID_SIGNATURE, Message: "replaced", Claims: &usherv1.Claims{Subject: "someone else"}}
	replace := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if _, err := h(ctx, req); err != nil {
			return nil, err
		}
		return other, nil
	}
	conn, _ := serveWith(t, ctx, v, slog.New(slog.DiscardHandler), []grpc.ServerOption{grpc.ChainUnaryInterceptor(replace)})
	c := usherv1.NewTokenServiceClient(conn)
	tok := k.Token(t, testkit.Claims(ti.URL()))
	for range 2 {
		got, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"})
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, other) {
			t.Fatalf("got %v, want the interceptor's %v", got, other)
		}
	}
}

// The splice copies every field of ValidateTokenResponse but claims, by
// name: a field added to the message must be added to it (grpcapi's
// spliced), and this list.
func TestServer_WireKnowsEveryResponseField(t *testing.T) {
	var names []string
	fields := (&usherv1.ValidateTokenResponse{}).ProtoReflect().Descriptor().Fields()
	for i := range fields.Len() {
		names = append(names, string(fields.Get(i).Name()))
	}
	want := []string{"valid", "reason", "message", "hint", "mismatch", "claims", "violations"}
	if !slices.Equal(names, want) {
		t.Errorf("ValidateTokenResponse has fields %v; grpcapi's spliced copies %v: update it", names, want)
	}
	if fd := fields.ByName("claims"); fd.Number() != 6 || fd.Kind() != protoreflect.MessageKind {
		t.Errorf("claims is field %d (%v): grpcapi's claimsFieldNumber says 6", fd.Number(), fd.Kind())
	}
}
