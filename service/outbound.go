package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// maxDiscoveryBytes caps an OIDC discovery document.
const maxDiscoveryBytes = 256 << 10

// discoveryDoc is the part of an OIDC discovery document usher reads.
type discoveryDoc struct {
	Issuer                string `json:"issuer"`
	JWKSURI               string `json:"jwks_uri"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`

	// What tells identity providers apart (idp.go); read, never fetched.
	TokenEndpoint            string   `json:"token_endpoint"`
	EndSessionEndpoint       string   `json:"end_session_endpoint"`
	MFAChallengeEndpoint     string   `json:"mfa_challenge_endpoint"`        // Auth0
	CloudInstanceName        string   `json:"cloud_instance_name"`           // Microsoft Entra ID
	HydraCredentialsEndpoint string   `json:"credentials_endpoint_draft_00"` // Ory Hydra
	ResponseModesSupported   []string `json:"response_modes_supported"`

	// policy is what the client that fetched the document may reach (set
	// when it is a guardClient), so that check can refuse a jwks_uri before
	// anything is sent to it.
	policy *fetchPolicy
}

// discoveryURL is where OIDC Discovery §4 puts an issuer's document.
func discoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}

func fetchDiscovery(ctx context.Context, hc *http.Client, issuer string) (discoveryDoc, string, error) {
	var doc discoveryDoc
	u := discoveryURL(issuer)
	body, err := getLimited(ctx, hc, u, maxDiscoveryBytes)
	if err != nil {
		return doc, u, fmt.Errorf("discovery: %w", err)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return doc, u, fmt.Errorf("discovery %s: not a JSON discovery document: %w", u, err)
	}
	if g, ok := hc.Transport.(*guardTransport); ok {
		doc.policy = &g.policy
	}
	return doc, u, nil
}

// check applies OIDC Discovery §4.3: the document's issuer is exactly the
// configured one, and it names a jwks_uri usher may fetch. The document is
// the issuer's word, not the operator's: errors name what is wrong with its
// jwks_uri, never the URL (it may point into the network usher runs in).
func (d discoveryDoc) check(issuer string) error {
	if err := d.checkIssuer(issuer); err != nil {
		return err
	}
	return d.checkURL("jwks_uri", d.JWKSURI)
}

// checkIssuer: the document's issuer is exactly the configured one.
func (d discoveryDoc) checkIssuer(issuer string) error {
	if d.Issuer != issuer {
		return fmt.Errorf("the document's issuer is %q but the configured issuer is %q; they must be identical (OIDC Discovery §4.3)", clip(d.Issuer, 200), issuer)
	}
	return nil
}

// checkURL checks a URL the document names (jwks_uri,
// introspection_endpoint) against the scheme and address rules of the
// client that fetched the document, before anything is sent to it. Errors
// name what is wrong, never the URL.
func (d discoveryDoc) checkURL(name, raw string) error {
	if raw == "" {
		return errors.New("no " + name)
	}
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return errors.New(name + " is not an absolute URL")
	}
	if p := schemeProblemOf(u, name); p != "" {
		return errors.New(name + " " + p)
	}
	policy := policyFor(IssuerConfig{Issuer: d.Issuer})
	if d.policy != nil {
		policy = *d.policy
	}
	if err := policy.hostAllowed(name, u.Hostname()); err != nil {
		return err
	}
	return nil
}

// getLimited GETs u and returns a 200 response's body of at most limit bytes.
func getLimited(ctx context.Context, hc *http.Client, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s: body over %d bytes", u, limit)
	}
	return body, nil
}

// newFetchClient is the HTTP client for discovery and key sets: a deadline
// on the whole fetch, redirects only to the same host without a downgrade
// to http, the proxy of the environment (HTTPS_PROXY, NO_PROXY…), and the
// address rules (fetchPolicy) applied to the target before it reaches a
// proxy and to the resolved address at every dial.
func newFetchClient(timeout time.Duration) *http.Client {
	return newFetchClientVia(timeout, http.ProxyFromEnvironment, nil)
}

