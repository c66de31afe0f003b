package interop

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/usher-dev/usher/internal/testkit"
)

// providerDir is node-oidc-provider's folder: package.json, the lock file,
// server.js and, once installed, node_modules.
const providerDir = "oidc-provider"

// redirectURI is the web client's registered redirect URI: nothing listens
// there, the test reads the code from the redirect itself.
const redirectURI = "http://127.0.0.1/cb"

// Bounds of the waits on the provider's process. Its start imports the
// package and generates three keys; on a loaded 2-core machine that takes
// seconds.
const (
	providerStartWait = 90 * time.Second
	providerReplyWait = 30 * time.Second
	providerStopWait  = 10 * time.Second
)

// Resource indicators served by server.js (its RESOURCES), each the audience
// of its tokens.
const (
	usersAPI    = "https://users.api.test"    // JWT, RS256
	invoicesAPI = "https://invoices.api.test" // JWT, RS256
	ordersAPI   = "https://orders.api.test"   // opaque
	ps256API    = "https://ps256.api.test"
	es256API    = "https://es256.api.test"
	eddsaAPI    = "https://eddsa.api.test"
)

// requireProvider skips the test when node or the provider's packages are
// missing, unless USHER_INTEROP=1 asks for a failure instead.
func requireProvider(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	missing := ""
	switch {
	case err != nil:
		missing = "node is not on PATH"
	default:
		if _, err := os.Stat(filepath.Join(providerDir, "node_modules", "oidc-provider", "package.json")); err != nil {
			missing = "interop/oidc-provider/node_modules is not installed"
		}
	}
	if missing == "" {
		return node
	}
	msg := missing + ": run .ci/interop (or `cd interop/oidc-provider && npm ci`) to test usher against node-oidc-provider"
	if os.Getenv("USHER_INTEROP") == "1" {
		t.Fatal("USHER_INTEROP=1 but " + msg)
	}
	t.Skip(msg)
	return ""
}

// provider is node-oidc-provider's server.js running on 127.0.0.1.
type provider struct {
	Issuer  string
	secrets map[string]string // caller, usher, web
	disc    discovery

	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan map[string]any // server.js's JSON lines, closed at its exit
	exited chan struct{}
	stderr *testkit.SyncBuffer
}

