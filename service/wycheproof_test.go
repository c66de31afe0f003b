package service

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"
)

// Project Wycheproof's JWS and JWK vectors (C2SP/wycheproof,
// testvectors_v1/json_web_*), read from ../shared beside the repository and
// never copied into it.
var wycheproofDir = filepath.Join("..", "..", "shared", "testvectors", "wycheproof")

type wpVector struct {
	TcID    int      `json:"tcId"`
	Comment string   `json:"comment"`
	JWS     string   `json:"jws"`
	Result  string   `json:"result"` // valid, invalid, acceptable
	Flags   []string `json:"flags"`
}

type wpGroup struct {
	Comment string          `json:"comment"`
	Public  json.RawMessage `json:"public"`  // a JWK (JWS file) or a JWKS (JWK file)
	Private json.RawMessage `json:"private"` // the same, with the private or secret key
	Tests   []wpVector      `json:"tests"`
}

type wpFile struct {
	NumberOfTests int       `json:"numberOfTests"`
	TestGroups    []wpGroup `json:"testGroups"`
}

func readWycheproof(t *testing.T, name string) *wpFile {
	t.Helper()
	path := filepath.Join(wycheproofDir, name)
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		abs, _ := filepath.Abs(wycheproofDir)
		t.Skipf("Wycheproof vectors not found at %s (%s): check out ../shared beside the repository to run them", wycheproofDir, abs)
	}
	if err != nil {
		t.Fatal(err)
	}
	var f wpFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	n := 0
	for _, g := range f.TestGroups {
		n += len(g.Tests)
	}
	if n == 0 || n != f.NumberOfTests {
		t.Fatalf("%s: %d vectors, the file says %d", path, n, f.NumberOfTests)
	}
	return &f
}

// wpTally counts what happened to the vectors of one file.
type wpTally struct {
	total, validVerified, invalidRejected, acceptable int
	invalidAccepted                                   []string            // bugs: vectors Wycheproof calls invalid that verified
	skipped                                           map[string][]string // reason -> vector ids
	policy                                            map[string][]string // valid vectors usher refuses on purpose -> ids
}

func newTally() *wpTally {
	return &wpTally{skipped: map[string][]string{}, policy: map[string][]string{}}
}

func (w *wpTally) summary() string {
	var b strings.Builder
	skipped, policy := 0, 0
	for _, ids := range w.skipped {
		skipped += len(ids)
	}
	for _, ids := range w.policy {
		policy += len(ids)
	}
	fmt.Fprintf(&b, "%d vectors: %d valid verified, %d invalid rejected, %d invalid ACCEPTED %v, %d acceptable, %d valid refused by usher's policy, %d skipped",
		w.total, w.validVerified, w.invalidRejected, len(w.invalidAccepted), w.invalidAccepted, w.acceptable, policy, skipped)
	for _, m := range []map[string][]string{w.policy, w.skipped} {
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			fmt.Fprintf(&b, "\n  %d %s: %s", len(m[k]), k, strings.Join(m[k], " "))
		}
	}
	return b.String()
}

// wpHeaderAlg reads the alg of a compact token leniently, only to classify
// a vector (HMAC, JWE) before the engine sees it.
func wpHeaderAlg(tok string) (alg string, segments int) {
	parts := strings.Split(tok, ".")
	h, err := base64.RawURLEncoding.DecodeString(strings.Map(func(r rune) rune {
		if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '_' {
			return r
		}
		return -1
	}, parts[0]))
	if err != nil {
		return "", len(parts)
	}
	var hdr struct {
		Alg string `json:"alg"`
	}
	_ = json.Unmarshal(h, &hdr)
	return hdr.Alg, len(parts)
}

// skipReason says why a vector is outside what usher verifies, or "".
// Such vectors still go through the engine, which must refuse them.
func skipReason(tok string) string {
	alg, n := wpHeaderAlg(tok)
	switch {
	case n == 5:
		return "because it is a JWE (usher verifies signed tokens only)"
	case strings.HasPrefix(strings.ToUpper(alg), "HS"):
		return "because alg " + alg + " is HMAC (usher holds no shared secrets; HS* are never allowed)"
	}
	return ""
}

