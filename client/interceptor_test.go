package client_test

import (
	"context"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/reasons"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

const unaryMethod = "/grpc.testing.TestService/UnaryCall"

func withToken(ctx context.Context, values ...string) context.Context {
	for _, v := range values {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", v)
	}
	return ctx
}

// rejection is what a caller in any language can read from a refused call.
type rejection struct {
	code      codes.Code
	msg       string
	info      *errdetails.ErrorInfo
	challenge string
}

func unary(t *testing.T, c testpb.TestServiceClient, ctx context.Context) rejection {
	t.Helper()
	var hdr metadata.MD
	_, err := c.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Header(&hdr))
	return readRejection(err, hdr)
}

func readRejection(err error, hdr metadata.MD) rejection {
	st := status.Convert(err)
	r := rejection{code: st.Code(), msg: st.Message()}
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			r.info = ei
		}
	}
	if v := hdr.Get("www-authenticate"); len(v) > 0 {
		r.challenge = v[0]
	}
	return r
}

// liveClaims is a payload of iss for api/invoices with invoices.read, live
// on the wall clock (the dev engine's), changed by name/value pairs as
// testkit.Claims takes them.
func liveClaims(iss string, kv ...any) map[string]any {
	now := time.Now()
	return testkit.Claims(iss, append([]any{"aud", "api/invoices", "scope", "invoices.read",
		"iat", now.Unix(), "exp", now.Add(time.Hour).Unix()}, kv...)...)
}

