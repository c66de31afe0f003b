package console

import (
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/html"

	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

func testServer(t *testing.T, o Options) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle(Prefix, Handler(o))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func get(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

// checkHeaders: every console answer carries the strict policy and is not
// stored.
func checkHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	csp := h.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("%s: Content-Security-Policy %q lacks %s", what, csp, want)
		}
	}
	for _, never := range []string{"unsafe-inline", "unsafe-eval", "http:", "https:", "data:", "*"} {
		if strings.Contains(csp, never) {
			t.Errorf("%s: Content-Security-Policy %q allows %s", what, csp, never)
		}
	}
	for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store", "X-Frame-Options": "DENY"} {
		if got := h.Get(k); got != want {
			t.Errorf("%s: %s %q, want %q", what, k, got, want)
		}
	}
}

// TestHandler_ServesEmbeddedAssets: each page and asset is served from the
// embedded files with its type and the security headers; every embedded
// file is served; anything else under the prefix is 404 and any method but
// GET and HEAD 405, both with the same headers.
func TestHandler_ServesEmbeddedAssets(t *testing.T) {
	srv := testServer(t, Options{})
	served := map[string]bool{}
	for p, name := range pages {
		want, err := assets.ReadFile(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		served[name] = true
		resp, body := get(t, http.MethodGet, srv.URL+Prefix+p)
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			t.Errorf("GET %s: %d, %d bytes; want 200 and the %d bytes of %s", Prefix+p, resp.StatusCode, len(body), len(want), name)
		}
		if ct := resp.Header.Get("Content-Type"); ct == "" || ct != contentTypes[name[strings.LastIndex(name, "."):]] {
			t.Errorf("GET %s: Content-Type %q", Prefix+p, ct)
		}
		checkHeaders(t, "GET "+Prefix+p, resp.Header)
		if resp, body := get(t, http.MethodHead, srv.URL+Prefix+p); resp.StatusCode != http.StatusOK || len(body) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes", Prefix+p, resp.StatusCode, len(body))
		}
	}
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !served[path] {
			t.Errorf("%s is embedded but not served", path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"nope", "static/", "static/../index.html", "assets/index.html", "index.html"} {
		resp, _ := get(t, http.MethodGet, srv.URL+Prefix+p)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", Prefix+p, resp.StatusCode)
		}
		checkHeaders(t, "GET "+Prefix+p, resp.Header)
	}
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		resp, _ := get(t, m, srv.URL+Prefix)
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s %s: %d, want 405", m, Prefix, resp.StatusCode)
		}
		checkHeaders(t, m+" "+Prefix, resp.Header)
	}
}

var (
	// absoluteURL is any http(s) URL; protocolRelative a //host.name
	// reference, which the browser would fetch from another origin.
	absoluteURL      = regexp.MustCompile(`(?i)\bhttps?:(//|\\/\\/)`)
	protocolRelative = regexp.MustCompile(`(?i)(^|[^:/\w])//[a-z0-9-]+(\.[a-z0-9-]+)+`)
	// svgNamespace names SVG's XML namespace: an identifier, never fetched.
	svgNamespace = `xmlns="http://www.w3.org/2000/svg"`
)

