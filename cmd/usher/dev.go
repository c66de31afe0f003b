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
	var consoleURL string
	return serve(ctx, serveOptions{cfg: cfg, log: log, ready: func(addr string) {
		printDevBanner(stdout, addr, consoleURL, iss, tokens)
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
			TTL:      12 * time.Hour,
		})
		if err != nil {
			return nil, err
		}
		tokens[api.Audience] = tok
	}
	tok, err := iss.Mint(devissuer.MintRequest{Audience: []string{"api/users"}, Scopes: []string{"users.read"}, TTL: 12 * time.Hour, Opaque: true})
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

func printDevBanner(w io.Writer, addr, consoleURL string, iss *devissuer.Issuer, tokens map[string]string) {
	users, invoices, opaque := tokens["api/users"], tokens["api/invoices"], tokens["opaque"]
	req := func(tok, aud string) string {
		b, _ := json.Marshal(map[string]string{"token": tok, "expected_audience": aud})
		return "'" + string(b) + "'"
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

Token for api/users (Users API), valid 12h:
%s

Token for api/invoices (Invoices API), valid 12h:
%s

VALID: the Users token at the Users API
  %s -plaintext -d %s %s usher.v1.TokenService/ValidateToken

AUDIENCE_MISMATCH: the Users token at the Invoices API (the article's bug)
  %s -plaintext -d %s %s usher.v1.TokenService/ValidateToken

Opaque token for api/users (Users API), valid 12h: the issuer keeps its claims and usher asks it (RFC 7662 introspection):
%s

VALID: the opaque token at the Users API (at the Invoices API: AUDIENCE_MISMATCH, as for a JWT)
  %s -plaintext -d %s %s usher.v1.TokenService/ValidateToken

Revoke it (RFC 7009): usher answers INACTIVE within %s, its introspection cache_ttl
  usher revoke %s

Load test with ghz
  %s --insecure --call usher.v1.TokenService/ValidateToken -d %s -n 20000 -c 50 %s

More tokens:  usher mint --audience api/invoices --scope invoices.read   (--opaque for an opaque one)
DPoP-bound:   usher mint --audience api/invoices --dpop-key dpop.pem   (send "Authorization: DPoP TOKEN" and "DPoP: $(usher proof --key dpop.pem --method GET --uri URL --token TOKEN)")
Check one:    usher validate --audience api/invoices TOKEN
Ctrl-C stops.
`, addr, iss.URL(), users, invoices,
		grpcurlCmd, req(users, "api/users"), addr,
		grpcurlCmd, req(users, "api/invoices"), addr,
		opaque, grpcurlCmd, req(opaque, "api/users"), addr, devCacheTTL, opaque,
		ghzCmd, req(users, "api/users"), addr)
}
