package client

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/auth"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/selector"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/usher-dev/usher/internal/reasons"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// ErrorDomain is the domain of every google.rpc.ErrorInfo usher's interceptors attach.
const ErrorDomain = "usher.v1"

// DefaultSkipMethods are never authenticated: health checks and reflection.
var DefaultSkipMethods = []string{
	"/grpc.health.v1.Health/Check",
	"/grpc.health.v1.Health/Watch",
	"/grpc.health.v1.Health/List",
	"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
	"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
}

// Detail is how much a rejection tells the caller.
type Detail int

const (
	// DetailFull: message, hint, expected and actual values (internal callers).
	DetailFull Detail = iota
	// DetailTerse: the reason only (public edges).
	DetailTerse
)

// Option configures an Authenticator.
type Option func(*Authenticator) error

// WithRequiredScopes requires scopes on one full method name
// ("/pkg.Service/Method"); a missing scope is PERMISSION_DENIED.
func WithRequiredScopes(fullMethod string, scopes ...string) Option {
	return func(a *Authenticator) error {
		if !strings.HasPrefix(fullMethod, "/") || strings.Count(fullMethod, "/") != 2 {
			return fmt.Errorf("WithRequiredScopes: %q is not a full method name like /pkg.Service/Method", fullMethod)
		}
		a.scopes[fullMethod] = append(a.scopes[fullMethod], scopes...)
		return nil
	}
}

// WithSkipMethods lets these exact full method names through without a
// token, in addition to DefaultSkipMethods.
func WithSkipMethods(fullMethods ...string) Option {
	return func(a *Authenticator) error {
		for _, m := range fullMethods {
			a.skip[splitMethod(m)] = true
		}
		return nil
	}
}

// WithDetail sets how much a rejection tells the caller (default DetailFull).
func WithDetail(d Detail) Option {
	return func(a *Authenticator) error { a.detail = d; return nil }
}

// WithCache bounds the verdict cache (defaults DefaultCacheEntries, DefaultCacheTTL).
func WithCache(maxEntries int, maxTTL time.Duration) Option {
	return func(a *Authenticator) error {
		if maxEntries <= 0 || maxTTL <= 0 {
			return errors.New("WithCache: maxEntries and maxTTL must be positive (use WithoutCache to disable it)")
		}
		a.cacheEntries, a.cacheTTL = maxEntries, maxTTL
		return nil
	}
}

// WithoutCache asks usher on every call.
func WithoutCache() Option {
	return func(a *Authenticator) error { a.cacheEntries = 0; return nil }
}

// WithClock sets the clock of the verdict cache (tests).
func WithClock(now func() time.Time) Option {
	return func(a *Authenticator) error { a.now = now; return nil }
}

// Authenticator validates every incoming call's bearer token through usher
// for the service's own audience and puts the verified claims in the
// context. It fails closed: when usher cannot answer, the call is refused
// with UNAVAILABLE.
type Authenticator struct {
	c        *Client
	audience string
	scopes   map[string][]string
	skip     map[methodName]bool
	detail   Detail
	now      func() time.Time

	cacheEntries int
	cacheTTL     time.Duration
	cache        *verdictCache
}

// NewAuthenticator returns the interceptors' engine for a service whose own
// audience is audience (required: it comes from the service's configuration,
// never from the request).
func NewAuthenticator(c *Client, audience string, opts ...Option) (*Authenticator, error) {
	if c == nil {
		return nil, errors.New("usher client: NewAuthenticator: nil Client")
	}
	if audience == "" {
		return nil, errors.New("usher client: NewAuthenticator: the service's own audience is required (e.g. api/invoices)")
	}
	a := &Authenticator{
		c: c, audience: audience, scopes: map[string][]string{}, skip: map[methodName]bool{},
		now: time.Now, cacheEntries: DefaultCacheEntries, cacheTTL: DefaultCacheTTL,
	}
	for _, m := range DefaultSkipMethods {
		a.skip[splitMethod(m)] = true
	}
	for _, o := range opts {
		if err := o(a); err != nil {
			return nil, fmt.Errorf("usher client: %w", err)
		}
	}
	if a.cacheEntries > 0 {
		a.cache = newVerdictCache(a.cacheEntries, a.cacheTTL, a.now)
	}
	return a, nil
}

