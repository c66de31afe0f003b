package service

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/usher-dev/usher/internal/strictjson"
)

// Limits of introspection.
const (
	// maxIntrospectionBytes caps an introspection answer: a claim set is a
	// few hundred bytes.
	maxIntrospectionBytes = 64 << 10
	// maxRefusalBytes caps the body of a refusal (4xx) read for its OAuth
	// error code.
	maxRefusalBytes = 4 << 10
	// maxSecretBytes caps client_secret_file.
	maxSecretBytes = 64 << 10
	// introspectLogEvery spaces the warnings of an endpoint that keeps
	// failing the same way.
	introspectLogEvery = time.Minute
	// answerOverhead approximates an introspection cache entry's memory
	// beyond its answer's bytes (the decoded map, the LRU's bookkeeping).
	answerOverhead = 1024
)

// failKind is why an introspection gave no answer: hints switch on it.
type failKind int

const (
	failUnreachable failKind = iota // no HTTP answer
	failTimeout                     // no answer within the timeout
	failServer                      // 5xx, 429
	failCredentials                 // 401, 403, invalid_client: usher's own credentials
	failBadRequest                  // 400, a redirect, another unexpected status
	failUnusable                    // 200 with no usable RFC 7662 answer
	failNoEndpoint                  // the endpoint is not known (discovery)
	failShed                        // too many calls wait for this issuer already
)

// introFailure is no usable answer from an issuer's introspection endpoint
// (ISSUER_UNAVAILABLE). cause is worded for callers: the class of failure,
// never an address a network error names, never usher's credentials.
type introFailure struct {
	kind  failKind
	cause string
}

func (f *introFailure) Error() string { return f.cause }

// outcome is the failure as an observer counts a call.
func (f *introFailure) outcome() IntrospectionOutcome {
	switch f.kind {
	case failTimeout:
		return IntrospectionTimeout
	case failServer:
		return IntrospectionServerError
	case failCredentials:
		return IntrospectionUnauthorized
	case failBadRequest:
		return IntrospectionBadRequest
	case failUnusable:
		return IntrospectionUnusable
	}
	return IntrospectionUnreachable
}

// answer is what an issuer's introspection endpoint said about a token.
// An active answer's members are read as a token's claims are (t), so that
// the checks after the signature run on them unchanged.
type answer struct {
	active bool
	t      *parsedToken // active: the answer's members as claims
	claims *Claims      // active: shared by every verdict served from it, read-only
	until  time.Time    // reused until then
	size   int64        // approximate bytes, for the cache's bound
}

// introspector asks one issuer about its opaque tokens (RFC 7662): a POST of
// the token with client_secret_basic to the endpoint that the configuration
// or the issuer's discovery document names.
type introspector struct {
	cfg    IntrospectionConfig
	issuer string
	http   *http.Client // the issuer's address rules; follows no redirect
	auth   credential
	scrub  *strings.Replacer // takes usher's secret out of text taken from an answer
	bg     context.Context   // owns the calls: a call outlives the caller that started it
	log    *slog.Logger
	now    func() time.Time
	obs    IntrospectionObserver // nil: none

	discovered   atomic.Pointer[string] // introspection_endpoint of the discovery document
	discoveryErr atomic.Pointer[string] // why discovery gave none usher may call

	flight     singleflight.Group // concurrent lookups of one token share a call
	maxWaiting int64              // callers that may wait for this issuer at once
	waiting    atomic.Int64       // callers waiting now
	inFlight   atomic.Int64       // calls in flight now (also bounded by maxWaiting)
	lastShed   atomic.Int64       // unix nanoseconds of the last "turned away" warning

	mu         sync.Mutex
	lastError  string
	logged     string
	lastLogged time.Time
}

// credential is an Authorization header that holds a secret: it prints as
// [redacted] in logs, errors and %v.
type credential struct{ header string }

func (credential) String() string               { return "[redacted]" }
func (credential) GoString() string             { return "[redacted]" }
func (credential) LogValue() slog.Value         { return slog.StringValue("[redacted]") }
func (credential) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// newIntrospector reads usher's client secret now (a reload reads it again)
// and builds the client: the issuer's address rules, the endpoint written in
// the configuration allowed by name, the introspection timeout, no redirects.
func newIntrospector(ctx context.Context, ic IssuerConfig, o *options) (*introspector, error) {
	cfg := *ic.Introspection
	secret, err := readSecret(cfg.ClientSecretFile)
	if err != nil {
		return nil, err
	}
	hc := o.http
	if hc == nil {
		hc = newFetchClient(cfg.Timeout)
	}
	c := guardIntrospection(hc, ic, o.log)
	// Neither the token nor usher's credentials follow a redirect.
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	auth := basicAuth(cfg.ClientID, secret)
	in := &introspector{
		cfg: cfg, issuer: ic.Issuer, http: c, auth: credential{auth}, bg: ctx, now: o.now,
		log:        o.log.With("issuer", ic.Issuer),
		scrub:      strings.NewReplacer(secret, "[redacted]", url.QueryEscape(secret), "[redacted]", strings.TrimPrefix(auth, "Basic "), "[redacted]"),
		maxWaiting: int64(o.keyWaiters),
	}
	in.obs, _ = o.observer.(IntrospectionObserver)
	return in, nil
}

