package devissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v3/jwa"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws"
	"github.com/lestrrat-go/jwx/v3/jwt"
)

// Key ids of the three published keys, and the one OAuth client.
const (
	KeyRS256     = "dev-rs256" // RSA 2048, RS256: the default signing key
	KeyES256     = "dev-es256" // EC P-256, ES256
	KeyEdDSA     = "dev-eddsa" // Ed25519, EdDSA
	ClientID     = "usher-dev"
	ClientSecret = "usher-dev-secret"
)

const (
	maxFormBytes    = 64 << 10
	shutdownTimeout = 2 * time.Second
)

// Issuer is a development OAuth 2.0 issuer serving OIDC discovery, a JWKS
// and a client-credentials token endpoint on loopback.
type Issuer struct {
	url      string
	srv      *http.Server
	stopWait func() bool // detaches the ctx-done shutdown
	keys     map[string]signingKey
	jwks     []byte
	now      func() time.Time
}

type signingKey struct {
	alg jwa.SignatureAlgorithm
	key jwk.Key // private, with kid
}

// New generates fresh keys and serves on addr ("127.0.0.1:0" when empty),
// which must be a loopback address. The server stops when ctx is done or
// Close is called.
func New(ctx context.Context, addr string) (*Issuer, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if err := loopbackOnly(addr); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("devissuer: not starting: %w", err)
	}
	i := &Issuer{keys: map[string]signingKey{}, now: time.Now}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}
	public := jwk.NewSet()
	for _, k := range []struct {
		kid string
		alg jwa.SignatureAlgorithm
		raw any
	}{{KeyRS256, jwa.RS256(), rsaKey}, {KeyES256, jwa.ES256(), ecKey}, {KeyEdDSA, jwa.EdDSA(), edKey}} {
		priv, err := jwk.Import(k.raw)
		if err != nil {
			return nil, fmt.Errorf("devissuer: import %s: %w", k.kid, err)
		}
		if err := priv.Set(jwk.KeyIDKey, k.kid); err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
		i.keys[k.kid] = signingKey{alg: k.alg, key: priv}
		pub, err := priv.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("devissuer: public %s: %w", k.kid, err)
		}
		for name, v := range map[string]any{jwk.AlgorithmKey: k.alg, jwk.KeyUsageKey: "sig"} {
			if err := pub.Set(name, v); err != nil {
				return nil, fmt.Errorf("devissuer: %w", err)
			}
		}
		if err := public.AddKey(pub); err != nil {
			return nil, fmt.Errorf("devissuer: %w", err)
		}
	}
	if i.jwks, err = json.Marshal(public); err != nil {
		return nil, fmt.Errorf("devissuer: %w", err)
	}

	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("devissuer: listen %s: %w", addr, err)
	}
	i.url = "http://" + lis.Addr().String()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", i.discovery)
	mux.HandleFunc("GET /jwks.json", i.serveJWKS)
	mux.HandleFunc("POST /token", i.token)
	i.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    64 << 10,
	}
	go func() { _ = i.srv.Serve(lis) }()
	i.stopWait = context.AfterFunc(ctx, func() { _ = i.shutdown() })
	return i, nil
}

func loopbackOnly(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("devissuer: address %q: %w", addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("devissuer: address %q is not loopback: the dev issuer serves 127.0.0.0/8, ::1 or localhost only, e.g. 127.0.0.1:0", addr)
	}
	return nil
}

// URL is the issuer identifier, the iss of every token (no trailing slash).
func (i *Issuer) URL() string { return i.url }

// JWKSURL is where the public keys are published.
func (i *Issuer) JWKSURL() string { return i.url + "/jwks.json" }

// TokenURL is the OAuth 2.0 token endpoint.
func (i *Issuer) TokenURL() string { return i.url + "/token" }

// Close shuts the HTTP server down, waiting briefly for requests in flight.
func (i *Issuer) Close() error {
	i.stopWait()
	return i.shutdown()
}

func (i *Issuer) shutdown() error {
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := i.srv.Shutdown(ctx); err != nil {
		return fmt.Errorf("devissuer: shutdown: %w", err)
	}
	return nil
}

// MintRequest describes a token to mint.
type MintRequest struct {
	// Audience is required: at least one non-empty value. One value is
	// emitted as a JSON string, several as an array.
	Audience []string
	// Scopes become the space-separated scope claim.
	Scopes []string
	// TTL is the lifetime (default 1h); negative mints an expired token.
	TTL time.Duration
	// KeyID picks the signing key (default KeyRS256). Any kid that is not
	// published signs with the RSA key but names that kid: a token whose key
	// the JWKS does not hold.
	KeyID string
	// Subject defaults to ClientID.
	Subject string
	// ClientID defaults to ClientID.
	ClientID string
	// Extra claims for the payload; iss, exp, iat, nbf, aud and jti are set
	// by the issuer and refused here.
	Extra map[string]any
}

