package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/usher-dev/usher/internal/devissuer"
)

// The console's browser test runs a real `usher dev` in process and drives
// Debian's chromium-headless-shell through chromedp. It runs when
// USHER_BROWSER=1 (.ci/console sets it and installs the browser); without
// it, it skips with a message. USHER_CHROME names the browser binary when it
// is elsewhere; USHER_ARTIFACTS where the screenshots go (default
// .ci/artifacts at the repository's root).

// browserPath finds the headless browser, or skips the test when it is
// not asked for.
func browserPath(t *testing.T) string {
	t.Helper()
	if os.Getenv("USHER_BROWSER") != "1" {
		t.Skip("the console's browser test needs Chromium: run it with USHER_BROWSER=1 (.ci/console installs Debian's chromium-headless-shell and does)")
	}
	candidates := []string{os.Getenv("USHER_CHROME"), "/usr/lib/chromium/chromium-headless-shell", "/usr/lib/chromium/chrome-headless-shell"}
	for _, name := range []string{"chromium-headless-shell", "chrome-headless-shell", "chromium"} {
		if p, err := exec.LookPath(name); err == nil {
			candidates = append(candidates, p)
		}
	}
	for _, c := range candidates {
		if fi, err := os.Stat(c); c != "" && err == nil && !fi.IsDir() {
			return c
		}
	}
	t.Fatal("USHER_BROWSER=1 but no headless Chromium found: apt-get install chromium-headless-shell, or set USHER_CHROME to the binary")
	return ""
}

func artifactsDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("USHER_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join("..", "..", ".ci", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		t.Fatal(err)
	}
	return abs
}

var devConsoleRE = regexp.MustCompile(`(?m)^console: (http://127\.0\.0\.1:\d+/console/)$`)

// startDevConsole runs `usher dev` in process on free loopback ports and
// returns the URL of its console line.
func startDevConsole(t *testing.T) string {
	t.Helper()
	_, banner, _, _ := startDevInProcess(t)
	m := devConsoleRE.FindStringSubmatch(banner)
	if m == nil {
		t.Fatalf("usher dev printed no console line:\n%s", banner)
	}
	return m[1]
}

