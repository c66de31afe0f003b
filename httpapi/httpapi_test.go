package httpapi_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/httpapi"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/servertls"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/proto/usher/v1/usherv1connect"
	"github.com/usher-dev/usher/service"
)

// fixture is testkit's dev-issuer engine (a real engine trusting a real dev
// issuer on 127.0.0.1, and an issuer whose keys can never be fetched) on a
// fixed clock, served both by a real gRPC server and by httpapi on its own
// HTTP listener.
type fixture struct {
	ctx      context.Context
	clock    *testkit.Clock // the engine's
	iss      *devissuer.Issuer
	down     *devissuer.Issuer
	v        *service.Validator
	url      string // http://127.0.0.1:port of the HTTP listener
	httpAddr string
	grpc     usherv1.TokenServiceClient // the gRPC server, not the HTTP listener
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	// A fixed clock, a minute after the tokens are minted (the dev issuer
	// reads the wall clock), so that the verdicts (e.g. "expired 5m0s ago")
	// do not depend on when each call runs.
	clock := testkit.NewClock()
	clock.Set(time.Now().Add(time.Minute).Truncate(time.Second))
	e := testkit.NewDevEngine(t, service.WithClock(clock.Now))
	_, gaddr := e.Serve(t)
	addr := serveHTTP(t, httpapi.Handler(grpcapi.NewServer(e.Validator, nil)))
	return &fixture{
		ctx:      testkit.Context(t),
		clock:    clock,
		iss:      e.Issuer,
		down:     e.Down,
		v:        e.Validator,
		url:      "http://" + addr,
		httpAddr: addr,
		grpc:     usherv1.NewTokenServiceClient(testkit.Dial(t, gaddr)),
	}
}

// serveHTTP serves h with httpapi.NewServer on a 127.0.0.1 listener (over
// TLS when conf is given) until the test ends, and returns its address.
func serveHTTP(t *testing.T, h http.Handler, conf ...*tls.Config) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httpapi.NewServer(lis.Addr().String(), h)
	served := lis
	if len(conf) > 0 {
		srv.TLSConfig = conf[0]
		served = tls.NewListener(lis, conf[0])
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(served) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return lis.Addr().String()
}

func (f *fixture) mint(t *testing.T, r devissuer.MintRequest) string {
	t.Helper()
	return testkit.Mint(t, f.iss, r)
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// curl posts body as `curl -s -H 'Content-Type: application/json' -d BODY`
// does and returns the status, the Content-Type and the body.
func curl(t *testing.T, url, body string) (int, string, []byte) {
	t.Helper()
	return post(t, url, "application/json", strings.NewReader(body))
}

func post(t *testing.T, url, contentType string, body io.Reader) (int, string, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, body)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("User-Agent", "curl/8.5.0")
	req.Header.Set("Accept", "*/*")
	req.Header.Set("Content-Type", contentType)
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("Content-Type"), b
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("response is not a JSON object: %v: %s", err, b)
	}
	return m
}