// TestAssets_NoOtherOrigin scans every embedded file for a reference to
// another origin (http://, https://, //host) and for CSS that could load
// one (@import, url()).
func TestAssets_NoOtherOrigin(t *testing.T) {
	n := 0
	err := fs.WalkDir(assets, "assets", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		n++
		b, err := assets.ReadFile(path)
		if err != nil {
			return err
		}
		text := strings.ReplaceAll(string(b), svgNamespace, "")
		for i, line := range strings.Split(text, "\n") {
			if m := absoluteURL.FindString(line); m != "" {
				t.Errorf("%s:%d: an absolute URL (%s): %s", path, i+1, m, strings.TrimSpace(line))
			}
			if m := protocolRelative.FindString(line); m != "" {
				t.Errorf("%s:%d: a protocol-relative URL (%s): %s", path, i+1, m, strings.TrimSpace(line))
			}
			if strings.HasSuffix(path, ".css") && (strings.Contains(line, "@import") || strings.Contains(line, "url(")) {
				t.Errorf("%s:%d: CSS that loads a resource: %s", path, i+1, strings.TrimSpace(line))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 5 {
		t.Fatalf("scanned %d files", n)
	}
	// The scanner finds what it must.
	for _, bad := range []string{`<script src="https://cdn.example/x.js">`, `src="//cdn.example.com/x.js"`, `@import url(//fonts.example.com/a.css)`, `fetch("http:\/\/evil.example")`} {
		if !absoluteURL.MatchString(bad) && !protocolRelative.MatchString(bad) {
			t.Errorf("the scan misses %s", bad)
		}
	}
	for _, fine := range []string{"// a comment.", "x = a // b.c", "/console/static/console.js", `s.replace(/\/+$/, '')`} {
		if absoluteURL.MatchString(fine) || protocolRelative.MatchString(fine) {
			t.Errorf("the scan flags %s", fine)
		}
	}
}

// pageNodes parses a page and returns its elements.
func pageNodes(t *testing.T, name string) []*html.Node {
	t.Helper()
	b, err := assets.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			out = append(out, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	return out
}

func attr(n *html.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

func text(n *html.Node) string {
	var b strings.Builder
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(n)
	return strings.Join(strings.Fields(b.String()), " ")
}

// TestPages_NothingInline: the policy forbids inline script and style, so
// a page that had any would break silently in the browser: no inline
// script, no style element or attribute, no on* handler; every script,
// style sheet and icon is one of the console's own paths, and served.
func TestPages_NothingInline(t *testing.T) {
	srv := testServer(t, Options{})
	for _, name := range []string{"assets/index.html", "assets/issuers.html", "assets/where.html"} {
		for _, n := range pageNodes(t, name) {
			if n.Data == "style" {
				t.Errorf("%s: a <style> element", name)
			}
			for _, a := range n.Attr {
				if a.Key == "style" || strings.HasPrefix(a.Key, "on") {
					t.Errorf("%s: <%s %s=…> (inline, refused by the policy)", name, n.Data, a.Key)
				}
			}
			if n.Data == "script" && n.FirstChild != nil {
				t.Errorf("%s: an inline script", name)
			}
			for _, key := range []string{"src", "href", "action"} {
				v, ok := attr(n, key)
				if !ok || strings.HasPrefix(v, "#") {
					continue
				}
				if !strings.HasPrefix(v, Prefix) {
					t.Errorf("%s: <%s %s=%q> is not under %s", name, n.Data, key, v, Prefix)
					continue
				}
				if resp, _ := get(t, http.MethodGet, srv.URL+v); resp.StatusCode != http.StatusOK && key != "action" {
					t.Errorf("%s: <%s %s=%q> answers %d", name, n.Data, key, v, resp.StatusCode)
				}
			}
		}
	}
}

// TestPages_Accessible: the debugger's controls have the names the issue
// gives them, through labels; the verdict is a status region; every page
// has the same navigation, with the current page marked; the token field
// has no name, so that no native form submission could carry it.
func TestPages_Accessible(t *testing.T) {
	nodes := pageNodes(t, "assets/index.html")
	byID := map[string]*html.Node{}
	labels := map[string]string{}
	for _, n := range nodes {
		if id, ok := attr(n, "id"); ok {
			byID[id] = n
		}
		if f, ok := attr(n, "for"); ok && n.Data == "label" {
			labels[f] = text(n)
		}
	}
	if tok := byID["token"]; tok == nil || tok.Data != "textarea" || labels["token"] != "Token" {
		t.Errorf("no textarea labelled Token (labels %v)", labels)
	} else {
		if _, named := attr(tok, "name"); named {
			t.Error("the token textarea has a name: a native form submission would send it")
		}
		if v, _ := attr(tok, "spellcheck"); v != "false" {
			t.Error("spellcheck is not off on the token field: some browsers send checked text to a service")
		}
	}
	aud := byID["audience"]
	if list, _ := attr(aud, "list"); aud == nil || aud.Data != "input" || labels["audience"] != "Audience" || byID[list] == nil || byID[list].Data != "datalist" {
		t.Errorf("no input labelled Audience with a datalist (labels %v)", labels)
	}
	if b := byID["validate"]; b == nil || text(b) != "Validate" {
		t.Error("no Validate button")
	} else if typ, _ := attr(b, "type"); typ != "submit" {
		t.Error("Validate does not submit the form (Enter would not work)")
	}
	if v := byID["verdict"]; v == nil {
		t.Error("no verdict element")
	} else if role, _ := attr(v, "role"); role != "status" {
		t.Errorf("the verdict's role is %q, want status", role)
	}
	for _, page := range []struct{ file, current string }{{"assets/index.html", "Token debugger"}, {"assets/issuers.html", "Issuers"}, {"assets/where.html", "Where tokens go wrong"}} {
		var links, current []string
		for _, n := range pageNodes(t, page.file) {
			if n.Data == "a" && n.Parent != nil && n.Parent.Data == "li" {
				links = append(links, text(n))
				if v, _ := attr(n, "aria-current"); v == "page" {
					current = append(current, text(n))
				}
			}
		}
		if want := []string{"Token debugger", "Issuers", "Where tokens go wrong"}; !slices.Equal(links, want) {
			t.Errorf("%s: navigation %q, want %q", page.file, links, want)
		}
		if !slices.Equal(current, []string{page.current}) {
			t.Errorf("%s: current page %q, want %q", page.file, current, page.current)
		}
	}
}

// TestScript_KeepsTokensOutOfTheBrowser is a static check of the script:
// it writes no HTML from strings, keeps nothing in storage, cookies or
// history, evaluates no code, and calls usher with POST only.
func TestScript_KeepsTokensOutOfTheBrowser(t *testing.T) {
	b, err := assets.ReadFile("assets/console.js")
	if err != nil {
		t.Fatal(err)
	}
	js := string(b)
	for _, never := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
		"localStorage", "sessionStorage", "indexedDB", "document.cookie", "pushState", "replaceState", "location.hash", "location.search",
		"console.log", "sendBeacon", "XMLHttpRequest", "WebSocket", ".style."} {
		if strings.Contains(js, never) {
			t.Errorf("console.js uses %s", never)
		}
	}
	if !strings.Contains(js, "method: 'POST'") || !strings.Contains(js, "JSON.stringify(body)") {
		t.Error("console.js does not POST a JSON body to usher")
	}
}

// TestHandler_JSON: the registered APIs and the recorder's counts, as the
// page reads them; without a recorder the stats say so.
func TestHandler_JSON(t *testing.T) {
	clock := testkit.NewClock()
	rec := NewRecorder(clock.Now)
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonAudienceMismatch, Audience: "api/invoices", TokenAudience: "api/users"})
	rec.ObserveVerdict(service.VerdictEvent{Reason: service.ReasonValid, Audience: "api/users"})
	apis := func() []service.KnownAudience { return testkit.Audiences }
	srv := testServer(t, Options{APIs: apis, Recorder: rec})

	resp, body := get(t, http.MethodGet, srv.URL+Prefix+"api/apis")
	checkHeaders(t, "api/apis", resp.Header)
	var list []apiJSON
	if err := json.Unmarshal(body, &list); err != nil || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("api/apis: %v, %s", err, body)
	}
	if want := []apiJSON{{"api/users", "Users API"}, {"api/invoices", "Invoices API"}}; !slices.Equal(list, want) {
		t.Errorf("api/apis %+v, want %+v", list, want)
	}

	resp, body = get(t, http.MethodGet, srv.URL+Prefix+"api/stats")
	checkHeaders(t, "api/stats", resp.Header)
	var st statsOut
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("api/stats: %v, %s", err, body)
	}
	if !st.Recording || len(st.APIs) != 2 || st.MaxPairs != MaxPairs || len(st.Minutes) != Minutes || !st.Now.Equal(clock.Now()) {
		t.Errorf("stats %+v", st)
	}
	if want := []mismatchJSON{{"api/invoices", "api/users", 1}}; !slices.Equal(st.Mismatches, want) {
		t.Errorf("mismatches %+v, want %+v", st.Mismatches, want)
	}
	if len(st.Reasons) != 2 || st.Reasons[0].Reason != "VALID" || st.Reasons[1].Reason != "AUDIENCE_MISMATCH" || st.Reasons[1].Counts[Minutes-1] != 1 {
		t.Errorf("reasons %+v", st.Reasons)
	}

	bare := testServer(t, Options{})
	_, body = get(t, http.MethodGet, bare.URL+Prefix+"api/stats")
	var none statsOut
	if err := json.Unmarshal(body, &none); err != nil || none.Recording || none.Mismatches == nil || none.APIs == nil || time.Since(none.Now) > time.Minute {
		t.Errorf("stats without a recorder: %v %s", err, body)
	}
}

