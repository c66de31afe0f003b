package interop

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/client"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// The request a DPoP proof is made for in the tests that ask usher
// directly: a GET to the Users API, as its HTTP adapter would pass it on.
const (
	apiMethod = http.MethodGet
	apiURI    = "https://users.api.test/v1/users/alice"
)

// proofKey is a caller's DPoP key of one of the algorithms server.js
// accepts for proofs (its DPOP_ALGS).
type proofKey struct {
	alg string
	key crypto.Signer
}

// proofKeys are fresh keys of every proof algorithm the provider and usher
// share: P-256 (ES256), Ed25519 (EdDSA), RSA 2048 (PS256).
func proofKeys(t *testing.T) []proofKey {
	t.Helper()
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return []proofKey{{"ES256", ec}, {"EdDSA", ed}, {"PS256", rs}}
}

// newSigner is client.NewDPoPSigner of key, checked to sign with alg.
func newSigner(t *testing.T, alg string, key crypto.Signer) *client.DPoPSigner {
	t.Helper()
	s, err := client.NewDPoPSigner(key)
	if err != nil {
		t.Fatalf("NewDPoPSigner(%s key): %v", alg, err)
	}
	if s.Algorithm() != alg {
		t.Fatalf("NewDPoPSigner signs with %s, want %s", s.Algorithm(), alg)
	}
	return s
}

// p256Signer is a signer of a fresh P-256 key (ES256).
func p256Signer(t *testing.T) *client.DPoPSigner {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return newSigner(t, "ES256", key)
}

// ccConfig is the client-credentials configuration of a client of
// server.js (caller, or nonce-caller with caller's secret).
func (p *provider) ccConfig(clientID string, scopes ...string) clientcredentials.Config {
	return clientcredentials.Config{
		ClientID: clientID, ClientSecret: p.secrets["caller"], TokenURL: p.disc.TokenEndpoint,
		Scopes: scopes, AuthStyle: oauth2.AuthStyleInHeader,
	}
}

// DPoPToken is an access token for resource bound to signer's key, from
// client.DPoPTokenSource: the client's proof at the provider's token
// endpoint, the provider's binding.
func (p *provider) DPoPToken(t *testing.T, clientID string, signer *client.DPoPSigner, resource string, scopes ...string) string {
	t.Helper()
	cfg := p.ccConfig(clientID, scopes...)
	cfg.EndpointParams = url.Values{"resource": {resource}}
	// Each request is bounded by client.DefaultTokenTimeout.
	tok, err := client.DPoPTokenSource(t.Context(), cfg, signer).Token()
	if err != nil {
		t.Fatalf("DPoP-bound token of %s for %s with a %s proof: %v; provider stderr:\n%s", clientID, resource, signer.Algorithm(), err, p.stderr)
	}
	if tok.TokenType != "DPoP" {
		t.Fatalf("DPoPTokenSource gave token_type %q, want DPoP", tok.TokenType)
	}
	return tok.AccessToken
}

// payload is a compact JWS's payload (a token's or a proof's), for the
// test's own look at what the provider or the signer put there.
func payload(t *testing.T, jws string) map[string]any {
	t.Helper()
	parts := strings.Split(jws, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d segments", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatalf("JWS payload: %v", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("JWS payload: %v", err)
	}
	return m
}

// proof is signer's proof for the API request, bound to tok by its ath.
func proof(t *testing.T, s *client.DPoPSigner, method, uri, tok string) string {
	t.Helper()
	pr, err := s.Proof(method, uri, tok)
	if err != nil {
		t.Fatalf("Proof(%s %s): %v", method, uri, err)
	}
	return pr
}

// dpopRequest is tok sent with the DPoP scheme and prf to the API request.
func dpopRequest(tok, audience, prf string, scopes ...string) *usherv1.ValidateTokenRequest {
	return &usherv1.ValidateTokenRequest{
		Token: tok, ExpectedAudience: audience, RequiredScopes: scopes,
		Scheme: "DPoP", DpopProof: prf, HttpMethod: apiMethod, HttpUri: apiURI,
	}
}

