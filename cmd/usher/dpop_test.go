package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// runCmdIO runs one command in process with stdin and returns stdout,
// stderr and its error.
func runCmdIO(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, strings.NewReader(stdin), &out, &errOut)
	return out.String(), errOut.String(), err
}

// jkt is the RFC 7638 thumbprint of pub as jwx computes it: another
// implementation than the client's signer that the CLI uses.
func jkt(t *testing.T, pub crypto.PublicKey) string {
	t.Helper()
	k, err := jwk.Import(pub)
	if err != nil {
		t.Fatal(err)
	}
	tp, err := k.Thumbprint(crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(tp)
}

// payloadOf decodes the payload of a compact JWS.
func payloadOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(strings.TrimSpace(tok), ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %q", tok)
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// writeKeyFile writes body to dir/name, readable by its owner only.
func writeKeyFile(t *testing.T, dir, name string, body []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, body, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func pemFile(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	return writeKeyFile(t, dir, name, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
}

func pkcs8(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestDPoPKey_Formats: the key files usher mint --dpop-key and usher proof
// --key read, each bound to the thumbprint of its public key, and the files
// they refuse with a reason.
func TestDPoPKey_Formats(t *testing.T) {
	dir := t.TempDir()
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	sec1, err := x509.MarshalECPrivateKey(p384)
	if err != nil {
		t.Fatal(err)
	}
	privJWK, err := jwk.Import(p256)
	if err != nil {
		t.Fatal(err)
	}
	jwkJSON, _ := json.Marshal(privJWK)
	pubJWK, _ := privJWK.PublicKey()
	pubJWKJSON, _ := json.Marshal(pubJWK)
	pubDER, _ := x509.MarshalPKIXPublicKey(&p256.PublicKey)

	for _, tc := range []struct {
		name, file, alg string
		pub             crypto.PublicKey
	}{
		{"PKCS#8 P-256", pemFile(t, dir, "p256.pem", "PRIVATE KEY", pkcs8(t, p256)), "ES256", &p256.PublicKey},
		{"SEC 1 P-384", pemFile(t, dir, "p384.pem", "EC PRIVATE KEY", sec1), "ES384", &p384.PublicKey},
		{"PKCS#8 Ed25519", pemFile(t, dir, "ed.pem", "PRIVATE KEY", pkcs8(t, ed)), "EdDSA", ed.Public()},
		{"PKCS#1 RSA", pemFile(t, dir, "rsa.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), "PS256", &rsaKey.PublicKey},
		{"JWK P-256", writeKeyFile(t, dir, "p256.jwk", jwkJSON), "ES256", &p256.PublicKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, created, err := dpopSigner(tc.file, true)
			if err != nil || created {
				t.Fatalf("dpopSigner: created %v, %v", created, err)
			}
			if s.Thumbprint() != jkt(t, tc.pub) || s.Algorithm() != tc.alg {
				t.Errorf("thumbprint %s alg %s, want %s %s", s.Thumbprint(), s.Algorithm(), jkt(t, tc.pub), tc.alg)
			}
		})
	}

	for _, tc := range []struct{ name, file, want string }{
		{"public key PEM", pemFile(t, dir, "pub.pem", "PUBLIC KEY", pubDER), "holds a PUBLIC KEY"},
		{"encrypted", pemFile(t, dir, "enc.pem", "ENCRYPTED PRIVATE KEY", []byte{1}), "encrypted"},
		{"public JWK", writeKeyFile(t, dir, "pub.jwk", pubJWKJSON), "public (or symmetric) key"},
		{"garbage", writeKeyFile(t, dir, "junk", []byte("hello")), "no PEM private key"},
		{"huge", writeKeyFile(t, dir, "huge", bytes.Repeat([]byte("A"), maxKeyFileBytes+1)), "over 64 KiB"},
		{"P-224", pemFile(t, dir, "p224.pem", "PRIVATE KEY", pkcs8(t, func() *ecdsa.PrivateKey { k, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader); return k }())), "P-224"},
	} {
		t.Run("refuses "+tc.name, func(t *testing.T) {
			_, _, err := dpopSigner(tc.file, true)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.file) {
				t.Errorf("err = %v, want one naming the file and saying %q", err, tc.want)
			}
		})
	}
}

// TestProof_Command: usher proof prints one fresh proof (RFC 9449 §4.2)
// that verifies with the jwk it carries, for the method and URI given,
// bound to the token by ath.
func TestProof_Command(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	file := pemFile(t, dir, "k.pem", "PRIVATE KEY", pkcs8(t, key))
	const token = "the.access.token"
	before := time.Now().Unix()
	out, _, err := runCmdIO(t, "", "proof", "--key", file, "--method", "GET", "--uri", "https://api.example.com/invoices?page=2#top", "--token", token)
	if err != nil {
		t.Fatal(err)
	}
	proof := strings.TrimSpace(out)
	msg, err := jws.Parse([]byte(proof))
	if err != nil {
		t.Fatal(err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	typ, _ := hdr.Type()
	alg, _ := hdr.Algorithm()
	pub, ok := hdr.JWK()
	if typ != "dpop+jwt" || alg != jwa.ES256() || !ok {
		t.Fatalf("header typ %q alg %v jwk %v", typ, alg, ok)
	}
	if priv, _ := jwk.IsPrivateKey(pub); priv {
		t.Fatal("the proof carries the private key")
	}
	if _, err := jws.Verify([]byte(proof), jws.WithKey(jwa.ES256(), pub)); err != nil {
		t.Errorf("the proof does not verify with its jwk: %v", err)
	}
	if tp, _ := pub.Thumbprint(crypto.SHA256); base64.RawURLEncoding.EncodeToString(tp) != jkt(t, &key.PublicKey) {
		t.Error("the proof's jwk is not the key in the file")
	}
	c := payloadOf(t, proof)
	sum := sha256.Sum256([]byte(token))
	iat, _ := c["iat"].(float64)
	if c["htm"] != "GET" || c["htu"] != "https://api.example.com/invoices" || c["ath"] != base64.RawURLEncoding.EncodeToString(sum[:]) ||
		int64(iat) < before || int64(iat) > time.Now().Unix() || c["jti"] == "" {
		t.Errorf("payload %v", c)
	}

	again, _, err := runCmdIO(t, token+"\n", "proof", "--key", file, "--method", "GET", "--uri", "https://api.example.com/invoices", "--token", "-")
	if err != nil {
		t.Fatal(err)
	}
	if c2 := payloadOf(t, again); c2["jti"] == c["jti"] || c2["ath"] != c["ath"] {
		t.Errorf("a second proof, token on stdin: jti %v (first %v), ath %v", c2["jti"], c["jti"], c2["ath"])
	}

	var ue usageError
	if _, _, err := runCmdIO(t, "", "proof", "--key", file, "--uri", "https://x/y"); !errors.As(err, &ue) {
		t.Errorf("no --method: %v, want a usage error", err)
	}
	missing := filepath.Join(dir, "missing.pem")
	if _, _, err := runCmdIO(t, "", "proof", "--key", missing, "--method", "GET", "--uri", "https://x/y"); err == nil || !strings.Contains(err.Error(), "usher mint --dpop-key "+missing) {
		t.Errorf("no key file: %v, want a pointer to usher mint --dpop-key", err)
	}
	if _, err := os.Stat(missing); !errors.Is(err, os.ErrNotExist) {
		t.Error("usher proof created a key: only usher mint --dpop-key does, as it binds a token to it")
	}
	if _, _, err := runCmdIO(t, "", "proof", "--key", file, "--method", "GET", "--uri", "/relative"); err == nil || !strings.Contains(err.Error(), "absolute") {
		t.Errorf("a relative URI: %v", err)
	}
}

func TestValidate_ProofNeedsItsRequest(t *testing.T) {
	var ue usageError
	_, _, err := runCmdIO(t, "", "validate", "--audience", "api/users", "--dpop-proof", "a.b.c", "--method", "GET", "TOKEN")
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "--uri") {
		t.Errorf("--dpop-proof without --uri: %v, want a usage error", err)
	}
}

// TestDev_DPoP tells the DPoP story with the CLI against usher dev in
// process: the banner's hint, usher mint --dpop-key creating the key,
// the token's cnf.jkt, usher proof, and usher validate's verdicts for the
// token with its proof, as Bearer, and with a proof for another URI.
func TestDev_DPoP(t *testing.T) {
	b, banner, _, _ := startDevInProcess(t)
	if !strings.Contains(banner, "--dpop-key dpop.pem") || !strings.Contains(banner, "usher proof --key dpop.pem") {
		t.Errorf("the banner does not say how to get a DPoP-bound token:\n%s", banner)
	}
	key := filepath.Join(t.TempDir(), "dpop.pem")
	tok, stderr, err := runCmdIO(t, "", "mint", "--addr", b.addr, "--audience", "api/invoices", "--scope", "invoices.read", "--dpop-key", key)
	if err != nil {
		t.Fatalf("mint --dpop-key: %v\n%s", err, stderr)
	}
	tok = strings.TrimSpace(tok)
	st, err := os.Stat(key)
	if err != nil || st.Mode().Perm() != 0o600 || !strings.Contains(stderr, "created "+key) {
		t.Fatalf("key file: %v %v; stderr %q", st, err, stderr)
	}
	signer, _, err := dpopSigner(key, false)
	if err != nil {
		t.Fatal(err)
	}
	cnf, _ := payloadOf(t, tok)["cnf"].(map[string]any)
	if len(cnf) != 1 || cnf["jkt"] != signer.Thumbprint() {
		t.Fatalf("cnf %v, want {jkt: %s}", cnf, signer.Thumbprint())
	}
	tok2, stderr, err := runCmdIO(t, "", "mint", "--addr", b.addr, "--audience", "api/invoices", "--dpop-key", key)
	if err != nil || stderr != "" || payloadOf(t, tok2)["cnf"].(map[string]any)["jkt"] != signer.Thumbprint() {
		t.Errorf("a second mint with the same key: %v, stderr %q", err, stderr)
	}

	const uri = "https://invoices.example/invoices"
	validate := func(t *testing.T, args ...string) (string, error) {
		t.Helper()
		out, _, err := runCmdIO(t, "", append([]string{"validate", "--addr", b.addr, "--audience", "api/invoices"}, args...)...)
		return out, err
	}
	proof := func(t *testing.T, u string) string {
		t.Helper()
		out, _, err := runCmdIO(t, "", "proof", "--key", key, "--method", "GET", "--uri", u, "--token", tok)
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	t.Run("with its proof: VALID, cnf shown", func(t *testing.T) {
		out, err := validate(t, "--dpop-proof", proof(t, uri), "--method", "GET", "--uri", uri, tok)
		if err != nil || !strings.HasPrefix(out, "VALID") || !strings.Contains(out, "cnf       jkt "+signer.Thumbprint()+" (DPoP-bound)") {
			t.Errorf("%v\n%s", err, out)
		}
	})
	t.Run("as Bearer: PROOF_MISSING", func(t *testing.T) {
		out, err := validate(t, tok)
		if !errors.Is(err, errNotValid) || !strings.HasPrefix(out, "PROOF_MISSING") {
			t.Errorf("%v\n%s", err, out)
		}
		out, err = validate(t, "--scheme", "Bearer", "--dpop-proof", proof(t, uri), "--method", "GET", "--uri", uri, tok)
		if !errors.Is(err, errNotValid) || !strings.HasPrefix(out, "PROOF_MISSING") {
			t.Errorf("--scheme Bearer with a proof: %v\n%s", err, out)
		}
	})
	t.Run("a proof for another URI: INVALID_PROOF, expected and actual htu", func(t *testing.T) {
		out, err := validate(t, "--dpop-proof", proof(t, "https://users.example/users"), "--method", "GET", "--uri", uri, tok)
		if !errors.Is(err, errNotValid) || !strings.HasPrefix(out, "INVALID_PROOF") ||
			!strings.Contains(out, "expected htu: "+uri) || !strings.Contains(out, "actual   htu: https://users.example/users") {
			t.Errorf("%v\n%s", err, out)
		}
	})
	t.Run("over gRPC, the request fields", func(t *testing.T) {
		c, _ := dialUsher(t, b.addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/invoices", Scheme: "DPoP", DpopProof: proof(t, uri), HttpMethod: "GET", HttpUri: uri})
		if err != nil || !resp.GetValid() || resp.GetClaims().GetConfirmation().GetJkt() != signer.Thumbprint() {
			t.Errorf("%v %v", resp, err)
		}
	})
}

func TestMint_DPoPKeyRefusesAPublicKey(t *testing.T) {
	b, _, _, _ := startDevInProcess(t)
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	file := pemFile(t, t.TempDir(), "pub.pem", "PUBLIC KEY", der)
	out, _, err := runCmdIO(t, "", "mint", "--addr", b.addr, "--audience", "api/users", "--dpop-key", file)
	if err == nil || out != "" || !strings.Contains(err.Error(), "not the private key") {
		t.Errorf("mint with a public key file: %v, stdout %q", err, out)
	}
}
