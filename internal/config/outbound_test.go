package config_test

import (
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/config"
)

// TestParse_AllowPrivateNetwork: the issuer key allow_private_network
// reaches the engine; without it an issuer is public-only.
func TestParse_AllowPrivateNetwork(t *testing.T) {
	c, err := config.Parse([]byte("issuers:\n  - issuer: https://login.corp.example\n    discovery: true\n    allow_private_network: true\n  - issuer: https://a.example\n    discovery: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if is := c.Engine.Issuers; !is[0].AllowPrivateNetwork || is[1].AllowPrivateNetwork {
		t.Fatalf("allow_private_network = %v, %v; want true, false", is[0].AllowPrivateNetwork, is[1].AllowPrivateNetwork)
	}
	_, err = config.Parse([]byte("issuers:\n  - issuer: https://a.example\n    discovery: true\n    allow_private_network: maybe\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "issuers[0].allow_private_network: ") {
		t.Fatalf("a non-boolean allow_private_network: %v", err)
	}
}

// TestParse_NeverFetchedAddresses: a key set or discovery URL that writes a
// link-local or cloud metadata address out is a configuration error, in
// every form, whatever allow_private_network says.
func TestParse_NeverFetchedAddresses(t *testing.T) {
	for _, c := range []struct{ src, key string }{
		{"    jwks_uri: https://169.254.169.254/latest/meta-data/\n", "issuers[0].jwks_uri: "},
		{"    jwks_uri: https://[fd00:ec2::254]/latest/meta-data/\n", "issuers[0].jwks_uri: "},
		{"    jwks_uri: https://[64:ff9b::a9fe:a9fe]/keys\n", "issuers[0].jwks_uri: "},
		{"    jwks_uri: https://[::ffff:169.254.169.254]/keys\n", "issuers[0].jwks_uri: "},
		{"    jwks_uri: https://100.100.100.200/keys\n    allow_private_network: true\n", "issuers[0].jwks_uri: "},
		{"    jwks_uri: https://0.0.0.0/keys\n", "issuers[0].jwks_uri: "},
	} {
		_, err := config.Parse([]byte("issuers:\n  - issuer: https://a.example\n" + c.src))
		if err == nil || !strings.HasPrefix(err.Error(), c.key) || !strings.Contains(err.Error(), "never fetches") {
			t.Errorf("%s: %v", strings.TrimSpace(c.src), err)
		}
	}
	_, err := config.Parse([]byte("issuers:\n  - issuer: https://169.254.169.254\n    discovery: true\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "issuers[0].discovery: ") || !strings.Contains(err.Error(), "never fetches") {
		t.Errorf("discovery from a metadata address: %v", err)
	}
	// Loopback and private addresses written out in the file are named by
	// the operator: accepted as before.
	for _, src := range []string{
		"issuers:\n  - issuer: https://a.example\n    jwks_uri: http://127.0.0.1:9/jwks.json\n",
		"issuers:\n  - issuer: https://a.example\n    jwks_uri: https://10.0.0.5/jwks.json\n",
		"issuers:\n  - issuer: https://10.0.0.5\n    discovery: true\n",
	} {
		if _, err := config.Parse([]byte(src)); err != nil {
			t.Errorf("%q: %v", src, err)
		}
	}
}
