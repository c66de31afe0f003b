package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
	"github.com/usher-dev/usher/service"
)

// hostile repaints a terminal: it clears the screen, writes a green VALID,
// reverses the text that follows (bidi override and isolate), and carries a
// C1 CSI, NEL and DEL.
const hostile = "\x1b[2J\x1b[H\x1b[1;32mVALID\x1b[0m\u202e\u2066evil\u2069\u0085\u009b31m\x7f"

// hostileEscaped is how hostile must be printed.
const hostileEscaped = `\u001b[2J\u001b[H\u001b[1;32mVALID\u001b[0m\u202e\u2066evil\u2069\u0085\u009b31m\u007f`

// terminalSafe reports the first character of out a terminal would act on
// rather than show (line feeds end lines and are fine), stated here apart
// from printable: C0, DEL, C1, the bidi controls, U+2028/U+2029, bytes that
// are not UTF-8.
func terminalSafe(t *testing.T, what, out string) {
	t.Helper()
	for i, r := range out {
		bidi := r == 0x061c || r == 0x200e || r == 0x200f || (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069)
		if (r < 0x20 && r != '\n') || (r >= 0x7f && r <= 0x9f) || bidi || r == 0x2028 || r == 0x2029 ||
			(r == utf8.RuneError && !strings.HasPrefix(out[i:], "\uFFFD")) {
			t.Errorf("%s prints %U at byte %d:\n%q", what, r, i, out)
			return
		}
	}
}

func hasLine(t *testing.T, what, out, want string) {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(line, want) {
			return
		}
	}
	t.Errorf("%s lacks a line with %q:\n%s", what, want, out)
}

// TestHumanOutputEscapesTokens: a token whose sub, iss, aud, client_id and
// kid hold terminal escape sequences and bidi overrides, valid or forged,
// is printed escaped by `usher validate` and `usher inspect`, through a
// real usher; the rest of the output is unchanged.
func TestHumanOutputEscapesTokens(t *testing.T) {
	e := testkit.NewDevEngine(t)
	_, addr := e.Serve(t)
	valid := e.Mint(t, devissuer.MintRequest{Audience: []string{"api/users", "api/" + hostile}, Subject: "svc" + hostile, ClientID: "cl" + hostile})
	key := testkit.RSAKey(t, "kid"+hostile)
	now := time.Now()
	forged := testkit.Sign(t, map[string]any{"alg": "RS256", "kid": key.KID, "typ": "at+jwt"}, map[string]any{
		"iss": "https://evil.example/" + hostile, "sub": hostile, "aud": []string{"api/users", hostile},
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}, "RS256", key.Priv)

	for _, c := range []struct {
		args  []string
		lines []string // each must appear in some line of the output
	}{
		{[]string{"validate", "--audience", "api/users", valid}, []string{"VALID  ", "sub       svc" + hostileEscaped, "client    cl" + hostileEscaped, "aud       api/users api/" + hostileEscaped}},
		{[]string{"inspect", valid}, []string{"signature  VALID", "sub       svc" + hostileEscaped}},
		{[]string{"validate", "--audience", "api/users", forged}, []string{"UNTRUSTED_ISSUER  "}},
		{[]string{"inspect", forged}, []string{
			"claims below are UNVERIFIED", "iss       https://evil.example/" + hostileEscaped, "sub       " + hostileEscaped,
			"aud       api/users " + hostileEscaped, "kid/alg   kid" + hostileEscaped + " / RS256", `"kid":"kid\u001b[2J`,
		}},
	} {
		what := "usher " + c.args[0]
		out, err := runCmd(t, append([]string{c.args[0], "--addr", addr}, c.args[1:]...)...)
		if err != nil && c.args[0] == "inspect" {
			t.Fatalf("%s: %v", what, err)
		}
		terminalSafe(t, what, out)
		for _, want := range c.lines {
			hasLine(t, what, out, want)
		}
	}

	// --json is protojson's, unchanged: the claims come back as they are.
	out, err := runCmd(t, "inspect", "--addr", addr, "--json", forged)
	if err != nil {
		t.Fatal(err)
	}
	var resp struct{ Claims struct{ Subject string } }
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Claims.Subject != hostile {
		t.Errorf("--json: subject %q (%v)", resp.Claims.Subject, err)
	}
}

