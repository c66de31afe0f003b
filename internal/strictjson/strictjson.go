// Package strictjson parses one JSON object (RFC 8259) strictly and in one
// pass, for data whose every byte an attacker may choose: token headers and
// payloads, introspection answers. It refuses what encoding/json would let
// through: duplicate keys (which value wins depends on the parser, which is
// how two parsers come to disagree about a token), invalid UTF-8 and lone
// UTF-16 surrogate escapes (which encoding/json silently replaces), nesting
// beyond MaxDepth and more than MaxValues values. Numbers become float64,
// as with encoding/json into an interface value.
package strictjson

import (
	"errors"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
	"unsafe"
)

// Limits on one document.
const (
	// MaxDepth bounds nesting of objects and arrays.
	MaxDepth = 32
	// MaxValues bounds the values in one document: a claim set has dozens,
	// and a cap keeps a forged token with a huge array (allowed by a raised
	// max_token_bytes) from costing milliseconds before its signature is
	// even looked at.
	MaxValues = 4096
)

// Why a document was refused where encoding/json would have read it; test
// with errors.Is.
var (
	ErrDuplicateKey  = errors.New("duplicate key")
	ErrLoneSurrogate = errors.New("lone UTF-16 surrogate escape")
	ErrTooDeep       = fmt.Errorf("nested deeper than %d levels", MaxDepth)
	ErrTooManyValues = fmt.Errorf("more than %d JSON values", MaxValues)
)

// ParseObject parses exactly one JSON object: valid UTF-8, no control
// characters in strings, no lone UTF-16 surrogate escapes, no duplicate keys
// at any depth, at most MaxDepth levels and MaxValues values, nothing but
// white space after it. It is also several times faster than encoding/json.
func ParseObject(b []byte) (map[string]any, error) {
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
		return nil, fmt.Errorf("a JSON object is required, found %s", TypeName(v))
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
	if p.values++; p.values > MaxValues {
		return nil, ErrTooManyValues
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
	if p.depth > MaxDepth {
		return ErrTooDeep
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
			return nil, fmt.Errorf("%w %.64q: JSON parsers disagree on which value wins, so the token is ambiguous", ErrDuplicateKey, k)
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
					return "", ErrLoneSurrogate
				}
				p.i += 6
				r = utf16.DecodeRune(r, lo)
			case utf16.IsSurrogate(r):
				return "", ErrLoneSurrogate
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

func hex4(b []byte, at int) (rune, bool) {
	if at+4 > len(b) {
		return 0, false
	}
	var r rune
	for _, c := range b[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// TypeName names the JSON type of a parsed value for a message: "a string",
// "a number", "null"…
func TypeName(v any) string {
	switch v := v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "a boolean"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	default:
		return fmt.Sprintf("%T", v)
	}
}
