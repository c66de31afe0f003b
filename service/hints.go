package service

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
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
}

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
	trusted := make([]string, 0, len(v.order))
	for _, ik := range v.order {
		trusted = append(trusted, ik.cfg.Issuer)
	}
	out := &Verdict{Reason: ReasonUntrustedIssuer, Mismatch: &Mismatch{Claim: "iss", Expected: trusted}}
	if !t.claims.hasIss {
		out.Message = "token has no iss claim"
		out.Hint = "usher only accepts tokens that name their issuer; trusted issuers: " + strings.Join(trusted, ", ")
		return out
	}
	iss := Printable(t.claims.iss) // unverified: bounded before it is shown
	out.Mismatch.Actual = []string{iss}
	out.Message = fmt.Sprintf("issuer %q is not trusted", iss)
	for _, want := range trusted {
		if d := nearMiss(t.claims.iss, want); d != "" {
			out.Hint = fmt.Sprintf("the token's iss %q differs from the trusted issuer %q only by %s; iss is compared byte for byte, so fix the issuer URL in usher's config or in the issuer's settings so that they are identical", iss, want, d)
			return out
		}
	}
	closest := closestString(t.claims.iss, trusted)
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

func (v *Validator) unknownKeyVerdict(t *parsedToken, ik *issuerKeys, ks *keySet, ambiguous bool) *Verdict {
	kids := ks.kids()
	out := &Verdict{Reason: ReasonUnknownKey, Mismatch: &Mismatch{Claim: "kid", Expected: kids}}
	published := "none"
	if len(kids) > 0 {
		published = strings.Join(kids, ", ")
	}
	fetched := ks.fetched.UTC().Format(time.RFC3339)
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
	out.Hint = fmt.Sprintf("the issuer publishes %s (key set fetched %s); the token was signed with a key it no longer (or never) published", published, fetched)
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

func invalidSignatureVerdict(t *parsedToken, ik *issuerKeys) *Verdict {
	hint := "the token was altered, or signed by a different key that reuses this kid; get a fresh token from " + ik.cfg.Issuer
	if len(t.keyHeader) > 0 {
		hint += fmt.Sprintf(" (the token's %s header is ignored: usher only trusts keys from the configured key set)", strings.Join(t.keyHeader, ", "))
	}
	return &Verdict{
		Reason:  ReasonInvalidSignature,
		Message: fmt.Sprintf("signature does not verify with key %q of %s", Printable(t.kid), ik.cfg.Issuer),
		Hint:    hint,
	}
}

func wrongTypeViolation(t *parsedToken, want string) Violation {
	got := t.typ
	if got == "" {
		got = "(none)"
	}
	hint := fmt.Sprintf("this issuer's access tokens carry typ %q (RFC 9068); ask for an access token, not another kind of token", want)
	if t.looksLikeIDToken() {
		hint = "this looks like an ID token (it carries nonce/at_hash or is addressed to a client): send the access token instead"
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
	shown := make([]string, len(auds)) // requested by the client: bounded and escaped
	for i, a := range auds {
		shown[i] = Printable(a)
	}
	out := Violation{
		Reason:   ReasonAudienceMismatch,
		Message:  fmt.Sprintf("token audience [%s] does not include %s", clip(strings.Join(shown, " "), 512), expected),
		Mismatch: &Mismatch{Claim: "aud", Expected: []string{expected}, Actual: slices.Clone(auds)},
	}
	fix := fmt.Sprintf("ask the issuer for a token with audience %s (OAuth 2.0 \"audience\" or RFC 8707 \"resource\" parameter)", expected)
	switch {
	case expected == "":
		out.Message = "no expected audience was given"
		out.Hint = "the calling service must say which audience it answers to; an empty audience never matches"
		return out
	case len(auds) == 0:
		out.Message = fmt.Sprintf("token has no audience; expected %s", expected)
		out.Hint = "the token names no API it is meant for; " + fix
		return out
	}
	for i, a := range auds {
		if d := nearMiss(a, expected); d != "" {
			out.Hint = fmt.Sprintf("the token's audience %q differs from %q only by %s; audiences are compared byte for byte: request the token with exactly %q, or fix the audience this service is configured with", shown[i], expected, d, expected)
			return out
		}
	}
	if t.looksLikeIDToken() {
		out.Hint = "this looks like an ID token (its audience is a client id, it carries nonce/at_hash and no scope): send the access token instead; " + fix
		return out
	}
	named := make([]string, 0, len(auds))
	for i, a := range auds {
		if name, ok := v.audName[a]; ok && name != "" {
			named = append(named, fmt.Sprintf("%s (%s)", name, a))
		} else {
			named = append(named, shown[i])
		}
	}
	out.Hint = "this token was issued for " + clip(strings.Join(named, " and "), 512) + "; " + fix
	return out
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

// nearMiss describes how got differs from want when they are the same but
// for a detail a human would miss; "" when they differ otherwise.
func nearMiss(got, want string) string {
	switch {
	case got == want:
		return ""
	case strings.TrimSuffix(got, "/") == strings.TrimSuffix(want, "/"):
		return "a trailing slash"
	case strings.TrimSpace(got) == strings.TrimSpace(want):
		return "surrounding white space"
	case strings.EqualFold(got, want):
		return "letter case"
	case norm.NFC.String(got) == norm.NFC.String(want):
		return "Unicode normalization (the same text in composed and decomposed form, NFC vs NFD)"
	case norm.NFKC.String(got) == norm.NFKC.String(want):
		return "Unicode look-alike characters (equal after NFKC normalization, e.g. fullwidth letters)"
	}
	if gu, err := url.PathUnescape(got); err == nil && gu != got && gu == want {
		return "percent-encoding"
	}
	gu, err1 := url.Parse(got)
	wu, err2 := url.Parse(want)
	if err1 == nil && err2 == nil && gu.Host != "" && wu.Host != "" && strings.EqualFold(gu.Hostname(), wu.Hostname()) && strings.TrimSuffix(gu.Path, "/") == strings.TrimSuffix(wu.Path, "/") {
		switch {
		case gu.Scheme != wu.Scheme:
			return fmt.Sprintf("the scheme (%s vs %s)", gu.Scheme, wu.Scheme)
		case gu.Port() != wu.Port():
			return fmt.Sprintf("the port (%q vs %q)", gu.Port(), wu.Port())
		}
	}
	return ""
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

// Printable shortens (to 128 bytes) and escapes (control characters become
// '?') a value taken from an unverified token or a request before it goes
// into a message or a log line.
func Printable(s string) string { return clip(s, 128) }

// clip is printable with a length of n bytes, cut on a rune boundary.
func clip(s string, n int) string {
	if len(s) > n {
		cut := n
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

// closestString returns the candidate nearest to s by edit distance.
func closestString(s string, candidates []string) string {
	best, bestD := "", -1
	for _, c := range candidates {
		if d := editDistance(s, c); bestD < 0 || d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance over bytes, bounded to the first
// 256 bytes of each side (iss values are short; an attacker's are cut).
func editDistance(a, b string) int {
	a, b = a[:min(len(a), 256)], b[:min(len(b), 256)]
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
