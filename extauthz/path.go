package extauthz

import (
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// normalPath is a request path (its query cut off) in the normal form
// routes are matched on, or why it has none that every server agrees on.
type normalPath struct {
	path    string // the normal form
	changed bool   // it differs from the path as sent (beyond the case of hex digits)
	why     string // non-empty: the path is ambiguous and is denied
}

// normalizePath puts a request path in normal form, as RFC 3986 defines it
// and as Envoy's normalize_path and merge_slashes do: percent-encodings of
// unreserved characters decoded and every other one's hex digits upper-cased
// (§6.2.2.1, §6.2.2.2), repeated slashes merged, dot segments removed
// (§5.2.4). What servers read differently stays ambiguous and is reported in
// why: a backslash, a ";" path parameter, an encoded "/" or "\", an encoded
// control character, a double percent-encoding, a character that Unicode
// compatibility normalisation turns into a separator or a dot, a raw byte a
// URI cannot carry, and repeated slashes next to dot segments (merging first
// and removing dot segments first disagree). "" and "*" are kept as they are.
func normalizePath(raw string) normalPath {
	p := raw
	if i := strings.IndexByte(p, '?'); i >= 0 {
		p = p[:i]
	}
	if p == "" || p == "*" {
		return normalPath{path: p}
	}
	if p[0] != '/' {
		return normalPath{why: `it does not start with "/"`}
	}
	s, decoded, why := decodeUnreserved(p)
	if why == "" {
		why = checkEscapes(s)
	}
	if why != "" {
		return normalPath{why: why}
	}
	mergedFirst := removeDotSegments(mergeSlashes(s))
	if dotsFirst := mergeSlashes(removeDotSegments(s)); dotsFirst != mergedFirst {
		return normalPath{why: fmt.Sprintf("it mixes repeated slashes with dot segments: merging the slashes first gives %q, removing the dot segments first %q", clipPath(mergedFirst), clipPath(dotsFirst))}
	}
	return normalPath{path: mergedFirst, changed: decoded || mergedFirst != s}
}

// decodeUnreserved checks every byte of p and decodes percent-encoded
// unreserved characters (ALPHA, DIGIT, "-", ".", "_", "~"); every other
// percent-encoding is kept with upper-case hex digits.
func decodeUnreserved(p string) (s string, decoded bool, why string) {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c == '%':
			if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
				return "", false, `it holds a "%" that does not start a percent-encoding (two hex digits)`
			}
			v := unhex(p[i+1])<<4 | unhex(p[i+2])
			if isUnreserved(v) {
				b.WriteByte(v)
				decoded = true
			} else {
				b.WriteByte('%')
				b.WriteByte(upperHex[v>>4])
				b.WriteByte(upperHex[v&0xf])
			}
			i += 2
		case c == '\\':
			return "", false, `it holds a backslash, which some servers read as "/"`
		case c == ';':
			return "", false, `it holds ";", a path parameter that some servers cut before resolving dot segments (/users;/../invoices)`
		case c == '#':
			return "", false, `it holds "#": a fragment is never sent to a server`
		case c <= ' ' || c >= 0x7f:
			return "", false, fmt.Sprintf("it holds the byte 0x%02x, which a URI path cannot carry unencoded", c)
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), decoded, ""
}

// checkEscapes finds the percent-encodings left in s (unreserved characters
// already decoded) that servers decode differently.
func checkEscapes(s string) string {
	dec := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			dec = append(dec, s[i])
			continue
		}
		v := unhex(s[i+1])<<4 | unhex(s[i+2])
		switch {
		case v == '/':
			return `it holds an encoded "/" (%2F): servers disagree on whether it separates segments`
		case v == '\\':
			return `it holds an encoded "\" (%5C), which some servers decode and read as "/"`
		case v < ' ' || v == 0x7f:
			return fmt.Sprintf("it holds an encoded control character (%%%02X)", v)
		case v == '%' && i+4 < len(s) && isHex(s[i+3]) && isHex(s[i+4]):
			return fmt.Sprintf("it holds a double percent-encoding (%s): a server that decodes twice reads another path", s[i:i+5])
		}
		dec = append(dec, v)
		i += 2
	}
	for len(dec) > 0 {
		r, n := utf8.DecodeRune(dec)
		if r >= utf8.RuneSelf && strings.ContainsAny(string(norm.NFKD.PropertiesString(string(dec[:n])).Decomposition()), `/\.;%?#`) {
			return fmt.Sprintf("it holds %U, which Unicode compatibility normalisation (NFKC) turns into %q", r, norm.NFKC.String(string(r)))
		}
		dec = dec[n:]
	}
	return ""
}

// removeDotSegments is RFC 3986 §5.2.4's remove_dot_segments for a path
// that starts with "/".
func removeDotSegments(p string) string {
	segs := strings.Split(p[1:], "/")
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if last { // "/a/." and "/a/b/.." end in "/"
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// mergeSlashes turns every run of "/" into one, as Envoy's merge_slashes.
func mergeSlashes(p string) string {
	if !strings.Contains(p, "//") {
		return p
	}
	var b strings.Builder
	for i := 0; i < len(p); i++ {
		if p[i] == '/' && i > 0 && p[i-1] == '/' {
			continue
		}
		b.WriteByte(p[i])
	}
	return b.String()
}

const upperHex = "0123456789ABCDEF"

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	default:
		return c - 'a' + 10
	}
}

// clipPath keeps a path quoted in a message short and printable.
func clipPath(p string) string {
	if len(p) > 128 {
		p = p[:125] + "..."
	}
	return p
}
