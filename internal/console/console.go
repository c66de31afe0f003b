package console

import (
	"embed"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/service"
)

// Prefix is the path the console is served under.
const Prefix = "/console/"

// ContentSecurityPolicy is sent with every console answer: the page loads
// and connects to its own origin only, runs no inline script or style,
// cannot be framed, and (in browsers that enforce Trusted Types) cannot
// write HTML from strings, so that a token's claims are only ever text.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; font-src 'none'; object-src 'none'; media-src 'none'; worker-src 'none'; " +
	"base-uri 'none'; form-action 'self'; frame-ancestors 'none'; require-trusted-types-for 'script'"

//go:embed assets
var assets embed.FS

// pages are the console's paths (under Prefix) and the files they serve.
var pages = map[string]string{
	"":                   "assets/index.html",
	"issuers":            "assets/issuers.html",
	"where":              "assets/where.html",
	"static/console.css": "assets/console.css",
	"static/console.js":  "assets/console.js",
	"static/favicon.svg": "assets/favicon.svg",
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".svg":  "image/svg+xml",
}

// Options are what the console shows beyond the HTTP/JSON API, which its
// page calls itself.
type Options struct {
	// APIs returns the registered audiences with their names (the
	// validator in service's: they change on reload). Nil: none.
	APIs func() []service.KnownAudience
	// Recorder feeds "Where tokens go wrong". Nil: the view says that
	// nothing is recorded.
	Recorder *Recorder
	// LoopbackHost: the listener is on loopback, so a request must name a
	// loopback host (localhost, 127.0.0.1, [::1]) in its Host header. A web
	// page elsewhere can point a name of its own at 127.0.0.1 (DNS
	// rebinding) and read the console as same-origin; its Host names it.
	LoopbackHost bool
}

// Handler serves the console under Prefix: its pages and assets, embedded
// in the binary, and two JSON answers for the page, GET Prefix+"api/apis"
// (the registered APIs) and GET Prefix+"api/stats" (the Recorder's
// snapshot). Every answer carries ContentSecurityPolicy and is not to be
// stored. Mount it at Prefix beside the HTTP/JSON API, whose
// usher.v1.TokenService the page calls on the same origin.
func Handler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+Prefix+"api/apis", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, apisJSON(o.APIs))
	})
	mux.HandleFunc("GET "+Prefix+"api/stats", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, statsJSON(o.Recorder, o.APIs))
	})
	mux.HandleFunc("GET "+Prefix+"{path...}", serveAsset)
	if o.LoopbackHost {
		return secured(loopbackHost(mux))
	}
	return secured(mux)
}

// loopbackHost refuses a request whose Host header is not a loopback name
// or address.
func loopbackHost(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if !config.IsLoopback(strings.ToLower(strings.Trim(host, "[]"))) {
			http.Error(w, fmt.Sprintf("the console on a loopback listener answers only requests for localhost, 127.0.0.1 or [::1], not Host %q: open it as http://127.0.0.1:PORT/console/", host), http.StatusMisdirectedRequest)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// secured sets the headers of every console answer and refuses every method
// but GET and HEAD.
func secured(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Permissions-Policy", "camera=(), microphone=(), geolocation=(), clipboard-read=()")
		h.Set("Cache-Control", "no-store")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "the console answers GET only; the token debugger posts to /usher.v1.TokenService/", http.StatusMethodNotAllowed)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func serveAsset(w http.ResponseWriter, r *http.Request) {
	name, ok := pages[r.PathValue("path")]
	if !ok {
		http.Error(w, "not found: the console's pages are "+Prefix+", "+Prefix+"issuers and "+Prefix+"where", http.StatusNotFound)
		return
	}
	b, err := assets.ReadFile(name)
	if err != nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", contentTypes[path.Ext(name)])
	if r.Method == http.MethodHead {
		return
	}
	_, _ = w.Write(b)
}

func writeJSON(w http.ResponseWriter, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, "could not encode the answer", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(append(b, '\n'))
}

type apiJSON struct {
	Audience string `json:"audience"`
	Name     string `json:"name,omitempty"`
}

func apisJSON(apis func() []service.KnownAudience) []apiJSON {
	out := []apiJSON{}
	if apis == nil {
		return out
	}
	for _, a := range apis() {
		out = append(out, apiJSON{Audience: a.Audience, Name: a.Name})
	}
	return out
}

type statsOut struct {
	Recording          bool           `json:"recording"`
	Now                time.Time      `json:"now"`
	Since              time.Time      `json:"since"`
	APIs               []apiJSON      `json:"apis"`
	Mismatches         []mismatchJSON `json:"mismatches"`
	MismatchesOverflow uint64         `json:"mismatchesOverflow"`
	MaxPairs           int            `json:"maxPairs"`
	Minutes            []time.Time    `json:"minutes"`
	Reasons            []reasonJSON   `json:"reasons"`
}

type mismatchJSON struct {
	Expected string `json:"expected"`
	Actual   string `json:"actual"`
	Count    uint64 `json:"count"`
}

type reasonJSON struct {
	Reason string   `json:"reason"`
	Counts []uint64 `json:"counts"`
}

func statsJSON(rec *Recorder, apis func() []service.KnownAudience) statsOut {
	out := statsOut{APIs: apisJSON(apis), Mismatches: []mismatchJSON{}, Minutes: []time.Time{}, Reasons: []reasonJSON{}, MaxPairs: MaxPairs}
	if rec == nil {
		out.Now = time.Now().UTC()
		return out
	}
	st := rec.Stats()
	out.Recording, out.Now, out.Since, out.MismatchesOverflow = true, st.Now.UTC(), st.Since.UTC(), st.MismatchesOverflow
	out.Minutes = st.Minutes
	for _, m := range st.Mismatches {
		out.Mismatches = append(out.Mismatches, mismatchJSON{Expected: m.Expected, Actual: m.Actual, Count: m.Count})
	}
	for _, rc := range st.Reasons {
		out.Reasons = append(out.Reasons, reasonJSON{Reason: rc.Reason.String(), Counts: rc.Counts})
	}
	return out
}
