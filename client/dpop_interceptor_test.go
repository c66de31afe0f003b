package client_test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

const dpopChallenge = `DPoP algs="ES256 ES384 ES512 EdDSA PS256 PS384 PS512 RS256 RS384 RS512"`

// dpopCall is ctx with "authorization: <auth>" and one "dpop" value per proof.
func dpopCall(ctx context.Context, auth string, proofs ...string) context.Context {
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", auth)
	for _, p := range proofs {
		ctx = metadata.AppendToOutgoingContext(ctx, "dpop", p)
	}
	return ctx
}

// answer is a consistent usher verdict: VALID with claims for api/invoices
// (bound by cnf when given), or a rejection with reason.
func answer(reason usherv1.Reason, cnf *usherv1.Confirmation) *usherv1.ValidateTokenResponse {
	return &usherv1.ValidateTokenResponse{Valid: reason == usherv1.Reason_REASON_VALID, Reason: reason, Message: "usher says " + reason.String(),
		Claims: &usherv1.Claims{Subject: "svc-billing", Audience: []string{"api/invoices"}, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour)), Confirmation: cnf}}
}

// newServer is the protected API with the interceptors installed.
func newServer(authn *client.Authenticator, opts ...grpc.ServerOption) (*grpc.Server, *api) {
	impl := &api{}
	gs := grpc.NewServer(append(opts,
		grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(authn.StreamServerInterceptor()))...)
	testpb.RegisterTestServiceServer(gs, impl)
	return gs, impl
}

// serveBufconn serves the protected API over bufconn, reached as authority.
func serveBufconn(t testing.TB, authn *client.Authenticator, authority string) (testpb.TestServiceClient, *api) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs, impl := newServer(authn)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient("passthrough:///"+authority, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn), impl
}

func fakeAuthn(t testing.TB, f *fakeUsher, opts ...client.Option) *client.Authenticator {
	t.Helper()
	authn, err := client.NewAuthenticator(dialUsher(t, f.addr), "api/invoices", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return authn
}

// onlyRequest is the one request usher got since the last look.
func onlyRequest(t testing.TB, f *fakeUsher) *usherv1.ValidateTokenRequest {
	t.Helper()
	got := f.requests()
	if len(got) != 1 {
		t.Fatalf("usher got %d requests, want 1", len(got))
	}
	return got[0]
}

// TestInterceptor_DPoPRequest: a DPoP call reaches usher with its scheme,
// proof, POST and the htu built from :authority and the full method (http
// without TLS, the default port dropped); a Bearer call carries neither
// proof nor htu, even with a dpop value.
func TestInterceptor_DPoPRequest(t *testing.T) {
	f := newFakeUsher(t)
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	authn := fakeAuthn(t, f, client.WithoutCache())
	for _, tc := range []struct {
		name, authority, auth string
		want                  *usherv1.ValidateTokenRequest
	}{
		{"dpop", "api.example.com", "DPoP tok-1", &usherv1.ValidateTokenRequest{Scheme: "DPoP", DpopProof: "proof-1", HttpMethod: "POST",
			HttpUri: "http://api.example.com/grpc.testing.TestService/UnaryCall"}},
		{"scheme in any case", "api.example.com:8443", "dPoP tok-1", &usherv1.ValidateTokenRequest{Scheme: "DPoP", DpopProof: "proof-1", HttpMethod: "POST",
			HttpUri: "http://api.example.com:8443/grpc.testing.TestService/UnaryCall"}},
		{"default port dropped", "api.example.com:80", "DPoP tok-1", &usherv1.ValidateTokenRequest{Scheme: "DPoP", DpopProof: "proof-1", HttpMethod: "POST",
			HttpUri: "http://api.example.com/grpc.testing.TestService/UnaryCall"}},
		{"bearer ignores a proof", "api.example.com", "Bearer tok-1", &usherv1.ValidateTokenRequest{Scheme: "Bearer"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, impl := serveBufconn(t, authn, tc.authority)
			if r := unary(t, c, dpopCall(testkit.Context(t), tc.auth, "proof-1")); r.code != codes.OK || impl.handled() != 1 {
				t.Fatalf("%v %s, handled %d", r.code, r.msg, impl.handled())
			}
			want := proto.CloneOf(tc.want)
			want.Token, want.ExpectedAudience = "tok-1", "api/invoices"
			if got := onlyRequest(t, f); !proto.Equal(got, want) {
				t.Errorf("usher got\n%v\nwant\n%v", got, want)
			}
		})
	}
}

// TestInterceptor_DPoPRefusedBeforeUsher: a DPoP call without its proof,
// with two, or without a token is refused with a DPoP challenge and
// usher is not asked; another scheme keeps the Bearer challenge.
func TestInterceptor_DPoPRefusedBeforeUsher(t *testing.T) {
	f := newFakeUsher(t)
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	c, impl := serveBufconn(t, fakeAuthn(t, f), "api.example.com")
	for _, tc := range []struct {
		name, auth        string
		proofs            []string
		reason, challenge string
		description       string
	}{
		{"two proofs", "DPoP tok", []string{"p1", "p2"}, "INVALID_PROOF", dpopChallenge + `, error="invalid_dpop_proof"`, "2 dpop values"},
		{"no proof", "DPoP tok", nil, "PROOF_MISSING", dpopChallenge + `, error="invalid_token"`, "without a proof"},
		{"no token", "DPoP ", []string{"p1"}, "INVALID_CREDENTIALS", dpopChallenge + `, error="invalid_request"`, "empty DPoP token"},
		{"other scheme", "Basic dXNlcjpwYXNz", []string{"p1"}, "INVALID_CREDENTIALS", `Bearer realm="api/invoices", error="invalid_request"`, "Bearer or DPoP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := unary(t, c, dpopCall(testkit.Context(t), tc.auth, tc.proofs...))
			if r.code != codes.Unauthenticated || r.info.GetReason() != tc.reason || r.info.GetDomain() != client.ErrorDomain {
				t.Fatalf("%v %v, want UNAUTHENTICATED %s", r.code, r.info, tc.reason)
			}
			if !strings.HasPrefix(r.challenge, tc.challenge) || !strings.Contains(r.challenge, tc.description) {
				t.Errorf("www-authenticate %q, want %q with a description saying %q", r.challenge, tc.challenge, tc.description)
			}
		})
	}
	if f.calls.Load() != 0 || impl.handled() != 0 {
		t.Errorf("usher asked %d times, handler ran %d times", f.calls.Load(), impl.handled())
	}
}

