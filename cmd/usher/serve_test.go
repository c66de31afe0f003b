package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/extauthz"
	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startServe runs `serve` in process and returns its gRPC address.
func startServe(t *testing.T, o serveOptions) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan string, 1)
	o.ready = func(a string) { addrc <- a }
	done := make(chan error, 1)
	go func() { done <- serve(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			t.Error("serve did not stop within 15s")
		}
	})
	select {
	case a := <-addrc:
		return a
	case err := <-done:
		t.Fatalf("serve: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not listen within 15s")
	}
	return ""
}

func TestServe_MutualTLSWithCertificateRotation(t *testing.T) {
	iss := testkit.DevIssuer(t)
	dir := t.TempDir()
	ca := testkit.NewCA(t)
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	c, k := ca.Issue(t, 100, x509.ExtKeyUsageServerAuth)
	writeFile(t, certFile, c)
	writeFile(t, keyFile, k)
	writeFile(t, caFile, ca.PEM)
	cfg := &config.Config{Listen: "127.0.0.1:0", TLS: &config.TLS{CertFile: certFile, KeyFile: keyFile, ClientCAFile: caFile},
		Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, serveOptions{cfg: cfg, log: discardLogger()})

	roots := ca.Pool()
	cc, ck := ca.Issue(t, 200, x509.ExtKeyUsageClientAuth)
	clientCert, err := tls.X509KeyPair(cc, ck)
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	call := func(conf *tls.Config) (*big.Int, error) {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			return nil, err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		var p peer.Peer
		resp, err := usherv1.NewTokenServiceClient(conn).ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"}, grpc.Peer(&p))
		if err != nil {
			return nil, err
		}
		if !resp.GetValid() {
			t.Fatalf("verdict over mTLS: %v", resp)
		}
		return p.AuthInfo.(credentials.TLSInfo).State.PeerCertificates[0].SerialNumber, nil
	}
	serial, err := call(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}})
	if err != nil || serial.Int64() != 100 {
		t.Fatalf("mTLS call: serial %v, err %v", serial, err)
	}
	if _, err := call(&tls.Config{RootCAs: roots}); err == nil {
		t.Error("a client without a certificate was served")
	}
	// The client library's TLS options, from files.
	clientCertFile, clientKeyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	writeFile(t, clientCertFile, cc)
	writeFile(t, clientKeyFile, ck)
	creds, err := client.TLS(caFile, clientCertFile, clientKeyFile)
	if err != nil {
		t.Fatal(err)
	}
	uc, err := client.Dial(addr, []grpc.DialOption{grpc.WithTransportCredentials(creds)})
	if err != nil {
		t.Fatal(err)
	}
	defer uc.Close()
	vctx, vcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer vcancel()
	if resp, err := uc.Validate(vctx, tok, "api/users", nil); err != nil || !resp.GetValid() {
		t.Errorf("client.Dial with client.TLS: %v %v", resp, err)
	}

	// Rotate the server certificate on disk: new handshakes get it, no restart.
	c, k = ca.Issue(t, 101, x509.ExtKeyUsageServerAuth)
	writeFile(t, keyFile, k)
	writeFile(t, certFile, c)
	deadline := time.Now().Add(10 * time.Second)
	for {
		serial, err = call(&tls.Config{RootCAs: roots, Certificates: []tls.Certificate{clientCert}})
		if err == nil && serial.Int64() == 101 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rotated certificate was not served within 10s (serial %v, err %v)", serial, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestConfig_PlaintextOffLoopbackNeedsOptIn(t *testing.T) {
	base := "issuers:\n  - issuer: https://a.example/\n    jwks_uri: https://a.example/jwks.json\n"
	_, err := config.Parse([]byte("listen: 0.0.0.0:50051\n" + base))
	if err == nil || !strings.Contains(err.Error(), "listen") || !strings.Contains(err.Error(), "insecure_plaintext") {
		t.Errorf("plaintext on 0.0.0.0 accepted or unexplained: %v", err)
	}
	if _, err := config.Parse([]byte("listen: 0.0.0.0:50051\ninsecure_plaintext: true\n" + base)); err != nil {
		t.Errorf("insecure_plaintext: true refused: %v", err)
	}
	if _, err := config.Parse([]byte("listen: 127.0.0.1:50051\n" + base)); err != nil {
		t.Errorf("loopback refused: %v", err)
	}
}

