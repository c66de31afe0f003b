package service_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// TestIntrospection_EndpointFaults: every way an endpoint fails is
// ISSUER_UNAVAILABLE with a hint naming the cause, never cached: once the
// endpoint answers again, the next call is VALID without moving the clock.
// What callers see names the class of failure, never an address.
func TestIntrospection_EndpointFaults(t *testing.T) {
	redirected := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		t.Error("the token followed a redirect")
	}))
	t.Cleanup(redirected.Close)
	cases := endpointFaults(redirected.URL)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := testkit.Context(t)
			s := testkit.NewIntrospectionServer(t)
			tok := opaqueToken("")
			s.Activate(tok, testkit.Claims(s.URL()))
			v, _ := opaqueEngine(t, s, func(ic *service.IssuerConfig) {
				if c.timeout > 0 {
					ic.Introspection.Timeout = c.timeout
				}
			})
			s.Handle(c.h)
			got := v.Validate(ctx, tok, "api/users", nil)
			checkVerdict(t, got, service.ReasonIssuerUnavailable)
			for _, want := range c.says {
				if !strings.Contains(got.Message, want) {
					t.Errorf("message %q lacks %q", got.Message, want)
				}
			}
			for _, want := range append([]string{"not the token's fault"}, c.contains...) {
				if !strings.Contains(got.Hint, want) {
					t.Errorf("hint %q lacks %q", got.Hint, want)
				}
			}
			if st := v.Issuers()[0]; st.IntrospectionError == "" || strings.Contains(st.IntrospectionError, testkit.IntrospectionSecret) {
				t.Errorf("last error %q", st.IntrospectionError)
			}
			for _, leak := range []string{testkit.IntrospectionSecret, "look at me", tok} {
				if strings.Contains(got.Message+got.Hint, leak) {
					t.Errorf("the verdict shows %q: %q / %q", leak, got.Message, got.Hint)
				}
			}
			s.Handle(nil)
			checkVerdict(t, v.Validate(ctx, tok, "api/users", nil), service.ReasonValid)
			if st := v.Issuers()[0]; st.IntrospectionError != "" {
				t.Errorf("last error %q after an answer", st.IntrospectionError)
			}
		})
	}
}

// TestIntrospection_Unreachable: nothing listens at the endpoint.
// ISSUER_UNAVAILABLE, by class ("connection refused"), without the
// address.
func TestIntrospection_Unreachable(t *testing.T) {
	ctx := testkit.Context(t)
	s := testkit.NewIntrospectionServer(t)
	closed := testkit.ClosedURL(t)
	v, _ := opaqueEngine(t, s, func(ic *service.IssuerConfig) { ic.Introspection.Endpoint = closed + "/introspect" })
	got := v.Validate(ctx, opaqueToken(""), "api/users", nil)
	checkVerdict(t, got, service.ReasonIssuerUnavailable)
	if !strings.Contains(got.Message, "connection refused") || !strings.Contains(got.Hint, "retry shortly") {
		t.Fatalf("message %q, hint %q", got.Message, got.Hint)
	}
	_, port, _ := strings.Cut(strings.TrimPrefix(closed, "http://"), ":")
	if strings.Contains(got.Message, "dial") || strings.Count(got.Message+got.Hint, port) > 1 { // the hint names the endpoint once
		t.Fatalf("the message names the network error's detail: %q / %q", got.Message, got.Hint)
	}
}

// TestIntrospection_CallerDeadline: a caller waits at most nine tenths of
// the time to its deadline, and gets its verdict (ISSUER_UNAVAILABLE)
// before the deadline while the endpoint hangs.
func TestIntrospection_CallerDeadline(t *testing.T) {
	s := testkit.NewIntrospectionServer(t)
	v, _ := opaqueEngine(t, s, func(ic *service.IssuerConfig) { ic.Introspection.Timeout = 20 * time.Second })
	s.Hold(t)
	ctx, cancel := context.WithTimeout(testkit.Context(t), time.Second)
	defer cancel()
	got := v.Validate(ctx, opaqueToken(""), "api/users", nil)
	if ctx.Err() != nil {
		t.Fatalf("the verdict (%v) came after the caller's deadline", got.Reason)
	}
	checkVerdict(t, got, service.ReasonIssuerUnavailable)
}