func TestInterceptor_ContractTable(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices",
		client.WithRequiredScopes(unaryMethod, "invoices.read"))
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)

	invoices := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
	users := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"invoices.read"}})
	noScope := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.list"}})
	expired := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}, TTL: -time.Hour})
	downTok := testkit.Mint(t, u.Down, devissuer.MintRequest{Audience: []string{"api/invoices"}})

	for _, tc := range []struct {
		name      string
		auth      []string
		code      codes.Code
		reason    string
		challenge string // substring of www-authenticate
		meta      map[string]string
	}{
		{"valid", []string{"Bearer " + invoices}, codes.OK, "", "", nil},
		{"scheme is case-insensitive", []string{"bEaReR " + invoices}, codes.OK, "", "", nil},
		{"no authorization", nil, codes.Unauthenticated, "MISSING_CREDENTIALS", `Bearer realm="api/invoices"`, nil},
		{"two authorization values", []string{"Bearer " + invoices, "Bearer " + invoices}, codes.Unauthenticated, "INVALID_CREDENTIALS", `error="invalid_request"`, nil},
		{"basic scheme", []string{"Basic dXNlcjpwYXNz"}, codes.Unauthenticated, "INVALID_CREDENTIALS", `Bearer realm="api/invoices"`, nil},
		{"empty token", []string{"Bearer "}, codes.Unauthenticated, "INVALID_CREDENTIALS", `error="invalid_request"`, nil},
		{"garbage token", []string{"Bearer not-a-jwt"}, codes.Unauthenticated, "MALFORMED", `error="invalid_token"`, nil},
		{"token for another API", []string{"Bearer " + users}, codes.Unauthenticated, "AUDIENCE_MISMATCH", `error="invalid_token"`,
			map[string]string{"expected_audience": "api/invoices", "actual_audience": "api/users", "issuer": u.Issuer.URL(), "kid": devissuer.KeyRS256}},
		{"expired", []string{"Bearer " + expired}, codes.Unauthenticated, "EXPIRED", `error="invalid_token"`, nil},
		{"scope missing", []string{"Bearer " + noScope}, codes.PermissionDenied, "INSUFFICIENT_SCOPE", `error="insufficient_scope"`,
			map[string]string{"missing_scopes": "invoices.read"}},
		{"issuer keys unavailable", []string{"Bearer " + downTok}, codes.Unavailable, "KEYS_UNAVAILABLE", `Bearer realm="api/invoices"`, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := impl.handled()
			r := unary(t, c, withToken(testkit.Context(t), tc.auth...))
			if r.code != tc.code {
				t.Fatalf("code = %v (%s), want %v", r.code, r.msg, tc.code)
			}
			if tc.code == codes.OK {
				if impl.handled() != before+1 {
					t.Fatal("handler did not run with claims")
				}
				return
			}
			if impl.handled() != before {
				t.Fatal("handler ran for a refused call")
			}
			if r.info == nil || r.info.GetReason() != tc.reason || r.info.GetDomain() != "usher.v1" {
				t.Fatalf("ErrorInfo = %v, want reason %s in domain usher.v1", r.info, tc.reason)
			}
			if !strings.Contains(r.challenge, tc.challenge) || !strings.HasPrefix(r.challenge, "Bearer ") {
				t.Errorf("www-authenticate = %q, want it to contain %q", r.challenge, tc.challenge)
			}
			if tc.code == codes.PermissionDenied && !strings.Contains(r.challenge, `scope="invoices.read"`) {
				t.Errorf("www-authenticate = %q, want the missing scope (RFC 6750 §3)", r.challenge)
			}
			for k, v := range tc.meta {
				if got := r.info.GetMetadata()[k]; got != v {
					t.Errorf("ErrorInfo metadata[%s] = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestInterceptor_StreamCheckedBeforeHandler(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	stream, err := c.FullDuplexCall(withToken(testkit.Context(t), "Bearer "+u.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})))
	if err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.Unauthenticated || impl.handled() != 0 {
		t.Fatalf("stream with a Users token: %v, handler ran %d times", err, impl.handled())
	}
	stream, err = c.FullDuplexCall(withToken(testkit.Context(t), "Bearer "+u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Subject: "svc-billing"})))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("stream with an Invoices token: %v", err)
	}
	_ = stream.CloseSend()
	if subs := impl.subjects(); len(subs) != 1 || subs[0] != "svc-billing" {
		t.Errorf("handler saw subjects %v", subs)
	}
}

func TestInterceptor_SkipsByExactMethodName(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithSkipMethods("/grpc.testing.TestService/EmptyCall"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, conn := serveAPI(t, authn)
	if _, err := c.EmptyCall(testkit.Context(t), &testpb.Empty{}); err != nil {
		t.Errorf("skipped method refused: %v", err)
	}
	if _, err := c.UnaryCall(testkit.Context(t), &testpb.SimpleRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("UnaryCall without token: %v, want UNAUTHENTICATED", err)
	}
	// Health is skipped by default; the server registers none here, so the
	// call reaches grpc's own UNIMPLEMENTED instead of UNAUTHENTICATED.
	_, err = healthpb.NewHealthClient(conn).Check(testkit.Context(t), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("health without token: %v, want to pass the interceptor", err)
	}
}

func TestInterceptor_FailsClosedWhenUsherIsDownAndRecovers(t *testing.T) {
	u := newUsher(t)
	// usher comes back on another port, as a restarted replica does; the
	// resolver (DNS in production) follows it.
	res := manual.NewBuilderWithScheme("usher-test")
	res.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: u.addr}}})
	authn, err := client.NewAuthenticator(dialUsher(t, res.Scheme()+":///usher", grpc.WithResolvers(res)), "api/invoices", client.WithoutCache())
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	tok := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}})
	if r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok)); r.code != codes.OK {
		t.Fatalf("before: %v %s", r.code, r.msg)
	}
	u.gs.Stop()
	r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok))
	if r.code != codes.Unavailable || r.info.GetReason() != "VALIDATION_UNAVAILABLE" {
		t.Fatalf("usher down: %v %v, want UNAVAILABLE", r.code, r.info)
	}
	if impl.handled() != 1 {
		t.Fatal("a call went through while usher was down")
	}
	_, addr := u.Serve(t, grpc.UnaryInterceptor(u.count))
	res.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: addr}}})
	ctx, cancel := context.WithTimeout(testkit.Context(t), 10*time.Second)
	defer cancel()
	testkit.Eventually(ctx, t, "calls accepted again after usher came back", func() bool {
		return unary(t, c, withToken(ctx, "Bearer "+tok)).code == codes.OK
	})
	if impl.handled() < 2 {
		t.Errorf("handler ran %d times, want the call after recovery too", impl.handled())
	}
}

