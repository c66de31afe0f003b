package service

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzParseConfig: any YAML is either refused with an error, or becomes a
// configuration that holds every rule Validate enforces, and validating it
// again changes nothing.
func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"issuers:\n  - issuer: https://a.example\n    jwks_uri: https://a.example/keys\n",
		"issuers:\n  - issuer: https://a.example\n    discovery: true\n    algorithms: [ES256, EdDSA]\n    leeway: 10m\n",
		"issuers:\n  - issuer: x\n    jwks_file: keys.json\naudiences:\n  - audience: api/users\n    name: Users API\n",
		"issuers:\n  - issuer: https://a.example\n    jwks_uri: http://a.example/keys\n    algorithms: [none, HS256]\n",
		"listen: \"0.0.0.0:1\"\nissuers: []\n",
		"{}",
		"",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		cfg, err := ParseConfig(b)
		if err != nil {
			if cfg != nil {
				t.Fatalf("a config and an error (%v)", err)
			}
			if err.Error() == "" {
				t.Fatal("an empty error")
			}
			return
		}
		checkConfigRules(t, cfg)
		before, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.Validate(); err != nil {
			t.Fatalf("ParseConfig returned a config that Validate refuses: %v\n%s", err, b)
		}
		after, err := json.Marshal(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(before, after) {
			t.Fatalf("validating a valid config again changed it:\n%s\n%s", before, after)
		}
	})
}

// checkConfigRules restates the rules of a valid config independently of
// how Validate checks them.
func checkConfigRules(t *testing.T, cfg *Config) {
	t.Helper()
	if len(cfg.Issuers) == 0 {
		t.Fatal("a valid config without issuers")
	}
	if cfg.MaxTokenBytes < 256 || cfg.MaxTokenBytes > 1<<20 {
		t.Fatalf("max_token_bytes %d", cfg.MaxTokenBytes)
	}
	seen := map[string]bool{}
	for i, is := range cfg.Issuers {
		if is.Issuer == "" || strings.TrimSpace(is.Issuer) != is.Issuer {
			t.Fatalf("issuers[%d].issuer %q", i, is.Issuer)
		}
		if seen[is.Issuer] {
			t.Fatalf("issuer %q twice", is.Issuer)
		}
		seen[is.Issuer] = true
		sources := 0
		if is.JWKSURI != "" {
			sources++
			if err := checkFetchURL(is.JWKSURI); err != nil {
				t.Fatalf("issuers[%d].jwks_uri accepted: %v", i, err)
			}
		}
		if is.Discovery {
			sources++
			if err := checkFetchURL(is.Issuer); err != nil {
				t.Fatalf("issuers[%d] discovery on %q accepted: %v", i, is.Issuer, err)
			}
		}
		if is.JWKSFile != "" {
			sources++
		}
		if sources != 1 {
			t.Fatalf("issuers[%d] has %d key sources", i, sources)
		}
		if len(is.Algorithms) == 0 {
			t.Fatalf("issuers[%d] has no algorithms", i)
		}
		for _, a := range is.Algorithms {
			if _, ok := algSpecs[a]; !ok || !slices.Contains(DefaultAlgorithms, a) {
				t.Fatalf("issuers[%d] allows %q", i, a)
			}
		}
		if is.Leeway < 0 || time.Duration(is.Leeway) > 10*time.Minute {
			t.Fatalf("issuers[%d].leeway %v", i, time.Duration(is.Leeway))
		}
		if len(is.AudienceClaims) == 0 || slices.Contains(is.AudienceClaims, "") {
			t.Fatalf("issuers[%d].audience_claims %q", i, is.AudienceClaims)
		}
		if time.Duration(is.RefreshInterval) < time.Second || is.UnknownKIDCooldown < 0 || is.FetchTimeout <= 0 {
			t.Fatalf("issuers[%d] timings %+v", i, is)
		}
	}
	auds := map[string]bool{}
	for i, a := range cfg.Audiences {
		if a.Audience == "" || auds[a.Audience] {
			t.Fatalf("audiences[%d] %q empty or repeated", i, a.Audience)
		}
		auds[a.Audience] = true
	}
}

// FuzzParseKeySet: any body is either refused, or becomes a set of at least
// one key, each of a type and strength usher verifies with, each published
// without private material, none for encryption.
func FuzzParseKeySet(f *testing.F) {
	for _, s := range []string{
		`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}`,
		`{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"a","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo","d":"nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A"}]}`,
		`{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"s"}]}`,
		`{"keys":[]}`,
		`{"keys":null}`,
		`{"keys":{}}`,
		`{}`,
		`[]`,
		``,
	} {
		f.Add([]byte(s))
	}
	now := time.Unix(1_760_000_000, 0)
	f.Fuzz(func(t *testing.T, b []byte) {
		ks, err := parseKeySet(b, now)
		if err != nil {
			if ks != nil {
				t.Fatalf("a key set and an error (%v)", err)
			}
			return
		}
		checkParsedKeySet(t, b, ks)
		again, err := parseKeySet(b, now)
		if err != nil || !slices.Equal(again.kids(), ks.kids()) || len(again.keys) != len(ks.keys) {
			t.Fatalf("a second parse differs: %v %v", err, again)
		}
	})
}

