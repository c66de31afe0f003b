package testkit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"hash"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// B64 is the base64url encoding of JWS segments.
var B64 = base64.RawURLEncoding

// Key is a signing key and what its JWK publishes.
type Key struct {
	KID    string
	Alg    string // the alg tokens signed with it name: RS256, ES256, ES384, EdDSA
	JWKAlg string // "alg" published in the JWK ("" for none)
	Use    string // "use" published in the JWK ("" for none)
	Priv   crypto.Signer
}

// RSAKey is a 2048-bit RS256 key.
func RSAKey(t testing.TB, kid string) *Key { return RSAKeyBits(t, kid, 2048) }

// RSAKeyBits is an RS256 key of the given size.
func RSAKeyBits(t testing.TB, kid string, bits int) *Key {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, bits)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{KID: kid, Alg: "RS256", Priv: k}
}

// ECKey is an ECDSA key for ES256, ES384 or ES512 by curve.
func ECKey(t testing.TB, kid string, curve elliptic.Curve) *Key {
	t.Helper()
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	alg := map[elliptic.Curve]string{elliptic.P256(): "ES256", elliptic.P384(): "ES384", elliptic.P521(): "ES512"}[curve]
	return &Key{KID: kid, Alg: alg, Priv: k}
}

// EdKey is an Ed25519 (EdDSA) key.
func EdKey(t testing.TB, kid string) *Key {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{KID: kid, Alg: "EdDSA", Priv: k}
}

// Like returns a fresh key of the same type and alg, under kid.
func (k *Key) Like(t testing.TB, kid string) *Key {
	t.Helper()
	switch p := k.Priv.(type) {
	case *rsa.PrivateKey:
		return RSAKeyBits(t, kid, p.N.BitLen())
	case *ecdsa.PrivateKey:
		return ECKey(t, kid, p.Curve)
	default:
		return EdKey(t, kid)
	}
}

// JWK is the public JWK of k.
func (k *Key) JWK() map[string]any {
	m := map[string]any{}
	switch p := k.Priv.Public().(type) {
	case *rsa.PublicKey:
		m["kty"], m["n"], m["e"] = "RSA", B64.EncodeToString(p.N.Bytes()), B64.EncodeToString(big.NewInt(int64(p.E)).Bytes())
	case *ecdsa.PublicKey:
		pt, err := p.Bytes()
		if err != nil {
			panic(err)
		}
		n := (len(pt) - 1) / 2
		m["kty"], m["crv"], m["x"], m["y"] = "EC", p.Curve.Params().Name, B64.EncodeToString(pt[1:1+n]), B64.EncodeToString(pt[1+n:])
	case ed25519.PublicKey:
		m["kty"], m["crv"], m["x"] = "OKP", "Ed25519", B64.EncodeToString(p)
	}
	if k.KID != "" {
		m["kid"] = k.KID
	}
	if k.JWKAlg != "" {
		m["alg"] = k.JWKAlg
	}
	if k.Use != "" {
		m["use"] = k.Use
	}
	return m
}

// JWKS is a JWKS document; each element is a *Key or a raw JWK map.
func JWKS(keys ...any) []byte {
	set := []any{}
	for _, k := range keys {
		if tk, ok := k.(*Key); ok {
			k = tk.JWK()
		}
		set = append(set, k)
	}
	b, err := json.Marshal(map[string]any{"keys": set})
	if err != nil {
		panic(err)
	}
	return b
}

// WriteJWKS writes a key set (as JWKS takes it) to a temporary file and
// returns its path.
func WriteJWKS(t testing.TB, keys ...any) string {
	t.Helper()
	return WriteFile(t, "jwks.json", JWKS(keys...))
}

// WriteFile writes body to a file of that name in a temporary directory and
// returns its path.
func WriteFile(t testing.TB, name string, body []byte) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Token is a token signed by k with the header {"alg","kid","typ":"JWT"}.
func (k *Key) Token(t testing.TB, claims map[string]any) string {
	t.Helper()
	return Sign(t, map[string]any{"alg": k.Alg, "kid": k.KID, "typ": "JWT"}, claims, k.Alg, k.Priv)
}

// Sign encodes header and payload (a value marshalled to JSON, or []byte
// used as is) and signs "h.p" under alg with key: *rsa.PrivateKey,
// *ecdsa.PrivateKey, ed25519.PrivateKey or []byte (HMAC).
func Sign(t testing.TB, header, payload any, alg string, key any) string {
	t.Helper()
	input := Segment(t, header) + "." + Segment(t, payload)
	return input + "." + B64.EncodeToString(Signature(t, alg, key, []byte(input)))
}

// Segment is v as a JWS segment: JSON (or []byte as is), base64url.
func Segment(t testing.TB, v any) string {
	t.Helper()
	if b, ok := v.([]byte); ok {
		return B64.EncodeToString(b)
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return B64.EncodeToString(b)
}

// Signature signs input under alg with key (see Sign).
func Signature(t testing.TB, alg string, key any, input []byte) []byte {
	t.Helper()
	hashes := map[byte]crypto.Hash{'2': crypto.SHA256, '3': crypto.SHA384, '5': crypto.SHA512}
	var h crypto.Hash
	if len(alg) == 5 {
		h = hashes[alg[2]]
	}
	digest := func() []byte {
		if h == 0 {
			t.Fatalf("sign: no hash for alg %q", alg)
		}
		d := h.New()
		d.Write(input)
		return d.Sum(nil)
	}
	var sig []byte
	var err error
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if alg[0] == 'P' {
			sig, err = rsa.SignPSS(rand.Reader, k, h, digest(), &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
		} else {
			sig, err = rsa.SignPKCS1v15(nil, k, h, digest())
		}
	case *ecdsa.PrivateKey:
		r, s, err2 := ecdsa.Sign(rand.Reader, k, digest())
		if err2 != nil {
			t.Fatal(err2)
		}
		n := (k.Curve.Params().BitSize + 7) / 8
		sig = make([]byte, 2*n)
		r.FillBytes(sig[:n])
		s.FillBytes(sig[n:])
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, input)
	case []byte:
		m := hmac.New(map[crypto.Hash]func() hash.Hash{crypto.SHA256: sha256.New, crypto.SHA384: sha512.New384, crypto.SHA512: sha512.New}[h], k)
		m.Write(input)
		sig = m.Sum(nil)
	default:
		t.Fatalf("sign: key of type %T", key)
	}
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

// Absent, as a claim value given to Claims, removes the claim.
var Absent = &struct{}{}

// Claims is a valid payload of iss for api/users at Now, changed by
// name/value pairs (a value of Absent removes the claim).
func Claims(iss string, kv ...any) map[string]any {
	m := map[string]any{
		"iss":       iss,
		"sub":       "user-42",
		"aud":       "api/users",
		"exp":       Now.Add(time.Hour).Unix(),
		"iat":       Now.Add(-time.Minute).Unix(),
		"scope":     "users.read users.write",
		"client_id": "frontend",
		"jti":       "jti-1",
	}
	return set(m, kv)
}

// WithSig replaces the signature segment of tok.
func WithSig(tok string, sig []byte) string {
	for i := len(tok) - 1; i >= 0; i-- {
		if tok[i] == '.' {
			return tok[:i+1] + B64.EncodeToString(sig)
		}
	}
	return tok
}

// set applies name/value pairs to m (a value of Absent removes the name)
// and returns m.
func set(m map[string]any, kv []any) map[string]any {
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == Absent {
			delete(m, kv[i].(string))
		} else {
			m[kv[i].(string)] = kv[i+1]
		}
	}
	return m
}
