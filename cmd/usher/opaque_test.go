package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// devSecretFiles are the introspection secret files usher dev wrote in dir.
func devSecretFiles(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "usher-dev-introspection-*.secret"))
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// checkDevSecret: one secret file in dir, 0600, holding the dev secret.
func checkDevSecret(t *testing.T, dir string) {
	t.Helper()
	files := devSecretFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("usher dev wrote %d secret files in %s, want 1", len(files), dir)
	}
	st, err := os.Stat(files[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || string(b) != devissuer.ClientSecret {
		t.Errorf("secret file %s: mode %v, content %q; want 0600 holding the dev client secret", files[0], st.Mode().Perm(), b)
	}
}

// runRevokeCmd runs `usher revoke` in process; it returns stderr and the error.
func runRevokeCmd(t *testing.T, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	err := run(ctx, append([]string{"revoke"}, args...), strings.NewReader(stdin), &out, &errOut)
	if out.Len() != 0 {
		t.Errorf("usher revoke wrote to stdout: %q", out.String())
	}
	return errOut.String(), err
}

// validateReason asks usher about tok at audience.
func validateReason(t *testing.T, c usherv1.TokenServiceClient, tok, audience string) *usherv1.ValidateTokenResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: audience})
	if err != nil {
		t.Fatalf("ValidateToken: %v", err)
	}
	return resp
}

// awaitInactive polls usher until tok is INACTIVE, failing on any answer but
// VALID (a cached active answer) or INACTIVE. The wait is bounded by the
// requirement: revocation is seen within cache_ttl (plus slack for a loaded
// machine).
func awaitInactive(t *testing.T, c usherv1.TokenServiceClient, tok string) *usherv1.ValidateTokenResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), devCacheTTL+10*time.Second)
	defer cancel()
	var last *usherv1.ValidateTokenResponse
	testkit.Eventually(ctx, t, "INACTIVE after revocation", func() bool {
		last = validateReason(t, c, tok, "api/users")
		switch last.GetReason() {
		case usherv1.Reason_REASON_VALID, usherv1.Reason_REASON_INACTIVE:
		default:
			t.Fatalf("a revoked opaque token: %v %q, want VALID (cached) until INACTIVE", last.GetReason(), last.GetMessage())
		}
		return last.GetReason() == usherv1.Reason_REASON_INACTIVE
	})
	return last
}

// TestDev_OpaqueTokensAndRevoke runs `usher dev` in process and tells the
// opaque-token story as a user would: the banner's opaque token, `usher mint
// --opaque`, VALID at its API and AUDIENCE_MISMATCH at the other through
// introspection, `usher revoke`, INACTIVE within cache_ttl.
func TestDev_OpaqueTokensAndRevoke(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	b, banner, stderr, stop := startDevInProcess(t, "--log-level", "debug")
	bannerOpaque := readTokenFile(t, b.dir, devUsersOpaque)
	if !strings.HasPrefix(bannerOpaque, devissuer.OpaquePrefix) {
		t.Fatalf("usher dev's %s holds no opaque token: %q", devUsersOpaque, bannerOpaque)
	}
	if req := readTokenFile(t, b.dir, devOpaqueReq); req != `{"expected_audience":"api/users","token":"`+bannerOpaque+`"}` {
		t.Errorf("usher dev's %s: %s", devOpaqueReq, req)
	}
	for _, want := range []string{"usher revoke --addr " + b.addr + " - < " + filepath.Join(b.dir, devUsersOpaque), "within 5s", "--opaque"} {
		if !strings.Contains(banner, want) {
			t.Errorf("the banner lacks %q:\n%s", want, banner)
		}
	}
	checkDevSecret(t, tmp)
	c, hc := dialUsher(t, b.addr)
	waitServing(t, hc)
	if r := validateReason(t, c, bannerOpaque, "api/users"); !r.GetValid() {
		t.Fatalf("the banner's opaque token at api/users: %v %q (hint %q)", r.GetReason(), r.GetMessage(), r.GetHint())
	}
	tok, err := runCmd(t, "mint", "--addr", b.addr, "--opaque", "--audience", "api/users", "--scope", "users.read")
	if err != nil {
		t.Fatalf("mint --opaque: %v", err)
	}
	tok = strings.TrimSpace(tok)
	if !strings.HasPrefix(tok, devissuer.OpaquePrefix) || strings.ContainsAny(tok, ". \n") {
		t.Fatalf("mint --opaque printed %q, want one opaque token alone", tok)
	}
	ok := validateReason(t, c, tok, "api/users")
	if !ok.GetValid() || ok.GetClaims().GetTokenFormat() != "opaque" || strings.Join(ok.GetClaims().GetScopes(), " ") != "users.read" || !strings.HasPrefix(ok.GetClaims().GetIssuer(), "http://127.0.0.1:") {
		t.Fatalf("minted opaque token at api/users: %v %q, claims %v", ok.GetReason(), ok.GetMessage(), ok.GetClaims())
	}
	bad := validateReason(t, c, tok, "api/invoices")
	if bad.GetReason() != usherv1.Reason_REASON_AUDIENCE_MISMATCH || !strings.Contains(bad.GetHint(), "Users API") ||
		strings.Join(bad.GetMismatch().GetActual(), ",") != "api/users" || strings.Join(bad.GetMismatch().GetExpected(), ",") != "api/invoices" {
		t.Errorf("opaque token at api/invoices: %v %q, mismatch %v, hint %q; want AUDIENCE_MISMATCH naming Users API", bad.GetReason(), bad.GetMessage(), bad.GetMismatch(), bad.GetHint())
	}

	msg, err := runRevokeCmd(t, "", "--addr", b.addr, tok)
	if err != nil || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, "revoked at http://127.0.0.1:") || !strings.Contains(msg, "5s") {
		t.Fatalf("revoke: err=%v, stderr %q; want exit 0 and one confirmation line", err, msg)
	}
	gone := awaitInactive(t, c, tok)
	if gone.GetHint() == "" {
		t.Errorf("INACTIVE without a hint: %q", gone.GetMessage())
	}
	out, err := runCmd(t, "validate", "--addr", b.addr, "--audience", "api/users", tok)
	if !errors.Is(err, errNotValid) || !strings.HasPrefix(out, "INACTIVE") {
		t.Errorf("usher validate of the revoked token: err=%v out:\n%s", err, out)
	}
	if _, err := runRevokeCmd(t, bannerOpaque+"\n", "--addr", b.addr, "-"); err != nil {
		t.Fatalf("revoke - (stdin): %v", err)
	}
	awaitInactive(t, c, bannerOpaque)
	if msg, err := runRevokeCmd(t, "", "--addr", b.addr, b.users); err == nil || !strings.Contains(err.Error(), "JWT") || msg != "" {
		t.Errorf("revoke of a JWT: err=%v stderr %q; want a refusal that explains JWTs are checked offline", err, msg)
	}
	if r := validateReason(t, c, b.users, "api/users"); !r.GetValid() {
		t.Errorf("the banner's JWT after a refused revoke: %v", r.GetReason())
	}
	for _, secret := range []string{tok, bannerOpaque, devissuer.ClientSecret} {
		if strings.Contains(stderr.String(), secret) {
			t.Errorf("usher dev's debug log holds a token or the client secret %.20s…", secret)
		}
	}
	stop()
	if files := devSecretFiles(t, tmp); len(files) != 0 {
		t.Errorf("usher dev left its secret file behind: %v", files)
	}
}