func strs(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

func TestValidateToken_JSON(t *testing.T) {
	f := newFixture(t)
	users := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}})
	url := f.url + "/usher.v1.TokenService/ValidateToken"

	for _, field := range []string{"expectedAudience", "expected_audience"} {
		t.Run(field, func(t *testing.T) {
			code, ct, b := curl(t, url, fmt.Sprintf(`{"token":%q,%q:"api/users"}`, users, field))
			if code != http.StatusOK || ct != "application/json" {
				t.Fatalf("VALID: HTTP %d %q: %s", code, ct, b)
			}
			m := decode(t, b)
			if m["valid"] != true || m["reason"] != "REASON_VALID" {
				t.Fatalf("want valid REASON_VALID, got %s", b)
			}
			claims := m["claims"].(map[string]any)
			if claims["issuer"] != f.iss.URL() || !slices.Equal(strs(claims["audience"]), []string{"api/users"}) {
				t.Errorf("claims %v", claims)
			}

			code, _, b = curl(t, url, fmt.Sprintf(`{"token":%q,%q:"api/invoices"}`, users, field))
			if code != http.StatusOK {
				t.Fatalf("AUDIENCE_MISMATCH is a verdict, not an error: HTTP %d: %s", code, b)
			}
			m = decode(t, b)
			if _, ok := m["valid"]; ok {
				t.Errorf("valid should be absent (false): %s", b)
			}
			if m["reason"] != "REASON_AUDIENCE_MISMATCH" {
				t.Fatalf("reason %v: %s", m["reason"], b)
			}
			mm := m["mismatch"].(map[string]any)
			if mm["claim"] != "aud" || !slices.Equal(strs(mm["expected"]), []string{"api/invoices"}) || !slices.Equal(strs(mm["actual"]), []string{"api/users"}) {
				t.Errorf("mismatch %v", mm)
			}
			if hint, _ := m["hint"].(string); !strings.Contains(hint, "Users API") || !strings.Contains(hint, "api/invoices") {
				t.Errorf("hint %q should name Users API and the audience to ask for", hint)
			}
			if msg, _ := m["message"].(string); msg != "token audience [api/users] does not include api/invoices" {
				t.Errorf("message %q", msg)
			}
			vs := m["violations"].([]any)
			if len(vs) == 0 || vs[0].(map[string]any)["reason"] != "REASON_AUDIENCE_MISMATCH" {
				t.Errorf("violations %v", vs)
			}
		})
	}
}

func TestValidateToken_EmptyAudienceIsInvalidArgument(t *testing.T) {
	f := newFixture(t)
	users := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})
	url := f.url + "/usher.v1.TokenService/ValidateToken"
	for name, body := range map[string]string{
		"empty":  fmt.Sprintf(`{"token":%q,"expected_audience":""}`, users),
		"absent": fmt.Sprintf(`{"token":%q}`, users),
	} {
		t.Run(name, func(t *testing.T) {
			code, ct, b := curl(t, url, body)
			if code != http.StatusBadRequest || ct != "application/json" {
				t.Fatalf("HTTP %d %q: %s", code, ct, b)
			}
			m := decode(t, b)
			if m["code"] != "invalid_argument" {
				t.Errorf("code %v: %s", m["code"], b)
			}
			if msg, _ := m["message"].(string); !strings.HasPrefix(msg, "expected_audience is empty") || !strings.Contains(msg, "never skips the audience check") {
				t.Errorf("message %q should be the gRPC status message", msg)
			}
		})
	}
}

