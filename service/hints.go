package service

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Every message and hint of a verdict is written here (those of proofs in
// proofhints.go, and how each identity provider is asked for a token for an
// API in idphints.go). A message is one
// sentence for a log line; a hint names the fix. Both are written for the
// holder of the token: they may name issuers, audiences and key ids, never
// key material or the token itself.

func malformedVerdict(m *malformed) *Verdict {
	msg := "malformed token: " + m.Error()
	if m.part == "token" {
		msg = "malformed token: " + m.why
	}
	return &Verdict{Reason: ReasonMalformed, Message: msg, Hint: malformedHints[m.kind]}
}

// malformedHints name the fix for each kind of malformed token.
var malformedHints = [...]string{
	malformedShape:         resendHint,
	malformedTooLarge:      "a token this large is not an access token usher accepts; check what is being sent in the authorization header",
	malformedSerialization: resendHint,
	malformedEncrypted:     "usher validates signed tokens (JWS); ask the issuer for a signed access token, not an encrypted one",
	malformedEncoding:      resendHint,
	malformedJSON:          resendHint,
	malformedHeaderType:    "the issuer emits a header parameter with the wrong JSON type (RFC 7515 §4.1: alg, kid and typ are strings); fix the issuer's token format",
	malformedClaimType:     "the issuer emits a registered claim with the wrong JSON type (RFC 7519 §4.1); fix the issuer's token format",
	malformedDate:          "the issuer emits a time claim that is not a date (RFC 7519 §2: NumericDate, seconds since 1970); check the issuer's clock and how it writes exp, nbf and iat",
	malformedExtension:     "the token requires a JWS extension usher does not implement; ask the issuer for a token without crit or b64",
	malformedScope:         "the issuer emits a scope holding a control character, white space other than the single space between scopes, or an invisible character (RFC 6749 §3.3: scopes are visible characters separated by spaces); such a scope could read as two, so the token is refused: fix the scope's name at the issuer",
	malformedOpaque:        opaqueHint,
	malformedConfirmation:  "the issuer emits a cnf claim usher cannot read: cnf.jkt (RFC 9449 §6.1) and cnf[\"x5t#S256\"] (RFC 8705 §3.1) are base64url SHA-256 thumbprints of 43 characters; a token whose binding cannot be read is refused rather than taken for a bearer token: fix the issuer's token format",
}

const opaqueHint = "this is an opaque (reference) access token, not a JWT: usher validates a JWT by its signature, and an opaque token only by asking its issuer (RFC 7662 introspection), which no issuer in usher's config is set up for. " +
	"Configure introspection for the issuer (introspection: endpoint, client_id, client_secret_file; the endpoint may come from discovery), " +
	"or ask the issuer for JWT access tokens (Ory Hydra: strategies.access_token: jwt; node-oidc-provider: request the token for a resource indicator, the RFC 8707 \"resource\" parameter, whose resource server has accessTokenFormat: 'jwt')"

const resendHint = "send the compact JWS exactly as the issuer returned it (three base64url segments joined by dots), without quotes, line breaks or URL encoding"

func algorithmVerdict(t *parsedToken, allowed []string) *Verdict {
	alg := Printable(t.alg) // unverified: bounded and escaped before it is shown
	v := &Verdict{Reason: ReasonUnsupportedAlgorithm, Mismatch: &Mismatch{Claim: "alg", Expected: slices.Clone(allowed), Actual: []string{alg}}}
	allowedList := strings.Join(allowed, ", ")
	switch {
	case !t.hasAlg:
		v.Message = "token header has no alg"
		v.Mismatch.Actual = nil
		v.Hint = "every JWS must name its algorithm; allowed here: " + allowedList
	case strings.EqualFold(t.alg, "none"):
		v.Message = fmt.Sprintf("alg %q: unsigned tokens are never accepted", alg)
		v.Hint = "this token proves nothing about who issued it; ask the issuer for a signed token (" + allowedList + ")"
	case strings.HasPrefix(strings.ToUpper(t.alg), "HS"):
		v.Message = fmt.Sprintf("alg %s is symmetric and not allowed", alg)
		v.Hint = "usher verifies with the issuer's public keys; an HMAC token either comes from a misconfigured issuer or is a key-confusion attack. Allowed: " + allowedList
	default:
		v.Message = fmt.Sprintf("alg %q is not allowed for this issuer (allowed: %s)", alg, allowedList)
		v.Hint = "configure the issuer to sign with one of " + allowedList + ", or add it to the issuer's algorithms in usher's config if it is a JWS algorithm usher verifies"
	}
	return v
}

func (v *Validator) untrustedIssuerVerdict(t *parsedToken) *Verdict {
	trusted := slices.Clone(v.hints.trusted)
	out := &Verdict{Reason: ReasonUntrustedIssuer, Mismatch: &Mismatch{Claim: "iss", Expected: trusted}}
	if !t.claims.hasIss {
		out.Message = "token has no iss claim"
		out.Hint = "usher only accepts tokens that name their issuer; trusted issuers: " + strings.Join(trusted, ", ")
		return out
	}
	iss := Printable(t.claims.iss) // unverified: bounded before it is shown
	out.Mismatch.Actual = []string{iss}
	out.Message = fmt.Sprintf("issuer %q is not trusted", iss)
	if want, d := v.hints.issuerNearMiss(t.claims.iss); d != "" {
		out.Hint = fmt.Sprintf("the token's iss %q differs from the trusted issuer %q only by %s; iss is compared byte for byte, so fix the issuer URL in usher's config or in the issuer's settings so that they are identical", iss, want, d)
		return out
	}
	closest := v.hints.closestIssuer(t.claims.iss)
	out.Hint = fmt.Sprintf("the closest trusted issuer is %q; get a token from a trusted issuer (%s), or add %q to usher's issuers if it should be trusted", closest, strings.Join(trusted, ", "), iss)
	return out
}

func keysUnavailableVerdict(ik *issuerKeys, stale *keySet) *Verdict {
	st := ik.status()
	msg := fmt.Sprintf("no keys of issuer %s could be fetched yet", ik.cfg.Issuer)
	if stale != nil {
		msg = fmt.Sprintf("the last good key set of issuer %s was fetched %s ago, beyond max_stale %s, and every refresh since failed",
			ik.cfg.Issuer, ik.now().Sub(stale.fetched).Round(time.Second), ik.cfg.MaxStale)
	}
	if st.LastError != "" {
		msg += ": " + st.LastError
	}
	return &Verdict{
		Reason:  ReasonKeysUnavailable,
		Message: msg,
		Hint:    "not the token's fault: usher cannot reach the issuer's key set (" + st.JWKSURI + "); retry shortly, and check that usher can reach it (`usher doctor`)",
	}
}

// unknownKeyVerdict: refetched says whether the key set was refetched for
// this token (or for one whose refetch it joined).
func (v *Validator) unknownKeyVerdict(t *parsedToken, ik *issuerKeys, ks *keySet, ambiguous, refetched bool) *Verdict {
	kids := ks.kids()
	out := &Verdict{Reason: ReasonUnknownKey, Mismatch: &Mismatch{Claim: "kid", Expected: kids}}
	published := "none"
	if len(kids) > 0 {
		published = strings.Join(kids, ", ")
	}
	if t.kid == "" {
		out.Message = fmt.Sprintf("token has no kid and issuer %s has no single key for %s", ik.cfg.Issuer, t.alg)
		if ambiguous {
			out.Message = fmt.Sprintf("token has no kid and issuer %s publishes several %s keys", ik.cfg.Issuer, t.alg)
		}
		out.Hint = "ask the issuer to put the key id (kid) in the token header; keys published now: " + published
		return out
	}
	out.Mismatch.Actual = []string{t.kid}
	out.Message = fmt.Sprintf("issuer %s has no key %q", ik.cfg.Issuer, Printable(t.kid))
	out.Hint = fmt.Sprintf("the issuer publishes %s (key set fetched %s); the token was signed with a key it no longer (or never) published", published, ks.fetched.UTC().Format(time.RFC3339))
	now := ik.now()
	if refetched && ks.fetched.UnixNano() < ik.tokenRefetchMark() {
		out.Hint = fmt.Sprintf("the issuer publishes %s in the key set usher fetched %s ago; usher started to refetch it for this token, and the refetch has not finished (or failed: ListIssuers' last_error or `usher doctor` says which): retry shortly", published, now.Sub(ks.fetched).Round(time.Second))
	}
	if wait, retryAfter := ik.refetchWait(now); !refetched && wait > 0 {
		why := fmt.Sprintf("usher refetches it for an unknown kid at most once per unknown_kid_cooldown (%s)", ik.cfg.UnknownKIDCooldown)
		if retryAfter {
			why = "the issuer asked for no fetch before then (Retry-After)"
		}
		out.Hint = fmt.Sprintf("the issuer publishes %s in the key set usher fetched %s ago; a key added since (a rotation) may not be in it yet, and %s: retry in %s, when usher refetches the set", published, now.Sub(ks.fetched).Round(time.Second), why, wait.Round(time.Second))
	}
	if len(t.kid) > maxNearTarget {
		return out // a hint: a kid this long is not looked for in every other issuer's set
	}
	for _, other := range v.order {
		if other == ik {
			continue
		}
		if oks := other.keys(); oks != nil && oks.byKID[t.kid] != nil {
			out.Hint += fmt.Sprintf("; issuer %s publishes that kid: the token may be from another environment (staging vs production)", other.cfg.Issuer)
			break
		}
	}
	return out
}

func invalidSignatureVerdict(t *parsedToken, ik *issuerKeys, key *verifyKey) *Verdict {
	msg := fmt.Sprintf("signature does not verify with key %q of %s", Printable(t.kid), ik.cfg.Issuer)
	hint := "the token was altered, or signed by a different key that reuses this kid; get a fresh token from " + ik.cfg.Issuer
	if t.kid == "" {
		msg = fmt.Sprintf("signature does not verify with %s of %s (the token names no kid)", onlyKey(t.alg, key), ik.cfg.Issuer)
		hint = "the token was altered, or signed by a key the issuer does not publish; get a fresh token from " + ik.cfg.Issuer
	}
	if len(t.keyHeader) > 0 {
		hint += fmt.Sprintf(" (the token's %s header is ignored: usher only trusts keys from the configured key set)", strings.Join(t.keyHeader, ", "))
	}
	return &Verdict{Reason: ReasonInvalidSignature, Message: msg, Hint: hint}
}

// onlyKey names the key a token without kid is checked with: the issuer's
// only key for its algorithm.
func onlyKey(alg string, key *verifyKey) string {
	if key.kid == "" {
		return fmt.Sprintf("the issuer's only %s key (it has no kid)", alg)
	}
	return fmt.Sprintf("the issuer's only %s key (kid %q)", alg, key.kid)
}

func wrongTypeViolation(t *parsedToken, want string) Violation {
	got := t.typ
	if got == "" {
		got = "(none)"
	}
	hint := fmt.Sprintf("this issuer's access tokens carry typ %q (RFC 9068); ask for an access token, not another kind of token", want)
	if t.looksLikeIDToken() {
		hint = "this looks like an ID token (" + t.idTokenEvidence() + "): send the access token instead"
	}
	return Violation{
		Reason:   ReasonWrongTokenType,
		Message:  fmt.Sprintf("token type %s, expected %s", got, want),
		Hint:     hint,
		Mismatch: &Mismatch{Claim: "typ", Expected: []string{want}, Actual: nonEmpty(t.typ)},
	}
}

// skewWindow: a time check that fails by less than this may be clock skew.
const skewWindow = 2 * time.Minute

func expiredViolation(now, exp time.Time, leeway time.Duration) Violation {
	ago := now.Sub(exp).Round(time.Second)
	hint := fmt.Sprintf("get a new token (refresh it before exp); it expired %s ago, beyond the leeway of %s", ago, leeway)
	if now.Sub(exp)-leeway < skewWindow {
		hint += fmt.Sprintf(". It missed by only %s: if it was issued moments ago, the issuer's and usher's clocks disagree; check NTP on both", (now.Sub(exp) - leeway).Round(time.Second))
	}
	return Violation{
		Reason:   ReasonExpired,
		Message:  fmt.Sprintf("token expired %s ago (exp %s, leeway %s)", ago, exp.Format(time.RFC3339), leeway),
		Hint:     hint,
		Mismatch: &Mismatch{Claim: "exp", Expected: []string{"after " + now.Add(-leeway).Format(time.RFC3339)}, Actual: []string{exp.Format(time.RFC3339)}},
	}
}

func notYetValidViolation(claim string, now, at time.Time, leeway time.Duration) Violation {
	ahead := at.Sub(now).Round(time.Second)
	hint := fmt.Sprintf("the %s claim is %s in the future, beyond the leeway of %s: ", claim, ahead, leeway)
	if at.Sub(now)-leeway < skewWindow {
		hint += "a small difference, so the issuer's clock is probably ahead of usher's (clock skew); check NTP on both, or raise the issuer's leeway in usher's config"
	} else {
		hint += "far more than clock skew; the issuer set the time wrongly (check its clock and time zone handling)"
	}
	return Violation{
		Reason:   ReasonNotYetValid,
		Message:  fmt.Sprintf("token not valid for another %s (%s %s, leeway %s)", ahead, claim, at.Format(time.RFC3339), leeway),
		Hint:     hint,
		Mismatch: &Mismatch{Claim: claim, Expected: []string{"before " + now.Add(leeway).Format(time.RFC3339)}, Actual: []string{at.Format(time.RFC3339)}},
	}
}

func missingClaimViolation(name, issuer string, opaque bool) Violation {
	out := Violation{
		Reason:   ReasonMissingClaim,
		Message:  fmt.Sprintf("token has no %s claim, which issuer %s requires", name, issuer),
		Hint:     fmt.Sprintf("usher's config lists %s in required_claims for this issuer; ask the issuer to include it", name),
		Mismatch: &Mismatch{Claim: name, Expected: []string{name}},
	}
	if opaque {
		out.Message = fmt.Sprintf("the introspection answer has no %s, which issuer %s requires", name, issuer)
		out.Hint = fmt.Sprintf("usher's config lists %s in required_claims for this issuer, and its introspection answer lacks it (RFC 7662 makes it optional); ask the issuer to include it, or drop it from required_claims", name)
	}
	return out
}

func (v *Validator) audienceViolation(ik *issuerKeys, t *parsedToken, auds []string, expected string) Violation {
	out := Violation{
		Reason:   ReasonAudienceMismatch,
		Mismatch: &Mismatch{Claim: "aud", Expected: []string{expected}, Actual: slices.Clone(auds)},
	}
	raw := expected
	expected = Printable(expected) // chosen by the caller: bounded and escaped in text
	out.Message = fmt.Sprintf("token audience [%s] does not include %s", shownAudiences(auds, false), expected)
	switch {
	case raw == "":
		out.Message = "no expected audience was given"
		out.Hint = "the calling service must say which audience it answers to; an empty audience never matches"
		return out
	case blank(raw):
		out.Message = fmt.Sprintf("the expected audience %q is white space only", expected)
		out.Hint = "the calling service must say which audience it answers to; a blank audience never matches (check how the service reads its audience from its configuration)"
		return out
	case len(auds) == 0:
		out.Message = fmt.Sprintf("token has no audience; expected %s", expected)
		lead, ok := sentIDToken(ik, t)
		if !ok {
			lead = "the token names no API it is meant for; "
		}
		out.Hint = lead + audienceFix(ik, t, auds, expected)
		return out
	}
	if i, d := v.hints.audienceNearMiss(auds, raw); d != "" {
		out.Hint = fmt.Sprintf("the token's audience %q differs from %q only by %s; audiences are compared byte for byte: request the token with exactly %q, or fix the audience this service is configured with", Printable(auds[i]), expected, d, expected)
		return out
	}
	lead, ok := sentIDToken(ik, t)
	if !ok {
		lead = "this token was issued for " + v.namedAudiences(auds) + "; "
	}
	out.Hint = lead + audienceFix(ik, t, auds, expected)
	return out
}

// sentIDToken says so when t looks like an ID token sent where an access
// token belongs (not for Google, whose tokens for services are ID tokens).
func sentIDToken(ik *issuerKeys, t *parsedToken) (string, bool) {
	if !t.looksLikeIDToken() || ik.provider() == providerGoogle {
		return "", false
	}
	return "this looks like an ID token (" + t.idTokenEvidence() + "): send the access token instead; ", true
}

// blank reports whether an expected audience is empty or white space only:
// a caller's bug, which never matches.
func blank(audience string) bool { return strings.TrimSpace(audience) == "" }

// shownAudiences lists a token's audiences for a message: each bounded and
// escaped, an empty one as "" (or "" (an empty string) when spelt out), at
// most 512 bytes in all.
func shownAudiences(auds []string, spelt bool) string {
	var b strings.Builder
	for i, a := range auds {
		if b.Len() > 512 {
			break
		}
		if i > 0 {
			b.WriteByte(' ')
		}
		switch {
		case a == "" && spelt:
			b.WriteString(`"" (an empty string)`)
		case a == "":
			b.WriteString(`""`)
		default:
			b.WriteString(Printable(a))
		}
	}
	return clip(b.String(), 512)
}

// namedAudiences lists a token's audiences with their registered names:
// "Users API (api/users) and api/other", at most 512 bytes.
func (v *Validator) namedAudiences(auds []string) string {
	var b strings.Builder
	for i, a := range auds {
		if b.Len() > 512 {
			break
		}
		if i > 0 {
			b.WriteString(" and ")
		}
		if name, ok := v.audName[a]; ok && name != "" {
			fmt.Fprintf(&b, "%s (%s)", name, a)
		} else {
			b.WriteString(shownAudiences([]string{a}, true))
		}
	}
	return clip(b.String(), 512)
}

func scopeViolation(granted, required, missing []string) Violation {
	g := strings.Join(granted, " ")
	if g == "" {
		g = "(none)"
	}
	g = clip(g, 512) // chosen by whoever requested the token: bounded and escaped
	return Violation{
		Reason:   ReasonInsufficientScope,
		Message:  fmt.Sprintf("token lacks scope %s (granted: %s)", strings.Join(missing, " "), g),
		Hint:     fmt.Sprintf("request the token with scope %q, and make sure the client is allowed to get it", strings.Join(missing, " ")),
		Mismatch: &Mismatch{Claim: "scope", Expected: slices.Clone(required), Actual: slices.Clone(granted)},
	}
}

// looksLikeIDToken: an OpenID Connect ID token sent where an access token is
// expected (nonce/at_hash, or addressed to its azp client, without scope).
func (t *parsedToken) looksLikeIDToken() bool {
	c := &t.claims
	if c.hasNonce || c.hasAtHash {
		return true
	}
	return c.azp != "" && len(c.scopes) == 0 && slices.Contains(c.aud, c.azp)
}

// idTokenEvidence names what makes a token look like an ID token, and only
// what it carries: "it carries nonce; it is addressed to its own client
// "spa" (aud = azp); it has no scope".
func (t *parsedToken) idTokenEvidence() string {
	c := &t.claims
	var carries, ev []string
	if c.hasNonce {
		carries = append(carries, "nonce")
	}
	if c.hasAtHash {
		carries = append(carries, "at_hash")
	}
	if len(carries) > 0 {
		ev = append(ev, "it carries "+strings.Join(carries, " and "))
	}
	if c.azp != "" && slices.Contains(c.aud, c.azp) {
		ev = append(ev, fmt.Sprintf("it is addressed to its own client %q (aud = azp)", Printable(c.azp)))
	}
	if len(c.scopes) == 0 {
		ev = append(ev, "it has no scope")
	}
	return strings.Join(ev, "; ")
}

func describeAudiences(as []KnownAudience) string {
	parts := make([]string, 0, len(as))
	for _, a := range as {
		if a.Name != "" {
			parts = append(parts, fmt.Sprintf("%s (%s)", a.Name, a.Audience))
		} else {
			parts = append(parts, a.Audience)
		}
	}
	return strings.Join(parts, ", ")
}

func nonEmpty(s string) []string {
	if s == "" {
		return nil
	}
	return []string{s}
}

// Printable shortens (to 128 bytes) and escapes (controls, line separators
// and bidirectional formatting characters become '?') a value taken from a
// token or a request before it goes into a message or a log line.
func Printable(s string) string { return clip(s, 128) }

// clip is printable with a length of n bytes, cut on a rune boundary.
func clip(s string, n int) string {
	return strings.Map(func(r rune) rune {
		if steering(r) {
			return '?'
		}
		return r
	}, truncate(s, n))
}

// steering reports whether r can steer a terminal or a log viewer: C0 and C1
// controls, DEL, the line and paragraph separators, and the bidirectional
// formatting characters (Unicode UAX #9), which reorder what a reader sees.
func steering(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f:
		return true
	case r == 0x2028, r == 0x2029, r == 0x061c, r == 0x200e, r == 0x200f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
		return true
	}
	return false
}