// Mint signs an RFC 9068 access token (typ "at+jwt") for r.
func (i *Issuer) Mint(r MintRequest) (string, error) {
	if len(r.Audience) == 0 || slices.Contains(r.Audience, "") {
		return "", errors.New("devissuer: an audience is required (and must not be empty): say which API the token is for, e.g. api/users")
	}
	for _, k := range [...]string{"iss", "exp", "iat", "nbf", "aud", "jti"} {
		if _, ok := r.Extra[k]; ok {
			return "", fmt.Errorf("devissuer: extra claim %q is set by the issuer; drop it from Extra", k)
		}
	}
	if r.TTL == 0 {
		r.TTL = time.Hour
	}
	if r.KeyID == "" {
		r.KeyID = KeyRS256
	}
	if r.Subject == "" {
		r.Subject = ClientID
	}
	if r.ClientID == "" {
		r.ClientID = ClientID
	}
	now := i.now().Truncate(time.Second)
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	b := jwt.NewBuilder().
		Issuer(i.url).
		Subject(r.Subject).
		Audience(r.Audience).
		IssuedAt(now).
		NotBefore(now).
		Expiration(now.Add(r.TTL)).
		JwtID(base64.RawURLEncoding.EncodeToString(jti)).
		Claim("client_id", r.ClientID)
	if len(r.Scopes) > 0 {
		b = b.Claim("scope", strings.Join(r.Scopes, " "))
	}
	for k, v := range r.Extra {
		b = b.Claim(k, v)
	}
	tok, err := b.Build()
	if err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	// One audience as a plain string, several as an array (RFC 7519 §4.1.3).
	tok.Options().Enable(jwt.FlattenAudience)
	sk, published := i.keys[r.KeyID]
	if !published {
		sk = i.keys[KeyRS256]
		if sk.key, err = sk.key.Clone(); err != nil {
			return "", fmt.Errorf("devissuer: %w", err)
		}
		if err := sk.key.Set(jwk.KeyIDKey, r.KeyID); err != nil {
			return "", fmt.Errorf("devissuer: %w", err)
		}
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "at+jwt"); err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	signed, err := jwt.Sign(tok, jwt.WithKey(sk.alg, sk.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("devissuer: sign: %w", err)
	}
	return string(signed), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (i *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                i.url,
		"jwks_uri":                              i.JWKSURL(),
		"token_endpoint":                        i.TokenURL(),
		"grant_types_supported":                 []string{"client_credentials"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"id_token_signing_alg_values_supported": []string{"RS256", "ES256", "EdDSA"},
		"response_types_supported":              []string{"token"},
		"subject_types_supported":               []string{"public"},
	})
}

func (i *Issuer) serveJWKS(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "max-age=300")
	_, _ = w.Write(i.jwks)
}

// oauthError is an RFC 6749 §5.2 error response.
func oauthError(w http.ResponseWriter, status int, code, desc string) {
	if status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Basic realm="usher-dev"`)
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, status, map[string]string{"error": code, "error_description": desc})
}

// token is the client-credentials grant (RFC 6749 §4.4), with the audience
// named by "audience" or RFC 8707 "resource", and the dev extensions "ttl"
// and "kid".
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "could not read the body: send an application/x-www-form-urlencoded form of at most 64 KiB")
		return
	}
	form := r.PostForm
	for _, name := range []string{"grant_type", "client_id", "client_secret", "scope", "ttl", "kid"} {
		if len(form[name]) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%q is given %d times: send it once (only audience and resource may repeat)", name, len(form[name])))
			return
		}
	}
	id, secret, ok := basicCredentials(r)
	if ok && form.Has("client_secret") {
		oauthError(w, http.StatusBadRequest, "invalid_request", "the client authenticated twice (HTTP Basic and a client_secret form field): use one of them")
		return
	}
	if ok && form.Has("client_id") && form.Get("client_id") != id {
		oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("client_id %q in the form does not match the HTTP Basic user %q: drop one of them", form.Get("client_id"), id))
		return
	}
	if !ok {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(ClientID))
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(ClientSecret))
	if idOK&secretOK != 1 {
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client or wrong secret: the dev client is %s / %s, sent with HTTP Basic or as client_id/client_secret form fields", ClientID, ClientSecret))
		return
	}
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case "":
		oauthError(w, http.StatusBadRequest, "invalid_request", `missing "grant_type": send grant_type=client_credentials in an application/x-www-form-urlencoded body`)
		return
	default:
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", fmt.Sprintf("grant_type %q: the dev issuer supports client_credentials only", gt))
		return
	}
	auds := slices.Concat(form["audience"], form["resource"])
	auds = slices.DeleteFunc(auds, func(s string) bool { return s == "" })
	if len(auds) == 0 {
		oauthError(w, http.StatusBadRequest, "invalid_request", `missing "audience" (or RFC 8707 "resource"): say which API the token is for, e.g. audience=api/users`)
		return
	}
	slices.Sort(auds)
	auds = slices.Compact(auds)
	req := MintRequest{Audience: auds, Scopes: strings.Fields(form.Get("scope")), TTL: time.Hour, KeyID: form.Get("kid")}
	if s := form.Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("ttl %q is not a Go duration: try ttl=5m, or ttl=-1m for an already expired token", s))
			return
		}
		if d != 0 {
			req.TTL = d
		}
	}
	tok, err := i.Mint(req)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   "Bearer",
		"expires_in":   max(int64(req.TTL/time.Second), 0),
		"scope":        strings.Join(req.Scopes, " "),
	})
}

// basicCredentials reads HTTP Basic client credentials, which RFC 6749
// §2.3.1 form-urlencodes before they are joined with ':'.
func basicCredentials(r *http.Request) (id, secret string, ok bool) {
	id, secret, ok = r.BasicAuth()
	if !ok {
		return "", "", false
	}
	if u, err := url.QueryUnescape(id); err == nil {
		id = u
	}
	if u, err := url.QueryUnescape(secret); err == nil {
		secret = u
	}
	return id, secret, true
}
