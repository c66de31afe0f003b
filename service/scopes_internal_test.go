package service

import (
	"slices"
	"strings"
	"testing"
	"unicode"
)

// FuzzReadScopes: whatever scope and scp hold, the scopes read are
// non-empty, unique, and free of control characters, invisible ones and
// white space (SP only inside an scp array element); or the token is
// refused as MALFORMED.
func FuzzReadScopes(f *testing.F) {
	for _, s := range []string{"users.read users.write", "  a  b ", "a\u3000admin", "a\u00a0b", "a\tb", "a\nb", "a\u2028b", "a\u200bb", "a\u0085b", "a a b", "", "été"} {
		f.Add(s, s, true)
		f.Add(s, "x "+s, false)
	}
	f.Fuzz(func(t *testing.T, scope, scp string, scpArray bool) {
		p := map[string]any{"scope": scope, "scp": scp}
		if scpArray {
			p["scp"] = []any{scp, scope}
		}
		got, m := readScopes(p)
		if m != nil {
			if m.kind != malformedScope || got != nil {
				t.Fatalf("kind %d, scopes %q: %v", m.kind, got, m)
			}
			return
		}
		seen := map[string]bool{}
		for _, s := range got {
			if s == "" || seen[s] {
				t.Fatalf("empty or repeated scope in %q", got)
			}
			seen[s] = true
			if strings.ContainsFunc(s, func(r rune) bool {
				return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || (r != ' ' && unicode.IsSpace(r))
			}) {
				t.Fatalf("scope %q holds a character no scope may hold", s)
			}
			if strings.Contains(s, " ") && !(scpArray && slices.Contains([]string{scp, scope}, s)) {
				t.Fatalf("scope %q holds a space but is no scp element", s)
			}
		}
		for _, want := range strings.Split(scope, " ") {
			if want != "" && !seen[want] {
				t.Fatalf("scope %q of %q not granted: %q", want, scope, got)
			}
		}
	})
}