func TestValidateToken_BadRequests(t *testing.T) {
	f := newFixture(t)
	users := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})
	url := f.url + "/usher.v1.TokenService/ValidateToken"

	t.Run("misspelt field is refused, not dropped", func(t *testing.T) {
		// Dropped, "required_scope" would make a call that checks no scope
		// and answers VALID.
		code, _, b := curl(t, url, fmt.Sprintf(`{"token":%q,"expected_audience":"api/users","required_scope":["users.write"]}`, users))
		if code != http.StatusBadRequest {
			t.Fatalf("HTTP %d: %s", code, b)
		}
		m := decode(t, b)
		if msg, _ := m["message"].(string); m["code"] != "invalid_argument" || !strings.Contains(msg, "required_scope") {
			t.Errorf("want invalid_argument naming the field, got %s", b)
		}
	})
	t.Run("charset parameter uses the same strict codec", func(t *testing.T) {
		code, _, b := post(t, url, "application/json; charset=utf-8", strings.NewReader(fmt.Sprintf(`{"token":%q,"expected_audience":"api/users","bogus":1}`, users)))
		if code != http.StatusBadRequest || decode(t, b)["code"] != "invalid_argument" {
			t.Fatalf("HTTP %d: %s", code, b)
		}
		code, _, b = post(t, url, "application/json; charset=utf-8", strings.NewReader(fmt.Sprintf(`{"token":%q,"expected_audience":"api/users"}`, users)))
		if code != http.StatusOK || decode(t, b)["reason"] != "REASON_VALID" {
			t.Fatalf("HTTP %d: %s", code, b)
		}
	})
	t.Run("the required scope is checked", func(t *testing.T) {
		code, _, b := curl(t, url, fmt.Sprintf(`{"token":%q,"expected_audience":"api/users","required_scopes":["users.write"]}`, users))
		if code != http.StatusOK || decode(t, b)["reason"] != "REASON_INSUFFICIENT_SCOPE" {
			t.Fatalf("HTTP %d: %s", code, b)
		}
	})
	t.Run("empty body", func(t *testing.T) {
		code, _, b := curl(t, url, "")
		if code != http.StatusBadRequest || decode(t, b)["code"] != "invalid_argument" {
			t.Fatalf("HTTP %d: %s", code, b)
		}
	})
	t.Run("not JSON", func(t *testing.T) {
		code, _, b := curl(t, url, "token="+users)
		if code != http.StatusBadRequest || decode(t, b)["code"] != "invalid_argument" {
			t.Fatalf("HTTP %d: %s", code, b)
		}
	})
	t.Run("form content type (curl -d without -H)", func(t *testing.T) {
		code, _, b := post(t, url, "application/x-www-form-urlencoded", strings.NewReader(fmt.Sprintf(`{"token":%q,"expected_audience":"api/users"}`, users)))
		if code != http.StatusUnsupportedMediaType {
			t.Fatalf("HTTP %d: %s", code, b)
		}
	})
	t.Run("GET", func(t *testing.T) {
		resp, err := httpClient.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Fatalf("GET: HTTP %d", resp.StatusCode)
		}
	})
}

func TestInspectToken_JSON(t *testing.T) {
	f := newFixture(t)
	invoices := f.mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
	code, _, b := curl(t, f.url+"/usher.v1.TokenService/InspectToken", fmt.Sprintf(`{"token":%q}`, "Bearer "+invoices))
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, b)
	}
	m := decode(t, b)
	if m["signature"] != "REASON_VALID" {
		t.Errorf("signature %v: %s", m["signature"], b)
	}
	auds := m["audiences"].([]any)
	if len(auds) != 1 || auds[0].(map[string]any)["audience"] != "api/invoices" || auds[0].(map[string]any)["name"] != "Invoices API" {
		t.Errorf("audiences %v", auds)
	}
	hdr := m["header"].(map[string]any)
	if hdr["typ"] != "at+jwt" || hdr["kid"] != devissuer.KeyRS256 {
		t.Errorf("header %v", hdr)
	}
	claims := m["claims"].(map[string]any)
	if !slices.Equal(strs(claims["scopes"]), []string{"invoices.read"}) || claims["keyId"] != devissuer.KeyRS256 {
		t.Errorf("claims %v", claims)
	}

	// A forged token: decoded, but the signature is not VALID.
	forged := invoices[:len(invoices)-4] + "AAAA"
	if forged == invoices {
		t.Fatal("forgery did not change the token")
	}
	_, _, b = curl(t, f.url+"/usher.v1.TokenService/InspectToken", fmt.Sprintf(`{"token":%q}`, forged))
	if m := decode(t, b); m["signature"] != "REASON_INVALID_SIGNATURE" || m["audiences"] != nil {
		t.Errorf("forged: %s", b)
	}
}

