package main

import (
	"context"
	"crypto/elliptic"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/replaystore/redistest"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// The request a DPoP-bound token is presented with at the resource server;
// its proof is made for it.
const (
	dpopIssuer   = "https://issuer.example"
	dpopAudience = "api/invoices"
	dpopMethod   = "GET"
	dpopURI      = "https://api.example.com/invoices"
)

// dpopFixture is an issuer (a static jwks_file), a client's DPoP key, a
// token bound to it and a bearer token.
type dpopFixture struct {
	jwksFile       string
	client         *testkit.Key
	bound, bearer  string
	issuedAt, exps time.Time
}

func newDPoPFixture(t *testing.T) *dpopFixture {
	t.Helper()
	iss := testkit.ECKey(t, "issuer-1", elliptic.P256())
	f := &dpopFixture{jwksFile: testkit.WriteJWKS(t, iss), client: testkit.ECKey(t, "", elliptic.P256()), issuedAt: time.Now()}
	f.exps = f.issuedAt.Add(time.Hour)
	claims := func(kv ...any) map[string]any {
		return testkit.Claims(dpopIssuer, append([]any{"aud", dpopAudience, "iat", f.issuedAt.Unix(), "exp", f.exps.Unix()}, kv...)...)
	}
	f.bound = iss.Token(t, claims("cnf", f.client.Cnf()))
	f.bearer = iss.Token(t, claims())
	return f
}

// config is a usher config on listen that trusts the issuer and keeps
// proofs in replayStore ("" for memory).
func (f *dpopFixture) config(t *testing.T, listen, metricsListen, replayStore string) []byte {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "listen: %q\n", listen)
	if metricsListen != "" {
		fmt.Fprintf(&b, "metrics_listen: %q\n", metricsListen)
	}
	fmt.Fprintf(&b, "issuers:\n  - issuer: %q\n    jwks_file: %q\naudiences:\n  - audience: %s\n    name: Invoices API\n", dpopIssuer, f.jwksFile, dpopAudience)
	if replayStore != "" {
		fmt.Fprintf(&b, "dpop:\n  replay_store: %q\n", replayStore)
	}
	if _, err := config.Parse([]byte(b.String())); err != nil {
		t.Fatalf("config:\n%s\n%v", b.String(), err)
	}
	return []byte(b.String())
}

// proof is a new proof (new jti) for the request, made now.
func (f *dpopFixture) proof(t *testing.T) string {
	t.Helper()
	return f.client.Proof(t, f.bound, dpopMethod, dpopURI, time.Now())
}

// request presents the bound token with proof (or the bearer token when
// proof is "").
func (f *dpopFixture) request(proof string) *usherv1.ValidateTokenRequest {
	if proof == "" {
		return &usherv1.ValidateTokenRequest{Token: f.bearer, ExpectedAudience: dpopAudience}
	}
	return &usherv1.ValidateTokenRequest{Token: f.bound, ExpectedAudience: dpopAudience, Scheme: "DPoP", DpopProof: proof,
		HttpMethod: dpopMethod, HttpUri: dpopURI}
}

// validate sends req and returns the verdict or the call's error.
func validate(t *testing.T, c usherv1.TokenServiceClient, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.ValidateToken(ctx, req)
}

// wantReason fails unless req gets reason (and, for a mismatch, its claim).
func wantReason(t *testing.T, what string, c usherv1.TokenServiceClient, req *usherv1.ValidateTokenRequest, reason usherv1.Reason, claim string) {
	t.Helper()
	resp, err := validate(t, c, req)
	if err != nil {
		t.Fatalf("%s: %v, want %v", what, err, reason)
	}
	if resp.GetReason() != reason || (claim != "" && resp.GetMismatch().GetClaim() != claim) {
		t.Fatalf("%s: %v (mismatch %v: %s; hint: %s), want %v with mismatch claim %q", what, resp.GetReason(), resp.GetMismatch(), resp.GetMessage(), resp.GetHint(), reason, claim)
	}
}

