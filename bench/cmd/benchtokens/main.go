// Command benchtokens writes the inputs of the ghz benchmark: a key set, an
// usher configuration that trusts it, and ghz data files of signed tokens.
//
//	benchtokens -out DIR [-port 50051] [-n 2000] [-warm 0] [-cache-entries 0] [-cache-bytes 0]
//
// Files written to DIR:
//
//	jwks.json            public keys rs-1 (RS256), es-1 (ES256), ed-1 (EdDSA)
//	usher.yaml           listen 127.0.0.1:PORT, one issuer with jwks_file, two audiences,
//	                     and the cache bounds when -cache-entries / -cache-bytes are given
//	repeated.json        one valid RS256 token
//	distinct-rs256.json  N valid RS256 tokens, each with its own jti
//	distinct-es256.json  N valid ES256 tokens
//	distinct-eddsa.json  N valid EdDSA tokens
//	mix.json             N RS256 entries: 80 % valid, 10 % wrong audience, 5 % expired, 5 % bad signature
//	hitmiss.json         N RS256 entries: every other one the token of repeated.json (a cache hit once
//	                     seen), the others distinct tokens
//	warm.json            -warm valid RS256 tokens of their own, to fill usher's cache before a run
//	expected.json        for each data file, the reason usher must answer for each entry
//	ed25519.seed         the EdDSA key's seed (hex), for benchcheck flood
//	opa.rego             an OPA policy: data.usher.bench.allow, io.jwt.decode_verify over the same JWKS
//	opa-data.json        the JWKS as the string data.usher_bench.jwks, for opa.rego
//
// Every data file is a JSON array of {"token", "expected_audience"} objects,
// which ghz sends in turn. To keep the RSA signing short, mix.json and
// hitmiss.json reuse the tokens of distinct-rs256.json (a wrong-audience entry
// is a valid token checked for the other API, a bad signature one with a bit
// of its signature flipped; only the expired ones are signed anew): the kit
// sends each file to a server process of its own, which has seen none of them.
package main

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
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

	"github.com/usher-dev/usher/bench/internal/benchjwt"
)

// Issuer is the iss of every token and the issuer of the configuration.
const Issuer = benchjwt.Issuer

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

type signer = benchjwt.Signer

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
	n := flag.Int("n", 2000, "tokens in each distinct-*.json, entries in mix.json and hitmiss.json")
	warm := flag.Int("warm", 0, "tokens in warm.json (0: no warm.json)")
	var o options
	flag.IntVar(&o.cacheEntries, "cache-entries", 0, "cache_max_entries in usher.yaml (0: not set, usher's default)")
	flag.Int64Var(&o.cacheBytes, "cache-bytes", 0, "cache_max_bytes in usher.yaml (0: not set, usher's default)")
	flag.Parse()
	o.warm = *warm
	if err := run(*out, *port, *n, o); err != nil {
		fmt.Fprintln(os.Stderr, "benchtokens:", err)
		os.Exit(1)
	}
}

// options are benchtokens' optional outputs.
type options struct {
	warm         int
	cacheEntries int
	cacheBytes   int64
}