func TestListIssuers_JSON(t *testing.T) {
	f := newFixture(t)
	code, _, b := curl(t, f.url+"/usher.v1.TokenService/ListIssuers", `{}`)
	if code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", code, b)
	}
	iss := decode(t, b)["issuers"].([]any)
	if len(iss) != 2 {
		t.Fatalf("issuers %v, want the dev issuer and the one whose keys are down", iss)
	}
	byIssuer := map[string]map[string]any{}
	for _, x := range iss {
		st := x.(map[string]any)
		byIssuer[st["issuer"].(string)] = st
	}

	st := byIssuer[f.iss.URL()]
	if st == nil || st["jwksUri"] != f.iss.JWKSURL() {
		t.Fatalf("dev issuer %v in %v", st, iss)
	}
	if kids := strs(st["keyIds"]); !slices.Contains(kids, devissuer.KeyRS256) || !slices.Contains(kids, devissuer.KeyES256) {
		t.Errorf("keyIds %v", kids)
	}
	if _, ok := st["lastRefresh"].(string); !ok {
		t.Errorf("lastRefresh %v", st["lastRefresh"])
	}
	if e, ok := st["lastError"]; ok {
		t.Errorf("lastError %v", e)
	}

	down := byIssuer[f.down.URL()]
	if down == nil {
		t.Fatalf("the issuer whose keys are down is not listed: %v", iss)
	}
	if e, _ := down["lastError"].(string); e == "" {
		t.Errorf("down issuer: no lastError: %v", down)
	}
	if _, ok := down["keyIds"]; ok {
		t.Errorf("down issuer: keyIds %v", down["keyIds"])
	}
}

func TestRequestSizeLimits(t *testing.T) {
	f := newFixture(t)
	url := f.url + "/usher.v1.TokenService/ValidateToken"
	body := func(tokenBytes int) string {
		return fmt.Sprintf(`{"token":%q,"expected_audience":"api/users"}`, strings.Repeat("a", tokenBytes))
	}

	// Under MaxRequestBytes: decoded and answered (too large for the
	// engine's 16 KiB max_token_bytes, so MALFORMED).
	code, _, b := curl(t, url, body(httpapi.MaxRequestBytes-100))
	if code != http.StatusOK || decode(t, b)["reason"] != "REASON_MALFORMED" {
		t.Fatalf("just under the limit: HTTP %d: %s", code, b)
	}

	// Over it: refused before decoding.
	code, _, b = curl(t, url, body(httpapi.MaxRequestBytes+1))
	if code != http.StatusTooManyRequests {
		t.Fatalf("over the limit: HTTP %d: %s", code, b)
	}
	m := decode(t, b)
	if msg, _ := m["message"].(string); m["code"] != "resource_exhausted" || !strings.Contains(msg, "larger than configured max") {
		t.Errorf("over the limit: %s", b)
	}

	// connect.WithReadMaxBytes given to Handler wins over the default.
	addr := serveHTTP(t, httpapi.Handler(grpcapi.NewServer(f.v, nil), connect.WithReadMaxBytes(4*httpapi.MaxRequestBytes)))
	code, _, b = curl(t, "http://"+addr+"/usher.v1.TokenService/ValidateToken", body(2*httpapi.MaxRequestBytes))
	if code != http.StatusOK || decode(t, b)["reason"] != "REASON_MALFORMED" {
		t.Fatalf("raised limit: HTTP %d: %s", code, b)
	}
}

// countingReader yields n bytes of a JSON string's content and counts what
// was read.
type countingReader struct {
	n, read int
}

func (r *countingReader) Read(p []byte) (int, error) {
	if r.read >= r.n {
		return 0, io.EOF
	}
	k := min(len(p), r.n-r.read)
	for i := range p[:k] {
		p[i] = 'a'
	}
	r.read += k
	return k, nil
}

func TestBodyIsNeverReadPastMaxBodyBytes(t *testing.T) {
	f := newFixture(t)
	for _, limit := range []int{0, httpapi.MaxRequestBytes, 64 << 20} {
		t.Run(fmt.Sprint("read max ", limit), func(t *testing.T) {
			h := httpapi.Handler(grpcapi.NewServer(f.v, nil), connect.WithReadMaxBytes(limit))
			body := &countingReader{n: 32 << 20}
			req := httptest.NewRequest(http.MethodPost, "/usher.v1.TokenService/ValidateToken", io.MultiReader(strings.NewReader(`{"token":"`), body))
			req.Header.Set("Content-Type", "application/json")
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code == http.StatusOK {
				t.Fatalf("a 32 MiB body was accepted: %s", rec.Body)
			}
			if body.read > httpapi.MaxBodyBytes+64<<10 {
				t.Errorf("read %d bytes of the body, want at most about %d", body.read, httpapi.MaxBodyBytes)
			}
		})
	}
}

