package main

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// tlsUsher is a usher serve on 127.0.0.1 over TLS, with the files a client
// needs: the CA that signed its certificate, and for mTLS a client
// certificate from the CA it trusts.
type tlsUsher struct {
	addr, caFile, clientCert, clientKey string
	iss                                 *devissuer.Issuer
}

// startTLSUsher serves TLS with a certificate for hosts; with mTLS, clients
// need a certificate from another CA, named in tls.client_ca_file. The
// config is YAML, as a user writes it.
func startTLSUsher(t *testing.T, mTLS bool, hosts ...string) *tlsUsher {
	t.Helper()
	dir := t.TempDir()
	path := func(name string) string { return filepath.Join(dir, name) }
	serverCA := testkit.NewCA(t)
	c, k := serverCA.IssueFor(t, 10, x509.ExtKeyUsageServerAuth, hosts...)
	writeFile(t, path("tls.crt"), c)
	writeFile(t, path("tls.key"), k)
	writeFile(t, path("ca.crt"), serverCA.PEM)
	u := &tlsUsher{caFile: path("ca.crt"), iss: testkit.DevIssuer(t)}
	conf := fmt.Sprintf("listen: 127.0.0.1:0\ntls:\n  cert_file: %s\n  key_file: %s\n", path("tls.crt"), path("tls.key"))
	if mTLS {
		clientCA := testkit.NewCA(t)
		writeFile(t, path("clients-ca.crt"), clientCA.PEM)
		cc, ck := clientCA.Issue(t, 20, x509.ExtKeyUsageClientAuth)
		u.clientCert, u.clientKey = path("client.crt"), path("client.key")
		writeFile(t, u.clientCert, cc)
		writeFile(t, u.clientKey, ck)
		conf += "  client_ca_file: " + path("clients-ca.crt") + "\n"
	}
	conf += fmt.Sprintf("issuers:\n  - issuer: %s\n    discovery: true\naudiences:\n  - audience: api/users\n    name: Users API\n", u.iss.URL())
	cfg, err := config.Parse([]byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	u.addr = startServe(t, serveOptions{cfg: cfg, log: discardLogger()})
	return u
}

func (u *tlsUsher) token(t *testing.T) string {
	return testkit.Mint(t, u.iss, devissuer.MintRequest{Audience: []string{"api/users"}})
}

// wantFailure: the command failed (not with a verdict), and its message
// holds each of wants.
func wantFailure(t *testing.T, what string, out string, err error, wants ...string) {
	t.Helper()
	if err == nil || errors.Is(err, errNotValid) {
		t.Errorf("%s: err = %v, want a failure; stdout:\n%s", what, err, out)
		return
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%s: the message lacks %q:\n%v", what, w, err)
		}
	}
}

