package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// maxDiscoveryBytes caps an OIDC discovery document.
const maxDiscoveryBytes = 256 << 10

// discoveryDoc is the part of an OIDC discovery document usher reads.
type discoveryDoc struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
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
	return doc, u, nil
}

// check applies OIDC Discovery §4.3: the document's issuer is exactly the
// configured one, and it names a jwks_uri usher may fetch.
func (d discoveryDoc) check(issuer string) error {
	if d.Issuer != issuer {
		return fmt.Errorf("the document's issuer is %q but the configured issuer is %q; they must be identical (OIDC Discovery §4.3)", d.Issuer, issuer)
	}
	if d.JWKSURI == "" {
		return errors.New("no jwks_uri")
	}
	if err := checkFetchURL(d.JWKSURI); err != nil {
		return fmt.Errorf("jwks_uri %w", err)
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
// on the whole fetch, and redirects only to the same host without a
// downgrade to http.
func newFetchClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: timeout, Control: refuseLinkLocal}
	tr.DialContext = dialer.DialContext
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

// refuseLinkLocal stops key fetches from reaching link-local, multicast and
// unspecified addresses (e.g. a cloud metadata service at 169.254.169.254),
// whatever name resolved to them.
func refuseLinkLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("key fetch to %s refused: not an IP address", address)
	}
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return fmt.Errorf("key fetch to %s refused: link-local, multicast or unspecified address", address)
	}
	return nil
}

// checkFetchURL accepts https URLs, and http only for loopback hosts.
func checkFetchURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q uses plain http: keys fetched without TLS can be replaced in transit; use https (http is allowed for loopback only)", s)
	default:
		return fmt.Errorf("%q: scheme %q is not http(s)", s, u.Scheme)
	}
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