// newFetchClientVia is newFetchClient with the proxy function and the DNS
// resolver (nil: the system's) given.
func newFetchClientVia(timeout time.Duration, proxy func(*http.Request) (*url.URL, error), resolver *net.Resolver) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: timeout, Resolver: resolver, ControlContext: checkDial}
	tr.DialContext = dialer.DialContext
	tr.Proxy = checkedProxy(proxy, resolver)
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			from := via[0].URL
			if from.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("redirect from https to http refused")
			}
			if req.URL.Hostname() != from.Hostname() {
				return fmt.Errorf("redirect from %s to another host %s refused", from.Host, req.URL.Host)
			}
			return nil
		},
	}
}

// fetchTarget travels in a fetch request's context, from guardTransport to
// the proxy function and the dialer: the rules of the issuer it is for.
type fetchTarget struct {
	policy   fetchPolicy
	what     string      // "key set URL" or "discovery URL", for messages
	viaProxy atomic.Bool // the proxy function chose a proxy: the dial is to the proxy
}

type fetchTargetKey struct{}

// targetOf is the request's target; a request without one (a client used
// without guardClient) gets openPolicy.
func targetOf(ctx context.Context) *fetchTarget {
	if t, ok := ctx.Value(fetchTargetKey{}).(*fetchTarget); ok {
		return t
	}
	return &fetchTarget{policy: openPolicy, what: "URL"}
}

// checkDial is the dialer's ControlContext: it sees the address actually
// connected to, after DNS, so no name can lead a fetch where the policy
// forbids. A proxy's own address is the operator's choice and not checked.
func checkDial(ctx context.Context, _, address string, _ syscall.RawConn) error {
	t := targetOf(ctx)
	if t.viaProxy.Load() {
		return nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("dial to %s refused: not an IP address", address)
	}
	if c, ok := t.policy.allows(a); !ok {
		return &refusedError{what: t.what, class: c, resolved: true, addr: a}
	}
	return nil
}

// checkedProxy wraps the proxy function: when a request goes through a
// proxy, usher never dials its target, so the target is checked here,
// before the proxy is asked to CONNECT to it.
func checkedProxy(proxy func(*http.Request) (*url.URL, error), resolver *net.Resolver) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		p, err := proxy(req)
		if err != nil || p == nil {
			return p, err
		}
		t := targetOf(req.Context())
		if err := t.proxiedAllowed(req.Context(), resolver, req.URL.Hostname()); err != nil {
			return nil, err
		}
		t.viaProxy.Store(true)
		return p, nil
	}
}

// proxiedAllowed checks a target the proxy will connect to: its address if
// the URL writes one, else every address its name resolves to (the proxy
// resolves it again, and may pick any). A name usher cannot resolve itself
// is left to the proxy, which is then the only resolver that knows it.
func (t *fetchTarget) proxiedAllowed(ctx context.Context, resolver *net.Resolver, host string) error {
	if err := t.policy.hostAllowed(t.what, host); err != nil {
		return err
	}
	if _, err := netip.ParseAddr(host); err == nil || isLoopbackHost(host) {
		return nil
	}
	addrs, err := resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil
	}
	for _, a := range addrs {
		if c, ok := t.policy.allows(a); !ok {
			return &refusedError{what: t.what, class: c, resolved: true, addr: a}
		}
	}
	return nil
}

// guardClient is hc restricted to what issuer ic may fetch: every request
// and redirect is checked against ic's fetchPolicy before it is sent, the
// policy travels to newFetchClient's proxy function and dialer in the
// request's context, and a failure is reported by its class, the detail
// (addresses, ports) going to log only. A client of WithHTTPClient with its
// own dialer gets the URL checks; the checks after DNS are newFetchClient's.
func guardClient(hc *http.Client, ic IssuerConfig, log *slog.Logger) *http.Client {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := *hc
	base := c.Transport
	if base == nil {
		base = http.DefaultTransport
	}
	c.Transport = &guardTransport{base: base, policy: policyFor(ic), log: log.With("issuer", ic.Issuer)}
	return &c
}

type guardTransport struct {
	base   http.RoundTripper
	policy fetchPolicy
	log    *slog.Logger
	what   string // what every request is for; "" tells key sets and discovery documents apart by path
}

