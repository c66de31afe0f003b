package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/testkit"
)

// doctorIssuer serves discovery and a key set of RSA keys of the given
// sizes, kids "k<bits>"; its discovery document names the issuer that
// discoveryIssuer makes of its URL.
func doctorIssuer(t *testing.T, discoveryIssuer func(self string) string, bits ...int) *testkit.Issuer {
	t.Helper()
	keys := make([]*testkit.Key, len(bits))
	for i, b := range bits {
		keys[i] = testkit.RSAKeyBits(t, "k"+strconv.Itoa(b), b)
	}
	iss := testkit.NewIssuer(t, keys...)
	iss.SetDiscoveryIssuer(discoveryIssuer(iss.URL()))
	return iss
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
	slash := doctorIssuer(t, func(self string) string { return self + "/" }, 2048)
	weak := doctorIssuer(t, func(self string) string { return self }, 2048, 1024)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + lis.Addr().String() + "/jwks.json"
	lis.Close()
	out, code := runDoctorCmd(t, `
issuers:
  - issuer: "`+slash.URL()+`"
    discovery: true
  - issuer: "https://unreachable.example/"
    jwks_uri: "`+dead+`"
  - issuer: "`+weak.URL()+`"
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
		`✗ discovery issuer matches: the document's issuer is "` + slash.URL() + `/" but the configured issuer is "` + slash.URL() + `"`,
		`fix: set issuer to exactly "` + slash.URL() + `/"`,
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
	good := doctorIssuer(t, func(self string) string { return self }, 2048)
	out, code := runDoctorCmd(t, "issuers:\n  - issuer: \""+good.URL()+"\"\n    discovery: true\naudiences:\n  - audience: api/users\n    name: Users API\n")
	if code != 0 || !strings.Contains(out, "All checks passed.") {
		t.Errorf("exit %d:\n%s", code, out)
	}
	out, code = runDoctorCmd(t, "issuers:\n  - issuer: x\n")
	if code != 1 || !strings.Contains(out, "✗ config valid") || !strings.Contains(out, "issuers[0].jwks_uri") {
		t.Errorf("invalid config: exit %d:\n%s", code, out)
	}
}

// TestDoctor_TLSFiles: doctor --config checks the files the tls section
// names as usher serve will load them, and says what is wrong with each.
func TestDoctor_TLSFiles(t *testing.T) {
	good := doctorIssuer(t, func(self string) string { return self }, 2048)
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	ca := testkit.NewCA(t)
	c, k := ca.Issue(t, 1, x509.ExtKeyUsageServerAuth)
	_, otherKey := ca.Issue(t, 2, x509.ExtKeyUsageServerAuth)
	writeFile(t, path("tls.crt"), c)
	writeFile(t, path("tls.key"), k)
	writeFile(t, path("other.key"), otherKey)
	writeFile(t, path("ca.crt"), ca.PEM)
	writeFile(t, path("not-a-ca.crt"), []byte("hello\n"))
	unreadable := path("unreadable.key")
	writeFile(t, unreadable, k)
	if err := os.Chmod(unreadable, 0); err != nil {
		t.Fatal(err)
	}
	conf := func(cert, key, clientCA string) string {
		s := "tls:\n  cert_file: " + cert + "\n  key_file: " + key + "\n"
		if clientCA != "" {
			s += "  client_ca_file: " + clientCA + "\n"
		}
		return s + "issuers:\n  - issuer: \"" + good.URL() + "\"\n    discovery: true\naudiences:\n  - audience: api/users\n    name: Users API\n"
	}
	for _, tc := range []struct {
		name, conf string
		problems   int
		want       []string
	}{
		{"good", conf(path("tls.crt"), path("tls.key"), path("ca.crt")), 0, []string{
			"✓ tls.cert_file readable: " + path("tls.crt"), "✓ certificate and key load as a pair: CN=usher, for 127.0.0.1",
			"✓ certificate valid now: from ", "✓ tls.client_ca_file holds CA certificates: 1: CN=usher test CA", "All checks passed."}},
		{"missing files", conf("/etc/usher/tls.crt", "/etc/usher/tls.key", "/etc/usher/ca.crt"), 3, []string{
			"✗ tls.cert_file readable: open /etc/usher/tls.crt: no such file or directory",
			"fix: put the PEM file at /etc/usher/tls.crt, or point tls.cert_file at it",
			"✗ tls.key_file readable: open /etc/usher/tls.key", "✗ tls.client_ca_file readable: open /etc/usher/ca.crt", "3 problems found."}},
		{"key of another certificate", conf(path("tls.crt"), path("other.key"), ""), 1, []string{
			"✗ certificate and key load as a pair: tls: private key does not match public key", "the PEM private key of that same certificate"}},
		{"no certificate in the client CA file", conf(path("tls.crt"), path("tls.key"), path("not-a-ca.crt")), 1, []string{
			"✗ tls.client_ca_file holds CA certificates: no PEM certificate"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, code := runDoctorCmd(t, tc.conf)
			if (code == 0) != (tc.problems == 0) {
				t.Errorf("exit %d with %d problems expected:\n%s", code, tc.problems, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("doctor output lacks %q:\n%s", w, out)
				}
			}
		})
	}
	if os.Geteuid() != 0 { // root reads any file
		out, _ := runDoctorCmd(t, conf(path("tls.crt"), unreadable, ""))
		if !strings.Contains(out, "✗ tls.key_file readable: open "+unreadable+": permission denied") {
			t.Errorf("an unreadable key_file:\n%s", out)
		}
	}
}

// TestDoctor_ExpiredCertificate: a certificate past its NotAfter is a ✗.
func TestDoctor_ExpiredCertificate(t *testing.T) {
	ca := testkit.NewCA(t)
	c, k := ca.Issue(t, 1, x509.ExtKeyUsageServerAuth)
	later := time.Now().Add(3 * time.Hour) // the test CA's certificates live an hour
	checks := keyPairChecks("tls", c, k, later)
	if len(checks) != 2 || !checks[0].OK || checks[1].OK || !strings.Contains(checks[1].Detail, "expired") || !strings.Contains(checks[1].Fix, "renew") {
		t.Errorf("an expired certificate: %+v", checks)
	}
	if checks := keyPairChecks("tls", c, k, time.Now()); len(checks) != 2 || !checks[1].OK {
		t.Errorf("a current certificate: %+v", checks)
	}
}

// TestDoctor_JSONAndSecretFile: doctor --json reports each check with its
// name, ok and detail, and a missing client_secret_file fails like a TLS
// file does.
func TestDoctor_JSONAndSecretFile(t *testing.T) {
	good := doctorIssuer(t, func(self string) string { return self }, 2048)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	writeFile(t, path, []byte("issuers:\n  - issuer: \""+good.URL()+"\"\n    discovery: true\n    introspection:\n      endpoint: \""+good.URL()+"/introspect\"\n      client_id: usher\n      client_secret_file: /etc/usher/absent.secret\n"))
	var out bytes.Buffer
	err := run(context.Background(), []string{"doctor", "--json", "--config", path}, nil, &out, io.Discard)
	var report struct {
		Target   string `json:"target"`
		OK       bool   `json:"ok"`
		Problems int    `json:"problems"`
		Checks   []struct {
			Subject, Name, Detail, Fix string
			OK                         bool
		} `json:"checks"`
	}
	if jerr := json.Unmarshal(out.Bytes(), &report); jerr != nil || !errors.Is(err, errChecksFailed) || report.OK || report.Target != path || report.Problems != 1 {
		t.Fatalf("doctor --json: err %v, json %v:\n%s", err, jerr, out.String())
	}
	var secret bool
	for _, c := range report.Checks {
		if c.Name == "introspection client secret readable" {
			secret = !c.OK && strings.Contains(c.Detail, "/etc/usher/absent.secret") && c.Fix != ""
		}
		if c.OK && c.Fix != "" {
			t.Errorf("a passed check carries a fix: %+v", c)
		}
	}
	if !secret {
		t.Errorf("no failed check names the missing client_secret_file:\n%s", out.String())
	}
}
