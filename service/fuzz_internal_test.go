package service

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"math/big"
	"slices"
	"testing"
	"time"
)

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