// endpointFault is an introspection endpoint's fault and what the verdict
// says about it.
type endpointFault struct {
	name     string
	h        http.HandlerFunc
	timeout  time.Duration
	says     []string // in the message
	contains []string // in the hint
}

// endpointFaults are the faults of TestIntrospection_EndpointFaults; a
// redirect leads to redirectTo.
func endpointFaults(redirectTo string) []endpointFault {
	status := func(code int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			w.Write([]byte(body))
		}
	}
	huge := `{"active":true,"pad":"` + strings.Repeat("x", 70<<10) + `"}`
	return []endpointFault{
		{name: "503", h: status(503, `{"error":"temporarily_unavailable"}`), says: []string{"HTTP 503"}, contains: []string{"retry shortly", "usher doctor"}},
		{name: "500 HTML", h: status(500, "<html>oops</html>"), says: []string{"HTTP 500"}, contains: []string{"retry shortly"}},
		{name: "429", h: status(429, ""), says: []string{"HTTP 429"}, contains: []string{"retry shortly"}},
		{name: "hangs past the timeout", timeout: 50 * time.Millisecond, says: []string{"timeout of 50ms"}, contains: []string{"retry shortly", "usher doctor"},
			h: func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }},
		{name: "401", h: status(401, `{"error":"invalid_client"}`), says: []string{"HTTP 401 invalid_client"},
			contains: []string{"usher's own client credentials for introspection are wrong", "introspection.client_id and client_secret_file"}},
		{name: "403", h: status(403, ""), says: []string{"HTTP 403"}, contains: []string{"usher's own client credentials"}},
		{name: "400 invalid_client", h: status(400, `{"error":"invalid_client"}`), says: []string{"HTTP 400 invalid_client"}, contains: []string{"usher's own client credentials"}},
		{name: "400", h: status(400, `{"error":"invalid_request","error_description":"`+testkit.IntrospectionSecret+`"}`), says: []string{"HTTP 400 invalid_request"},
			contains: []string{"refused usher's request", "RFC 7662 introspection endpoint"}},
		{name: "an error code outside OAuth's is not shown", h: status(400, `{"error":"look at me"}`), says: []string{"HTTP 400"}},
		{name: "404", h: status(404, "not found"), says: []string{"HTTP 404"}, contains: []string{"introspection.endpoint"}},
		{name: "redirect", h: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, redirectTo, http.StatusTemporaryRedirect)
		},
			says: []string{"HTTP 307", "never follows"}},
		{name: "garbage", h: status(200, "<html>login</html>"), says: []string{"unusable answer", "not one JSON object"}, contains: []string{"not an RFC 7662 introspection response"}},
		{name: `active "true"`, h: status(200, `{"active":"true","sub":"x"}`), says: []string{`active is a string "true", not the JSON boolean`}},
		{name: "active 1", h: status(200, `{"active":1}`), says: []string{"active is a number 1"}},
		{name: "active null", h: status(200, `{"active":null}`), says: []string{"active is null,"}},
		{name: "no active", h: status(200, `{"sub":"x"}`), says: []string{"no active member"}},
		{name: "duplicate active", h: status(200, `{"active":false,"active":true}`), says: []string{"duplicate key"}},
		{name: "aud a number", h: status(200, `{"active":true,"aud":1,"exp":1999999999}`), says: []string{"aud is a number"}},
		{name: "exp a string", h: status(200, `{"active":true,"aud":"api/users","exp":"tomorrow"}`), says: []string{"exp is a string"}},
		{name: "token_type an object", h: status(200, `{"active":true,"aud":"api/users","exp":1999999999,"token_type":{}}`), says: []string{"token_type is an object"}},
		{name: "scope with a tab", h: status(200, `{"active":true,"aud":"api/users","exp":1999999999,"scope":"a\tb"}`), says: []string{"scope"}},
		{name: "huge body", h: status(200, huge), says: []string{"over 64 KiB"}},
		{name: "truncated", h: status(200, `{"active":true,"aud":`), says: []string{"not one JSON object"}},
	}
}