// opaqueClaims stands in for a payload segment so that the engine's strict
// parser checks everything else of a vector: its payloads are arbitrary
// bytes ("foo", "", zeros), not JWT claim sets.
const opaqueClaims = "e30" // {}

// parseSignatureLevel takes a compact JWS apart with the engine's own rules
// (size, alphabet, segment count, canonical base64url, strict header JSON,
// registered header parameters, crit, b64, enc), treating the payload as
// opaque bytes that must only be canonical base64url.
func parseSignatureLevel(tok string) (*parsedToken, *malformed) {
	if len(tok) > DefaultMaxTokenBytes || strings.Count(tok, ".") != 2 {
		t, m := parseCompact(tok, DefaultMaxTokenBytes)
		if m == nil {
			panic(fmt.Sprintf("parseCompact accepted %q (%d bytes, %d segments)", tok, len(tok), strings.Count(tok, ".")+1))
		}
		return t, m
	}
	parts := strings.SplitN(tok, ".", 3)
	t, m := parseCompact(parts[0]+"."+opaqueClaims+"."+parts[2], DefaultMaxTokenBytes)
	if m != nil {
		return nil, m
	}
	for i := 0; i < len(parts[1]); i++ {
		c := parts[1][i]
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return nil, bad(malformedShape, "payload", "byte %d is %q, outside the base64url alphabet", i, rune(c))
		}
	}
	if _, err := b64(parts[1]); err != nil {
		return nil, bad(malformedEncoding, "payload", "%v", err)
	}
	t.raw, t.signingInput = tok, parts[0]+"."+parts[1]
	t.payload, t.claims = nil, tokenClaims{}
	return t, nil
}

// verifySignatureLevel runs the engine's checks up to the signature for a
// key set that stands for one issuer, as Validator.verify does once the
// issuer is known: strict parse, alg allow-list, key by kid, key type and
// JWK alg against the header's alg, signature. ks is nil when the vector's
// key set had no usable key.
func verifySignatureLevel(tok string, ks *keySet) (Reason, string) {
	t, m := parseSignatureLevel(tok)
	if m != nil {
		return ReasonMalformed, m.Error()
	}
	spec, known := algSpecs[t.alg]
	if !t.hasAlg || !known || !slices.Contains(DefaultAlgorithms, t.alg) {
		return ReasonUnsupportedAlgorithm, algorithmVerdict(t, DefaultAlgorithms).Message
	}
	if ks == nil {
		return ReasonUnknownKey, "the key set has no usable key"
	}
	key, _ := ks.pick(t.kid, spec)
	if key == nil {
		return ReasonUnknownKey, fmt.Sprintf("no key %q", t.kid)
	}
	if why := key.fits(t.alg, spec); why != "" {
		return ReasonUnsupportedAlgorithm, why
	}
	if !key.verify(spec, t.signingInput, t.signature) {
		return ReasonInvalidSignature, "signature does not verify"
	}
	return ReasonValid, fmt.Sprintf("verified with key %q", key.kid)
}

// jwkAlgRefusal tells a policy refusal from a bad signature: when the
// vector's JWK names another alg than the token's header (or one that is no
// JWS algorithm at all), usher refuses the pair on purpose (an
// alg that does not match its key is how key-confusion attacks work). It reports the pair, and whether the signature verifies
// once the JWK's alg member is taken out.
func jwkAlgRefusal(tok string, jwks []byte) (string, bool) {
	hdrAlg, _ := wpHeaderAlg(tok)
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if json.Unmarshal(jwks, &doc) != nil {
		return "", false
	}
	var pairs []string
	for _, k := range doc.Keys {
		if a, ok := k["alg"].(string); ok && a != hdrAlg {
			pairs = append(pairs, fmt.Sprintf("the JWK says alg %s, the header %s", a, hdrAlg))
			delete(k, "alg")
		}
	}
	if len(pairs) == 0 {
		return "", false
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return "", false
	}
	ks, err := parseKeySet(b, time.Unix(0, 0))
	if err != nil {
		return "", false
	}
	got, _ := verifySignatureLevel(tok, ks)
	return strings.Join(pairs, "; "), got == ReasonValid
}

