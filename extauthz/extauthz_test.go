package extauthz_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/reasons"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// engine is testkit's dev-issuer engine (a real validator trusting a dev
// issuer on 127.0.0.1, and a second issuer whose key set cannot be fetched:
// KEYS_UNAVAILABLE), with a debug log the tests read.
type engine struct {
	*testkit.DevEngine
	logs *testkit.SyncBuffer
	log  *slog.Logger
}

func newEngine(t *testing.T) *engine {
	t.Helper()
	logs := &testkit.SyncBuffer{}
	return &engine{
		DevEngine: testkit.NewDevEngine(t),
		logs:      logs,
		log:       slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
}

// serve starts the Authorization service on the engine, on a real gRPC
// server on 127.0.0.1, and returns a client of it.
func (e *engine) serve(t *testing.T, cfg extauthz.Config) authv3.AuthorizationClient {
	t.Helper()
	return serve(t, e.Validator, cfg, e.log)
}

// serve starts the Authorization service for v on a real gRPC server on
// 127.0.0.1 and returns a client of it.
func serve(t *testing.T, v extauthz.Validator, cfg extauthz.Config, log *slog.Logger) authv3.AuthorizationClient {
	t.Helper()
	s, err := extauthz.New(v, cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.Register(gs)
	done := make(chan error, 1)
	go func() { done <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Serve did not return after Stop")
		}
	})
	return authv3.NewAuthorizationClient(testkit.Dial(t, lis.Addr().String()))
}

// request is what Envoy reports about one HTTP request.
type request struct {
	host, path string
	headers    map[string]string     // the default: merged, lower-cased
	raw        []*corev3.HeaderValue // encode_raw_headers: one entry per value
	ext        map[string]string     // the route's context extensions
}

func check(t *testing.T, c authv3.AuthorizationClient, r request) *authv3.CheckResponse {
	t.Helper()
	ctx := testkit.Context(t)
	hr := &authv3.AttributeContext_HttpRequest{
		Id: "req-1", Method: "GET", Host: r.host, Path: r.path, Scheme: "https", Protocol: "HTTP/1.1",
		Headers: r.headers,
	}
	if r.raw != nil {
		hr.HeaderMap = &corev3.HeaderMap{Headers: r.raw}
	}
	resp, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request:           &authv3.AttributeContext_Request{Http: hr},
		ContextExtensions: r.ext,
	}})
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	return resp
}

// testRoutes: one API by host, two by host and path prefix.
var testRoutes = []extauthz.Route{
	{Host: "users.example.com", Audience: "api/users"},
	{Host: "api.example.com", PathPrefix: "/invoices", Audience: "api/invoices", RequiredScopes: []string{"invoices.read"}},
	{Host: "api.example.com", PathPrefix: "/users", Audience: "api/users"},
}

func bearerHeaders(tok string, extra ...string) map[string]string {
	h := map[string]string{"authorization": "Bearer " + tok, ":method": "GET", "user-agent": "test"}
	for i := 0; i+1 < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return h
}

// wantOK: the claim headers Envoy sets and the headers it removes.
type wantOK struct {
	set    map[string]string
	remove []string
	prefix string // of the claim headers; default x-usher-
}

// wantDenied: exact status codes, challenge (empty: no header), reason and message.
type wantDenied struct {
	code          codes.Code
	http          int
	reason        string
	challenge     string
	message       string // exact; or, ending in "…", a prefix
	hintContains  string
	noHint        bool
	challengeFrom string // prefix of the challenge, when the message varies
}

func oneHeader(t *testing.T, hs []*corev3.HeaderValueOption, key string) string {
	t.Helper()
	var vals []string
	for _, h := range hs {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: append_action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), h.GetAppendAction())
		}
		if h.GetHeader().GetKey() == key {
			vals = append(vals, h.GetHeader().GetValue())
		}
	}
	switch len(vals) {
	case 0:
		return ""
	case 1:
		return vals[0]
	default:
		t.Errorf("header %s set %d times: %q", key, len(vals), vals)
		return vals[0]
	}
}

