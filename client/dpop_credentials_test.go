package client_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

var invoicesAudience = client.ServiceAudiences(map[string]string{"grpc.testing.TestService": "api/invoices"})

// checkDPoPRequests: each request usher got carries a DPoP token from the
// token endpoint and a proof that verifies with the key the token is bound
// to, made for exactly the method and URI the interceptor checks it
// against, for this token (ath), each proof with a jti of its own.
func checkDPoPRequests(t *testing.T, got []*usherv1.ValidateTokenRequest, s *client.DPoPSigner, htus ...string) {
	t.Helper()
	if len(got) != len(htus) {
		t.Fatalf("usher got %d requests, want %d", len(got), len(htus))
	}
	jtis := map[string]bool{}
	for i, r := range got {
		p := verifyProof(t, r.GetDpopProof())
		if r.GetScheme() != "DPoP" || !strings.HasSuffix(r.GetToken(), "-bound-to-"+s.Thumbprint()) || p.thumb != s.Thumbprint() {
			t.Errorf("call %d: scheme %q, token %q, proof key %s; want a DPoP token bound to %s", i, r.GetScheme(), r.GetToken(), p.thumb, s.Thumbprint())
		}
		if p.str("htm") != r.GetHttpMethod() || r.GetHttpMethod() != "POST" || p.str("htu") != r.GetHttpUri() || r.GetHttpUri() != htus[i] {
			t.Errorf("call %d: proof for %s %s, interceptor checks %s %s, want POST %s", i, p.str("htm"), p.str("htu"), r.GetHttpMethod(), r.GetHttpUri(), htus[i])
		}
		if p.str("ath") != ath(r.GetToken()) || jtis[p.str("jti")] {
			t.Errorf("call %d: ath %q (want the token's hash), jti %q seen before: %v", i, p.str("ath"), p.str("jti"), jtis[p.str("jti")])
		}
		if iat := p.iat(t); time.Since(time.Unix(iat, 0)).Abs() > time.Minute {
			t.Errorf("call %d: iat %d is not now", i, iat)
		}
		jtis[p.str("jti")] = true
	}
}

// TestDPoPCredentials_ProofPerCall: over plaintext loopback, WithDPoP sends
// a token the endpoint bound to the caller's key and a fresh proof per
// call, unary and streaming, that the interceptor checks against the URI it
// was made for.
func TestDPoPCredentials_ProofPerCall(t *testing.T) {
	f := newFakeUsher(t)
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, impl := newServer(fakeAuthn(t, f))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)

	e := newTokenEndpoint(t, time.Now)
	s := newSigner(t)
	sources := client.DPoPClientCredentialsSources(testkit.Context(t), dpopConfig(e), s, "api/invoices")
	creds, err := client.NewAudienceCredentials(invoicesAudience, sources, client.InsecureAllowLoopback(), client.WithDPoP(s))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := testpb.NewTestServiceClient(conn)
	for range 2 {
		if _, err := c.UnaryCall(testkit.Context(t), &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	stream, err := c.FullDuplexCall(testkit.Context(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	_ = stream.CloseSend()
	base := "http://" + lis.Addr().String() + "/grpc.testing.TestService/"
	checkDPoPRequests(t, f.requests(), s, base+"UnaryCall", base+"UnaryCall", base+"FullDuplexCall")
	if impl.handled() != 3 || len(e.seen()) != 1 {
		t.Errorf("handled %d calls (want 3) with %d tokens (want 1, reused)", impl.handled(), len(e.seen()))
	}
}

// TestDPoPCredentials_OverMutualTLS: over TLS the proof is made for https,
// as the interceptor checks it, and the call carries the certificate too.
func TestDPoPCredentials_OverMutualTLS(t *testing.T) {
	f := newFakeUsher(t)
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	api := serveTLS(t, fakeAuthn(t, f))
	s := newSigner(t)
	creds, err := client.NewAudienceCredentials(invoicesAudience,
		client.DPoPClientCredentialsSources(testkit.Context(t), dpopConfig(newTokenEndpoint(t, time.Now)), s, "api/invoices"), client.WithDPoP(s))
	if err != nil {
		t.Fatal(err)
	}
	c := api.dial(t, true, grpc.WithPerRPCCredentials(creds))
	if _, err := c.UnaryCall(testkit.Context(t), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	got := f.requests()
	checkDPoPRequests(t, got, s, "https://"+api.addr+"/grpc.testing.TestService/UnaryCall")
	if got[0].GetClientCertificateSha256() != api.thumbprint() {
		t.Errorf("client certificate thumbprint %q, want %q", got[0].GetClientCertificateSha256(), api.thumbprint())
	}
}

// TestDPoPCredentials_RefusesMismatchedTokens: a Bearer token is not sent as
// DPoP (the issuer did not bind it), a DPoP token is not sent as Bearer
// (it would be refused), and nothing reaches the API.
func TestDPoPCredentials_RefusesMismatchedTokens(t *testing.T) {
	f := newFakeUsher(t)
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, impl := newServer(fakeAuthn(t, f))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	s := newSigner(t)
	for _, tc := range []struct {
		name  string
		typ   string
		dpop  bool
		wants string
	}{
		{"bearer token with WithDPoP", "Bearer", true, `token_type "Bearer", not DPoP`},
		{"dpop token without WithDPoP", "DPoP", false, "add WithDPoP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := []client.CredentialsOption{client.InsecureAllowLoopback()}
			if tc.dpop {
				opts = append(opts, client.WithDPoP(s))
			}
			src := oauth2.StaticTokenSource(&oauth2.Token{AccessToken: "tok", TokenType: tc.typ})
			creds, err := client.NewAudienceCredentials(invoicesAudience, map[string]oauth2.TokenSource{"api/invoices": src}, opts...)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			_, err = testpb.NewTestServiceClient(conn).UnaryCall(testkit.Context(t), &testpb.SimpleRequest{})
			if err == nil || !strings.Contains(err.Error(), tc.wants) {
				t.Errorf("call: %v, want an error saying %q", err, tc.wants)
			}
		})
	}
	if f.calls.Load() != 0 || impl.handled() != 0 {
		t.Errorf("usher asked %d times, handler ran %d times", f.calls.Load(), impl.handled())
	}
}
