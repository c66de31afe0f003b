package service

import (
	"context"
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
// for the configured algorithms (weak or unusable keys named), and the
// audiences registry is checked for sense. It starts nothing in the
// background. cfg must have passed Validate.
func Diagnose(ctx context.Context, cfg *Config, opts ...Option) []Check {
	o := options{now: time.Now, log: slog.New(slog.DiscardHandler)}
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
		out = append(out, diagnoseIssuer(ctx, ic, guardClient(hc, ic, o.log), o.now)...)
	}
	return append(out, diagnoseAudiences(cfg.Audiences)...)
}

func diagnoseIssuer(ctx context.Context, ic IssuerConfig, hc *http.Client, now func() time.Time) []Check {
	subject := "issuer " + ic.Issuer
	var out []Check
	add := func(c Check) bool {
		c.Subject = subject
		out = append(out, c)
		return c.OK
	}
	var body []byte
	var source string
	switch {
	case ic.JWKSFile != "":
		source = ic.JWKSFile
		b, err := os.ReadFile(ic.JWKSFile)
		if !add(Check{Name: "key set file readable", OK: err == nil, Detail: errText(err, ic.JWKSFile),
			Fix: "check jwks_file's path and permissions"}) {
			return out
		}
		body = b
	default:
		source = ic.JWKSURI
		if ic.Discovery {
			doc, u, err := fetchDiscovery(ctx, hc, ic.Issuer)
			if !add(Check{Name: "discovery document reachable", OK: err == nil, Detail: errText(err, u),
				Fix: fmt.Sprintf("usher reads %s; check that the issuer URL is right and that usher can reach it (DNS, proxy, firewall, TLS)", u)}) {
				return out
			}
			err = doc.check(ic.Issuer)
			fix := "fix the jwks_uri the issuer publishes"
			if doc.Issuer != ic.Issuer {
				fix = fmt.Sprintf("set issuer to exactly %q in usher's config if that is what the issuer's tokens carry as iss (compared byte for byte), or fix the issuer's own setting", doc.Issuer)
			}
			if !add(Check{Name: "discovery issuer matches", OK: err == nil, Detail: errText(err, fmt.Sprintf("%q, jwks_uri %s", doc.Issuer, doc.JWKSURI)), Fix: fix}) {
				return out
			}
			source = doc.JWKSURI
		}
		b, err := getLimited(ctx, hc, source, maxJWKSBytes)
		if !add(Check{Name: "key set reachable", OK: err == nil, Detail: errText(err, source),
			Fix: "check that usher can reach the key set URL (DNS, proxy, firewall, TLS) and that it answers 200 with a JWKS"}) {
			return out
		}
		body = b
	}
	ks, err := parseKeySet(body, now())
	if !add(Check{Name: "key set usable", OK: err == nil, Detail: errText(err, fmt.Sprintf("%d usable keys from %s: %s", len(keysOf(ks)), source, strings.Join(kidsOf(ks), ", "))),
		Fix: "publish at least one signing key (RSA ≥ 2048 bits, EC P-256/384/521 or Ed25519, public part only, use \"sig\")"}) {
		return out
	}
	for _, d := range ks.dropped {
		add(Check{Name: "key dropped", Detail: d, Fix: "remove or replace this key in the issuer's key set: usher never verifies with it"})
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
	add(Check{Name: "keys match the configured algorithms", OK: len(covered) > 0, Detail: detail,
		Fix: "set the issuer's algorithms in usher's config to those of its keys, or publish a key for them"})
	return out
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