// mintUsersToken asks the console's origin for the dev issuer
// (ListIssuers over HTTP/JSON) and mints a Users API token there with
// `usher mint`.
func mintUsersToken(t *testing.T, origin string) (issuer, token string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Post(origin+"/usher.v1.TokenService/ListIssuers", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct{ Issuers []struct{ Issuer string } }
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || len(list.Issuers) != 1 {
		t.Fatalf("ListIssuers: %v %+v", err, list)
	}
	issuer = list.Issuers[0].Issuer
	out, err := runCmd(t, "mint", "--issuer", issuer, "--audience", "api/users", "--scope", "users.read")
	if err != nil {
		t.Fatal(err)
	}
	return issuer, strings.TrimSpace(out)
}

// page is a browser tab with what it saw: every request and every console
// message.
type page struct {
	ctx context.Context

	mu       sync.Mutex
	requests []*network.Request
	problems []string // console errors, exceptions, browser log errors
}

func openBrowser(t *testing.T, chrome string) *page {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 900))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelTab(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser: no deadline on this first call
		t.Fatalf("start %s: %v", chrome, err)
	}
	p := &page{ctx: ctx}
	err := chromedp.Listen(ctx, func(ev any) {
		p.mu.Lock()
		defer p.mu.Unlock()
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			p.requests = append(p.requests, e.Request)
		case *runtime.EventExceptionThrown:
			p.problems = append(p.problems, "exception: "+e.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
				p.problems = append(p.problems, fmt.Sprintf("console.%s", e.Type))
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError || e.Entry.Level == log.EntryLevelWarning {
				p.problems = append(p.problems, fmt.Sprintf("%s %s: %s (%s)", e.Entry.Source, e.Entry.Level, e.Entry.Text, e.Entry.URL))
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(p.step(t), chromedp.EmulateViewport(1280, 900)); err != nil {
		t.Fatal(err)
	}
	return p
}

// step is the tab's context with a deadline for one step.
func (p *page) step(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(p.ctx, 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (p *page) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(p.step(t), steps...); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

func (p *page) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := chromedp.Run(p.step(t), chromedp.Text(chromedp.CSS(sel)))
	if err != nil {
		t.Fatalf("text of %s: %v", sel, err)
	}
	return s
}

// until polls a JavaScript predicate until it is truthy (30s at most) and
// returns its value.
func until[T any](t *testing.T, p *page, what, js string) T {
	t.Helper()
	v, err := chromedp.Run(p.step(t), chromedp.Poll[T](js, chromedp.WithPollingTimeout(20*time.Second)))
	if err != nil {
		t.Fatalf("waiting for %s (%s): %v", what, js, err)
	}
	return v
}

func eval[T any](t *testing.T, p *page, js string) T {
	t.Helper()
	v, err := chromedp.Run(p.step(t), chromedp.Evaluate[T](js))
	if err != nil {
		t.Fatalf("%s: %v", js, err)
	}
	return v
}

func (p *page) screenshot(t *testing.T, path string) {
	t.Helper()
	png, err := chromedp.Run(p.step(t), chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a PNG", path)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

// TestConsoleInBrowser: the console of a real `usher dev` in a real
// browser. A Users API token pasted with "Bearer " and a newline is
// AUDIENCE_MISMATCH at the Invoices API, with both APIs named, and VALID at
// the Users API (chosen by its name, submitted with Enter) with its claims;
// the Issuers link shows the dev issuer and its key; "Where tokens go
// wrong" counts the mismatch. No request leaves the origin, none carries the
// token in its URL, the page stores nothing, the console shows no error (a
// CSP violation would be one), and the layout fits a phone.
func TestConsoleInBrowser(t *testing.T) {
	chrome := browserPath(t)
	artifacts := artifactsDir(t)
	consoleURL := startDevConsole(t)
	u, err := url.Parse(consoleURL)
	if err != nil {
		t.Fatal(err)
	}
	origin := u.Scheme + "://" + u.Host
	issuer, users := mintUsersToken(t, origin)
	p := openBrowser(t, chrome)

	checkDebugger(t, p, consoleURL, users, artifacts)
	seedVerdicts(t, origin, issuer, users)
	checkIssuersAndMatrix(t, p, origin, issuer, artifacts)
	checkNearMisses(t, p, consoleURL, users)
	checkRequests(t, p, origin, users)
}

func checkDebugger(t *testing.T, p *page, consoleURL, token, artifacts string) {
	resp, err := chromedp.Run(p.step(t), chromedp.NavigateResponse(consoleURL))
	if err != nil {
		t.Fatal(err)
	}
	csp := ""
	for k, v := range resp.Headers {
		if strings.EqualFold(k, "Content-Security-Policy") {
			csp, _ = v.(string)
		}
	}
	if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy of %s: %q", consoleURL, csp)
	}
	until[bool](t, p, "the registered APIs in the datalist", `document.querySelectorAll('#apis option').length >= 2`)

	// Pasted as copied from a header: "Bearer " before, a newline after.
	p.do(t, "paste and choose", chromedp.SetValue(chromedp.ID("token"), "Bearer "+token+"\n"),
		chromedp.SendKeys(chromedp.ID("audience"), "api/invoices"), chromedp.Click(chromedp.ID("validate")))
	until[bool](t, p, "AUDIENCE_MISMATCH", `document.getElementById('verdict').dataset.reason === 'AUDIENCE_MISMATCH'`)
	status := p.text(t, `[role="status"]`)
	for _, want := range []string{"AUDIENCE_MISMATCH", "Invoices API", "Users API", "api/invoices", "api/users", "Hint"} {
		if !strings.Contains(status, want) {
			t.Errorf("the status lacks %q:\n%s", want, status)
		}
	}
	if n := eval[int](t, p, `document.querySelectorAll('#verdict .diff mark').length`); n == 0 {
		t.Error("expected and actual audiences shown without a marked difference")
	}
	p.screenshot(t, filepath.Join(artifacts, "console-debugger.png"))
	checkPhoneLayout(t, p, artifacts)

	// By the API's name, submitted from the keyboard.
	p.do(t, "choose Users API", chromedp.Evaluate[chromedp.Void](`document.getElementById('audience').value = ''`), chromedp.SendKeys(chromedp.ID("audience"), "Users API"+kb.Enter))
	until[bool](t, p, "VALID", `document.getElementById('verdict').dataset.reason === 'VALID'`)
	claims := p.text(t, `#verdict [role="table"][aria-label="Claims"]`)
	for _, want := range []string{"sub", "exp", "iat", "users.read", "UTC", "ago", "in "} {
		if !strings.Contains(claims, want) {
			t.Errorf("the claims table lacks %q:\n%s", want, claims)
		}
	}
	if rows := eval[int](t, p, `document.querySelectorAll('#verdict [role="table"][aria-label="Claims"] tbody tr').length`); rows < 5 {
		t.Errorf("%d claim rows", rows)
	}
	if where := eval[string](t, p, `location.href`); where != consoleURL {
		t.Errorf("the page moved to %s", where)
	}
	if n := eval[int](t, p, `localStorage.length + sessionStorage.length + document.cookie.length`); n != 0 {
		t.Errorf("the page stored %d things", n)
	}
}

// checkPhoneLayout: at a phone's width nothing makes the page scroll
// sideways (wide tables scroll in their own box).
func checkPhoneLayout(t *testing.T, p *page, artifacts string) {
	p.do(t, "phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile))
	if wide := eval[bool](t, p, `document.documentElement.scrollWidth > window.innerWidth + 1`); wide {
		t.Errorf("at 390px the page is %v px wide", eval[int](t, p, `document.documentElement.scrollWidth`))
	}
	p.screenshot(t, filepath.Join(artifacts, "console-debugger-phone.png"))
	p.do(t, "laptop viewport", chromedp.EmulateViewport(1280, 900))
}

func checkIssuersAndMatrix(t *testing.T, p *page, origin, issuer, artifacts string) {
	if _, err := chromedp.RunResponse(p.step(t), chromedp.Click(chromedp.Search(`//nav//a[normalize-space()="Issuers"]`))); err != nil {
		t.Fatalf("follow the Issuers link: %v", err)
	}
	until[bool](t, p, "the issuers", `document.querySelectorAll('#issuers article').length > 0`)
	issuers := p.text(t, "#issuers")
	p.screenshot(t, filepath.Join(artifacts, "console-issuers.png"))
	for _, want := range []string{issuer, devissuer.KeyRS256, "RS256", "Last refresh", "Next refresh", "Last error"} {
		if !strings.Contains(issuers, want) {
			t.Errorf("the Issuers page lacks %q:\n%s", want, issuers)
		}
	}

	if _, err := chromedp.RunResponse(p.step(t), chromedp.Click(chromedp.Search(`//nav//a[normalize-space()="Where tokens go wrong"]`))); err != nil {
		t.Fatalf("follow the Where tokens go wrong link: %v", err)
	}
	cell := `document.querySelector('#mismatch-matrix td[data-expected="api/invoices"][data-actual="api/users"]')`
	n := until[int](t, p, "the api/invoices × api/users cell", cell+` && Number(`+cell+`.textContent)`)
	if n < 1 {
		t.Errorf("api/invoices × api/users = %d", n)
	}
	if n := eval[string](t, p, `document.querySelector('#mismatch-matrix td[data-expected="other"][data-actual="api/users"]').textContent`); n != "1" {
		t.Errorf("other × api/users = %s, want 1 (a Users token sent to an unregistered API)", n)
	}
	matrix := p.text(t, "#matrix")
	for _, want := range []string{"Invoices API", "Users API"} {
		if !strings.Contains(matrix, want) {
			t.Errorf("the matrix lacks %q:\n%s", want, matrix)
		}
	}
	if reasons := p.text(t, "#reasons"); !strings.Contains(reasons, "AUDIENCE_MISMATCH") || !strings.Contains(reasons, "VALID") {
		t.Errorf("verdicts by reason:\n%s", reasons)
	}
	p.screenshot(t, filepath.Join(artifacts, "console-matrix.png"))
	if where := eval[string](t, p, `location.href`); where != origin+"/console/where" {
		t.Errorf("the Where tokens go wrong link led to %s", where)
	}
}

// checkNearMisses: an audience that differs from the token's by a trailing
// slash, or by a look-alike letter, is named as such under the diff.
func checkNearMisses(t *testing.T, p *page, consoleURL, token string) {
	p.do(t, "back to the debugger", chromedp.Navigate(consoleURL))
	until[bool](t, p, "the registered APIs in the datalist", `document.querySelectorAll('#apis option').length >= 2`)
	for _, c := range []struct{ audience, want string }{
		{"api/users/", "trailing slash"},
		{"api/usеrs", "U+0435"}, // Cyrillic е
		{"API/Users", "letter case"},
	} {
		p.do(t, "validate at "+c.audience, chromedp.SetValue(chromedp.ID("token"), token),
			chromedp.Evaluate[chromedp.Void](`document.getElementById('verdict').dataset.reason = ''; document.getElementById('audience').value = ''`),
			chromedp.SendKeys(chromedp.ID("audience"), c.audience), chromedp.Click(chromedp.ID("validate")))
		until[bool](t, p, "AUDIENCE_MISMATCH at "+c.audience, `document.getElementById('verdict').dataset.reason === 'AUDIENCE_MISMATCH'`)
		if notes := p.text(t, "#verdict .notes"); !strings.Contains(notes, c.want) {
			t.Errorf("at %q the notes lack %q:\n%s", c.audience, c.want, notes)
		}
	}
}

// seedVerdicts sends, as other callers would over HTTP/JSON, more tokens
// to the wrong API (and one expired token), so that the matrix shows more
// than the debugger's own call: two more Users tokens at the Invoices API,
// an Invoices token at the Users API, a Users token at an unregistered API.
func seedVerdicts(t *testing.T, origin, issuer, users string) {
	t.Helper()
	invoices, err := runCmd(t, "mint", "--issuer", issuer, "--audience", "api/invoices", "--scope", "invoices.read")
	if err != nil {
		t.Fatal(err)
	}
	expired, err := runCmd(t, "mint", "--issuer", issuer, "--audience", "api/users", "--ttl", "-5m")
	if err != nil {
		t.Fatal(err)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	for _, call := range []struct{ token, audience, want string }{
		{users, "api/invoices", "REASON_AUDIENCE_MISMATCH"}, {users, "api/invoices", "REASON_AUDIENCE_MISMATCH"},
		{strings.TrimSpace(invoices), "api/users", "REASON_AUDIENCE_MISMATCH"}, {users, "api/billing", "REASON_AUDIENCE_MISMATCH"},
		{strings.TrimSpace(expired), "api/users", "REASON_EXPIRED"},
	} {
		body, _ := json.Marshal(map[string]string{"token": call.token, "expectedAudience": call.audience})
		resp, err := c.Post(origin+"/usher.v1.TokenService/ValidateToken", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ Reason string }
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err != nil || v.Reason != call.want {
			t.Fatalf("ValidateToken at %s: %v %q, want %s", call.audience, err, v.Reason, call.want)
		}
	}
}

// checkRequests: every request the tab made went to the console's origin,
// no URL carries the token or a part of it, and the token was sent in POST
// bodies only. The console showed no error.
func checkRequests(t *testing.T, p *page, origin, token string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	parts := strings.Split(token, ".")
	seen := map[string]bool{}
	for _, r := range p.requests {
		u, err := url.Parse(r.URL)
		if err != nil || u.Scheme+"://"+u.Host != origin {
			t.Errorf("a request left the origin %s: %s %s", origin, r.Method, r.URL)
		}
		for _, part := range append(parts, token) {
			if len(part) > 16 && strings.Contains(r.URL+r.URLFragment, part) {
				t.Errorf("a request URL carries the token: %s %.80s", r.Method, r.URL)
			}
		}
		if strings.HasPrefix(u.Path, "/usher.v1.TokenService/") && r.Method != http.MethodPost {
			t.Errorf("%s %s: the API is called with POST only", r.Method, r.URL)
		}
		seen[u.Path] = true
	}
	for _, want := range []string{"/console/", "/console/static/console.js", "/console/static/console.css", "/console/api/apis", "/console/api/stats",
		"/usher.v1.TokenService/ValidateToken", "/usher.v1.TokenService/InspectToken", "/usher.v1.TokenService/ListIssuers"} {
		if !seen[want] {
			t.Errorf("no request to %s among %d", want, len(p.requests))
		}
	}
	for _, pr := range p.problems {
		t.Errorf("browser console: %s", pr)
	}
}