// truncate cuts s to at most n bytes on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// Opaque tokens (introspection): routing, the issuer's answer, and an
// issuer usher holds no key set for.

// unroutedVerdict: an opaque token that no issuer may be asked about.
func (v *Validator) unroutedVerdict(m *malformed) *Verdict {
	out := malformedVerdict(m)
	var names, prefixes []string
	for _, ik := range v.introspecting {
		names = append(names, ik.cfg.Issuer)
		p := "none"
		if ps := ik.cfg.Introspection.TokenPrefixes; len(ps) > 0 {
			p = strings.Join(ps, ", ")
		}
		prefixes = append(prefixes, fmt.Sprintf("%s: %s", ik.cfg.Issuer, p))
	}
	out.Message += "; it starts with none of the configured token_prefixes"
	if len(names) == 1 {
		out.Hint = fmt.Sprintf("usher sends an opaque token only to the issuer it belongs to; the only issuer with introspection here, %s, names its tokens' prefixes (token_prefixes: %s) and this token has none of them: send an access token of that issuer, or add this token's prefix to its token_prefixes if it is one of its access tokens",
			names[0], strings.Join(v.introspecting[0].cfg.Introspection.TokenPrefixes, ", "))
		return out
	}
	out.Hint = fmt.Sprintf("usher sends an opaque token only to the issuer it belongs to, and %d issuers answer opaque tokens here (token_prefixes of %s), so it cannot tell which one issued this token: set introspection.token_prefixes on each issuer whose opaque tokens start with a fixed prefix (e.g. ory_at_)",
		len(names), strings.Join(prefixes, "; "))
	return out
}

