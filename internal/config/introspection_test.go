package config_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/service"
)

func TestParse_Introspection(t *testing.T) {
	cfg, err := config.Parse([]byte(`
issuers:
  - issuer: https://auth.example.com/
    jwks_uri: https://auth.example.com/keys
    introspection:
      endpoint: https://auth.example.com/oauth2/introspect
      client_id: usher
      client_secret_file: /etc/usher/introspection.secret
      token_prefixes: [ory_at_]
      cache_ttl: 30s
  - issuer: https://opaque.example.com
    introspection:
      endpoint: https://opaque.example.com/introspect
      client_id: usher
      client_secret_file: /etc/usher/opaque.secret
  - issuer: https://disco.example.com
    discovery: true
    introspection:
      client_id: usher
      client_secret_file: /etc/usher/disco.secret
`))
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Engine.Issuers[0].Introspection
	if a == nil || a.Endpoint != "https://auth.example.com/oauth2/introspect" || a.ClientID != "usher" ||
		a.ClientSecretFile != "/etc/usher/introspection.secret" || !slices.Equal(a.TokenPrefixes, []string{"ory_at_"}) ||
		a.CacheTTL != 30*time.Second || a.NegativeCacheTTL != service.DefaultIntrospectionNegativeTTL || a.Timeout != service.DefaultIntrospectionTimeout {
		t.Fatalf("issuers[0].introspection = %+v", a)
	}
	if b := cfg.Engine.Issuers[1]; b.Introspection == nil || b.JWKSURI != "" || b.Introspection.CacheTTL != service.DefaultIntrospectionCacheTTL {
		t.Fatalf("an issuer of opaque tokens only: %+v", b)
	}
	if c := cfg.Engine.Issuers[2].Introspection; c == nil || c.Endpoint != "" {
		t.Fatalf("the endpoint from discovery: %+v", c)
	}
	if cfg.Engine.Issuers[0].Introspection.ClientSecretFile == "" {
		t.Fatal("no secret file")
	}
}

func TestParse_IntrospectionBad(t *testing.T) {
	const head = "issuers:\n  - issuer: https://a.example\n"
	const good = "    introspection:\n      endpoint: https://a.example/introspect\n      client_id: usher\n      client_secret_file: s\n"
	for _, c := range []struct{ name, yaml, want string }{
		{"no key source and no introspection", head, "issuers[0].jwks_uri: give exactly one"},
		{"no endpoint without discovery", head + "    introspection:\n      client_id: usher\n      client_secret_file: s\n", "issuers[0].introspection.endpoint: empty"},
		{"no client id", head + "    introspection:\n      endpoint: https://a.example/i\n      client_secret_file: s\n", "issuers[0].introspection.client_id: empty"},
		{"no secret file", head + "    introspection:\n      endpoint: https://a.example/i\n      client_id: usher\n", "issuers[0].introspection.client_secret_file: empty"},
		{"an inline secret", head + good + "      client_secret: hunter2\n", "issuers[0].introspection.client_secret: unknown key"},
		{"plain http off loopback", head + "    introspection:\n      endpoint: http://a.example/i\n      client_id: usher\n      client_secret_file: s\n", "tokens and usher's client credentials would travel without TLS"},
		{"negative cache_ttl", head + good + "      cache_ttl: -1s\n", "issuers[0].introspection.cache_ttl: negative"},
		{"timeout over a minute", head + good + "      timeout: 2m\n", "issuers[0].introspection.timeout: 2m0s is over 1m"},
		{"a prefix with a dot", head + good + "      token_prefixes: [\"ory.at\"]\n", "issuers[0].introspection.token_prefixes[0]"},
		{"overlapping prefixes of two issuers", head + good + "      token_prefixes: [ory_]\n  - issuer: https://b.example\n" + strings.ReplaceAll(good, "a.example", "b.example") + "      token_prefixes: [ory_at_]\n",
			"issuers[1].introspection.token_prefixes[0]: \"ory_at_\" overlaps \"ory_\""},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := config.Parse([]byte(c.yaml))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want it to contain %q", err, c.want)
			}
		})
	}
	// Prefixes of one issuer may overlap each other: they name the same issuer.
	if _, err := config.Parse([]byte(head + good + "      token_prefixes: [ory_, ory_at_]\n")); err != nil {
		t.Fatalf("overlapping prefixes of one issuer: %v", err)
	}
}
