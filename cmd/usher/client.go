package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/usher-dev/usher/internal/config"
	"github.com/usher-dev/usher/internal/devissuer"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// clientFlags are the flags of every command that calls a running usher.
type clientFlags struct {
	addr    string
	json    bool
	timeout time.Duration
	transport
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	c.registerConn(fs, "address of a running usher")
	fs.BoolVar(&c.json, "json", false, "print the response as protobuf JSON")
	fs.DurationVar(&c.timeout, "timeout", 5*time.Second, "deadline of the call")
}

// registerConn registers --addr and the transport flags.
func (c *clientFlags) registerConn(fs *flag.FlagSet, addrHelp string) {
	fs.StringVar(&c.addr, "addr", "", addrHelp+" (default $"+envAddr+", else "+defaultAddr+")")
	c.transport.register(fs)
}

// parse parses the flags, then takes what they left unset from the
// environment: --addr from USHER_ADDR (else defaultAddr), the TLS settings
// from theirs.
func (c *clientFlags) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	return pos, c.resolve(defaultAddr)
}

// resolve fills the address (fallback when neither --addr nor USHER_ADDR
// gives one) and the transport from the environment.
func (c *clientFlags) resolve(fallback string) error {
	if c.addr == "" {
		c.addr = os.Getenv(envAddr)
	}
	if c.addr == "" {
		c.addr = fallback
	}
	return c.transport.resolve(os.Getenv)
}