func TestHealthz(t *testing.T) {
	f := newFixture(t)
	for name, c := range map[string]*http.Client{"HTTP/1.1": httpClient, "h2c": h2cClient(t)} {
		t.Run(name, func(t *testing.T) {
			resp := getHealthz(t, c, f.url)
			if want := map[string]int{"HTTP/1.1": 1, "h2c": 2}[name]; resp.ProtoMajor != want {
				t.Errorf("served over %s, want HTTP/%d", resp.Proto, want)
			}
		})
	}
	code, _, _ := curl(t, f.url+"/healthz", "")
	if code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz: HTTP %d", code)
	}
	resp, err := httpClient.Get(f.url + "/nothing-here")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nothing-here: HTTP %d", resp.StatusCode)
	}
}

// h2cClient speaks HTTP/2 with prior knowledge over plaintext, as gRPC
// clients do. Its idle connections close before the servers shut down.
func h2cClient(t *testing.T) *http.Client {
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &p}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Timeout: 10 * time.Second, Transport: tr}
}

// TestParity_GRPCAndHTTPJSON sends the same tokens to the gRPC server and,
// as curl would, to the HTTP listener, and wants identical verdicts.
func TestParity_GRPCAndHTTPJSON(t *testing.T) {
	f := newFixture(t)
	users := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}})
	unknownKey := &usherv1.ValidateTokenRequest{Token: f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, KeyID: "rotated-away"}), ExpectedAudience: "api/users"}
	cases := []struct {
		name   string
		req    *usherv1.ValidateTokenRequest
		reason usherv1.Reason
	}{
		{"valid", &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/users"}, usherv1.Reason_REASON_VALID},
		{"valid with scope and Bearer", &usherv1.ValidateTokenRequest{Token: "  bearer " + users + "\n", ExpectedAudience: "api/users", RequiredScopes: []string{"users.read"}}, usherv1.Reason_REASON_VALID},
		{"audience mismatch", &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/invoices"}, usherv1.Reason_REASON_AUDIENCE_MISMATCH},
		{"audience near miss", &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/users/"}, usherv1.Reason_REASON_AUDIENCE_MISMATCH},
		{"insufficient scope", &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/users", RequiredScopes: []string{"users.write"}}, usherv1.Reason_REASON_INSUFFICIENT_SCOPE},
		{"expired, wrong API", &usherv1.ValidateTokenRequest{Token: f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, TTL: -5 * time.Minute}), ExpectedAudience: "api/invoices"}, usherv1.Reason_REASON_EXPIRED},
		{"ES256", &usherv1.ValidateTokenRequest{Token: f.mint(t, devissuer.MintRequest{Audience: []string{"api/users", "api/invoices"}, KeyID: devissuer.KeyES256}), ExpectedAudience: "api/invoices"}, usherv1.Reason_REASON_VALID},
		{"unknown key", unknownKey, usherv1.Reason_REASON_UNKNOWN_KEY},
		{"invalid signature", &usherv1.ValidateTokenRequest{Token: users[:len(users)-4] + "AAAA", ExpectedAudience: "api/users"}, usherv1.Reason_REASON_INVALID_SIGNATURE},
		{"malformed", &usherv1.ValidateTokenRequest{Token: "not.a.jwt", ExpectedAudience: "api/users"}, usherv1.Reason_REASON_MALFORMED},
		{"empty token", &usherv1.ValidateTokenRequest{ExpectedAudience: "api/users"}, usherv1.Reason_REASON_MALFORMED},
		{"unicode audience", &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/usérs\u200b"}, usherv1.Reason_REASON_AUDIENCE_MISMATCH},
	}
	url := f.url + "/usher.v1.TokenService/ValidateToken"
	// The first unknown kid refetches the key set; later ones, within the
	// cooldown, are told when it was fetched. Spend the refetch here, so that
	// the clock-fixed answers below are all the same.
	if _, err := f.grpc.ValidateToken(f.ctx, unknownKey); err != nil {
		t.Fatal(err)
	}
	for _, useProtoNames := range []bool{false, true} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/protoNames=%v", tc.name, useProtoNames), func(t *testing.T) {
				ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
				defer cancel()
				want, err := f.grpc.ValidateToken(ctx, tc.req)
				if err != nil {
					t.Fatal(err)
				}
				if want.GetReason() != tc.reason {
					t.Fatalf("gRPC reason %v, want %v", want.GetReason(), tc.reason)
				}
				body, err := protojson.MarshalOptions{UseProtoNames: useProtoNames}.Marshal(tc.req)
				if err != nil {
					t.Fatal(err)
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
	}

	t.Run("InspectToken", func(t *testing.T) {
		for _, tok := range []string{users, users[:len(users)-4] + "AAAA", "x.y"} {
			want, err := f.grpc.InspectToken(f.ctx, &usherv1.InspectTokenRequest{Token: tok})
			if err != nil {
				t.Fatal(err)
			}
			_, _, b := curl(t, f.url+"/usher.v1.TokenService/InspectToken", fmt.Sprintf(`{"token":%q}`, tok))
			got := &usherv1.InspectTokenResponse{}
			if err := protojson.Unmarshal(b, got); err != nil {
				t.Fatalf("%v: %s", err, b)
			}
			if !proto.Equal(got, want) {
				t.Errorf("HTTP/JSON and gRPC differ:\nHTTP: %v\ngRPC: %v", got, want)
			}
		}
	})

	t.Run("empty audience", func(t *testing.T) {
		_, err := f.grpc.ValidateToken(f.ctx, &usherv1.ValidateTokenRequest{Token: users})
		st := status.Convert(err)
		if st.Code() != codes.InvalidArgument {
			t.Fatalf("gRPC: %v", err)
		}
		code, _, b := curl(t, url, fmt.Sprintf(`{"token":%q}`, users))
		m := decode(t, b)
		if code != http.StatusBadRequest || m["code"] != "invalid_argument" || m["message"] != st.Message() {
			t.Errorf("HTTP %d %s, want invalid_argument %q", code, b, st.Message())
		}
	})
}

// TestOtherProtocols calls the HTTP listener with the generated Connect
// client (Connect, gRPC-Web and gRPC) and with grpc-go itself.
func TestOtherProtocols(t *testing.T) {
	f := newFixture(t)
	users := f.mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})
	mismatch := &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: "api/invoices"}
	want, err := f.grpc.ValidateToken(f.ctx, mismatch)
	if err != nil {
		t.Fatal(err)
	}

	clients := map[string]usherv1connect.TokenServiceClient{
		"connect":            usherv1connect.NewTokenServiceClient(http.DefaultClient, f.url),
		"connect+json":       usherv1connect.NewTokenServiceClient(http.DefaultClient, f.url, connect.WithProtoJSON()),
		"grpc-web":           usherv1connect.NewTokenServiceClient(http.DefaultClient, f.url, connect.WithGRPCWeb()),
		"grpc over h2c":      usherv1connect.NewTokenServiceClient(h2cClient(t), f.url, connect.WithGRPC()),
		"grpc+json over h2c": usherv1connect.NewTokenServiceClient(h2cClient(t), f.url, connect.WithGRPC(), connect.WithProtoJSON()),
	}
	for name, c := range clients {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
			defer cancel()
			resp, err := c.ValidateToken(ctx, connect.NewRequest(mismatch))
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(resp.Msg, want) {
				t.Errorf("got %v, want %v", resp.Msg, want)
			}
			_, err = c.ValidateToken(ctx, connect.NewRequest(&usherv1.ValidateTokenRequest{Token: users}))
			if connect.CodeOf(err) != connect.CodeInvalidArgument || !strings.Contains(err.Error(), "expected_audience is empty") {
				t.Errorf("empty audience: %v", err)
			}
			is, err := c.ListIssuers(ctx, connect.NewRequest(&usherv1.ListIssuersRequest{}))
			if err != nil || len(is.Msg.GetIssuers()) != 2 {
				t.Errorf("ListIssuers: %v, %v", is, err)
			}
		})
	}

	t.Run("grpc-go", func(t *testing.T) {
		conn, err := grpc.NewClient(f.httpAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		c := usherv1.NewTokenServiceClient(conn)
		ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
		defer cancel()
		got, err := c.ValidateToken(ctx, mismatch)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("got %v, want %v", got, want)
		}
		_, err = c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: users})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("empty audience: %v", err)
		}
	})
}