// guardIntrospection is guardClient for the issuer's introspection
// endpoint: the same rules, and the endpoint that the configuration writes
// out (introspection.endpoint) allowed by name. One found through discovery
// gets the issuer's rules only.
func guardIntrospection(hc *http.Client, ic IssuerConfig, log *slog.Logger) *http.Client {
	c := guardClient(hc, ic, log)
	g := c.Transport.(*guardTransport)
	g.what = introspectionWhat
	if ic.Introspection != nil {
		g.policy.name(ic.Introspection.Endpoint)
	}
	return c
}

// introspectionWhat names the introspection endpoint in messages.
const introspectionWhat = "introspection endpoint"

func (g *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	what := g.what
	switch {
	case what != "":
	case strings.HasSuffix(req.URL.Path, "/.well-known/openid-configuration"):
		what = "discovery URL"
	default:
		what = "key set URL"
	}
	t := &fetchTarget{policy: g.policy, what: what}
	if err := t.urlAllowed(req.URL); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		g.log.Warn("fetch refused before sending", "url", req.URL.Redacted(), "err", err)
		return nil, err
	}
	resp, err := g.base.RoundTrip(req.WithContext(context.WithValue(req.Context(), fetchTargetKey{}, t)))
	if err != nil {
		var refused *refusedError
		if errors.As(err, &refused) {
			g.log.Warn("fetch refused", "url", req.URL.Redacted(), "address", refused.addr.String(), "err", err)
		} else {
			g.log.Info("fetch failed", "url", req.URL.Redacted(), "err", err)
		}
		return nil, &fetchError{err: err}
	}
	return resp, nil
}

// CloseIdleConnections lets http.Client.CloseIdleConnections reach the base.
func (g *guardTransport) CloseIdleConnections() {
	if c, ok := g.base.(interface{ CloseIdleConnections() }); ok {
		c.CloseIdleConnections()
	}
}

// urlAllowed applies the scheme rule and, for an address written in the
// URL, the address rules.
func (t *fetchTarget) urlAllowed(u *url.URL) error {
	if p := schemeProblemOf(u, t.what); p != "" {
		return errors.New("refused: the " + t.what + " " + p)
	}
	if err := t.policy.hostAllowed(t.what, u.Hostname()); err != nil {
		return err
	}
	return nil
}

// fetchError is a failed round trip as callers see it (IssuerStatus's
// LastError, KEYS_UNAVAILABLE): the class of failure, without the addresses
// and ports a network error names. Unwrap gives the detail.
type fetchError struct{ err error }

func (e *fetchError) Error() string { return failureClass(e.err) }
func (e *fetchError) Unwrap() error { return e.err }

// Timeout keeps url.Error's Timeout working through the wrapper.
func (e *fetchError) Timeout() bool {
	var ne net.Error
	return errors.As(e.err, &ne) && ne.Timeout()
}

// checkFetchURL accepts https URLs, and http only for loopback hosts.
func checkFetchURL(s string) error { return checkFetchURLFor(s, "") }

// checkFetchURLFor is checkFetchURL worded for what the URL is for (see
// schemeProblemOf).
func checkFetchURLFor(s, what string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("%q: scheme %q is not http(s)", s, u.Scheme)
	}
	if p := schemeProblemOf(u, what); p != "" {
		return fmt.Errorf("%q %s", s, p)
	}
	if a, err := netip.ParseAddr(u.Hostname()); err == nil && classify(a) == addrNever {
		return fmt.Errorf("%q names a link-local, multicast or cloud metadata address: usher never fetches from it", s)
	}
	return nil
}

// schemeProblem says what is wrong with u's scheme for a fetch, or "":
// https, or http to a loopback host only.
func schemeProblem(u *url.URL) string { return schemeProblemOf(u, "") }

// schemeProblemOf is schemeProblem worded for what the URL is for: an
// introspection endpoint receives tokens and usher's credentials.
func schemeProblemOf(u *url.URL, what string) string {
	switch u.Scheme {
	case "https":
		return ""
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return ""
		}
		if strings.HasPrefix(what, "introspection") {
			return "uses plain http: tokens and usher's client credentials would travel without TLS; use https (http is allowed for loopback only)"
		}
		return "uses plain http: keys fetched without TLS can be replaced in transit; use https (http is allowed for loopback only)"
	}
	return "has a scheme other than http(s)"
}

// isLoopbackHost reports whether a host name or address is loopback
// ("localhost", 127.0.0.0/8, ::1).
func isLoopbackHost(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
