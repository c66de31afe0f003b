package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

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