// TestClient_TLS: the client commands reach a TLS usher with --cacert (or
// USHER_CACERT), and say which flag is missing when they cannot.
func TestClient_TLS(t *testing.T) {
	u := startTLSUsher(t, false, "127.0.0.1")
	tok := u.token(t)

	out, err := runCmd(t, "validate", "--addr", u.addr, "--audience", "api/users", tok)
	wantFailure(t, "plaintext (loopback default) to a TLS usher", out, err, "dialled in plaintext", "--cacert FILE")
	out, err = runCmd(t, "validate", "--addr", u.addr, "--tls", "--audience", "api/users", tok)
	wantFailure(t, "TLS with the system's roots", out, err, "dialled over TLS", "not signed by a CA this command trusts", "--cacert FILE (or USHER_CACERT)")
	other := filepath.Join(t.TempDir(), "other-ca.crt")
	writeFile(t, other, testkit.NewCA(t).PEM)
	out, err = runCmd(t, "validate", "--addr", u.addr, "--cacert", other, "--audience", "api/users", tok)
	wantFailure(t, "another CA", out, err, "--cacert FILE")
	_, err = runCmd(t, "validate", "--addr", u.addr, "--cacert", filepath.Join(t.TempDir(), "absent.crt"), "--audience", "api/users", tok)
	wantFailure(t, "a CA file that does not exist", "", err, "--cacert: open ", "absent.crt")

	if out, err := runCmd(t, "validate", "--addr", u.addr, "--cacert", u.caFile, "--audience", "api/users", tok); err != nil || !strings.HasPrefix(out, "VALID") {
		t.Errorf("validate --cacert: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "inspect", "--addr", u.addr, "--cacert", u.caFile, tok); err != nil || !strings.Contains(out, "accepted by: api/users") {
		t.Errorf("inspect --cacert: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "doctor", "--addr", u.addr, "--cacert", u.caFile); err != nil || !strings.Contains(out, "✓ health SERVING") {
		t.Errorf("doctor --addr --cacert: %v\n%s", err, out)
	}
	// The environment instead of flags: USHER_ADDR and USHER_CACERT.
	t.Setenv(envAddr, u.addr)
	t.Setenv(envCACert, u.caFile)
	if out, err := runCmd(t, "validate", "--audience", "api/users", tok); err != nil || !strings.HasPrefix(out, "VALID") {
		t.Errorf("validate with USHER_ADDR and USHER_CACERT: %v\n%s", err, out)
	}
	if out, err := runCmd(t, "mint", "--audience", "api/users", "--json"); err != nil || !strings.Contains(out, `"access_token": "eyJ`) {
		t.Errorf("mint through a TLS usher with USHER_ADDR and USHER_CACERT: %v\n%s", err, out)
	}
	out, err = runCmd(t, "doctor", "--json")
	var report struct {
		Target string `json:"target"`
		OK     bool   `json:"ok"`
	}
	if err != nil || json.Unmarshal([]byte(out), &report) != nil || !report.OK || report.Target != "usher at "+u.addr {
		t.Errorf("doctor --json with USHER_ADDR and USHER_CACERT: %v\n%s", err, out)
	}
	// A flag wins over its variable: --plaintext sets USHER_CACERT aside.
	out, err = runCmd(t, "validate", "--plaintext", "--audience", "api/users", tok)
	wantFailure(t, "--plaintext over USHER_CACERT", out, err, "dialled in plaintext")
	_, err = runCmd(t, "validate", "--plaintext", "--cacert", u.caFile, "--audience", "api/users", tok)
	if ue := (usageError{}); !errors.As(err, &ue) {
		t.Errorf("--plaintext with --cacert: %v, want a usage error", err)
	}
}

// TestClient_MutualTLS: a usher with tls.client_ca_file is reached with
// --cert and --key (or USHER_CERT, USHER_KEY), and --servername when its
// certificate does not name the address dialled.
func TestClient_MutualTLS(t *testing.T) {
	u := startTLSUsher(t, true, "usher.internal")
	tok := u.token(t)
	validate := func(extra ...string) (string, error) {
		return runCmd(t, append(append([]string{"validate", "--addr", u.addr, "--audience", "api/users"}, extra...), tok)...)
	}
	out, err := validate("--cacert", u.caFile, "--cert", u.clientCert, "--key", u.clientKey)
	wantFailure(t, "a certificate for another name", out, err, "--servername NAME (or USHER_SERVERNAME)")
	out, err = validate("--cacert", u.caFile, "--servername", "usher.internal")
	wantFailure(t, "no client certificate", out, err, "requires a client certificate (mTLS, tls.client_ca_file)", "--cert FILE --key FILE")
	strangerCA := testkit.NewCA(t)
	sc, sk := strangerCA.Issue(t, 30, x509.ExtKeyUsageClientAuth)
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "s.crt"), sc)
	writeFile(t, filepath.Join(dir, "s.key"), sk)
	out, err = validate("--cacert", u.caFile, "--servername", "usher.internal", "--cert", filepath.Join(dir, "s.crt"), "--key", filepath.Join(dir, "s.key"))
	wantFailure(t, "a client certificate from a CA usher does not trust", out, err, "refused the client certificate", "tls.client_ca_file")
	_, err = validate("--cacert", u.caFile, "--cert", u.clientCert)
	if ue := (usageError{}); !errors.As(err, &ue) || !strings.Contains(err.Error(), "--key FILE") {
		t.Errorf("--cert without --key: %v, want a usage error naming --key", err)
	}

	if out, err := validate("--cacert", u.caFile, "--servername", "usher.internal", "--cert", u.clientCert, "--key", u.clientKey); err != nil || !strings.HasPrefix(out, "VALID") {
		t.Errorf("validate over mTLS: %v\n%s", err, out)
	}
	t.Setenv(envCACert, u.caFile)
	t.Setenv(envServerName, "usher.internal")
	t.Setenv(envCert, filepath.Join(dir, "s.crt")) // the wrong one: the flags below win
	t.Setenv(envKey, filepath.Join(dir, "s.key"))
	if out, err := validate("--cert", u.clientCert, "--key", u.clientKey); err != nil || !strings.HasPrefix(out, "VALID") {
		t.Errorf("validate over mTLS, --cert and --key over USHER_CERT and USHER_KEY: %v\n%s", err, out)
	}
	t.Setenv(envCert, u.clientCert)
	t.Setenv(envKey, u.clientKey)
	if out, err := runCmd(t, "doctor", "--addr", u.addr); err != nil || !strings.Contains(out, "✓ keys held") {
		t.Errorf("doctor over mTLS from the environment: %v\n%s", err, out)
	}
}

// TestClient_TLSToPlaintextUsher: TLS flags against a plaintext usher say so.
func TestClient_TLSToPlaintextUsher(t *testing.T) {
	b, _, _, _ := startDevInProcess(t)
	ca := filepath.Join(t.TempDir(), "ca.crt")
	writeFile(t, ca, testkit.NewCA(t).PEM)
	out, err := runCmd(t, "validate", "--addr", b.addr, "--cacert", ca, "--audience", "api/users", b.users)
	wantFailure(t, "TLS to a plaintext usher", out, err, "serves plaintext, not TLS", "--plaintext")
}

func TestLoopbackTarget(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:50051": true, "localhost:50051": true, "[::1]:50051": true, "dns:///localhost:50051": true,
		"unix:///run/usher.sock": true, "usher.platform.svc:50051": false, "dns:///usher-headless.platform.svc.cluster.local:50051": false,
		"10.0.0.7:50051": false,
	} {
		if got := loopbackTarget(addr); got != want {
			t.Errorf("loopbackTarget(%q) = %v, want %v", addr, got, want)
		}
	}
}