func assertOK(t *testing.T, resp *authv3.CheckResponse, in map[string]string, want wantOK) {
	t.Helper()
	if c := codes.Code(resp.GetStatus().GetCode()); c != codes.OK {
		t.Fatalf("status %v %q, want OK; denied response: %v", c, resp.GetStatus().GetMessage(), resp.GetDeniedResponse())
	}
	ok := resp.GetOkResponse()
	if ok == nil {
		t.Fatalf("no OkResponse: %v", resp)
	}
	got := map[string]string{}
	for _, h := range ok.GetHeaders() {
		if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD {
			t.Errorf("header %s: append_action %v, want OVERWRITE_IF_EXISTS_OR_ADD", h.GetHeader().GetKey(), h.GetAppendAction())
		}
		if h.GetAppend() != nil {
			t.Errorf("header %s: deprecated append set", h.GetHeader().GetKey())
		}
		if _, dup := got[h.GetHeader().GetKey()]; dup {
			t.Errorf("header %s set twice", h.GetHeader().GetKey())
		}
		got[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if !reflect.DeepEqual(got, want.set) {
		t.Errorf("headers set = %q, want %q", got, want.set)
	}
	if !slices.Equal(ok.GetHeadersToRemove(), want.remove) {
		t.Errorf("headers_to_remove = %q, want %q", ok.GetHeadersToRemove(), want.remove)
	}
	// What the upstream receives: Envoy sets the headers, then removes
	// headers_to_remove (source/extensions/filters/http/ext_authz).
	up := map[string]string{}
	for k, v := range in {
		up[strings.ToLower(k)] = v
	}
	maps.Copy(up, got)
	for _, k := range ok.GetHeadersToRemove() {
		delete(up, k)
	}
	prefix := want.prefix
	if prefix == "" {
		prefix = extauthz.DefaultHeaderPrefix
	}
	for k, v := range up {
		if strings.HasPrefix(k, prefix) && want.set[k] != v {
			t.Errorf("upstream receives %s: %q, which usher did not set", k, v)
		}
	}
	for k, v := range want.set {
		if up[k] != v {
			t.Errorf("upstream receives %s: %q, want %q", k, up[k], v)
		}
	}
	if in["authorization"] != "" && up["authorization"] != in["authorization"] {
		t.Errorf("authorization header changed on its way upstream")
	}
}

func assertDenied(t *testing.T, resp *authv3.CheckResponse, want wantDenied) {
	t.Helper()
	if c := codes.Code(resp.GetStatus().GetCode()); c != want.code {
		t.Errorf("status %v, want %v (%q)", c, want.code, resp.GetStatus().GetMessage())
	}
	if !strings.HasPrefix(resp.GetStatus().GetMessage(), want.reason) {
		t.Errorf("status message %q does not start with %s", resp.GetStatus().GetMessage(), want.reason)
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Fatalf("no DeniedResponse: %v", resp)
	}
	if got := int(d.GetStatus().GetCode()); got != want.http {
		t.Errorf("HTTP status %d, want %d", got, want.http)
	}
	chal := oneHeader(t, d.GetHeaders(), "www-authenticate")
	switch {
	case want.challengeFrom != "":
		if !strings.HasPrefix(chal, want.challengeFrom) {
			t.Errorf("www-authenticate %q, want prefix %q", chal, want.challengeFrom)
		}
	case chal != want.challenge:
		t.Errorf("www-authenticate\n got %q\nwant %q", chal, want.challenge)
	}
	if got := oneHeader(t, d.GetHeaders(), "x-usher-reason"); got != want.reason {
		t.Errorf("x-usher-reason %q, want %q", got, want.reason)
	}
	if got := oneHeader(t, d.GetHeaders(), "content-type"); got != "application/json" {
		t.Errorf("content-type %q", got)
	}
	var body struct{ Reason, Message, Hint string }
	dec := json.NewDecoder(strings.NewReader(d.GetBody()))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		t.Fatalf("body %q: %v", d.GetBody(), err)
	}
	if body.Reason != want.reason {
		t.Errorf("body reason %q, want %q", body.Reason, want.reason)
	}
	if p, ok := strings.CutSuffix(want.message, "…"); ok {
		if !strings.HasPrefix(body.Message, p) {
			t.Errorf("body message %q, want prefix %q", body.Message, p)
		}
	} else if body.Message != want.message {
		t.Errorf("body message\n got %q\nwant %q", body.Message, want.message)
	}
	switch {
	case want.noHint && body.Hint != "":
		t.Errorf("body hint %q, want none", body.Hint)
	case !want.noHint && !strings.Contains(body.Hint, want.hintContains):
		t.Errorf("body hint %q does not contain %q", body.Hint, want.hintContains)
	}
	if resp.GetOkResponse() != nil {
		t.Errorf("denied response also carries an OkResponse")
	}
}

func TestCheck(t *testing.T) {
	e := newEngine(t)
	c := e.serve(t, extauthz.Config{Routes: testRoutes})

	users := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read", "users.write"}, Subject: "svc-billing-ui", ClientID: "billing-ui"})
	invoices := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
	invoicesNoScope := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.write"}})
	expired := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, TTL: -5 * time.Minute})
	keysDown := testkit.Mint(t, e.Down, devissuer.MintRequest{Audience: []string{"api/users"}})

	usersClaims := map[string]string{
		"x-usher-subject": "svc-billing-ui", "x-usher-issuer": e.Issuer.URL(), "x-usher-scopes": "users.read users.write",
		"x-usher-client-id": "billing-ui", "x-usher-audience": "api/users",
	}
	invoicesClaims := map[string]string{
		"x-usher-subject": devissuer.ClientID, "x-usher-issuer": e.Issuer.URL(), "x-usher-scopes": "invoices.read",
		"x-usher-client-id": devissuer.ClientID, "x-usher-audience": "api/invoices",
	}
	audienceHint := `this token was issued for Users API (api/users); ask the issuer for a token with audience api/invoices (OAuth 2.0 "audience" or RFC 8707 "resource" parameter)`

	tests := []struct {
		name   string
		req    request
		ok     *wantOK
		denied *wantDenied
	}{{
		name: "users token on the users route (host), forged claim headers",
		req: request{host: "users.example.com", path: "/v1/users/7?expand=all", headers: bearerHeaders(users,
			"x-usher-subject", "admin", "X-Usher-Role", "root", "x-usher-audience", "api/admin", "x-request-id", "abc")},
		ok: &wantOK{set: usersClaims, remove: []string{"x-usher-role"}},
	}, {
		name: "users token, host with a port",
		req:  request{host: "Users.Example.com:8443", path: "/", headers: bearerHeaders(users)},
		ok:   &wantOK{set: usersClaims},
	}, {
		name: "users token on the users route (path prefix)",
		req:  request{host: "api.example.com", path: "/users/7", headers: bearerHeaders(users, "x-usher-client-id", "forged")},
		ok:   &wantOK{set: usersClaims},
	}, {
		name: "invoices token on the invoices route (path prefix, required scope)",
		req:  request{host: "api.example.com", path: "/invoices/42", headers: bearerHeaders(invoices, "x-usher-scopes", "invoices.admin")},
		ok:   &wantOK{set: invoicesClaims},
	}, {
		name: "lower-case bearer scheme",
		req:  request{host: "users.example.com", path: "/", headers: map[string]string{"authorization": "bearer   " + users + " "}},
		ok:   &wantOK{set: usersClaims},
	}, {
		name: "users token on the invoices route: AUDIENCE_MISMATCH",
		req:  request{host: "api.example.com", path: "/invoices/42", headers: bearerHeaders(users)},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "AUDIENCE_MISMATCH",
			challenge:    `Bearer realm="api/invoices", error="invalid_token", error_description="token audience [api/users] does not include api/invoices"`,
			message:      "token audience [api/users] does not include api/invoices",
			hintContains: audienceHint,
		},
	}, {
		name: "invoices token without the required scope: INSUFFICIENT_SCOPE",
		req:  request{host: "api.example.com", path: "/invoices", headers: bearerHeaders(invoicesNoScope)},
		denied: &wantDenied{
			code: codes.PermissionDenied, http: 403, reason: "INSUFFICIENT_SCOPE",
			challenge:    `Bearer realm="api/invoices", error="insufficient_scope", error_description="token lacks scope invoices.read (granted: invoices.write)", scope="invoices.read"`,
			message:      "token lacks scope invoices.read (granted: invoices.write)",
			hintContains: `"invoices.read"`,
		},
	}, {
		name: "expired token: EXPIRED",
		req:  request{host: "users.example.com", path: "/", headers: bearerHeaders(expired)},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "EXPIRED",
			challengeFrom: `Bearer realm="api/users", error="invalid_token", error_description="token expired `,
			message:       "token expired …",
		},
	}, {
		name: "no token",
		req:  request{host: "users.example.com", path: "/", headers: map[string]string{"user-agent": "curl"}},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "MISSING_CREDENTIALS",
			challenge:    `Bearer realm="api/users"`,
			message:      `no authorization header: send "authorization: Bearer <access token>"`,
			hintContains: "request an access token with audience api/users from the issuer",
		},
	}, {
		name: "Basic scheme",
		req:  request{host: "users.example.com", path: "/", headers: map[string]string{"authorization": "Basic dXNlcjpwYXNz"}},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "INVALID_CREDENTIALS",
			challenge:    `Bearer realm="api/users", error="invalid_request", error_description="authorization scheme 'Basic': this API takes Bearer or DPoP tokens"`,
			message:      `authorization scheme "Basic": this API takes Bearer or DPoP tokens`,
			hintContains: "exactly one",
		},
	}, {
		name: "two authorization values, merged by Envoy",
		req:  request{host: "users.example.com", path: "/", headers: map[string]string{"authorization": "Bearer " + users + ",Bearer " + invoices}},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "INVALID_CREDENTIALS",
			challenge:    `Bearer realm="api/users", error="invalid_request", error_description="2 authorization values: send exactly one"`,
			message:      "2 authorization values: send exactly one",
			hintContains: "exactly one",
		},
	}, {
		name: "empty bearer token",
		req:  request{host: "users.example.com", path: "/", headers: map[string]string{"authorization": "Bearer "}},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "INVALID_CREDENTIALS",
			challenge:    `Bearer realm="api/users", error="invalid_request", error_description="empty bearer token"`,
			message:      "empty bearer token",
			hintContains: "exactly one",
		},
	}, {
		name: "context extension overrides the routes",
		req:  request{host: "users.example.com", path: "/", headers: bearerHeaders(users), ext: map[string]string{"usher_audience": "api/invoices"}},
		denied: &wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "AUDIENCE_MISMATCH",
			challenge:    `Bearer realm="api/invoices", error="invalid_token", error_description="token audience [api/users] does not include api/invoices"`,
			message:      "token audience [api/users] does not include api/invoices",
			hintContains: audienceHint,
		},
	}, {
		name: "context extension on a host no route knows",
		req:  request{host: "invoices.internal:8080", path: "/", headers: bearerHeaders(invoices), ext: map[string]string{"usher_audience": "api/invoices"}},
		ok:   &wantOK{set: invoicesClaims},
	}, {
		name: "context extension with required scopes",
		req: request{host: "invoices.internal", path: "/", headers: bearerHeaders(invoicesNoScope),
			ext: map[string]string{"usher_audience": "api/invoices", "usher_scopes": "invoices.read  invoices.write"}},
		denied: &wantDenied{
			code: codes.PermissionDenied, http: 403, reason: "INSUFFICIENT_SCOPE",
			challenge:    `Bearer realm="api/invoices", error="insufficient_scope", error_description="token lacks scope invoices.read (granted: invoices.write)", scope="invoices.read invoices.write"`,
			message:      "token lacks scope invoices.read (granted: invoices.write)",
			hintContains: "invoices.read",
		},
	}, {
		name: "empty context extension",
		req:  request{host: "users.example.com", path: "/", headers: bearerHeaders(users), ext: map[string]string{"usher_audience": " "}},
		denied: &wantDenied{
			code: codes.PermissionDenied, http: 403, reason: "NO_ROUTE",
			message:      "the route's usher_audience context extension is empty: set it to the audience of the API behind the route",
			hintContains: "usher_audience",
		},
	}, {
		name: "no route, even with a valid token",
		req:  request{host: "other.example.com", path: "/users/7", headers: bearerHeaders(users)},
		denied: &wantDenied{
			code: codes.PermissionDenied, http: 403, reason: "NO_ROUTE",
			message:      `no route of usher's ext_authz configuration matches host "other.example.com" path "/users/7", and Envoy set no usher_audience context extension; usher denies what it cannot map to an audience`,
			hintContains: "add a route",
		},
	}, {
		name: "no route: path outside every prefix of the host",
		req:  request{host: "api.example.com", path: "/admin?next=/users", headers: bearerHeaders(users)},
		denied: &wantDenied{
			code: codes.PermissionDenied, http: 403, reason: "NO_ROUTE",
			message:      `no route of usher's ext_authz configuration matches host "api.example.com" path "/admin", and Envoy set no usher_audience context extension; usher denies what it cannot map to an audience`,
			hintContains: "add a route",
		},
	}, {
		name: "issuer keys unavailable",
		req:  request{host: "users.example.com", path: "/", headers: bearerHeaders(keysDown)},
		denied: &wantDenied{
			code: codes.Unavailable, http: 503, reason: "KEYS_UNAVAILABLE",
			challenge:    `Bearer realm="api/users"`,
			message:      "no keys of issuer " + e.Down.URL() + " could be fetched yet…",
			hintContains: "not the token's fault",
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			resp := check(t, c, tc.req)
			if tc.ok != nil {
				assertOK(t, resp, tc.req.headers, *tc.ok)
			} else {
				assertDenied(t, resp, *tc.denied)
			}
		})
	}

	logs := e.logs.String()
	for _, tok := range []string{users, invoices, invoicesNoScope, expired, keysDown} {
		sig := tok[strings.LastIndexByte(tok, '.')+1:]
		if strings.Contains(logs, sig) {
			// Not the logs themselves: they would print the token.
			t.Fatalf("token %s reached the logs", service.TokenID(tok))
		}
	}
	for _, want := range []string{`"token":"` + service.TokenID(users) + `"`, `"reason":"AUDIENCE_MISMATCH"`, `"reason":"NO_ROUTE"`, `"request_id":"req-1"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s:\n%s", want, logs)
		}
	}
}

// TestCheckAmbiguousPaths: route matching reads the path in normal form
// (RFC 3986), never the raw string. A Users token must never reach a path
// that resolves to /invoices: each spelling of a traversal is denied
// AMBIGUOUS_PATH or checked for the route its normal form names.
func TestCheckAmbiguousPaths(t *testing.T) {
	e := newEngine(t)
	c := e.serve(t, extauthz.Config{Routes: testRoutes})
	users := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}})
	invoices := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})

	for _, tc := range []struct {
		path, token string
		audience    string // "": denied AMBIGUOUS_PATH; else allowed, checked for this audience
		why         string // a part of the denial's message
	}{
		{path: "/users/../invoices", why: `as sent it maps to routes[2] (audience api/users), but its normal form "/invoices" to routes[1] (audience api/invoices)`},
		{path: "/users/%2e%2e/invoices", why: `its normal form "/invoices"`},
		{path: "/users/%2E%2E/invoices", why: `its normal form "/invoices"`},
		{path: "/users/.%2e/invoices", why: `its normal form "/invoices"`},
		{path: "/users/./../invoices", why: `its normal form "/invoices"`},
		{path: "/users/../invoices/42?x=1", why: `its normal form "/invoices/42"`},
		{path: "/users%2f..%2finvoices", why: `encoded "/" (%2F)`},
		{path: "/users%5c..%5cinvoices", why: `encoded "\" (%5C)`},
		{path: `/users\..\invoices`, why: "backslash"},
		{path: "/users;/../invoices", why: `";"`},
		{path: "/users/..;/invoices", why: `";"`},
		{path: "/users/%252e%252e/invoices", why: "double percent-encoding"},
		{path: "/users/%EF%BC%8E%EF%BC%8E/invoices", why: "U+FF0E"},
		{path: "/users//../invoices", why: "repeated slashes with dot segments"},
		{path: "//invoices", why: `as sent it maps to no route, but its normal form "/invoices" to routes[1]`},
		{path: "/users/%00/7", why: "encoded control character"},
		{path: "/%75sers/7", why: `as sent it maps to no route, but its normal form "/users/7" to routes[2]`},
		// The other way round: an Invoices path reached through /users.
		{path: "/invoices/../users/7", token: invoices, why: `its normal form "/users/7" to routes[2] (audience api/users)`},
		// Normal forms that name the same route as the path as sent.
		{path: "/users/./7", audience: "api/users"},
		{path: "/users/7/../8", audience: "api/users"},
		{path: "/users//7", audience: "api/users"},
		{path: "/users/%7E7", audience: "api/users"},
		{path: "/invoices/./42", token: invoices, audience: "api/invoices"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			tok := cmp.Or(tc.token, users)
			req := request{host: "api.example.com", path: tc.path, headers: bearerHeaders(tok)}
			resp := check(t, c, req)
			if tc.audience == "" {
				assertDenied(t, resp, wantDenied{
					code: codes.InvalidArgument, http: 400, reason: extauthz.ReasonAmbiguousPath,
					message: "path …", hintContains: "normalize_path: true, merge_slashes: true",
				})
				if msg := resp.GetStatus().GetMessage(); !strings.Contains(msg, tc.why) || !strings.Contains(msg, "is ambiguous: ") {
					t.Errorf("message %q does not say %q", msg, tc.why)
				}
				return
			}
			if got := oneHeader(t, resp.GetOkResponse().GetHeaders(), "x-usher-audience"); got != tc.audience {
				t.Fatalf("checked for audience %q, want %q (status %v)", got, tc.audience, resp.GetStatus())
			}
		})
	}

	// A context extension: Envoy picked the route on the path as sent, so
	// a path not in normal form is denied; one in normal form is checked.
	ext := map[string]string{"usher_audience": "api/users"}
	for _, path := range []string{"/users/../invoices", "/users/%2e%2e/invoices", "//invoices", "/users/./7", "/users;x/7"} {
		resp := check(t, c, request{host: "api.example.com", path: path, headers: bearerHeaders(users), ext: ext})
		if got := oneHeader(t, resp.GetDeniedResponse().GetHeaders(), "x-usher-reason"); got != extauthz.ReasonAmbiguousPath {
			t.Errorf("context extension, path %q: reason %q, want AMBIGUOUS_PATH (status %v)", path, got, resp.GetStatus())
		}
	}
	if resp := check(t, c, request{host: "api.example.com", path: "/users/7", headers: bearerHeaders(users), ext: ext}); codes.Code(resp.GetStatus().GetCode()) != codes.OK {
		t.Errorf("context extension, path in normal form: %v", resp.GetStatus())
	}
	if logs := e.logs.String(); !strings.Contains(logs, `"reason":"AMBIGUOUS_PATH"`) {
		t.Errorf("no AMBIGUOUS_PATH in the logs:\n%s", logs)
	}
}