// expectMismatch fails the test unless r names claim with exactly these
// expected and actual values.
func expectMismatch(t *testing.T, what string, r *usherv1.ValidateTokenResponse, claim string, expected, actual []string) {
	t.Helper()
	m := r.GetMismatch()
	if m.GetClaim() != claim || !slices.Equal(m.GetExpected(), expected) || !slices.Equal(m.GetActual(), actual) {
		t.Errorf("%s: mismatch %v, want claim %q expected %q actual %q\nmessage: %s", what, m, claim, expected, actual, r.GetMessage())
	}
}

// checkBound runs usher's proof checks on tok, bound by the provider to
// s's key, for audience (with scope): VALID with a fresh proof, and each
// way of sending it that must fail.
func checkBound(t *testing.T, u *usher, tok, audience, scope, format string, s *client.DPoPSigner) {
	t.Run("VALID with a fresh proof", func(t *testing.T) {
		r := u.ValidateRequest(t, dpopRequest(tok, audience, proof(t, s, apiMethod, apiURI, tok), scope))
		expect(t, "bound token with its proof", r, usherv1.Reason_REASON_VALID)
		c := r.GetClaims()
		if c.GetConfirmation().GetJkt() != s.Thumbprint() || c.GetConfirmation().GetX5TS256() != "" {
			t.Errorf("confirmation = %v, want jkt %s (the signer's thumbprint) and no x5t#S256", c.GetConfirmation(), s.Thumbprint())
		}
		if c.GetTokenFormat() != format || c.GetClientId() != "caller" || !slices.Equal(c.GetAudience(), []string{audience}) || !slices.Contains(c.GetScopes(), scope) {
			t.Errorf("claims = %v", c)
		}
	})
	t.Run("PROOF_MISSING as Bearer", func(t *testing.T) {
		r := u.ValidateRequest(t, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: audience, Scheme: "Bearer"})
		expect(t, "bound token sent as Bearer", r, usherv1.Reason_REASON_PROOF_MISSING)
		expectHint(t, "bound token sent as Bearer", r, "DPoP", s.Thumbprint())
		// So is the plain Validate, which names no scheme.
		expect(t, "bound token without scheme or proof", u.Validate(t, tok, audience), usherv1.Reason_REASON_PROOF_MISSING)
	})
	t.Run("INVALID_PROOF for another htu", func(t *testing.T) {
		other := "https://users.api.test/v1/users/bob"
		r := u.ValidateRequest(t, dpopRequest(tok, audience, proof(t, s, apiMethod, other, tok)))
		expect(t, "proof for another URI", r, usherv1.Reason_REASON_INVALID_PROOF)
		expectMismatch(t, "proof for another URI", r, "htu", []string{apiURI}, []string{other})
	})
	t.Run("INVALID_PROOF when replayed", func(t *testing.T) {
		prf := proof(t, s, apiMethod, apiURI, tok)
		expect(t, "proof sent the first time", u.ValidateRequest(t, dpopRequest(tok, audience, prf)), usherv1.Reason_REASON_VALID)
		r := u.ValidateRequest(t, dpopRequest(tok, audience, prf))
		expect(t, "the same proof sent again", r, usherv1.Reason_REASON_INVALID_PROOF)
		jti, _ := payload(t, prf)["jti"].(string)
		if m := r.GetMismatch(); m.GetClaim() != "jti" || !slices.Equal(m.GetActual(), []string{jti}) {
			t.Errorf("replayed proof: mismatch %v, want claim jti with the proof's jti %q", m, jti)
		}
	})
	t.Run("INVALID_PROOF signed by another key", func(t *testing.T) {
		thief := p256Signer(t)
		r := u.ValidateRequest(t, dpopRequest(tok, audience, proof(t, thief, apiMethod, apiURI, tok)))
		expect(t, "proof of another key", r, usherv1.Reason_REASON_INVALID_PROOF)
		expectMismatch(t, "proof of another key", r, "jkt", []string{s.Thumbprint()}, []string{thief.Thumbprint()})
	})
}

