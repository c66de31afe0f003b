package interop

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// header is a JWS's protected header, for checking which key the provider
// signed with (the test's own look, not usher's).
func header(t *testing.T, token string) map[string]any {
	t.Helper()
	seg, _, ok := strings.Cut(token, ".")
	if !ok {
		t.Fatal("not a JWS: the provider issued an opaque token where a JWT was expected")
	}
	b, err := base64.RawURLEncoding.DecodeString(seg)
	if err != nil {
		t.Fatalf("JWS header: %v", err)
	}
	var h map[string]any
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("JWS header: %v", err)
	}
	return h
}

// requireOpaque fails the test unless the provider's token is opaque (not a
// compact JWS shape), as usher routes it.
func requireOpaque(t *testing.T, token string) {
	t.Helper()
	if strings.Count(token, ".") == 2 {
		t.Fatal("the provider issued a JWT where an opaque token was expected (server.js's RESOURCES)")
	}
}