// readSecret reads usher's client secret: the file's content without one
// trailing line break (LF or CRLF). The error names the file, never its
// content.
func readSecret(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("introspection.client_secret_file: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	switch {
	case err != nil:
		return "", fmt.Errorf("introspection.client_secret_file: %w", err)
	case len(b) > maxSecretBytes:
		return "", fmt.Errorf("introspection.client_secret_file %s: over %d bytes, not a client secret", path, maxSecretBytes)
	}
	s := strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r")
	if s == "" {
		return "", fmt.Errorf("introspection.client_secret_file %s: empty: write usher's client secret at the issuer in it", path)
	}
	return s, nil
}

// basicAuth is the Authorization header of client_secret_basic (RFC 6749
// §2.3.1): the client id and the secret, each encoded with the
// application/x-www-form-urlencoded algorithm (Appendix B), joined by ':',
// then base64.
func basicAuth(id, secret string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
}

// endpoint is the introspection endpoint: the configured one, else the
// discovery document's; "" while neither is known.
func (in *introspector) endpoint() string {
	if in.cfg.Endpoint != "" {
		return in.cfg.Endpoint
	}
	if p := in.discovered.Load(); p != nil {
		return *p
	}
	return ""
}

// fromDiscovery takes the endpoint from a discovery document whose issuer
// was checked, unless the configuration names one. A document that names
// none, or one usher may not call, leaves the endpoint unknown and says why.
func (in *introspector) fromDiscovery(doc discoveryDoc) {
	if in.cfg.Endpoint != "" {
		return
	}
	if err := doc.checkURL("introspection_endpoint", doc.IntrospectionEndpoint); err != nil {
		why := err.Error() + ": set introspection.endpoint in usher's config, or fix the issuer's discovery document"
		in.discoveryErr.Store(&why)
		in.log.Warn("no usable introspection_endpoint in the discovery document; opaque tokens of this issuer get ISSUER_UNAVAILABLE", "err", err)
		return
	}
	u := doc.IntrospectionEndpoint
	in.discovered.Store(&u)
	in.discoveryErr.Store(nil)
}

// call asks the endpoint about tok once, bounded by the timeout, in the
// background context: a caller that stops waiting does not cancel it for
// the others that share it.
func (in *introspector) call(tok string) (*answer, *introFailure) {
	ctx, cancel := context.WithTimeout(in.bg, in.cfg.Timeout)
	defer cancel()
	start := time.Now()
	a, f := in.post(ctx, tok)
	in.record(f)
	if in.obs != nil {
		out := IntrospectionActive
		switch {
		case f != nil:
			out = f.outcome()
		case !a.active:
			out = IntrospectionInactive
		}
		in.obs.ObserveIntrospection(IntrospectionEvent{Issuer: in.issuer, Outcome: out, Took: time.Since(start)})
	}
	return a, f
}

