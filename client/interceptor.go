package client

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
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
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
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

// Authenticator validates every incoming call's access token (Bearer, or
// DPoP with its proof) through usher for the service's own audience and
// puts the verified claims in the context. It fails closed: when usher
// cannot answer, the call is refused with UNAVAILABLE.
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
	req, err := a.request(ctx, method)
	if err != nil {
		return nil, err
	}
	dpop := req.GetScheme() == reasons.DPoP
	var resp *usherv1.ValidateTokenResponse
	if a.cache == nil || senderConstrained(req) {
		resp, err = a.c.ValidateRequest(ctx, req)
	} else {
		key := makeKey(req.GetToken(), a.audience, req.GetRequiredScopes())
		var hit bool
		if resp, hit = a.cache.lookup(key); !hit {
			resp, err = a.cache.fetch(ctx, key, func(ctx context.Context) (*usherv1.ValidateTokenResponse, error) {
				return a.c.ValidateRequest(ctx, req)
			})
		}
	}
	if err != nil {
		return nil, a.unavailable(ctx, err, dpop)
	}
	if rule := ruleOf(resp); rule.Code != codes.OK {
		return nil, a.reject(ctx, resp, rule, dpop || rule.Challenge == reasons.DPoP)
	}
	return context.WithValue(ctx, claimsKey{}, resp.GetClaims()), nil
}

