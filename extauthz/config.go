package extauthz

import (
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/usher-dev/usher/service"
)

// DefaultHeaderPrefix is the prefix of the claim headers when Config.HeaderPrefix is empty.
const DefaultHeaderPrefix = "x-usher-"

// Context extensions read from CheckRequest.attributes.context_extensions.
// Envoy sets them per route (typed_per_filter_config ->
// ExtAuthzPerRoute.check_settings.context_extensions); a caller cannot.
const (
	// ContextAudience names the audience the route's API answers to. When
	// present it overrides Config.Routes.
	ContextAudience = "usher_audience"
	// ContextScopes lists the scopes the route requires, space-separated.
	// It is read only together with ContextAudience.
	ContextScopes = "usher_scopes"
)

// Config says which audience a request must carry a token for, and how
// claims travel upstream. It is written in YAML under usher's config, e.g.
//
//	ext_authz:
//	  routes:
//	    - host: users.example.com
//	      audience: api/users
//	    - path_prefix: /invoices
//	      audience: api/invoices
//	      required_scopes: [invoices.read]
//	  header_prefix: x-usher-
type Config struct {
	// Routes map a request to the audience of the API behind it: the first
	// whose Host and PathPrefix both match wins. A context extension
	// usher_audience (set per route in Envoy) overrides them. A request that
	// neither matches is denied 403 NO_ROUTE: usher never allows by default.
	Routes []Route `yaml:"routes"`
	// ContextExtensionsOnly declares that every Envoy route sets the
	// usher_audience context extension, so no Routes are configured. Without
	// it, an empty Routes is a configuration error; with it, Routes must be
	// empty.
	ContextExtensionsOnly bool `yaml:"context_extensions_only"`
	// HeaderPrefix of the claim headers added on OK (default "x-usher-"):
	// <prefix>subject, issuer, scopes (space-separated), client-id and
	// audience (the audience the request was checked for). Incoming headers
	// with this prefix never reach the upstream: those usher sets are
	// overwritten, every other one is removed, so a caller cannot forge them.
	// Denials carry <prefix>reason.
	HeaderPrefix string `yaml:"header_prefix"`
	// Realm of the WWW-Authenticate challenge (default: the audience the
	// request was checked for).
	Realm string `yaml:"realm"`
	// Terse keeps denials to the reason: no message, hint or
	// error_description reaches the caller (for public edges). Logs keep
	// the detail.
	Terse bool `yaml:"terse"`
}

// Route maps requests to the audience of the API behind them.
type Route struct {
	// Host is compared with the request's :authority, case-insensitively;
	// "" matches any host. A Host without a port matches the authority with
	// any port (users.example.com matches users.example.com:8443); a Host
	// with a port matches that port only.
	Host string `yaml:"host"`
	// PathPrefix is a plain, case-sensitive prefix of the request path
	// without its query, as Envoy's route "prefix" match; "" matches any
	// path. It is matched against the path in normal form (RFC 3986: dot
	// segments removed, percent-encoded unreserved characters decoded,
	// repeated slashes merged), and must itself be written in that form. A
	// path whose normal form matches another route than the path as sent,
	// or that servers read differently (an encoded "/", a backslash, ";"
	// parameters, …), is denied 400 AMBIGUOUS_PATH: Envoy may have routed
	// either. Envoy hands the path normalized when its HTTP connection
	// manager sets normalize_path and merge_slashes.
	PathPrefix string `yaml:"path_prefix"`
	// Audience is the audience the API behind the route answers to
	// (required), e.g. api/invoices.
	Audience string `yaml:"audience"`
	// RequiredScopes must all be granted; a missing one is 403
	// INSUFFICIENT_SCOPE.
	RequiredScopes []string `yaml:"required_scopes"`
}

// reservedHeaders must never fall under HeaderPrefix: removing them would
// break the request, Envoy, or tracing.
var reservedHeaders = []string{
	"authorization", "host", "cookie", "content-type", "content-length", "transfer-encoding",
	"te", "connection", "x-envoy-", "x-forwarded-", "x-request-id", "x-b3-", "traceparent", "tracestate",
}

// Validate fills in defaults and reports every problem at once, one error
// each (joined with errors.Join), each naming the key relative to this
// section, e.g. routes[1].audience.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	switch {
	case len(c.Routes) == 0 && !c.ContextExtensionsOnly:
		bad("routes", "no route configured: every request would be denied NO_ROUTE; add routes (host, path_prefix, audience), or set context_extensions_only: true if every Envoy route sets the %s context extension", ContextAudience)
	case len(c.Routes) > 0 && c.ContextExtensionsOnly:
		bad("context_extensions_only", "true, but %d routes are configured: remove the routes or this key", len(c.Routes))
	}
	for i, r := range c.Routes {
		key := fmt.Sprintf("routes[%d]", i)
		switch {
		case r.Audience == "":
			bad(key+".audience", "empty: give the audience the API behind this route answers to, e.g. api/invoices")
		case strings.TrimSpace(r.Audience) != r.Audience:
			bad(key+".audience", "%q has surrounding white space; audiences are compared byte for byte", r.Audience)
		}
		if r.Host != "" {
			if strings.ContainsAny(r.Host, "/?#@ \t\r\n") {
				bad(key+".host", "%q is not a host[:port] (no scheme, path or white space), e.g. users.example.com", r.Host)
			} else if h, _, err := net.SplitHostPort(r.Host); err == nil && h == "" {
				bad(key+".host", "%q has a port but no host", r.Host)
			}
		}
		if r.PathPrefix != "" && (!strings.HasPrefix(r.PathPrefix, "/") || strings.ContainsAny(r.PathPrefix, "?# \t\r\n")) {
			bad(key+".path_prefix", "%q must start with / and hold no query, fragment or white space, e.g. /invoices", r.PathPrefix)
		} else if np := normalizePath(r.PathPrefix); np.why != "" {
			bad(key+".path_prefix", "%q never matches: request paths are matched in normal form, and %s", r.PathPrefix, np.why)
		} else if np.path != r.PathPrefix {
			bad(key+".path_prefix", "%q is not in normal form (request paths are matched in normal form, RFC 3986): write %q", r.PathPrefix, np.path)
		}
		for j, s := range r.RequiredScopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n") {
				bad(fmt.Sprintf("%s.required_scopes[%d]", key, j), "%q is not a scope (non-empty, no white space)", s)
			}
		}
		for j := range i {
			if shadows(c.Routes[j], r) {
				bad(key, "never matches: routes[%d] (host %q, path_prefix %q) matches every request it would; put the more specific route first", j, c.Routes[j].Host, c.Routes[j].PathPrefix)
				break
			}
		}
	}
	if c.HeaderPrefix == "" {
		c.HeaderPrefix = DefaultHeaderPrefix
	}
	c.HeaderPrefix = strings.ToLower(c.HeaderPrefix)
	if err := checkHeaderPrefix(c.HeaderPrefix); err != "" {
		bad("header_prefix", "%q %s", c.HeaderPrefix, err)
	}
	if strings.ContainsFunc(c.Realm, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '"' || r == '\\' }) {
		bad("realm", "%q must be printable ASCII without quotes or backslashes", c.Realm)
	}
	return errors.Join(errs...)
}