// stub is a TokenServiceServer whose ValidateToken returns err and records
// whether its context had a deadline.
type stub struct {
	usherv1.UnimplementedTokenServiceServer
	err      error
	deadline chan time.Duration
}

func (s *stub) ValidateToken(ctx context.Context, _ *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	if d, ok := ctx.Deadline(); ok {
		s.deadline <- time.Until(d)
	} else {
		s.deadline <- -1
	}
	return nil, s.err
}

func TestErrorsKeepCodeMessageAndDetails(t *testing.T) {
	info := &errdetails.ErrorInfo{Reason: "KEYS_UNAVAILABLE", Domain: "usher.v1", Metadata: map[string]string{"issuer": "https://auth.example.com/"}}
	withDetail, err := status.New(codes.Unavailable, "keys down").WithDetails(info)
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		err      error
		code     connect.Code
		httpCode int
		message  string
		detail   bool
	}{
		{"invalid argument", status.Error(codes.InvalidArgument, "expected_audience is empty"), connect.CodeInvalidArgument, 400, "expected_audience is empty", false},
		{"permission denied", status.Error(codes.PermissionDenied, "no"), connect.CodePermissionDenied, 403, "no", false},
		{"resource exhausted", status.Error(codes.ResourceExhausted, "overloaded"), connect.CodeResourceExhausted, 429, "overloaded", false},
		{"unavailable with detail", withDetail.Err(), connect.CodeUnavailable, 503, "keys down", true},
		{"unauthenticated", status.Error(codes.Unauthenticated, "who"), connect.CodeUnauthenticated, 401, "who", false},
		{"wrapped status", fmt.Errorf("outer: %w", status.Error(codes.NotFound, "gone")), connect.CodeNotFound, 404, "outer: rpc error: code = NotFound desc = gone", false},
		{"plain error", errors.New("boom"), connect.CodeUnknown, 500, "boom", false},
		{"deadline", fmt.Errorf("fetch: %w", context.DeadlineExceeded), connect.CodeDeadlineExceeded, 504, "fetch: context deadline exceeded", false},
		{"connect error", connect.NewError(connect.CodeAborted, errors.New("as is")), connect.CodeAborted, 409, "as is", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := &stub{err: tc.err, deadline: make(chan time.Duration, 2)}
			addr := serveHTTP(t, httpapi.Handler(s))
			code, _, b := curl(t, "http://"+addr+"/usher.v1.TokenService/ValidateToken", `{"token":"t","expected_audience":"a"}`)
			m := decode(t, b)
			if code != tc.httpCode || m["code"] != tc.code.String() || m["message"] != tc.message {
				t.Errorf("HTTP %d %s, want %d %s %q", code, b, tc.httpCode, tc.code, tc.message)
			}
			if d := <-s.deadline; d <= 0 || d > httpapi.MaxCallTime {
				t.Errorf("a call without a deadline ran with %v left, want at most MaxCallTime", d)
			}

			c := usherv1connect.NewTokenServiceClient(http.DefaultClient, "http://"+addr)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			_, err := c.ValidateToken(ctx, connect.NewRequest(&usherv1.ValidateTokenRequest{Token: "t", ExpectedAudience: "a"}))
			var ce *connect.Error
			if !errors.As(err, &ce) || ce.Code() != tc.code || ce.Message() != tc.message {
				t.Fatalf("connect client: %v", err)
			}
			if d := <-s.deadline; d <= 0 || d > 3*time.Second {
				t.Errorf("the client's 3s deadline arrived as %v", d)
			}
			if tc.detail {
				ds := ce.Details()
				if len(ds) != 1 {
					t.Fatalf("details %v", ds)
				}
				v, err := ds[0].Value()
				if err != nil {
					t.Fatal(err)
				}
				if !proto.Equal(v, info) {
					t.Errorf("detail %v, want %v", v, info)
				}
			} else if len(ce.Details()) != 0 {
				t.Errorf("unexpected details %v", ce.Details())
			}
		})
	}
}