// call dials usher, runs fn with the call's deadline, and closes.
func (c *clientFlags) call(ctx context.Context, fn func(context.Context, *grpc.ClientConn) error) error {
	opt, err := c.dialOption(c.addr)
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(c.addr, opt)
	if err != nil {
		return fmt.Errorf("connect to usher at %s: %w", printable(c.addr), err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	if err := fn(ctx, conn); err != nil {
		return &callError{addr: c.addr, how: c.describe(c.addr), err: err, fix: c.fix(err, c.addr)}
	}
	return nil
}

// callError is a failed call to usher, and what to do about it.
type callError struct {
	addr, how string // how it was dialled: "over TLS", "in plaintext"
	err       error
	fix       string // empty when the error says it all
}

func (e *callError) Error() string {
	if e.fix == "" {
		return fmt.Sprintf("usher at %s: %s", printable(e.addr), printable(e.err.Error()))
	}
	return fmt.Sprintf("usher at %s (dialled %s): %s\n  fix: %s", printable(e.addr), e.how, printable(e.err.Error()), printable(e.fix))
}

func (e *callError) Unwrap() error { return e.err }

// readToken takes the one positional argument; "-" reads stdin.
func readToken(pos []string, stdin io.Reader) (string, error) {
	if len(pos) != 1 {
		return "", usageError{fmt.Sprintf("want exactly one TOKEN argument (or - for stdin), got %d", len(pos))}
	}
	if pos[0] != "-" {
		return pos[0], nil
	}
	b, err := io.ReadAll(io.LimitReader(bufio.NewReader(stdin), 1<<20))
	if err != nil {
		return "", fmt.Errorf("read token from stdin: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

func runValidate(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	audience := fs.String("audience", "", "the audience of the API the token is sent to (required)")
	var scopes stringList
	fs.Var(&scopes, "scope", "a scope the API requires (repeatable)")
	var sc senderConstraint
	sc.register(fs)
	pos, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	if *audience == "" {
		return usageError{"validate: --audience is required: the audience your API answers to, e.g. api/invoices"}
	}
	tok, err := readToken(pos, stdin)
	if err != nil {
		return err
	}
	req := &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: *audience, RequiredScopes: scopes}
	if err := sc.fill(req); err != nil {
		return err
	}
	var resp *usherv1.ValidateTokenResponse
	err = cf.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = usherv1.NewTokenServiceClient(conn).ValidateToken(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	if cf.json {
		err = printJSON(stdout, resp)
	} else {
		printVerdict(stdout, resp, time.Now(), colorOn(stdout))
	}
	if err == nil && !resp.GetValid() {
		return errNotValid
	}
	return err
}

func runInspect(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	pos, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	tok, err := readToken(pos, stdin)
	if err != nil {
		return err
	}
	var resp *usherv1.InspectTokenResponse
	err = cf.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = usherv1.NewTokenServiceClient(conn).InspectToken(ctx, &usherv1.InspectTokenRequest{Token: tok})
		return err
	})
	if err != nil {
		return err
	}
	if cf.json {
		return printJSON(stdout, resp)
	}
	printInspection(stdout, resp, time.Now(), colorOn(stdout))
	return nil
}

// senderConstraint is what `usher validate` sends for a sender-constrained
// token (contract §8): the scheme, the DPoP proof and the request it was
// made for, the client certificate's thumbprint.
type senderConstraint struct {
	scheme, proof, method, uri, certSHA256 string
}

func (s *senderConstraint) register(fs *flag.FlagSet) {
	fs.StringVar(&s.scheme, "scheme", "", "the authorization scheme the token came with: Bearer (the default) or DPoP (the default with --dpop-proof)")
	fs.StringVar(&s.proof, "dpop-proof", "", "the request's DPoP header: a proof, e.g. from usher proof --key FILE --method M --uri U --token TOKEN; needs --method and --uri")
	fs.StringVar(&s.method, "method", "", "the HTTP method of the request the proof was made for (POST for a gRPC call)")
	fs.StringVar(&s.uri, "uri", "", "the URI of that request, without query, e.g. https://api.example.com/invoices")
	fs.StringVar(&s.certSHA256, "cert-sha256", "", "base64url SHA-256 of the caller's DER client certificate, for a certificate-bound token (RFC 8705 x5t#S256)")
}

// fill puts the flags in req, or says what is missing.
func (s *senderConstraint) fill(req *usherv1.ValidateTokenRequest) error {
	if s.proof != "" && (s.method == "" || s.uri == "") {
		return usageError{"validate: a DPoP proof is checked against the request it was made for: give --method and --uri with --dpop-proof, the same as usher proof's"}
	}
	if s.scheme == "" && s.proof != "" {
		s.scheme = "DPoP"
	}
	req.Scheme, req.DpopProof, req.HttpMethod, req.HttpUri, req.ClientCertificateSha256 = s.scheme, s.proof, s.method, s.uri, s.certSHA256
	return nil
}

func reasonName(r usherv1.Reason) string { return strings.TrimPrefix(r.String(), "REASON_") }

// printVerdict is the human block of `usher validate`: the reason and its
// sentence, expected vs actual, the hint, the other failed checks, and the
// claims that matter with times in UTC and relative to now. Every string
// of the response is printable()'d: it may come from a forged token.
func printVerdict(w io.Writer, r *usherv1.ValidateTokenResponse, now time.Time, color bool) {
	if r.GetValid() {
		fmt.Fprintf(w, "%s  %s\n", paint(color, green+bold, "VALID"), printable(r.GetMessage()))
	} else {
		fmt.Fprintf(w, "%s  %s\n", paint(color, red+bold, reasonName(r.GetReason())), printable(r.GetMessage()))
	}
	if m := r.GetMismatch(); m != nil {
		fmt.Fprintf(w, "  expected %s: %s\n", printable(m.GetClaim()), printable(listOrNone(m.GetExpected())))
		fmt.Fprintf(w, "  actual   %s: %s\n", printable(m.GetClaim()), printable(listOrNone(m.GetActual())))
	}
	if h := r.GetHint(); h != "" {
		fmt.Fprintf(w, "  hint: %s\n", printable(h))
	}
	for _, v := range r.GetViolations()[min(1, len(r.GetViolations())):] {
		fmt.Fprintf(w, "  also %s: %s\n", reasonName(v.GetReason()), printable(v.GetMessage()))
	}
	printClaims(w, r.GetClaims(), now)
}

// printInspection is the human block of `usher inspect`.
func printInspection(w io.Writer, r *usherv1.InspectTokenResponse, now time.Time, color bool) {
	sig := reasonName(r.GetSignature())
	if r.GetSignature() == usherv1.Reason_REASON_VALID {
		sig = paint(color, green+bold, sig)
	} else {
		sig = paint(color, red+bold, sig)
	}
	fmt.Fprintf(w, "signature  %s  %s\n", sig, printable(r.GetMessage()))
	if h := r.GetHint(); h != "" {
		fmt.Fprintf(w, "  hint: %s\n", printable(h))
	}
	if r.GetHeader() != nil {
		b, _ := json.Marshal(r.GetHeader().AsMap())
		fmt.Fprintf(w, "  header: %s\n", printable(string(b)))
	}
	if r.GetSignature() != usherv1.Reason_REASON_VALID && r.GetClaims() != nil {
		fmt.Fprintln(w, "  claims below are UNVERIFIED: do not trust them")
	}
	printClaims(w, r.GetClaims(), now)
	if len(r.GetAudiences()) > 0 {
		var names []string
		for _, a := range r.GetAudiences() {
			names = append(names, fmt.Sprintf("%s (%s)", a.GetAudience(), a.GetName()))
		}
		fmt.Fprintf(w, "  accepted by: %s\n", printable(strings.Join(names, ", ")))
	}
}

func printClaims(w io.Writer, c *usherv1.Claims, now time.Time) {
	if c == nil {
		return
	}
	line := func(k, v string) {
		if v != "" {
			fmt.Fprintf(w, "  %-9s %s\n", k, printable(v))
		}
	}
	line("iss", c.GetIssuer())
	line("sub", c.GetSubject())
	line("aud", strings.Join(c.GetAudience(), " "))
	line("scope", strings.Join(c.GetScopes(), " "))
	line("client", c.GetClientId())
	line("iat", when(c.GetIssuedAt(), now))
	line("exp", when(c.GetExpiresAt(), now))
	line("kid/alg", strings.Trim(c.GetKeyId()+" / "+c.GetAlgorithm(), " /"))
	if cnf := c.GetConfirmation(); cnf != nil {
		var bound []string
		if cnf.GetJkt() != "" {
			bound = append(bound, "jkt "+cnf.GetJkt()+" (DPoP-bound)")
		}
		if cnf.GetX5TS256() != "" {
			bound = append(bound, "x5t#S256 "+cnf.GetX5TS256()+" (certificate-bound)")
		}
		line("cnf", strings.Join(bound, ", "))
	}
}

func when(ts *timestamppb.Timestamp, now time.Time) string {
	if ts == nil {
		return ""
	}
	t := ts.AsTime().UTC()
	d := t.Sub(now).Round(time.Second)
	if d >= 0 {
		return fmt.Sprintf("%s (in %s)", t.Format(time.RFC3339), d)
	}
	return fmt.Sprintf("%s (%s ago)", t.Format(time.RFC3339), -d)
}

func listOrNone(v []string) string {
	if len(v) == 0 {
		return "(none)"
	}
	return strings.Join(v, " ")
}

func runMint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher mint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.register(fs)
	fs.Lookup("json").Usage = `print the token endpoint's answer as JSON: {"access_token", "token_type", "expires_in", "scope"}`
	audience := fs.String("audience", "", "the audience (API) the token is for (required)")
	var scopes stringList
	fs.Var(&scopes, "scope", "a scope to grant (repeatable)")
	ttl := fs.Duration("ttl", time.Hour, "lifetime; negative mints an already expired token")
	kid := fs.String("kid", "", "signing key id (dev-rs256, dev-es256, dev-eddsa; any other kid signs with a key the issuer does not publish)")
	opaque := fs.Bool("opaque", false, "an opaque token (usher asks the issuer about it by introspection) instead of a JWT")
	issuer := fs.String("issuer", "", "dev issuer URL (default: asked from the usher at --addr)")
	dpopKey := fs.String("dpop-key", "", "bind the token to the DPoP key in this file (PEM or JWK private key; created with a new P-256 key, mode 0600, when missing): send it as \"Authorization: DPoP TOKEN\" with a proof from usher proof --key FILE")
	if _, err := cf.parse(fs, args); err != nil {
		return err
	}
	if *audience == "" {
		return usageError{"mint: --audience is required, e.g. --audience api/users"}
	}
	if *opaque && *kid != "" {
		return usageError{"mint: --kid picks a signing key, but an opaque token is not signed: drop --kid or --opaque"}
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	tokenURL, err := devEndpoint(ctx, &cf, *issuer, "token_endpoint", "mint")
	if err != nil {
		return err
	}
	form := url.Values{"grant_type": {"client_credentials"}, "audience": {*audience}, "ttl": {ttl.String()}}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
	if *kid != "" {
		form.Set("kid", *kid)
	}
	if *opaque {
		form.Set("token_format", "opaque")
	}
	req, err := devClientPost(ctx, tokenURL, form)
	if err != nil {
		return err
	}
	if *dpopKey != "" {
		if err := addDPoPProof(req, *dpopKey, stderr); err != nil {
			return err
		}
	}
	var out tokenResponse
	if err := getJSON(req, &out); err != nil {
		return fmt.Errorf("mint: %w", err)
	}
	switch {
	case out.AccessToken == "":
		return fmt.Errorf("mint: token endpoint %s answered %s: %s", printable(tokenURL), printable(out.Error), printable(out.Description))
	case *dpopKey != "" && !strings.EqualFold(out.TokenType, "DPoP"):
		return fmt.Errorf("mint: token endpoint %s answered token_type %q, not DPoP: it did not bind the token to the key in %s", printable(tokenURL), printable(out.TokenType), printable(*dpopKey))
	}
	if cf.json {
		return out.printJSON(stdout)
	}
	_, err = fmt.Fprintln(stdout, out.AccessToken)
	return err
}

// tokenResponse is the token endpoint's answer (RFC 6749 §5.1, §5.2).
type tokenResponse struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope"`
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// printJSON is mint --json: the successful token response, as the token
// endpoint gives it to an OAuth 2.0 client.
func (t tokenResponse) printJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
		Scope       string `json:"scope,omitempty"`
	}{t.AccessToken, t.TokenType, t.ExpiresIn, t.Scope})
}