func TestServe_ReloadSwapsConfigAndKeepsServing(t *testing.T) {
	iss := testkit.DevIssuer(t)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	conf := func(name string) []byte { return namedAudienceConfig(iss, name) }
	writeFile(t, path, conf("Users API"))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	reload := make(chan struct{}, 1)
	addr := startServe(t, serveOptions{cfg: cfg, path: path, log: textLogger(&logs), reload: reload})
	c, _ := dialUsher(t, addr)
	tok, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	hint := func() string { return mismatchHint(t, c, tok) }
	if !strings.Contains(hint(), "Users API (api/users)") {
		t.Fatalf("hint before reload: %q", hint())
	}

	// Load during reloads: no call may fail.
	var failures, calls atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"})
				cancel()
				calls.Add(1)
				if err != nil || !resp.GetValid() {
					failures.Add(1)
				}
			}
		})
	}
	writeFile(t, path, conf("User Directory"))
	reload <- struct{}{}
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(hint(), "User Directory (api/users)") {
		if time.Now().After(deadline) {
			t.Fatalf("the reloaded audiences were not served within 15s: %q\n%s", hint(), logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A bad file is refused and the running config kept.
	writeFile(t, path, []byte("issuers: [oops\n"))
	reload <- struct{}{}
	deadline = time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "reload refused") {
		if time.Now().After(deadline) {
			t.Fatalf("a bad config was not refused:\n%s", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if !strings.Contains(hint(), "User Directory (api/users)") {
		t.Errorf("after a refused reload: %q", hint())
	}
	if failures.Load() != 0 || calls.Load() == 0 {
		t.Errorf("%d of %d calls failed during reloads", failures.Load(), calls.Load())
	}
	t.Logf("%d calls during two reloads, %d failed", calls.Load(), failures.Load())
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func textLogger(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func httpGet(t *testing.T, u string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	return string(b)
}

// TestServe_FailedStartReleasesItsListeners: when start-up fails part way
// (http_listen is taken), serve returns the error and every listener it had
// opened (gRPC, metrics) is closed again.
func TestServe_FailedStartReleasesItsListeners(t *testing.T) {
	iss := testkit.DevIssuer(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	grpcAddr, metricsAddr := freeAddr(t), freeAddr(t)
	cfg := &config.Config{Listen: grpcAddr, MetricsListen: metricsAddr, HTTPListen: taken.Addr().String(),
		Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	err = serve(testkit.Context(t), serveOptions{cfg: cfg, log: discardLogger(), ready: func(string) { t.Error("ready after a failed start") }})
	if err == nil || !strings.Contains(err.Error(), "http_listen "+taken.Addr().String()) {
		t.Fatalf("serve with http_listen taken: %v", err)
	}
	// The metrics server's goroutine may close its listener just after
	// serve returns; a listener nobody closes stays held.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for what, addr := range map[string]string{"listen": grpcAddr, "metrics_listen": metricsAddr} {
		testkit.Eventually(ctx, t, what+" "+addr+" released after serve returned", func() bool {
			l, err := net.Listen("tcp", addr)
			if err == nil {
				l.Close()
			}
			return err == nil
		})
	}
}

// TestServe_MetricsPprofAndHTTPJSON: one usher serving gRPC, HTTP/JSON and
// /metrics; the metrics count what both front ends did, with bounded labels.
func TestServe_MetricsPprofAndHTTPJSON(t *testing.T) {
	iss := testkit.DevIssuer(t)
	metricsAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfg := &config.Config{Listen: "127.0.0.1:0", MetricsListen: metricsAddr, Pprof: true, HTTPListen: httpAddr,
		Engine: service.Config{
			Issuers:   []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()}},
			Audiences: []service.KnownAudience{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, serveOptions{cfg: cfg, log: discardLogger()})
	c, hc := dialUsher(t, addr)
	waitServing(t, hc)
	users, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, aud := range []string{"api/users", "api/users", "api/invoices", "api/unregistered"} {
		if _, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: users, ExpectedAudience: aud}); err != nil {
			t.Fatal(err)
		}
	}
	body := `{"token":"` + users + `","expected_audience":"api/invoices"}`
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/usher.v1.TokenService/ValidateToken", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(out), `"REASON_AUDIENCE_MISMATCH"`) || !strings.Contains(string(out), "Users API") {
		t.Fatalf("HTTP/JSON: %s %s", resp.Status, out)
	}

	m := httpGet(t, "http://"+metricsAddr+"/metrics")
	for _, want := range []string{
		`usher_verdicts_total{audience="api/users",issuer="` + iss.URL() + `",reason="VALID"} 2`,
		`usher_verdicts_total{audience="api/invoices",issuer="` + iss.URL() + `",reason="AUDIENCE_MISMATCH"} 2`,
		`usher_verdicts_total{audience="other",issuer="` + iss.URL() + `",reason="AUDIENCE_MISMATCH"} 1`,
		`usher_audience_mismatches_total{actual="api/users",expected="api/invoices"} 2`,
		`usher_cache_hits_total 4`,
		`usher_cache_misses_total 1`,
		`usher_jwks_fetches_total{issuer="` + iss.URL() + `"} 1`,
		`usher_jwks_keys{issuer="` + iss.URL() + `"} 3`,
		`usher_validation_seconds_count 5`,
		`grpc_server_handled_total{grpc_code="OK",grpc_method="ValidateToken",grpc_service="usher.v1.TokenService",grpc_type="unary"} 4`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(m, "api/unregistered") {
		t.Error("an unregistered audience became a label value: cardinality is not bounded")
	}
	if !strings.Contains(httpGet(t, "http://"+metricsAddr+"/debug/pprof/"), "goroutine") {
		t.Error("pprof index not served")
	}
}

// TestServe_ExtAuthz: `usher serve` with an ext_authz section answers Envoy's
// Check on its gRPC listener; a bad section stops start-up naming the key.
func TestServe_ExtAuthz(t *testing.T) {
	iss := testkit.DevIssuer(t)
	path := filepath.Join(t.TempDir(), "usher.yaml")
	base := "listen: 127.0.0.1:0\nissuers:\n  - issuer: \"" + iss.URL() + "\"\n    jwks_uri: \"" + iss.JWKSURL() + "\"\n"
	writeFile(t, path, []byte(base+"ext_authz:\n  routes:\n    - path_prefix: /invoices\n      audience: api/invoices\n"))
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, serveOptions{cfg: cfg, path: path, log: discardLogger()})
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	check := func(tok string) *authv3.CheckResponse {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/invoices/42", Host: "gw.example", Headers: map[string]string{"authorization": "Bearer " + tok}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	invoices, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/invoices"}})
	users, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	if r := check(invoices); r.GetOkResponse() == nil {
		t.Errorf("invoices token on /invoices: %v", r)
	}
	if r := check(users); r.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Errorf("users token on /invoices: %v", r)
	}

	writeFile(t, path, []byte(base+"ext_authz:\n  routes:\n    - path_prefix: /x\n"))
	err = run(context.Background(), []string{"serve", "--config", path}, nil, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "ext_authz.routes[0].audience") {
		t.Errorf("a route without audience: %v", err)
	}
}

// collector is an OTLP/gRPC trace collector on loopback that keeps span names.
type collector struct {
	coltracepb.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []string
	attrs []string
}

func (c *collector) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			for _, sp := range ss.GetSpans() {
				c.spans = append(c.spans, sp.GetName())
				for _, a := range sp.GetAttributes() {
					c.attrs = append(c.attrs, a.GetKey()+"="+a.GetValue().String())
				}
			}
		}
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func TestServe_TracesCallsWithoutTokens(t *testing.T) {
	col := &collector{}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(cs, col)
	go func() { _ = cs.Serve(lis) }()
	defer cs.Stop()

	iss := testkit.DevIssuer(t)
	cfg := &config.Config{Listen: "127.0.0.1:0", Tracing: &config.Tracing{OTLPEndpoint: lis.Addr().String(), Insecure: true},
		Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc, done := make(chan string, 1), make(chan error, 1)
	go func() {
		done <- serve(ctx, serveOptions{cfg: cfg, log: discardLogger(), ready: func(a string) { addrc <- a }})
	}()
	addr := <-addrc
	c, _ := dialUsher(t, addr)
	tok, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer ccancel()
	if _, err := c.ValidateToken(cctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"}); err != nil {
		t.Fatal(err)
	}
	cancel() // shutdown flushes the spans
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if !slices.Contains(col.spans, "usher.v1.TokenService/ValidateToken") {
		t.Errorf("spans exported: %v", col.spans)
	}
	for _, a := range col.attrs {
		if strings.Contains(a, tok[:20]) {
			t.Errorf("a span attribute holds the token: %s", a)
		}
	}
}

// namedAudienceConfig trusts iss and registers api/users under name.
func namedAudienceConfig(iss *devissuer.Issuer, name string) []byte {
	return []byte("listen: 127.0.0.1:0\nissuers:\n  - issuer: \"" + iss.URL() + "\"\n    jwks_uri: \"" + iss.JWKSURL() + "\"\naudiences:\n  - audience: api/users\n    name: " + name + "\n")
}

// mismatchHint validates tok at api/invoices and returns the hint, which
// names the API registered for the token's audience.
func mismatchHint(t *testing.T, c usherv1.TokenServiceClient, tok string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/invoices"})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetHint()
}

// TestServe_InFlightLimitCoversHTTP: the in-flight limit is shared by the
// gRPC and HTTP/JSON front ends: with one call held in flight, an HTTP call
// is refused at once with resource_exhausted rather than queued.
func TestServe_InFlightLimitCoversHTTP(t *testing.T) {
	iss := testkit.DevIssuer(t)
	var fetches atomic.Int64
	hang := make(chan struct{})
	release := sync.OnceFunc(func() { close(hang) })
	slowKeys := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if fetches.Add(1) > 1 {
			// The refetch an unknown kid causes hangs until the test lets it go.
			select {
			case <-hang:
			case <-r.Context().Done():
				return
			}
		}
		resp, err := http.Get(iss.JWKSURL())
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		defer resp.Body.Close()
		io.Copy(w, resp.Body)
	}))
	defer slowKeys.Close()
	defer release() // before the server closes: Close waits for the handler
	httpAddr := freeAddr(t)
	cfg := &config.Config{Listen: "127.0.0.1:0", HTTPListen: httpAddr, MaxInFlight: 1,
		Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: slowKeys.URL + "/jwks.json", UnknownKIDCooldown: time.Millisecond}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	// The held call waits for the hung refetch until its own deadline, not
	// the default bounded wait, so that it stays in flight.
	addr := startServe(t, serveOptions{cfg: cfg, log: discardLogger(), engineOpts: []service.Option{service.WithKeyWait(time.Minute, 1)}})
	c, hc := dialUsher(t, addr)
	waitServing(t, hc)
	held, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, KeyID: "not-published"})
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: held, ExpectedAudience: "api/users"})
		done <- err
	}()
	wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer wcancel()
	testkit.Eventually(wctx, t, "the held call reaching the key refetch", func() bool { return fetches.Load() >= 2 })
	tok, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+httpAddr+"/usher.v1.TokenService/ValidateToken",
		strings.NewReader(`{"token":"`+tok+`","expected_audience":"api/users"}`))
	req.Header.Set("Content-Type", "application/json")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "resource_exhausted") || time.Since(start) > time.Second {
		t.Errorf("HTTP call with max_in_flight reached: %s %s after %s", resp.Status, body, time.Since(start))
	}
	select {
	case err := <-done:
		t.Fatalf("the held gRPC call returned (%v) while its key refetch hung: the test did not hold it in flight", err)
	default:
	}
	release()
	if err := <-done; err != nil {
		t.Errorf("the held gRPC call: %v", err)
	}
}