// TestReplicas_ReplayedProofRefusedAcrossRedis: two `usher serve`
// processes share one Redis (password protected). A proof accepted at
// replica A is refused at replica B (INVALID_PROOF, mismatch jti), where a
// fresh proof is accepted. With Redis stopped, a DPoP-bound token's call is
// UNAVAILABLE at both (fail closed) while a bearer token stays VALID and
// health stays SERVING; the error is counted in
// usher_dpop_replay_store_errors_total and logged once, without the
// password. Once Redis is back, proofs are accepted again.
func TestReplicas_ReplayedProofRefusedAcrossRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs two replicas and Redis")
	}
	const pw = "Redis-pa55-s3cret"
	srv := redistest.Start(t, "--requirepass", pw)
	storeURL := "redis://:" + pw + "@" + srv.Addr + "/0"
	f := newDPoPFixture(t)
	bin := buildUsher(t)
	ports := freeLoopbackPorts(t, 3)
	dir := t.TempDir()
	procs := make([]*replicaProc, 2)
	clients := make([]usherv1.TokenServiceClient, 2)
	for i := range procs {
		metricsListen := ""
		if i == 0 {
			metricsListen = ports[2]
		}
		path := filepath.Join(dir, fmt.Sprintf("usher-%d.yaml", i))
		writeFile(t, path, f.config(t, ports[i], metricsListen, storeURL))
		procs[i] = startReplica(t, bin, ports[i], path)
		c, hc := dialUsher(t, ports[i])
		waitServing(t, hc)
		clients[i] = c
	}
	a, b := clients[0], clients[1]

	p := f.proof(t)
	wantReason(t, "a proof at replica A", a, f.request(p), usherv1.Reason_REASON_VALID, "")
	wantReason(t, "the same proof at replica B", b, f.request(p), usherv1.Reason_REASON_INVALID_PROOF, "jti")
	wantReason(t, "the same proof at replica A again", a, f.request(p), usherv1.Reason_REASON_INVALID_PROOF, "jti")
	wantReason(t, "a fresh proof at replica B", b, f.request(f.proof(t)), usherv1.Reason_REASON_VALID, "")
	wantReason(t, "a bearer token", b, f.request(""), usherv1.Reason_REASON_VALID, "")

	srv.Stop(t)
	for i, c := range clients {
		start := time.Now()
		_, err := validate(t, c, f.request(f.proof(t)))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("replica %d with Redis stopped: %v, want UNAVAILABLE (fail closed)", i, err)
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("replica %d with Redis stopped answered in %v: the store's timeout should bound it", i, took)
		}
		if strings.Contains(err.Error(), pw) {
			t.Errorf("the UNAVAILABLE message shows Redis's password: %v", err)
		}
		wantReason(t, fmt.Sprintf("a bearer token at replica %d with Redis stopped", i), c, f.request(""), usherv1.Reason_REASON_VALID, "")
		_, hc := dialUsher(t, ports[i])
		waitServing(t, hc)
	}
	metrics := httpGet(t, "http://"+ports[2]+"/metrics")
	if n := metricValue(metrics, "usher_dpop_replay_store_errors_total"); n < 1 {
		t.Errorf("usher_dpop_replay_store_errors_total = %v with Redis stopped, want ≥ 1", n)
	}
	if n := metricValue(metrics, "usher_dpop_replay_store_duration_seconds_count"); n < 3 {
		t.Errorf("usher_dpop_replay_store_duration_seconds_count = %v at replica A, want ≥ 3 (2 answered, 1 not)", n)
	}
	ctx := testkit.Context(t)
	testkit.Eventually(ctx, t, "replica A's log saying the replay store does not answer", func() bool {
		return strings.Contains(procs[0].stderr.String(), "dpop replay store not answering")
	})

	srv.Restart(t)
	testkit.Eventually(ctx, t, "a fresh proof VALID at replica A once Redis is back", func() bool {
		resp, err := validate(t, a, f.request(f.proof(t)))
		return err == nil && resp.GetValid()
	})
	for i, pr := range procs {
		if strings.Contains(pr.stderr.String(), pw) {
			t.Errorf("replica %d's log shows Redis's password:\n%s", i, pr.stderr.String())
		}
	}
	if n := strings.Count(procs[0].stderr.String(), "dpop replay store not answering"); n != 1 {
		t.Errorf("replica A logged the outage %d times, want once:\n%s", n, procs[0].stderr.String())
	}
}

// metricValue is the value of an unlabelled sample in a /metrics page (-1
// when absent).
func metricValue(page, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(page)
	if m == nil {
		return -1
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		return -1
	}
	return v
}

