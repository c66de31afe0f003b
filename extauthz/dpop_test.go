package extauthz_test

import (
	"context"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/codes"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// recorder is an engine that records each request it is asked about and
// answers a fixed verdict (or error).
type recorder struct {
	mu  sync.Mutex
	got []service.Request
	v   service.Verdict
	err error
}

func (r *recorder) ValidateRequest(_ context.Context, req *service.Request) (service.Verdict, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, *req)
	return r.v, r.err
}

// last is the one request asked since the previous call, or fails.
func (r *recorder) last(t *testing.T) service.Request {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 1 {
		t.Fatalf("the engine was asked %d times, want once", len(r.got))
	}
	got := r.got[0]
	r.got = nil
	return got
}

func (r *recorder) none(t *testing.T) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != 0 {
		t.Errorf("the engine was asked %d times, want never: %+v", len(r.got), r.got)
	}
	r.got = nil
}

// envoyRequest is what Envoy reports: the request line, headers (merged)
// and the peer certificate (include_peer_certificate).
type envoyRequest struct {
	method, scheme, host, path string
	headers                    map[string]string
	raw                        []*corev3.HeaderValue
	certificate                string
}

func checkEnvoy(t *testing.T, c authv3.AuthorizationClient, r envoyRequest) *authv3.CheckResponse {
	t.Helper()
	hr := &authv3.AttributeContext_HttpRequest{
		Id: "req-1", Method: r.method, Scheme: r.scheme, Host: r.host, Path: r.path, Protocol: "HTTP/2", Headers: r.headers,
	}
	if r.raw != nil {
		hr.HeaderMap = &corev3.HeaderMap{Headers: r.raw}
	}
	resp, err := c.Check(testkit.Context(t), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:  &authv3.AttributeContext_Peer{Certificate: r.certificate},
		Request: &authv3.AttributeContext_Request{Http: hr},
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// A proof-shaped value; the fake engine never reads it, but a log must
// never hold it.
const fakeProof = "eyJ0eXAiOiJkcG9wK2p3dCJ9.eyJodG0iOiJHRVQifQ.c2lnbmF0dXJlLW9mLXRoZS1wcm9vZg"

var dpopAlgs = `DPoP algs="` + strings.Join(service.DPoPAlgorithms, " ") + `"`

// TestCheckDPoPRequest: what the engine is asked for each way Envoy may
// report a request: the scheme (DPoP in any case, or Bearer), the proof,
// the method, and the htu from scheme, host and the path in normal form
// without its query.
func TestCheckDPoPRequest(t *testing.T) {
	rec := &recorder{v: service.Verdict{Reason: service.ReasonValid}}
	logs := &testkit.SyncBuffer{}
	c := serve(t, rec, extauthz.Config{Routes: testRoutes}, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	for _, tc := range []struct {
		name string
		req  envoyRequest
		want service.Request
	}{{
		name: "DPoP with its proof",
		req:  envoyRequest{method: "POST", scheme: "https", host: "api.example.com", path: "/users/7?expand=all", headers: map[string]string{"authorization": "DPoP tok-1", "dpop": fakeProof}},
		want: service.Request{Token: "tok-1", Audience: "api/users", Scheme: "DPoP", DPoPProof: fakeProof, HTTPMethod: "POST", HTTPURI: "https://api.example.com/users/7"},
	}, {
		name: "scheme in lower case, path in normal form, http",
		req:  envoyRequest{method: "DELETE", scheme: "http", host: "api.example.com:8080", path: "/users/./x/../7", headers: map[string]string{"authorization": "dpop  tok-1 ", "dpop": fakeProof}},
		want: service.Request{Token: "tok-1", Audience: "api/users", Scheme: "DPoP", DPoPProof: fakeProof, HTTPMethod: "DELETE", HTTPURI: "http://api.example.com:8080/users/7"},
	}, {
		name: "no scheme reported: https; method from :method",
		req:  envoyRequest{host: "users.example.com", path: "/", headers: map[string]string{"authorization": "DPoP tok-1", "dpop": fakeProof, ":method": "PATCH"}},
		want: service.Request{Token: "tok-1", Audience: "api/users", Scheme: "DPoP", DPoPProof: fakeProof, HTTPMethod: "PATCH", HTTPURI: "https://users.example.com/"},
	}, {
		name: "raw headers",
		req: envoyRequest{method: "GET", scheme: "https", host: "api.example.com", path: "/invoices/1", raw: []*corev3.HeaderValue{
			{Key: "Authorization", RawValue: []byte("DPoP tok-2")}, {Key: "DPoP", RawValue: []byte(fakeProof)},
		}},
		want: service.Request{Token: "tok-2", Audience: "api/invoices", Scopes: []string{"invoices.read"}, Scheme: "DPoP", DPoPProof: fakeProof, HTTPMethod: "GET", HTTPURI: "https://api.example.com/invoices/1"},
	}, {
		name: "Bearer with a DPoP header: passed as sent, for the engine to judge",
		req:  envoyRequest{method: "GET", scheme: "https", host: "users.example.com", path: "/a", headers: map[string]string{"authorization": "Bearer tok-3", "dpop": fakeProof}},
		want: service.Request{Token: "tok-3", Audience: "api/users", Scheme: "Bearer", DPoPProof: fakeProof, HTTPMethod: "GET", HTTPURI: "https://users.example.com/a"},
	}, {
		name: "Bearer without a proof",
		req:  envoyRequest{method: "GET", scheme: "https", host: "users.example.com", path: "/a", headers: map[string]string{"authorization": "Bearer tok-3"}},
		want: service.Request{Token: "tok-3", Audience: "api/users", Scheme: "Bearer", HTTPMethod: "GET", HTTPURI: "https://users.example.com/a"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			resp := checkEnvoy(t, c, tc.req)
			if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
				t.Fatalf("status %v, want OK", resp.GetStatus())
			}
			got := rec.last(t)
			if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", tc.want) {
				t.Errorf("the engine was asked\n %#v\nwant\n %#v", got, tc.want)
			}
		})
	}
	if l := logs.String(); strings.Contains(l, fakeProof) || strings.Contains(l, "c2lnbmF0dXJlLW9mLXRoZS1wcm9vZg") {
		t.Errorf("the proof reached the log:\n%s", l)
	} else if !strings.Contains(l, `"scheme":"DPoP"`) {
		t.Errorf("the log does not say the scheme:\n%s", l)
	}
}

// TestCheckDPoPDenials: what ext_authz refuses itself, before the engine
// (several proofs, an oversized one, a request with no URI to check it
// against), and how it answers the engine's verdicts and errors for a DPoP
// request: always a DPoP challenge.
func TestCheckDPoPDenials(t *testing.T) {
	dpop := func(extra ...string) map[string]string {
		h := map[string]string{"authorization": "DPoP tok-1"}
		for i := 0; i+1 < len(extra); i += 2 {
			h[extra[i]] = extra[i+1]
		}
		return h
	}
	cfg := extauthz.Config{Routes: []extauthz.Route{{Audience: "api/users"}}}

	t.Run("refused before the engine", func(t *testing.T) {
		rec := &recorder{v: service.Verdict{Reason: service.ReasonValid}}
		c := serve(t, rec, cfg, nil)
		for _, tc := range []struct {
			name string
			req  envoyRequest
			want wantDenied
		}{{
			name: "two proofs, merged by Envoy",
			req:  envoyRequest{method: "GET", host: "h", path: "/", headers: dpop("dpop", fakeProof+","+fakeProof)},
			want: wantDenied{code: codes.Unauthenticated, http: 401, reason: "INVALID_PROOF",
				challenge: dpopAlgs + `, error="invalid_dpop_proof", error_description="2 DPoP header values: send exactly one proof"`,
				message:   "2 DPoP header values: send exactly one proof", hintContains: "one DPoP header"},
		}, {
			name: "two proofs, raw headers",
			req: envoyRequest{method: "GET", host: "h", path: "/", raw: []*corev3.HeaderValue{
				{Key: "authorization", Value: "DPoP tok-1"}, {Key: "dpop", Value: fakeProof}, {Key: "DPoP", Value: fakeProof},
			}},
			want: wantDenied{code: codes.Unauthenticated, http: 401, reason: "INVALID_PROOF",
				challenge: dpopAlgs + `, error="invalid_dpop_proof", error_description="2 DPoP header values: send exactly one proof"`,
				message:   "2 DPoP header values: send exactly one proof", hintContains: "one DPoP header"},
		}, {
			name: "a Bearer request with two proofs still gets the DPoP challenge",
			req:  envoyRequest{method: "GET", host: "h", path: "/", headers: map[string]string{"authorization": "Bearer tok-1", "dpop": "a,b,c"}},
			want: wantDenied{code: codes.Unauthenticated, http: 401, reason: "INVALID_PROOF",
				challenge: dpopAlgs + `, error="invalid_dpop_proof", error_description="3 DPoP header values: send exactly one proof"`,
				message:   "3 DPoP header values: send exactly one proof", hintContains: "one DPoP header"},
		}, {
			name: "oversized proof",
			req:  envoyRequest{method: "GET", host: "h", path: "/", headers: dpop("dpop", strings.Repeat("a", 8<<10+1))},
			want: wantDenied{code: codes.Unauthenticated, http: 401, reason: "INVALID_PROOF",
				challengeFrom: dpopAlgs + `, error="invalid_dpop_proof", error_description="the DPoP header is 8193 bytes, above the limit of 8192`,
				message:       "the DPoP header is 8193 bytes, above the limit of 8192…", hintContains: "one DPoP header"},
		}, {
			name: "no URI to check the proof against",
			req:  envoyRequest{method: "GET", scheme: "https", host: "evil.example/x", path: "/", headers: dpop("dpop", fakeProof)},
			want: wantDenied{code: codes.Unauthenticated, http: 401, reason: "INVALID_PROOF",
				challengeFrom: dpopAlgs + `, error="invalid_dpop_proof", error_description="usher cannot build the URI the proof must name from Envoy's scheme 'https' and host 'evil.example/x'"`,
				message:       `usher cannot build the URI the proof must name from Envoy's scheme "https" and host "evil.example/x"`, hintContains: "one DPoP header"},
		}, {
			name: "empty DPoP token",
			req:  envoyRequest{method: "GET", host: "h", path: "/", headers: map[string]string{"authorization": "DPoP ", "dpop": fakeProof}},
			want: wantDenied{code: codes.Unauthenticated, http: 401, reason: "INVALID_CREDENTIALS",
				challenge: dpopAlgs + `, error="invalid_request", error_description="empty dpop token"`,
				message:   "empty dpop token", hintContains: "authorization: DPoP <access token> with one DPoP header"},
		}} {
			t.Run(tc.name, func(t *testing.T) {
				assertDenied(t, checkEnvoy(t, c, tc.req), tc.want)
				rec.none(t)
			})
		}
	})

	t.Run("a DPoP request's denial is a DPoP challenge", func(t *testing.T) {
		c := serve(t, &recorder{v: service.Verdict{Reason: service.ReasonExpired, Message: "token expired 5m0s ago", Hint: "get a new token"}}, cfg, nil)
		assertDenied(t, checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: dpop("dpop", fakeProof)}), wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "EXPIRED",
			challenge: dpopAlgs + `, error="invalid_token", error_description="token expired 5m0s ago"`,
			message:   "token expired 5m0s ago", hintContains: "get a new token",
		})
		// The same verdict for a Bearer request keeps the Bearer challenge.
		assertDenied(t, checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: map[string]string{"authorization": "Bearer tok-1"}}), wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "EXPIRED",
			challenge: `Bearer realm="api/users", error="invalid_token", error_description="token expired 5m0s ago"`,
			message:   "token expired 5m0s ago", hintContains: "get a new token",
		})
	})

	t.Run("the engine could not check the proof: 503, fail closed", func(t *testing.T) {
		logs := &testkit.SyncBuffer{}
		storeErr := fmt.Errorf("%w: dial tcp 10.1.2.3:6379: connection refused", service.ErrProofUnchecked)
		c := serve(t, &recorder{err: storeErr}, cfg, slog.New(slog.NewJSONHandler(logs, nil)))
		resp := checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: dpop("dpop", fakeProof)})
		assertDenied(t, resp, wantDenied{
			code: codes.Unavailable, http: 503, reason: extauthz.ReasonProofUnchecked,
			challenge:    dpopAlgs,
			message:      "usher could not check the DPoP proof against its replay store, so it gives no verdict",
			hintContains: "not the token's or the proof's fault",
		})
		if strings.Contains(resp.GetDeniedResponse().GetBody(), "10.1.2.3") {
			t.Errorf("the store's address reached the caller: %s", resp.GetDeniedResponse().GetBody())
		}
		if l := logs.String(); !strings.Contains(l, `"reason":"PROOF_UNCHECKED"`) || !strings.Contains(l, "10.1.2.3:6379: connection refused") || !strings.Contains(l, `"level":"WARN"`) {
			t.Errorf("the log does not hold the store's error at WARN:\n%s", l)
		}
	})
}