// serveDev starts `serve` trusting a dev issuer, with limits set by edit, and
// returns its gRPC address once health is SERVING.
func serveDev(t *testing.T, log *slog.Logger, edit func(*config.Config)) (string, *devissuer.Issuer) {
	t.Helper()
	iss := testkit.DevIssuer(t)
	cfg := &config.Config{Listen: "127.0.0.1:0", Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()}}}}
	edit(cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	addr := startServe(t, serveOptions{cfg: cfg, log: log})
	_, hc := dialUsher(t, addr)
	waitServing(t, hc)
	return addr, iss
}

// TestServe_StreamLimit: with max_streams 2, the third health Watch is
// refused at once with RESOURCE_EXHAUSTED, while unary calls still work.
func TestServe_StreamLimit(t *testing.T) {
	addr, iss := serveDev(t, discardLogger(), func(c *config.Config) { c.MaxStreams = 2 })
	c, hc := dialUsher(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	watch := func() error {
		w, err := hc.Watch(ctx, &healthpb.HealthCheckRequest{Service: "usher.v1.TokenService"})
		if err != nil {
			return err
		}
		_, err = w.Recv()
		return err
	}
	for i := range 2 {
		if err := watch(); err != nil {
			t.Fatalf("Watch %d: %v", i+1, err)
		}
	}
	if err := watch(); status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third Watch with max_streams 2: %v, want RESOURCE_EXHAUSTED", err)
	}
	tok, _ := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}})
	if resp, err := c.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"}); err != nil || !resp.GetValid() {
		t.Fatalf("ValidateToken with the streams full: %v, %v", resp, err)
	}
}

