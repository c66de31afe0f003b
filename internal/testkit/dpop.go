package testkit

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"testing"
	"time"
)

// DPoP (RFC 9449) and certificate-bound (RFC 8705) tokens for tests: the
// proofs are made here, with the standard library, independently of the
// engine that checks them.

// Thumbprint is the RFC 7638 SHA-256 thumbprint of k's public key,
// base64url: what a DPoP-bound token's cnf.jkt holds.
func (k *Key) Thumbprint() string {
	var members any
	switch p := k.Priv.Public().(type) {
	case *rsa.PublicKey:
		members = struct {
			E   string `json:"e"`
			Kty string `json:"kty"`
			N   string `json:"n"`
		}{B64.EncodeToString(big.NewInt(int64(p.E)).Bytes()), "RSA", B64.EncodeToString(p.N.Bytes())}
	case *ecdsa.PublicKey:
		pt, err := p.Bytes()
		if err != nil {
			panic(err)
		}
		n := (len(pt) - 1) / 2
		members = struct {
			Crv string `json:"crv"`
			Kty string `json:"kty"`
			X   string `json:"x"`
			Y   string `json:"y"`
		}{p.Curve.Params().Name, "EC", B64.EncodeToString(pt[1 : 1+n]), B64.EncodeToString(pt[1+n:])}
	case ed25519.PublicKey:
		members = struct {
			Crv string `json:"crv"`
			Kty string `json:"kty"`
			X   string `json:"x"`
		}{"Ed25519", "OKP", B64.EncodeToString(p)}
	}
	b, err := json.Marshal(members) // struct fields in order: the members sorted, no white space
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(b)
	return B64.EncodeToString(sum[:])
}

// Cnf is the cnf claim of a token bound to k: {"jkt": thumbprint}.
func (k *Key) Cnf() map[string]any { return map[string]any{"jkt": k.Thumbprint()} }

// ATH is a proof's ath for token: base64url SHA-256 of its ASCII.
func ATH(token string) string {
	sum := sha256.Sum256([]byte(token))
	return B64.EncodeToString(sum[:])
}

// CertThumbprint is the x5t#S256 of a DER certificate (RFC 8705 §3.1).
func CertThumbprint(der []byte) string {
	sum := sha256.Sum256(der)
	return B64.EncodeToString(sum[:])
}

// JTI is a new random jti.
func JTI() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

// ProofHeader is the header of k's DPoP proofs: typ dpop+jwt, k's alg, and
// k's public JWK (without kid).
func (k *Key) ProofHeader() map[string]any {
	jwk := k.JWK()
	delete(jwk, "kid")
	return map[string]any{"typ": "dpop+jwt", "alg": k.Alg, "jwk": jwk}
}

// ProofClaims is the payload of a proof for a request (method, uri) with
// token, made at `at` with a new jti, changed by name/value pairs (a value
// of Absent removes the claim).
func ProofClaims(token, method, uri string, at time.Time, kv ...any) map[string]any {
	m := map[string]any{"jti": JTI(), "htm": method, "htu": uri, "iat": at.Unix(), "ath": ATH(token)}
	return set(m, kv)
}

// Proof is a DPoP proof signed by k for a request (method, uri) with token,
// made at `at` with a new jti; kv change its claims as ProofClaims does.
func (k *Key) Proof(t testing.TB, token, method, uri string, at time.Time, kv ...any) string {
	t.Helper()
	return Sign(t, k.ProofHeader(), ProofClaims(token, method, uri, at, kv...), k.Alg, k.Priv)
}
