package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/console"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/service"
)

// Pinned tool versions for the lines `usher dev` prints.
const (
	grpcurlCmd = "go run github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
	ghzCmd     = "go run github.com/bojand/ghz/cmd/ghz@v0.93.0"
)

// devCacheTTL is the introspection cache_ttl of usher dev: the longest a
// revoked opaque token is still answered VALID. Short, so that the demo shows
// revocation within seconds; a real deployment weighs it against the load on
// its issuer's introspection endpoint.
const devCacheTTL = 5 * time.Second

// devHTTPListen is usher dev's HTTP/JSON address, which serves the console.
const devHTTPListen = "127.0.0.1:50080"

// devAPIs are the two APIs of the article: a token for one is not a token for the other.
var devAPIs = []service.KnownAudience{
	{Audience: "api/users", Name: "Users API"},
	{Audience: "api/invoices", Name: "Invoices API"},
}

func runDev(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", config.DefaultListen, "gRPC address (loopback only)")
	issuerListen := fs.String("issuer-listen", "127.0.0.1:0", "dev issuer HTTP address (loopback only)")
	httpListen := fs.String("http-listen", devHTTPListen, "HTTP/JSON address with the console under /console/ (loopback only; \"\" for none)")
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := requireLoopback("--listen", *listen); err != nil {
		return err
	}
	if *httpListen != "" {
		if err := requireLoopback("--http-listen", *httpListen); err != nil {
			return err
		}
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	iss, err := devissuer.New(ctx, *issuerListen)
	if err != nil {
		return err
	}
	defer iss.Close()
	secretFile, err := writeDevSecret()
	if err != nil {
		return err
	}
	defer os.Remove(secretFile)
	cfg := devConfig(*listen, *httpListen, iss, secretFile)
	if err := cfg.Validate(); err != nil {
		return err
	}
	tokens, err := devTokens(iss)
	if err != nil {
		return err
	}
	dir, err := writeDevFiles(tokens)
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	var consoleURL string
	return serve(ctx, serveOptions{cfg: cfg, log: log, ready: func(addr string) {
		printDevBanner(stdout, addr, consoleURL, iss, dir, tokens)
	}, listening: func(key, addr string) {
		if key == "http_listen" {
			consoleURL = "http://" + addr + console.Prefix
		}
	}})
}

// devConfig trusts the dev issuer for JWTs (keys through discovery) and for
// its opaque tokens (introspection_endpoint through discovery), and serves
// the console on httpListen (none when "").
func devConfig(listen, httpListen string, iss *devissuer.Issuer, secretFile string) *config.Config {
	return &config.Config{
		Listen: listen, HTTPListen: httpListen, Console: httpListen != "",
		Engine: service.Config{
			Issuers: []service.IssuerConfig{{
				Issuer:    iss.URL(),
				Discovery: true,
				TokenType: "at+jwt",
				Introspection: &service.IntrospectionConfig{
					ClientID:         devissuer.ClientID,
					ClientSecretFile: secretFile,
					TokenPrefixes:    []string{devissuer.OpaquePrefix},
					CacheTTL:         devCacheTTL,
				},
			}},
			Audiences: devAPIs,
		},
	}
}

// writeDevSecret puts the dev client's secret in a new 0600 file, as
// client_secret_file takes a file only; the caller removes it.
func writeDevSecret() (string, error) {
	f, err := os.CreateTemp("", "usher-dev-introspection-*.secret")
	if err != nil {
		return "", fmt.Errorf("dev: the introspection client secret file: %w", err)
	}
	_, werr := f.WriteString(devissuer.ClientSecret)
	if err := errors.Join(werr, f.Chmod(0o600), f.Close()); err != nil {
		_ = os.Remove(f.Name())
		return "", fmt.Errorf("dev: the introspection client secret file: %w", err)
	}
	return f.Name(), nil
}

// devTokens are the banner's tokens: a JWT per API, keyed by audience, and
// an opaque token for api/users under "opaque".
func devTokens(iss *devissuer.Issuer) (map[string]string, error) {
	tokens := map[string]string{}
	for _, api := range devAPIs {
		tok, err := iss.Mint(devissuer.MintRequest{
			Audience: []string{api.Audience},
			Scopes:   []string{strings.TrimPrefix(api.Audience, "api/") + ".read"},
			TTL:      devTokenLifetime,
		})
		if err != nil {
			return nil, err
		}
		tokens[api.Audience] = tok
	}
	tok, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}, TTL: devTokenLifetime, Opaque: true})
	if err != nil {
		return nil, err
	}
	tokens["opaque"] = tok
	return tokens, nil
}

func requireLoopback(flagName, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return usageError{fmt.Sprintf("%s %q: want host:port", flagName, addr)}
	}
	if !config.IsLoopback(host) {
		return usageError{fmt.Sprintf("%s %q: usher dev serves loopback only (e.g. 127.0.0.1:50051); use `usher serve --config` for anything else", flagName, addr)}
	}
	return nil
}