func TestCheckRawHeaders(t *testing.T) {
	e := newEngine(t)
	c := e.serve(t, extauthz.Config{Routes: testRoutes})
	users := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})

	resp := check(t, c, request{host: "users.example.com", path: "/", raw: []*corev3.HeaderValue{
		{Key: "authorization", RawValue: []byte("Bearer " + users)},
		{Key: "x-usher-subject", RawValue: []byte("admin")},
		{Key: "x-usher-tenant", RawValue: []byte("a")},
		{Key: "x-usher-tenant", RawValue: []byte("b")},
	}})
	assertOK(t, resp, nil, wantOK{
		set: map[string]string{
			"x-usher-subject": devissuer.ClientID, "x-usher-issuer": e.Issuer.URL(),
			"x-usher-client-id": devissuer.ClientID, "x-usher-audience": "api/users",
		},
		remove: []string{"x-usher-tenant"},
	})

	resp = check(t, c, request{host: "users.example.com", path: "/", raw: []*corev3.HeaderValue{
		{Key: "authorization", RawValue: []byte("Bearer " + users)},
		{Key: "Authorization", RawValue: []byte("Bearer " + users)},
	}})
	assertDenied(t, resp, wantDenied{
		code: codes.Unauthenticated, http: 401, reason: "INVALID_CREDENTIALS",
		challenge:    `Bearer realm="api/users", error="invalid_request", error_description="2 authorization values: send exactly one"`,
		message:      "2 authorization values: send exactly one",
		hintContains: "exactly one",
	})
}

