package service

import (
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Every message and hint of a verdict is written here. A message is one
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
}

const opaqueHint = "this is an opaque (reference) access token, not a JWT: usher validates JWT access tokens by their signature and cannot validate an opaque one. " +
	"Ask the issuer for JWT access tokens (Ory Hydra: strategies.access_token: jwt; node-oidc-provider: request the token for a resource indicator, the RFC 8707 \"resource\" parameter, whose resource server has accessTokenFormat: 'jwt'), " +
	"or configure token introspection (RFC 7662) for this issuer once usher supports it"

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

func missingClaimViolation(name, issuer string) Violation {
	return Violation{
		Reason:   ReasonMissingClaim,
		Message:  fmt.Sprintf("token has no %s claim, which issuer %s requires", name, issuer),
		Hint:     fmt.Sprintf("usher's config lists %s in required_claims for this issuer; ask the issuer to include it", name),
		Mismatch: &Mismatch{Claim: name, Expected: []string{name}},
	}
}

func (v *Validator) audienceViolation(t *parsedToken, auds []string, expected string) Violation {
	out := Violation{
		Reason:   ReasonAudienceMismatch,
		Mismatch: &Mismatch{Claim: "aud", Expected: []string{expected}, Actual: slices.Clone(auds)},
	}
	raw := expected
	expected = Printable(expected) // chosen by the caller: bounded and escaped in text
	out.Message = fmt.Sprintf("token audience [%s] does not include %s", shownAudiences(auds, false), expected)
	fix := fmt.Sprintf("ask the issuer for a token with audience %s (OAuth 2.0 \"audience\" or RFC 8707 \"resource\" parameter)", expected)
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
		out.Hint = "the token names no API it is meant for; " + fix
		return out
	}
	if i, d := v.hints.audienceNearMiss(auds, raw); d != "" {
		out.Hint = fmt.Sprintf("the token's audience %q differs from %q only by %s; audiences are compared byte for byte: request the token with exactly %q, or fix the audience this service is configured with", Printable(auds[i]), expected, d, expected)
		return out
	}
	if t.looksLikeIDToken() {
		out.Hint = "this looks like an ID token (" + t.idTokenEvidence() + "): send the access token instead; " + fix
		return out
	}
	out.Hint = "this token was issued for " + v.namedAudiences(auds) + "; " + fix
	return out
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