// senderConstrained: the call carries what binds a token to its sender (a
// DPoP proof, or a client certificate). Its verdict holds for this call
// only: it is neither looked up in nor stored in the verdict cache, nor
// shared with a concurrent call for the same token.
func senderConstrained(r *usherv1.ValidateTokenRequest) bool {
	return r.GetScheme() == reasons.DPoP || r.GetDpopProof() != "" || r.GetClientCertificateSha256() != ""
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

// request reads the call's credentials into the question for usher: exactly
// one "authorization: Bearer <token>" or "authorization: DPoP <token>"
// value; for DPoP exactly one "dpop" proof, made for POST to
// <https|http>://{:authority}/{package.Service}/{Method}; and the SHA-256
// thumbprint of the caller's TLS client certificate, when it sent one.
func (a *Authenticator) request(ctx context.Context, method string) (*usherv1.ValidateTokenRequest, error) {
	scheme, token, err := a.authorization(ctx)
	if err != nil {
		return nil, err
	}
	req := &usherv1.ValidateTokenRequest{Token: token, ExpectedAudience: a.audience, RequiredScopes: a.scopes[method], Scheme: scheme}
	state, isTLS := peerTLS(ctx)
	// Every certificate crypto/tls hands over was proven in the handshake
	// (CertificateVerify), chain-verified or self-signed (RFC 8705 §2.2).
	if isTLS && len(state.PeerCertificates) > 0 {
		sum := sha256.Sum256(state.PeerCertificates[0].Raw)
		req.ClientCertificateSha256 = b64(sum[:])
	}
	if scheme != reasons.DPoP {
		return req, nil
	}
	proofs := metadata.ValueFromIncomingContext(ctx, "dpop")
	authority := metadata.ValueFromIncomingContext(ctx, ":authority")
	switch {
	case len(proofs) == 0:
		return nil, a.challenge(ctx, true, codes.Unauthenticated, reasons.InvalidToken,
			"authorization scheme DPoP without a proof: send one \"dpop: <proof JWT>\" with the call (RFC 9449 §7), or use client.WithDPoP",
			reasons.Name(usherv1.Reason_REASON_PROOF_MISSING), nil)
	case len(proofs) > 1:
		return nil, a.challenge(ctx, true, codes.Unauthenticated, reasons.InvalidDPoPProof,
			fmt.Sprintf("%d dpop values: send exactly one proof per call (RFC 9449 §4.3)", len(proofs)),
			reasons.Name(usherv1.Reason_REASON_INVALID_PROOF), nil)
	case len(authority) != 1 || authority[0] == "":
		// grpc-go always has one; without it there is no htu to check.
		return nil, a.challenge(ctx, true, codes.Unauthenticated, reasons.InvalidDPoPProof,
			"the call has no :authority to check the proof's htu against", reasons.Name(usherv1.Reason_REASON_INVALID_PROOF), nil)
	}
	req.DpopProof, req.HttpMethod, req.HttpUri = proofs[0], "POST", grpcHTU(isTLS, authority[0], method)
	return req, nil
}

// peerTLS is the TLS state of the call's connection, when it has TLS.
func peerTLS(ctx context.Context) (tls.ConnectionState, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return tls.ConnectionState{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	return info.State, ok
}

// grpcHTU is the URI a DPoP proof for a gRPC call is made for: https over
// TLS, http otherwise, the authority without its scheme's default port
// (RFC 3986 §6.2.3, as grpc-go's PerRPCCredentials get it) and the full
// method. Callers (WithDPoP) and the interceptor build it alike.
func grpcHTU(isTLS bool, authority, fullMethod string) string {
	scheme, port := "http", ":80"
	if isTLS {
		scheme, port = "https", ":443"
	}
	return scheme + "://" + strings.TrimSuffix(authority, port) + fullMethod
}

// authorization reads exactly one "authorization: <Bearer|DPoP> <token>"
// value; the scheme comes back as reasons.DPoP or "Bearer".
func (a *Authenticator) authorization(ctx context.Context) (scheme, token string, err error) {
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	var why string
	dpop := false
	switch {
	case len(vals) == 0:
		return "", "", a.challenge(ctx, false, codes.Unauthenticated, "", "no authorization metadata: send \"authorization: Bearer <access token>\" (or DPoP with a dpop proof)", "MISSING_CREDENTIALS", nil)
	case len(vals) > 1:
		why = fmt.Sprintf("%d authorization values: send exactly one", len(vals))
	default:
		word, tok, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
		tok = strings.TrimSpace(tok)
		dpop = strings.EqualFold(word, reasons.DPoP)
		switch {
		case !dpop && !strings.EqualFold(word, "bearer"):
			why = fmt.Sprintf("authorization scheme %q: this service takes Bearer or DPoP tokens", printable(word))
		case tok == "":
			why = "empty " + printable(word) + " token"
		case dpop:
			return reasons.DPoP, tok, nil
		default:
			return "Bearer", tok, nil
		}
	}
	return "", "", a.challenge(ctx, dpop, codes.Unauthenticated, "invalid_request", why, "INVALID_CREDENTIALS", nil)
}

func (a *Authenticator) unavailable(ctx context.Context, err error, dpop bool) error {
	msg := "token validation unavailable; retry later"
	if a.detail == DetailFull {
		msg = "usher could not validate the token: " + err.Error()
	}
	return a.challenge(ctx, dpop, codes.Unavailable, "", msg, "VALIDATION_UNAVAILABLE", nil)
}

// reject maps a verdict to a status through the reason table:
// INSUFFICIENT_SCOPE is PERMISSION_DENIED, KEYS_UNAVAILABLE and
// ISSUER_UNAVAILABLE (or a reason this library does not know) are
// UNAVAILABLE, every other reason (INACTIVE included) UNAUTHENTICATED. The
// challenge is DPoP's when dpop is set.
func (a *Authenticator) reject(ctx context.Context, r *usherv1.ValidateTokenResponse, rule reasons.Rule, dpop bool) error {
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
	return a.challenge(ctx, dpop, rule.Code, rule.BearerError, msg, reason, md)
}

// challenge builds the status with its google.rpc.ErrorInfo and sets the
// www-authenticate header: RFC 6750's Bearer challenge, or with dpop RFC
// 9449 §7.1's DPoP challenge with the proof algorithms usher accepts.
func (a *Authenticator) challenge(ctx context.Context, dpop bool, code codes.Code, authErr, msg, reason string, md map[string]string) error {
	chal := fmt.Sprintf("Bearer realm=%q", a.audience)
	if dpop {
		chal = fmt.Sprintf("DPoP algs=%q", DPoPAlgs)
	}
	if authErr != "" {
		chal += fmt.Sprintf(", error=%q", authErr)
		if a.detail == DetailFull {
			chal += fmt.Sprintf(", error_description=%q", quoteSafe(msg))
		}
		if authErr == reasons.InsufficientScope {
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
