package service_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// benchKeys are the keys of the benchmarks: one per algorithm family.
func benchKeys(b *testing.B) []*testkit.Key {
	return []*testkit.Key{testkit.RSAKey(b, "rsa"), testkit.ECKey(b, "ec", elliptic.P256()), testkit.EdKey(b, "ed")}
}

// BenchmarkValidateToken is the engine in process for one valid token:
// "uncached" parses and verifies the signature on every call (the cache is
// off), "hit" is a repeated token answered from the verified-token cache
// (time, audience and scope checks still run).
func BenchmarkValidateToken(b *testing.B) {
	keys := benchKeys(b)
	ti := testkit.NewIssuer(b, keys...)
	ctx := testkit.Context(b)
	for _, mode := range []struct {
		name    string
		entries int
	}{{"uncached", -1}, {"hit", 0}} {
		cfg := &service.Config{Issuers: []service.IssuerConfig{issuerConfig(ti, 0)}, Audiences: slices.Clone(testkit.Audiences), CacheMaxEntries: mode.entries}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		waitTried(ctx, b, v)
		for _, k := range keys {
			tok := k.Token(b, testkit.Claims(ti.URL()))
			if got := v.Validate(ctx, tok, "api/users", nil); got.Reason != service.ReasonValid {
				b.Fatalf("%s: %v %s", k.Alg, got.Reason, got.Message)
			}
			b.Run(k.Alg+"/"+mode.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					v.Validate(ctx, tok, "api/users", nil)
				}
			})
		}
	}
}

// BenchmarkFloor is the standard library's verification of the same tokens:
// the cost below which no validator can go.
func BenchmarkFloor(b *testing.B) {
	for _, k := range benchKeys(b) {
		tok := k.Token(b, testkit.Claims("https://issuer.example"))
		i := strings.LastIndexByte(tok, '.')
		input, sig := []byte(tok[:i]), mustDecode(b, tok[i+1:])
		b.Run(k.Alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ok := false
				switch p := k.Priv.Public().(type) {
				case *rsa.PublicKey:
					h := sha256.Sum256(input)
					ok = rsa.VerifyPKCS1v15(p, crypto.SHA256, h[:], sig) == nil
				case *ecdsa.PublicKey:
					h := sha256.Sum256(input)
					r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
					ok = ecdsa.Verify(p, h[:], r, s)
				case ed25519.PublicKey:
					ok = ed25519.Verify(p, input, sig)
				}
				if !ok {
					b.Fatal("floor: signature does not verify")
				}
			}
		})
	}
}

// BenchmarkInspectToken decodes and verifies a token and matches it against
// the audiences registry.
func BenchmarkInspectToken(b *testing.B) {
	k := testkit.RSAKey(b, "rsa")
	ti := testkit.NewIssuer(b, k)
	ctx := testkit.Context(b)
	v := newValidator(b, ctx, issuerConfig(ti, 0))
	waitTried(ctx, b, v)
	tok := k.Token(b, testkit.Claims(ti.URL()))
	if in := v.Inspect(ctx, tok); in.Signature != service.ReasonValid {
		b.Fatal(in.Message)
	}
	b.ReportAllocs()
	for b.Loop() {
		v.Inspect(ctx, tok)
	}
}