// DPoP-bound RFC 9068 JWT access tokens: the provider binds them to the
// key of the client's proof at its token endpoint (cnf.jkt, the RFC 7638
// thumbprint it computes), and usher checks the proofs of the calls.
func TestDPoPJWTAccessTokens(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, usherConfig{tokenType: "at+jwt"})
	u.WaitKeys(t, keysWait, firstKeys...)
	for _, k := range proofKeys(t) {
		t.Run(k.alg, func(t *testing.T) {
			s := newSigner(t, k.alg, k.key)
			tok := p.DPoPToken(t, "caller", s, usersAPI, "users:read")
			if typ := header(t, tok)["typ"]; typ != "at+jwt" {
				t.Fatalf("the provider's token has typ %v, want at+jwt", typ)
			}
			cnf, _ := payload(t, tok)["cnf"].(map[string]any)
			if cnf["jkt"] != s.Thumbprint() {
				t.Fatalf("the provider bound the token to cnf %v; the signer's thumbprint is %s", cnf, s.Thumbprint())
			}
			checkBound(t, u, tok, usersAPI, "users:read", "jwt", s)
		})
	}
	t.Run("a bearer token with the DPoP scheme is INVALID_PROOF", func(t *testing.T) {
		// RFC 9449 §7.1: the scheme says the token is bound; this one is not.
		s := p256Signer(t)
		tok := p.ClientCredentials(t, usersAPI, "users:read")
		r := u.ValidateRequest(t, dpopRequest(tok, usersAPI, proof(t, s, apiMethod, apiURI, tok)))
		expect(t, "bearer token sent as DPoP", r, usherv1.Reason_REASON_INVALID_PROOF)
		if r.GetMismatch().GetClaim() != "jkt" {
			t.Errorf("mismatch %v, want claim jkt", r.GetMismatch())
		}
		expect(t, "the same token as Bearer", u.Validate(t, tok, usersAPI), usherv1.Reason_REASON_VALID)
	})
}

// A DPoP-bound opaque token: its binding is the cnf of the provider's
// introspection answer.
func TestDPoPOpaqueTokens(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, opaqueConfig(p.secrets["usher"]))
	u.WaitKeys(t, keysWait, firstKeys...)
	s := p256Signer(t)
	tok := p.DPoPToken(t, "caller", s, ordersAPI, "orders:read")
	requireOpaque(t, tok)
	checkBound(t, u, tok, ordersAPI, "orders:read", "opaque", s)
}

// A client whose proofs the provider wants with its nonce (RFC 9449 §8):
// DPoPTokenSource retries once with the DPoP-Nonce it was given, and the
// token it gets is bound and VALID at usher with a proof (usher issues no
// nonces of its own).
func TestDPoPNonce(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, usherConfig{tokenType: "at+jwt"})
	u.WaitKeys(t, keysWait, firstKeys...)
	s := p256Signer(t)

	// Without the source's retry, the provider answers use_dpop_nonce:
	// the retry below is exercised, not skipped.
	code, answer, nonce := p.rawDPoPTokenRequest(t, "nonce-caller", s, usersAPI)
	if code != http.StatusBadRequest || answer["error"] != "use_dpop_nonce" || nonce == "" {
		t.Fatalf("nonce-caller's token request with a proof without nonce: %d %v, DPoP-Nonce %q; want 400 use_dpop_nonce with a nonce", code, answer, nonce)
	}
	tok := p.DPoPToken(t, "nonce-caller", s, usersAPI)
	r := u.ValidateRequest(t, dpopRequest(tok, usersAPI, proof(t, s, apiMethod, apiURI, tok)))
	expect(t, "token obtained with a nonce", r, usherv1.Reason_REASON_VALID)
	if r.GetClaims().GetConfirmation().GetJkt() != s.Thumbprint() || r.GetClaims().GetClientId() != "nonce-caller" {
		t.Errorf("claims = %v, want client nonce-caller bound to %s", r.GetClaims(), s.Thumbprint())
	}
}