// privateMembers are the members that hold private key material, by key
// type (RFC 7518 §6.2.2, §6.3.2; RFC 8037 §2): any one of them, not only d,
// gives the private key away (n/p is q). Member names are case-sensitive
// (RFC 7517 §4).
var privateMembers = map[string][]string{
	"RSA": {"d", "p", "q", "dp", "dq", "qi", "oth"},
	"EC":  {"d"},
	"OKP": {"d"},
}

// jwkMembers lists the names of the members of a JSON object whose value is
// not empty ("" or null), duplicates included, and reports whether b is a
// JSON object at all.
func jwkMembers(b []byte) ([]string, bool) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, false
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, false
		}
		name, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, false
		}
		if s := string(v); s != `""` && s != "null" {
			names = append(names, name)
		}
	}
	return names, true
}

// publicBytes is a comparable form of a public key.
func publicBytes(k *verifyKey) string {
	switch k.kty {
	case "RSA":
		return "RSA:" + k.rsa.N.Text(16) + ":" + big.NewInt(int64(k.rsa.E)).Text(16)
	case "EC":
		b, err := k.ec.Bytes()
		if err != nil {
			return "EC:invalid"
		}
		return "EC:" + string(b)
	case "OKP":
		return "OKP:" + string(k.ed)
	}
	return "?"
}

func checkParsedKeySet(t *testing.T, body []byte, ks *keySet) {
	t.Helper()
	if len(ks.keys) == 0 || len(ks.keys) > maxJWKSKeys {
		t.Fatalf("a set of %d keys", len(ks.keys))
	}
	// The public keys of the published JWKs that carry nothing private and
	// are not for encryption: every key held must be one of them.
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Fatalf("a key set from a body encoding/json refuses: %v", err)
	}
	clean := map[string]bool{}
	for _, raw := range doc.Keys {
		k, why := usableKey(raw)
		if why != "" {
			continue
		}
		names, ok := jwkMembers(raw)
		if !ok || slices.ContainsFunc(names, func(n string) bool { return slices.Contains(privateMembers[k.kty], n) }) {
			continue
		}
		var m map[string]any
		if json.Unmarshal(raw, &m) != nil || m["use"] == "enc" {
			continue
		}
		if ops, ok := m["key_ops"].([]any); ok && !slices.Contains(ops, any("verify")) {
			continue
		}
		clean[publicBytes(k)] = true
	}
	kids := map[string]bool{}
	for _, k := range ks.keys {
		if !clean[publicBytes(k)] {
			t.Fatalf("key %q is held, but no JWK publishes it without private members and for signing", k.kid)
		}
		switch k.kty {
		case "RSA":
			if k.rsa == nil || k.ec != nil || k.ed != nil || k.rsa.N.BitLen() < minRSABits || k.rsa.E < 3 || k.rsa.E%2 == 0 {
				t.Fatalf("RSA key %q: weak or mixed", k.kid)
			}
		case "EC":
			if k.ec == nil || k.rsa != nil || k.ed != nil || !slices.Contains([]string{"P-256", "P-384", "P-521"}, k.crv) || k.crv != k.ec.Curve.Params().Name {
				t.Fatalf("EC key %q: curve %q", k.kid, k.crv)
			}
		case "OKP":
			if len(k.ed) != ed25519.PublicKeySize || k.rsa != nil || k.ec != nil || k.crv != "Ed25519" {
				t.Fatalf("OKP key %q: %d bytes on %q", k.kid, len(k.ed), k.crv)
			}
		default:
			t.Fatalf("key %q of type %q", k.kid, k.kty)
		}
		if k.alg != "" {
			if spec, ok := algSpecs[k.alg]; !ok || k.fits(k.alg, spec) != "" {
				t.Fatalf("key %q is held for alg %q, which it cannot verify", k.kid, k.alg)
			}
		}
		if k.kid != "" {
			if kids[k.kid] {
				t.Fatalf("kid %q held twice", k.kid)
			}
			kids[k.kid] = true
			if ks.byKID[k.kid] != k {
				t.Fatalf("kid %q not indexed", k.kid)
			}
		}
	}
	if len(ks.byKID) != len(kids) {
		t.Fatalf("%d kids indexed, %d held", len(ks.byKID), len(kids))
	}
}

// FuzzParseJSONObject holds the strict one-pass parser to encoding/json:
// whatever it accepts, encoding/json reads as the same value; whatever
// encoding/json reads as an object that it refuses, it refuses for a reason
// of its own (duplicate keys, lone surrogates, depth), never by mistake.
func FuzzParseJSONObject(f *testing.F) {
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
		got, err := parseJSONObject(b)
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
		msg := err.Error()
		if !errors.Is(err, errDuplicateKey) && !strings.Contains(msg, "lone UTF-16 surrogate") && !strings.Contains(msg, "nested deeper than") {
			t.Fatalf("refused %q (%v), which encoding/json reads as %#v", b, err, want)
		}
	})
}
