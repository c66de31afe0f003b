// Command benchtokens writes the inputs of the ghz benchmark: a key set, an
// usher configuration that trusts it, and ghz data files of signed tokens.
//
//	benchtokens -out DIR [-port 50051] [-n 2000]
//
// Files written to DIR:
//
//	jwks.json            public keys rs-1 (RS256), es-1 (ES256), ed-1 (EdDSA)
//	usher.yaml           listen 127.0.0.1:PORT, one issuer with jwks_file, two audiences
//	repeated.json        one valid RS256 token
//	distinct-rs256.json  N valid RS256 tokens, each with its own jti
//	distinct-es256.json  N valid ES256 tokens
//	distinct-eddsa.json  N valid EdDSA tokens
//	mix.json             N RS256 tokens: 80 % valid, 10 % wrong audience, 5 % expired, 5 % bad signature
//	expected.json        for each data file, the reason usher must answer for each entry
//
// Every data file is a JSON array of {"token", "expected_audience"} objects,
// which ghz sends in turn.
package main

import (
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
	"flag"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"time"
)

// Issuer is the iss of every token and the issuer of the configuration.
const Issuer = "https://bench.usher.test/"

// audiences are the registered APIs; valid tokens alternate between them.
var audiences = []struct{ aud, name, scope string }{
	{"api/users", "Users API", "users.read"},
	{"api/invoices", "Invoices API", "invoices.read"},
}

// Request is one entry of a ghz data file: a usher.v1.ValidateTokenRequest.
type Request struct {
	Token            string `json:"token"`
	ExpectedAudience string `json:"expected_audience"`
}

type signer struct {
	alg, kid string
	priv     crypto.Signer
}

// kind says what is wrong with a generated token, if anything.
type kind int

const (
	valid kind = iota
	wrongAudience
	expired
	badSignature
)

// reasons are the verdicts usher answers for each kind.
var reasons = map[kind]string{
	valid:         "REASON_VALID",
	wrongAudience: "REASON_AUDIENCE_MISMATCH",
	expired:       "REASON_EXPIRED",
	badSignature:  "REASON_INVALID_SIGNATURE",
}

// mixPattern is the composition of mix.json, repeated: out of 20 requests,
// 16 valid (80 %), 2 for the wrong audience (10 %), 1 expired (5 %) and one
// with a bad signature (5 %), spread so that any window of 20 has them all.
var mixPattern = [20]kind{
	valid, valid, valid, valid, wrongAudience,
	valid, valid, valid, valid, expired,
	valid, valid, valid, valid, wrongAudience,
	valid, valid, valid, valid, badSignature,
}

func main() {
	out := flag.String("out", "", "directory to write the files to (required; created if missing)")
	port := flag.Int("port", 50051, "port of usher's loopback listener in usher.yaml")
	n := flag.Int("n", 2000, "tokens in each distinct-*.json and in mix.json")
	flag.Parse()
	if err := run(*out, *port, *n); err != nil {
		fmt.Fprintln(os.Stderr, "benchtokens:", err)
		os.Exit(1)
	}
}

func run(out string, port, n int) error {
	if out == "" {
		return errors.New("-out DIR is required")
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("-port %d is not a TCP port", port)
	}
	if n < 1 {
		return fmt.Errorf("-n %d: want at least 1", n)
	}
	dir, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	rs := signer{"RS256", "rs-1", rsaKey}
	es := signer{"ES256", "es-1", ecKey}
	ed := signer{"EdDSA", "ed-1", edKey}

	jwksPath := filepath.Join(dir, "jwks.json")
	if err := writeJSON(jwksPath, jwks(rs, es, ed)); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "usher.yaml"), []byte(config(port, jwksPath)), 0o644); err != nil {
		return err
	}

	now := time.Now()
	expected := map[string][]string{}
	files := []struct {
		name  string
		s     signer
		kinds func(i int) kind
		count int
	}{
		{"repeated.json", rs, func(int) kind { return valid }, 1},
		{"distinct-rs256.json", rs, func(int) kind { return valid }, n},
		{"distinct-es256.json", es, func(int) kind { return valid }, n},
		{"distinct-eddsa.json", ed, func(int) kind { return valid }, n},
		{"mix.json", rs, func(i int) kind { return mixPattern[i%len(mixPattern)] }, n},
	}
	for _, f := range files {
		reqs := make([]Request, f.count)
		want := make([]string, f.count)
		err := parallel(f.count, func(i int) error {
			k := f.kinds(i)
			r, err := request(f.s, k, i, now)
			reqs[i], want[i] = r, reasons[k]
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: %w", f.name, err)
		}
		if err := writeJSON(filepath.Join(dir, f.name), reqs); err != nil {
			return err
		}
		expected[f.name] = want
	}
	return writeJSON(filepath.Join(dir, "expected.json"), expected)
}