func TestCheckOptions(t *testing.T) {
	e := newEngine(t)
	users := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}})

	t.Run("terse, realm and prefix", func(t *testing.T) {
		c := e.serve(t, extauthz.Config{
			Routes:       []extauthz.Route{{PathPrefix: "/invoices", Audience: "api/invoices"}},
			Terse:        true,
			Realm:        "example",
			HeaderPrefix: "X-Auth-",
		})
		resp := check(t, c, request{host: "any", path: "/invoices", headers: bearerHeaders(users)})
		d := resp.GetDeniedResponse()
		if got := oneHeader(t, d.GetHeaders(), "www-authenticate"); got != `Bearer realm="example", error="invalid_token"` {
			t.Errorf("www-authenticate %q", got)
		}
		if got := oneHeader(t, d.GetHeaders(), "x-auth-reason"); got != "AUDIENCE_MISMATCH" {
			t.Errorf("x-auth-reason %q", got)
		}
		if d.GetBody() != `{"reason":"AUDIENCE_MISMATCH"}` {
			t.Errorf("body %q", d.GetBody())
		}
		if resp.GetStatus().GetMessage() != "AUDIENCE_MISMATCH" || codes.Code(resp.GetStatus().GetCode()) != codes.Unauthenticated {
			t.Errorf("status %v", resp.GetStatus())
		}

		inv := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}})
		in := bearerHeaders(inv, "x-auth-subject", "admin", "x-auth-extra", "1", "x-usher-subject", "kept")
		resp = check(t, c, request{host: "any", path: "/invoices/1", headers: in})
		assertOK(t, resp, nil, wantOK{
			set: map[string]string{
				"x-auth-subject": devissuer.ClientID, "x-auth-issuer": e.Issuer.URL(),
				"x-auth-client-id": devissuer.ClientID, "x-auth-audience": "api/invoices",
			},
			remove: []string{"x-auth-extra"},
			prefix: "x-auth-",
		})
	})

	t.Run("context extensions only", func(t *testing.T) {
		c := e.serve(t, extauthz.Config{ContextExtensionsOnly: true})
		assertDenied(t, check(t, c, request{host: "users.example.com", path: "/", headers: bearerHeaders(users)}), wantDenied{
			code: codes.PermissionDenied, http: 403, reason: "NO_ROUTE",
			message: "no route of usher's ext_authz configuration matches…", hintContains: "usher_audience",
		})
		resp := check(t, c, request{host: "users.example.com", path: "/", headers: bearerHeaders(users), ext: map[string]string{"usher_audience": "api/users", "usher_scopes": "users.read"}})
		if codes.Code(resp.GetStatus().GetCode()) != codes.OK {
			t.Errorf("status %v, want OK", resp.GetStatus())
		}
	})

	t.Run("unforwardable claim", func(t *testing.T) {
		c := e.serve(t, extauthz.Config{Routes: []extauthz.Route{{Audience: "api/users"}}})
		evil := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Subject: "alice\r\nx-usher-role: admin"})
		assertDenied(t, check(t, c, request{host: "h", path: "/", headers: bearerHeaders(evil)}), wantDenied{
			code: codes.Unauthenticated, http: 401, reason: "UNFORWARDABLE_CLAIM",
			challengeFrom: `Bearer realm="api/users", error="invalid_token", error_description="claim sub of the token cannot be forwarded`,
			message:       "claim sub of the token cannot be forwarded in a header…",
			hintContains:  "issuer",
		})
		padded := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Subject: " alice"})
		if got := check(t, c, request{host: "h", path: "/", headers: bearerHeaders(padded)}); got.GetDeniedResponse() == nil {
			t.Errorf("subject with leading white space allowed: %v", got)
		}
	})
}