// parseKeySetSafely is parseKeySet with a panic turned into a test error.
func parseKeySetSafely(t *testing.T, what string, body []byte) (ks *keySet, err error) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			t.Errorf("%s: parseKeySet panicked: %v", what, r)
			ks, err = nil, fmt.Errorf("panic: %v", r)
		}
	}()
	return parseKeySet(body, time.Unix(0, 0))
}

// checkKeySetProperties asserts what a parsed key set may hold: only keys
// usher can verify with, none weak, none holding private material.
func checkKeySetProperties(t *testing.T, what string, body []byte, ks *keySet) {
	t.Helper()
	var doc struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		t.Errorf("%s: parseKeySet accepted a body that is not a JWKS: %v", what, err)
		return
	}
	// The kids of the published keys that carry nothing private and are not
	// for encryption.
	clean := map[string]bool{}
	for _, k := range doc.Keys {
		private := false
		for _, f := range []string{"d", "p", "q", "dp", "dq", "qi", "k", "oth"} {
			if _, ok := k[f]; ok {
				private = true
			}
		}
		if kid, _ := k["kid"].(string); !private && k["kty"] != "oct" && k["use"] != "enc" {
			clean[kid] = true
		}
	}
	if len(ks.keys) == 0 {
		t.Errorf("%s: parseKeySet returned a set without keys and no error", what)
	}
	for _, k := range ks.keys {
		if !clean[k.kid] {
			t.Errorf("%s: key %q was kept although it holds private material, is symmetric or is for encryption", what, k.kid)
		}
		switch k.kty {
		case "RSA":
			if k.rsa == nil || k.rsa.N.BitLen() < minRSABits || k.rsa.E < 3 || k.rsa.E%2 == 0 {
				t.Errorf("%s: weak RSA key %q kept", what, k.kid)
			}
		case "EC":
			if k.ec == nil || !slices.Contains([]string{"P-256", "P-384", "P-521"}, k.crv) {
				t.Errorf("%s: EC key %q on %q kept", what, k.kid, k.crv)
			}
		case "OKP":
			if len(k.ed) != 32 {
				t.Errorf("%s: Ed25519 key %q of %d bytes kept", what, k.kid, len(k.ed))
			}
		default:
			t.Errorf("%s: key %q of type %q kept", what, k.kid, k.kty)
		}
	}
}