// envoyEncode is how Envoy URL-encodes the PEM of the peer certificate
// (source.certificate): before 1.22 by replacing the characters below,
// since then with every reserved character percent-encoded.
var envoyEncode = map[string]func(string) string{
	"replace": strings.NewReplacer("\n", "%0A", " ", "%20", "+", "%2B", "/", "%2F", "=", "%3D").Replace,
	"escape":  url.PathEscape, // leaves + and = as they are
	"query":   func(s string) string { return strings.ReplaceAll(url.QueryEscape(s), "+", "%20") },
}

// TestCheckClientCertificate: the thumbprint the engine is asked with is
// the SHA-256 of the certificate's DER, base64url, however Envoy encoded
// the PEM; a chain counts by its first certificate; a value that is no
// certificate is a 401 with a clear message, never a 500, and the engine
// is not asked.
func TestCheckClientCertificate(t *testing.T) {
	ca := testkit.NewCA(t)
	certPEM, _ := ca.Issue(t, 7, x509.ExtKeyUsageClientAuth)
	block, _ := pem.Decode(certPEM)
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.Raw)
	want := base64.RawURLEncoding.EncodeToString(sum[:])

	rec := &recorder{v: service.Verdict{Reason: service.ReasonValid}}
	c := serve(t, rec, extauthz.Config{Routes: []extauthz.Route{{Audience: "api/users"}}}, nil)
	bearer := map[string]string{"authorization": "Bearer tok-1"}
	for name, enc := range envoyEncode {
		for what, pemText := range map[string]string{"leaf": string(certPEM), "leaf and CA": string(certPEM) + string(ca.PEM)} {
			t.Run(name+"/"+what, func(t *testing.T) {
				resp := checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: bearer, certificate: enc(pemText)})
				if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
					t.Fatalf("status %v", resp.GetStatus())
				}
				if got := rec.last(t).ClientCertificateSHA256; got != want {
					t.Errorf("client_certificate_sha256 %q, want %q", got, want)
				}
			})
		}
	}
	t.Run("none", func(t *testing.T) {
		checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: bearer})
		if got := rec.last(t).ClientCertificateSHA256; got != "" {
			t.Errorf("no certificate: client_certificate_sha256 %q", got)
		}
	})

	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte("x")})
	garbage := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte("not DER")})
	for name, tc := range map[string]struct{ value, why string }{
		"not URL-encoded":   {"%zz" + url.PathEscape(string(certPEM)), "it is not URL-encoded: invalid URL escape"},
		"not PEM":           {"hello", "it holds no PEM block"},
		"form-encoded":      {url.QueryEscape(string(certPEM)), "it holds no PEM block"},
		"a key, not a cert": {url.PathEscape(string(keyPEM)), `its first PEM block is "PRIVATE KEY", not CERTIFICATE`},
		"not DER":           {url.PathEscape(string(garbage)), "its first certificate does not parse: x509: malformed certificate"},
		"huge":              {strings.Repeat("A", 64<<10+1), "65537 bytes, above the limit of 65536"},
	} {
		t.Run("bad/"+name, func(t *testing.T) {
			for _, h := range []map[string]string{bearer, {"authorization": "DPoP tok-1", "dpop": fakeProof}} {
				resp := checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: h, certificate: tc.value})
				chal := `Bearer realm="api/users", error="invalid_request", error_description="Envoy reported a client certificate usher cannot read: `
				if strings.HasPrefix(h["authorization"], "DPoP") {
					chal = dpopAlgs + `, error="invalid_request", error_description="Envoy reported a client certificate usher cannot read: `
				}
				assertDenied(t, resp, wantDenied{
					code: codes.Unauthenticated, http: 401, reason: extauthz.ReasonInvalidClientCertificate,
					challengeFrom: chal, message: "Envoy reported a client certificate usher cannot read: …", hintContains: "include_peer_certificate",
				})
				if msg := resp.GetStatus().GetMessage(); !strings.Contains(msg, tc.why) {
					t.Errorf("message %q does not say %q", msg, tc.why)
				}
				rec.none(t)
			}
		})
	}
}