func TestInterceptor_TerseDetail(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithDetail(client.DetailTerse))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	r := unary(t, c, withToken(testkit.Context(t), "Bearer "+u.Mint(t, devissuer.MintRequest{Audience: []string{"api/users"}})))
	if r.code != codes.Unauthenticated || r.info.GetReason() != "AUDIENCE_MISMATCH" {
		t.Fatalf("%v %v", r.code, r.info)
	}
	if strings.Contains(r.msg, "api/users") || len(r.info.GetMetadata()) != 0 || strings.Contains(r.challenge, "error_description") {
		t.Errorf("terse rejection leaks detail: msg %q, metadata %v, challenge %q", r.msg, r.info.GetMetadata(), r.challenge)
	}
}

func TestInterceptor_CacheHitsAndNeverPastExp(t *testing.T) {
	u := newUsher(t)
	clock := testkit.NewClock()
	clock.Set(time.Now()) // the dev issuer mints on the wall clock
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithClock(clock.Now), client.WithCache(100, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	tok := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, TTL: 2 * time.Minute})
	for i := range 3 {
		if r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok)); r.code != codes.OK {
			t.Fatalf("call %d: %v %s", i, r.code, r.msg)
		}
	}
	if got := u.calls.Load(); got != 1 {
		t.Errorf("usher saw %d calls for one token, want 1", got)
	}
	if st := authn.CacheStats(); st.Hits != 2 || st.Misses != 1 {
		t.Errorf("stats = %+v, want 2 hits 1 miss", st)
	}
	// Past exp (cache clock only): the entry must not be served.
	clock.Advance(3 * time.Minute)
	unary(t, c, withToken(testkit.Context(t), "Bearer "+tok))
	if got := u.calls.Load(); got != 2 {
		t.Errorf("after exp usher saw %d calls, want 2 (the cached verdict outlived the token)", got)
	}
}

func TestInterceptor_CacheKeyIncludesScopes(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithRequiredScopes(unaryMethod, "invoices.write"))
	if err != nil {
		t.Fatal(err)
	}
	c, _, _ := serveAPI(t, authn)
	tok := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
	stream, err := c.FullDuplexCall(withToken(testkit.Context(t), "Bearer "+tok)) // no scopes required: valid, cached
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	_ = stream.CloseSend()
	if r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok)); r.code != codes.PermissionDenied {
		t.Errorf("UnaryCall needs invoices.write: got %v; a cache keyed on the token alone would let it through", r.code)
	}
}

func TestInterceptor_ConcurrentMissesShareOneCall(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	tok := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}})
	release := u.hold(t) // usher answers nothing until every call has missed
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			_, err := c.UnaryCall(withToken(testkit.Context(t), "Bearer "+tok), &testpb.SimpleRequest{})
			errs <- err
		})
	}
	ctx := testkit.Context(t)
	testkit.Eventually(ctx, t, "20 calls missed the cache", func() bool { return authn.CacheStats().Misses == 20 })
	testkit.Eventually(ctx, t, "usher holds a ValidateToken", func() bool { return u.calls.Load() > 0 })
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if got := u.calls.Load(); got != 1 {
		t.Errorf("20 concurrent identical misses made %d calls to usher, want 1", got)
	}
	if st := authn.CacheStats(); st.Misses != 20 || st.Hits != 0 || impl.handled() != 20 {
		t.Errorf("stats = %+v, handled %d; want 20 misses sharing one answer, 20 handled", st, impl.handled())
	}
}