// addDPoPProof signs the token request with the DPoP key in keyFile (RFC
// 9449 §5), creating the key when the file does not exist.
func addDPoPProof(req *http.Request, keyFile string, stderr io.Writer) error {
	signer, created, err := dpopSigner(keyFile, true)
	if err != nil {
		return fmt.Errorf("mint: %w", err)
	}
	if created {
		fmt.Fprintf(stderr, "usher mint: created %s with a new P-256 key (mode 0600, keep it private); tokens minted with --dpop-key %s are bound to it (cnf.jkt %s)\n", printable(keyFile), printable(keyFile), signer.Thumbprint())
	}
	proof, err := signer.Proof(http.MethodPost, req.URL.String(), "")
	if err != nil {
		return fmt.Errorf("mint: %w", err)
	}
	req.Header.Set("DPoP", proof)
	return nil
}

// runRevoke revokes a token at the running usher dev's issuer (RFC 7009).
func runRevoke(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("usher revoke", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cf clientFlags
	cf.registerConn(fs, "address of the running usher dev, asked for its issuer")
	fs.BoolVar(&cf.json, "json", false, `print {"revoked": true, "revocation_endpoint": URL} on stdout`)
	fs.DurationVar(&cf.timeout, "timeout", 5*time.Second, "deadline of the whole command")
	issuer := fs.String("issuer", "", "dev issuer URL, on loopback (default: asked from the usher at --addr)")
	pos, err := cf.parse(fs, args)
	if err != nil {
		return err
	}
	tok, err := readToken(pos, stdin)
	if err != nil {
		return err
	}
	if scheme, rest, ok := strings.Cut(tok, " "); ok && strings.EqualFold(scheme, "Bearer") {
		tok = strings.TrimSpace(rest)
	}
	switch {
	case tok == "":
		return usageError{"revoke: the TOKEN is empty"}
	case strings.Count(tok, ".") == 2:
		return errors.New("revoke: this token is a JWT: usher checks a JWT with the issuer's published keys and never asks the issuer, so revoking it would change nothing; it stays valid until its exp. Revocation works on opaque tokens: usher mint --opaque --audience api/users")
	}
	ctx, cancel := context.WithTimeout(ctx, cf.timeout)
	defer cancel()
	revokeURL, err := devEndpoint(ctx, &cf, *issuer, "revocation_endpoint", "revoke")
	if err != nil {
		return err
	}
	req, err := devClientPost(ctx, revokeURL, url.Values{"token": {tok}, "token_type_hint": {"access_token"}})
	if err != nil {
		return err
	}
	if err := postNoRedirect(req); err != nil {
		return fmt.Errorf("revoke: %w", err)
	}
	fmt.Fprintf(stderr, "usher revoke: revoked at %s; a usher that holds an active answer for it says INACTIVE once its introspection cache_ttl has passed (%s in usher dev)\n", printable(revokeURL), devCacheTTL)
	if cf.json {
		return json.NewEncoder(stdout).Encode(map[string]any{"revoked": true, "revocation_endpoint": revokeURL})
	}
	return nil
}

// devEndpoint is an endpoint of the dev issuer (issuer, or the loopback
// issuer the usher at cf.addr trusts) read from its discovery document
// under field. The issuer and the endpoint must be on loopback: these are
// dev tools, and they send the dev client's secret and tokens there.
func devEndpoint(ctx context.Context, cf *clientFlags, issuer, field, cmd string) (string, error) {
	if issuer == "" {
		var err error
		if issuer, err = findDevIssuer(ctx, cf, cmd); err != nil {
			return "", err
		}
	}
	if err := devLoopback(cmd, "issuer", issuer); err != nil {
		return "", err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(issuer, "/")+"/.well-known/openid-configuration", nil)
	if err != nil {
		return "", fmt.Errorf("%s: issuer %q: %w", cmd, printable(issuer), err)
	}
	var doc map[string]any
	if err := getJSON(req, &doc); err != nil {
		return "", fmt.Errorf("%s: discovery: %w", cmd, err)
	}
	endpoint, _ := doc[field].(string)
	if endpoint == "" {
		return "", fmt.Errorf("%s: issuer %s has no %s in its discovery document", cmd, printable(issuer), field)
	}
	if err := devLoopback(cmd, field, endpoint); err != nil {
		return "", err
	}
	return endpoint, nil
}

// devLoopback refuses a URL that is not http(s) on a loopback address.
func devLoopback(cmd, what, raw string) error {
	u, err := url.Parse(raw)
	if err == nil && (u.Scheme == "http" || u.Scheme == "https") && config.IsLoopback(u.Hostname()) {
		return nil
	}
	return fmt.Errorf("%s: the %s %s is not an http(s) URL on loopback: usher %s is a dev tool for the issuer of `usher dev` and sends nothing elsewhere; use your identity provider's own tools for a real issuer", cmd, what, printable(raw), cmd)
}

// devClientPost is a form POST authenticated as the dev client with
// client_secret_basic: id and secret form-urlencoded before base64 (RFC
// 6749 §2.3.1).
func devClientPost(ctx context.Context, u string, form url.Values) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", printable(u), err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth(url.QueryEscape(devissuer.ClientID), url.QueryEscape(devissuer.ClientSecret))
	return req, nil
}

