package grpcapi_test

import (
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// TestServer_ProofFieldLimits: sender-constraint fields no client could
// mean are refused with INVALID_ARGUMENT naming the field (and the limit),
// before the engine runs; values at the limits, and every spelling of the
// two schemes, reach the engine and get a verdict.
func TestServer_ProofFieldLimits(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	c := usherv1.NewTokenServiceClient(serve(t, ctx, v))
	tok := k.Token(t, testkit.Claims(ti.URL()))
	sum := sha256.Sum256([]byte("a certificate"))
	thumb := base64.RawURLEncoding.EncodeToString(sum[:])

	for _, tc := range []struct {
		name string
		req  *usherv1.ValidateTokenRequest
		want string // a part of the INVALID_ARGUMENT message
	}{
		{"unknown scheme", &usherv1.ValidateTokenRequest{Scheme: "Basic"}, `scheme "Basic" is not one usher knows: send "Bearer", "DPoP" or nothing`},
		{"scheme with its token", &usherv1.ValidateTokenRequest{Scheme: "Bearer x"}, `scheme "Bearer x" is not one usher knows`},
		{"long scheme", &usherv1.ValidateTokenRequest{Scheme: strings.Repeat("D", 33)}, "scheme is 33 bytes: send"},
		{"proof above 8 KiB", &usherv1.ValidateTokenRequest{Scheme: "DPoP", DpopProof: strings.Repeat("a", 8<<10+1)}, "dpop_proof is 8193 bytes, above the limit of 8192"},
		{"URI above 8 KiB", &usherv1.ValidateTokenRequest{HttpUri: "https://a/" + strings.Repeat("a", 8<<10)}, "http_uri is 8202 bytes, above the limit of 8192"},
		{"method above 64 bytes", &usherv1.ValidateTokenRequest{HttpMethod: strings.Repeat("P", 65)}, "http_method is 65 bytes, above the limit of 64"},
		{"thumbprint in hex", &usherv1.ValidateTokenRequest{ClientCertificateSha256: hex.EncodeToString(sum[:])}, "client_certificate_sha256 is hex: send the unpadded base64url (43 characters) SHA-256"},
		{"thumbprint in padded base64", &usherv1.ValidateTokenRequest{ClientCertificateSha256: base64.StdEncoding.EncodeToString(sum[:])}, "client_certificate_sha256 is standard base64"},
		{"thumbprint too short", &usherv1.ValidateTokenRequest{ClientCertificateSha256: thumb[:42]}, "client_certificate_sha256 is 42 bytes long"},
		{"thumbprint not base64url", &usherv1.ValidateTokenRequest{ClientCertificateSha256: "+" + thumb[1:]}, "client_certificate_sha256 is 43 characters but not canonical base64url"},
		{"thumbprint not canonical", &usherv1.ValidateTokenRequest{ClientCertificateSha256: thumb[:42] + "B"}, "client_certificate_sha256 is 43 characters but not canonical base64url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.Token, tc.req.ExpectedAudience = tok, "api/users"
			_, err := c.ValidateToken(ctx, tc.req)
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
				t.Fatalf("error %v, want INVALID_ARGUMENT saying %q", err, tc.want)
			}
		})
	}

	for _, tc := range []struct {
		name string
		req  *usherv1.ValidateTokenRequest
	}{
		{"no proof fields", &usherv1.ValidateTokenRequest{}},
		{"Bearer", &usherv1.ValidateTokenRequest{Scheme: "Bearer"}},
		{"bearer", &usherv1.ValidateTokenRequest{Scheme: "bearer"}},
		{"dpop, every field at its limit", &usherv1.ValidateTokenRequest{Scheme: "dpop", DpopProof: strings.Repeat("a", 8<<10),
			HttpMethod: strings.Repeat("P", 64), HttpUri: "https://a/" + strings.Repeat("a", 8<<10-10), ClientCertificateSha256: thumb}},
	} {
		t.Run("accepted: "+tc.name, func(t *testing.T) {
			tc.req.Token, tc.req.ExpectedAudience = tok, "api/users"
			resp, err := c.ValidateToken(ctx, tc.req)
			if err != nil || resp.GetReason() == usherv1.Reason_REASON_UNSPECIFIED {
				t.Fatalf("%v, %v: want a verdict", resp, err)
			}
		})
	}
}

// TestServer_RequestAtEveryLimit: a request with a token of
// max_token_bytes and a proof and a URI at their limits fits in
// MaxRecvMsgSize, so the server reads it and answers.
func TestServer_RequestAtEveryLimit(t *testing.T) {
	ctx := testkit.Context(t)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{testkit.NewIssuer(t, testkit.EdKey(t, "ed-1")).Config()})
	conn, _ := serveWith(t, ctx, v, nil, []grpc.ServerOption{grpc.MaxRecvMsgSize(grpcapi.MaxRecvMsgSize(service.DefaultMaxTokenBytes))})
	c := usherv1.NewTokenServiceClient(conn)
	scopes := make([]string, 64)
	for i := range scopes {
		scopes[i] = strings.Repeat("s", 64)
	}
	resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{
		Token: strings.Repeat("a", service.DefaultMaxTokenBytes), ExpectedAudience: strings.Repeat("u", 256), RequiredScopes: scopes,
		Scheme: "DPoP", DpopProof: strings.Repeat("p", grpcapi.MaxProofBytes), HttpMethod: "POST",
		HttpUri: "https://a/" + strings.Repeat("u", grpcapi.MaxURIBytes-10), ClientCertificateSha256: strings.Repeat("A", 43),
	})
	if err != nil || resp.GetReason() == usherv1.Reason_REASON_UNSPECIFIED {
		t.Fatalf("%v, %v: want a verdict", resp, err)
	}
}

// TestServer_LogsNoProof: the validation line names the token by its
// TokenID and the scheme, never the proof (it carries a key, and is a
// credential for its iat window) nor the token.
func TestServer_LogsNoProof(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{ti.Config()})
	var logs testkit.SyncBuffer
	conn, _ := serveWith(t, ctx, v, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})), nil)
	c := usherv1.NewTokenServiceClient(conn)
	tok := k.Token(t, testkit.Claims(ti.URL()))
	const proofSig = "c2lnbmF0dXJlLW9mLXRoZS1wcm9vZg"
	proof := "eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJodG0iOiJQT1NUIn0." + proofSig
	for _, aud := range []string{"api/users", "api/invoices"} { // a valid line (Debug) and a rejection (Info)
		if _, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: aud, Scheme: "DPoP", DpopProof: proof,
			HttpMethod: "POST", HttpUri: "https://api.example.com/x"}); err != nil {
			t.Fatal(err)
		}
	}
	l := logs.String()
	if strings.Count(l, "msg=validate ") != 2 || strings.Count(l, "scheme=DPoP") != 2 || !strings.Contains(l, "token="+service.TokenID(tok)) {
		t.Errorf("want two validate lines with the scheme and the token's id:\n%s", l)
	}
	if strings.Contains(l, proofSig) || strings.Contains(l, tok[strings.LastIndexByte(tok, '.')+1:]) {
		t.Errorf("the proof or the token reached the log:\n%s", l)
	}
}