// TestClaimsFromContext_CopyPerCall: a handler that changes the claims it
// got changes neither what it reads again nor what the next call with the
// same token (a verdict cache hit) sees.
func TestClaimsFromContext_CopyPerCall(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	impl.setScribble(true)
	tok := u.Mint(t, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}, Subject: "svc-billing"})
	for i := range 3 {
		if r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok)); r.code != codes.OK {
			t.Fatalf("call %d: %v %s", i, r.code, r.msg)
		}
	}
	if got, st := u.calls.Load(), authn.CacheStats(); got != 1 || st.Hits != 2 {
		t.Fatalf("usher saw %d calls, cache %+v: want calls 2 and 3 answered by the cache", got, st)
	}
	seen, reread := impl.seenClaims()
	first := seen[0]
	// Every part scribble changes is there to be changed.
	if first.GetSubject() != "svc-billing" || !slices.Equal(first.GetAudience(), []string{"api/invoices"}) ||
		!slices.Equal(first.GetScopes(), []string{"invoices.read"}) || first.GetExpiresAt() == nil ||
		first.GetRaw().GetFields()["sub"].GetStringValue() != "svc-billing" {
		t.Fatalf("first call saw %v", first)
	}
	for i := range seen {
		if !proto.Equal(seen[i], first) {
			t.Errorf("call %d saw claims changed by an earlier handler:\n got %v\nwant %v", i+1, seen[i], first)
		}
		if !proto.Equal(reread[i], first) {
			t.Errorf("call %d read its claims again after changing them and got the change:\n got %v\nwant %v", i+1, reread[i], first)
		}
	}
}