// fakeValidator answers a fixed verdict, for reasons the real engine cannot produce on demand.
type fakeValidator struct{ v service.Verdict }

func (f fakeValidator) ValidateRequest(context.Context, *service.Request) (service.Verdict, error) {
	return f.v, nil
}

func TestCheckUnknownReasonFailsClosed(t *testing.T) {
	s, err := extauthz.New(fakeValidator{service.Verdict{Reason: service.Reason(99), Message: "?"}}, extauthz.Config{Routes: []extauthz.Route{{Audience: "api/users"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := s.Check(testkit.Context(t), &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Host: "h", Path: "/", Headers: map[string]string{"authorization": "Bearer x.y.z"}},
	}}})
	if err != nil {
		t.Fatal(err)
	}
	if codes.Code(resp.GetStatus().GetCode()) != codes.Unavailable || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
		t.Errorf("unknown reason answered %v", resp)
	}
	if got := oneHeader(t, resp.GetDeniedResponse().GetHeaders(), "x-usher-reason"); got != "VALIDATION_UNAVAILABLE" {
		t.Errorf("unknown reason: x-usher-reason %q, want VALIDATION_UNAVAILABLE", got)
	}
}

// TestCheckFollowsTheReasonTable answers every Reason of usher.v1 (and
// reasons no version knows) from a fake engine, over a real gRPC server,
// and wants the answer the reason table gives, so that ext_authz cannot
// drift from it: INSUFFICIENT_SCOPE is 403 insufficient_scope with the
// required scopes, KEYS_UNAVAILABLE 503 under its own name, a reason the
// table does not know (or UNSPECIFIED) 503 VALIDATION_UNAVAILABLE,
// PROOF_MISSING 401 invalid_token and INVALID_PROOF 401 invalid_dpop_proof
// with a DPoP challenge (even to a Bearer request), every other token
// reason 401 invalid_token. VALID is the allow path.
func TestCheckFollowsTheReasonTable(t *testing.T) {
	all := []int32{-1, 99}
	for n := range usherv1.Reason_name {
		all = append(all, n)
	}
	slices.Sort(all)
	required := []string{"users.read", "users.write"}
	cfg := extauthz.Config{Routes: []extauthz.Route{{Audience: "api/users", RequiredScopes: required}}}
	const message, hint = "the engine's message", "the engine's hint"
	for _, n := range all {
		r := usherv1.Reason(n)
		t.Run(reasons.Name(r), func(t *testing.T) {
			c := serve(t, fakeValidator{service.Verdict{Reason: service.Reason(n), Message: message, Hint: hint}}, cfg, nil)
			req := request{host: "users.example.com", path: "/", headers: bearerHeaders("x.y.z")}
			resp := check(t, c, req)
			if r == usherv1.Reason_REASON_VALID {
				assertOK(t, resp, req.headers, wantOK{set: map[string]string{"x-usher-audience": "api/users"}})
				return
			}

			// What the package doc promises, written out, not read from the table.
			_, known := reasons.Of(r)
			scheme := "Bearer"
			want := wantDenied{code: codes.Unauthenticated, http: 401, reason: reasons.Name(r), message: message, hintContains: hint}
			bearerError := reasons.InvalidToken
			switch {
			case !known:
				want.code, want.http, want.reason, bearerError = codes.Unavailable, 503, "VALIDATION_UNAVAILABLE", ""
				want.message = fmt.Sprintf("usher returned reason %d, which this server does not know", n)
			case r == usherv1.Reason_REASON_KEYS_UNAVAILABLE, r == usherv1.Reason_REASON_ISSUER_UNAVAILABLE:
				want.code, want.http, want.reason, bearerError = codes.Unavailable, 503, reasons.Name(r), ""
			case r == usherv1.Reason_REASON_INSUFFICIENT_SCOPE:
				want.code, want.http, want.reason, bearerError = codes.PermissionDenied, 403, "INSUFFICIENT_SCOPE", reasons.InsufficientScope
			case r == usherv1.Reason_REASON_PROOF_MISSING:
				scheme = "DPoP"
			case r == usherv1.Reason_REASON_INVALID_PROOF:
				scheme, bearerError = "DPoP", "invalid_dpop_proof"
			}
			want.challenge = `Bearer realm="api/users"`
			if scheme == "DPoP" {
				want.challenge = `DPoP algs="` + strings.Join(service.DPoPAlgorithms, " ") + `"`
			}
			if bearerError != "" {
				want.challenge += fmt.Sprintf(`, error=%q, error_description=%q`, bearerError, want.message)
				if bearerError == reasons.InsufficientScope {
					want.challenge += `, scope="users.read users.write"`
				}
			}

			// The same, from the table.
			if rule := reasons.Deny(r); rule.Code != want.code || rule.HTTPStatus != want.http || rule.BearerError != bearerError || (rule.Challenge == reasons.DPoP) != (scheme == "DPoP") {
				t.Errorf("the reason table says %v/%d %q %q, ext_authz's doc says %v/%d %q %s", rule.Code, rule.HTTPStatus, rule.BearerError, rule.Challenge, want.code, want.http, bearerError, scheme)
			}
			assertDenied(t, resp, want)
		})
	}
}

