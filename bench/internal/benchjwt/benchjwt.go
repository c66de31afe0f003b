// Package benchjwt signs the benchmark's tokens: compact JWS with the
// header alg, kid, typ at+jwt, shared by benchtokens (the data files) and
// benchcheck flood (tokens made on the fly).
package benchjwt

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"math/big"
)

// Issuer is the iss of every token and the issuer of the configuration.
const Issuer = "https://bench.usher.test/"

// Signer is one key of the benchmark's key set.
type Signer struct {
	Alg, Kid string
	Priv     crypto.Signer
}

// Sign returns a compact JWS of claims; corrupt flips a bit of the
// signature, keeping its encoding canonical.
func Sign(s Signer, claims any, corrupt bool) (string, error) {
	// A struct keeps the header's member order alg, kid, typ.
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{s.Alg, s.Kid, "at+jwt"})
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding
	input := b64.EncodeToString(header) + "." + b64.EncodeToString(payload)
	var sig []byte
	switch k := s.Priv.(type) {
	case *rsa.PrivateKey:
		h := sha256.Sum256([]byte(input))
		sig, err = rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, h[:])
	case *ecdsa.PrivateKey:
		h := sha256.Sum256([]byte(input))
		var r, ss *big.Int
		r, ss, err = ecdsa.Sign(rand.Reader, k, h[:])
		if err == nil {
			// JWS ES256: r and s as two 32-byte big-endian integers (RFC 7518 §3.4).
			sig = make([]byte, 64)
			r.FillBytes(sig[:32])
			ss.FillBytes(sig[32:])
		}
	case ed25519.PrivateKey:
		sig = ed25519.Sign(k, []byte(input))
	default:
		err = fmt.Errorf("unsupported key %T", s.Priv)
	}
	if err != nil {
		return "", err
	}
	if corrupt {
		sig[len(sig)/2] ^= 0x01
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// CorruptSignature returns tok with one bit of its signature flipped, as
// Sign(..., true) would have: a token whose signature no longer verifies.
func CorruptSignature(tok string) (string, error) {
	i := len(tok) - 1
	for i >= 0 && tok[i] != '.' {
		i--
	}
	if i < 0 {
		return "", fmt.Errorf("not a compact JWS")
	}
	b64 := base64.RawURLEncoding
	sig, err := b64.DecodeString(tok[i+1:])
	if err != nil || len(sig) == 0 {
		return "", fmt.Errorf("signature: %v", err)
	}
	sig[len(sig)/2] ^= 0x01
	return tok[:i+1] + b64.EncodeToString(sig), nil
}
