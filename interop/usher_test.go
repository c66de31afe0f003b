package interop

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"

	"github.com/usher-dev/usher/internal/testkit"
)

// Bounds of the waits on usher's process and calls.
const (
	usherBuildWait = 5 * time.Minute
	usherStartWait = 30 * time.Second
	usherStopWait  = 15 * time.Second // above serve's 10s grace
	callWait       = 10 * time.Second
)

// registered is usher's audiences registry in every config: the names its
// hints use.
var registered = map[string]string{
	usersAPI: "Users API", invoicesAPI: "Invoices API", ordersAPI: "Orders API",
	ps256API: "PS256 API", es256API: "ES256 API", eddsaAPI: "EdDSA API",
}

var (
	buildOnce sync.Once
	builtBin  string
	buildErr  error
	buildDir  string // removed by TestMain
)

// usherBinary is $USHER_BIN, or usher built once for the whole run.
func usherBinary(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("USHER_BIN"); bin != "" {
		return bin
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "usher-interop-"); buildErr != nil {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), usherBuildWait)
		defer cancel()
		builtBin = filepath.Join(buildDir, "usher")
		out, err := exec.CommandContext(ctx, "go", "build", "-o", builtBin, "github.com/usher-dev/usher/cmd/usher").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/usher: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return builtBin
}

// usherConfig is what varies between the tests' usher configurations: one
// issuer, the provider, found through discovery.
type usherConfig struct {
	tokenType       string // the issuer's token_type; "" for none
	refreshInterval string // "" for the default
	// introspection: with a secret, usher's client at the provider's
	// introspection endpoint (from discovery).
	secret           string
	cacheTTL, negTTL string
}

func (c usherConfig) yaml(t *testing.T, issuer string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "listen: \"127.0.0.1:0\"\nissuers:\n  - issuer: %q\n    discovery: true\n", issuer)
	b.WriteString("    algorithms: [\"RS256\", \"PS256\", \"ES256\", \"EdDSA\"]\n")
	if c.tokenType != "" {
		fmt.Fprintf(&b, "    token_type: %q\n", c.tokenType)
	}
	if c.refreshInterval != "" {
		fmt.Fprintf(&b, "    refresh_interval: %q\n    unknown_kid_cooldown: \"1s\"\n", c.refreshInterval)
	}
	if c.secret != "" {
		secretFile := filepath.Join(t.TempDir(), "introspection.secret")
		if err := os.WriteFile(secretFile, []byte(c.secret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&b, "    introspection:\n      client_id: \"usher\"\n      client_secret_file: %q\n      cache_ttl: %q\n      negative_cache_ttl: %q\n      timeout: \"2s\"\n",
			secretFile, c.cacheTTL, c.negTTL)
	}
	b.WriteString("audiences:\n")
	for _, aud := range slices.Sorted(maps.Keys(registered)) {
		fmt.Fprintf(&b, "  - audience: %q\n    name: %q\n", aud, registered[aud])
	}
	return b.String()
}

// usher is `usher serve` running on a real gRPC listener on 127.0.0.1.
type usher struct {
	issuer string
	conn   *grpc.ClientConn // for client.New
	client usherv1.TokenServiceClient
	stderr *testkit.SyncBuffer
}

var listeningRE = regexp.MustCompile(`msg="usher listening" addr=(\S+)`)

// startUsher runs `usher serve` with cfg for the provider's issuer and
// returns once it listens; it stops (SIGTERM) when the test ends.
func startUsher(t *testing.T, p *provider, cfg usherConfig) *usher {
	t.Helper()
	bin := usherBinary(t)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	if err := os.WriteFile(path, []byte(cfg.yaml(t, p.Issuer)), 0o600); err != nil {
		t.Fatal(err)
	}
	u := &usher{issuer: p.Issuer, stderr: &testkit.SyncBuffer{}}
	cmd := exec.Command(bin, "serve", "--config", path, "--log-level", "info")
	dieWithTest(cmd)
	pipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start usher serve: %v", err)
	}
	addrc, exited := make(chan string, 1), make(chan struct{})
	go func() {
		u.scan(pipe, addrc)
		_ = cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() { u.stop(t, cmd, exited) })
	timer := time.NewTimer(usherStartWait)
	defer timer.Stop()
	select {
	case addr := <-addrc:
		u.conn = testkit.Dial(t, addr)
		u.client = usherv1.NewTokenServiceClient(u.conn)
	case <-exited:
		t.Fatalf("usher serve exited before it listened:\n%s", u.stderr)
	case <-timer.C:
		t.Fatalf("usher serve did not listen within %s:\n%s", usherStartWait, u.stderr)
	}
	return u
}