// rawDPoPTokenRequest is one client-credentials request with signer's
// proof (no nonce), without DPoPTokenSource's retry: the status, the JSON
// answer and the DPoP-Nonce header.
func (p *provider) rawDPoPTokenRequest(t *testing.T, clientID string, s *client.DPoPSigner, resource string) (int, map[string]any, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), providerReplyWait)
	defer cancel()
	body := url.Values{"grant_type": {"client_credentials"}, "resource": {resource}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.disc.TokenEndpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("DPoP", proof(t, s, http.MethodPost, p.disc.TokenEndpoint, ""))
	req.SetBasicAuth(url.QueryEscape(clientID), url.QueryEscape(p.secrets["caller"]))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("token request: %v", err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&m); err != nil {
		t.Fatalf("token request: %s, answer not JSON: %v", resp.Status, err)
	}
	return resp.StatusCode, m, resp.Header.Get("DPoP-Nonce")
}

// unaryMethod is the protected API's method in TestDPoPInterceptor.
const unaryMethod = "/grpc.testing.TestService/UnaryCall"

// protectedAPI is the gRPC service behind client's interceptors: it
// records the claims each call it ran with.
type protectedAPI struct {
	testpb.UnimplementedTestServiceServer
	mu     sync.Mutex
	claims []*usherv1.Claims
}

func (a *protectedAPI) UnaryCall(ctx context.Context, _ *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	c, ok := client.ClaimsFromContext(ctx)
	if !ok {
		return nil, status.Error(codes.Internal, "the handler ran without claims in its context")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.claims = append(a.claims, c)
	return &testpb.SimpleResponse{}, nil
}

func (a *protectedAPI) seen() []*usherv1.Claims {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.claims)
}

// serveProtected serves the API on 127.0.0.1 behind client.NewAuthenticator
// with usher as its validator, for the Users API's audience with users:read
// required, and returns its address.
func serveProtected(t *testing.T, u *usher) (string, *protectedAPI) {
	t.Helper()
	authn, err := client.NewAuthenticator(client.New(u.conn, client.WithCallTimeout(callWait)), usersAPI,
		client.WithRequiredScopes(unaryMethod, "users:read"))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	impl := &protectedAPI{}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor()))
	testpb.RegisterTestServiceServer(gs, impl)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return lis.Addr().String(), impl
}

// callResult is what the caller saw of one call.
type callResult struct {
	err       error
	code      codes.Code
	info      *errdetails.ErrorInfo
	challenge string // www-authenticate
}

// call makes one UnaryCall to addr with dial options opts (credentials) and
// ctx's metadata, bounded by callWait.
func call(t *testing.T, addr string, ctx context.Context, opts ...grpc.DialOption) callResult {
	t.Helper()
	conn, err := grpc.NewClient(addr, append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, callWait)
	defer cancel()
	var header, trailer metadata.MD
	_, err = testpb.NewTestServiceClient(conn).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&header), grpc.Trailer(&trailer))
	st := status.Convert(err)
	r := callResult{err: err, code: st.Code()}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			r.info = ei
		}
	}
	// The interceptor sets it with grpc.SetHeader: grpc-go sends it in
	// the response headers; a Trailers-Only answer would carry it in the
	// trailers. Exactly one either way.
	if v := append(header.Get("www-authenticate"), trailer.Get("www-authenticate")...); len(v) == 1 {
		r.challenge = v[0]
	}
	return r
}