func TestNewServer(t *testing.T) {
	srv := httpapi.NewServer("127.0.0.1:8080", http.NotFoundHandler())
	if srv.Addr != "127.0.0.1:8080" {
		t.Errorf("Addr %q", srv.Addr)
	}
	for name, d := range map[string]time.Duration{"ReadHeaderTimeout": srv.ReadHeaderTimeout, "ReadTimeout": srv.ReadTimeout, "WriteTimeout": srv.WriteTimeout, "IdleTimeout": srv.IdleTimeout} {
		if d <= 0 {
			t.Errorf("%s unset", name)
		}
	}
	if srv.WriteTimeout <= httpapi.MaxCallTime {
		t.Errorf("WriteTimeout %v would cut a call short of MaxCallTime %v", srv.WriteTimeout, httpapi.MaxCallTime)
	}
	if p := srv.Protocols; p == nil || !p.HTTP1() || !p.UnencryptedHTTP2() {
		t.Errorf("Protocols %v, want HTTP/1.1 and h2c", p)
	}
}

// TestNewServerOverTLS serves NewServer as usher serve does when tls is
// configured (servertls's configuration, the listener wrapped by
// tls.NewListener): HTTP/2 is negotiated by ALPN, and HTTP/1.1 still works.
func TestNewServerOverTLS(t *testing.T) {
	ca := testkit.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, 2, x509.ExtKeyUsageServerAuth)
	conf, err := servertls.Config(servertls.Files{CertFile: testkit.WriteFile(t, "tls.crt", certPEM), KeyFile: testkit.WriteFile(t, "tls.key", keyPEM)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	pool := ca.Pool()
	addr := serveHTTP(t, httpapi.Handler(&stub{}), conf)

	for _, want := range []int{2, 1} {
		t.Run(fmt.Sprint("HTTP/", want), func(t *testing.T) {
			var p http.Protocols
			p.SetHTTP1(want == 1)
			p.SetHTTP2(want == 2)
			tr := &http.Transport{Protocols: &p, TLSClientConfig: &tls.Config{RootCAs: pool}}
			t.Cleanup(tr.CloseIdleConnections)
			c := &http.Client{Timeout: 10 * time.Second, Transport: tr}
			if resp := getHealthz(t, c, "https://"+addr); resp.ProtoMajor != want {
				t.Errorf("served over %s, want HTTP/%d", resp.Proto, want)
			}
		})
	}
}

// getHealthz asks base's /healthz and fails the test unless it answers 200 "ok".
func getHealthz(t *testing.T, c *http.Client, base string) *http.Response {
	t.Helper()
	resp, err := c.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || strings.TrimSpace(string(b)) != "ok" {
		t.Fatalf("HTTP %d %q", resp.StatusCode, b)
	}
	return resp
}