// UnaryServerInterceptor authenticates unary calls.
func (a *Authenticator) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return selector.UnaryServerInterceptor(auth.UnaryServerInterceptor(a.authenticate), selector.MatchFunc(a.protected))
}

// StreamServerInterceptor authenticates streams before the handler runs.
func (a *Authenticator) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return selector.StreamServerInterceptor(auth.StreamServerInterceptor(a.authenticate), selector.MatchFunc(a.protected))
}

// CacheStats reports verdict cache hits and misses (zero without a cache).
func (a *Authenticator) CacheStats() CacheStats {
	if a.cache == nil {
		return CacheStats{}
	}
	return a.cache.stats()
}

// methodName is a full method name split as CallMeta holds it, so that
// matching needs no string building on every call.
type methodName struct{ service, method string }

func splitMethod(full string) methodName {
	svc, m, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	return methodName{svc, m}
}

func (a *Authenticator) protected(_ context.Context, c interceptors.CallMeta) bool {
	return !a.skip[methodName{c.Service, c.Method}]
}

type claimsKey struct{}

// ClaimsFromContext returns the verified claims of the call's token, put
// there by the interceptors. Each call returns a copy of its own, which the
// handler may change: the verdict cache's answer, shared by every call with
// the same token, is never handed out.
func ClaimsFromContext(ctx context.Context) (*usherv1.Claims, bool) {
	c, ok := ctx.Value(claimsKey{}).(*usherv1.Claims)
	if !ok {
		return nil, false
	}
	return proto.CloneOf(c), true
}

// authenticate is the go-grpc-middleware AuthFunc.
func (a *Authenticator) authenticate(ctx context.Context) (context.Context, error) {
	method, _ := grpc.Method(ctx)
	token, err := a.bearer(ctx)
	if err != nil {
		return nil, err
	}
	scopes := a.scopes[method]
	var resp *usherv1.ValidateTokenResponse
	if a.cache == nil {
		resp, err = a.c.Validate(ctx, token, a.audience, scopes)
	} else {
		key := makeKey(token, a.audience, scopes)
		var hit bool
		if resp, hit = a.cache.lookup(key); !hit {
			resp, err = a.cache.fetch(ctx, key, func(ctx context.Context) (*usherv1.ValidateTokenResponse, error) {
				return a.c.Validate(ctx, token, a.audience, scopes)
			})
		}
	}
	if err != nil {
		return nil, a.unavailable(ctx, err)
	}
	if rule := ruleOf(resp); rule.Code != codes.OK {
		return nil, a.reject(ctx, resp, rule)
	}
	return context.WithValue(ctx, claimsKey{}, resp.GetClaims()), nil
}

// ruleOf is what an answer of usher means here, from the reason table: the
// handler runs only for valid with REASON_VALID. An answer that contradicts
// itself (valid with another reason, or not valid with REASON_VALID) or
// names a reason this library does not know fails closed.
func ruleOf(r *usherv1.ValidateTokenResponse) reasons.Rule {
	switch valid := r.GetValid(); {
	case valid != (r.GetReason() == usherv1.Reason_REASON_VALID):
		return reasons.Deny(usherv1.Reason_REASON_UNSPECIFIED)
	case valid:
		rule, _ := reasons.Of(usherv1.Reason_REASON_VALID)
		return rule
	default:
		return reasons.Deny(r.GetReason())
	}
}

