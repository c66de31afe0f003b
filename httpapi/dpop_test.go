package httpapi_test

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/httpapi"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/proto/usher/v1/usherv1connect"
	"github.com/usher-dev/usher/service"
)

// TestValidateToken_ProofFieldsJSON: the sender-constraint fields travel
// over HTTP/JSON under both their JSON and .proto names (the strict codec
// would refuse a name it does not know) and get the answer gRPC gives for
// the same request; a field usher refuses is a 400 invalid_argument naming
// it, as over gRPC.
func TestValidateToken_ProofFieldsJSON(t *testing.T) {
	f := newFixture(t)
	users := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})
	url := f.url + "/usher.v1.TokenService/ValidateToken"
	sum := sha256.Sum256([]byte("a certificate"))
	req := &usherv1.ValidateTokenRequest{
		Token: users, ExpectedAudience: "api/users", Scheme: "Bearer",
		DpopProof: "eyJ0eXAiOiJkcG9wK2p3dCJ9.e30.c2ln", HttpMethod: "GET", HttpUri: "https://api.example.com/users",
		ClientCertificateSha256: base64.RawURLEncoding.EncodeToString(sum[:]),
	}
	want, err := f.grpc.ValidateToken(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	for _, protoNames := range []bool{false, true} {
		t.Run(fmt.Sprint("protoNames=", protoNames), func(t *testing.T) {
			body, err := protojson.MarshalOptions{UseProtoNames: protoNames}.Marshal(req)
			if err != nil {
				t.Fatal(err)
			}
			names := []string{"scheme", "dpopProof", "httpMethod", "httpUri", "clientCertificateSha256"}
			if protoNames {
				names = []string{"scheme", "dpop_proof", "http_method", "http_uri", "client_certificate_sha256"}
			}
			for _, name := range names {
				if !strings.Contains(string(body), `"`+name+`"`) {
					t.Fatalf("the body lacks %q: %s", name, body)
				}
			}
			code, _, b := curl(t, url, string(body))
			if code != http.StatusOK {
				t.Fatalf("HTTP %d: %s", code, b)
			}
			got := &usherv1.ValidateTokenResponse{}
			if err := protojson.Unmarshal(b, got); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if !proto.Equal(got, want) {
				t.Errorf("HTTP/JSON and gRPC differ:\nHTTP: %v\ngRPC: %v", got, want)
			}
		})
	}

	code, _, b := curl(t, url, fmt.Sprintf(`{"token":%q,"expectedAudience":"api/users","clientCertificateSha256":%q}`, users, hex.EncodeToString(sum[:])))
	m := decode(t, b)
	if msg, _ := m["message"].(string); code != http.StatusBadRequest || m["code"] != "invalid_argument" || !strings.HasPrefix(msg, "client_certificate_sha256 is hex") {
		t.Errorf("a hex thumbprint: HTTP %d %s, want 400 invalid_argument naming client_certificate_sha256", code, b)
	}
}

