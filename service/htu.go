package service

import (
	"bytes"
	"net/url"
	"strings"
)

// A DPoP proof's htu is compared with the request's URI as RFC 9449 §4.3
// says: without query and fragment, after the syntax-based (RFC 3986
// §6.2.2) and scheme-based (§6.2.3) normalization of both.

// normalURI is s normalized for comparison: query and fragment dropped,
// scheme and host in lower case, the scheme's default port elided,
// percent-encodings in upper case and those of unreserved characters
// decoded, dot segments removed, an empty path made "/". why says what
// makes s unusable (not an absolute http or https URI), "" otherwise.
func normalURI(s string) (norm, why string) {
	if i := strings.IndexAny(s, "?#"); i >= 0 {
		s = s[:i]
	}
	u, err := url.Parse(s)
	switch {
	case err != nil:
		return "", "not a URI"
	case !strings.EqualFold(u.Scheme, "http") && !strings.EqualFold(u.Scheme, "https"):
		return "", "not an absolute http or https URI"
	case u.Opaque != "" || u.Host == "":
		return "", "has no host"
	case u.User != nil:
		return "", "holds user information, which a request URI never does"
	}
	scheme := strings.ToLower(u.Scheme)
	host := strings.ToLower(u.Host)
	// "host:" has an empty port: elided like the default one.
	if port := u.Port(); port == "" || scheme == "http" && port == "80" || scheme == "https" && port == "443" {
		host = strings.TrimSuffix(host, ":"+port)
	}
	path := removeDotSegments(normalPercents(u.EscapedPath()))
	if path == "" {
		path = "/"
	}
	return scheme + "://" + host + path, ""
}

// normalPercents writes every percent-encoding of p in upper case and
// decodes those of unreserved characters (RFC 3986 §6.2.2.1, §6.2.2.2). p
// is an escaped path from net/url, whose escapes are well-formed.
func normalPercents(p string) string {
	if strings.IndexByte(p, '%') < 0 {
		return p
	}
	const hexDigits = "0123456789ABCDEF"
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		hi, lo := -1, -1
		if p[i] == '%' && i+2 < len(p) {
			hi, lo = unhex(p[i+1]), unhex(p[i+2])
		}
		if hi < 0 || lo < 0 {
			b = append(b, p[i])
			continue
		}
		c := byte(hi<<4 | lo)
		if unreserved(c) {
			b = append(b, c)
		} else {
			b = append(b, '%', hexDigits[hi], hexDigits[lo])
		}
		i += 2
	}
	return string(b)
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~" (RFC 3986 §2.3).
func unreserved(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// removeDotSegments is RFC 3986 §5.2.4's algorithm: "/a/./b/../c" is "/a/c".
func removeDotSegments(in string) string {
	if !strings.Contains(in, ".") {
		return in
	}
	out := make([]byte, 0, len(in))
	dropLast := func() {
		if i := bytes.LastIndexByte(out, '/'); i >= 0 {
			out = out[:i]
		} else {
			out = out[:0]
		}
	}
	for in != "" {
		switch {
		case strings.HasPrefix(in, "../"):
			in = in[3:]
		case strings.HasPrefix(in, "./"):
			in = in[2:]
		case strings.HasPrefix(in, "/./"):
			in = in[2:]
		case in == "/.":
			in = "/"
		case strings.HasPrefix(in, "/../"):
			in = in[3:]
			dropLast()
		case in == "/..":
			in = "/"
			dropLast()
		case in == "." || in == "..":
			in = ""
		default:
			start := 0
			if in[0] == '/' {
				start = 1
			}
			end := len(in)
			if i := strings.IndexByte(in[start:], '/'); i >= 0 {
				end = start + i
			}
			out = append(out, in[:end]...)
			in = in[end:]
		}
	}
	return string(out)
}
