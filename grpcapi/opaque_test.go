package grpcapi_test

import (
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// TestHealth_OpaqueOnly: a deployment whose only issuer answers opaque
// tokens through introspection is ready once the endpoint is known (here:
// once its discovery document is right), and its issuer SERVING; an issuer
// of both kinds whose key set is down is NOT_SERVING itself, while the
// replica stays ready for the opaque tokens it can answer.
func TestHealth_OpaqueOnly(t *testing.T) {
	ctx := testkit.Context(t)
	clock := testkit.NewClock()
	s := testkit.NewIntrospectionServer(t)
	s.SetDiscovery(map[string]any{"issuer": s.URL() + "/", "introspection_endpoint": s.Endpoint()}) // refused: another issuer
	cfg := s.Config(t)
	cfg.Discovery, cfg.Introspection.Endpoint = true, ""
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{cfg})
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	ticks := make(chan time.Time)
	conn, srv := serveWith(t, ctx, v, nil, nil, grpcapi.WithTicks(ticks))
	hc := healthpb.NewHealthClient(conn)
	tick := func() {
		select {
		case ticks <- clock.Now():
		case <-ctx.Done():
		}
	}
	name := grpcapi.IssuerHealthName(s.URL())
	testkit.Eventually(ctx, t, "alive, not ready: the endpoint is not known", func() bool {
		tick()
		return healthIs(ctx, hc, statuses{"": serving, grpcapi.ServiceName: notServing, name: notServing})
	})

	s.SetDiscovery(nil)
	tok := "opaque-" + rand.Text()
	s.Activate(tok, testkit.Claims(s.URL()))
	api := usherv1.NewTokenServiceClient(conn)
	testkit.Eventually(ctx, t, "the token VALID once discovery gives the endpoint", func() bool {
		resp, err := api.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"})
		return err == nil && resp.GetValid()
	})
	testkit.Eventually(ctx, t, "ready with an opaque-only issuer", func() bool {
		tick()
		return healthIs(ctx, hc, statuses{"": serving, grpcapi.ServiceName: serving, name: serving})
	})

	both := testkit.NewIntrospectionServer(t)
	bothCfg := both.Config(t)
	bothCfg.Introspection.TokenPrefixes = []string{"both_"}
	bothCfg.JWKSURI = testkit.ClosedURL(t) + "/jwks.json"
	cfg.Introspection.TokenPrefixes = []string{"opaque-"}
	mixed := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{bothCfg, cfg})
	if err := mixed.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	srv.Swap(mixed)
	testkit.Eventually(ctx, t, "an issuer without its keys NOT_SERVING, the replica ready", func() bool {
		tick()
		return healthIs(ctx, hc, statuses{grpcapi.ServiceName: serving, grpcapi.IssuerHealthName(both.URL()): notServing})
	})
}

// TestServer_Opaque: over gRPC, an opaque token gets its verdict with
// token_format "opaque", INACTIVE and ISSUER_UNAVAILABLE are verdicts (not
// errors), InspectToken shows the introspection result, and ListIssuers
// the endpoint and its last error.
func TestServer_Opaque(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{s.Config(t)})
	conn := serve(t, ctx, v)
	api := usherv1.NewTokenServiceClient(conn)
	tok := rand.Text()
	s.Activate(tok, testkit.Claims(s.URL(), "token_type", "Bearer"))
	validate := func(tok, aud string) *usherv1.ValidateTokenResponse {
		t.Helper()
		resp, err := api.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: "Bearer " + tok, ExpectedAudience: aud})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := validate(tok, "api/users")
	if !resp.GetValid() || resp.GetClaims().GetTokenFormat() != "opaque" || resp.GetClaims().GetTokenType() != "Bearer" || resp.GetClaims().GetRaw().GetFields()["active"].GetBoolValue() != true {
		t.Fatalf("%v", resp)
	}
	if r := validate(tok, "api/invoices"); r.GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH || r.GetClaims() == nil {
		t.Fatalf("%v", r)
	}
	if r := validate(rand.Text(), "api/users"); r.GetReason() != usherv1.Reason_REASON_INACTIVE || r.GetClaims() != nil {
		t.Fatalf("%v", r)
	}
	in, err := api.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: tok})
	if err != nil || in.GetSignature() != usherv1.Reason_REASON_VALID || in.GetClaims().GetTokenFormat() != "opaque" || len(in.GetAudiences()) != 1 {
		t.Fatalf("%v, %v", in, err)
	}
	s.Handle(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) })
	if r := validate(rand.Text(), "api/users"); r.GetReason() != usherv1.Reason_REASON_ISSUER_UNAVAILABLE || r.GetValid() {
		t.Fatalf("%v", r)
	}
	list, err := api.ListIssuers(ctx, &usherv1.ListIssuersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	is := list.GetIssuers()[0]
	if is.GetIntrospectionEndpoint() != s.Endpoint() || is.GetIntrospectionLastError() != "HTTP 502" || is.GetJwksUri() != "" {
		t.Fatalf("%v", is)
	}
}
