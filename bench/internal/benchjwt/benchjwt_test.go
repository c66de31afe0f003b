package benchjwt

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
)

func TestSignAndCorrupt(t *testing.T) {
	_, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s := Signer{Alg: "EdDSA", Kid: "ed-1", Priv: priv}
	claims := map[string]any{"iss": Issuer, "jti": "x"}
	tok, err := Sign(s, claims, false)
	if err != nil {
		t.Fatal(err)
	}
	verifies := func(tok string) bool {
		i := strings.LastIndexByte(tok, '.')
		sig, err := base64.RawURLEncoding.DecodeString(tok[i+1:])
		if err != nil {
			t.Fatal(err)
		}
		return ed25519.Verify(priv.Public().(ed25519.PublicKey), []byte(tok[:i]), sig)
	}
	if !verifies(tok) {
		t.Fatal("a signed token does not verify")
	}
	bad, err := CorruptSignature(tok)
	if err != nil {
		t.Fatal(err)
	}
	if verifies(bad) {
		t.Fatal("a corrupted token verifies")
	}
	// Ed25519 is deterministic: corrupting after signing is Sign(..., true).
	if want, _ := Sign(s, claims, true); bad != want {
		t.Fatalf("CorruptSignature = %s, Sign(corrupt) = %s", bad, want)
	}
	header, _ := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if got := string(header); got != `{"alg":"EdDSA","kid":"ed-1","typ":"at+jwt"}` {
		t.Fatalf("header %s", got)
	}
}