// TestHandler_LoopbackHost: on a loopback listener, a request naming
// another host (a page that pointed its own name at 127.0.0.1: DNS
// rebinding) is refused, with the headers; loopback names pass.
func TestHandler_LoopbackHost(t *testing.T) {
	srv := testServer(t, Options{LoopbackHost: true})
	_, port, _ := strings.Cut(strings.TrimPrefix(srv.URL, "http://"), ":")
	for host, want := range map[string]int{
		"127.0.0.1:" + port:        http.StatusOK,
		"localhost:" + port:        http.StatusOK,
		"LOCALHOST":                http.StatusOK,
		"[::1]:" + port:            http.StatusOK,
		"127.0.0.2":                http.StatusOK,
		"rebound.example:" + port:  http.StatusMisdirectedRequest,
		"127.0.0.1.nip.io:" + port: http.StatusMisdirectedRequest,
		"localhost.example.com":    http.StatusMisdirectedRequest,
		"10.0.0.1:" + port:         http.StatusMisdirectedRequest,
	} {
		req, err := http.NewRequest(http.MethodGet, srv.URL+Prefix+"api/apis", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("Host %q: %d, want %d (%s)", host, resp.StatusCode, want, body)
		}
		checkHeaders(t, "Host "+host, resp.Header)
	}
}
