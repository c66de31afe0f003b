package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

var (
	addrRE   = regexp.MustCompile(`(?m)^  gRPC\s+(\S+)`)
	tokensRE = regexp.MustCompile(`(?m)^  tokens\s+(\S+)`)
)

// devBanner is what `usher dev` printed: its address, the directory of its
// token files, and two of the tokens, read from there.
type devBanner struct{ addr, dir, users, invoices string }

func waitBanner(t *testing.T, read func() string) devBanner {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		out := read()
		if strings.Contains(out, "Ctrl-C stops.") {
			a, d := addrRE.FindStringSubmatch(out), tokensRE.FindStringSubmatch(out)
			if a == nil || d == nil {
				t.Fatalf("banner lacks the address or the token directory:\n%s", out)
			}
			return devBanner{addr: a[1], dir: d[1], users: readTokenFile(t, d[1], devUsersJWT), invoices: readTokenFile(t, d[1], devInvoicesJWT)}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("usher dev printed no banner within 20s:\n%s", read())
	return devBanner{}
}

// readTokenFile is a token usher dev wrote into dir.
func readTokenFile(t *testing.T, dir, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatalf("usher dev's token file: %v", err)
	}
	return strings.TrimSpace(string(b))
}

func dialUsher(t *testing.T, addr string) (usherv1.TokenServiceClient, healthpb.HealthClient) {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return usherv1.NewTokenServiceClient(conn), healthpb.NewHealthClient(conn)
}

func waitServing(t *testing.T, hc healthpb.HealthClient) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "usher.v1.TokenService"})
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("health never reached SERVING (last: %v, %v)", resp.GetStatus(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// runCmd runs one client command in process and returns its stdout and error.
func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, args, strings.NewReader(""), &out, &errOut)
	if err != nil && !errors.Is(err, errNotValid) {
		t.Logf("usher %s: stderr: %s", strings.Join(args, " "), errOut.String())
	}
	return out.String(), err
}