// The files usher dev writes for its banner's commands: a token a file,
// and the ValidateToken requests grpcurl and ghz read.
const (
	devUsersJWT      = "users.jwt"
	devInvoicesJWT   = "invoices.jwt"
	devUsersOpaque   = "users.opaque"
	devValidReq      = "valid.json"    // the Users token at api/users
	devMismatchReq   = "mismatch.json" // the Users token at api/invoices
	devOpaqueReq     = "opaque.json"   // the opaque Users token at api/users
	devTokenLifetime = 12 * time.Hour
)

// writeDevFiles writes the banner's tokens and requests into a new
// directory (0700, files 0600) that the caller removes: each command of
// the banner refers to its file, so no token is repeated inside commands.
func writeDevFiles(tokens map[string]string) (string, error) {
	dir, err := os.MkdirTemp("", "usher-dev-")
	if err != nil {
		return "", fmt.Errorf("dev: the token directory: %w", err)
	}
	req := func(tok, aud string) string {
		b, _ := json.Marshal(map[string]string{"token": tok, "expected_audience": aud})
		return string(b)
	}
	files := map[string]string{
		devUsersJWT:    tokens["api/users"],
		devInvoicesJWT: tokens["api/invoices"],
		devUsersOpaque: tokens["opaque"],
		devValidReq:    req(tokens["api/users"], "api/users"),
		devMismatchReq: req(tokens["api/users"], "api/invoices"),
		devOpaqueReq:   req(tokens["opaque"], "api/users"),
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o600); err != nil {
			_ = os.RemoveAll(dir)
			return "", fmt.Errorf("dev: the token directory: %w", err)
		}
	}
	return dir, nil
}

// printDevBanner says where usher dev listens and what to try, each
// command ready to paste: tokens are read from the files in dir, and every
// usher command carries --addr when addr is not the default.
func printDevBanner(w io.Writer, addr, consoleURL string, iss *devissuer.Issuer, dir string, tokens map[string]string) {
	f := func(name string) string { return filepath.Join(dir, name) }
	at := ""
	if addr != defaultAddr {
		at = " --addr " + addr
	}
	usher := func(args string) string {
		cmd, rest, _ := strings.Cut(args, " ")
		return strings.TrimSpace("usher " + cmd + at + " " + rest)
	}
	grpcurl := func(req string) string {
		return grpcurlCmd + " -plaintext -d @ " + addr + " usher.v1.TokenService/ValidateToken < " + f(req)
	}
	fmt.Fprintln(w, "usher dev: a development issuer and a validator that trusts it, on loopback only (not for production)")
	if consoleURL != "" {
		fmt.Fprintln(w, "console: "+consoleURL)
	}
	fmt.Fprintf(w, `
  gRPC     %s   (usher.v1.TokenService, health, reflection)
  issuer   %s   (OIDC discovery, JWKS, client-credentials token endpoint,
           introspection and revocation of opaque tokens)
  APIs     api/users (Users API), api/invoices (Invoices API)
  tokens   %s   (files 0600, valid %gh, removed when usher dev stops)
           %-13s a JWT for api/users
           %-13s a JWT for api/invoices
           %-13s an opaque token for api/users
           %s, %s, %s: the ValidateToken requests below

VALID: the Users token at the Users API
  %s - < %s
  %s

AUDIENCE_MISMATCH: the Users token at the Invoices API (the article's bug)
  %s - < %s
  %s

VALID: the opaque token at the Users API: the issuer keeps its claims and usher asks it (RFC 7662 introspection)
  %s - < %s
  %s

Revoke it (RFC 7009): usher answers INACTIVE within %s, its introspection cache_ttl
  %s - < %s

Load test with ghz
  %s --insecure --call usher.v1.TokenService/ValidateToken -D %s -n 20000 -c 50 %s

More tokens:  %s   (--opaque for an opaque one)
DPoP-bound:   %s   (send "Authorization: DPoP TOKEN" and "DPoP: $(usher proof --key dpop.pem --method GET --uri URL --token TOKEN)")
Check one:    %s
`, addr, iss.URL(), dir, devTokenLifetime.Hours(), devUsersJWT, devInvoicesJWT, devUsersOpaque, devValidReq, devMismatchReq, devOpaqueReq,
		usher("validate --audience api/users"), f(devUsersJWT), grpcurl(devValidReq),
		usher("validate --audience api/invoices"), f(devUsersJWT), grpcurl(devMismatchReq),
		usher("validate --audience api/users"), f(devUsersOpaque), grpcurl(devOpaqueReq),
		devCacheTTL, usher("revoke"), f(devUsersOpaque),
		ghzCmd, f(devValidReq), addr,
		usher("mint --audience api/invoices --scope invoices.read"),
		usher("mint --audience api/invoices --dpop-key dpop.pem"),
		usher("validate --audience api/invoices TOKEN"))
	printDevTokens(w, tokens)
	fmt.Fprintln(w, "Ctrl-C stops.")
}

// printDevTokens prints a JWT per API, each once, last: for pasting into
// the console or a client (the commands above read them from their files).
func printDevTokens(w io.Writer, tokens map[string]string) {
	fmt.Fprintf(w, "\nA token per API, valid %gh (the same as in %s and %s):\n", devTokenLifetime.Hours(), devUsersJWT, devInvoicesJWT)
	for _, api := range devAPIs {
		fmt.Fprintf(w, "  %-13s %s\n", api.Audience, tokens[api.Audience])
	}
}
