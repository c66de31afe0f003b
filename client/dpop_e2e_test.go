package client_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// TestDPoP_EndToEnd: through a real usher, a token the dev issuer bound to
// the caller's key (a proof at its token endpoint) is VALID with
// WithDPoP's proofs, PROOF_MISSING sent as Bearer, INVALID_PROOF with a
// proof of another key, and a proof sent twice is refused the second time
// (usher's replay check: the interceptor cached nothing).
func TestDPoP_EndToEnd(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs, impl := newServer(authn)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	htu := "http://" + lis.Addr().String() + "/grpc.testing.TestService/UnaryCall"

	s := newSigner(t)
	cc := clientcredentials.Config{ClientID: devissuer.ClientID, ClientSecret: devissuer.ClientSecret, TokenURL: u.Issuer.TokenURL()}
	sources := client.DPoPClientCredentialsSources(testkit.Context(t), cc, s, "api/invoices")
	tok, err := sources["api/invoices"].Token()
	if err != nil {
		t.Fatalf("a DPoP-bound token from the dev issuer: %v", err)
	}
	dial := func(t *testing.T, opts ...grpc.DialOption) testpb.TestServiceClient {
		conn, err := grpc.NewClient(lis.Addr().String(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return testpb.NewTestServiceClient(conn)
	}
	withCreds := func(t *testing.T, signer *client.DPoPSigner) testpb.TestServiceClient {
		creds, err := client.NewAudienceCredentials(invoicesAudience, map[string]oauth2.TokenSource{"api/invoices": oauth2.StaticTokenSource(tok)},
			client.InsecureAllowLoopback(), client.WithDPoP(signer))
		if err != nil {
			t.Fatal(err)
		}
		return dial(t, grpc.WithPerRPCCredentials(creds))
	}

	t.Run("bound token with its proofs", func(t *testing.T) {
		c := withCreds(t, s)
		for i := range 2 {
			if r := unary(t, c, context.Background()); r.code != codes.OK {
				t.Fatalf("call %d: %v %v %s", i+1, r.code, r.info, r.msg)
			}
		}
		seen, _ := impl.seenClaims()
		if len(seen) != 2 || seen[1].GetConfirmation().GetJkt() != s.Thumbprint() {
			t.Errorf("handler saw %d calls, confirmation %v, want jkt %s", len(seen), seen[len(seen)-1].GetConfirmation(), s.Thumbprint())
		}
	})
	t.Run("every key type", func(t *testing.T) {
		// usher and the dev issuer check proofs with jwx: the stdlib
		// signatures and jwk here are what another JOSE library reads.
		for alg, key := range signerKeys(t) {
			signer, err := client.NewDPoPSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			creds, err := client.NewAudienceCredentials(invoicesAudience, client.DPoPClientCredentialsSources(testkit.Context(t), cc, signer, "api/invoices"),
				client.InsecureAllowLoopback(), client.WithDPoP(signer))
			if err != nil {
				t.Fatal(err)
			}
			if r := unary(t, dial(t, grpc.WithPerRPCCredentials(creds)), context.Background()); r.code != codes.OK {
				t.Errorf("%s: %v %v %s", alg, r.code, r.info, r.msg)
			}
		}
	})
	t.Run("sent as bearer", func(t *testing.T) {
		r := unary(t, dial(t), withToken(testkit.Context(t), "Bearer "+tok.AccessToken))
		if r.code != codes.Unauthenticated || r.info.GetReason() != "PROOF_MISSING" || !strings.HasPrefix(r.challenge, dpopChallenge) {
			t.Errorf("%v %v %q, want UNAUTHENTICATED PROOF_MISSING with a DPoP challenge", r.code, r.info, r.challenge)
		}
	})
	t.Run("proof of another key", func(t *testing.T) {
		r := unary(t, withCreds(t, newSigner(t)), context.Background())
		if r.code != codes.Unauthenticated || r.info.GetReason() != "INVALID_PROOF" || !strings.Contains(r.challenge, `error="invalid_dpop_proof"`) {
			t.Fatalf("%v %v %q, want UNAUTHENTICATED INVALID_PROOF", r.code, r.info, r.challenge)
		}
		if md := r.info.GetMetadata(); md["claim"] != "jkt" || md["expected"] != s.Thumbprint() {
			t.Errorf("mismatch %v, want claim jkt expecting %s", md, s.Thumbprint())
		}
	})
	t.Run("replayed proof", func(t *testing.T) {
		p, err := s.Proof("POST", htu, tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		c := dial(t)
		for i, want := range []string{"", "INVALID_PROOF"} {
			r := unary(t, c, dpopCall(testkit.Context(t), "DPoP "+tok.AccessToken, p))
			if r.info.GetReason() != want {
				t.Fatalf("sending the proof a %d. time: %v %v, want reason %q", i+1, r.code, r.info, want)
			}
		}
	})
	if impl.handled() != 8 {
		t.Errorf("handler ran %d times, want 8", impl.handled())
	}
}
