package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"time"
)

// Validator is the engine: token in, Verdict out. It knows nothing of gRPC.
// It is safe for concurrent use.
type Validator struct {
	issuers   map[string]*issuerKeys
	order     []*issuerKeys
	allAlgs   []string // every algorithm some issuer allows
	audiences []KnownAudience
	audName   map[string]string
	hints     *hintIndex // issuers and audiences in the forms hints compare
	maxBytes  int
	now       func() time.Time
	log       *slog.Logger
	cache     *verifiedCache // nil when turned off
	observer  Observer       // nil without WithObserver

	replay    ReplayStore   // remembers DPoP proofs' jti
	iatWindow time.Duration // dpop.iat_window

	introspecting []*issuerKeys // issuers with introspection, in config order; nil when none
	answers       *answerCache  // introspection answers; nil when caches are off or no issuer introspects
}

// NewValidator builds the engine from a configuration (validated here) and
// starts fetching each issuer's keys in the background, owned by ctx: it does
// not wait for them. Static jwks_file sets are read now, and a broken one is
// an error.
func NewValidator(ctx context.Context, cfg *Config, opts ...Option) (*Validator, error) {
	if cfg == nil {
		return nil, errors.New("NewValidator: nil config")
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	o := options{now: time.Now, log: slog.New(slog.DiscardHandler), keyWait: defaultKeyWait, keyWaiters: defaultKeyWaiters}
	for _, opt := range opts {
		opt.apply(&o)
	}
	v := &Validator{
		issuers:  map[string]*issuerKeys{},
		audName:  map[string]string{},
		maxBytes: cfg.MaxTokenBytes,
		now:      o.now,
		log:      o.log,
		observer: o.observer,
		hints:    newHintIndex(cfg),

		replay:    replayStore(&o, cfg.DPoP.ReplayMaxEntries),
		iatWindow: cfg.DPoP.IATWindow,
	}
	if cfg.CacheMaxEntries > 0 {
		v.cache = newVerifiedCache(cfg.CacheMaxEntries, cfg.CacheMaxBytes)
	}
	for _, a := range cfg.Audiences {
		v.audiences = append(v.audiences, a)
		v.audName[a.Audience] = a.Name
	}
	for _, ic := range cfg.Issuers {
		hc := o.http
		if hc == nil {
			hc = newFetchClient(ic.FetchTimeout)
		}
		ik, err := newIssuerKeys(ctx, ic, hc, &o)
		if err != nil {
			return nil, fmt.Errorf("issuer %q: %w", ic.Issuer, err)
		}
		v.issuers[ic.Issuer] = ik
		v.order = append(v.order, ik)
		if ik.intro != nil {
			v.introspecting = append(v.introspecting, ik)
		}
		for _, a := range ic.Algorithms {
			if !slices.Contains(v.allAlgs, a) {
				v.allAlgs = append(v.allAlgs, a)
			}
		}
	}
	if v.introspecting != nil && cfg.CacheMaxEntries > 0 {
		v.answers = newAnswerCache(cfg.CacheMaxEntries, cfg.CacheMaxBytes)
	}
	return v, nil
}

// WaitTried blocks until every issuer's keys were tried once (fetched, or
// failed), or ctx is done.
func (v *Validator) WaitTried(ctx context.Context) error {
	for _, ik := range v.order {
		select {
		case <-ik.tried:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Issuers reports what usher believes about each issuer now.
func (v *Validator) Issuers() []IssuerStatus {
	out := make([]IssuerStatus, 0, len(v.order))
	for _, ik := range v.order {
		out = append(out, ik.status())
	}
	return out
}

// Audiences returns the audiences registry.
func (v *Validator) Audiences() []KnownAudience { return slices.Clone(v.audiences) }

// Validate checks token for an API whose own audience is audience and which
// requires every scope in scopes. The token may carry a "Bearer " prefix.
// An empty (or white space only) audience never matches: it is a caller
// bug, and fails closed. It is ValidateRequest with no proof: a
// sender-constrained token is PROOF_MISSING.
func (v *Validator) Validate(ctx context.Context, token, audience string, scopes []string) Verdict {
	// Without a proof the replay store is never asked: no error.
	verdict, _ := v.validateObserved(ctx, token, audience, scopes, &noProof)
	return verdict
}

// noProof is the sender-constraint part of Validate's request: none.
var noProof Request

// validateObserved is Validate and ValidateRequest, told to the observer.
// token, audience and scopes are passed apart from p (which only the
// proof's checks read), so that a caller's scopes need not escape to the
// heap: Validate allocates nothing for a cached bearer token.
func (v *Validator) validateObserved(ctx context.Context, token, audience string, scopes []string, p *Request) (Verdict, error) {
	if v.observer == nil {
		verdict, _, err := v.validate(ctx, token, audience, scopes, p)
		return verdict, err
	}
	start := time.Now()
	verdict, ik, err := v.validate(ctx, token, audience, scopes, p)
	if err != nil {
		return verdict, err // no verdict to observe
	}
	v.observer.ObserveVerdict(v.event(&verdict, ik, audience, time.Since(start)))
	return verdict, nil
}

// replayStore is WithReplayStore's store, else the previous validator's
// in-memory one (a reload must not forget the proofs it has seen), else a
// new one.
func replayStore(o *options, maxEntries int) ReplayStore {
	if o.replay != nil {
		return o.replay
	}
	if o.previous != nil {
		if m, ok := o.previous.replay.(*MemoryReplayStore); ok {
			m.setMax(maxEntries)
			return m
		}
	}
	return NewMemoryReplayStore(maxEntries, o.now)
}

// event describes a validation to the observer with bounded values only: a
// configured issuer, registered audiences, or "".
func (v *Validator) event(verdict *Verdict, ik *issuerKeys, audience string, took time.Duration) VerdictEvent {
	ev := VerdictEvent{Reason: verdict.Reason, Took: took}
	if ik != nil {
		ev.Issuer = ik.cfg.Issuer
	}
	if _, ok := v.audName[audience]; ok {
		ev.Audience = audience
	}
	if verdict.Reason == ReasonAudienceMismatch && verdict.Claims != nil {
		for _, a := range verdict.Claims.Audience {
			if _, ok := v.audName[a]; ok {
				ev.TokenAudience = a
				break
			}
		}
	}
	return ev
}

// validate is ValidateRequest, p holding the proof and the request it was
// made for; it also names the issuer once it is known.
func (v *Validator) validate(ctx context.Context, token, audience string, scopes []string, p *Request) (Verdict, *issuerKeys, error) {
	tok := v.clean(token)
	if len(tok) > v.maxBytes { // refused unhashed, by its length
		_, _, _, fail := v.verify(ctx, tok)
		return *fail, nil, nil
	}
	var sum [sha256.Size]byte // the caches' key
	if v.cache != nil || v.introspecting != nil {
		sum = tokenKey(tok)
	}
	now := v.now()
	if v.cache != nil {
		// A verified JWT seen before: no parsing, and no look at its shape.
		if e := v.cache.get(sum, now); e != nil {
			verdict, err := v.verdict(ctx, e.ik, e.t, e.claims, audience, scopes, p, tok)
			return verdict, e.ik, err
		}
	}
	if v.introspecting != nil && opaqueShape(tok) {
		return v.validateOpaque(ctx, tok, sum, audience, scopes, p)
	}
	if v.cache != nil {
		v.cache.missed()
	}
	t, ik, k, fail := v.verify(ctx, tok)
	if fail != nil {
		return *fail, ik, nil
	}
	until := now.Add(maxCacheAge)
	if t.claims.hasExp && numericDate(t.claims.exp).Before(until) {
		until = numericDate(t.claims.exp).Add(ik.cfg.Leeway)
	}
	var claims *Claims
	if v.cache == nil || !until.After(now) { // no cache, or expired already: nothing worth keeping
		claims = t.toClaims()
	} else {
		e := v.cache.add(sum, len(tok), t, ik, k, until)
		t, claims = e.t, e.claims
	}
	verdict, err := v.verdict(ctx, ik, t, claims, audience, scopes, p, tok)
	return verdict, ik, err
}

// CacheStats reports the verified-token cache's counters (zero when off).
func (v *Validator) CacheStats() CacheStats {
	if v.cache == nil {
		return CacheStats{}
	}
	return v.cache.stats()
}

// IntrospectionCacheStats reports the introspection cache's counters (zero
// when off or when no issuer has introspection).
func (v *Validator) IntrospectionCacheStats() CacheStats {
	if v.answers == nil {
		return CacheStats{}
	}
	return v.answers.stats()
}

// verdict runs the checks after the signature on a verified token (or an
// active introspection answer), the proof (p) of a sender-constrained one
// among them; tok is the token as validated (a proof's ath is its hash).
// The error wraps ErrProofUnchecked: there is no verdict.
func (v *Validator) verdict(ctx context.Context, ik *issuerKeys, t *parsedToken, claims *Claims, audience string, scopes []string, p *Request, tok string) (Verdict, error) {
	verdict := Verdict{Reason: ReasonValid, Message: "token is valid", Claims: claims}
	verdict.Violations = v.checkClaims(ik, t, audience, scopes)
	// A bearer token sent as Bearer, the hot path, costs two tests here.
	if claims.Confirmation.Bound() || dpopScheme(p.Scheme) {
		if err := v.checkSender(ctx, &verdict, p, tok); err != nil {
			return Verdict{}, err
		}
	}
	if len(verdict.Violations) > 0 {
		first := verdict.Violations[0]
		verdict.Reason, verdict.Message, verdict.Hint, verdict.Mismatch = first.Reason, first.Message, first.Hint, first.Mismatch
	}
	return verdict, nil
}

// Inspect decodes any token and says whether a trusted key verifies it and
// which registered audiences would accept it. Claims of a token whose
// signature did not verify are reported but never matched to an audience.
// An opaque token of an issuer with introspection is shown as its issuer
// answers for it: its claims, and Signature VALID when the issuer says it
// is active (INACTIVE, ISSUER_UNAVAILABLE… when not).
func (v *Validator) Inspect(ctx context.Context, token string) Inspection {
	tok := v.clean(token)
	t, m := parseCompact(tok, v.maxBytes)
	if v.introspecting != nil && len(tok) <= v.maxBytes && opaqueShape(tok) {
		return v.inspectOpaque(ctx, tok)
	}
	if m != nil {
		f := malformedVerdict(m)
		return Inspection{Signature: ReasonMalformed, Message: f.Message, Hint: f.Hint}
	}
	in := Inspection{Header: t.header, Claims: t.toClaims()}
	vt, ik, key, fail := v.verify(ctx, tok)
	if fail != nil {
		in.Signature, in.Message, in.Hint = fail.Reason, fail.Message, fail.Hint
		return in
	}
	in.Signature = ReasonValid
	in.Message = fmt.Sprintf("signature verified with key %q of %s", vt.kid, ik.cfg.Issuer)
	if key.kid == "" { // neither the token nor the key has one
		in.Message = fmt.Sprintf("signature verified with %s of %s", onlyKey(vt.alg, key), ik.cfg.Issuer)
	}
	v.acceptedBy(&in, ik, vt)
	return in
}

// acceptedBy fills in the registered audiences that accept a verified (or
// active) token, and says so in the message.
func (v *Validator) acceptedBy(in *Inspection, ik *issuerKeys, vt *parsedToken) {
	for _, a := range v.audiences {
		if len(v.checkClaims(ik, vt, a.Audience, nil)) == 0 {
			in.Audiences = append(in.Audiences, a)
		}
	}
	switch {
	case len(in.Audiences) > 0:
		in.Message += "; accepted by " + describeAudiences(in.Audiences)
	case len(v.audiences) > 0:
		viol := v.checkClaims(ik, vt, "", nil) // ends with AUDIENCE_MISMATCH; anything before it says why
		in.Message += "; no registered audience accepts it"
		if len(viol) > 0 && viol[0].Reason != ReasonAudienceMismatch {
			in.Message += " (" + viol[0].Message + ")"
		}
	}
}

// maxWrapperBytes is the room left beyond max_token_bytes for a "Bearer "
// prefix and surrounding white space.
const maxWrapperBytes = 256

// clean strips the "Bearer " prefix and white space. An input too long to
// hold a token within the limit is left as it is, so that parseCompact
// refuses it by its length without scanning it.
func (v *Validator) clean(token string) string {
	if len(token) > v.maxBytes+maxWrapperBytes {
		return token
	}
	return cleanToken(token)
}

// verify runs the checks up to and including the signature, in order
// (MALFORMED, UNSUPPORTED_ALGORITHM, UNTRUSTED_ISSUER, UNKNOWN_KEY or
// KEYS_UNAVAILABLE, INVALID_SIGNATURE); it returns the verified token, its
// issuer and key, or the verdict of the first failed check (with the issuer
// once it is known).
func (v *Validator) verify(ctx context.Context, tok string) (*parsedToken, *issuerKeys, *verifyKey, *Verdict) {
	t, m := parseCompact(tok, v.maxBytes)
	if m != nil {
		return nil, nil, nil, malformedVerdict(m)
	}
	ik := v.issuers[t.claims.iss]
	if !t.claims.hasIss {
		ik = nil
	}
	allowed := v.allAlgs
	if ik != nil {
		allowed = ik.cfg.Algorithms
	}
	spec, known := algSpecs[t.alg]
	if !t.hasAlg || !known || !slices.Contains(allowed, t.alg) {
		return nil, nil, nil, algorithmVerdict(t, allowed)
	}
	if ik == nil {
		return nil, nil, nil, v.untrustedIssuerVerdict(t)
	}
	if ik.keyless.Load() {
		return nil, ik, nil, noKeySetVerdict(t, ik)
	}
	ks, mark := ik.keys(), ik.tokenRefetchMark()
	if ks == nil || ik.stale(ks) {
		ik.refreshForToken(ctx)
		if ik.keyless.Load() { // discovery found no jwks_uri just now
			return nil, ik, nil, noKeySetVerdict(t, ik)
		}
		if ks = ik.keys(); ks == nil || ik.stale(ks) {
			return nil, ik, nil, keysUnavailableVerdict(ik, ks)
		}
	}
	key, ambiguous := ks.pick(t.kid, spec)
	if key == nil && !ambiguous {
		ik.refreshForToken(ctx)
		ks = ik.keys()
		key, ambiguous = ks.pick(t.kid, spec)
	}
	if key == nil {
		return nil, ik, nil, v.unknownKeyVerdict(t, ik, ks, ambiguous, ik.tokenRefetchMark() != mark)
	}
	if why := key.fits(t.alg, spec); why != "" {
		return nil, ik, nil, &Verdict{
			Reason:   ReasonUnsupportedAlgorithm,
			Message:  "algorithm does not match the key: " + why,
			Hint:     "the token's alg header must match the type of the key it names; a mismatch is how key-confusion attacks work, so usher never tries another algorithm",
			Mismatch: &Mismatch{Claim: "alg", Expected: algsFor(key), Actual: []string{t.alg}},
		}
	}
	if !key.verify(spec, t.signingInput, t.signature) {
		return nil, ik, nil, invalidSignatureVerdict(t, ik, key)
	}
	if t.kid == "" {
		t.kid = key.kid
	}
	return t, ik, key, nil
}

// pick finds the key for a kid; a token without kid may use the issuer's
// only key of the right type. ambiguous is true when several could fit.
func (ks *keySet) pick(kid string, spec algSpec) (*verifyKey, bool) {
	if kid != "" {
		return ks.byKID[kid], false
	}
	var found *verifyKey
	n := 0
	for _, k := range ks.keys {
		if k.kty == spec.kty && (spec.crv == "" || k.crv == spec.crv) {
			found = k
			n++
		}
	}
	if n == 1 {
		return found, false
	}
	return nil, n > 1
}

func algsFor(k *verifyKey) []string {
	if k.alg != "" {
		return []string{k.alg}
	}
	var out []string
	for _, a := range DefaultAlgorithms {
		s := algSpecs[a]
		if s.kty == k.kty && (s.crv == "" || s.crv == k.crv) {
			out = append(out, a)
		}
	}
	return out
}

// checkClaims runs the checks after the signature, in order, and returns
// every one that failed.
func (v *Validator) checkClaims(ik *issuerKeys, t *parsedToken, audience string, scopes []string) []Violation {
	var out []Violation
	c := &t.claims
	cfg := &ik.cfg
	now := v.now()
	leeway := cfg.Leeway

	switch {
	case t.opaque: // typ is a JWT header; an introspection answer says itself what it is
		if vi, ok := refreshTokenViolation(t); ok {
			out = append(out, vi)
		}
	case cfg.TokenType != "" && !sameMediaType(t.typ, cfg.TokenType):
		out = append(out, wrongTypeViolation(t, cfg.TokenType))
	}
	if c.hasExp {
		exp := numericDate(c.exp)
		if now.After(exp.Add(leeway)) {
			out = append(out, expiredViolation(now, exp, leeway))
		}
	}
	if c.hasNbf {
		if nbf := numericDate(c.nbf); nbf.After(now.Add(leeway)) {
			out = append(out, notYetValidViolation("nbf", now, nbf, leeway))
		}
	}
	if c.hasIat && (!c.hasNbf || !numericDate(c.nbf).After(now.Add(leeway))) {
		if iat := numericDate(c.iat); iat.After(now.Add(leeway)) {
			out = append(out, notYetValidViolation("iat", now, iat, leeway))
		}
	}
	for _, name := range cfg.RequiredClaims {
		if _, ok := t.payload[name]; !ok {
			out = append(out, missingClaimViolation(name, ik.cfg.Issuer, t.opaque))
		}
	}
	auds := t.audiences(cfg.AudienceClaims)
	if blank(audience) || !slices.Contains(auds, audience) {
		out = append(out, v.audienceViolation(ik, t, auds, audience))
	}
	if missing := missingScopes(c.scopes, scopes); len(missing) > 0 {
		out = append(out, scopeViolation(c.scopes, scopes, missing))
	}
	return out
}

// audiences reads the audience values from the configured claims.
func (t *parsedToken) audiences(claims []string) []string {
	if len(claims) == 1 && claims[0] == "aud" {
		return t.claims.aud
	}
	var out []string
	for _, name := range claims {
		if name == "aud" {
			out = append(out, t.claims.aud...)
			continue
		}
		if vals, m := stringOrStrings(name, t.payload[name]); m == nil {
			out = append(out, vals...)
		}
	}
	return out
}

func missingScopes(granted, required []string) []string {
	var missing []string
	for _, s := range required {
		if !slices.Contains(granted, s) {
			missing = append(missing, s)
		}
	}
	return missing
}

// sameMediaType compares typ values as RFC 7515 §4.1.9 says: case-insensitive,
// with an omitted "application/" prefix.
func sameMediaType(got, want string) bool {
	norm := func(s string) string {
		s = strings.ToLower(s)
		return strings.TrimPrefix(s, "application/")
	}
	return got != "" && norm(got) == norm(want)
}

func numericDate(f float64) time.Time {
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC()
}

func (t *parsedToken) toClaims() *Claims {
	c := &t.claims
	out := &Claims{
		Issuer: c.iss, Subject: c.sub, Audience: c.aud, Scopes: c.scopes,
		ClientID: c.clientID, JWTID: c.jti,
		KeyID: t.kid, Algorithm: t.alg, TokenType: t.typ, TokenFormat: "jwt",
		Confirmation: c.cnf, Raw: t.payload,
	}
	if out.ClientID == "" {
		out.ClientID = c.azp
	}
	if c.hasExp {
		out.ExpiresAt = numericDate(c.exp)
	}
	if c.hasIat {
		out.IssuedAt = numericDate(c.iat)
	}
	if c.hasNbf {
		out.NotBefore = numericDate(c.nbf)
	}
	return out
}