// TestDev_EndToEnd runs `usher dev` in process on a loopback port and drives
// it over real gRPC and with the client commands, as a user would.
func TestDev_EndToEnd(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testkit.SyncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, strings.NewReader(""), &stdout, &stderr)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("usher dev returned %v after cancel", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("usher dev did not stop within 15s of cancel")
		}
	})
	b := waitBanner(t, stdout.String)
	c, hc := dialUsher(t, b.addr)
	waitServing(t, hc)

	call, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	ok, err := c.ValidateToken(call, &usherv1.ValidateTokenRequest{Token: b.users, ExpectedAudience: "api/users"})
	if err != nil || !ok.GetValid() || ok.GetReason() != usherv1.Reason_REASON_VALID {
		t.Fatalf("users token at api/users: %v %v", ok, err)
	}
	if got := ok.GetClaims().GetAudience(); len(got) != 1 || got[0] != "api/users" {
		t.Errorf("claims audience = %v", got)
	}
	bad, err := c.ValidateToken(call, &usherv1.ValidateTokenRequest{Token: "Bearer " + b.users, ExpectedAudience: "api/invoices"})
	if err != nil {
		t.Fatal(err)
	}
	if bad.GetValid() || bad.GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH {
		t.Fatalf("users token at api/invoices: %v", bad)
	}
	m := bad.GetMismatch()
	if m.GetClaim() != "aud" || strings.Join(m.GetExpected(), ",") != "api/invoices" || strings.Join(m.GetActual(), ",") != "api/users" {
		t.Errorf("mismatch = %v", m)
	}
	if !strings.Contains(bad.GetHint(), "Users API") || !strings.Contains(bad.GetHint(), "api/invoices") {
		t.Errorf("hint does not name the API the token was issued for and the fix: %q", bad.GetHint())
	}
	if bad.GetMessage() != "token audience [api/users] does not include api/invoices" {
		t.Errorf("message = %q", bad.GetMessage())
	}

	// The client commands against the same usher.
	tok, err := runCmd(t, "mint", "--addr", b.addr, "--audience", "api/invoices", "--scope", "invoices.read")
	if err != nil {
		t.Fatalf("mint: %v", err)
	}
	tok = strings.TrimSpace(tok)
	if strings.Count(tok, ".") != 2 || strings.ContainsAny(tok, " \n") {
		t.Fatalf("mint printed %q, want one compact JWS alone", tok)
	}
	out, err := runCmd(t, "validate", "--addr", b.addr, "--audience", "api/invoices", "--scope", "invoices.read", tok)
	if err != nil || !strings.HasPrefix(out, "VALID") {
		t.Errorf("validate minted invoices token: err=%v out:\n%s", err, out)
	}
	out, err = runCmd(t, "validate", "--addr", b.addr, "--audience", "api/users", tok)
	if !errors.Is(err, errNotValid) || !strings.HasPrefix(out, "AUDIENCE_MISMATCH") || !strings.Contains(out, "Invoices API (api/invoices)") {
		t.Errorf("validate invoices token at api/users: err=%v out:\n%s", err, out)
	}
	out, err = runCmd(t, "validate", "--addr", b.addr, "--audience", "api/invoices", "--scope", "invoices.write", tok)
	if !errors.Is(err, errNotValid) || !strings.HasPrefix(out, "INSUFFICIENT_SCOPE") {
		t.Errorf("validate with a scope not granted: err=%v out:\n%s", err, out)
	}
	out, err = runCmd(t, "validate", "--addr", b.addr, "--json", "--audience", "api/users", tok)
	var resp usherv1.ValidateTokenResponse
	if !errors.Is(err, errNotValid) || protojson.Unmarshal([]byte(out), &resp) != nil || resp.GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH {
		t.Errorf("validate --json: err=%v out:\n%s", err, out)
	}

	expired, err := runCmd(t, "mint", "--addr", b.addr, "--audience", "api/users", "--ttl", "-10m")
	if err != nil {
		t.Fatal(err)
	}
	out, _ = runCmd(t, "validate", "--addr", b.addr, "--audience", "api/users", strings.TrimSpace(expired))
	if !strings.HasPrefix(out, "EXPIRED") || !strings.Contains(out, "ago") {
		t.Errorf("expired token:\n%s", out)
	}
	unknown, err := runCmd(t, "mint", "--addr", b.addr, "--audience", "api/users", "--kid", "rotated-away")
	if err != nil {
		t.Fatal(err)
	}
	out, _ = runCmd(t, "validate", "--addr", b.addr, "--audience", "api/users", strings.TrimSpace(unknown))
	if !strings.HasPrefix(out, "UNKNOWN_KEY") || !strings.Contains(out, devissuer.KeyRS256) {
		t.Errorf("unknown kid: want UNKNOWN_KEY naming the published kids:\n%s", out)
	}
	for _, kid := range []string{devissuer.KeyES256, devissuer.KeyEdDSA} {
		tk, err := runCmd(t, "mint", "--addr", b.addr, "--audience", "api/users", "--kid", kid)
		if err != nil {
			t.Fatal(err)
		}
		if out, err := runCmd(t, "validate", "--addr", b.addr, "--audience", "api/users", strings.TrimSpace(tk)); err != nil {
			t.Errorf("token signed with %s: %v\n%s", kid, err, out)
		}
	}

	out, err = runCmd(t, "inspect", "--addr", b.addr, b.users)
	if err != nil || !strings.Contains(out, "signature  VALID") || !strings.Contains(out, "accepted by: api/users (Users API)") {
		t.Errorf("inspect: err=%v out:\n%s", err, out)
	}
	forged := b.users[:strings.LastIndexByte(b.users, '.')] + "." + strings.Repeat("A", 342)
	out, _ = runCmd(t, "inspect", "--addr", b.addr, forged)
	if !strings.Contains(out, "INVALID_SIGNATURE") || !strings.Contains(out, "UNVERIFIED") || strings.Contains(out, "accepted by") {
		t.Errorf("inspect forged token:\n%s", out)
	}
	out, err = runCmd(t, "doctor", "--addr", b.addr)
	if err != nil || !strings.Contains(out, "✓ health SERVING") || !strings.Contains(out, "✓ keys held: dev-eddsa, dev-es256, dev-rs256") {
		t.Errorf("doctor --addr: err=%v out:\n%s", err, out)
	}
	if strings.Contains(stderr.String(), b.users) {
		t.Error("a raw token appeared in usher's log output")
	}
}