// postNoRedirect sends req, which carries a token, without following any
// redirect, and wants 200; otherwise it says what the server answered.
func postNoRedirect(req *http.Request) error {
	hc := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := hc.Do(req)
	if err != nil {
		return printableError{err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return printableError{err}
	}
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	var oauth struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
	}
	_ = json.Unmarshal(body, &oauth)
	return fmt.Errorf("%s answered HTTP %d %s: %s", printable(req.URL.String()), resp.StatusCode, printable(oauth.Error), printable(oauth.Description))
}

// findDevIssuer asks usher which issuers it trusts and takes the one on loopback.
func findDevIssuer(ctx context.Context, cf *clientFlags, cmd string) (string, error) {
	var resp *usherv1.ListIssuersResponse
	err := cf.call(ctx, func(ctx context.Context, conn *grpc.ClientConn) (err error) {
		resp, err = usherv1.NewTokenServiceClient(conn).ListIssuers(ctx, &usherv1.ListIssuersRequest{})
		return err
	})
	if err != nil {
		return "", err
	}
	for _, is := range resp.GetIssuers() {
		if u, err := url.Parse(is.GetIssuer()); err == nil && u.Scheme == "http" {
			if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsLoopback() {
				return is.GetIssuer(), nil
			}
		}
	}
	return "", fmt.Errorf("%s: the usher at %s trusts no dev issuer on loopback; %s works with `usher dev` (or pass --issuer URL)", cmd, cf.addr, cmd)
}