// BenchmarkHostile is the cost of refusing the bombs of
// TestHostile_SizeAndDepth: a 1 MiB token at the default max_token_bytes
// (refused by its length), and at the largest max_token_bytes the config
// allows a million dots (refused by the segment count), JSON nested 20,000
// deep and an aud of 200,000 entries (refused by the parser's depth and
// value-count limits). Compare with BenchmarkFloor, the cost of one
// signature verification. The *-21-issuers cases are the cost of hints
// (benchHintCost).
func BenchmarkHostile(b *testing.B) {
	ctx := testkit.Context(b)
	k := testkit.EdKey(b, "ed")
	const iss = "https://bench.usher.test"
	validator := func(maxTokenBytes int) *service.Validator {
		cfg := &service.Config{MaxTokenBytes: maxTokenBytes, Issuers: []service.IssuerConfig{{Issuer: iss, JWKSFile: testkit.WriteJWKS(b, k)}}}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		waitTried(ctx, b, v)
		return v
	}
	byDefault, at1MiB := validator(0), validator(1<<20)
	ed := func(payload string) string {
		return testkit.Sign(b, map[string]any{"alg": "EdDSA", "kid": "ed"}, []byte(payload), "EdDSA", k.Priv)
	}
	claims := strings.TrimSuffix(mustJSON(b, testkit.Claims(iss)), "}")
	for _, c := range []struct {
		name  string
		v     *service.Validator
		token string
	}{
		{"1 MiB token", byDefault, testkit.Segment(b, map[string]any{"alg": "EdDSA"}) + "." + strings.Repeat("A", 1<<20) + ".AAAA"},
		{"a million dots, 1 MiB limit", at1MiB, strings.Repeat(".", 1_000_000)},
		{"20,000-deep JSON, 1 MiB limit", at1MiB, ed(claims + `,"x":` + strings.Repeat("[", 20_000) + strings.Repeat("]", 20_000) + `}`)},
		{"200,000-entry aud, 1 MiB limit", at1MiB, k.Token(b, testkit.Claims(iss, "aud", make([]string, 200_000)))},
	} {
		if len(c.token) > 1<<20 && c.v == at1MiB {
			b.Fatalf("%s: %d bytes, over the limit it is meant to be parsed under", c.name, len(c.token))
		}
		if got := c.v.Validate(ctx, c.token, "api/users", nil); got.Reason != service.ReasonMalformed {
			b.Fatalf("%s: %v %s", c.name, got.Reason, got.Message)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(c.token)))
			for b.Loop() {
				c.v.Validate(ctx, c.token, "api/users", nil)
			}
		})
	}
	benchHintCost(b)
}

// benchHintCost is the cost of a hint under 21 trusted issuers: a forged
// token whose iss is short and untrusted, against one whose iss is as much
// "e"+U+0301 as fits under max_token_bytes (each near-miss check normalizes
// it), and one of the same size whose short iss comes with that string in
// another claim (the cost of decoding so large a token); and a verified
// token whose aud is short, against one whose aud is that long Unicode
// string, at an API it was not issued for. The long variants should cost a
// few times the short ones, not a multiple of the issuer count.
func benchHintCost(b *testing.B) {
	ctx := testkit.Context(b)
	k := testkit.EdKey(b, "ed")
	jwks := testkit.WriteJWKS(b, k)
	cfg := &service.Config{Audiences: slices.Clone(testkit.Audiences)}
	for i := range 21 {
		cfg.Issuers = append(cfg.Issuers, service.IssuerConfig{Issuer: fmt.Sprintf("https://tenant-%02d.auth.example.com/", i), JWKSFile: jwks})
	}
	v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		b.Fatal(err)
	}
	const trusted = "https://tenant-00.auth.example.com/"
	long := strings.Repeat("e\u0301", 3800) // 11,400 bytes: the token stays under 16 KiB
	for _, c := range []struct {
		name  string
		token string
		want  service.Reason
	}{
		{"short-iss-21-issuers", k.Token(b, testkit.Claims("https://evil.example")), service.ReasonUntrustedIssuer},
		{"long-unicode-iss-21-issuers", k.Token(b, testkit.Claims(long)), service.ReasonUntrustedIssuer},
		{"short-iss-padded-21-issuers", k.Token(b, testkit.Claims("https://evil.example", "pad", long)), service.ReasonUntrustedIssuer},
		{"short-aud-21-issuers", k.Token(b, testkit.Claims(trusted, "aud", "api/other")), service.ReasonAudienceMismatch},
		{"long-unicode-aud-21-issuers", k.Token(b, testkit.Claims(trusted, "aud", long)), service.ReasonAudienceMismatch},
	} {
		if got := v.Validate(ctx, c.token, "api/users", nil); got.Reason != c.want {
			b.Fatalf("%s: %v %s", c.name, got.Reason, got.Message)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v.Validate(ctx, c.token, "api/users", nil)
			}
		})
	}
}