// TestInterceptor_DPoPChallenge: usher's proof verdicts are answered with a
// DPoP challenge whatever the scheme (RFC 9449 §7.1) and the ErrorInfo
// with the mismatch; other verdicts with the scheme the call came with.
func TestInterceptor_DPoPChallenge(t *testing.T) {
	f := newFakeUsher(t)
	authn := fakeAuthn(t, f, client.WithRequiredScopes(unaryMethod, "invoices.read"))
	terse := fakeAuthn(t, f, client.WithDetail(client.DetailTerse))
	c, _ := serveBufconn(t, authn, "api.example.com")
	ct, _ := serveBufconn(t, terse, "api.example.com")
	badHTU := answer(usherv1.Reason_REASON_INVALID_PROOF, &usherv1.Confirmation{Jkt: "jkt"})
	badHTU.Message, badHTU.Hint = "the proof is for another URI: \"htu\"\nmismatch", "sign the proof for the URI you call"
	badHTU.Mismatch = &usherv1.Mismatch{Claim: "htu", Expected: []string{"https://api.example.com/grpc.testing.TestService/UnaryCall"}, Actual: []string{"https://evil.example.com/x"}}
	noScope := answer(usherv1.Reason_REASON_INSUFFICIENT_SCOPE, nil)
	noScope.Mismatch = &usherv1.Mismatch{Claim: "scope", Expected: []string{"invoices.read"}, Actual: []string{"invoices.list"}}
	for _, tc := range []struct {
		name      string
		c         testpb.TestServiceClient
		auth      string
		resp      *usherv1.ValidateTokenResponse
		code      codes.Code
		challenge string
		meta      map[string]string
	}{
		{"proof missing for a bearer call", c, "Bearer tok", answer(usherv1.Reason_REASON_PROOF_MISSING, nil), codes.Unauthenticated,
			dpopChallenge + `, error="invalid_token", error_description="PROOF_MISSING: usher says REASON_PROOF_MISSING"`, map[string]string{"message": "usher says REASON_PROOF_MISSING"}},
		{"invalid proof", c, "DPoP tok", badHTU, codes.Unauthenticated,
			dpopChallenge + `, error="invalid_dpop_proof", error_description="INVALID_PROOF: the proof is for another URI: 'htu''mismatch (hint: sign the proof for the URI you call)"`,
			map[string]string{"claim": "htu", "expected": "https://api.example.com/grpc.testing.TestService/UnaryCall", "actual": "https://evil.example.com/x", "hint": "sign the proof for the URI you call"}},
		{"invalid proof, terse", ct, "DPoP tok", badHTU, codes.Unauthenticated, dpopChallenge + `, error="invalid_dpop_proof"`, nil},
		{"token's fault in a dpop call", c, "DPoP tok", answer(usherv1.Reason_REASON_AUDIENCE_MISMATCH, nil), codes.Unauthenticated,
			dpopChallenge + `, error="invalid_token", error_description="AUDIENCE_MISMATCH: usher says REASON_AUDIENCE_MISMATCH"`, nil},
		{"token's fault in a bearer call", c, "Bearer tok", answer(usherv1.Reason_REASON_AUDIENCE_MISMATCH, nil), codes.Unauthenticated,
			`Bearer realm="api/invoices", error="invalid_token"`, nil},
		{"scope missing in a dpop call", c, "DPoP tok", noScope, codes.PermissionDenied,
			dpopChallenge + `, error="insufficient_scope", error_description="INSUFFICIENT_SCOPE: usher says REASON_INSUFFICIENT_SCOPE", scope="invoices.read"`, nil},
		{"keys unavailable in a dpop call", c, "DPoP tok", answer(usherv1.Reason_REASON_KEYS_UNAVAILABLE, nil), codes.Unavailable, dpopChallenge, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.resp.Store(tc.resp)
			r := unary(t, tc.c, dpopCall(testkit.Context(t), tc.auth, "proof"))
			if r.code != tc.code || r.info.GetReason() != strings.TrimPrefix(tc.resp.GetReason().String(), "REASON_") {
				t.Fatalf("%v %v, want %v %v", r.code, r.info, tc.code, tc.resp.GetReason())
			}
			if tc.code == codes.Unavailable && r.challenge != tc.challenge || !strings.HasPrefix(r.challenge, tc.challenge) {
				t.Errorf("www-authenticate\n%s\nwant\n%s", r.challenge, tc.challenge)
			}
			for k, v := range tc.meta {
				if got := r.info.GetMetadata()[k]; got != v {
					t.Errorf("ErrorInfo metadata[%s] = %q, want %q", k, got, v)
				}
			}
			if tc.c == ct && (len(r.info.GetMetadata()) != 0 || strings.Contains(r.msg, "htu")) {
				t.Errorf("terse rejection leaks detail: %q %v", r.msg, r.info.GetMetadata())
			}
		})
	}
}