func checkHeaderPrefix(p string) string {
	for _, r := range p {
		if (r < 'a' || r > 'z') && (r < '0' || r > '9') && r != '-' {
			return "may hold only letters, digits and -"
		}
	}
	if p[0] < 'a' || p[0] > 'z' || !strings.HasSuffix(p, "-") {
		return "must start with a letter and end with -, e.g. x-usher-"
	}
	if strings.HasPrefix(p, "x-envoy-") {
		return "is Envoy's own header namespace"
	}
	for _, h := range reservedHeaders {
		if strings.HasPrefix(h, p) {
			return fmt.Sprintf("would capture %s, which usher must not remove or set", h)
		}
	}
	return ""
}

// shadows reports whether a, placed first, matches every request b matches.
func shadows(a, b Route) bool {
	return hostMatches(a.Host, b.Host) && strings.HasPrefix(b.PathPrefix, a.PathPrefix)
}

// target is what a request is checked for.
type target struct {
	audience string
	scopes   []string
	route    int    // index in Config.Routes; -1 for a context extension
	path     string // the request path in normal form, without query: DPoP's htu
}

// resolve picks the audience: the usher_audience context extension, else
// the first route matching the path in normal form. When none can be
// picked, reason is ReasonNoRoute or ReasonAmbiguousPath and why says what
// went wrong.
func (c *Config) resolve(ext map[string]string, host, path string) (t target, reason, why string) {
	np := normalizePath(path)
	if np.why != "" {
		return t, ReasonAmbiguousPath, ambiguous(path, np.why)
	}
	if aud, set := ext[ContextAudience]; set {
		if strings.TrimSpace(aud) == "" {
			return t, ReasonNoRoute, "the route's " + ContextAudience + " context extension is empty: set it to the audience of the API behind the route"
		}
		if np.changed {
			// Envoy chose the route on this path; the upstream may resolve it elsewhere.
			return t, ReasonAmbiguousPath, ambiguous(path, fmt.Sprintf("Envoy routed it as sent, but its normal form is %q, which may be served by another route", clipPath(np.path)))
		}
		return target{audience: aud, scopes: strings.Fields(ext[ContextScopes]), route: -1, path: np.path}, "", ""
	}
	i := c.match(host, np.path)
	if asSent := c.match(host, pathOnly(path)); asSent != i {
		return t, ReasonAmbiguousPath, ambiguous(path, fmt.Sprintf("as sent it maps to %s, but its normal form %q to %s, and Envoy or the upstream may read it either way", c.routeName(asSent), clipPath(np.path), c.routeName(i)))
	}
	if i < 0 {
		return t, ReasonNoRoute, fmt.Sprintf("no route of usher's ext_authz configuration matches host %q path %q, and Envoy set no %s context extension; usher denies what it cannot map to an audience", service.Printable(host), service.Printable(np.path), ContextAudience)
	}
	r := c.Routes[i]
	return target{audience: r.Audience, scopes: r.RequiredScopes, route: i, path: np.path}, "", ""
}

// match is the index of the first route matching host and path, or -1.
func (c *Config) match(host, path string) int {
	for i, r := range c.Routes {
		if hostMatches(r.Host, host) && strings.HasPrefix(path, r.PathPrefix) {
			return i
		}
	}
	return -1
}

func (c *Config) routeName(i int) string {
	if i < 0 {
		return "no route"
	}
	return fmt.Sprintf("routes[%d] (audience %s)", i, c.Routes[i].Audience)
}

func ambiguous(path, why string) string {
	return fmt.Sprintf("path %q is ambiguous: %s; usher does not guess which API it reaches", service.Printable(pathOnly(path)), why)
}

func hostMatches(routeHost, host string) bool {
	switch {
	case routeHost == "":
		return true
	case strings.EqualFold(routeHost, host):
		return true
	case hasPort(routeHost):
		return false
	default:
		return strings.EqualFold(strings.Trim(routeHost, "[]"), strings.Trim(stripPort(host), "[]"))
	}
}

func hasPort(h string) bool {
	_, _, err := net.SplitHostPort(h)
	return err == nil
}

func stripPort(h string) string {
	if host, _, err := net.SplitHostPort(h); err == nil {
		return host
	}
	return h
}