// BenchmarkIntrospection is the cost of an opaque token against a JWT, in
// one run: "opaque/introspected" asks an RFC 7662 endpoint on loopback
// (httptest, client_secret_basic checked) on every call (the caches are
// off), "opaque/hit" is a repeated token answered from the introspection
// cache, and "jwt/uncached" and "jwt/hit" are an ES256 token verified on
// every call and answered from the verified-token cache. Every variant
// runs the checks after the signature (time, audience, scope).
func BenchmarkIntrospection(b *testing.B) {
	ctx := testkit.Context(b)
	k := testkit.ECKey(b, "ec", elliptic.P256())
	keys := testkit.NewIssuer(b, k)
	s := testkit.NewIntrospectionServer(b)
	opaque := "bench-" + strings.Repeat("x", 32)
	s.Activate(opaque, testkit.Claims(s.URL(), "token_type", "Bearer"))
	jwt := k.Token(b, testkit.Claims(keys.URL()))
	for _, mode := range []struct {
		name    string
		entries int
	}{{"introspected", -1}, {"hit", 0}} {
		cfg := &service.Config{Issuers: []service.IssuerConfig{s.Config(b), issuerConfig(keys, 0)}, Audiences: slices.Clone(testkit.Audiences), CacheMaxEntries: mode.entries}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		waitTried(ctx, b, v)
		jwtMode := map[string]string{"introspected": "uncached", "hit": "hit"}[mode.name]
		for _, c := range []struct{ name, tok string }{{"opaque/" + mode.name, opaque}, {"jwt/" + jwtMode, jwt}} {
			if got := v.Validate(ctx, c.tok, "api/users", []string{"users.read"}); got.Reason != service.ReasonValid {
				b.Fatalf("%s: %v %s", c.name, got.Reason, got.Message)
			}
			b.Run(c.name, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					v.Validate(ctx, c.tok, "api/users", []string{"users.read"})
				}
			})
		}
	}
}

// BenchmarkDPoP is the cost of a DPoP proof check, in one run: "proof/hit"
// is a DPoP-bound ES256 token answered from the verified-token cache with a
// new ES256 proof on every call (each checked and remembered by the default
// in-memory replay cache), "proof/uncached" the same with the cache off;
// "bearer/hit" is a token with the same claims but cnf, answered from the
// cache, and "bearer/uncached" that token verified on every call. Proofs
// are made before the timer starts, one per iteration (b.N of them: the
// replay cache is sized for far more than a second of calls).
func BenchmarkDPoP(b *testing.B) {
	ctx := testkit.Context(b)
	k := testkit.ECKey(b, "ec", elliptic.P256())
	client := testkit.ECKey(b, "", elliptic.P256())
	ti := testkit.NewIssuer(b, k)
	const maxProofs = 1 << 20
	bound := k.Token(b, testkit.Claims(ti.URL(), "cnf", client.Cnf()))
	bearer := k.Token(b, testkit.Claims(ti.URL()))
	const method, uri = "POST", "https://usher.test/usher.v1.TokenService/ValidateToken"
	for _, mode := range []struct {
		name    string
		entries int
	}{{"hit", 0}, {"uncached", -1}} {
		cfg := &service.Config{Issuers: []service.IssuerConfig{issuerConfig(ti, 0)}, Audiences: slices.Clone(testkit.Audiences),
			CacheMaxEntries: mode.entries, DPoP: service.DPoPConfig{ReplayMaxEntries: maxProofs}}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testkit.Now }), service.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		waitTried(ctx, b, v)
		request := func(proof string) *service.Request {
			return &service.Request{Token: bound, Audience: "api/users", Scheme: "DPoP", DPoPProof: proof, HTTPMethod: method, HTTPURI: uri}
		}
		if got, err := v.ValidateRequest(ctx, request(client.Proof(b, bound, method, uri, testkit.Now))); err != nil || got.Reason != service.ReasonValid {
			b.Fatalf("bound token: %v %s %v", got.Reason, got.Message, err)
		}
		if got := v.Validate(ctx, bearer, "api/users", nil); got.Reason != service.ReasonValid {
			b.Fatalf("bearer token: %v %s", got.Reason, got.Message)
		}
		b.Run("proof/"+mode.name, func(b *testing.B) {
			if b.N > maxProofs {
				b.Fatalf("b.N %d is over the %d proofs the replay cache holds: use a shorter -benchtime", b.N, maxProofs)
			}
			reqs := make([]*service.Request, b.N)
			for i := range reqs {
				reqs[i] = request(client.Proof(b, bound, method, uri, testkit.Now))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if got, err := v.ValidateRequest(ctx, reqs[i]); err != nil || got.Reason != service.ReasonValid {
					b.Fatalf("%v %s %v", got.Reason, got.Message, err)
				}
			}
		})
		b.Run("bearer/"+mode.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				v.Validate(ctx, bearer, "api/users", nil)
			}
		})
	}
}