// inactiveVerdict: the issuer says the token is not active.
func inactiveVerdict(ik *issuerKeys) *Verdict {
	return &Verdict{
		Reason:  ReasonInactive,
		Message: fmt.Sprintf("issuer %s says the token is not active", ik.cfg.Issuer),
		Hint:    "the issuer says this token is not active: revoked, expired or never issued; get a new token",
	}
}

// issuerUnavailableVerdict: no usable answer from the issuer's
// introspection endpoint. The hint names the cause; none is the token's
// fault.
func issuerUnavailableVerdict(ik *issuerKeys, f *introFailure) *Verdict {
	in := ik.intro
	ep := in.endpoint()
	msg := fmt.Sprintf("the introspection endpoint of issuer %s could not answer: %s", ik.cfg.Issuer, f.cause)
	var hint string
	switch f.kind {
	case failCredentials:
		msg = fmt.Sprintf("the introspection endpoint of issuer %s refused usher's client credentials (%s)", ik.cfg.Issuer, f.cause)
		hint = fmt.Sprintf("not the token's fault: usher's own client credentials for introspection are wrong (client %q at %s): check introspection.client_id and client_secret_file (the client's secret, alone in the file), then reload usher", Printable(in.cfg.ClientID), ep)
	case failBadRequest:
		hint = fmt.Sprintf("not the token's fault: the endpoint (%s) refused usher's request; check that introspection.endpoint is the issuer's RFC 7662 introspection endpoint and that usher's client may use client_secret_basic there", ep)
	case failUnusable:
		msg = fmt.Sprintf("the introspection endpoint of issuer %s gave an unusable answer: %s", ik.cfg.Issuer, f.cause)
		hint = fmt.Sprintf("not the token's fault: the endpoint (%s) answered with something that is not an RFC 7662 introspection response; check that introspection.endpoint is the issuer's introspection endpoint, and `usher doctor --config`", ep)
	case failNoEndpoint:
		msg = fmt.Sprintf("the introspection endpoint of issuer %s is not known: %s", ik.cfg.Issuer, f.cause)
		hint = "not the token's fault: usher reads the endpoint from the issuer's discovery document (introspection_endpoint) and has none yet; retry shortly, or set introspection.endpoint in usher's config; `usher doctor --config` checks it"
	case failShed:
		hint = fmt.Sprintf("not the token's fault: the endpoint (%s) is slow and usher bounds how many calls wait for it; retry shortly, and check the endpoint (`usher doctor`)", ep)
	default: // unreachable, timeout, 5xx
		hint = fmt.Sprintf("not the token's fault: usher could not get an answer from the issuer's introspection endpoint (%s); retry shortly, and check that usher can reach it (`usher doctor`)", ep)
	}
	return &Verdict{Reason: ReasonIssuerUnavailable, Message: msg, Hint: hint}
}