// The engine's error is never taken for a verdict, whatever it wraps.
func TestCheckEngineErrorFailsClosed(t *testing.T) {
	c := serve(t, &recorder{v: service.Verdict{Reason: service.ReasonValid}, err: errors.New("boom")}, extauthz.Config{Routes: []extauthz.Route{{Audience: "api/users"}}}, nil)
	resp := checkEnvoy(t, c, envoyRequest{method: "GET", host: "h", path: "/", headers: map[string]string{"authorization": "Bearer tok-1"}})
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unavailable || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
		t.Fatalf("an engine error with a VALID verdict answered %v", resp.GetStatus())
	}
}

// TestCheckDPoPEndToEnd: DPoP-bound and certificate-bound tokens of a real
// dev issuer through ext_authz and the real engine: allowed with a proof
// made for the request (its query left out of htu) or with the client
// certificate the token is bound to; refused PROOF_MISSING as Bearer or
// without the certificate, INVALID_PROOF with a proof for another URI, a
// replayed proof or another certificate, each with the DPoP challenge.
func TestCheckDPoPEndToEnd(t *testing.T) {
	e := newEngine(t)
	c := e.serve(t, extauthz.Config{Routes: testRoutes})
	dk := testkit.ECKey(t, "dpop", elliptic.P256())
	tok := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Subject: "svc-a", JKT: dk.Thumbprint()})
	const uri = "https://api.example.com/users/7"
	req := func(auth, proof string) envoyRequest {
		h := map[string]string{"authorization": auth}
		if proof != "" {
			h["dpop"] = proof
		}
		return envoyRequest{method: "GET", scheme: "https", host: "api.example.com", path: "/users/7?expand=all", headers: h}
	}
	claims := map[string]string{"x-usher-subject": "svc-a", "x-usher-issuer": e.Issuer.URL(), "x-usher-client-id": devissuer.ClientID, "x-usher-audience": "api/users"}

	good := dk.Proof(t, tok, "GET", uri, time.Now())
	assertOK(t, checkEnvoy(t, c, req("DPoP "+tok, good)), nil, wantOK{set: claims})

	for _, tc := range []struct {
		name        string
		req         envoyRequest
		reason, err string
		message     string
	}{
		{"as Bearer", req("Bearer "+tok, ""), "PROOF_MISSING", "invalid_token", "the token is DPoP-bound (cnf.jkt) and came with the Bearer scheme…"},
		{"DPoP without a proof", req("DPoP "+tok, ""), "PROOF_MISSING", "invalid_token", "the token is DPoP-bound (cnf.jkt) and came with no DPoP proof"},
		{"proof for another URI", req("DPoP "+tok, dk.Proof(t, tok, "GET", "https://api.example.com/invoices/7", time.Now())), "INVALID_PROOF", "invalid_dpop_proof",
			"the DPoP proof is for https://api.example.com/invoices/7, the request was sent to " + uri},
		{"proof for another method", req("DPoP "+tok, dk.Proof(t, tok, "DELETE", uri, time.Now())), "INVALID_PROOF", "invalid_dpop_proof", "the DPoP proof is for method DELETE, the request is GET"},
		{"replayed proof", req("DPoP "+tok, good), "INVALID_PROOF", "invalid_dpop_proof", "DPoP proof already used…"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := checkEnvoy(t, c, tc.req)
			assertDenied(t, resp, wantDenied{
				code: codes.Unauthenticated, http: 401, reason: tc.reason,
				challengeFrom: dpopAlgs + `, error="` + tc.err + `", error_description="`,
				message:       tc.message,
			})
		})
	}

	t.Run("certificate-bound", func(t *testing.T) {
		ca := testkit.NewCA(t)
		mine, _ := ca.Issue(t, 2, x509.ExtKeyUsageClientAuth)
		other, _ := ca.Issue(t, 3, x509.ExtKeyUsageClientAuth)
		block, _ := pem.Decode(mine)
		bound := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Subject: "svc-a", Extra: map[string]any{"cnf": map[string]any{"x5t#S256": testkit.CertThumbprint(block.Bytes)}}})
		withCert := func(cert []byte) envoyRequest {
			r := req("Bearer "+bound, "")
			if cert != nil {
				r.certificate = url.PathEscape(string(cert))
			}
			return r
		}
		assertOK(t, checkEnvoy(t, c, withCert(mine)), nil, wantOK{set: claims})
		assertDenied(t, checkEnvoy(t, c, withCert(other)), wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "INVALID_PROOF",
			challengeFrom: dpopAlgs + `, error="invalid_dpop_proof", error_description="the client certificate is not the one the token is bound to`,
			message:       "the client certificate is not the one the token is bound to…",
		})
		assertDenied(t, checkEnvoy(t, c, withCert(nil)), wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "PROOF_MISSING",
			challengeFrom: dpopAlgs + `, error="invalid_token", error_description="the token is bound to a client certificate`,
			message:       "the token is bound to a client certificate (cnf x5t#S256) and the request came with none", hintContains: "include_peer_certificate",
		})
	})

	if logs := e.logs.String(); strings.Contains(logs, good[strings.LastIndexByte(good, '.')+1:]) {
		t.Errorf("a proof reached the log")
	}
}