// TestServe_ConnectionLimit: with max_connections 3, a fourth connection
// waits (its call ends at its deadline) while the first three keep working,
// and is served once one of them closes.
func TestServe_ConnectionLimit(t *testing.T) {
	// serveDev's own connection (it waited for SERVING on it) is the first.
	addr, _ := serveDev(t, discardLogger(), func(c *config.Config) { c.MaxConnections = 3 })
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	check := func(conn *grpc.ClientConn, timeout time.Duration, opts ...grpc.CallOption) error {
		cctx, ccancel := context.WithTimeout(ctx, timeout)
		defer ccancel()
		_, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{}, opts...)
		return err
	}
	var conns []*grpc.ClientConn
	for i := range 3 {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		conns = append(conns, conn)
		if i < 2 {
			if err := check(conn, 5*time.Second); err != nil {
				t.Fatalf("connection %d: %v", i+2, err)
			}
		}
	}
	if err := check(conns[2], 500*time.Millisecond); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("fourth connection with max_connections 3: %v, want it to wait (DEADLINE_EXCEEDED)", err)
	}
	for i, conn := range conns[:2] {
		if err := check(conn, 5*time.Second); err != nil {
			t.Fatalf("connection %d while a fourth waits: %v", i+2, err)
		}
	}
	conns[0].Close()
	if err := check(conns[2], 10*time.Second, grpc.WaitForReady(true)); err != nil {
		t.Fatalf("fourth connection once another closed: %v", err)
	}
}