func TestServe_RejectsBadConfigWithOneLinePerProblem(t *testing.T) {
	path := filepath.Join(t.TempDir(), "usher.yaml")
	conf := "issuers:\n  - issuer: https://auth.example.com/\n    jwks_uri: http://auth.example.com/jwks.json\n    algorithms: [none]\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	err := run(context.Background(), []string{"serve", "--config", path}, nil, io.Discard, &stderr)
	if err == nil {
		t.Fatal("serve accepted an invalid config")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per problem (2), got:\n%s", err)
	}
	if !strings.Contains(lines[0], path) || !strings.Contains(err.Error(), "issuers[0].jwks_uri") || !strings.Contains(err.Error(), "issuers[0].algorithms") {
		t.Errorf("error does not name the file and the keys:\n%s", err)
	}
	// What main prints: "usher:" once, at the start of the first line, then
	// the file and a problem a line.
	if code := exitCode(err, &stderr); code != 1 {
		t.Errorf("exit %d, want 1", code)
	}
	printed := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
	if len(printed) != 2 || !strings.HasPrefix(printed[0], "usher: config "+path+": issuers[0].") || !strings.HasPrefix(printed[1], "issuers[0].") {
		t.Errorf("stderr is not one line per problem, the first prefixed \"usher: config FILE: \":\n%s", stderr.String())
	}
	for _, line := range printed {
		if n := strings.Count(line, "usher:"); n > 1 {
			t.Errorf("stderr line prefixed %d times with usher: %q", n, line)
		}
	}
	stderr.Reset()

	if err := os.WriteFile(path, []byte("issuers:\n  - issuer: x\n    jwks_url: https://x/\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	err = run(context.Background(), []string{"serve", "--config", path}, nil, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "jwks_url") {
		t.Errorf("a misspelt key must be refused by name, got %v", err)
	}
	stderr.Reset()
	exitCode(err, &stderr)
	if want := "usher: config " + path + ": issuers[0].jwks_url: unknown key"; !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "usher:") != 1 {
		t.Errorf("stderr of a misspelt key: want one line starting %q, got:\n%s", want, stderr.String())
	}
	stderr.Reset()
	missing := filepath.Join(t.TempDir(), "absent.yaml")
	exitCode(run(context.Background(), []string{"serve", "--config", missing}, nil, io.Discard, &stderr), &stderr)
	if want := "usher: config: open " + missing + ": "; !strings.HasPrefix(stderr.String(), want) || strings.Count(stderr.String(), "usher:") != 1 {
		t.Errorf("stderr of a missing config file: want one line starting %q, got:\n%s", want, stderr.String())
	}
	if code := exitCode(run(context.Background(), []string{"serve"}, nil, io.Discard, io.Discard), io.Discard); code != 2 {
		t.Errorf("serve without --config: exit %d, want 2", code)
	}
}

// TestBinary_DevAndSignal builds the real binary, starts `usher dev` on a
// loopback port, validates over gRPC and stops it with SIGTERM.
func TestBinary_DevAndSignal(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	b, stop := startDevBinary(t, buildUsher(t))
	c, hc := dialUsher(t, b.addr)
	waitServing(t, hc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: b.invoices, ExpectedAudience: "api/invoices"})
	if err != nil || !resp.GetValid() {
		t.Fatalf("invoices token at api/invoices: %v %v", resp, err)
	}
	stop()
}

// buildUsher builds the real binary into a temporary folder.
func buildUsher(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "usher")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestBinary_ServeReloadsOnSIGHUP: the real binary re-reads its config on
// SIGHUP, and refuses a broken one while it keeps serving.
func TestBinary_ServeReloadsOnSIGHUP(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	iss := testkit.DevIssuer(t)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	conf := func(name string) []byte { return namedAudienceConfig(iss, name) }
	writeFile(t, path, conf("Users API"))
	cmd := exec.Command(buildUsher(t), "serve", "--config", path)
	var logs testkit.SyncBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	addrRE := regexp.MustCompile(`"usher listening" addr=(\S+)`)
	var addr string
	for deadline := time.Now().Add(15 * time.Second); addr == ""; {
		if m := addrRE.FindStringSubmatch(logs.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("usher serve did not listen:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	c, hc := dialUsher(t, addr)
	waitServing(t, hc)
	tok, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	hint := func() string { return mismatchHint(t, c, tok) }
	writeFile(t, path, conf("User Directory"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(15 * time.Second); !strings.Contains(hint(), "User Directory"); {
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload the audiences:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	writeFile(t, path, []byte("issuers: [\n"))
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logs.String(), "reload refused"); {
		if time.Now().After(deadline) {
			t.Fatalf("a broken config was not refused:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(hint(), "User Directory") {
		t.Error("the running config was not kept after a refused reload")
	}
}