// answerIssuerVerdict: the issuer's own endpoint answered for another
// issuer. That is a misconfiguration (the endpoint of another issuer or
// tenant, or an issuer URL spelt differently), and fails closed.
func answerIssuerVerdict(ik *issuerKeys, iss string) *Verdict {
	shown := Printable(iss)
	return &Verdict{
		Reason:   ReasonUntrustedIssuer,
		Message:  fmt.Sprintf("the introspection endpoint of issuer %s says the token was issued by %q", ik.cfg.Issuer, shown),
		Hint:     fmt.Sprintf("the answer's iss %q is not the configured issuer %q, and iss is compared byte for byte: if they name the same issuer, make the issuer in usher's config exactly %q; otherwise introspection.endpoint belongs to another issuer (or tenant): fix it", shown, ik.cfg.Issuer, shown),
		Mismatch: &Mismatch{Claim: "iss", Expected: []string{ik.cfg.Issuer}, Actual: []string{shown}},
	}
}

// noKeySetVerdict: a JWT names an issuer usher holds no key set for, by
// configuration (introspection only) or because its discovery document
// names no jwks_uri.
func noKeySetVerdict(t *parsedToken, ik *issuerKeys) *Verdict {
	why := "its configuration gives no key set (jwks_uri, discovery or jwks_file), only introspection"
	if ik.cfg.Discovery {
		why = "its discovery document names no jwks_uri"
	}
	return &Verdict{
		Reason:   ReasonUnknownKey,
		Message:  fmt.Sprintf("issuer %s has no key set in usher: %s", ik.cfg.Issuer, why),
		Hint:     "usher answers this issuer's opaque tokens through introspection and has no key to verify its JWTs with; send its opaque access token, or give the issuer a key set in usher's config (jwks_uri, or discovery with a jwks_uri) to accept its JWTs",
		Mismatch: &Mismatch{Claim: "kid", Actual: nonEmpty(Printable(t.kid))},
	}
}

// refreshTokenViolation: an introspection answer that says the token is a
// refresh token (Ory's token_use, or the token type URI of RFC 8693), which
// is never an access token whatever else it carries.
func refreshTokenViolation(t *parsedToken) (Violation, bool) {
	use, _ := t.payload["token_use"].(string)
	typ, _ := t.payload["token_type"].(string)
	const refreshURI = "urn:ietf:params:oauth:token-type:refresh_token"
	if use != "refresh_token" && typ != refreshURI && typ != "refresh_token" {
		return Violation{}, false
	}
	claim, got, want := "token_use", use, "access_token"
	if use != "refresh_token" {
		claim, got, want = "token_type", typ, "an access token type (e.g. Bearer)"
	}
	return Violation{
		Reason:   ReasonWrongTokenType,
		Message:  fmt.Sprintf("the issuer says this is a refresh token (%s %s), not an access token", claim, Printable(got)),
		Hint:     "a refresh token is for the issuer's token endpoint only: send the access token instead",
		Mismatch: &Mismatch{Claim: claim, Expected: []string{want}, Actual: []string{Printable(got)}},
	}, true
}
