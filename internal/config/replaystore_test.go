package config_test

import (
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/config"
)

// dpop.replay_store: empty keeps the replay cache in memory; a redis:// or
// rediss:// URL with a host is taken as written; anything else is one error
// line that names the key and what to write, and never shows a password.
func TestParse_ReplayStore(t *testing.T) {
	for yaml, want := range map[string]string{
		"":                              "",
		"dpop:\n  iat_window: 30s\n":    "",
		"dpop:\n  replay_store: \"\"\n": "",
		"dpop:\n  replay_store: redis://redis.internal:6379/0\n":    "redis://redis.internal:6379/0",
		"dpop:\n  replay_store: rediss://:pw@redis.internal:6380\n": "rediss://:pw@redis.internal:6380",
	} {
		cfg, err := config.Parse([]byte(minimal + yaml))
		if err != nil {
			t.Errorf("%q: %v", yaml, err)
			continue
		}
		if cfg.ReplayStore != want {
			t.Errorf("%q: ReplayStore = %q, want %q", yaml, cfg.ReplayStore, want)
		}
	}
	const pw = "Pa55w0rd-s3cret"
	for value, want := range map[string]string{
		"redis.internal:6379":                     "write it as redis://redis.internal:6379/0",
		"127.0.0.1:6379":                          "write it as redis://127.0.0.1:6379/0",
		"http://redis.internal:6379":              "redis:// or rediss://",
		"memcached://redis.internal:11211":        "redis:// or rediss://",
		"redis://":                                "has no host",
		"redis://redis.internal:6379/zero":        "invalid database number",
		"redis://redis.internal:6379/0?timeout=1": "query parameters",
		"redis://:" + pw + "@redis.internal:x/0":  "percent-encoded",
		"redis://:" + pw + "@redis.internal/0?a=": "query parameters",
	} {
		_, err := config.Parse([]byte(minimal + "dpop:\n  replay_store: \"" + value + "\"\n"))
		if err == nil {
			t.Errorf("replay_store %q: accepted", value)
			continue
		}
		checkLines(t, err)
		if !hasLine(err, "dpop.replay_store: ") || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "in memory") {
			t.Errorf("replay_store %q: %v\nwant a dpop.replay_store line with %q and the in-memory alternative", value, err, want)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("replay_store %q: the error shows the password: %v", value, err)
		}
	}
}

// Validate, for a Config built in Go (usher dev, tests), checks the URL too.
func TestValidate_ReplayStore(t *testing.T) {
	cfg, err := config.Parse([]byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	cfg.ReplayStore = "valkey://127.0.0.1:6379"
	if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), "dpop.replay_store: ") {
		t.Errorf("Validate = %v, want a dpop.replay_store error", err)
	}
}
