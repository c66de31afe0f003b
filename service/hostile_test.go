package service_test

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/usher-dev/usher/service"
)

type hostileCase struct {
	name     string
	token    string
	audience string // default api/users
	scopes   []string
	want     service.Reason
	hint     string // when set, the hint must contain it
}

// nonCanonical re-encodes a base64url segment with non-zero unused trailing
// bits: lenient decoders read the same bytes, a strict one refuses it.
func nonCanonical(t testing.TB, seg string) string {
	t.Helper()
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	if len(seg)%4 == 0 {
		t.Fatalf("segment %q has no unused bits", seg)
	}
	last := strings.IndexByte(alphabet, seg[len(seg)-1])
	out := seg[:len(seg)-1] + string(alphabet[last|1])
	a, err1 := base64.RawURLEncoding.DecodeString(seg)
	b, err2 := base64.RawURLEncoding.DecodeString(out)
	if err1 != nil || err2 != nil || string(a) != string(b) {
		t.Fatalf("nonCanonical(%q) = %q does not decode to the same bytes", seg, out)
	}
	return out
}

func TestValidate_Hostile(t *testing.T) {
	ctx := testContext(t)
	rsa1 := newRSAKey(t, "rsa-1")
	rsa1.jwkAlg = "RS256"
	rsa2 := newRSAKey(t, "rsa-2")
	ec1 := newECKey(t, "ec-1", elliptic.P256())
	ec1.jwkAlg = "ES256"
	ec384 := newECKey(t, "ec-384", elliptic.P384())
	ed1 := newEdKey(t, "ed-1")
	enc1 := newECKey(t, "enc-1", elliptic.P256())
	enc1.use = "enc"
	otherKey := newECKey(t, "other-1", elliptic.P256())
	attacker := newRSAKey(t, "rsa-1")

	main := newTestIssuer(t, rsa1, rsa2, ec1, ec384, ed1, enc1)
	other := newTestIssuer(t, otherKey)
	var canaryHits atomic.Int64
	canary := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		canaryHits.Add(1)
		w.Write(jwks(attacker))
	}))
	t.Cleanup(canary.Close)

	typed := main.config(time.Minute)
	typed.Issuer, typed.TokenType = typedIssuer, "at+jwt"
	v := newValidator(t, ctx, main.config(time.Minute), other.config(time.Minute), typed)
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}

	iss := main.URL()
	now := testNow.Unix()
	good := claims(iss)
	valid := rsa1.token(t, good)
	hdr := func(kv ...any) map[string]any {
		h := map[string]any{}
		for i := 0; i < len(kv); i += 2 {
			h[kv[i].(string)] = kv[i+1]
		}
		return h
	}
	rs := func(h map[string]any, payload any) string { return sign(t, h, payload, "RS256", rsa1.priv) }
	rsRaw := func(payload string) string { return rs(hdr("alg", "RS256", "kid", "rsa-1"), []byte(payload)) }
	rsClaims := func(kv ...any) string { return rsa1.token(t, claims(iss, kv...)) }
	rawHeader := func(h string) string { return sign(t, []byte(h), good, "RS256", rsa1.priv) }

	var cases []hostileCase
	add := func(want service.Reason, name, tok string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want})
	}
	addAud := func(want service.Reason, name, tok, aud string, scopes ...string) {
		cases = append(cases, hostileCase{name: name, token: tok, audience: aud, scopes: scopes, want: want})
	}
	addHint := func(want service.Reason, name, tok, hint string) {
		cases = append(cases, hostileCase{name: name, token: tok, want: want, hint: hint})
	}

	add(service.ReasonValid, "control", valid)

	// alg none, missing, not a string.
	for _, none := range []string{"none", "None", "NONE", "nOnE"} {
		add(service.ReasonUnsupportedAlgorithm, "alg "+none+" with a real signature", rs(hdr("alg", none, "kid", "rsa-1"), good))
		unsigned := segment(t, hdr("alg", none)) + "." + segment(t, good) + "."
		add(service.ReasonUnsupportedAlgorithm, "alg "+none+" unsigned", unsigned)
	}
	add(service.ReasonUnsupportedAlgorithm, "alg absent", rs(hdr("kid", "rsa-1"), good))
	add(service.ReasonUnsupportedAlgorithm, "alg empty", rs(hdr("alg", "", "kid", "rsa-1"), good))
	add(service.ReasonUnsupportedAlgorithm, "alg unknown", rs(hdr("alg", "RS1", "kid", "rsa-1"), good))
	add(service.ReasonMalformed, "alg a number", rs(hdr("alg", 256, "kid", "rsa-1"), good))
	add(service.ReasonMalformed, "alg null", rs(hdr("alg", nil, "kid", "rsa-1"), good))
	add(service.ReasonMalformed, "alg duplicated", rawHeader(`{"alg":"none","alg":"RS256","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "alg duplicated the other way", rawHeader(`{"alg":"RS256","alg":"none","kid":"rsa-1"}`))

	// Key confusion: HMAC keyed with the RSA public key in every encoding.
	pub := &rsa1.priv.(*rsa.PrivateKey).PublicKey
	pkixDER, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkixDER})
	jwkJSON, _ := json.Marshal(rsa1.jwk())
	for name, secret := range map[string][]byte{
		"DER":                 pkixDER,
		"PKCS1 DER":           x509.MarshalPKCS1PublicKey(pub),
		"PEM":                 pemKey,
		"PEM without newline": []byte(strings.TrimSuffix(string(pemKey), "\n")),
		"modulus":             pub.N.Bytes(),
		"JWK JSON":            jwkJSON,
	} {
		for _, alg := range []string{"HS256", "HS384", "HS512"} {
			add(service.ReasonUnsupportedAlgorithm, alg+" keyed with the RSA public key "+name,
				sign(t, hdr("alg", alg, "kid", "rsa-1"), good, alg, secret))
		}
	}
	add(service.ReasonUnsupportedAlgorithm, "HS256 without kid", sign(t, hdr("alg", "HS256"), good, "HS256", pkixDER))

	// alg / key type mismatch.
	add(service.ReasonUnsupportedAlgorithm, "ES256 with an RSA kid", sign(t, hdr("alg", "ES256", "kid", "rsa-1"), good, "ES256", ec1.priv))
	add(service.ReasonUnsupportedAlgorithm, "ES256 with an RSA kid without alg", sign(t, hdr("alg", "ES256", "kid", "rsa-2"), good, "ES256", ec1.priv))
	add(service.ReasonUnsupportedAlgorithm, "RS256 with an EC kid", sign(t, hdr("alg", "RS256", "kid", "ec-1"), good, "RS256", rsa1.priv))
	add(service.ReasonUnsupportedAlgorithm, "EdDSA with an RSA kid", sign(t, hdr("alg", "EdDSA", "kid", "rsa-2"), good, "EdDSA", ed1.priv))
	add(service.ReasonUnsupportedAlgorithm, "RS256 with an Ed25519 kid", sign(t, hdr("alg", "RS256", "kid", "ed-1"), good, "RS256", rsa1.priv))
	add(service.ReasonUnsupportedAlgorithm, "PS256 on an RS256 key", sign(t, hdr("alg", "PS256", "kid", "rsa-1"), good, "PS256", rsa1.priv))
	add(service.ReasonUnsupportedAlgorithm, "RS512 on an RS256 key", sign(t, hdr("alg", "RS512", "kid", "rsa-1"), good, "RS512", rsa1.priv))
	add(service.ReasonUnsupportedAlgorithm, "ES256 on a P-384 key", sign(t, hdr("alg", "ES256", "kid", "ec-384"), good, "ES256", ec384.priv))
	add(service.ReasonUnsupportedAlgorithm, "ES384 on an ES256 key", sign(t, hdr("alg", "ES384", "kid", "ec-1"), good, "ES384", ec1.priv))
	add(service.ReasonValid, "PS256 on an RSA key without alg", sign(t, hdr("alg", "PS256", "kid", "rsa-2"), good, "PS256", rsa2.priv))
	add(service.ReasonValid, "RS512 on an RSA key without alg", sign(t, hdr("alg", "RS512", "kid", "rsa-2"), good, "RS512", rsa2.priv))
	add(service.ReasonValid, "ES384 on P-384", sign(t, hdr("alg", "ES384", "kid", "ec-384"), good, "ES384", ec384.priv))
	add(service.ReasonValid, "ES256 on P-256", ec1.token(t, good))
	add(service.ReasonValid, "EdDSA", ed1.token(t, good))

	// kid.
	addHint(service.ReasonUnknownKey, "another issuer's kid", sign(t, hdr("alg", "ES256", "kid", "other-1"), good, "ES256", otherKey.priv), other.URL())
	add(service.ReasonUnknownKey, "kid of a use:enc key", sign(t, hdr("alg", "ES256", "kid", "enc-1"), good, "ES256", enc1.priv))
	for name, kid := range map[string]string{
		"path traversal": "../../../../etc/passwd",
		"SQL":            "x' OR '1'='1",
		"jndi":           "${jndi:ldap://127.0.0.1:1/a}",
		"10 KB":          strings.Repeat("k", 10<<10),
		"NUL":            "rsa-1\x00",
		"CRLF":           "rsa-1\r\nX-Injected: 1",
	} {
		add(service.ReasonUnknownKey, "kid "+name, rs(hdr("alg", "RS256", "kid", kid), good))
	}
	add(service.ReasonUnknownKey, "kid absent with several RSA keys", rs(hdr("alg", "RS256"), good))
	add(service.ReasonUnknownKey, "kid empty with several RSA keys", rs(hdr("alg", "RS256", "kid", ""), good))
	add(service.ReasonValid, "kid absent with one Ed25519 key", sign(t, hdr("alg", "EdDSA"), good, "EdDSA", ed1.priv))
	add(service.ReasonMalformed, "kid a number", rs(hdr("alg", "RS256", "kid", 1), good))
	add(service.ReasonMalformed, "kid an array", rs(hdr("alg", "RS256", "kid", []string{"rsa-1"}), good))
	add(service.ReasonMalformed, "kid null", rs(hdr("alg", "RS256", "kid", nil), good))
	add(service.ReasonMalformed, "kid duplicated", rawHeader(`{"alg":"RS256","kid":"nope","kid":"rsa-1"}`))
	add(service.ReasonMalformed, "typ a number", rs(hdr("alg", "RS256", "kid", "rsa-1", "typ", 1), good))

	// Keys named by the token are never used.
	attackerPub := &attacker.priv.(*rsa.PrivateKey).PublicKey
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker"}, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	cert, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, attackerPub, attacker.priv)
	if err != nil {
		t.Fatal(err)
	}
	x5c := []string{base64.StdEncoding.EncodeToString(cert)}
	attackerJWK := attacker.jwk()
	for name, h := range map[string]map[string]any{
		"jku":          hdr("alg", "RS256", "kid", "rsa-1", "jku", canary.URL+"/jwks.json"),
		"x5u":          hdr("alg", "RS256", "kid", "rsa-1", "x5u", canary.URL+"/cert.pem"),
		"jwk":          hdr("alg", "RS256", "kid", "rsa-1", "jwk", attackerJWK),
		"x5c":          hdr("alg", "RS256", "kid", "rsa-1", "x5c", x5c),
		"all four":     hdr("alg", "RS256", "kid", "rsa-1", "jku", canary.URL+"/jwks.json", "x5u", canary.URL+"/c", "jwk", attackerJWK, "x5c", x5c),
		"jku, own kid": hdr("alg", "RS256", "kid", "attacker", "jku", canary.URL+"/jwks.json"),
	} {
		want := service.ReasonInvalidSignature
		if name == "jku, own kid" {
			want = service.ReasonUnknownKey
		}
		addHint(want, name+" with an attacker's key", sign(t, h, good, "RS256", attacker.priv), map[bool]string{true: "header is ignored", false: ""}[want == service.ReasonInvalidSignature])
	}
	secret := []byte("attacker-secret-attacker-secret!")
	add(service.ReasonUnsupportedAlgorithm, "embedded oct jwk with HS256",
		sign(t, hdr("alg", "HS256", "jwk", map[string]any{"kty": "oct", "k": b64.EncodeToString(secret)}), good, "HS256", secret))

	// crit and b64.
	add(service.ReasonMalformed, "crit unknown", rs(hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{"exp"}, "exp", now), good))
	add(service.ReasonMalformed, "crit empty", rs(hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{}), good))
	add(service.ReasonMalformed, "crit naming an absent header", rs(hdr("alg", "RS256", "kid", "rsa-1", "crit", []string{"foo"}), good))
	add(service.ReasonMalformed, "b64 false", rs(hdr("alg", "RS256", "kid", "rsa-1", "b64", false, "crit", []string{"b64"}), good))
	add(service.ReasonMalformed, "b64 false without crit", rs(hdr("alg", "RS256", "kid", "rsa-1", "b64", false), good))

	// typ, with an issuer that requires at+jwt.
	typedTok := func(typ any) string {
		h := hdr("alg", "RS256", "kid", "rsa-1")
		if typ != nil {
			h["typ"] = typ
		}
		return rs(h, claims(typedIssuer))
	}
	add(service.ReasonWrongTokenType, "typ missing", typedTok(nil))
	add(service.ReasonWrongTokenType, "typ JWT", typedTok("JWT"))
	add(service.ReasonWrongTokenType, "typ dpop+jwt", typedTok("dpop+jwt"))
	add(service.ReasonWrongTokenType, "typ empty", typedTok(""))
	add(service.ReasonValid, "typ at+jwt", typedTok("at+jwt"))
	add(service.ReasonValid, "typ application/at+jwt", typedTok("application/at+jwt"))
	add(service.ReasonValid, "typ AT+JWT", typedTok("AT+JWT"))

	// An ID token used as an access token.
	idClaims := func(iss string) map[string]any {
		return claims(iss, "aud", "client-123", "azp", "client-123", "nonce", "n-1", "at_hash", "h", "scope", absent, "client_id", absent)
	}
	addHint(service.ReasonWrongTokenType, "ID token at an at+jwt issuer", rs(hdr("alg", "RS256", "kid", "rsa-1", "typ", "JWT"), idClaims(typedIssuer)), "ID token")
	addHint(service.ReasonAudienceMismatch, "ID token as an access token", rs(hdr("alg", "RS256", "kid", "rsa-1", "typ", "JWT"), idClaims(iss)), "ID token")

	// JWE and nesting.
	add(service.ReasonMalformed, "JWE", segment(t, hdr("alg", "RSA-OAEP", "enc", "A256GCM"))+".YQ.YQ.YQ.YQ")
	add(service.ReasonMalformed, "JWE PBES2 huge p2c with zip",
		segment(t, hdr("alg", "PBES2-HS256+A128KW", "enc", "A128GCM", "p2c", 2_000_000_000, "p2s", "c2FsdA", "zip", "DEF"))+".YQ.YQ.YQ.YQ")
	add(service.ReasonMalformed, "enc header in a JWS", rs(hdr("alg", "RS256", "kid", "rsa-1", "enc", "A256GCM"), good))
	add(service.ReasonMalformed, "payload is another JWS", rs(hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), []byte(valid)))
	add(service.ReasonMalformed, "payload is a JSON string holding a JWS", rs(hdr("alg", "RS256", "kid", "rsa-1", "cty", "JWT"), valid))

	// Serialization.
	p := segments(valid)
	add(service.ReasonMalformed, "general JSON serialization",
		fmt.Sprintf(`{"payload":%q,"signatures":[{"protected":%q,"signature":%q}]}`, p[1], p[0], p[2]))
	add(service.ReasonMalformed, "flattened JSON serialization",
		fmt.Sprintf(`{"payload":%q,"protected":%q,"header":{"iss":"x"},"signature":%q}`, p[1], p[0], p[2]))
	add(service.ReasonMalformed, "h.p", p[0]+"."+p[1])
	add(service.ReasonMalformed, "h.p.s.", valid+".")
	add(service.ReasonMalformed, ".p.s", "."+p[1]+"."+p[2])
	add(service.ReasonMalformed, "h..s", p[0]+".."+p[2])
	add(service.ReasonMalformed, "h.p. with RS256", p[0]+"."+p[1]+".")
	add(service.ReasonMalformed, "..", "..")
	add(service.ReasonMalformed, "empty", "")
	add(service.ReasonMalformed, "white space only", " \t\r\n")
	add(service.ReasonMalformed, "Bearer only", "Bearer ")
	add(service.ReasonMalformed, "space inside", p[0]+"."+p[1][:10]+" "+p[1][10:]+"."+p[2])
	add(service.ReasonMalformed, "newline inside", p[0]+".\n"+p[1]+"."+p[2])
	add(service.ReasonMalformed, "newline in the signature", p[0]+"."+p[1]+"."+p[2][:20]+"\n"+p[2][20:])
	add(service.ReasonMalformed, "padding ==", p[0]+"."+p[1]+"."+p[2]+"==")
	add(service.ReasonMalformed, "padded header", base64.URLEncoding.EncodeToString([]byte(`{"alg":"RS256","kid":"rsa-1"}`))+"."+p[1]+"."+p[2])
	stdSig := base64.RawStdEncoding.EncodeToString(mustDecode(t, p[2]))
	if !strings.ContainsAny(stdSig, "+/") {
		t.Fatal("standard-alphabet signature has no + or /")
	}
	add(service.ReasonMalformed, "+/ alphabet", p[0]+"."+p[1]+"."+stdSig)
	add(service.ReasonMalformed, "non-canonical trailing bits in the signature", p[0]+"."+p[1]+"."+nonCanonical(t, p[2]))
	add(service.ReasonMalformed, "non-canonical trailing bits in the payload", p[0]+"."+nonCanonical(t, p[1])+"."+p[2])
	add(service.ReasonMalformed, "?", valid+"?")
	add(service.ReasonMalformed, "%2E", p[0]+"%2E"+p[1]+"."+p[2])
	add(service.ReasonMalformed, "U+2024 as a dot", p[0]+"\u2024"+p[1]+"."+p[2])
	add(service.ReasonMalformed, "quoted", `"`+valid+`"`)
	add(service.ReasonMalformed, "a million dots", strings.Repeat(".", 1_000_000))
	add(service.ReasonMalformed, "20,000-deep JSON", rsRaw(`{"x":`+strings.Repeat("[", 20_000)+strings.Repeat("]", 20_000)+`}`))
	add(service.ReasonMalformed, "40-deep JSON", rsRaw(strings.TrimSuffix(mustJSON(t, good), "}")+`,"x":`+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`}`))
	add(service.ReasonValid, "5-deep JSON", rsRaw(strings.TrimSuffix(mustJSON(t, good), "}")+`,"x":{"a":[[{"b":[1]}]]}}`))
	bigAud := make([]string, 200_000)
	for i := range bigAud {
		bigAud[i] = "a" + strconv.Itoa(i)
	}
	add(service.ReasonMalformed, "200,000-entry aud", rsClaims("aud", bigAud))

	// JSON shape.
	for _, shape := range []string{`"x"`, `[]`, `null`, `{}{}`, `{"alg":"RS256","kid":"rsa-1"}x`, ``, `{"alg":"RS256","kid":"rsa-1",}`, `1`} {
		add(service.ReasonMalformed, "header "+shape, rawHeader(shape))
		add(service.ReasonMalformed, "payload "+shape, rsRaw(shape))
	}
	goodJSON := mustJSON(t, good)
	withClaim := func(raw string) string { return strings.TrimSuffix(goodJSON, "}") + "," + raw + "}" }
	add(service.ReasonMalformed, "invalid UTF-8 in the payload", rsRaw(withClaim("\"name\":\"\xff\xfe\"")))
	add(service.ReasonMalformed, "invalid UTF-8 in the header", rawHeader("{\"alg\":\"RS256\",\"kid\":\"rsa-1\",\"x\":\"\xc3\"}"))
	add(service.ReasonMalformed, "lone high surrogate", rsRaw(withClaim(`"name":"\ud800"`)))
	add(service.ReasonMalformed, "lone low surrogate", rsRaw(withClaim(`"name":"\udc00"`)))
	add(service.ReasonMalformed, "high surrogate before a letter", rsRaw(withClaim(`"name":"\ud800\u0041"`)))
	add(service.ReasonMalformed, "lone surrogate in a key", rsRaw(withClaim(`"\ud800":1`)))
	add(service.ReasonValid, "surrogate pair", rsRaw(withClaim(`"name":"\ud83d\ude00"`)))
	add(service.ReasonValid, "escaped backslash before u", rsRaw(withClaim(`"name":"\\ud800"`)))
	add(service.ReasonMalformed, "duplicate aud", rsRaw(withClaim(`"aud":"api/invoices"`)))
	add(service.ReasonMalformed, "duplicate iss", rsRaw(withClaim(`"iss":"https://evil.example"`)))
	add(service.ReasonMalformed, "duplicate aud by escape", rsRaw(withClaim(`"\u0061ud":"api/invoices"`)))
	add(service.ReasonMalformed, "duplicate nested key", rsRaw(withClaim(`"x":{"a":1,"a":2}`)))

	// aud.
	addAud(service.ReasonValid, "aud array", rsClaims("aud", []string{"x", "api/users"}), "api/users")
	for name, aud := range map[string]any{
		`["x","y"]`: []string{"x", "y"}, `""`: "", `[]`: []string{}, "absent": absent, "API/USERS": "API/USERS",
		`"api/users "`: "api/users ", `"api/users/"`: "api/users/", "fullwidth": "ａｐｉ/users",
	} {
		add(service.ReasonAudienceMismatch, "aud "+name, rsClaims("aud", aud))
	}
	addAud(service.ReasonAudienceMismatch, "aud NFD", rsClaims("aud", "api/cafe\u0301"), "api/caf\u00e9")
	for name, aud := range map[string]any{`1`: 1, `{}`: map[string]any{}, `[["api/users"]]`: [][]string{{"api/users"}}, `["api/users",1]`: []any{"api/users", 1}, `null`: nil, `true`: true} {
		add(service.ReasonMalformed, "aud "+name, rsClaims("aud", aud))
	}

	// iss.
	host := strings.TrimPrefix(iss, "http://")
	port, _ := strconv.Atoi(iss[strings.LastIndexByte(iss, ':')+1:])
	for name, bad := range map[string]string{
		"trailing slash":  iss + "/",
		"case":            "HTTP://" + host,
		"https":           "https://" + host,
		"port":            "http://127.0.0.1:" + strconv.Itoa(port+1),
		"percent-encoded": "http://127.0.0.1%3A" + iss[strings.LastIndexByte(iss, ':')+1:],
		"NUL":             iss + "\x00",
		"empty":           "",
	} {
		add(service.ReasonUntrustedIssuer, "iss "+name, rsClaims("iss", bad))
	}
	add(service.ReasonUntrustedIssuer, "iss absent", rsClaims("iss", absent))
	add(service.ReasonMalformed, "iss a number", rsClaims("iss", 1))
	add(service.ReasonMalformed, "iss null", rsClaims("iss", nil))
	add(service.ReasonMalformed, "iss an array", rsClaims("iss", []string{iss}))

	// Time, with the default leeway of 30 s.
	add(service.ReasonExpired, "exp now-leeway-1", rsClaims("exp", now-31))
	add(service.ReasonValid, "exp now-leeway+1", rsClaims("exp", now-29))
	add(service.ReasonExpired, "exp 0", rsClaims("exp", 0))
	add(service.ReasonExpired, "exp 0.4", rsClaims("exp", 0.4))
	add(service.ReasonMissingClaim, "exp absent", rsClaims("exp", absent))
	add(service.ReasonMalformed, "exp a string", rsClaims("exp", strconv.FormatInt(now+3600, 10)))
	add(service.ReasonMalformed, "exp a date", rsClaims("exp", "2099-01-01T00:00:00Z"))
	add(service.ReasonMalformed, "exp -1", rsClaims("exp", -1))
	add(service.ReasonMalformed, "exp 1e300", rsRaw(strings.Replace(goodJSON, `"exp":`+strconv.FormatInt(now+3600, 10), `"exp":1e300`, 1)))
	add(service.ReasonMalformed, "exp 1e400", rsRaw(strings.Replace(goodJSON, `"exp":`+strconv.FormatInt(now+3600, 10), `"exp":1e400`, 1)))
	add(service.ReasonMalformed, "exp null", rsClaims("exp", nil))
	add(service.ReasonMalformed, "exp true", rsClaims("exp", true))
	add(service.ReasonNotYetValid, "nbf now+leeway+1", rsClaims("nbf", now+31))
	add(service.ReasonValid, "nbf now+leeway-1", rsClaims("nbf", now+29))
	add(service.ReasonNotYetValid, "iat now+leeway+1", rsClaims("iat", now+31))
	add(service.ReasonValid, "iat now+leeway-1", rsClaims("iat", now+29))
	add(service.ReasonMalformed, "nbf a string", rsClaims("nbf", "0"))
	add(service.ReasonMalformed, "iat a string", rsClaims("iat", "0"))

	// Signatures.
	n := pub.N
	size := pub.Size()
	fill := func(x *big.Int, size int) []byte { return x.FillBytes(make([]byte, size)) }
	add(service.ReasonInvalidSignature, "RSA signature 0", withSig(valid, make([]byte, size)))
	add(service.ReasonInvalidSignature, "RSA signature 1", withSig(valid, fill(big.NewInt(1), size)))
	add(service.ReasonInvalidSignature, "RSA signature n-1", withSig(valid, fill(new(big.Int).Sub(n, big.NewInt(1)), size)))
	add(service.ReasonInvalidSignature, "RSA signature n", withSig(valid, fill(n, size)))
	add(service.ReasonInvalidSignature, "RSA signature too short", withSig(valid, mustDecode(t, p[2])[1:]))
	add(service.ReasonInvalidSignature, "RSA signature too long", withSig(valid, append([]byte{0}, mustDecode(t, p[2])...)))
	m, _ := rand.Int(rand.Reader, new(big.Int).Rsh(n, 8))
	badPad := new(big.Int).Exp(m, rsa1.priv.(*rsa.PrivateKey).D, n)
	add(service.ReasonInvalidSignature, "RSA signature with bad padding", withSig(valid, fill(badPad, size)))
	add(service.ReasonInvalidSignature, "tampered payload", p[0]+"."+segment(t, claims(iss, "sub", "admin"))+"."+p[2])
	add(service.ReasonInvalidSignature, "tampered header", segment(t, hdr("alg", "RS256", "kid", "rsa-1", "typ", "at+jwt"))+"."+p[1]+"."+p[2])
	add(service.ReasonInvalidSignature, "signature of another token", withSig(rsClaims("sub", "admin"), mustDecode(t, p[2])))

	esValid := ec1.token(t, good)
	esSig := mustDecode(t, segments(esValid)[2])
	r, s := new(big.Int).SetBytes(esSig[:32]), new(big.Int).SetBytes(esSig[32:])
	curveN := elliptic.P256().Params().N
	nMinus1 := new(big.Int).Sub(curveN, big.NewInt(1))
	es := func(r, s *big.Int) []byte { return append(fill(r, 32), fill(s, 32)...) }
	add(service.ReasonInvalidSignature, "ES256 signature of 64 zero bytes", withSig(esValid, make([]byte, 64)))
	for name, rs := range map[string][2]*big.Int{
		"r=0": {big.NewInt(0), s}, "s=0": {r, big.NewInt(0)}, "r=1": {big.NewInt(1), s}, "s=1": {r, big.NewInt(1)},
		"r=n-1": {nMinus1, s}, "s=n-1": {r, nMinus1}, "r=n": {curveN, s}, "s=n": {r, curveN}, "r=s=n": {curveN, curveN},
	} {
		add(service.ReasonInvalidSignature, "ES256 signature "+name, withSig(esValid, es(rs[0], rs[1])))
	}
	der, err := ecdsa.SignASN1(rand.Reader, ec1.priv.(*ecdsa.PrivateKey), sha256Sum(segments(esValid)[0]+"."+segments(esValid)[1]))
	if err != nil {
		t.Fatal(err)
	}
	add(service.ReasonInvalidSignature, "DER-encoded ES256 signature", withSig(esValid, der))
	add(service.ReasonInvalidSignature, "ES256 signature of 63 bytes", withSig(esValid, esSig[1:]))
	add(service.ReasonInvalidSignature, "ES256 signature of 65 bytes", withSig(esValid, append([]byte{0}, esSig...)))

	edValid := ed1.token(t, good)
	edSig := mustDecode(t, segments(edValid)[2])
	add(service.ReasonInvalidSignature, "Ed25519 signature of 64 zero bytes", withSig(edValid, make([]byte, ed25519.SignatureSize)))
	add(service.ReasonInvalidSignature, "Ed25519 signature with S+L", withSig(edValid, addL(edSig)))
	add(service.ReasonInvalidSignature, "Ed25519 signature of 63 bytes", withSig(edValid, edSig[:63]))

	// Scopes.
	addAud(service.ReasonValid, "both scopes", valid, "api/users", "users.read", "users.write")
	addAud(service.ReasonInsufficientScope, "writer is not write", rsClaims("scope", "users.writer"), "api/users", "users.write")
	addAud(service.ReasonInsufficientScope, "scope prefix", rsClaims("scope", "users.write"), "api/users", "users.writer")
	addAud(service.ReasonInsufficientScope, "scope case", rsClaims("scope", "Users.Read"), "api/users", "users.read")
	addAud(service.ReasonInsufficientScope, "no scope claim", rsClaims("scope", absent), "api/users", "users.read")
	addAud(service.ReasonInsufficientScope, "one of two scopes", rsClaims("scope", "users.read"), "api/users", "users.read", "users.write")
	addAud(service.ReasonMalformed, "scope an array", rsClaims("scope", []string{"users.read"}), "api/users", "users.read")
	addAud(service.ReasonMalformed, "scope a number", rsClaims("scope", 1), "api/users")
	addAud(service.ReasonValid, "scp array", rsClaims("scope", absent, "scp", []string{"users.read", "users.write"}), "api/users", "users.write")
	addAud(service.ReasonValid, "scp string", rsClaims("scope", absent, "scp", "users.read users.write"), "api/users", "users.write")
	addAud(service.ReasonMalformed, "scp a number", rsClaims("scope", absent, "scp", 7), "api/users")

	// Bearer prefix and surrounding white space.
	for _, wrap := range []string{"Bearer %s", "bearer %s", "BEARER %s", "BeArEr %s", "  Bearer   %s \n", "\t%s\r\n", " %s "} {
		add(service.ReasonValid, fmt.Sprintf("wrapped %q", wrap), fmt.Sprintf(wrap, valid))
	}
	add(service.ReasonMalformed, "Bearer without a space", "Bearer"+valid)
	add(service.ReasonMalformed, "Basic scheme", "Basic "+valid)
	add(service.ReasonMalformed, "Bearer twice", "Bearer Bearer "+valid)

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			aud := c.audience
			if aud == "" {
				aud = "api/users"
			}
			got := v.Validate(ctx, c.token, aud, c.scopes)
			checkVerdict(t, got, c.want)
			if c.hint != "" && !strings.Contains(got.Hint, c.hint) {
				t.Fatalf("hint %q does not contain %q", got.Hint, c.hint)
			}
			for _, s := range []string{got.Message, got.Hint} {
				if strings.ContainsAny(s, "\x00\r\n") || len(s) > 2000 {
					t.Fatalf("message or hint not sanitised: %q", s)
				}
				if len(c.token) > 100 && strings.Contains(s, c.token) {
					t.Fatal("the token is echoed in a message")
				}
			}
		})
	}
	if hits := canaryHits.Load(); hits != 0 {
		t.Errorf("a URL taken from a token was fetched %d times", hits)
	}
}

// Oversized input is refused before any decoding: in microseconds, whatever its size.
func TestValidate_HugeTokenIsFast(t *testing.T) {
	ctx := testContext(t)
	v := newValidator(t, ctx, service.IssuerConfig{Issuer: "https://static.example", JWKSFile: writeJWKS(t, newEdKey(t, "ed-1"))})
	huge := segment(t, map[string]any{"alg": "EdDSA"}) + "." + strings.Repeat("A", 1<<20) + ".AAAA"
	for name, tok := range map[string]string{"1 MiB": huge, "a million dots": strings.Repeat(".", 1<<20), "1 MiB of spaces around": strings.Repeat(" ", 1<<19) + "x" + strings.Repeat(" ", 1<<19)} {
		best := time.Hour
		for range 5 {
			start := time.Now()
			got := v.Validate(ctx, tok, "api/users", nil)
			best = min(best, time.Since(start))
			checkVerdict(t, got, service.ReasonMalformed)
		}
		if best > 5*time.Millisecond {
			t.Errorf("%s: rejected in %v at best; the size check must come before decoding", name, best)
		}
	}
}

func sha256Sum(s string) []byte {
	d := sha256.Sum256([]byte(s))
	return d[:]
}

// addL returns the Ed25519 signature with L added to its S half (little
// endian): the same point equation, a non-canonical encoding.
func addL(sig []byte) []byte {
	l, _ := new(big.Int).SetString("7237005577332262213973186563042994240857116359379907606001950938285454250989", 10)
	le := func(b []byte) []byte { out := slices.Clone(b); slices.Reverse(out); return out }
	sv := new(big.Int).SetBytes(le(sig[32:]))
	sv.Add(sv, l)
	out := slices.Clone(sig)
	copy(out[32:], le(sv.FillBytes(make([]byte, 32))))
	return out
}
