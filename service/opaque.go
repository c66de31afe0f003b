package service

import (
	"context"
	"crypto/sha256"
	"fmt"
	"strings"
	"time"
)

// Opaque tokens: a token that is no JWS at all (see opaque in token.go) is
// routed to the one issuer it may belong to and answered through that
// issuer's introspection endpoint (RFC 7662). The checks after the
// signature then run on the answer's claims, with the reasons, mismatch
// values and hints of a JWT.

// validateOpaque is ValidateRequest for an opaque token. A cnf in the
// issuer's answer binds the token as it binds a JWT.
func (v *Validator) validateOpaque(ctx context.Context, tok string, sum [sha256.Size]byte, audience string, scopes []string, p *Request) (Verdict, *issuerKeys, error) {
	ik, fail := v.route(tok)
	if fail != nil {
		return *fail, nil, nil
	}
	a, fail := v.answered(ctx, ik, tok, sum)
	if fail != nil {
		return *fail, ik, nil
	}
	verdict, err := v.verdict(ctx, ik, a.t, a.claims, audience, scopes, p, tok)
	return verdict, ik, err
}

// route picks the issuer an opaque token is sent to: the issuer one of
// whose token_prefixes it starts with (a prefix names one issuer at most,
// Config.Validate sees to it), else the only issuer with introspection.
// Otherwise the token is sent nowhere (MALFORMED, with a hint naming the
// prefixes): with several issuers a token is never sent to one it may not
// belong to. (A refresh or authorization-code token routed to the only
// issuer is told apart by the answer's token_use / token_type.)
func (v *Validator) route(tok string) (*issuerKeys, *Verdict) {
	for _, ik := range v.introspecting {
		for _, p := range ik.cfg.Introspection.TokenPrefixes {
			if strings.HasPrefix(tok, p) {
				return ik, nil
			}
		}
	}
	if len(v.introspecting) == 1 {
		return v.introspecting[0], nil
	}
	return nil, v.unroutedVerdict(opaque(tok))
}

// answered is the issuer's active answer about tok, or the verdict that
// ends the validation: ISSUER_UNAVAILABLE, INACTIVE, or UNTRUSTED_ISSUER
// when the answer names another issuer.
func (v *Validator) answered(ctx context.Context, ik *issuerKeys, tok string, sum [sha256.Size]byte) (*answer, *Verdict) {
	a, f := v.introspected(ctx, ik, tok, sum)
	switch {
	case f != nil:
		return nil, issuerUnavailableVerdict(ik, f)
	case !a.active:
		return nil, inactiveVerdict(ik)
	case a.t.claims.hasIss && a.t.claims.iss != ik.cfg.Issuer:
		return nil, answerIssuerVerdict(ik, a.t.claims.iss)
	}
	return a, nil
}

// introspected is the issuer's answer about tok: from the cache, or from a
// call that concurrent lookups of the same token share.
func (v *Validator) introspected(ctx context.Context, ik *issuerKeys, tok string, sum [sha256.Size]byte) (*answer, *introFailure) {
	in := ik.intro
	key := answerKey{sum: sum, ik: ik}
	if v.answers != nil {
		if a := v.answers.get(key, v.now()); a != nil {
			in.observeLookup(true, false)
			return a, nil
		}
	}
	if in.endpoint() == "" {
		ik.refreshForToken(ctx) // discovery: shared with the key set's, rate-limited, waited for briefly
	}
	if in.endpoint() == "" {
		in.observeLookup(false, false)
		return nil, in.noEndpoint(ik)
	}
	a, f := in.shared(ctx, key.sum, tok, func(a *answer) {
		if v.answers != nil && a.until.After(v.now()) {
			v.answers.add(key, a)
		}
	})
	in.observeLookup(false, f != nil && f.kind == failShed)
	return a, f
}

// callEndGrace bounds how long a caller waits beyond the issuer's timeout
// for the call to end: the call ends by that timeout (its context's
// deadline), and the caller gets the call's own failure; this backstop
// bounds the wait whatever happens.
const callEndGrace = time.Second