// hostileIssuer serves a discovery document whose jwks_uri, and a key set
// whose kid, hold hostile.
func hostileIssuer(t *testing.T) *httptest.Server {
	t.Helper()
	key := testkit.RSAKey(t, "kid"+hostile)
	jwksPath := "/jwks\u202e\u0085\u009b.json" // bidi and C1: what a URL's path can carry
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			json.NewEncoder(w).Encode(map[string]any{"issuer": srv.URL, "jwks_uri": srv.URL + jwksPath})
		case jwksPath:
			w.Write(testkit.JWKS(key))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestDoctorEscapesWhatIssuersSay: `usher doctor` prints escaped what an
// issuer's discovery document (its issuer, its jwks_uri) and key set (a
// kid) say, checking a config and checking a running usher.
func TestDoctorEscapesWhatIssuersSay(t *testing.T) {
	evil := hostileIssuer(t)
	liar := doctorIssuer(t, func(self string) string { return self + hostile }, 2048)
	out, code := runDoctorCmd(t, fmt.Sprintf("issuers:\n  - issuer: %q\n    discovery: true\n  - issuer: %q\n    discovery: true\n", evil.URL, liar.URL()))
	if code != 1 {
		t.Errorf("exit %d, want 1 (the liar's issuer does not match)", code)
	}
	terminalSafe(t, "usher doctor --config", out)
	hasLine(t, "usher doctor --config", out, "✓ key set usable: 1 usable keys from "+evil.URL+"/jwks")
	hasLine(t, "usher doctor --config", out, "kid"+hostileEscaped)
	hasLine(t, "usher doctor --config", out, `✗ discovery issuer matches: the document's issuer is "`+liar.URL())

	// A running usher, asked over gRPC, reports the same kid and key set URL.
	ctx := testkit.Context(t)
	v := testkit.NewValidator(t, ctx, testkit.NewClock(), []service.IssuerConfig{{Issuer: evil.URL, Discovery: true}})
	if err := v.WaitTried(ctx); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	grpcapi.Register(ctx, gs, v, nil)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	var buf bytes.Buffer
	err = run(context.Background(), []string{"doctor", "--addr", lis.Addr().String()}, nil, &buf, &buf)
	remote := buf.String()
	terminalSafe(t, "usher doctor --addr", remote)
	hasLine(t, "usher doctor --addr", remote, "✓ keys held: kid"+hostileEscaped)
	if err != nil && !strings.Contains(remote, "problem") {
		t.Errorf("usher doctor --addr: %v\n%s", err, remote)
	}
}

// TestPrintable: what is escaped, and that printable text is not touched.
func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{
		"":                          "",
		"svc-billing-ui":            "svc-billing-ui",
		`a\x1b "quoted" ✓ ✗ é 日本 😀`: `a\x1b "quoted" ✓ ✗ é 日本 😀`,
		"tab\there":                 `tab\u0009here`,
		"line\nbreak\r":             `line\u000abreak\u000d`,
		"\x00\x1b\x7f":              `\u0000\u001b\u007f`,
		"\u0080\u0085\u009b\u009f":  `\u0080\u0085\u009b\u009f`,
		"\u00a0nbsp":                "\u00a0nbsp",
		"\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c": `\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c`,
		"\u2028\u2029":    `\u2028\u2029`,
		"bad\xffutf8\xc3": `bad\xffutf8\xc3`,
		"\uFFFD":          "\uFFFD",
	} {
		if got := printable(in); got != want {
			t.Errorf("printable(%q) = %q, want %q", in, got, want)
		}
	}
}

// An error that carries a value from a config file or a server reaches
// stderr escaped, one problem a line.
func TestExitCodeEscapesErrors(t *testing.T) {
	var out bytes.Buffer
	code := exitCode(errors.New("config x.yaml: issuers[0].issuer: \"\x1b[2Jhttps://a\u202e\"\nissuers[1].jwks_uri: bad"), &out)
	got := out.String()
	if code != 1 || strings.ContainsAny(got, "\x1b\u202e") || strings.Count(got, "\n") != 2 || !strings.HasPrefix(got, "usher: config x.yaml: ") {
		t.Errorf("exit %d, stderr %q", code, got)
	}
}