// bearer reads exactly one "authorization: Bearer <token>" value.
func (a *Authenticator) bearer(ctx context.Context) (string, error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	var why string
	switch {
	case len(vals) == 0:
		return "", a.challenge(ctx, codes.Unauthenticated, "", "no authorization metadata: send \"authorization: Bearer <access token>\"", "MISSING_CREDENTIALS", nil)
	case len(vals) > 1:
		why = fmt.Sprintf("%d authorization values: send exactly one", len(vals))
	default:
		scheme, tok, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
		tok = strings.TrimSpace(tok)
		switch {
		case !strings.EqualFold(scheme, "bearer"):
			why = fmt.Sprintf("authorization scheme %q: this service takes Bearer tokens", printable(scheme))
		case tok == "":
			why = "empty bearer token"
		default:
			return tok, nil
		}
	}
	return "", a.challenge(ctx, codes.Unauthenticated, "invalid_request", why, "INVALID_CREDENTIALS", nil)
}

func (a *Authenticator) unavailable(ctx context.Context, err error) error {
	msg := "token validation unavailable; retry later"
	if a.detail == DetailFull {
		msg = "usher could not validate the token: " + err.Error()
	}
	return a.challenge(ctx, codes.Unavailable, "", msg, "VALIDATION_UNAVAILABLE", nil)
}

// reject maps a verdict to a status through the reason table:
// INSUFFICIENT_SCOPE is PERMISSION_DENIED, KEYS_UNAVAILABLE and
// ISSUER_UNAVAILABLE (or a reason this library does not know) are
// UNAVAILABLE, every other reason (INACTIVE included) UNAUTHENTICATED.
func (a *Authenticator) reject(ctx context.Context, r *usherv1.ValidateTokenResponse, rule reasons.Rule) error {
	reason := reasons.Name(r.GetReason())
	md := map[string]string{}
	msg := reason
	if a.detail == DetailFull {
		msg = reason + ": " + r.GetMessage()
		if h := r.GetHint(); h != "" {
			msg += " (hint: " + h + ")"
			md["hint"] = h
		}
		md["message"] = r.GetMessage()
		md["expected_audience"] = a.audience
		if aud := r.GetClaims().GetAudience(); len(aud) > 0 {
			md["actual_audience"] = strings.Join(aud, " ")
		}
		if c := r.GetClaims(); c != nil {
			md["issuer"], md["kid"] = c.GetIssuer(), c.GetKeyId()
		}
		if m := r.GetMismatch(); m != nil {
			md["claim"] = m.GetClaim()
			md["expected"] = strings.Join(m.GetExpected(), " ")
			md["actual"] = strings.Join(m.GetActual(), " ")
		}
	}
	if rule.BearerError == reasons.InsufficientScope {
		md["missing_scopes"] = strings.Join(missing(r.GetMismatch().GetExpected(), r.GetMismatch().GetActual()), " ")
	}
	return a.challenge(ctx, rule.Code, rule.BearerError, msg, reason, md)
}

// challenge builds the status with its google.rpc.ErrorInfo and sets the RFC
// 6750 www-authenticate header.
func (a *Authenticator) challenge(ctx context.Context, code codes.Code, bearerErr, msg, reason string, md map[string]string) error {
	chal := fmt.Sprintf("Bearer realm=%q", a.audience)
	if bearerErr != "" {
		chal += fmt.Sprintf(", error=%q", bearerErr)
		if a.detail == DetailFull {
			chal += fmt.Sprintf(", error_description=%q", quoteSafe(msg))
		}
		if bearerErr == reasons.InsufficientScope {
			chal += fmt.Sprintf(", scope=%q", md["missing_scopes"])
		}
	}
	_ = grpc.SetHeader(ctx, metadata.Pairs("www-authenticate", chal))
	for k, v := range md {
		if v == "" {
			delete(md, k)
		}
	}
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain, Metadata: md})
	if err != nil {
		return status.Error(code, msg)
	}
	return st.Err()
}

func missing(required, granted []string) []string {
	var out []string
	for _, s := range required {
		if !slices.Contains(granted, s) {
			out = append(out, s)
		}
	}
	return out
}

// quoteSafe keeps a header value to printable ASCII without quotes or backslashes.
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}

func printable(s string) string {
	if len(s) > 32 {
		s = s[:32] + "..."
	}
	return quoteSafe(s)
}
