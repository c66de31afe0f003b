package client_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/testkit"
)

// proof is a DPoP proof as a verifier reads it, after its signature was
// checked with the jwk of its own header.
type proof struct {
	typ, alg string
	jwk      map[string]string
	claims   map[string]any
	// thumb is the RFC 7638 thumbprint of jwk, computed here.
	thumb string
	// sigLen is the length of the JWS signature.
	sigLen int
}

func unb64(t testing.TB, s string) []byte {
	t.Helper()
	b, err := decode64(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func decode64(s string) ([]byte, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not base64url without padding: %w", s, err)
	}
	return b, nil
}

// verifyProof checks a proof as a resource server would, with the standard
// library only: a compact JWS whose signature verifies with the public key
// in its header, which has no private member.
func verifyProof(t testing.TB, compact string) proof {
	t.Helper()
	p, err := parseProof(compact)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// parseProof is verifyProof for a handler, which may not stop the test.
func parseProof(compact string) (proof, error) {
	parts := strings.Split(compact, ".")
	if len(parts) != 3 {
		return proof{}, fmt.Errorf("proof has %d segments, want 3", len(parts))
	}
	var hdr struct {
		Typ string         `json:"typ"`
		Alg string         `json:"alg"`
		JWK map[string]any `json:"jwk"`
	}
	seg := make([][]byte, 3)
	for i, part := range parts {
		var err error
		if seg[i], err = decode64(part); err != nil {
			return proof{}, err
		}
	}
	if err := json.Unmarshal(seg[0], &hdr); err != nil {
		return proof{}, fmt.Errorf("header: %w", err)
	}
	p := proof{typ: hdr.Typ, alg: hdr.Alg, jwk: map[string]string{}, sigLen: len(seg[2])}
	for k, v := range hdr.JWK {
		s, ok := v.(string)
		if !ok {
			return proof{}, fmt.Errorf("jwk member %s is %T, want a string", k, v)
		}
		p.jwk[k] = s
	}
	for _, private := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, ok := p.jwk[private]; ok {
			return proof{}, fmt.Errorf("the proof's jwk carries the private member %q", private)
		}
	}
	if err := verifySig(p.alg, p.jwk, []byte(parts[0]+"."+parts[1]), seg[2]); err != nil {
		return proof{}, fmt.Errorf("%s signature does not verify with the header's jwk: %w", p.alg, err)
	}
	var err error
	if p.thumb, err = thumbprint(p.jwk); err != nil {
		return proof{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(seg[1]))
	dec.UseNumber()
	if err := dec.Decode(&p.claims); err != nil {
		return proof{}, fmt.Errorf("payload: %w", err)
	}
	return p, nil
}

func verifySig(alg string, jwk map[string]string, input, sig []byte) error {
	switch alg {
	case "ES256", "ES384", "ES512":
		curve, size, hash := map[string]elliptic.Curve{"ES256": elliptic.P256(), "ES384": elliptic.P384(), "ES512": elliptic.P521()}[alg],
			map[string]int{"ES256": 32, "ES384": 48, "ES512": 66}[alg], map[string]crypto.Hash{"ES256": crypto.SHA256, "ES384": crypto.SHA384, "ES512": crypto.SHA512}[alg]
		if jwk["kty"] != "EC" || jwk["crv"] != curve.Params().Name {
			return fmt.Errorf("jwk %v for %s", jwk, alg)
		}
		x, errX := decode64(jwk["x"])
		y, errY := decode64(jwk["y"])
		if err := errors.Join(errX, errY); err != nil {
			return err
		}
		if len(x) != size || len(y) != size {
			return fmt.Errorf("coordinates of %d and %d bytes, want %d each (RFC 7518 §6.2.1.2)", len(x), len(y), size)
		}
		pub, err := ecdsa.ParseUncompressedPublicKey(curve, append(append([]byte{4}, x...), y...))
		if err != nil {
			return err
		}
		if len(sig) != 2*size {
			return fmt.Errorf("signature of %d bytes, want r||s of %d (RFC 7518 §3.4, not ASN.1)", len(sig), 2*size)
		}
		h := hash.New()
		h.Write(input)
		if !ecdsa.Verify(pub, h.Sum(nil), new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])) {
			return errors.New("bad ECDSA signature")
		}
	case "EdDSA":
		x, err := decode64(jwk["x"])
		if err != nil || jwk["kty"] != "OKP" || jwk["crv"] != "Ed25519" || len(x) != ed25519.PublicKeySize {
			return fmt.Errorf("jwk %v for EdDSA", jwk)
		}
		if !ed25519.Verify(ed25519.PublicKey(x), input, sig) {
			return errors.New("bad Ed25519 signature")
		}
	case "PS256":
		n, errN := decode64(jwk["n"])
		e, errE := decode64(jwk["e"])
		if jwk["kty"] != "RSA" || errN != nil || errE != nil || len(e) > 4 {
			return fmt.Errorf("jwk %v for PS256", jwk)
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		sum := sha256.Sum256(input)
		return rsa.VerifyPSS(pub, crypto.SHA256, sum[:], sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
	default:
		return fmt.Errorf("alg %q", alg)
	}
	return nil
}

// thumbprint is RFC 7638's, written out member by member as §3.2 lists them.
func thumbprint(jwk map[string]string) (string, error) {
	var canon string
	switch jwk["kty"] {
	case "EC":
		canon = fmt.Sprintf(`{"crv":%q,"kty":"EC","x":%q,"y":%q}`, jwk["crv"], jwk["x"], jwk["y"])
	case "OKP":
		canon = fmt.Sprintf(`{"crv":%q,"kty":"OKP","x":%q}`, jwk["crv"], jwk["x"])
	case "RSA":
		canon = fmt.Sprintf(`{"e":%q,"kty":"RSA","n":%q}`, jwk["e"], jwk["n"])
	default:
		return "", fmt.Errorf("kty %q", jwk["kty"])
	}
	sum := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(sum[:]), nil
}

func (p proof) str(claim string) string {
	s, _ := p.claims[claim].(string)
	return s
}

func (p proof) iat(t testing.TB) int64 {
	t.Helper()
	v, err := p.iatErr()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func (p proof) iatErr() (int64, error) {
	n, ok := p.claims["iat"].(json.Number)
	if !ok {
		return 0, fmt.Errorf("iat is %T %v, want a number", p.claims["iat"], p.claims["iat"])
	}
	return n.Int64()
}

func ath(token string) string {
	sum := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// rfc7638Key signs nothing: its Public is the RSA key of RFC 7638 §3.1.
type rfc7638Key struct{}

func (rfc7638Key) Public() crypto.PublicKey {
	n := "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
	b, _ := base64.RawURLEncoding.DecodeString(n)
	return &rsa.PublicKey{N: new(big.Int).SetBytes(b), E: 65537}
}

func (rfc7638Key) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, errors.New("the RFC 7638 example key has no private part here")
}

func TestDPoPSigner_ThumbprintIsRFC7638s(t *testing.T) {
	s, err := client.NewDPoPSigner(rfc7638Key{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := s.Thumbprint(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"; got != want {
		t.Errorf("thumbprint of RFC 7638 §3.1's key = %s, want %s", got, want)
	}
	if _, err := s.Proof("POST", "https://api.example.com/x", ""); err == nil || !strings.Contains(err.Error(), "PS256") {
		t.Errorf("a signer that cannot sign: %v, want the error naming the algorithm", err)
	}
}

func signerKeys(t testing.TB) map[string]crypto.Signer {
	t.Helper()
	ec := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]crypto.Signer{"ES256": ec(elliptic.P256()), "ES384": ec(elliptic.P384()), "ES512": ec(elliptic.P521()), "EdDSA": ed, "PS256": rk}
}

// TestDPoPSigner_ProofsVerify: for every key type, the proof is a dpop+jwt
// whose signature verifies with its own public jwk, whose thumbprint is the
// signer's, with htm, htu (no query or fragment), iat of the clock, a fresh
// 128-bit jti, and ath when a token is given.
func TestDPoPSigner_ProofsVerify(t *testing.T) {
	clock := testkit.NewClock()
	for alg, key := range signerKeys(t) {
		t.Run(alg, func(t *testing.T) {
			s, err := client.NewDPoPSigner(key, client.WithProofClock(clock.Now))
			if err != nil {
				t.Fatal(err)
			}
			if s.Algorithm() != alg {
				t.Fatalf("Algorithm() = %s, want %s", s.Algorithm(), alg)
			}
			jtis := map[string]bool{}
			for i, tok := range []string{"an.access.token", ""} {
				clock.Advance(time.Second)
				raw, err := s.Proof("POST", "https://api.example.com/billing.v1.Invoices/Get?x=1&y=2#frag", tok)
				if err != nil {
					t.Fatal(err)
				}
				p := verifyProof(t, raw)
				if p.typ != "dpop+jwt" || p.alg != alg {
					t.Errorf("header typ %q alg %q, want dpop+jwt %s", p.typ, p.alg, alg)
				}
				if p.thumb != s.Thumbprint() {
					t.Errorf("thumbprint of the header's jwk %s, Thumbprint() %s", p.thumb, s.Thumbprint())
				}
				if p.str("htm") != "POST" || p.str("htu") != "https://api.example.com/billing.v1.Invoices/Get" {
					t.Errorf("htm %q htu %q", p.str("htm"), p.str("htu"))
				}
				if got := p.iat(t); got != clock.Now().Unix() {
					t.Errorf("iat %d, want the clock's %d", got, clock.Now().Unix())
				}
				if jti := p.str("jti"); len(unb64(t, jti)) != 16 || jtis[jti] {
					t.Errorf("proof %d: jti %q is not a fresh 128-bit base64url value", i, jti)
				} else {
					jtis[jti] = true
				}
				_, hasATH := p.claims["ath"]
				if tok != "" && p.str("ath") != ath(tok) || tok == "" && hasATH {
					t.Errorf("token %q: ath %v", tok, p.claims["ath"])
				}
			}
		})
	}
}

// TestDPoPSigner_FixedLengthCoordinates: an EC coordinate with leading zero
// bytes keeps them (RFC 7518 §6.2.1.2); a minimal big-endian encoding would
// change the thumbprint and break the binding for about 1 key in 128.
func TestDPoPSigner_FixedLengthCoordinates(t *testing.T) {
	for i := 0; i < 20000; i++ {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pt, _ := k.PublicKey.Bytes()
		if pt[1] != 0 && pt[33] != 0 {
			continue
		}
		s, err := client.NewDPoPSigner(k)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := s.Proof("GET", "https://api.example.com/", "")
		if err != nil {
			t.Fatal(err)
		}
		p := verifyProof(t, raw) // fails on coordinates that are not 32 bytes
		if p.thumb != s.Thumbprint() {
			t.Errorf("thumbprint %s, computed from the jwk %s", s.Thumbprint(), p.thumb)
		}
		return
	}
	t.Fatal("no P-256 key with a leading zero byte in 20000: the test did not test")
}

func TestDPoPSigner_RefusesWhatItCannotSignWith(t *testing.T) {
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	for name, key := range map[string]crypto.Signer{"P-224": p224, "RSA 1024": small, "nil": nil} {
		if _, err := client.NewDPoPSigner(key); err == nil {
			t.Errorf("%s key accepted", name)
		}
	}
	s, err := client.NewDPoPSigner(signerKeys(t)["ES256"])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ method, uri string }{{"", "https://api.example.com/"}, {"POST", "/relative/path"}, {"POST", "api.example.com/x"}, {"POST", "https://api.example.com/%zz"}} {
		if _, err := s.Proof(tc.method, tc.uri, ""); err == nil {
			t.Errorf("Proof(%q, %q) made a proof", tc.method, tc.uri)
		}
	}
}
