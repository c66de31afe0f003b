package service

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"
)

// Check is one line of `usher doctor`'s checklist.
type Check struct {
	// Subject groups checks: "issuer https://…" or "audiences".
	Subject string
	// Name says what was checked, e.g. "discovery issuer matches".
	Name string
	OK   bool
	// Detail is what was found.
	Detail string
	// Fix says what to do; set when !OK.
	Fix string
}

// Diagnose checks a configuration against the real world, now: each
// issuer's discovery document and key set are fetched, the keys are checked
// for the configured algorithms (weak or unusable keys named), an issuer
// with introspection has its endpoint asked about a made-up token with
// usher's own credentials (an inactive answer proves them), and the
// audiences registry is checked for sense. It starts nothing in the
// background. cfg must have passed Validate.
func Diagnose(ctx context.Context, cfg *Config, opts ...Option) []Check {
	o := options{now: time.Now, log: slog.New(slog.DiscardHandler), keyWaiters: 1}
	for _, opt := range opts {
		opt.apply(&o)
	}
	var out []Check
	for _, ic := range cfg.Issuers {
		hc := o.http
		if hc == nil {
			hc = newFetchClient(ic.FetchTimeout)
		}
		// The same rules on where keys may come from as the validator's.
		d := &diagnosis{subject: "issuer " + ic.Issuer, ic: ic, hc: guardClient(hc, ic, o.log), now: o.now}
		d.run(ctx, &o)
		out = append(out, d.checks...)
	}
	return append(out, diagnoseAudiences(cfg.Audiences)...)
}

// diagnosis is the checklist of one issuer.
type diagnosis struct {
	subject string
	ic      IssuerConfig
	hc      *http.Client
	now     func() time.Time
	checks  []Check
}

func (d *diagnosis) add(c Check) bool {
	c.Subject = d.subject
	d.checks = append(d.checks, c)
	return c.OK
}

func (d *diagnosis) run(ctx context.Context, o *options) {
	ic := d.ic
	var doc *discoveryDoc
	if ic.Discovery {
		if doc = d.discovery(ctx); doc == nil {
			return
		}
	}
	switch {
	case ic.JWKSFile != "":
		b, err := os.ReadFile(ic.JWKSFile)
		if d.add(Check{Name: "key set file readable", OK: err == nil, Detail: errText(err, ic.JWKSFile),
			Fix: "check jwks_file's path and permissions"}) {
			d.keySet(b, ic.JWKSFile)
		}
	case ic.JWKSURI != "" || doc != nil && doc.JWKSURI != "":
		source := ic.JWKSURI
		if doc != nil {
			source = doc.JWKSURI
		}
		b, err := getLimited(ctx, d.hc, source, maxJWKSBytes)
		if d.add(Check{Name: "key set reachable", OK: err == nil, Detail: errText(err, source),
			Fix: "check that usher can reach the key set URL (DNS, proxy, firewall, TLS) and that it answers 200 with a JWKS"}) {
			d.keySet(b, source)
		}
	default:
		why := "none configured"
		if doc != nil {
			why = "the discovery document names no jwks_uri"
		}
		d.add(Check{Name: "key set", OK: true, Detail: why + ": usher answers only this issuer's opaque tokens (introspection); its JWTs get UNKNOWN_KEY"})
	}
	if ic.Introspection != nil {
		d.introspection(ctx, doc, o)
	}
}

// discovery fetches and checks the discovery document; nil when it failed
// (the checklist says why).
func (d *diagnosis) discovery(ctx context.Context) *discoveryDoc {
	ic := d.ic
	doc, u, err := fetchDiscovery(ctx, d.hc, ic.Issuer)
	if !d.add(Check{Name: "discovery document reachable", OK: err == nil, Detail: errText(err, u),
		Fix: fmt.Sprintf("usher reads %s; check that the issuer URL is right and that usher can reach it (DNS, proxy, firewall, TLS)", u)}) {
		return nil
	}
	if ic.Introspection != nil && doc.JWKSURI == "" {
		err = doc.checkIssuer(ic.Issuer) // an issuer of opaque tokens only
	} else {
		err = doc.check(ic.Issuer)
	}
	fix := "fix the jwks_uri the issuer publishes"
	if doc.Issuer != ic.Issuer {
		fix = fmt.Sprintf("set issuer to exactly %q in usher's config if that is what the issuer's tokens carry as iss (compared byte for byte), or fix the issuer's own setting", doc.Issuer)
	}
	if !d.add(Check{Name: "discovery issuer matches", OK: err == nil, Detail: errText(err, fmt.Sprintf("%q, jwks_uri %s", doc.Issuer, doc.JWKSURI)), Fix: fix}) {
		return nil
	}
	return &doc
}

