package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/service"
)

// Pinned tool versions for the lines `usher dev` prints.
const (
	grpcurlCmd = "go run github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4"
	ghzCmd     = "go run github.com/bojand/ghz/cmd/ghz@v0.93.0"
)

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
	logLevel := fs.String("log-level", "warn", "debug, info, warn or error")
	if _, err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := requireLoopback("--listen", *listen); err != nil {
		return err
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
	cfg := &config.Config{
		Listen: *listen,
		Engine: service.Config{
			Issuers: []service.IssuerConfig{{
				Issuer:    iss.URL(),
				Discovery: true,
				TokenType: "at+jwt",
			}},
			Audiences: devAPIs,
		},
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	tokens := map[string]string{}
	for _, api := range devAPIs {
		tok, err := iss.Mint(devissuer.MintRequest{
			Audience: []string{api.Audience},
			Scopes:   []string{strings.TrimPrefix(api.Audience, "api/") + ".read"},
			TTL:      12 * time.Hour,
		})
		if err != nil {
			return err
		}
		tokens[api.Audience] = tok
	}
	return serve(ctx, serveOptions{cfg: cfg, log: log, ready: func(addr string) {
		printDevBanner(stdout, addr, iss, tokens)
	}})
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

func printDevBanner(w io.Writer, addr string, iss *devissuer.Issuer, tokens map[string]string) {
	users, invoices := tokens["api/users"], tokens["api/invoices"]
	req := func(tok, aud string) string {
		b, _ := json.Marshal(map[string]string{"token": tok, "expected_audience": aud})
		return "'" + string(b) + "'"
	}
	fmt.Fprintf(w, `usher dev: a development issuer and a validator that trusts it, on loopback only (not for production)

  gRPC     %s   (usher.v1.TokenService, health, reflection)
  issuer   %s   (OIDC discovery, JWKS, client-credentials token endpoint)
  APIs     api/users (Users API), api/invoices (Invoices API)

Token for api/users (Users API), valid 12h:
%s

Token for api/invoices (Invoices API), valid 12h:
%s

VALID: the Users token at the Users API
  %s -plaintext -d %s %s usher.v1.TokenService/ValidateToken

AUDIENCE_MISMATCH: the Users token at the Invoices API (the article's bug)
  %s -plaintext -d %s %s usher.v1.TokenService/ValidateToken

Load test with ghz
  %s --insecure --call usher.v1.TokenService/ValidateToken -d %s -n 20000 -c 50 %s

More tokens:  usher mint --audience api/invoices --scope invoices.read
Check one:    usher validate --audience api/invoices TOKEN
Ctrl-C stops.
`, addr, iss.URL(), users, invoices,
		grpcurlCmd, req(users, "api/users"), addr,
		grpcurlCmd, req(users, "api/invoices"), addr,
		ghzCmd, req(users, "api/users"), addr)
}