// TestInterceptor_CachesExactlyTheCacheableReasons: against the real engine,
// a verdict is answered from the cache the second time exactly when the
// reason table marks its reason cacheable, and the cache answers as usher
// did. (WRONG_TOKEN_TYPE and MISSING_CLAIM need an issuer configuration
// the dev engine does not have: TestInterceptor_CachesWhatTheReasonTableSays
// covers every reason.)
func TestInterceptor_CachesExactlyTheCacheableReasons(t *testing.T) {
	var skew atomic.Int64 // the engine's clock minus the wall clock
	u := newUsher(t, service.WithClock(func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }))
	authn, err := client.NewAuthenticator(u.client(t), "api/invoices", client.WithRequiredScopes(unaryMethod, "invoices.read"))
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	mint := func(r devissuer.MintRequest) func(t *testing.T) string {
		return func(t *testing.T) string {
			if r.Audience == nil {
				r.Audience = []string{"api/invoices"}
			}
			if r.Scopes == nil {
				r.Scopes = []string{"invoices.read"}
			}
			return u.Mint(t, r)
		}
	}
	rows := []struct {
		reason usherv1.Reason
		token  func(t *testing.T) string
		skew   time.Duration // of the engine's clock during the row
	}{
		{usherv1.Reason_REASON_VALID, mint(devissuer.MintRequest{}), 0},
		{usherv1.Reason_REASON_MALFORMED, func(*testing.T) string { return "not-a-jwt" }, 0},
		{usherv1.Reason_REASON_UNSUPPORTED_ALGORITHM, func(t *testing.T) string {
			return testkit.Sign(t, map[string]any{"alg": "HS256", "kid": devissuer.KeyRS256, "typ": "at+jwt"},
				liveClaims(u.Issuer.URL()), "HS256", []byte("a secret anyone holding the key set could guess"))
		}, 0},
		{usherv1.Reason_REASON_UNTRUSTED_ISSUER, func(t *testing.T) string {
			return testkit.RSAKey(t, "k1").Token(t, liveClaims("https://untrusted.example.com"))
		}, 0},
		{usherv1.Reason_REASON_UNKNOWN_KEY, mint(devissuer.MintRequest{KeyID: "retired-key"}), 0},
		{usherv1.Reason_REASON_INVALID_SIGNATURE, func(t *testing.T) string {
			// Another key under the dev issuer's kid.
			return testkit.RSAKey(t, devissuer.KeyRS256).Token(t, liveClaims(u.Issuer.URL()))
		}, 0},
		{usherv1.Reason_REASON_EXPIRED, mint(devissuer.MintRequest{TTL: -time.Hour}), 0},
		{usherv1.Reason_REASON_NOT_YET_VALID, mint(devissuer.MintRequest{}), -time.Hour},
		{usherv1.Reason_REASON_AUDIENCE_MISMATCH, mint(devissuer.MintRequest{Audience: []string{"api/users"}}), 0},
		{usherv1.Reason_REASON_INSUFFICIENT_SCOPE, mint(devissuer.MintRequest{Scopes: []string{"invoices.list"}}), 0},
		{usherv1.Reason_REASON_KEYS_UNAVAILABLE, func(t *testing.T) string {
			return testkit.Mint(t, u.Down, devissuer.MintRequest{Audience: []string{"api/invoices"}, Scopes: []string{"invoices.read"}})
		}, 0},
	}
	var cached, uncached int
	for _, row := range rows {
		t.Run(reasons.Name(row.reason), func(t *testing.T) {
			rule, _ := reasons.Of(row.reason)
			want := rule.Code
			if row.reason != usherv1.Reason_REASON_VALID {
				want = reasons.Deny(row.reason).Code
			}
			tok := row.token(t)
			skew.Store(int64(row.skew))
			defer skew.Store(0)
			calls, handled := u.calls.Load(), impl.handled()
			var got [2]rejection
			for i := range got {
				got[i] = unary(t, c, withToken(testkit.Context(t), "Bearer "+tok))
				if got[i].code != want {
					t.Fatalf("call %d: %v %v (%s), want %v", i+1, got[i].code, got[i].info, got[i].msg, want)
				}
				if want != codes.OK && got[i].info.GetReason() != reasons.Name(row.reason) {
					t.Fatalf("call %d: ErrorInfo %v, want reason %s", i+1, got[i].info, reasons.Name(row.reason))
				}
			}
			// A cache hit answers exactly as usher did (an answer asked
			// again may word the time left differently).
			if rule.Cacheable && (got[1].msg != got[0].msg || got[1].challenge != got[0].challenge ||
				!maps.Equal(got[1].info.GetMetadata(), got[0].info.GetMetadata())) {
				t.Errorf("cached answer differs from usher's:\n%+v\n%+v", got[1], got[0])
			}
			wantHandled := 0
			if want == codes.OK {
				wantHandled = 2
			}
			if n := impl.handled() - handled; n != wantHandled {
				t.Errorf("handler ran %d times, want %d", n, wantHandled)
			}
			wantCalls := int64(2)
			if rule.Cacheable {
				wantCalls = 1
				cached++
			} else {
				uncached++
			}
			if n := u.calls.Load() - calls; n != wantCalls {
				t.Errorf("usher saw %d calls for two identical ones, want %d (cacheable: %v)", n, wantCalls, rule.Cacheable)
			}
		})
	}
	if cached == 0 || uncached == 0 {
		t.Errorf("rows cover %d cacheable and %d uncacheable reasons: want both", cached, uncached)
	}
}

// allReasons is every Reason of usher.v1 and one from a newer usher.
func allReasons() []usherv1.Reason {
	out := []usherv1.Reason{usherv1.Reason(999)}
	for n := range usherv1.Reason_name {
		out = append(out, usherv1.Reason(n))
	}
	slices.Sort(out)
	return out
}