// startDevInProcess runs `usher dev` in process on a loopback port until
// stop (or the test's end) and returns its banner and log.
func startDevInProcess(t *testing.T, args ...string) (b devBanner, banner string, logs *testkit.SyncBuffer, stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var stdout testkit.SyncBuffer
	logs = &testkit.SyncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"}, args...), strings.NewReader(""), &stdout, logs)
	}()
	stopped := false
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("usher dev returned %v after cancel", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("usher dev did not stop within 15s of cancel")
		}
	}
	t.Cleanup(stop)
	b = waitBanner(t, stdout.String)
	return b, stdout.String(), logs, stop
}

func TestMint_OpaqueRefusesKid(t *testing.T) {
	_, err := runCmd(t, "mint", "--opaque", "--kid", devissuer.KeyES256, "--audience", "api/users")
	var ue usageError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "not signed") {
		t.Errorf("mint --opaque --kid: %v, want a usage error", err)
	}
}

// TestRevoke_DevToolOnly: usher revoke sends a token to a dev issuer on
// loopback only, never follows a redirect with it, and explains what it
// refuses.
func TestRevoke_DevToolOnly(t *testing.T) {
	var canaryHits atomic.Int32
	canary := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { canaryHits.Add(1) }))
	t.Cleanup(canary.Close)
	fakeIssuer := func(revocation string, h http.HandlerFunc) string {
		mux := http.NewServeMux()
		srv := httptest.NewServer(mux)
		t.Cleanup(srv.Close)
		mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"issuer":"` + srv.URL + `","revocation_endpoint":"` + strings.ReplaceAll(revocation, "SELF", srv.URL) + `"}`))
		})
		if h != nil {
			mux.HandleFunc("POST /revoke", h)
		}
		return srv.URL
	}
	redirecting := fakeIssuer("SELF/revoke", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, canary.URL+"/revoke", http.StatusTemporaryRedirect)
	})
	failing := fakeIssuer("SELF/revoke", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_, _ = w.Write([]byte(`{"error":"invalid_client","error_description":"who are you?"}`))
	})
	offLoopback := fakeIssuer("http://192.0.2.1/revoke", nil)
	tok := devissuer.OpaquePrefix + "abc"
	for _, tc := range []struct {
		name  string
		args  []string
		usage bool
		want  string
	}{
		{"issuer off loopback", []string{"--issuer", "http://192.0.2.1:8080", tok}, false, "not an http(s) URL on loopback"},
		{"issuer by name", []string{"--issuer", "https://auth.example.com/", tok}, false, "not an http(s) URL on loopback"},
		{"issuer not http", []string{"--issuer", "file:///etc/passwd", tok}, false, "not an http(s) URL on loopback"},
		{"discovery points off loopback", []string{"--issuer", offLoopback, tok}, false, "revocation_endpoint http://192.0.2.1/revoke is not"},
		{"redirect", []string{"--issuer", redirecting, tok}, false, "HTTP 307"},
		{"issuer refuses", []string{"--issuer", failing, tok}, false, "HTTP 401 invalid_client: who are you?"},
		{"a JWT", []string{"--issuer", failing, "eyJh.eyJi.c2ln"}, false, "JWT"},
		{"no token", []string{"--issuer", failing}, true, "exactly one TOKEN"},
		{"empty token", []string{"--issuer", failing, "Bearer "}, true, "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg, err := runRevokeCmd(t, "", tc.args...)
			var ue usageError
			if err == nil || errors.As(err, &ue) != tc.usage || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v (usage error: %v), want one mentioning %q", err, errors.As(err, &ue), tc.want)
			}
			if msg != "" {
				t.Errorf("a refused revoke confirmed on stderr: %q", msg)
			}
		})
	}
	if n := canaryHits.Load(); n != 0 {
		t.Errorf("the token followed a redirect: the other server got %d requests", n)
	}
}

// TestBinary_DevOpaqueRevoke: the real binary's `usher dev` keeps its
// introspection secret in a 0600 file that is gone after SIGTERM, and the
// binary's mint --opaque, validate and revoke work against it.
func TestBinary_DevOpaqueRevoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := buildUsher(t)
	tmp := t.TempDir()
	b, stop := startDevBinary(t, bin, "TMPDIR="+tmp)
	checkDevSecret(t, tmp)
	c, hc := dialUsher(t, b.addr)
	waitServing(t, hc)
	usher := func(stdin string, args ...string) (string, string, int) { return runBinary(t, bin, stdin, args...) }
	tok, errOut, code := usher("", "mint", "--addr", b.addr, "--opaque", "--audience", "api/invoices")
	tok = strings.TrimSpace(tok)
	if code != 0 || !strings.HasPrefix(tok, devissuer.OpaquePrefix) {
		t.Fatalf("usher mint --opaque: exit %d, stdout %q, stderr %q", code, tok, errOut)
	}
	if o, e, code := usher("", "validate", "--addr", b.addr, "--audience", "api/invoices", tok); code != 0 || !strings.HasPrefix(o, "VALID") {
		t.Fatalf("usher validate of the opaque token: exit %d\n%s%s", code, o, e)
	}
	o, e, code := usher(tok, "revoke", "--addr", b.addr, "-")
	if code != 0 || o != "" || strings.Count(e, "\n") != 1 || !strings.HasPrefix(e, "usher revoke: revoked at ") {
		t.Fatalf("usher revoke: exit %d, stdout %q, stderr %q", code, o, e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), devCacheTTL+10*time.Second)
	defer cancel()
	testkit.Eventually(ctx, t, "INACTIVE after usher revoke", func() bool {
		r := validateReason(t, c, tok, "api/invoices")
		return r.GetReason() == usherv1.Reason_REASON_INACTIVE
	})
	if o, _, code := usher("", "validate", "--addr", b.addr, "--audience", "api/invoices", tok); code != 1 || !strings.HasPrefix(o, "INACTIVE") {
		t.Errorf("usher validate of the revoked token: exit %d, want 1 and INACTIVE:\n%s", code, o)
	}
	stop()
	if files := devSecretFiles(t, tmp); len(files) != 0 {
		t.Errorf("usher dev left its secret file behind after SIGTERM: %v", files)
	}
}

// startDevBinary starts the binary's `usher dev` on a loopback port with
// env added to the environment; stop sends SIGTERM and waits for a clean
// exit.
func startDevBinary(t *testing.T, bin string, env ...string) (devBanner, func()) {
	t.Helper()
	cmd := exec.Command(bin, "dev", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr testkit.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	exited := make(chan error, 1)
	var out testkit.SyncBuffer
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			out.Write(append(sc.Bytes(), '\n'))
		}
		exited <- cmd.Wait()
	}()
	stop := func() {
		t.Helper()
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("usher dev exited with %v after SIGTERM; stderr:\n%s", err, stderr.String())
			}
		case <-time.After(15 * time.Second):
			t.Fatal("usher dev did not exit within 15s of SIGTERM")
		}
	}
	return waitBanner(t, out.String), stop
}

// runBinary runs one command of the binary and returns its stdout, stderr
// and exit code.
func runBinary(t *testing.T, bin, stdin string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var o, e bytes.Buffer
	cl := exec.CommandContext(ctx, bin, args...)
	cl.Stdin, cl.Stdout, cl.Stderr = strings.NewReader(stdin), &o, &e
	err := cl.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		return o.String(), e.String(), ee.ExitCode()
	case err != nil:
		t.Fatalf("usher %s: %v", strings.Join(args, " "), err)
	}
	return o.String(), e.String(), 0
}