func run(out string, port, n int, o options) error {
	if out == "" {
		return errors.New("-out DIR is required")
	}
	if port < 1 || port > 65535 {
		return fmt.Errorf("-port %d is not a TCP port", port)
	}
	if n < 1 {
		return fmt.Errorf("-n %d: want at least 1", n)
	}
	if o.warm < 0 || o.cacheEntries < -1 || o.cacheBytes < 0 {
		return errors.New("-warm, -cache-entries and -cache-bytes: want a count (-cache-entries -1: cache off)")
	}
	dir, err := filepath.Abs(out)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	rs, es, ed, err := writeKeys(dir, port, o)
	if err != nil {
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
		{"warm.json", rs, func(int) kind { return valid }, o.warm},
	}
	signed := map[string][]Request{}
	for _, f := range files {
		if f.count == 0 {
			continue
		}
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
		signed[f.name] = reqs
	}
	distinct, repeated := signed["distinct-rs256.json"], signed["repeated.json"][0]

	if err := writeMixes(dir, rs, distinct, repeated, now, expected); err != nil {
		return err
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

// sign returns a compact JWS of claims (see benchjwt.Sign).
func sign(s signer, claims map[string]any, corrupt bool) (string, error) {
	return benchjwt.Sign(s, claims, corrupt)
}

// jwks is the public JSON Web Key Set of the signers (RFC 7517, RFC 8037).
func jwks(signers ...signer) map[string]any {
	b64 := base64.RawURLEncoding
	keys := make([]map[string]any, 0, len(signers))
	for _, s := range signers {
		k := map[string]any{"kid": s.Kid, "alg": s.Alg, "use": "sig"}
		switch p := s.Priv.Public().(type) {
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
func config(port int, jwksPath string, o options) string {
	q := func(s string) string { b, _ := json.Marshal(s); return string(b) } // a JSON string is a YAML string
	cfg := fmt.Sprintf("listen: %s\nmax_in_flight: 100000\nissuers:\n  - issuer: %s\n    jwks_file: %s\n    token_type: \"at+jwt\"\naudiences:\n",
		q(fmt.Sprintf("127.0.0.1:%d", port)), q(Issuer), q(jwksPath))
	for _, a := range audiences {
		cfg += fmt.Sprintf("  - audience: %s\n    name: %s\n", q(a.aud), q(a.name))
	}
	if o.cacheEntries != 0 {
		cfg += fmt.Sprintf("cache_max_entries: %d\n", o.cacheEntries)
	}
	if o.cacheBytes != 0 {
		cfg += fmt.Sprintf("cache_max_bytes: %d\n", o.cacheBytes)
	}
	return cfg
}

// opaPolicy is what a user of OPA would deploy for the same check: the
// signature against the issuer's JWKS (RS256 only), iss, the audience asked
// for, exp and nbf at the current time, and typ at+jwt, which usher checks too.
const opaPolicy = `package usher.bench

default allow := false

allow if {
	[valid, header, _] := io.jwt.decode_verify(input.token, {
		"cert": data.usher_bench.jwks,
		"alg": "RS256",
		"iss": %s,
		"aud": input.expected_audience,
		"time": time.now_ns(),
	})
	valid
	header.typ == "at+jwt"
}
`

// writeOPA writes opa.rego and opa-data.json, which holds the JWKS as a
// string, the form io.jwt.decode_verify's "cert" takes.
func writeOPA(dir, jwksPath string) error {
	set, err := os.ReadFile(jwksPath)
	if err != nil {
		return err
	}
	iss, _ := json.Marshal(Issuer)
	if err := os.WriteFile(filepath.Join(dir, "opa.rego"), fmt.Appendf(nil, opaPolicy, iss), 0o644); err != nil {
		return err
	}
	return writeJSON(filepath.Join(dir, "opa-data.json"), map[string]any{"usher_bench": map[string]string{"jwks": string(set)}})
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

// writeKeys generates the three signing keys and writes jwks.json,
// usher.yaml, ed25519.seed and OPA's policy and data into dir.
func writeKeys(dir string, port int, o options) (rs, es, ed signer, err error) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return rs, es, ed, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return rs, es, ed, err
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return rs, es, ed, err
	}
	rs = signer{Alg: "RS256", Kid: "rs-1", Priv: rsaKey}
	es = signer{Alg: "ES256", Kid: "es-1", Priv: ecKey}
	ed = signer{Alg: "EdDSA", Kid: "ed-1", Priv: edKey}

	jwksPath := filepath.Join(dir, "jwks.json")
	if err := writeJSON(jwksPath, jwks(rs, es, ed)); err != nil {
		return rs, es, ed, err
	}
	if err := os.WriteFile(filepath.Join(dir, "usher.yaml"), []byte(config(port, jwksPath, o)), 0o644); err != nil {
		return rs, es, ed, err
	}
	if err := os.WriteFile(filepath.Join(dir, "ed25519.seed"), []byte(hex.EncodeToString(edKey.Seed())+"\n"), 0o600); err != nil {
		return rs, es, ed, err
	}
	if err := writeOPA(dir, jwksPath); err != nil {
		return rs, es, ed, err
	}

	return rs, es, ed, nil
}

// writeMixes writes mix.json (distinct RS256 tokens, some turned into
// rejections) and hitmiss.json (the repeated token and distinct ones,
// alternately), and records their expected verdicts.
func writeMixes(dir string, rs signer, distinct []Request, repeated Request, now time.Time, expected map[string][]string) error {
	n := len(distinct)
	// mix.json: the i-th entry is made of distinct-rs256.json's i-th token.
	mix := make([]Request, n)
	mixWant := make([]string, n)
	err := parallel(n, func(i int) error {
		k := mixPattern[i%len(mixPattern)]
		r := distinct[i]
		var err error
		switch k {
		case wrongAudience:
			r.ExpectedAudience = audiences[(i+1)%len(audiences)].aud
		case badSignature:
			r.Token, err = benchjwt.CorruptSignature(r.Token)
		case expired:
			r, err = request(rs, expired, i, now)
		}
		mix[i], mixWant[i] = r, reasons[k]
		return err
	})
	if err != nil {
		return fmt.Errorf("mix.json: %w", err)
	}
	if err := writeJSON(filepath.Join(dir, "mix.json"), mix); err != nil {
		return err
	}
	expected["mix.json"] = mixWant

	// hitmiss.json: the repeated token and distinct tokens, alternately.
	hitmiss := make([]Request, n)
	hitmissWant := make([]string, n)
	for i := range hitmiss {
		if i%2 == 0 {
			hitmiss[i] = repeated
		} else {
			hitmiss[i] = distinct[i/2]
		}
		hitmissWant[i] = reasons[valid]
	}
	if err := writeJSON(filepath.Join(dir, "hitmiss.json"), hitmiss); err != nil {
		return err
	}
	expected["hitmiss.json"] = hitmissWant
	return nil
}