// shared runs one call per token at a time (the callers of the same token
// share it) and waits for it: the call ends by the issuer's timeout, and a
// caller waits at most nine tenths of the time left before its deadline,
// so that it gets a verdict rather than DEADLINE_EXCEEDED. At most maxWaiting callers
// of the issuer wait at a time, and at most as many calls are in flight:
// the others get ISSUER_UNAVAILABLE at once, so that a slow endpoint holds
// a bounded number of calls and never the other issuers'. keep gets a
// fresh answer (with its reuse time set) before any caller sees it.
func (in *introspector) shared(ctx context.Context, sum [32]byte, tok string, keep func(*answer)) (*answer, *introFailure) {
	if in.waiting.Add(1) > in.maxWaiting {
		in.waiting.Add(-1)
		return nil, in.shed()
	}
	defer in.waiting.Add(-1)
	wait := in.cfg.Timeout + callEndGrace
	if dl, ok := ctx.Deadline(); ok {
		wait = min(wait, time.Until(dl)*9/10)
	}
	if wait <= 0 {
		return nil, &introFailure{kind: failTimeout, cause: "no time left before the call's deadline to ask the introspection endpoint"}
	}
	ch := in.flight.DoChan(string(sum[:]), func() (any, error) {
		if in.inFlight.Add(1) > in.maxWaiting {
			in.inFlight.Add(-1)
			return nil, in.shed()
		}
		defer in.inFlight.Add(-1)
		a, f := in.call(tok)
		if f != nil {
			return nil, f
		}
		a.until = in.reuseUntil(a)
		keep(a)
		return a, nil
	})
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err.(*introFailure)
		}
		return r.Val.(*answer), nil
	case <-ctx.Done():
	case <-timer.C:
	}
	if wait == in.cfg.Timeout+callEndGrace {
		return nil, &introFailure{kind: failTimeout, cause: fmt.Sprintf("no answer within the timeout of %s", in.cfg.Timeout)}
	}
	return nil, &introFailure{kind: failTimeout, cause: fmt.Sprintf("no answer within %s, the time left before the call's deadline (the timeout is %s)", wait.Round(time.Millisecond), in.cfg.Timeout)}
}

// reuseUntil is how long an answer may be reused: an active one cache_ttl
// and never past its exp, an inactive one negative_cache_ttl.
func (in *introspector) reuseUntil(a *answer) time.Time {
	now := in.now()
	if !a.active {
		return now.Add(in.cfg.NegativeCacheTTL)
	}
	until := now.Add(in.cfg.CacheTTL)
	if c := &a.t.claims; c.hasExp && numericDate(c.exp).Before(until) {
		until = numericDate(c.exp)
	}
	return until
}

// shed turns a caller away: too many wait for this issuer already. The
// warning is logged at most once per shedLogEvery.
func (in *introspector) shed() *introFailure {
	now := in.now().UnixNano()
	last := in.lastShed.Load()
	if (last == 0 || now-last >= int64(shedLogEvery)) && in.lastShed.CompareAndSwap(last, now) {
		in.log.Warn("introspection is slow: calls beyond the per-issuer wait bound get ISSUER_UNAVAILABLE at once; check the endpoint (`usher doctor`)",
			"max_waiting", in.maxWaiting, "endpoint", in.endpoint())
	}
	return &introFailure{kind: failShed, cause: fmt.Sprintf("the introspection endpoint already has %d calls waiting or in flight", in.maxWaiting)}
}

// noEndpoint: the endpoint comes from discovery, which has not given one.
func (in *introspector) noEndpoint(ik *issuerKeys) *introFailure {
	why := "the discovery document was not read yet"
	if p := in.discoveryErr.Load(); p != nil {
		why = *p
	} else if e := ik.status().LastError; e != "" {
		why = "discovery failed: " + e
	}
	return &introFailure{kind: failNoEndpoint, cause: why}
}

func (in *introspector) observeLookup(hit, shed bool) {
	if in.obs != nil {
		in.obs.ObserveIntrospectionLookup(IntrospectionLookup{Issuer: in.issuer, Hit: hit, Shed: shed})
	}
}

// inspectOpaque is Inspect for an opaque token: the issuer's answer, its
// claims, and the registered audiences that accept it. Signature is VALID
// when the issuer says the token is active (an opaque token has no
// signature: the issuer's answer stands in for it), else the reason.
func (v *Validator) inspectOpaque(ctx context.Context, tok string) Inspection {
	ik, fail := v.route(tok)
	if fail == nil {
		var a *answer
		if a, fail = v.answered(ctx, ik, tok, tokenKey(tok)); fail == nil {
			in := Inspection{Claims: a.claims, Signature: ReasonValid, Message: "active: introspected by " + ik.cfg.Issuer}
			v.acceptedBy(&in, ik, a.t)
			return in
		}
	}
	return Inspection{Signature: fail.Reason, Message: fail.Message, Hint: fail.Hint}
}