// scan copies usher's log to u.stderr and sends the gRPC address once.
func (u *usher) scan(r io.Reader, addrc chan<- string) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	sent := false
	for sc.Scan() {
		fmt.Fprintln(u.stderr, sc.Text())
		if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil && !sent {
			addrc <- m[1]
			sent = true
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

func (u *usher) stop(t *testing.T, cmd *exec.Cmd, exited <-chan struct{}) {
	_ = cmd.Process.Signal(syscall.SIGTERM)
	timer := time.NewTimer(usherStopWait)
	defer timer.Stop()
	select {
	case <-exited:
	case <-timer.C:
		_ = cmd.Process.Kill()
		t.Errorf("usher serve did not stop within %s of SIGTERM; killed", usherStopWait)
	}
	if t.Failed() {
		t.Logf("usher serve's log:\n%s", u.stderr)
	}
}

// Validate asks usher, bounded by callWait.
func (u *usher) Validate(t *testing.T, token, audience string, scopes ...string) *usherv1.ValidateTokenResponse {
	t.Helper()
	return u.ValidateRequest(t, &usherv1.ValidateTokenRequest{Token: token, ExpectedAudience: audience, RequiredScopes: scopes})
}

// ValidateRequest asks usher with a whole request (a DPoP proof and the
// request it was made for), bounded by callWait.
func (u *usher) ValidateRequest(t *testing.T, req *usherv1.ValidateTokenRequest) *usherv1.ValidateTokenResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), callWait)
	defer cancel()
	r, err := u.client.ValidateToken(ctx, req)
	if err != nil {
		t.Fatalf("ValidateToken: %v", err)
	}
	return r
}

// WaitKeys returns once usher holds exactly the key ids want for the
// provider (ListIssuers), or fails the test after wait.
func (u *usher) WaitKeys(t *testing.T, wait time.Duration, want ...string) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	waitFor(t, wait, func() (bool, string) {
		ctx, cancel := context.WithTimeout(t.Context(), callWait)
		defer cancel()
		r, err := u.client.ListIssuers(ctx, &usherv1.ListIssuersRequest{})
		if err != nil {
			return false, fmt.Sprintf("ListIssuers: %v", err)
		}
		var have []string
		for _, is := range r.GetIssuers() {
			if is.GetIssuer() == u.issuer {
				have = slices.Sorted(slices.Values(is.GetKeyIds()))
			}
		}
		return slices.Equal(have, want), fmt.Sprintf("usher holds keys %v, want %v", have, want)
	})
}

// ValidateUntil asks usher every 10 ms until the verdict has reason want,
// and fails the test with the last verdict when wait passes first. For
// what the provider or usher's own schedule changes (a revocation seen
// after the cache entry expires, a key set refreshed), never to let time
// pass for its own sake.
func (u *usher) ValidateUntil(t *testing.T, wait time.Duration, want usherv1.Reason, token, audience string) *usherv1.ValidateTokenResponse {
	t.Helper()
	var last *usherv1.ValidateTokenResponse
	waitFor(t, wait, func() (bool, string) {
		last = u.Validate(t, token, audience)
		return last.GetReason() == want, fmt.Sprintf("reason %v, want %v (message: %s; hint: %s)", last.GetReason(), want, last.GetMessage(), last.GetHint())
	})
	return last
}

// waitFor calls cond every 10 ms until it is true; after wait the test
// fails with cond's last description of what it saw.
func waitFor(t *testing.T, wait time.Duration, cond func() (bool, string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, saw := cond()
		if ok {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("not reached within %s: %s", wait, saw)
		case <-tick.C:
		}
	}
}

// expect fails the test unless r has reason want; the failure shows the
// whole verdict (never the token).
func expect(t *testing.T, what string, r *usherv1.ValidateTokenResponse, want usherv1.Reason) {
	t.Helper()
	if r.GetReason() != want || r.GetValid() != (want == usherv1.Reason_REASON_VALID) {
		t.Fatalf("%s: reason %v (valid %v), want %v\nmessage: %s\nhint: %s", what, r.GetReason(), r.GetValid(), want, r.GetMessage(), r.GetHint())
	}
}

// expectHint fails the test unless r's hint contains every one of parts.
func expectHint(t *testing.T, what string, r *usherv1.ValidateTokenResponse, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(r.GetHint(), p) {
			t.Errorf("%s: hint lacks %q\nhint: %s\nmessage: %s", what, p, r.GetHint(), r.GetMessage())
		}
	}
}