// TestServe_ReloadSwapsReplayStore: usher serve names its replay store at
// start (redacted); a reload that changes dpop.replay_store moves the
// proofs to the new store; a reload to a store that does not answer is
// refused and the running store kept; a reload without replay_store keeps
// proofs in memory. No line of the log shows the password.
func TestServe_ReloadSwapsReplayStore(t *testing.T) {
	const pw = "First-pa55-s3cret"
	first, second := redistest.Start(t, "--requirepass", pw), redistest.Start(t)
	firstURL := "redis://:" + pw + "@" + first.Addr + "/0"
	f := newDPoPFixture(t)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	writeFile(t, path, f.config(t, "127.0.0.1:0", "", firstURL))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	reload := make(chan struct{}, 1)
	addr := startServe(t, serveOptions{cfg: cfg, path: path, log: textLogger(&logs), reload: reload})
	c, hc := dialUsher(t, addr)
	waitServing(t, hc)
	ctx := testkit.Context(t)
	if line := lastLine(logs.String(), "usher listening"); !strings.Contains(line, "dpop_replay_store=redis://:xxxxx@"+first.Addr+"/0") {
		t.Errorf("the start line does not name the store, redacted:\n%s", line)
	}
	keys := func(s *redistest.Server, password string) int64 {
		t.Helper()
		rc := redis.NewClient(&redis.Options{Addr: s.Addr, Password: password})
		defer rc.Close()
		n, err := rc.DBSize(ctx).Result()
		if err != nil {
			t.Fatalf("DBSIZE at %s: %v", s.Addr, err)
		}
		return n
	}
	accept := func(what string) {
		t.Helper()
		wantReason(t, what, c, f.request(f.proof(t)), usherv1.Reason_REASON_VALID, "")
	}
	reloadTo := func(store, want string) {
		t.Helper()
		n := strings.Count(logs.String(), want)
		writeFile(t, path, f.config(t, "127.0.0.1:0", "", store))
		reload <- struct{}{}
		testkit.Eventually(ctx, t, "the log saying "+want, func() bool { return strings.Count(logs.String(), want) > n })
	}

	accept("a proof with the first store")
	if n1, n2 := keys(first, pw), keys(second, ""); n1 != 1 || n2 != 0 {
		t.Fatalf("keys in the first store %d, in the second %d; want 1, 0", n1, n2)
	}
	reloadTo(second.URL(), "dpop replay store changed")
	accept("a proof after the reload to the second store")
	if n1, n2 := keys(first, pw), keys(second, ""); n1 != 1 || n2 != 1 {
		t.Errorf("keys in the first store %d, in the second %d; want 1, 1 (the new proof in the second)", n1, n2)
	}

	down := redistest.Start(t)
	down.Stop(t)
	reloadTo(down.URL(), "reload refused")
	if line := lastLine(logs.String(), "reload refused"); !strings.Contains(line, "dpop.replay_store") || !strings.Contains(line, down.Addr) {
		t.Errorf("the refusal does not name dpop.replay_store and the store:\n%s", line)
	}
	accept("a proof after a refused reload (the second store kept)")
	if n := keys(second, ""); n != 2 {
		t.Errorf("keys in the second store %d, want 2: the refused reload must keep it", n)
	}

	reloadTo("", "dpop replay store changed")
	accept("a proof with the replay cache in memory")
	if n := keys(second, ""); n != 2 {
		t.Errorf("keys in the second store %d, want still 2: proofs are kept in memory now", n)
	}
	if strings.Contains(logs.String(), pw) {
		t.Errorf("the log shows the first store's password:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), "only issuers, audiences and dpop.replay_store change on reload") {
		t.Errorf("a reload that changes only dpop.replay_store warned that it needs a restart:\n%s", logs.String())
	}
}

// TestServe_NamesInMemoryReplayStore: without dpop.replay_store, the start
// line says proofs are kept in memory.
func TestServe_NamesInMemoryReplayStore(t *testing.T) {
	f := newDPoPFixture(t)
	cfg, err := config.Parse(f.config(t, "127.0.0.1:0", "", ""))
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	startServe(t, serveOptions{cfg: cfg, log: textLogger(&logs)})
	if line := lastLine(logs.String(), "usher listening"); !strings.Contains(line, `dpop_replay_store="memory (per replica)"`) {
		t.Errorf("the start line does not say proofs are kept in memory:\n%s", line)
	}
}

// TestDoctor_ReplayStore: usher doctor asks the configured replay store for
// real: a running Redis passes (its password not shown), a stopped one
// fails with the fix and what it means for bound tokens.
func TestDoctor_ReplayStore(t *testing.T) {
	good := doctorIssuer(t, func(self string) string { return self }, 2048)
	const pw = "doctor-secret-pw"
	srv := redistest.Start(t, "--requirepass", pw)
	cfg := func(addr string) string {
		return "issuers:\n  - issuer: \"" + good.URL() + "\"\n    discovery: true\ndpop:\n  replay_store: \"redis://:" + pw + "@" + addr + "/0\"\n"
	}
	out, code := runDoctorCmd(t, cfg(srv.Addr))
	if code != 0 || !strings.Contains(out, "✓ replay store answers") || strings.Contains(out, pw) {
		t.Errorf("running Redis: exit %d:\n%s", code, out)
	}
	srv.Stop(t)
	out, code = runDoctorCmd(t, cfg(srv.Addr))
	if code != 1 || !strings.Contains(out, "✗ replay store answers") || !strings.Contains(out, "DPoP-bound tokens get UNAVAILABLE") || strings.Contains(out, pw) {
		t.Errorf("stopped Redis: exit %d:\n%s", code, out)
	}
}