// request returns the i-th request of a data file: a token of kind k and
// the audience to check it for.
func request(s signer, k kind, i int, now time.Time) (Request, error) {
	a := audiences[i%len(audiences)]
	expect := a.aud
	iat, exp := now, now.Add(2*time.Hour)
	switch k {
	case wrongAudience:
		expect = audiences[(i+1)%len(audiences)].aud
	case expired:
		iat, exp = now.Add(-3*time.Hour), now.Add(-time.Hour)
	}
	claims := map[string]any{
		"iss":   Issuer,
		"sub":   fmt.Sprintf("bench-client-%d", i%100),
		"aud":   a.aud,
		"scope": a.scope,
		"iat":   iat.Unix(),
		"exp":   exp.Unix(),
		"jti":   rand.Text(),
	}
	tok, err := sign(s, claims, k == badSignature)
	return Request{Token: tok, ExpectedAudience: expect}, err
}

// sign returns a compact JWS of claims; corrupt flips a bit of the
// signature, keeping its encoding canonical.
func sign(s signer, claims map[string]any, corrupt bool) (string, error) {
	// A struct keeps the header's member order alg, kid, typ.
	header, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{s.alg, s.kid, "at+jwt"})
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
	switch k := s.priv.(type) {
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
		err = fmt.Errorf("unsupported key %T", s.priv)
	}
	if err != nil {
		return "", err
	}
	if corrupt {
		sig[len(sig)/2] ^= 0x01
	}
	return input + "." + b64.EncodeToString(sig), nil
}

// jwks is the public JSON Web Key Set of the signers (RFC 7517, RFC 8037).
func jwks(signers ...signer) map[string]any {
	b64 := base64.RawURLEncoding
	keys := make([]map[string]any, 0, len(signers))
	for _, s := range signers {
		k := map[string]any{"kid": s.kid, "alg": s.alg, "use": "sig"}
		switch p := s.priv.Public().(type) {
		case *rsa.PublicKey:
			k["kty"] = "RSA"
			k["n"] = b64.EncodeToString(p.N.Bytes())
			k["e"] = b64.EncodeToString(big.NewInt(int64(p.E)).Bytes())
		case *ecdsa.PublicKey:
			b, err := p.Bytes() // 0x04 || X || Y, each 32 bytes for P-256
			if err != nil {
				panic(err)
			}
			k["kty"] = "EC"
			k["crv"] = "P-256"
			k["x"] = b64.EncodeToString(b[1:33])
			k["y"] = b64.EncodeToString(b[33:])
		case ed25519.PublicKey:
			k["kty"] = "OKP"
			k["crv"] = "Ed25519"
			k["x"] = b64.EncodeToString(p)
		}
		keys = append(keys, k)
	}
	return map[string]any{"keys": keys}
}

// config is usher's configuration for the benchmark.
func config(port int, jwksPath string) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // a JSON string is a YAML string
	cfg := fmt.Sprintf("listen: %s\nmax_in_flight: 100000\nissuers:\n  - issuer: %s\n    jwks_file: %s\n    token_type: \"at+jwt\"\naudiences:\n",
		q(fmt.Sprintf("127.0.0.1:%d", port)), q(Issuer), q(jwksPath))
	for _, a := range audiences {
		cfg += fmt.Sprintf("  - audience: %s\n    name: %s\n", q(a.aud), q(a.name))
	}
	return cfg
}

// parallel runs f(0..n-1) on every CPU and returns the first error.
func parallel(n int, f func(i int) error) error {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs error
	)
	workers := min(runtime.GOMAXPROCS(0), n)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				if err := f(i); err != nil {
					mu.Lock()
					errs = errors.Join(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	return errs
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