// End to end through client's interceptor with usher as the validator: a
// caller with AudienceCredentials and WithDPoP, its tokens bound by the
// provider (DPoPClientCredentialsSources), is let through; the same token
// stolen is refused, with another key's proofs or as Bearer, with the DPoP
// challenge.
func TestDPoPInterceptor(t *testing.T) {
	p := startProvider(t)
	u := startUsher(t, p, usherConfig{tokenType: "at+jwt"})
	u.WaitKeys(t, keysWait, firstKeys...)
	addr, api := serveProtected(t, u)
	audiences := client.ServiceAudiences(map[string]string{"grpc.testing.TestService": usersAPI})
	dpopChallenge := `DPoP algs="` + client.DPoPAlgs + `"`

	s := p256Signer(t)
	sources := client.DPoPClientCredentialsSources(t.Context(), p.ccConfig("caller", "users:read"), s, usersAPI)
	creds, err := client.NewAudienceCredentials(audiences, sources, client.InsecureAllowLoopback(), client.WithDPoP(s))
	if err != nil {
		t.Fatal(err)
	}
	t.Run("the bound token with its proofs runs the handler", func(t *testing.T) {
		// Twice: each call's proof is fresh, and neither the
		// interceptor nor usher holds the first against the second.
		for i := range 2 {
			if r := call(t, addr, t.Context(), grpc.WithPerRPCCredentials(creds)); r.code != codes.OK {
				t.Fatalf("call %d: %v %v; usher's log:\n%s", i+1, r.err, r.info, u.stderr)
			}
		}
		seen := api.seen()
		if len(seen) != 2 {
			t.Fatalf("the handler ran %d times, want 2", len(seen))
		}
		c := seen[1]
		if c.GetConfirmation().GetJkt() != s.Thumbprint() || c.GetClientId() != "caller" || !slices.Equal(c.GetAudience(), []string{usersAPI}) {
			t.Errorf("the handler's claims = %v, want the caller's token for %s bound to %s", c, usersAPI, s.Thumbprint())
		}
	})

	stolen, err := sources[usersAPI].Token()
	if err != nil {
		t.Fatal(err)
	}
	t.Run("stolen, with another key's proofs: INVALID_PROOF", func(t *testing.T) {
		thief := p256Signer(t)
		tc, err := client.NewAudienceCredentials(audiences, map[string]oauth2.TokenSource{usersAPI: oauth2.StaticTokenSource(stolen)},
			client.InsecureAllowLoopback(), client.WithDPoP(thief))
		if err != nil {
			t.Fatal(err)
		}
		r := call(t, addr, t.Context(), grpc.WithPerRPCCredentials(tc))
		if r.code != codes.Unauthenticated || r.info.GetReason() != "INVALID_PROOF" || r.info.GetDomain() != client.ErrorDomain {
			t.Fatalf("%v %v, want UNAUTHENTICATED with ErrorInfo reason INVALID_PROOF", r.err, r.info)
		}
		if !strings.HasPrefix(r.challenge, dpopChallenge) || !strings.Contains(r.challenge, `error="invalid_dpop_proof"`) {
			t.Errorf("www-authenticate %q, want %s, error=\"invalid_dpop_proof\"", r.challenge, dpopChallenge)
		}
		if md := r.info.GetMetadata(); md["claim"] != "jkt" || md["expected"] != s.Thumbprint() || md["actual"] != thief.Thumbprint() {
			t.Errorf("ErrorInfo metadata %v, want claim jkt expected %s actual %s", md, s.Thumbprint(), thief.Thumbprint())
		}
	})
	t.Run("stolen, sent as Bearer: PROOF_MISSING", func(t *testing.T) {
		ctx := metadata.AppendToOutgoingContext(t.Context(), "authorization", "Bearer "+stolen.AccessToken)
		r := call(t, addr, ctx)
		if r.code != codes.Unauthenticated || r.info.GetReason() != "PROOF_MISSING" || !strings.HasPrefix(r.challenge, dpopChallenge) {
			t.Fatalf("%v %v, www-authenticate %q; want UNAUTHENTICATED PROOF_MISSING with the DPoP challenge", r.err, r.info, r.challenge)
		}
	})
	if n := len(api.seen()); n != 2 {
		t.Errorf("the handler ran %d times, want 2 (the stolen token's calls must not reach it)", n)
	}
}