// post sends the request of RFC 7662 §2.1 and reads the answer.
func (in *introspector) post(ctx context.Context, tok string) (*answer, *introFailure) {
	form := url.Values{"token": {tok}, "token_type_hint": {"access_token"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, in.endpoint(), strings.NewReader(form))
	if err != nil {
		return nil, &introFailure{kind: failUnreachable, cause: "the introspection endpoint is not a URL usher can call"}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Authorization", in.auth.header)
	resp, err := in.http.Do(req)
	if err != nil {
		return nil, in.networkFailure(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusFailure(resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIntrospectionBytes+1))
	if err != nil {
		return nil, in.networkFailure(ctx, err)
	}
	if len(body) > maxIntrospectionBytes {
		return nil, &introFailure{kind: failUnusable, cause: fmt.Sprintf("the answer is over %d KiB, far more than a claim set", maxIntrospectionBytes>>10)}
	}
	a, f := readAnswer(body, in.issuer)
	if f != nil {
		f.cause = in.scrub.Replace(f.cause)
	}
	return a, f
}

// networkFailure words a request that got no HTTP answer by its class (a
// timeout, connection refused, a refused address…), never by the
// addresses a network error names.
func (in *introspector) networkFailure(ctx context.Context, err error) *introFailure {
	var ne net.Error
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return &introFailure{kind: failTimeout, cause: fmt.Sprintf("no answer within the timeout of %s", in.cfg.Timeout)}
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err // its text names the URL; the class is in what it wraps
	}
	return &introFailure{kind: failUnreachable, cause: failureClass(err)}
}

// statusFailure words an answer other than 200.
func statusFailure(resp *http.Response) *introFailure {
	code := resp.StatusCode
	oauth := ""
	if code >= 400 && code < 500 {
		oauth = refusalCode(resp.Body)
	}
	status := fmt.Sprintf("HTTP %d", code)
	if oauth != "" {
		status += " " + oauth
	}
	switch {
	case code == http.StatusUnauthorized || code == http.StatusForbidden || oauth == "invalid_client" || oauth == "unauthorized_client":
		return &introFailure{kind: failCredentials, cause: status + ": the endpoint refused usher's client credentials"}
	case code == http.StatusTooManyRequests || code >= 500:
		return &introFailure{kind: failServer, cause: status}
	case code >= 300 && code < 400:
		return &introFailure{kind: failBadRequest, cause: status + ": a redirect, which usher never follows with a token"}
	}
	return &introFailure{kind: failBadRequest, cause: status}
}

// oauthErrors are the OAuth error codes a refusal may name (RFC 6749 §5.2,
// RFC 6750 §3.1, RFC 7009 §2.2.1): a code outside them is not shown, so
// that whatever an endpoint echoes never reaches a caller.
var oauthErrors = map[string]bool{
	"invalid_request": true, "invalid_client": true, "invalid_grant": true, "unauthorized_client": true,
	"unsupported_grant_type": true, "invalid_scope": true, "invalid_token": true, "insufficient_scope": true,
	"unsupported_token_type": true, "access_denied": true, "server_error": true, "temporarily_unavailable": true,
}

// refusalCode reads the OAuth error code of a refusal's JSON body, or "".
func refusalCode(body io.Reader) string {
	b, err := io.ReadAll(io.LimitReader(body, maxRefusalBytes))
	if err != nil {
		return ""
	}
	m, err := strictjson.ParseObject(b)
	if err != nil {
		return ""
	}
	if s, ok := m["error"].(string); ok && oauthErrors[s] {
		return s
	}
	return ""
}

// readAnswer reads an RFC 7662 §2.2 answer strictly: one JSON object whose
// active member is the JSON boolean true or false. An active answer's
// registered claims must have the types a JWT's must have; a wrong type
// makes the answer unusable (the issuer's fault, not the token's).
func readAnswer(body []byte, issuer string) (*answer, *introFailure) {
	unusable := func(format string, args ...any) (*answer, *introFailure) {
		return nil, &introFailure{kind: failUnusable, cause: fmt.Sprintf(format, args...)}
	}
	m, err := strictjson.ParseObject(body)
	if err != nil {
		return unusable("the answer is not one JSON object: %v", err)
	}
	act, ok := m["active"]
	if !ok {
		return unusable("the answer has no active member, which RFC 7662 §2.2 requires")
	}
	active, ok := act.(bool)
	if !ok {
		shown := ""
		switch act.(type) {
		case string, float64:
			shown = " " + clip(compactJSON(act), 32)
		}
		return unusable("active is %s%s, not the JSON boolean true or false", strictjson.TypeName(act), shown)
	}
	if !active {
		return &answer{size: answerOverhead}, nil
	}
	t := &parsedToken{payload: m, opaque: true}
	if mal := t.claims.read(m); mal != nil {
		return unusable("%s", mal.why)
	}
	var tokenType string
	for _, name := range []string{"token_type", "token_use"} {
		if v, ok := m[name]; ok {
			s, ok := v.(string)
			if !ok {
				return unusable("%s is %s, not a string", name, strictjson.TypeName(v))
			}
			if name == "token_type" {
				tokenType = s
			}
		}
	}
	c := t.toClaims()
	c.Issuer, c.TokenType, c.TokenFormat = issuer, tokenType, "opaque"
	return &answer{active: true, t: t, claims: c, size: int64(answerOverhead + 4*len(body))}, nil
}

// record keeps the last failure for ListIssuers (cleared by an answer) and
// logs a failure once per cause and introspectLogEvery.
func (in *introspector) record(f *introFailure) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if f == nil {
		in.lastError = ""
		return
	}
	in.lastError = f.cause
	now := in.now()
	if f.cause == in.logged && now.Sub(in.lastLogged) < introspectLogEvery {
		return
	}
	in.logged, in.lastLogged = f.cause, now
	in.log.Warn("introspection failed: opaque tokens of this issuer get ISSUER_UNAVAILABLE until it answers", "cause", f.cause, "endpoint", in.endpoint())
}

// lastErr is the last call's failure, or why the endpoint is not known.
func (in *introspector) lastErr() string {
	if in.endpoint() == "" {
		if p := in.discoveryErr.Load(); p != nil {
			return *p
		}
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.lastError
}

// carryFrom keeps the endpoint that the running validator discovered for
// the same issuer (both read it from discovery, neither configures one), so
// that a reload during a discovery outage goes on answering opaque tokens.
// Discovery runs again in the background and replaces it.
func (in *introspector) carryFrom(prev *Validator, discovery bool) {
	if prev == nil || !discovery || in.cfg.Endpoint != "" {
		return
	}
	old := prev.issuers[in.issuer]
	if old == nil || old.intro == nil || !old.cfg.Discovery || old.intro.cfg.Endpoint != "" {
		return
	}
	if p := old.intro.discovered.Load(); p != nil {
		in.discovered.Store(p)
	}
}
