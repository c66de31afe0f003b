package service

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
)

// Limits on a key set.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 100
	minRSABits   = 2048
)

// algSpec says which key a JWS algorithm needs and how it verifies.
type algSpec struct {
	kty  string // "RSA", "EC", "OKP"
	crv  string // for EC and OKP
	hash crypto.Hash
	pss  bool
}

var algSpecs = map[string]algSpec{
	"RS256": {kty: "RSA", hash: crypto.SHA256},
	"RS384": {kty: "RSA", hash: crypto.SHA384},
	"RS512": {kty: "RSA", hash: crypto.SHA512},
	"PS256": {kty: "RSA", hash: crypto.SHA256, pss: true},
	"PS384": {kty: "RSA", hash: crypto.SHA384, pss: true},
	"PS512": {kty: "RSA", hash: crypto.SHA512, pss: true},
	"ES256": {kty: "EC", crv: "P-256", hash: crypto.SHA256},
	"ES384": {kty: "EC", crv: "P-384", hash: crypto.SHA384},
	"ES512": {kty: "EC", crv: "P-521", hash: crypto.SHA512},
	"EdDSA": {kty: "OKP", crv: "Ed25519"},
}

// verifyKey is one usable public key, parsed once when its set is loaded.
type verifyKey struct {
	kid string
	alg string // the JWK's own alg, "" when it names none
	kty string
	crv string
	rsa *rsa.PublicKey
	ec  *ecdsa.PublicKey
	ed  ed25519.PublicKey
}

// equal reports whether two keys are the same public key.
func (k *verifyKey) equal(o *verifyKey) bool {
	switch {
	case k.kty != o.kty || k.alg != o.alg:
		return false
	case k.rsa != nil:
		return o.rsa != nil && k.rsa.Equal(o.rsa)
	case k.ec != nil:
		return o.ec != nil && k.ec.Equal(o.ec)
	default:
		return k.ed.Equal(o.ed)
	}
}

// fits reports why the key cannot verify alg, or "" when it can.
func (k *verifyKey) fits(alg string, spec algSpec) string {
	switch {
	case k.kty != spec.kty:
		return fmt.Sprintf("alg %s needs an %s key, but key %q is %s", alg, spec.kty, k.kid, k.kty)
	case spec.crv != "" && k.crv != spec.crv:
		return fmt.Sprintf("alg %s needs curve %s, but key %q is on %s", alg, spec.crv, k.kid, k.crv)
	case k.alg != "" && k.alg != alg:
		return fmt.Sprintf("key %q is published for alg %s, the token says %s", k.kid, k.alg, alg)
	}
	return ""
}

// verify checks sig over input with this key; the caller has checked fits.
func (k *verifyKey) verify(spec algSpec, input string, sig []byte) bool {
	switch k.kty {
	case "RSA":
		return len(sig) == k.rsa.Size() && jwsbb.VerifyRSA(k.rsa, []byte(input), sig, spec.hash, spec.pss) == nil
	case "EC":
		return len(sig) == 2*((k.ec.Curve.Params().BitSize+7)/8) && jwsbb.VerifyECDSA(k.ec, []byte(input), sig, spec.hash) == nil
	case "OKP":
		return len(sig) == ed25519.SignatureSize && jwsbb.VerifyEdDSA(k.ed, []byte(input), sig) == nil
	}
	return false
}

// keySet is an issuer's usable keys at one moment; replaced whole, never mutated.
type keySet struct {
	byKID   map[string]*verifyKey
	keys    []*verifyKey
	fetched time.Time
	dropped []string // why keys of the published set were not taken
}

func (ks *keySet) kids() []string {
	out := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		if k.kid != "" {
			out = append(out, k.kid)
		}
	}
	slices.Sort(out)
	return out
}

// parseKeySet reads a JWKS document: each key is parsed on its own (one key
// of an unknown type does not fail the set), weak, private, symmetric and
// encryption keys are dropped, and a set with no usable key is an error, so
// that it never replaces a good one.
func parseKeySet(body []byte, now time.Time) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document (JSON with a \"keys\" array): %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`not a JWKS document: no "keys" array`)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("%d keys, over the limit of %d", len(doc.Keys), maxJWKSKeys)
	}
	ks := &keySet{byKID: map[string]*verifyKey{}, fetched: now}
	dupes := map[string]bool{}
	for i, raw := range doc.Keys {
		k, why := usableKey(raw)
		if why != "" {
			ks.dropped = append(ks.dropped, fmt.Sprintf("keys[%d]: %s", i, why))
			continue
		}
		if k.kid != "" {
			if _, dup := ks.byKID[k.kid]; dup || dupes[k.kid] {
				dupes[k.kid] = true
				delete(ks.byKID, k.kid)
				continue
			}
			ks.byKID[k.kid] = k
		}
		ks.keys = append(ks.keys, k)
	}
	if len(dupes) > 0 {
		ks.keys = slices.DeleteFunc(ks.keys, func(k *verifyKey) bool { return dupes[k.kid] })
		for kid := range dupes {
			ks.dropped = append(ks.dropped, fmt.Sprintf("kid %q: published more than once, ambiguous", kid))
		}
	}
	if len(ks.keys) == 0 {
		if len(doc.Keys) == 0 {
			return nil, errors.New(`the key set is empty ({"keys":[]})`)
		}
		return nil, fmt.Errorf("no usable key among %d: %s", len(doc.Keys), strings.Join(ks.dropped, "; "))
	}
	return ks, nil
}