// wpEngine is a whole Validator over one vector's key set (a jwks_file), to
// check that the public entry points never call a vector valid.
func wpEngine(t *testing.T, ctx context.Context, jwks []byte) *Validator {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(path, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := &Config{
		Issuers:   []IssuerConfig{{Issuer: "https://wycheproof.usher.test", JWKSFile: path}},
		Audiences: []KnownAudience{{Audience: "api/users"}},
	}
	v, err := NewValidator(ctx, cfg, WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return nil // no usable key: the engine refuses to start with this set
	}
	return v
}

// runVectors checks every vector of a group against the group's public key set.
func runVectors(t *testing.T, ctx context.Context, file string, g wpGroup, jwksBody []byte, ks *keySet, tally *wpTally) {
	t.Helper()
	var engine *Validator
	if ks != nil {
		engine = wpEngine(t, ctx, jwksBody)
		if engine == nil {
			t.Errorf("%s group %q: parseKeySet accepted the set but NewValidator refused it", file, g.Comment)
		}
	}
	for _, tc := range g.Tests {
		id := fmt.Sprintf("%s#%d", file, tc.TcID)
		desc := fmt.Sprintf("%s (%s, %s, group %q)", id, tc.Comment, tc.Result, g.Comment)
		tally.total++

		got, why := verifySignatureLevel(tc.JWS, ks)
		if engine != nil {
			vd := engine.Validate(ctx, tc.JWS, "api/users", nil)
			in := engine.Inspect(ctx, tc.JWS)
			if vd.Claims != nil || vd.Reason == ReasonValid {
				if tc.Result == "invalid" {
					t.Errorf("%s: Validate verified an invalid vector: %v %s", desc, vd.Reason, vd.Message)
				} else if got != ReasonValid {
					t.Errorf("%s: Validate verified it (%v) but the signature-level check says %v: %s", desc, vd.Reason, got, why)
				}
			}
			if in.Signature == ReasonValid && (tc.Result == "invalid" || got != ReasonValid) {
				t.Errorf("%s: Inspect says the signature is valid, signature level says %v", desc, got)
			}
		}

		if reason := skipReason(tc.JWS); reason != "" {
			tally.skipped[reason] = append(tally.skipped[reason], id)
			if got == ReasonValid {
				t.Errorf("%s: skipped %s, yet the engine verified it", desc, reason)
			}
			continue
		}
		switch tc.Result {
		case "invalid":
			if got == ReasonValid {
				t.Errorf("%s: an invalid vector verified (%s); Wycheproof expects it refused (flags %v)", desc, why, tc.Flags)
				tally.invalidAccepted = append(tally.invalidAccepted, id)
				continue
			}
			tally.invalidRejected++
		case "valid":
			switch {
			case got == ReasonValid:
				tally.validVerified++
			default:
				pair, verifies := jwkAlgRefusal(tc.JWS, jwksBody)
				if !verifies {
					t.Errorf("%s: a valid vector with an allowed algorithm did not verify: %v: %s", desc, got, why)
					continue
				}
				reason := "because " + pair + " (alg/key mismatch is refused by design; the signature itself verifies)"
				tally.policy[reason] = append(tally.policy[reason], id)
			}
		default:
			tally.acceptable++
		}
	}
}

func TestWycheproofJWS(t *testing.T) {
	f := readWycheproof(t, "json_web_signature_test.json")
	ctx := t.Context()
	tally := newTally()
	for _, g := range f.TestGroups {
		var ks *keySet
		var body []byte
		if len(g.Public) > 0 {
			body = []byte(`{"keys":[` + string(g.Public) + `]}`)
			var err error
			if ks, err = parseKeySetSafely(t, "jws group "+g.Comment+" public key", body); err == nil {
				checkKeySetProperties(t, "jws group "+g.Comment+" public key", body, ks)
			}
		}
		if len(g.Private) > 0 {
			priv := []byte(`{"keys":[` + string(g.Private) + `]}`)
			if pks, err := parseKeySetSafely(t, "jws group "+g.Comment+" private key", priv); err == nil {
				t.Errorf("jws group %q: the private (or secret) key was accepted as a key set: %v", g.Comment, pks.kids())
			}
		}
		runVectors(t, ctx, "jws", g, body, ks, tally)
	}
	t.Log(tally.summary())
	if tally.total != f.NumberOfTests {
		t.Errorf("ran %d vectors of %d", tally.total, f.NumberOfTests)
	}
	if tally.validVerified == 0 || tally.invalidRejected == 0 {
		t.Errorf("nothing verified or nothing rejected: %s", tally.summary())
	}
}

func TestWycheproofJWK(t *testing.T) {
	f := readWycheproof(t, "json_web_key_test.json")
	ctx := t.Context()
	tally := newTally()
	sets := 0
	for _, g := range f.TestGroups {
		var ks *keySet
		if len(g.Public) > 0 {
			sets++
			var err error
			if ks, err = parseKeySetSafely(t, "jwk group "+g.Comment+" public set", g.Public); err == nil {
				checkKeySetProperties(t, "jwk group "+g.Comment+" public set", g.Public, ks)
			}
		}
		if len(g.Private) > 0 {
			sets++
			if pks, err := parseKeySetSafely(t, "jwk group "+g.Comment+" private set", g.Private); err == nil {
				// A mixed set keeps its public keys only.
				checkKeySetProperties(t, "jwk group "+g.Comment+" private set", g.Private, pks)
			}
		}
		runVectors(t, ctx, "jwk", g, g.Public, ks, tally)
	}
	t.Logf("%d key sets parsed without a panic; %s", sets, tally.summary())
	if tally.total != f.NumberOfTests {
		t.Errorf("ran %d vectors of %d", tally.total, f.NumberOfTests)
	}
}
