package extauthz

import (
	"strings"
	"testing"
)

func TestNormalizePath(t *testing.T) {
	for _, c := range []struct {
		in, want string
		changed  bool
		why      string // a part of the reason it is ambiguous; "" when it is not
	}{
		// Normal already.
		{in: "", want: ""},
		{in: "*", want: "*"},
		{in: "/", want: "/"},
		{in: "/users/7", want: "/users/7"},
		{in: "/users/7?next=/../invoices", want: "/users/7"},
		{in: "/caf%C3%A9", want: "/caf%C3%A9"},
		{in: "/a%3Fb%20c", want: "/a%3Fb%20c"},
		// Hex digits upper-cased: the same path (RFC 3986 §6.2.2.1).
		{in: "/caf%c3%a9", want: "/caf%C3%A9"},
		// Unreserved characters decoded (§6.2.2.2).
		{in: "/%75sers/%7E7", want: "/users/~7", changed: true},
		// RFC 3986 §5.2.4's own examples, and more dot segments.
		{in: "/a/b/c/./../../g", want: "/a/g", changed: true},
		{in: "/users/./../invoices", want: "/invoices", changed: true},
		{in: "/users/../invoices", want: "/invoices", changed: true},
		{in: "/users/%2e%2e/invoices", want: "/invoices", changed: true},
		{in: "/users/%2E%2E/invoices", want: "/invoices", changed: true},
		{in: "/users/.%2e/invoices", want: "/invoices", changed: true},
		{in: "/../../invoices", want: "/invoices", changed: true},
		{in: "/a/..", want: "/", changed: true},
		{in: "/a/.", want: "/a/", changed: true},
		{in: "/a/..b/.c", want: "/a/..b/.c"},
		// Repeated slashes merged, as Envoy's merge_slashes.
		{in: "//invoices", want: "/invoices", changed: true},
		{in: "/users//7/", want: "/users/7/", changed: true},
		// Ambiguous.
		{in: "users", why: `does not start with "/"`},
		{in: "/users%2f..%2finvoices", why: `encoded "/"`},
		{in: "/users%2F7", why: `encoded "/"`},
		{in: "/users%5c..%5cinvoices", why: `encoded "\"`},
		{in: `/users\..\invoices`, why: "backslash"},
		{in: "/users;/../invoices", why: `";"`},
		{in: "/users/..;/invoices", why: `";"`},
		{in: "/users/%252e%252e/invoices", why: "double percent-encoding (%252e)"},
		{in: "/users/%25%32%65%25%32%65/invoices", why: "double percent-encoding (%252e)"},
		{in: "/users/%2525/x", why: "double percent-encoding"},
		{in: "/users/%00/x", why: "encoded control character (%00)"},
		{in: "/users/%0d%0a", why: "encoded control character (%0D)"},
		{in: "/users/\x00", why: "byte 0x00"},
		{in: "/users/a b", why: "byte 0x20"},
		{in: "/users/\u00e9", why: "byte 0xc3"},
		{in: "/users/%", why: `"%" that does not start`},
		{in: "/users/%2", why: `"%" that does not start`},
		{in: "/users/%zz", why: `"%" that does not start`},
		{in: "/users#/../invoices", why: "fragment"},
		{in: "/users/%EF%BC%8E%EF%BC%8E/invoices", why: "U+FF0E"},
		{in: "/users%EF%BC%8Finvoices", why: "U+FF0F"},
		{in: "/users/%E2%80%A5/invoices", why: "U+2025"},
		{in: "/users//../invoices", why: "repeated slashes with dot segments"},
	} {
		got := normalizePath(c.in)
		if c.why != "" {
			if !strings.Contains(got.why, c.why) {
				t.Errorf("normalizePath(%q) = %+v, want ambiguous: …%s…", c.in, got, c.why)
			}
			continue
		}
		if got != (normalPath{path: c.want, changed: c.changed}) {
			t.Errorf("normalizePath(%q) = %+v, want %q (changed %v)", c.in, got, c.want, c.changed)
		}
	}
}

// FuzzNormalizePath: never a panic; a path in normal form is its own normal
// form, holds no dot segment, no repeated slash and nothing ambiguous.
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "/users/../invoices", "/users/%2e%2e/invoices", "/users%2f..%2finvoices", "/users;/../invoices",
		"//invoices", "/users%5c..%5cinvoices", "/users/%252e%252e/x", "/a//../b", "/%75sers/./7/..", "/caf%c3%a9?x#y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := normalizePath(in)
		if got.why != "" {
			if got.path != "" || got.changed {
				t.Fatalf("normalizePath(%q) = %+v: ambiguous with a path", in, got)
			}
			return
		}
		p := got.path
		if p == "" || p == "*" {
			return
		}
		again := normalizePath(p)
		if again.why != "" || again.path != p || again.changed {
			t.Fatalf("normalizePath(%q) = %q, not its own normal form: %+v", in, p, again)
		}
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.ContainsAny(p, "?#;\\") {
			t.Fatalf("normalizePath(%q) = %q", in, p)
		}
		for _, seg := range strings.Split(p, "/") {
			if seg == "." || seg == ".." || strings.EqualFold(seg, "%2E") {
				t.Fatalf("normalizePath(%q) = %q keeps a dot segment", in, p)
			}
		}
	})
}

// BenchmarkNormalizePath: the work added to every Check, for a usual path
// and for a long hostile one (linear in its length).
func BenchmarkNormalizePath(b *testing.B) {
	for _, c := range []struct{ name, path string }{
		{"usual", "/invoices/2026/42?expand=lines"},
		{"dots-8KiB", strings.Repeat("/a/%2e%2e/./b", 8<<10/13)},
		{"unicode-8KiB", "/" + strings.Repeat("%C3%A9", 8<<10/6)},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				normalizePath(c.path)
			}
		})
	}
}
