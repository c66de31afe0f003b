package service

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// A configuration reload builds a new validator. What it may take over from
// the running one (WithPrevious), and what it must not lose (KeysLost).

// sameKeySource reports whether two configurations of an issuer fetch the
// same key set: every field must be equal except those that only change how
// tokens are checked (algorithms, typ, leeway, required and audience claims),
// when the set is fetched and how long it is trusted (refresh_interval,
// unknown_kid_cooldown, fetch_timeout, max_stale: the carried set is judged
// by the new values), and introspection, which answers opaque tokens and
// fetches no keys. So a changed issuer, jwks_uri, discovery or jwks_file,
// or any setting added later, counts as a new source.
func sameKeySource(a, b IssuerConfig) bool {
	for _, c := range []*IssuerConfig{&a, &b} {
		c.Algorithms, c.TokenType, c.Leeway, c.RequiredClaims, c.AudienceClaims = nil, "", 0, nil, nil
		c.RefreshInterval, c.UnknownKIDCooldown, c.FetchTimeout, c.MaxStale = 0, 0, 0, 0
		c.Introspection = nil
	}
	return reflect.DeepEqual(a, b)
}

// carryFrom seeds ik with prev's key set for the same issuer when its key
// source did not change: the set (with its fetch time, so max_stale still
// counts from the last good fetch), the Retry-After the issuer asked for,
// the last token-driven refetch (the cooldown goes on), the last error, the
// discovered jwks_uri and the identity provider its discovery document
// showed. The issuer counts as tried. A static jwks_file is never carried:
// it is read again.
func (ik *issuerKeys) carryFrom(prev *Validator) {
	if prev == nil {
		return
	}
	old := prev.issuers[ik.cfg.Issuer]
	if old == nil || old.static || !sameKeySource(old.cfg, ik.cfg) {
		return
	}
	ik.idp.CompareAndSwap(uint32(providerUnknown), uint32(old.provider())) // what its discovery document showed
	ks := old.keys()
	if ks == nil {
		return
	}
	ik.set.Store(ks) // a keySet is never changed once parsed: sharing it is safe
	ik.notBefore.Store(old.notBefore.Load())
	ik.lastForced.Store(old.lastForced.Load())
	old.mu.Lock()
	lastError, uri := old.lastError, old.jwksURI
	old.mu.Unlock()
	ik.mu.Lock()
	ik.lastError, ik.jwksURI = lastError, uri
	ik.mu.Unlock()
	ik.markTried()
	ik.log.Info("key set kept from the running config (same key source); refetching in the background",
		"kids", ks.kids(), "fetched", ks.fetched.UTC().Format(time.RFC3339), "last_error", lastError)
}

// KeysLost reports what swapping v in for old would lose: each issuer that
// both configure, for which old holds a key set within max_stale and v holds
// none (its key source changed and gave no keys yet). An issuer that v
// answers through introspection only (no key set, on purpose) loses
// nothing. One error per issuer, joined; nil when nothing is lost. A reload
// should then keep old.
func (v *Validator) KeysLost(old *Validator) error {
	if old == nil {
		return nil
	}
	var errs []error
	for _, ik := range v.order {
		prev := old.issuers[ik.cfg.Issuer]
		if prev == nil || ik.keys() != nil || ik.keyless.Load() {
			continue
		}
		oks := prev.keys()
		if oks == nil || prev.stale(oks) {
			continue
		}
		was, now := prev.status(), ik.status()
		why := now.LastError
		if why == "" {
			why = "no fetch finished yet"
		}
		errs = append(errs, fmt.Errorf("issuer %s: the running config holds its keys %s (from %s, fetched %s ago), the new config none (key source %s: %s); fix the new key source, or remove the issuer on purpose, and reload again",
			ik.cfg.Issuer, strings.Join(oks.kids(), ", "), was.JWKSURI, v.now().Sub(oks.fetched).Round(time.Second), keySource(ik), why))
	}
	return errors.Join(errs...)
}

// keySource names where an issuer's keys come from, for messages.
func keySource(ik *issuerKeys) string {
	if uri := ik.status().JWKSURI; uri != "" {
		return uri
	}
	return "discovery " + discoveryURL(ik.cfg.Issuer)
}
