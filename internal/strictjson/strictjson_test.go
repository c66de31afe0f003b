package strictjson_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/usher-dev/usher/internal/strictjson"
)

func TestParseObject_Accepts(t *testing.T) {
	for _, c := range []struct {
		in   string
		want map[string]any
	}{
		{`{}`, map[string]any{}},
		{" \t\r\n{\"a\":1} \n", map[string]any{"a": 1.0}},
		{`{"a":[1,"x",true,false,null,{}]}`, map[string]any{"a": []any{1.0, "x", true, false, nil, map[string]any{}}}},
		{`{"a":"\u00e9\ud83d\ude00\\\"\/\b\f\n\r\t"}`, map[string]any{"a": "é😀\\\"/\b\f\n\r\t"}},
		{`{"a":-0.5e+2,"b":1E2,"c":0}`, map[string]any{"a": -50.0, "b": 100.0, "c": 0.0}},
		{`{"a":{"a":1}}`, map[string]any{"a": map[string]any{"a": 1.0}}}, // the same name at another depth
	} {
		got, err := strictjson.ParseObject([]byte(c.in))
		if err != nil {
			t.Errorf("%q: %v", c.in, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%q: %#v, want %#v", c.in, got, c.want)
		}
	}
}

func TestParseObject_Refuses(t *testing.T) {
	deep := strings.Repeat("[", strictjson.MaxDepth) + strings.Repeat("]", strictjson.MaxDepth)
	many := `{"a":[` + strings.Repeat("1,", strictjson.MaxValues) + `1]}`
	for _, c := range []struct {
		in     string
		is     error  // a sentinel the error wraps, or nil
		saying string // a part of the message
	}{
		{``, nil, "empty"},
		{`  `, nil, "empty"},
		{`[]`, nil, "found an array"},
		{`"x"`, nil, "found a string"},
		{`null`, nil, "found null"},
		{`{}{}`, nil, "data after"},
		{`{"a":1,}`, nil, "member name"},
		{`{"a":01}`, nil, "','"},
		{`{"a":1e400}`, nil, "out of range"},
		{`{"a" 1}`, nil, "':'"},
		{`{"a":"x`, nil, "unterminated"},
		{"{\"a\":\"\x01\"}", nil, "control character"},
		{"{\"a\":\"\xff\"}", nil, "UTF-8"},
		{`{"a":"\x"}`, nil, "bad escape"},
		{`{"a":"\u12"}`, nil, `\u escape`},
		{`{"a":tru}`, nil, "unexpected"},
		{`{"a":1,"a":2}`, strictjson.ErrDuplicateKey, `"a"`},
		{`{"\u0061":1,"a":2}`, strictjson.ErrDuplicateKey, ""},
		{`{"o":{"b":1,"b":1}}`, strictjson.ErrDuplicateKey, ""},
		{`{"a":"\ud800"}`, strictjson.ErrLoneSurrogate, ""},
		{`{"a":"\udc00\ud800"}`, strictjson.ErrLoneSurrogate, ""},
		{`{"a":` + deep + `}`, strictjson.ErrTooDeep, ""},
		{many, strictjson.ErrTooManyValues, ""},
	} {
		got, err := strictjson.ParseObject([]byte(c.in))
		name := c.in
		if len(name) > 40 {
			name = name[:40] + "…"
		}
		if err == nil || got != nil {
			t.Errorf("%q: accepted as %#v", name, got)
			continue
		}
		if c.is != nil && !errors.Is(err, c.is) {
			t.Errorf("%q: %v, want it to wrap %v", name, err, c.is)
		}
		if !strings.Contains(err.Error(), c.saying) {
			t.Errorf("%q: %q does not say %q", name, err, c.saying)
		}
	}
}

func TestParseObject_BoundsNamesInErrors(t *testing.T) {
	name := strings.Repeat("k", 1000) + `\u001b[2J` // an escaped ESC: a terminal control sequence once decoded
	_, err := strictjson.ParseObject([]byte(`{"` + name + `":1,"` + name + `":2}`))
	if !errors.Is(err, strictjson.ErrDuplicateKey) {
		t.Fatal(err)
	}
	if len(err.Error()) > 300 || strings.ContainsRune(err.Error(), 0x1b) {
		t.Errorf("the error repeats an attacker's member name unbounded or unescaped: %q", err)
	}
	_, err = strictjson.ParseObject([]byte(`{"a\u001b":1,"a\u001b":2}`))
	if strings.ContainsRune(err.Error(), 0x1b) {
		t.Errorf("the error repeats an attacker's member name unbounded or unescaped: %q", err)
	}
}

// FuzzParseObject holds the parser to encoding/json: whatever it accepts,
// encoding/json reads as the same value; whatever encoding/json reads as an
// object that it refuses, it refuses for a reason of its own (duplicate keys,
// lone surrogates, depth, size), never by mistake.
func FuzzParseObject(f *testing.F) {
	for _, s := range []string{
		`{"iss":"https://a.example","aud":["api/users","x"],"exp":1.76e9,"nbf":0,"n":null,"b":true,"o":{"a":[{}]}}`,
		`{"a":"\u00e9\ud83d\ude00\\\"\/\b\f\n\r\t"}`,
		`{"a":1,"a":2}`,
		`{"\u0061":1,"a":2}`,
		`{"a":"\ud800"}`,
		`{"a":"\udc00\ud800"}`,
		`{"a":-0.0e-0,"b":1E+2,"c":-1e400}`,
		` {"a":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]} `,
		`{"a":01}`,
		`{"a":1,}`,
		`{} {}`,
		`[]`,
		"{\"a\":\"\x00\"}",
		"{\"a\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := strictjson.ParseObject(b)
		var want map[string]any
		stdErr := json.Unmarshal(b, &want)
		trimmed := bytes.TrimLeft(b, " \t\r\n")
		isObject := stdErr == nil && len(trimmed) > 0 && trimmed[0] == '{'
		if err == nil {
			if got == nil {
				t.Fatal("no error and no object")
			}
			if !isObject {
				t.Fatalf("accepted %q, which encoding/json refuses as an object (%v)", b, stdErr)
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("%q: parsed as %#v, encoding/json reads %#v", b, got, want)
			}
			return
		}
		if got != nil {
			t.Fatalf("an object and an error (%v)", err)
		}
		if !isObject || !utf8.Valid(b) {
			return
		}
		for _, own := range []error{strictjson.ErrDuplicateKey, strictjson.ErrLoneSurrogate, strictjson.ErrTooDeep, strictjson.ErrTooManyValues} {
			if errors.Is(err, own) {
				return
			}
		}
		t.Fatalf("refused %q (%v), which encoding/json reads as %#v", b, err, want)
	})
}