// TestServe_ExtAuthzLogIsSampled: a flood of denials through ext_authz
// writes a bounded number of decision lines.
func TestServe_ExtAuthzLogIsSampled(t *testing.T) {
	var logs testkit.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	addr, _ := serveDev(t, log, func(c *config.Config) {
		c.ExtAuthz = &extauthz.Config{Routes: []extauthz.Route{{PathPrefix: "/invoices", Audience: "api/invoices"}}}
	})
	conn := testkit.Dial(t, addr)
	const calls = 200
	for range calls {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/invoices/1", Host: "gw.example", Headers: map[string]string{"authorization": "Bearer not.a.token"}}}}})
		cancel()
		if err != nil || resp.GetDeniedResponse() == nil {
			t.Fatalf("forged token through ext_authz: %v, %v", resp, err)
		}
	}
	// Two windows at most, should the calls straddle one.
	if n := strings.Count(logs.String(), `msg="ext_authz check" `); n > 2*grpcapi.SampleBurst {
		t.Fatalf("%d ext_authz decision lines for %d denials, want at most %d", n, calls, 2*grpcapi.SampleBurst)
	}
}

// TestServe_MetricsOverTLS: with tls, the metrics listener (and its pprof)
// is served over it like every listener, so that metrics_listen off loopback
// never serves plaintext next to a TLS gRPC listener.
func TestServe_MetricsOverTLS(t *testing.T) {
	iss := testkit.DevIssuer(t)
	ca := testkit.NewCA(t)
	certPEM, keyPEM := ca.Issue(t, 7, x509.ExtKeyUsageServerAuth)
	metricsAddr := freeAddr(t)
	cfg := &config.Config{Listen: "127.0.0.1:0", MetricsListen: metricsAddr,
		TLS:    &config.TLS{CertFile: testkit.WriteFile(t, "tls.crt", certPEM), KeyFile: testkit.WriteFile(t, "tls.key", keyPEM)},
		Engine: service.Config{Issuers: []service.IssuerConfig{{Issuer: iss.URL(), JWKSURI: iss.JWKSURL()}}}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	startServe(t, serveOptions{cfg: cfg, log: discardLogger()})
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}
	resp, err := hc.Get("https://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "usher_") {
		t.Fatalf("https /metrics: %s", resp.Status)
	}
	plain := &http.Client{Timeout: 5 * time.Second}
	if resp, err := plain.Get("http://" + metricsAddr + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Fatal("plaintext /metrics answered 200 next to a TLS listener")
		}
	}
}