// usableKey parses one JWK and returns it, or why it is not used.
func usableKey(raw json.RawMessage) (*verifyKey, string) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, "not a JSON object"
	}
	var rawKID string
	_ = json.Unmarshal(members["kid"], &rawKID)
	rawName := "key"
	if rawKID != "" {
		rawName = fmt.Sprintf("key %q", rawKID)
	}
	// RFC 7518 §6.2.2, §6.3.2, §6.4: any of these is private (p or q alone
	// factors the modulus), whatever a parser makes of the rest.
	for _, m := range privateJWKMembers {
		if _, ok := members[m]; ok {
			return nil, fmt.Sprintf("%s holds private key material (%q): the issuer is leaking its signing key", rawName, m)
		}
	}
	key, err := jwk.ParseKey(raw)
	if err != nil {
		return nil, fmt.Sprintf("%s is not a usable JWK (%v)", rawName, err)
	}
	kid, _ := key.KeyID()
	name := "key"
	if kid != "" {
		name = fmt.Sprintf("key %q", kid)
	}
	if use, ok := key.KeyUsage(); ok && use != "sig" {
		return nil, fmt.Sprintf("%s has use %q, not \"sig\"", name, use)
	}
	if ops, ok := key.KeyOps(); ok && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, fmt.Sprintf("%s has key_ops %v, without \"verify\"", name, ops)
	}
	if priv, err := jwk.IsPrivateKey(key); err == nil && priv {
		return nil, fmt.Sprintf("%s holds private key material: the issuer is leaking its signing key", name)
	}
	k := &verifyKey{kid: kid}
	if alg, ok := key.Algorithm(); ok {
		k.alg = alg.String()
	}
	var pub any
	if err := jwk.Export(key, &pub); err != nil {
		return nil, fmt.Sprintf("%s cannot be exported (%v)", name, err)
	}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < minRSABits {
			return nil, fmt.Sprintf("%s is RSA with %d bits, under %d", name, p.N.BitLen(), minRSABits)
		}
		if p.E < 3 || p.E%2 == 0 {
			return nil, fmt.Sprintf("%s is RSA with exponent %d", name, p.E)
		}
		k.kty, k.rsa = "RSA", p
	case *ecdsa.PublicKey:
		k.kty, k.crv, k.ec = "EC", p.Curve.Params().Name, p
		if k.crv != "P-256" && k.crv != "P-384" && k.crv != "P-521" {
			return nil, fmt.Sprintf("%s is on unsupported curve %s", name, k.crv)
		}
	case ed25519.PublicKey:
		k.kty, k.crv, k.ed = "OKP", "Ed25519", p
	default:
		return nil, fmt.Sprintf("%s is of type %s, which usher does not verify with", name, key.KeyType())
	}
	if k.alg != "" {
		spec, ok := algSpecs[k.alg]
		if !ok || spec.kty != k.kty || (spec.crv != "" && spec.crv != k.crv) {
			return nil, fmt.Sprintf("%s is published for alg %q, which cannot be used with a %s %s key", name, k.alg, k.kty, k.crv)
		}
	}
	if k.rsa != nil && rocaFingerprint(k.rsa.N) {
		return nil, fmt.Sprintf("%s is an RSA key with the ROCA fingerprint (CVE-2017-15361): its private key can be computed", name)
	}
	return k, ""
}

// rocaPrimes and the generator 65537 make the fingerprint of moduli from
// Infineon's flawed key generation (ROCA, CVE-2017-15361): for every prime p
// here, N mod p lies in the subgroup that 65537 generates mod p.
var rocaPrimes = []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

func rocaFingerprint(n *big.Int) bool {
	var r big.Int
	for _, p := range rocaPrimes {
		rem := r.Mod(n, big.NewInt(p)).Int64()
		inGroup := false
		for g, i := int64(1), int64(0); i < p; i++ {
			if g == rem {
				inGroup = true
				break
			}
			g = g * 65537 % p
		}
		if !inGroup {
			return false
		}
	}
	return true
}
