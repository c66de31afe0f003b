package config_test

import (
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/config"
)

// TestParse_Console: console is off by default, true turns it on with an
// http_listen, and it never relaxes what that listener needs off loopback.
func TestParse_Console(t *testing.T) {
	off, err := config.Parse([]byte(minimal + "http_listen: 127.0.0.1:8080\n"))
	if err != nil {
		t.Fatal(err)
	}
	if off.Console {
		t.Fatal("console on without the key")
	}
	on, err := config.Parse([]byte(minimal + "http_listen: 127.0.0.1:8080\nconsole: true\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !on.Console {
		t.Fatal("console: true not read")
	}
	tlsOff, err := config.Parse([]byte(minimal + "http_listen: 0.0.0.0:8443\nconsole: true\ntls:\n  cert_file: c.pem\n  key_file: k.pem\n"))
	if err != nil || !tlsOff.Console || tlsOff.TLS == nil {
		t.Fatalf("console on a TLS listener off loopback: %v", err)
	}

	for _, c := range []struct {
		name, yaml, key string
		want            []string
	}{
		{"console without http_listen", minimal + "console: true\n", "console", []string{"needs http_listen", "/console/"}},
		{"console off loopback without tls", minimal + "http_listen: 0.0.0.0:8080\nconsole: true\n", "http_listen", []string{"not loopback", "tls"}},
		{"console not a bool", minimal + "http_listen: 127.0.0.1:8080\nconsole: yes please\n", "console", nil},
		{"console misspelt", minimal + "http_listen: 127.0.0.1:8080\nconsol: true\n", "consol", []string{"unknown key"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(c.yaml))
			if err == nil || cfg != nil {
				t.Fatalf("accepted: %+v", cfg)
			}
			if !hasLine(err, c.key+": ") {
				t.Fatalf("error %q has no line naming %s", err, c.key)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Fatalf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}
