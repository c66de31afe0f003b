package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// jwksOf publishes RSA public keys of the given sizes, kids "k<bits>",
// written by hand (jwx refuses to build a weak key).
func jwksOf(t *testing.T, bits ...int) []byte {
	t.Helper()
	var keys []map[string]string
	for _, b := range bits {
		priv, err := rsa.GenerateKey(rand.Reader, b)
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, map[string]string{
			"kty": "RSA", "kid": "k" + strconv.Itoa(b),
			"n": base64.RawURLEncoding.EncodeToString(priv.N.Bytes()),
			"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(priv.E)).Bytes()),
		})
	}
	out, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fakeIssuer serves discovery (claiming discoveryIssuer, or its own URL) and a JWKS.
func fakeIssuer(t *testing.T, keys []byte, discoveryIssuer func(self string) string) *httptest.Server {
	t.Helper()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]string{"issuer": discoveryIssuer(srv.URL), "jwks_uri": srv.URL + "/jwks.json"})
		case "/jwks.json":
			w.Write(keys)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

func runDoctorCmd(t *testing.T, conf string) (string, int) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "usher.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err := run(context.Background(), []string{"doctor", "--config", path}, nil, &out, &out)
	return out.String(), exitCode(err, &out)
}

func TestDoctor_FindsEveryProblem(t *testing.T) {
	slash := fakeIssuer(t, jwksOf(t, 2048), func(self string) string { return self + "/" })
	weak := fakeIssuer(t, jwksOf(t, 2048, 1024), func(self string) string { return self })
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + lis.Addr().String() + "/jwks.json"
	lis.Close()
	out, code := runDoctorCmd(t, `
issuers:
  - issuer: "`+slash.URL+`"
    discovery: true
  - issuer: "https://unreachable.example/"
    jwks_uri: "`+dead+`"
  - issuer: "`+weak.URL+`"
    discovery: true
    algorithms: ["RS256"]
audiences:
  - audience: api/users
    name: Users API
  - audience: api/invoices
`)
	if code != 1 {
		t.Errorf("exit %d, want 1:\n%s", code, out)
	}
	for _, want := range []string{
		"✓ discovery document reachable",
		`✗ discovery issuer matches: the document's issuer is "` + slash.URL + `/" but the configured issuer is "` + slash.URL + `"`,
		`fix: set issuer to exactly "` + slash.URL + `/"`,
		"✗ key set reachable: Get \"" + dead,
		"✓ key set usable: 1 usable keys",
		`✗ key dropped: keys[1]: key "k1024"`,
		"✓ keys match the configured algorithms: keys for RS256",
		`✗ audiences[1] has a name: "api/invoices" has no name`,
		"4 problems found.",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
}

func TestDoctor_AllGood(t *testing.T) {
	good := fakeIssuer(t, jwksOf(t, 2048), func(self string) string { return self })
	out, code := runDoctorCmd(t, "issuers:\n  - issuer: \""+good.URL+"\"\n    discovery: true\naudiences:\n  - audience: api/users\n    name: Users API\n")
	if code != 0 || !strings.Contains(out, "All checks passed.") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	out, code = runDoctorCmd(t, "issuers:\n  - issuer: x\n")
	if code != 1 || !strings.Contains(out, "✗ config valid") || !strings.Contains(out, "issuers[0].jwks_uri") {
		t.Errorf("invalid config: exit %d:\n%s", code, out)
	}
}