// TestInterceptor_DPoPFailsClosed: usher answering UNAVAILABLE (its replay
// store down: the proof could not be checked) refuses the call as
// UNAVAILABLE; the handler never runs.
func TestInterceptor_DPoPFailsClosed(t *testing.T) {
	f := newFakeUsher(t)
	f.fail.Store(status.New(codes.Unavailable, "the DPoP replay store did not answer"))
	c, impl := serveBufconn(t, fakeAuthn(t, f), "api.example.com")
	r := unary(t, c, dpopCall(testkit.Context(t), "DPoP tok", "proof"))
	if r.code != codes.Unavailable || r.info.GetReason() != "VALIDATION_UNAVAILABLE" || r.challenge != dpopChallenge {
		t.Fatalf("%v %v %q, want UNAVAILABLE VALIDATION_UNAVAILABLE with a DPoP challenge blaming nothing", r.code, r.info, r.challenge)
	}
	if !strings.Contains(r.msg, "replay store") || impl.handled() != 0 || f.calls.Load() == 0 {
		t.Errorf("message %q, handled %d, usher asked %d times", r.msg, impl.handled(), f.calls.Load())
	}
}

// TestInterceptor_NeverCachesBoundCalls: with the verdict cache on, a DPoP
// call asks usher every time, a cached bearer VALID is never served to a
// DPoP call with the same token, and a VALID for a bound token is not
// cached even when it came for a bearer call.
func TestInterceptor_NeverCachesBoundCalls(t *testing.T) {
	f := newFakeUsher(t)
	authn := fakeAuthn(t, f)
	c, impl := serveBufconn(t, authn, "api.example.com")
	call := func(auth string, want codes.Code) {
		t.Helper()
		if r := unary(t, c, dpopCall(testkit.Context(t), auth, "proof")); r.code != want {
			t.Fatalf("%s: %v %s, want %v", auth, r.code, r.msg, want)
		}
	}
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, &usherv1.Confirmation{Jkt: "jkt"}))
	call("DPoP dpop-tok", codes.OK)
	call("DPoP dpop-tok", codes.OK)
	if n := f.calls.Load(); n != 2 {
		t.Errorf("two DPoP calls asked usher %d times, want 2", n)
	}
	call("Bearer dpop-tok", codes.OK) // an usher that does not check proofs yet
	call("Bearer dpop-tok", codes.OK)
	if n := f.calls.Load(); n != 4 {
		t.Errorf("a VALID with cnf was cached: usher asked %d times, want 4", n)
	}

	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	call("Bearer plain-tok", codes.OK)
	call("Bearer plain-tok", codes.OK) // cached
	f.resp.Store(answer(usherv1.Reason_REASON_INVALID_PROOF, nil))
	call("DPoP plain-tok", codes.Unauthenticated)
	if n, st := f.calls.Load(), authn.CacheStats(); n != 6 || st.Hits != 1 {
		t.Errorf("usher asked %d times (want 6), cache %+v (want 1 hit): a DPoP call was answered from the cache", n, st)
	}
	if impl.handled() != 6 {
		t.Errorf("handled %d, want 6", impl.handled())
	}
}

