package service

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// parseJSONObject parses exactly one JSON object (RFC 8259), strictly and in
// one pass: valid UTF-8, no control characters in strings, no lone UTF-16
// surrogate escapes, no duplicate keys at any depth, at most maxJSONDepth
// levels, nothing but white space after it. Numbers become float64.
//
// encoding/json would accept duplicate keys (last wins) and silently replace
// invalid UTF-8 and lone surrogates, which is how two parsers come to
// disagree about a token; it is also the slowest part of a validation.
func parseJSONObject(b []byte) (map[string]any, error) {
	if !utf8.Valid(b) {
		return nil, errors.New("not valid UTF-8")
	}
	p := jsonParser{b: b}
	p.space()
	if p.i >= len(b) {
		return nil, errors.New("not JSON (empty)")
	}
	if b[p.i] != '{' {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("a JSON object is required, found %s", jsonType(v))
	}
	obj, err := p.object()
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(b) {
		return nil, errors.New("data after the JSON object")
	}
	return obj, nil
}

// maxJSONValues bounds the values in one header or payload: a claim set
// has dozens, and a cap keeps a forged token with a huge array (allowed by a
// raised max_token_bytes) from costing milliseconds before its signature is
// even looked at.
const maxJSONValues = 4096

type jsonParser struct {
	b      []byte
	i      int
	depth  int
	values int
}

func (p *jsonParser) errorf(format string, args ...any) error {
	return fmt.Errorf("not JSON (at byte %d: %s)", p.i, fmt.Sprintf(format, args...))
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value() (any, error) {
	if p.values++; p.values > maxJSONValues {
		return nil, fmt.Errorf("more than %d JSON values", maxJSONValues)
	}
	p.space()
	if p.i >= len(p.b) {
		return nil, p.errorf("unexpected end")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object()
	case c == '[':
		return p.array()
	case c == '"':
		return p.str()
	case c == '-' || (c >= '0' && c <= '9'):
		return p.number()
	default:
		for _, lit := range [...]struct {
			text string
			v    any
		}{{"true", true}, {"false", false}, {"null", nil}} {
			if len(p.b)-p.i >= len(lit.text) && string(p.b[p.i:p.i+len(lit.text)]) == lit.text {
				p.i += len(lit.text)
				return lit.v, nil
			}
		}
		return nil, p.errorf("unexpected %q", c)
	}
}

func (p *jsonParser) enter() error {
	p.depth++
	if p.depth > maxJSONDepth {
		return fmt.Errorf("nested deeper than %d levels", maxJSONDepth)
	}
	return nil
}

func (p *jsonParser) object() (map[string]any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.i++ // '{'
	obj := make(map[string]any, 8)
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		p.depth--
		return obj, nil
	}
	for {
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.errorf("a member name (string) expected")
		}
		k, err := p.str()
		if err != nil {
			return nil, err
		}
		if _, dup := obj[k]; dup {
			return nil, fmt.Errorf("%w %q: JSON parsers disagree on which value wins, so the token is ambiguous", errDuplicateKey, printable(k))
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.errorf("':' expected")
		}
		p.i++
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		obj[k] = v
		p.space()
		if p.i >= len(p.b) {
			return nil, p.errorf("unexpected end")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case '}':
			p.i++
			p.depth--
			return obj, nil
		default:
			return nil, p.errorf("',' or '}' expected")
		}
	}
}

func (p *jsonParser) array() ([]any, error) {
	if err := p.enter(); err != nil {
		return nil, err
	}
	p.i++ // '['
	arr := []any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		p.depth--
		return arr, nil
	}
	for {
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		p.space()
		if p.i >= len(p.b) {
			return nil, p.errorf("unexpected end")
		}
		switch p.b[p.i] {
		case ',':
			p.i++
		case ']':
			p.i++
			p.depth--
			return arr, nil
		default:
			return nil, p.errorf("',' or ']' expected")
		}
	}
}

// str reads a string; the input is known to be valid UTF-8.
func (p *jsonParser) str() (string, error) {
	p.i++ // opening quote
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, nil
		case c == '\\':
			return p.escaped(start)
		case c < 0x20:
			return "", p.errorf("control character in a string")
		}
		p.i++
	}
	return "", p.errorf("unterminated string")
}

// escaped finishes a string that holds escapes, from its start.
func (p *jsonParser) escaped(start int) (string, error) {
	buf := make([]byte, 0, p.i-start+16)
	buf = append(buf, p.b[start:p.i]...)
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(buf), nil
		case c < 0x20:
			return "", p.errorf("control character in a string")
		case c != '\\':
			buf = append(buf, c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.b) {
			return "", p.errorf("unterminated escape")
		}
		e := p.b[p.i+1]
		p.i += 2
		switch e {
		case '"', '\\', '/':
			buf = append(buf, e)
		case 'b':
			buf = append(buf, '\b')
		case 'f':
			buf = append(buf, '\f')
		case 'n':
			buf = append(buf, '\n')
		case 'r':
			buf = append(buf, '\r')
		case 't':
			buf = append(buf, '\t')
		case 'u':
			r, ok := hex4(p.b, p.i)
			if !ok {
				return "", p.errorf("bad \\u escape")
			}
			p.i += 4
			switch {
			case utf16.IsSurrogate(r) && r < 0xDC00:
				lo, ok := rune(0), false
				if p.i+6 <= len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
					lo, ok = hex4(p.b, p.i+2)
				}
				if !ok || lo < 0xDC00 || lo > 0xDFFF {
					return "", errors.New("lone UTF-16 surrogate escape")
				}
				p.i += 6
				r = utf16.DecodeRune(r, lo)
			case utf16.IsSurrogate(r):
				return "", errors.New("lone UTF-16 surrogate escape")
			}
			buf = utf8.AppendRune(buf, r)
		default:
			return "", p.errorf("bad escape \\%c", e)
		}
	}
	return "", p.errorf("unterminated string")
}

// number reads a number of RFC 8259's grammar as a finite float64.
func (p *jsonParser) number() (float64, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	if p.i < len(p.b) && p.b[p.i] == '0' {
		p.i++
	} else if digits() == 0 {
		return 0, p.errorf("bad number")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return 0, p.errorf("bad number")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return 0, p.errorf("bad number")
		}
	}
	lit := p.b[start:p.i]
	f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(lit), len(lit)), 64)
	if err != nil {
		return 0, fmt.Errorf("number %.32s out of range", lit)
	}
	return f, nil
}
