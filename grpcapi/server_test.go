package grpcapi_test

import (
	"context"
	"crypto/elliptic"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// serve runs v behind a real gRPC server on loopback and returns a client connection.
func serve(t *testing.T, ctx context.Context, v *service.Validator) *grpc.ClientConn {
	t.Helper()
	conn, _ := serveWith(t, ctx, v, slog.New(slog.DiscardHandler), nil)
	return conn
}

// serveWith is serve with a logger, server options and Register's options;
// it returns the Server too.
func serveWith(t *testing.T, ctx context.Context, v *service.Validator, log *slog.Logger, sopts []grpc.ServerOption, opts ...grpcapi.Option) (*grpc.ClientConn, *grpcapi.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(sopts...)
	srv := grpcapi.Register(ctx, gs, v, log, opts...)
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn, srv
}

func TestServer_EndToEnd(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	k2 := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k, k2)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	conn := serve(t, ctx, v)
	health := healthpb.NewHealthClient(conn)
	testkit.Eventually(ctx, t, "health SERVING", func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "usher.v1.TokenService"})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
	if resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("overall health %v, %v", resp, err)
	}

	c := usherv1.NewTokenServiceClient(conn)
	tok := k.Token(t, testkit.Claims(ti.URL(), "extra", map[string]any{"n": 1.5, "list": []any{"a", true}}))

	t.Run("ValidateToken valid", func(t *testing.T) {
		resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: "Bearer " + tok, ExpectedAudience: "api/users", RequiredScopes: []string{"users.read"}})
		if err != nil {
			t.Fatal(err)
		}
		if !resp.GetValid() || resp.GetReason() != usherv1.Reason_REASON_VALID || resp.GetHint() != "" || len(resp.GetViolations()) != 0 {
			t.Fatalf("response %v", resp)
		}
		cl := resp.GetClaims()
		if cl.GetIssuer() != ti.URL() || cl.GetSubject() != "user-42" || !slices.Equal(cl.GetAudience(), []string{"api/users"}) ||
			!slices.Equal(cl.GetScopes(), []string{"users.read", "users.write"}) || cl.GetClientId() != "frontend" || cl.GetKeyId() != "ec-1" ||
			cl.GetAlgorithm() != "ES256" || cl.GetTokenType() != "JWT" || cl.GetJwtId() != "jti-1" ||
			!cl.GetExpiresAt().AsTime().Equal(testkit.Now.Add(time.Hour)) || !cl.GetIssuedAt().AsTime().Equal(testkit.Now.Add(-time.Minute)) || cl.GetNotBefore() != nil {
			t.Fatalf("claims %v", cl)
		}
		raw := cl.GetRaw().AsMap()
		if raw["sub"] != "user-42" || raw["extra"].(map[string]any)["n"] != 1.5 {
			t.Fatalf("raw claims %v", raw)
		}
	})

	t.Run("ValidateToken audience mismatch", func(t *testing.T) {
		resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: k.Token(t, testkit.Claims(ti.URL(), "exp", testkit.Now.Add(-time.Hour).Unix())), ExpectedAudience: "api/invoices"})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetValid() || resp.GetReason() != usherv1.Reason_REASON_EXPIRED || resp.GetClaims() == nil {
			t.Fatalf("response %v", resp)
		}
		vs := resp.GetViolations()
		if len(vs) != 2 || vs[0].GetReason() != usherv1.Reason_REASON_EXPIRED || vs[1].GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH {
			t.Fatalf("violations %v", vs)
		}
		m := vs[1].GetMismatch()
		if vs[1].GetMessage() != "token audience [api/users] does not include api/invoices" || m.GetClaim() != "aud" ||
			!slices.Equal(m.GetExpected(), []string{"api/invoices"}) || !slices.Equal(m.GetActual(), []string{"api/users"}) {
			t.Fatalf("audience violation %v", vs[1])
		}

		resp, err = c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/invoices"})
		if err != nil {
			t.Fatal(err)
		}
		m = resp.GetMismatch()
		if resp.GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH || m.GetClaim() != "aud" || !slices.Equal(m.GetExpected(), []string{"api/invoices"}) ||
			!slices.Equal(m.GetActual(), []string{"api/users"}) || !strings.Contains(resp.GetHint(), "Users API") {
			t.Fatalf("response %v", resp)
		}
	})

	t.Run("ValidateToken bad tokens are verdicts", func(t *testing.T) {
		for tok, want := range map[string]usherv1.Reason{
			"":          usherv1.Reason_REASON_MALFORMED,
			"a.b.c.d.e": usherv1.Reason_REASON_MALFORMED,
			k.Like(t, "ec-1").Token(t, testkit.Claims(ti.URL())): usherv1.Reason_REASON_INVALID_SIGNATURE,
		} {
			resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"})
			if err != nil || resp.GetReason() != want || resp.GetValid() || resp.GetClaims() != nil || resp.GetHint() == "" {
				t.Fatalf("token %.20q: %v, %v", tok, resp, err)
			}
		}
	})

	t.Run("ValidateToken empty audience", func(t *testing.T) {
		_, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "expected_audience") {
			t.Fatalf("error %v, want InvalidArgument naming expected_audience", err)
		}
	})

	t.Run("InspectToken", func(t *testing.T) {
		resp, err := c.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: tok})
		if err != nil {
			t.Fatal(err)
		}
		auds := resp.GetAudiences()
		if resp.GetSignature() != usherv1.Reason_REASON_VALID || len(auds) != 1 || auds[0].GetAudience() != "api/users" || auds[0].GetName() != "Users API" ||
			resp.GetHeader().AsMap()["kid"] != "ec-1" || resp.GetClaims().GetSubject() != "user-42" {
			t.Fatalf("response %v", resp)
		}
		resp, err = c.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: k.Like(t, "ec-1").Token(t, testkit.Claims(ti.URL()))})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetSignature() != usherv1.Reason_REASON_INVALID_SIGNATURE || len(resp.GetAudiences()) != 0 || resp.GetClaims().GetSubject() != "user-42" {
			t.Fatalf("forged: %v", resp)
		}
		resp, err = c.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: "x"})
		if err != nil || resp.GetSignature() != usherv1.Reason_REASON_MALFORMED || resp.GetHeader() != nil || resp.GetClaims() != nil {
			t.Fatalf("malformed: %v, %v", resp, err)
		}
	})

	t.Run("ListIssuers", func(t *testing.T) {
		resp, err := c.ListIssuers(ctx, &usherv1.ListIssuersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetIssuers()) != 1 {
			t.Fatalf("response %v", resp)
		}
		st := resp.GetIssuers()[0]
		if st.GetIssuer() != ti.URL() || st.GetJwksUri() != ti.JWKSURI() || !slices.Equal(st.GetKeyIds(), []string{"ec-1", "ed-1"}) ||
			!slices.Equal(st.GetAlgorithms(), service.DefaultAlgorithms) || st.GetLastRefresh() == nil || st.GetLastError() != "" || st.GetNextRefresh() == nil {
			t.Fatalf("issuer status %v", st)
		}
		if !st.GetNextRefresh().AsTime().After(st.GetLastRefresh().AsTime()) {
			t.Fatalf("next refresh %v not after last %v", st.GetNextRefresh().AsTime(), st.GetLastRefresh().AsTime())
		}
	})
}

// Health stays NOT_SERVING until every issuer's keys were tried once.
func TestServer_HealthWaitsForKeys(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	release := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
			w.Write(testkit.JWKS(k))
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(slow.Close)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{{Issuer: slow.URL, JWKSURI: slow.URL + "/jwks.json"}})
	conn := serve(t, ctx, v)
	health := healthpb.NewHealthClient(conn)
	var resp *healthpb.HealthCheckResponse
	testkit.Eventually(ctx, t, "a health answer", func() bool {
		var err error
		resp, err = health.Check(ctx, &healthpb.HealthCheckRequest{Service: "usher.v1.TokenService"})
		return err == nil
	})
	if resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("health %v before the first key fetch", resp.GetStatus())
	}
	close(release)
	testkit.Eventually(ctx, t, "health SERVING", func() bool {
		resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "usher.v1.TokenService"})
		return err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING
	})
}