func TestNew(t *testing.T) {
	if _, err := extauthz.New(nil, extauthz.Config{Routes: testRoutes}, nil); err == nil {
		t.Error("New(nil validator) succeeded")
	}
	cfg := extauthz.Config{Routes: []extauthz.Route{{Audience: ""}}}
	_, err := extauthz.New(fakeValidator{}, cfg, nil)
	if err == nil || !strings.Contains(err.Error(), "routes[0].audience: empty") {
		t.Errorf("New with a bad config: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name string
		cfg  extauthz.Config
		want []string // one line each, in order; none: valid
	}{
		{name: "valid", cfg: extauthz.Config{Routes: testRoutes}},
		{name: "context extensions only", cfg: extauthz.Config{ContextExtensionsOnly: true}},
		{name: "no routes", cfg: extauthz.Config{}, want: []string{"routes: no route configured"}},
		{name: "both", cfg: extauthz.Config{ContextExtensionsOnly: true, Routes: testRoutes}, want: []string{"context_extensions_only: true, but 3 routes"}},
		{name: "bad routes", cfg: extauthz.Config{Routes: []extauthz.Route{
			{Host: "https://users.example.com", Audience: "api/users"},
			{PathPrefix: "invoices", Audience: " api/invoices"},
			{Host: "a", Audience: "api/a", RequiredScopes: []string{"ok", "two words", ""}},
		}}, want: []string{
			`routes[0].host: "https://users.example.com" is not a host[:port]`,
			`routes[1].audience: " api/invoices" has surrounding white space`,
			`routes[1].path_prefix: "invoices" must start with /`,
			`routes[2].required_scopes[1]: "two words" is not a scope`,
			`routes[2].required_scopes[2]: "" is not a scope`,
		}},
		{name: "shadowed routes", cfg: extauthz.Config{Routes: []extauthz.Route{
			{PathPrefix: "/invoices", Audience: "api/invoices"},
			{Host: "api.example.com", PathPrefix: "/invoices/v2", Audience: "api/invoices-v2"},
			{Host: "users.example.com", Audience: "api/users"},
			{Host: "USERS.example.com:8443", PathPrefix: "/x", Audience: "api/users-x"},
			{Host: "users.example.com:8443", Audience: "api/users-8443"},
			{Host: "api.example.com", Audience: "api/other"},
		}}, want: []string{
			`routes[1]: never matches: routes[0] (host "", path_prefix "/invoices")`,
			`routes[3]: never matches: routes[2] (host "users.example.com", path_prefix "")`,
			`routes[4]: never matches: routes[2]`,
		}},
		{name: "path prefix not in normal form", cfg: extauthz.Config{Routes: []extauthz.Route{
			{PathPrefix: "/users/../invoices", Audience: "api/invoices"},
			{PathPrefix: "/%75sers", Audience: "api/users"},
			{PathPrefix: "/a;b", Audience: "api/a"},
			{PathPrefix: "/b%2Fc", Audience: "api/b"},
		}}, want: []string{
			`routes[0].path_prefix: "/users/../invoices" is not in normal form (request paths are matched in normal form, RFC 3986): write "/invoices"`,
			`routes[1].path_prefix: "/%75sers" is not in normal form (request paths are matched in normal form, RFC 3986): write "/users"`,
			`routes[2].path_prefix: "/a;b" never matches: request paths are matched in normal form, and it holds ";"`,
			`routes[3].path_prefix: "/b%2Fc" never matches: request paths are matched in normal form, and it holds an encoded "/"`,
		}},
		{name: "header prefix", cfg: extauthz.Config{Routes: testRoutes, HeaderPrefix: "x-"}, want: []string{`header_prefix: "x-" would capture x-envoy-`}},
		{name: "header prefix envoy", cfg: extauthz.Config{Routes: testRoutes, HeaderPrefix: "x-envoy-usher-"}, want: []string{`header_prefix: "x-envoy-usher-" is Envoy's own header namespace`}},
		{name: "header prefix chars", cfg: extauthz.Config{Routes: testRoutes, HeaderPrefix: "x_usher-"}, want: []string{`header_prefix: "x_usher-" may hold only letters, digits and -`}},
		{name: "header prefix dash", cfg: extauthz.Config{Routes: testRoutes, HeaderPrefix: "x-usher"}, want: []string{`header_prefix: "x-usher" must start with a letter and end with -`}},
		{name: "realm", cfg: extauthz.Config{Routes: testRoutes, Realm: `a"b`}, want: []string{`realm: "a\"b" must be printable ASCII`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Validate()
			var lines []string
			if err != nil {
				lines = strings.Split(err.Error(), "\n")
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("Validate() = %v\nwant %d problems: %q", err, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.HasPrefix(lines[i], w) {
					t.Errorf("problem %d:\n got %s\nwant %s…", i, lines[i], w)
				}
			}
		})
	}

	cfg := extauthz.Config{Routes: testRoutes}
	if err := cfg.Validate(); err != nil || cfg.HeaderPrefix != extauthz.DefaultHeaderPrefix {
		t.Errorf("default header prefix %q (%v)", cfg.HeaderPrefix, err)
	}
	cfg = extauthz.Config{Routes: testRoutes, HeaderPrefix: "X-Auth-"}
	if err := cfg.Validate(); err != nil || cfg.HeaderPrefix != "x-auth-" {
		t.Errorf("header prefix %q (%v), want lower-cased", cfg.HeaderPrefix, err)
	}
}