// discovery is the part of the provider's discovery document the tests use.
type discovery struct {
	Issuer                string `json:"issuer"`
	AuthorizationEndpoint string `json:"authorization_endpoint"`
	TokenEndpoint         string `json:"token_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	RevocationEndpoint    string `json:"revocation_endpoint"`
	JWKSURI               string `json:"jwks_uri"`
}

// startProvider starts server.js on a free loopback port with fresh client
// secrets and returns once it serves; it stops when the test ends.
func startProvider(t *testing.T) *provider {
	t.Helper()
	node := requireProvider(t)
	p := &provider{
		secrets: map[string]string{"caller": rand.Text(), "usher": rand.Text(), "web": rand.Text()},
		lines:   make(chan map[string]any, 16),
		exited:  make(chan struct{}),
		stderr:  &testkit.SyncBuffer{},
	}
	cmd := exec.Command(node, "server.js", "--port", "0")
	cmd.Dir = providerDir
	cmd.Env = append(os.Environ(), "OIDC_CALLER_SECRET="+p.secrets["caller"], "OIDC_USHER_SECRET="+p.secrets["usher"], "OIDC_WEB_SECRET="+p.secrets["web"])
	dieWithTest(cmd)
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start node-oidc-provider: %v", err)
	}
	p.cmd = cmd
	readDone := make(chan struct{})
	go func() { p.read(stdout); close(readDone) }()
	// Wait only once stdout is read to its end (os/exec's rule).
	go func() { <-readDone; _ = cmd.Wait(); close(p.exited) }()
	t.Cleanup(func() { p.Stop(t) })
	ready := p.next(t, providerStartWait, "the ready line")
	if ready["event"] != "ready" {
		t.Fatalf("node-oidc-provider's first line is %v, want the ready event", ready)
	}
	p.Issuer, _ = ready["issuer"].(string)
	p.disc = p.discover(t)
	return p
}

func (p *provider) read(stdout io.Reader) {
	defer close(p.lines)
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			m = map[string]any{"unparsed": sc.Text()}
		}
		p.lines <- m
	}
}

// next is the provider's next stdout line, waited for at most wait.
func (p *provider) next(t *testing.T, wait time.Duration, what string) map[string]any {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case m, ok := <-p.lines:
		if !ok {
			t.Fatalf("node-oidc-provider exited before %s; its stderr:\n%s", what, p.stderr)
		}
		return m
	case <-timer.C:
		t.Fatalf("node-oidc-provider: no %s within %s; its stderr:\n%s", what, wait, p.stderr)
	}
	return nil
}

// Command sends one of server.js's commands (rotate, retire, keys) and
// returns the key ids the provider publishes after it.
func (p *provider) Command(t *testing.T, cmd string) []string {
	t.Helper()
	if _, err := io.WriteString(p.stdin, cmd+"\n"); err != nil {
		t.Fatalf("node-oidc-provider %s: %v", cmd, err)
	}
	r := p.next(t, providerReplyWait, "the answer to "+cmd)
	if r["ok"] != true {
		t.Fatalf("node-oidc-provider %s: %v", cmd, r)
	}
	var kids []string
	raw, _ := r["kids"].([]any)
	for _, k := range raw {
		s, _ := k.(string)
		kids = append(kids, s)
	}
	return kids
}

// Stop stops the provider gracefully (stdin closed), killing it when it
// does not exit within providerStopWait. Safe to call twice.
func (p *provider) Stop(t *testing.T) {
	t.Helper()
	_ = p.stdin.Close()
	timer := time.NewTimer(providerStopWait)
	defer timer.Stop()
	lines, killed := p.lines, false
	for {
		select {
		case _, ok := <-lines: // drained, so that the reader reaches the end
			if !ok {
				lines = nil
			}
		case <-p.exited:
			return
		case <-timer.C:
			if killed {
				t.Errorf("node-oidc-provider (pid %d) still runs after a kill", p.cmd.Process.Pid)
				return
			}
			_ = p.cmd.Process.Kill()
			killed = true
			t.Errorf("node-oidc-provider did not stop within %s after its stdin closed; killed", providerStopWait)
			timer.Reset(providerStopWait)
		}
	}
}

func (p *provider) discover(t *testing.T) discovery {
	t.Helper()
	var d discovery
	p.getJSON(t, p.Issuer+"/.well-known/openid-configuration", &d)
	if d.Issuer != p.Issuer || d.TokenEndpoint == "" || d.IntrospectionEndpoint == "" || d.RevocationEndpoint == "" {
		t.Fatalf("node-oidc-provider's discovery document lacks what the tests need: %+v", d)
	}
	return d
}

func (p *provider) getJSON(t *testing.T, u string, v any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), providerReplyWait)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", u, resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
}

// ClientCredentials is an access token for the caller client (RFC 6749
// §4.4, client_secret_basic): for resource (RFC 8707) when it is not empty.
func (p *provider) ClientCredentials(t *testing.T, resource string, scopes ...string) string {
	t.Helper()
	cc := clientcredentials.Config{
		ClientID: "caller", ClientSecret: p.secrets["caller"], TokenURL: p.disc.TokenEndpoint,
		Scopes: scopes, AuthStyle: oauth2.AuthStyleInHeader,
	}
	if resource != "" {
		cc.EndpointParams = url.Values{"resource": {resource}}
	}
	ctx, cancel := context.WithTimeout(t.Context(), providerReplyWait)
	defer cancel()
	tok, err := cc.Token(ctx)
	if err != nil {
		t.Fatalf("client_credentials token for resource %q: %v", resource, err)
	}
	return tok.AccessToken
}

// Revoke revokes the caller's token (RFC 7009).
func (p *provider) Revoke(t *testing.T, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), providerReplyWait)
	defer cancel()
	body := url.Values{"token": {token}, "token_type_hint": {"access_token"}}.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.disc.RevocationEndpoint, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	// RFC 6749 §2.3.1: id and secret are form-encoded before Basic.
	req.SetBasicAuth(url.QueryEscape("caller"), url.QueryEscape(p.secrets["caller"]))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("revoke: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		t.Fatalf("revoke: %s %s", resp.Status, b)
	}
}

// IDToken runs the authorization-code flow (RFC 6749 §4.1) of the web
// client with scope openid and returns the ID token. server.js finishes
// login and consent by itself; the test's HTTP client follows the redirects
// with a cookie jar until the one to the redirect URI, which carries the
// code.
func (p *provider) IDToken(t *testing.T) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), providerReplyWait)
	defer cancel()
	conf := oauth2.Config{
		ClientID: "web", ClientSecret: p.secrets["web"], RedirectURL: redirectURI, Scopes: []string{"openid"},
		Endpoint: oauth2.Endpoint{AuthURL: p.disc.AuthorizationEndpoint, TokenURL: p.disc.TokenEndpoint, AuthStyle: oauth2.AuthStyleInHeader},
	}
	state, nonce := rand.Text(), rand.Text()
	code := p.authorize(t, ctx, conf.AuthCodeURL(state, oauth2.SetAuthURLParam("nonce", nonce)), state)
	tok, err := conf.Exchange(ctx, code)
	if err != nil {
		t.Fatalf("authorization code exchange: %v", err)
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		t.Fatal("the token response carries no id_token")
	}
	return id
}

// authorize follows the authorization endpoint's redirects and returns the
// code of the final redirect to redirectURI.
func (p *provider) authorize(t *testing.T, ctx context.Context, authURL, state string) string {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Jar: jar, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) > 10 {
			return fmt.Errorf("more than 10 redirects")
		}
		if strings.HasPrefix(req.URL.String(), redirectURI) {
			return http.ErrUseLastResponse
		}
		return nil
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, authURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("authorization request: %v", err)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	resp.Body.Close()
	loc, err := resp.Location()
	if err != nil || !strings.HasPrefix(loc.String(), redirectURI) {
		t.Fatalf("authorization ended with %s, not a redirect to %s: %s; provider stderr:\n%s", resp.Status, redirectURI, b, p.stderr)
	}
	q := loc.Query()
	if q.Get("state") != state || q.Get("code") == "" || q.Get("iss") != p.Issuer {
		t.Fatalf("redirect to the client lacks code, state or iss (RFC 9207): error=%q %q", q.Get("error"), q.Get("error_description"))
	}
	return q.Get("code")
}
