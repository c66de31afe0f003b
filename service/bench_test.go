package service_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"log/slog"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/service"
)

// benchKeys are the keys of the benchmarks: one per algorithm family.
func benchKeys(b *testing.B) []*testKey {
	return []*testKey{newRSAKey(b, "rsa"), newECKey(b, "ec", elliptic.P256()), newEdKey(b, "ed")}
}

// BenchmarkValidateToken is the engine in process for one valid token:
// "uncached" parses and verifies the signature on every call (the cache is
// off), "hit" is a repeated token answered from the verified-token cache
// (time, audience and scope checks still run).
func BenchmarkValidateToken(b *testing.B) {
	keys := benchKeys(b)
	ti := newTestIssuer(b, keys...)
	ctx := testContext(b)
	for _, mode := range []struct {
		name    string
		entries int
	}{{"uncached", -1}, {"hit", 0}} {
		cfg := &service.Config{Issuers: []service.IssuerConfig{ti.config(0)}, Audiences: slices.Clone(testAudiences), CacheMaxEntries: mode.entries}
		v, err := service.NewValidator(ctx, cfg, service.WithClock(func() time.Time { return testNow }), service.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			b.Fatal(err)
		}
		waitTried(ctx, b, v)
		for _, k := range keys {
			tok := k.token(b, claims(ti.URL()))
			if got := v.Validate(ctx, tok, "api/users", nil); got.Reason != service.ReasonValid {
				b.Fatalf("%s: %v %s", k.alg, got.Reason, got.Message)
			}
			b.Run(k.alg+"/"+mode.name, func(b *testing.B) {
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
		tok := k.token(b, claims("https://issuer.example"))
		i := strings.LastIndexByte(tok, '.')
		input, sig := []byte(tok[:i]), mustDecode(b, tok[i+1:])
		b.Run(k.alg, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ok := false
				switch p := k.priv.Public().(type) {
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
	k := newRSAKey(b, "rsa")
	ti := newTestIssuer(b, k)
	ctx := testContext(b)
	v := newValidator(b, ctx, ti.config(0))
	waitTried(ctx, b, v)
	tok := k.token(b, claims(ti.URL()))
	if in := v.Inspect(ctx, tok); in.Signature != service.ReasonValid {
		b.Fatal(in.Message)
	}
	b.ReportAllocs()
	for b.Loop() {
		v.Inspect(ctx, tok)
	}
}