func getJSON(req *http.Request, dst any) error {
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return printableError{err}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return printableError{err}
	}
	if err := json.Unmarshal(body, dst); err != nil {
		return fmt.Errorf("%s answered HTTP %d with non-JSON", printable(req.URL.String()), resp.StatusCode)
	}
	return nil
}

// printable escapes what a terminal would act on instead of showing: C0
// controls (line breaks and ESC included), DEL, C1 controls, the Unicode
// bidirectional controls (U+061C, U+200E, U+200F, U+202A–U+202E,
// U+2066–U+2069), the line and paragraph separators (U+2028, U+2029) as
// \uNNNN, and bytes that are not UTF-8 as \xNN. Everything else, printable
// text, is kept as is. Every string of human output that comes from a
// token, a server, an issuer or a config goes through it. --json output is
// protojson's, for programs: it escapes C0 controls, not C1 or bidi ones.
func printable(s string) string {
	if utf8.ValidString(s) && !strings.ContainsFunc(s, unprintable) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unprintable(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func unprintable(r rune) bool {
	switch {
	case r < 0x20, r >= 0x7f && r <= 0x9f: // C0, DEL, C1
		return true
	case r == 0x061c, r == 0x200e, r == 0x200f, r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069: // bidi
		return true
	default:
		return r == 0x2028 || r == 0x2029
	}
}

// printableError is err with its text printable(): a server's or an
// issuer's words in it reach the terminal.
type printableError struct{ err error }

func (e printableError) Error() string { return printable(e.err.Error()) }
func (e printableError) Unwrap() error { return e.err }