// dpopBody is a ValidateToken request in JSON, as curl sends it, with the
// JSON names of the sender-constraint fields.
func dpopBody(t *testing.T, token, scheme, proof, method, uri string) string {
	t.Helper()
	b, err := json.Marshal(map[string]string{
		"token": token, "expectedAudience": "api/users", "scheme": scheme, "dpopProof": proof, "httpMethod": method, "httpUri": uri,
	})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestValidateToken_DPoPOverJSON: a token the dev issuer bound to a DPoP
// key, asked about over HTTP/JSON with the real engine: VALID with its
// proof (and its cnf in the claims), PROOF_MISSING as Bearer,
// INVALID_PROOF with a proof for another URI; each a verdict (HTTP 200).
func TestValidateToken_DPoPOverJSON(t *testing.T) {
	f := newFixture(t)
	url := f.url + "/usher.v1.TokenService/ValidateToken"
	dk := testkit.ECKey(t, "dpop", elliptic.P256())
	tok := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, JKT: dk.Thumbprint()})
	const uri = "https://api.example.com/users/7"

	for _, tc := range []struct {
		name, scheme, proof string
		reason, claim       string
	}{
		{"with its proof", "DPoP", dk.Proof(t, tok, "GET", uri, f.clock.Now()), "REASON_VALID", ""},
		{"as Bearer", "Bearer", "", "REASON_PROOF_MISSING", "scheme"},
		{"proof for another URI", "DPoP", dk.Proof(t, tok, "GET", "https://api.example.com/admin", f.clock.Now()), "REASON_INVALID_PROOF", "htu"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, b := curl(t, url, dpopBody(t, tok, tc.scheme, tc.proof, "GET", uri))
			if code != http.StatusOK {
				t.Fatalf("HTTP %d: %s", code, b)
			}
			m := decode(t, b)
			if m["reason"] != tc.reason {
				t.Fatalf("reason %v, want %s: %s", m["reason"], tc.reason, b)
			}
			if mm, _ := m["mismatch"].(map[string]any); tc.claim != "" && mm["claim"] != tc.claim {
				t.Errorf("mismatch %v, want claim %s", mm, tc.claim)
			}
			cnf, _ := m["claims"].(map[string]any)["confirmation"].(map[string]any)
			if cnf["jkt"] != dk.Thumbprint() {
				t.Errorf("claims.confirmation %v, want jkt %s", cnf, dk.Thumbprint())
			}
		})
	}
}

// downStore is a replay store that does not answer.
type downStore struct{}

func (downStore) Remember(context.Context, string, time.Time) (bool, error) {
	return false, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
}

// TestValidateToken_ReplayStoreDownIs503: with the replay store down, a
// DPoP-bound token with a good proof gets no verdict: Connect code
// unavailable, HTTP 503, the message of the gRPC status; a bearer token on
// the same listener is answered.
func TestValidateToken_ReplayStoreDownIs503(t *testing.T) {
	clock := testkit.NewClock()
	clock.Set(time.Now().Add(time.Minute).Truncate(time.Second))
	e := testkit.NewDevEngine(t, service.WithClock(clock.Now), service.WithReplayStore(downStore{}))
	addr := serveHTTP(t, httpapi.Handler(grpcapi.NewServer(e.Validator, nil)))
	url := "http://" + addr + "/usher.v1.TokenService/ValidateToken"
	dk := testkit.EdKey(t, "dpop")
	tok := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, JKT: dk.Thumbprint()})
	const uri = "https://api.example.com/users/7"

	code, _, b := curl(t, url, dpopBody(t, tok, "DPoP", dk.Proof(t, tok, "GET", uri, clock.Now()), "GET", uri))
	m := decode(t, b)
	if msg, _ := m["message"].(string); code != http.StatusServiceUnavailable || m["code"] != "unavailable" ||
		!strings.Contains(msg, "replay store") || !strings.Contains(msg, "not the token's or the proof's fault") {
		t.Errorf("HTTP %d %s, want 503 unavailable saying the replay store failed", code, b)
	}

	c := usherv1connect.NewTokenServiceClient(httpClient, "http://"+addr)
	_, err := c.ValidateToken(testkit.Context(t), connect.NewRequest(&usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users",
		Scheme: "DPoP", DpopProof: dk.Proof(t, tok, "GET", uri, clock.Now()), HttpMethod: "GET", HttpUri: uri}))
	if connect.CodeOf(err) != connect.CodeUnavailable {
		t.Errorf("Connect client: %v, want unavailable", err)
	}

	code, _, b = curl(t, url, fmt.Sprintf(`{"token":%q,"expectedAudience":"api/users"}`, e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})))
	if code != http.StatusOK || decode(t, b)["reason"] != "REASON_VALID" {
		t.Errorf("a bearer token with the store down: HTTP %d %s, want VALID", code, b)
	}
}