// TestInterceptor_CachesWhatTheReasonTableSays: for every reason, including
// those the dev engine cannot produce and one the table does not know, a
// consistent answer is cached exactly when the table marks it cacheable.
func TestInterceptor_CachesWhatTheReasonTableSays(t *testing.T) {
	f := newFakeUsher(t)
	authn, err := client.NewAuthenticator(dialUsher(t, f.addr), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	for _, reason := range allReasons() {
		name := reasons.Name(reason)
		t.Run(name, func(t *testing.T) {
			valid := reason == usherv1.Reason_REASON_VALID
			f.resp.Store(&usherv1.ValidateTokenResponse{Valid: valid, Reason: reason, Message: "answer " + name,
				Claims: &usherv1.Claims{Subject: "svc-billing", Audience: []string{"api/invoices"}, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}})
			rule, known := reasons.Of(reason)
			want := codes.OK
			if !valid {
				want = reasons.Deny(reason).Code
			}
			calls, handled := f.calls.Load(), impl.handled()
			tok := "opaque-" + name // a key of its own in the cache
			for i := range 2 {
				if r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok)); r.code != want || (!valid && r.info.GetReason() != name) {
					t.Fatalf("call %d: %v %v, want %v %s", i+1, r.code, r.info, want, name)
				}
			}
			wantCalls := int64(2)
			if known && rule.Cacheable {
				wantCalls = 1
			}
			if n := f.calls.Load() - calls; n != wantCalls {
				t.Errorf("usher saw %d calls for two identical ones, want %d (known %v, cacheable %v)", n, wantCalls, known, rule.Cacheable)
			}
			wantHandled := 0
			if valid {
				wantHandled = 2
			}
			if n := impl.handled() - handled; n != wantHandled {
				t.Errorf("handler ran %d times for a valid=%v answer, want %d", n, valid, wantHandled)
			}
		})
	}
}

// TestInterceptor_FailsClosedOnAnswersItCannotTrust: a rejection whose
// reason is UNSPECIFIED, unknown to this library (a newer usher) or VALID is
// refused as UNAVAILABLE (not the token's fault, retryable): the handler
// never runs and the answer is not cached.
func TestInterceptor_FailsClosedOnAnswersItCannotTrust(t *testing.T) {
	f := newFakeUsher(t)
	authn, err := client.NewAuthenticator(dialUsher(t, f.addr), "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	c, impl, _ := serveAPI(t, authn)
	for _, tc := range []struct {
		name   string
		valid  bool
		reason usherv1.Reason
	}{
		{"unspecified", false, usherv1.Reason_REASON_UNSPECIFIED},
		{"reason from a newer usher", false, usherv1.Reason(999)},
		{"rejection saying VALID", false, usherv1.Reason_REASON_VALID},
		{"valid saying EXPIRED", true, usherv1.Reason_REASON_EXPIRED},
		{"valid saying UNSPECIFIED", true, usherv1.Reason_REASON_UNSPECIFIED},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f.resp.Store(&usherv1.ValidateTokenResponse{Valid: tc.valid, Reason: tc.reason, Message: "cannot say",
				Claims: &usherv1.Claims{Subject: "svc-billing", Audience: []string{"api/invoices"}, ExpiresAt: timestamppb.New(time.Now().Add(time.Hour))}})
			calls := f.calls.Load()
			tok := "opaque-" + strings.ReplaceAll(tc.name, " ", "-")
			for i := range 2 {
				r := unary(t, c, withToken(testkit.Context(t), "Bearer "+tok))
				if r.code != codes.Unavailable {
					t.Fatalf("call %d: %v (%s), want UNAVAILABLE", i+1, r.code, r.msg)
				}
				if r.info.GetReason() != reasons.Name(tc.reason) || r.info.GetDomain() != client.ErrorDomain {
					t.Errorf("call %d: ErrorInfo %v, want reason %s", i+1, r.info, reasons.Name(tc.reason))
				}
				if r.challenge != `Bearer realm="api/invoices"` {
					t.Errorf("call %d: www-authenticate %q blames the token", i+1, r.challenge)
				}
			}
			if impl.handled() != 0 {
				t.Fatal("a call went through on an answer that is not VALID")
			}
			if n := f.calls.Load() - calls; n != 2 {
				t.Errorf("usher saw %d calls for two identical ones: a fail-closed answer is retryable, it must not be cached", n)
			}
		})
	}
}

func TestNewAuthenticator_RequiresAudience(t *testing.T) {
	u := newUsher(t)
	if _, err := client.NewAuthenticator(u.client(t), ""); err == nil {
		t.Error("an empty audience was accepted")
	}
	if _, err := client.NewAuthenticator(u.client(t), "api/x", client.WithRequiredScopes("UnaryCall", "s")); err == nil {
		t.Error("a method that is not a full method name was accepted")
	}
}