// storeDown is a replay store that does not answer.
type storeDown struct{}

func (storeDown) Remember(context.Context, string, time.Time) (bool, error) {
	return false, errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")
}

// TestCheckReplayStoreDown: with the real engine and its replay store
// down, a good proof is denied 503 PROOF_UNCHECKED (fail closed), and a
// bearer token is still allowed.
func TestCheckReplayStoreDown(t *testing.T) {
	e := testkit.NewDevEngine(t, service.WithReplayStore(storeDown{}))
	c := serve(t, e.Validator, extauthz.Config{Routes: testRoutes}, nil)
	dk := testkit.EdKey(t, "dpop")
	tok := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, JKT: dk.Thumbprint()})
	resp := checkEnvoy(t, c, envoyRequest{method: "GET", scheme: "https", host: "users.example.com", path: "/",
		headers: map[string]string{"authorization": "DPoP " + tok, "dpop": dk.Proof(t, tok, "GET", "https://users.example.com/", time.Now())}})
	assertDenied(t, resp, wantDenied{
		code: codes.Unavailable, http: 503, reason: extauthz.ReasonProofUnchecked, challenge: dpopAlgs,
		message: "usher could not check the DPoP proof against its replay store, so it gives no verdict", hintContains: "bearer tokens are unaffected",
	})
	bearer := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})
	if resp := checkEnvoy(t, c, envoyRequest{method: "GET", host: "users.example.com", path: "/", headers: map[string]string{"authorization": "Bearer " + bearer}}); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Errorf("a bearer token with the store down: %v", resp.GetStatus())
	}
}