// tlsAPI serves the protected API on 127.0.0.1 over TLS, asking for (and
// verifying, when given) a client certificate from ca.
type tlsAPI struct {
	addr       string
	impl       *api
	ca         *testkit.CA
	clientCert tls.Certificate
	clientDER  []byte
}

func serveTLS(t testing.TB, authn *client.Authenticator) *tlsAPI {
	t.Helper()
	ca := testkit.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, 2, x509.ExtKeyUsageServerAuth)
	srvCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM = ca.Issue(t, 3, x509.ExtKeyUsageClientAuth)
	cliCert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{srvCert}, ClientAuth: tls.VerifyClientCertIfGiven,
		ClientCAs: ca.Pool(), MinVersion: tls.VersionTLS12})
	gs, impl := newServer(authn, grpc.Creds(creds))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return &tlsAPI{addr: lis.Addr().String(), impl: impl, ca: ca, clientCert: cliCert, clientDER: block.Bytes}
}

// dial connects over TLS, presenting the client certificate when mTLS.
func (s *tlsAPI) dial(t testing.TB, mTLS bool, opts ...grpc.DialOption) testpb.TestServiceClient {
	t.Helper()
	conf := &tls.Config{RootCAs: s.ca.Pool(), MinVersion: tls.VersionTLS12}
	if mTLS {
		conf.Certificates = []tls.Certificate{s.clientCert}
	}
	conn, err := grpc.NewClient(s.addr, append([]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(conf))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testpb.NewTestServiceClient(conn)
}

func (s *tlsAPI) thumbprint() string {
	sum := sha256.Sum256(s.clientDER)
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// TestInterceptor_TLSAndClientCertificate: over TLS the htu is https; with
// a client certificate every call carries its SHA-256 thumbprint (RFC 8705
// §3.1), Bearer calls too, and none of them is cached; without one, Bearer
// calls are cached as before.
func TestInterceptor_TLSAndClientCertificate(t *testing.T) {
	f := newFakeUsher(t)
	f.resp.Store(answer(usherv1.Reason_REASON_VALID, nil))
	authn := fakeAuthn(t, f)
	s := serveTLS(t, authn)
	htu := "https://" + s.addr + "/grpc.testing.TestService/UnaryCall"
	for _, mTLS := range []bool{true, false} {
		c := s.dial(t, mTLS)
		thumb := ""
		if mTLS {
			thumb = s.thumbprint()
		}
		if r := unary(t, c, dpopCall(testkit.Context(t), "DPoP tok", "proof")); r.code != codes.OK {
			t.Fatalf("mTLS %v: %v %s", mTLS, r.code, r.msg)
		}
		if got := onlyRequest(t, f); got.GetHttpUri() != htu || got.GetClientCertificateSha256() != thumb {
			t.Errorf("mTLS %v: htu %q cert %q, want %q %q", mTLS, got.GetHttpUri(), got.GetClientCertificateSha256(), htu, thumb)
		}
		for range 2 {
			if r := unary(t, c, dpopCall(testkit.Context(t), "Bearer tok-mtls-"+thumb)); r.code != codes.OK {
				t.Fatalf("mTLS %v, bearer: %v %s", mTLS, r.code, r.msg)
			}
		}
		got := f.requests()
		wantCalls := 1 // the second is a cache hit
		if mTLS {
			wantCalls = 2
		}
		if len(got) != wantCalls || got[0].GetClientCertificateSha256() != thumb || got[0].GetScheme() != "Bearer" || got[0].GetHttpUri() != "" {
			t.Errorf("mTLS %v: two bearer calls reached usher as %v, want %d with cert %q", mTLS, got, wantCalls, thumb)
		}
	}
}
