package service

import (
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/text/unicode/norm"
)

// Near misses: a token's iss or aud that is the configured value but for a
// detail a human would miss (a trailing slash, letter case, white space,
// Unicode normalization, percent-encoding, the scheme or the port). The
// configured side is normalized once, when the validator is built; the
// token's side once per hint, and only when it is short enough to be a near
// miss at all, so that a forged token's hint costs about what a short one's
// does, whatever its length and the number of issuers.

// nearSlack: no near-miss form of a value is longer than 3 times the value
// plus nearSlack bytes. Percent-encoding, fullwidth letters (NFKC) and
// decomposed Hangul (NFD) spell one byte or one 3-byte character in at most
// 3 times the bytes; a default port, a scheme's "s", a trailing slash and a
// little white space fit in the slack. A longer token value is no near miss.
const nearSlack = 16

// maxNearTarget bounds the value a near miss is looked for against: the
// expected audience comes from the caller.
const maxNearTarget = 1 << 10

// maxNearAudiences bounds how many of a token's audiences are compared with
// the expected one.
const maxNearAudiences = 16

// nearBound is the longest value that can be a near miss of one of n bytes.
func nearBound(n int) int { return 3*n + nearSlack }

// nearForms are the forms of a value that nearMiss compares.
type nearForms struct {
	s, noSlash, trimmed, nfc, nfkc string
	unescaped                      string   // percent-decoded; "" when that fails or changes nothing
	url                            *url.URL // an absolute URL with a host; nil otherwise
}

func newNearForms(s string) *nearForms {
	f := &nearForms{s: s, noSlash: strings.TrimSuffix(s, "/"), trimmed: strings.TrimSpace(s), nfc: norm.NFC.String(s), nfkc: norm.NFKC.String(s)}
	if u, err := url.PathUnescape(s); err == nil && u != s {
		f.unescaped = u
	}
	if u, err := url.Parse(s); err == nil && u.Host != "" {
		f.url = u
	}
	return f
}

// nearMiss describes how got differs from want when they are the same but
// for a detail a human would miss; "" when they differ otherwise (or are
// equal).
func nearMiss(got, want *nearForms) string {
	switch {
	case got.s == want.s || len(got.s) > nearBound(len(want.s)):
		return ""
	case got.noSlash == want.noSlash:
		return "a trailing slash"
	case got.trimmed == want.trimmed:
		return "surrounding white space"
	case strings.EqualFold(got.s, want.s):
		return "letter case"
	case got.nfc == want.nfc:
		return "Unicode normalization (the same text in composed and decomposed form, NFC vs NFD)"
	case got.nfkc == want.nfkc:
		return "Unicode look-alike characters (equal after NFKC normalization, e.g. fullwidth letters)"
	case got.unescaped != "" && got.unescaped == want.s:
		return "percent-encoding"
	}
	gu, wu := got.url, want.url
	if gu != nil && wu != nil && strings.EqualFold(gu.Hostname(), wu.Hostname()) && strings.TrimSuffix(gu.Path, "/") == strings.TrimSuffix(wu.Path, "/") {
		switch {
		case gu.Scheme != wu.Scheme:
			return fmt.Sprintf("the scheme (%s vs %s)", gu.Scheme, wu.Scheme)
		case gu.Port() != wu.Port():
			return fmt.Sprintf("the port (%q vs %q)", gu.Port(), wu.Port())
		}
	}
	return ""
}

// hintIndex is what hints compare a token with, prepared once per
// validator: the trusted issuers (in configuration order) and the
// registered audiences in their near-miss forms.
type hintIndex struct {
	trusted       []string
	issuers       []*nearForms
	longestIssuer int
	audiences     map[string]*nearForms
}

func newHintIndex(cfg *Config) *hintIndex {
	h := &hintIndex{audiences: make(map[string]*nearForms, len(cfg.Audiences))}
	for _, ic := range cfg.Issuers {
		h.trusted = append(h.trusted, ic.Issuer)
		h.issuers = append(h.issuers, newNearForms(ic.Issuer))
		h.longestIssuer = max(h.longestIssuer, len(ic.Issuer))
	}
	for _, a := range cfg.Audiences {
		h.audiences[a.Audience] = newNearForms(a.Audience)
	}
	return h
}

// issuerNearMiss finds the trusted issuer iss is a near miss of.
func (h *hintIndex) issuerNearMiss(iss string) (want, how string) {
	if len(iss) > nearBound(h.longestIssuer) {
		return "", ""
	}
	got := newNearForms(iss)
	for i, w := range h.issuers {
		if d := nearMiss(got, w); d != "" {
			return h.trusted[i], d
		}
	}
	return "", ""
}

// closestIssuer is the trusted issuer nearest to iss by edit distance; only
// as much of iss is compared as the longest trusted issuer could match.
func (h *hintIndex) closestIssuer(iss string) string {
	return closestString(iss[:min(len(iss), h.longestIssuer+nearSlack)], h.trusted)
}

// audienceNearMiss finds the first of the token's audiences (among the
// first maxNearAudiences) that is a near miss of expected: its index and
// how it differs, or -1.
func (h *hintIndex) audienceNearMiss(auds []string, expected string) (int, string) {
	if len(expected) > maxNearTarget {
		return -1, ""
	}
	want := h.audiences[expected]
	if want == nil {
		want = newNearForms(expected)
	}
	for i, a := range auds[:min(len(auds), maxNearAudiences)] {
		if a == expected || len(a) > nearBound(len(expected)) {
			continue
		}
		if d := nearMiss(newNearForms(a), want); d != "" {
			return i, d
		}
	}
	return -1, ""
}

// closestString returns the candidate nearest to s by edit distance.
func closestString(s string, candidates []string) string {
	s = s[:min(len(s), maxEditBytes)]
	best, bestD := "", maxEditBytes+1
	row := make([]int, 2*(maxEditBytes+1))
	for _, c := range candidates {
		if d := editDistance(s, c[:min(len(c), maxEditBytes)], bestD, row); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// maxEditBytes bounds each side of an edit distance (configured values are
// short; callers cut the token's).
const maxEditBytes = 256

// editDistance is the Levenshtein distance over bytes of a and b (each at
// most maxEditBytes), or bound when it is bound or more; row is scratch
// space of 2*(maxEditBytes+1).
func editDistance(a, b string, bound int, row []int) int {
	if max(len(a)-len(b), len(b)-len(a)) >= bound {
		return bound // the distance is at least the difference in length
	}
	prev, cur := row[:len(b)+1], row[len(b)+1:2*len(b)+2]
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		least := i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			least = min(least, cur[j])
		}
		if least >= bound {
			return bound // no later row is smaller
		}
		prev, cur = cur, prev
	}
	return min(prev[len(b)], bound)
}
