package service_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// Scopes (RFC 6749, section 3.3): scope is split on SP alone, an element of
// an scp array is one scope, scp as a string is split like scope, and a
// scope carried in both claims is granted (and reported) once. A scope
// holding other white space, a control character or an invisible one is
// MALFORMED: it must never read as two scopes, here or in a header an
// adapter forwards.
func TestScopes(t *testing.T) {
	ctx := testkit.Context(t)
	k := testkit.EdKey(t, "ed-1")
	ti := testkit.NewIssuer(t, k)
	v := newValidator(t, ctx, issuerConfig(ti, time.Minute))
	iss := ti.URL()
	tok := func(kv ...any) string {
		return k.Token(t, testkit.Claims(iss, append([]any{"scope", testkit.Absent}, kv...)...))
	}
	for _, c := range []struct {
		name     string
		token    string
		required []string
		want     service.Reason
		granted  []string // the claims' scopes, when the signature verified
		message  string   // exact, when set
	}{
		{name: "scope split on SP", token: tok("scope", "files.read admin"), required: []string{"admin"}, want: service.ReasonValid, granted: []string{"files.read", "admin"}},
		{name: "extra spaces", token: tok("scope", "  files.read   admin "), required: []string{"admin"}, want: service.ReasonValid, granted: []string{"files.read", "admin"}},
		{name: "scp string split on SP", token: tok("scp", "files.read admin"), required: []string{"admin"}, want: service.ReasonValid, granted: []string{"files.read", "admin"}},
		{name: "scp element with a space is one scope", token: tok("scp", []string{"files.read admin"}), required: []string{"admin"}, want: service.ReasonInsufficientScope,
			granted: []string{"files.read admin"}, message: "token lacks scope admin (granted: files.read admin)"},
		{name: "scp element with a space, spelt whole", token: tok("scp", []string{"files.read admin"}), required: []string{"files.read admin"}, want: service.ReasonValid, granted: []string{"files.read admin"}},
		{name: "scope and scp alike", token: tok("scope", "users.read users.write", "scp", []string{"users.read", "users.write"}), required: []string{"users.delete"},
			want: service.ReasonInsufficientScope, granted: []string{"users.read", "users.write"}, message: "token lacks scope users.delete (granted: users.read users.write)"},
		{name: "scope and scp overlapping", token: tok("scope", "b a", "scp", []string{"a", "c", "b"}), want: service.ReasonValid, granted: []string{"b", "a", "c"}},
		{name: "a scope repeated", token: tok("scope", "a a b a"), want: service.ReasonValid, granted: []string{"a", "b"}},
		{name: "empty scp elements", token: tok("scp", []string{"", "a", ""}), want: service.ReasonValid, granted: []string{"a"}},
		{name: "U+3000 is no separator", token: tok("scope", "files:read:x\u3000admin"), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "NBSP is no separator", token: tok("scope", "files.read\u00a0admin"), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "U+2028 is no separator", token: tok("scope", "files.read\u2028admin"), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "TAB is no separator", token: tok("scope", "files.read\tadmin"), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "LF is no separator", token: tok("scope", "files.read\nadmin"), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "NBSP in an scp element", token: tok("scp", []string{"files.read\u00a0admin"}), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "U+3000 in scp as a string", token: tok("scp", "files.read\u3000admin"), required: []string{"admin"}, want: service.ReasonMalformed},
		{name: "non-ASCII letters are a scope", token: tok("scope", "fichiers.lecture.été"), required: []string{"fichiers.lecture.été"}, want: service.ReasonValid, granted: []string{"fichiers.lecture.été"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := v.Validate(ctx, c.token, "api/users", c.required)
			checkVerdict(t, got, c.want)
			if c.message != "" && got.Message != c.message {
				t.Errorf("message = %q, want %q", got.Message, c.message)
			}
			if got.Claims != nil && !slices.Equal(got.Claims.Scopes, c.granted) {
				t.Errorf("scopes = %q, want %q", got.Claims.Scopes, c.granted)
			}
			if c.want == service.ReasonInsufficientScope && !slices.Equal(got.Mismatch.Actual, c.granted) {
				t.Errorf("mismatch actual = %q, want %q", got.Mismatch.Actual, c.granted)
			}
			if c.want == service.ReasonMalformed && (!strings.Contains(got.Message, "holds U+") || !strings.Contains(got.Hint, "scope")) {
				t.Errorf("message %q, hint %q: the character and the fix are not named", got.Message, got.Hint)
			}
		})
	}
}