// keySet checks a fetched key set: usable keys, dropped keys, and keys for
// the configured algorithms.
func (d *diagnosis) keySet(body []byte, source string) {
	ic := d.ic
	ks, err := parseKeySet(body, d.now())
	if !d.add(Check{Name: "key set usable", OK: err == nil, Detail: errText(err, fmt.Sprintf("%d usable keys from %s: %s", len(keysOf(ks)), source, strings.Join(kidsOf(ks), ", "))),
		Fix: "publish at least one signing key (RSA ≥ 2048 bits, EC P-256/384/521 or Ed25519, public part only, use \"sig\")"}) {
		return
	}
	for _, dk := range ks.dropped {
		d.add(Check{Name: "key dropped", Detail: dk, Fix: "remove or replace this key in the issuer's key set: usher never verifies with it"})
	}
	var covered, uncovered []string
	for _, alg := range ic.Algorithms {
		spec := algSpecs[alg]
		if slices.ContainsFunc(ks.keys, func(k *verifyKey) bool { return k.fits(alg, spec) == "" }) {
			covered = append(covered, alg)
		} else {
			uncovered = append(uncovered, alg)
		}
	}
	detail := "no key can verify any of " + strings.Join(ic.Algorithms, ", ")
	if len(covered) > 0 {
		detail = "keys for " + strings.Join(covered, ", ")
		if len(uncovered) > 0 {
			detail += fmt.Sprintf(" (none for %s)", strings.Join(uncovered, ", "))
		}
	}
	d.add(Check{Name: "keys match the configured algorithms", OK: len(covered) > 0, Detail: detail,
		Fix: "set the issuer's algorithms in usher's config to those of its keys, or publish a key for them"})
}

func diagnoseAudiences(auds []KnownAudience) []Check {
	const subject = "audiences"
	if len(auds) == 0 {
		return []Check{{Subject: subject, Name: "registry", OK: true, Detail: "none registered: hints name audiences but not the APIs behind them"}}
	}
	var out []Check
	names := map[string]string{}
	for i, a := range auds {
		key := fmt.Sprintf("audiences[%d]", i)
		if strings.TrimSpace(a.Name) == "" {
			out = append(out, Check{Subject: subject, Name: key + " has a name", Detail: fmt.Sprintf("%q has no name", a.Audience),
				Fix: "add name: (e.g. \"Users API\") so that hints can say which API a token was issued for"})
			continue
		}
		if prev, dup := names[a.Name]; dup {
			out = append(out, Check{Subject: subject, Name: key + " name unique", Detail: fmt.Sprintf("%q names both %s and %s", a.Name, prev, a.Audience),
				Fix: "give each API its own name, or the hints will confuse them"})
		}
		names[a.Name] = a.Audience
	}
	if len(out) == 0 {
		out = append(out, Check{Subject: subject, Name: "registry", OK: true, Detail: fmt.Sprintf("%d registered, each named once", len(auds))})
	}
	return out
}

func errText(err error, ok string) string {
	if err != nil {
		return err.Error()
	}
	return ok
}

func keysOf(ks *keySet) []*verifyKey {
	if ks == nil {
		return nil
	}
	return ks.keys
}

func kidsOf(ks *keySet) []string {
	if ks == nil {
		return nil
	}
	return ks.kids()
}

// introspection checks the issuer's introspection endpoint and usher's
// credentials for real: it asks about a made-up token, which an endpoint
// that accepts usher's credentials answers with active: false. The secret
// is read as the validator reads it, and never shown.
func (d *diagnosis) introspection(ctx context.Context, doc *discoveryDoc, o *options) {
	ic := d.ic
	cfg := ic.Introspection
	in, err := newIntrospector(ctx, ic, o)
	if !d.add(Check{Name: "introspection client secret readable", OK: err == nil, Detail: errText(err, cfg.ClientSecretFile+" (the secret is not shown)"),
		Fix: "check client_secret_file's path and permissions; the file holds usher's client secret at the issuer, alone (one trailing line break is ignored)"}) {
		return
	}
	if doc != nil {
		in.fromDiscovery(*doc)
	}
	ep := in.endpoint()
	if !d.add(Check{Name: "introspection endpoint known", OK: ep != "", Detail: errText(errorOrNil(in.lastErr()), ep),
		Fix: "set introspection.endpoint in usher's config, or publish introspection_endpoint in the issuer's discovery document"}) {
		return
	}
	cctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	a, f := in.post(cctx, "usher-doctor-made-up-"+rand.Text())
	c := Check{Name: "introspection credentials accepted", OK: f == nil && !a.active}
	switch {
	case f == nil && !a.active:
		c.Detail = fmt.Sprintf("%s answered for client %q: a made-up token is not active", ep, cfg.ClientID)
	case f == nil:
		c.Detail = fmt.Sprintf("%s says a made-up token is active", ep)
		c.Fix = "this endpoint does not check tokens: make sure introspection.endpoint is the issuer's RFC 7662 introspection endpoint"
	case f.kind == failCredentials:
		c.Detail = fmt.Sprintf("%s: %s", ep, f.cause)
		c.Fix = fmt.Sprintf("usher's own client credentials are wrong: check introspection.client_id (%q) and client_secret_file, and that the client may introspect at the issuer", cfg.ClientID)
	default:
		c.Detail = fmt.Sprintf("%s: %s", ep, f.cause)
		c.Fix = "check that usher can reach the endpoint (DNS, proxy, firewall, TLS) and that it is the issuer's RFC 7662 introspection endpoint"
	}
	d.add(c)
}

// errorOrNil is an error of text s, nil for "".
func errorOrNil(s string) error {
	if s == "" {
		return nil
	}
	return errors.New(s)
}
