package devissuer

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
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
	opaque   opaqueStore
	jtis     jtiSet // jti of the DPoP proofs seen at the token endpoint
}

// Option configures New.
type Option func(*Issuer)

// WithClock sets the clock tokens are issued by and introspection answers
// (default time.Now); tests move it to expire opaque tokens without waiting.
func WithClock(now func() time.Time) Option {
	return func(i *Issuer) {
		if now != nil {
			i.now = now
		}
	}
}

type signingKey struct {
	alg jwa.SignatureAlgorithm
	key jwk.Key // private, with kid
}

// New generates fresh keys and serves on addr ("127.0.0.1:0" when empty),
// which must be a loopback address. The server stops when ctx is done or
// Close is called.
func New(ctx context.Context, addr string, opts ...Option) (*Issuer, error) {
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
	for _, o := range opts {
		o(i)
	}
	if err := i.generateKeys(); err != nil {
		return nil, err
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
	mux.HandleFunc("POST /introspect", i.introspect)
	mux.HandleFunc("POST /revoke", i.revoke)
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

// generateKeys makes the three signing keys and the JWKS of their public
// halves.
func (i *Issuer) generateKeys() error {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	public := jwk.NewSet()
	for _, k := range []struct {
		kid string
		alg jwa.SignatureAlgorithm
		raw any
	}{{KeyRS256, jwa.RS256(), rsaKey}, {KeyES256, jwa.ES256(), ecKey}, {KeyEdDSA, jwa.EdDSA(), edKey}} {
		priv, err := jwk.Import(k.raw)
		if err != nil {
			return fmt.Errorf("devissuer: import %s: %w", k.kid, err)
		}
		if err := priv.Set(jwk.KeyIDKey, k.kid); err != nil {
			return fmt.Errorf("devissuer: %w", err)
		}
		i.keys[k.kid] = signingKey{alg: k.alg, key: priv}
		pub, err := priv.PublicKey()
		if err != nil {
			return fmt.Errorf("devissuer: public %s: %w", k.kid, err)
		}
		for name, v := range map[string]any{jwk.AlgorithmKey: k.alg, jwk.KeyUsageKey: "sig"} {
			if err := pub.Set(name, v); err != nil {
				return fmt.Errorf("devissuer: %w", err)
			}
		}
		if err := public.AddKey(pub); err != nil {
			return fmt.Errorf("devissuer: %w", err)
		}
	}
	if i.jwks, err = json.Marshal(public); err != nil {
		return fmt.Errorf("devissuer: %w", err)
	}
	return nil
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
	// Extra claims for the payload (of an opaque token: for its
	// introspection answer); iss, exp, iat, nbf, aud, jti and active are set
	// by the issuer and refused here.
	Extra map[string]any
	// Opaque mints an opaque access token instead of a JWT: OpaquePrefix and
	// 32 random bytes in base64url, whose claims the issuer keeps in memory
	// until it expires or is revoked and answers at its introspection
	// endpoint. KeyID must be empty: nothing is signed.
	Opaque bool
	// JKT binds the token to a DPoP key (RFC 9449 §6): the base64url RFC
	// 7638 SHA-256 thumbprint of its public key, put in cnf.jkt (of an
	// opaque token: in its introspection answer, with token_type "DPoP").
	// A validator then wants a proof signed with that key for every
	// request. Extra must not hold cnf as well.
	JKT string
}

// Mint signs an RFC 9068 access token (typ "at+jwt") for r, or makes an
// opaque one when r.Opaque is set.
func (i *Issuer) Mint(r MintRequest) (string, error) {
	if len(r.Audience) == 0 || slices.Contains(r.Audience, "") {
		return "", errors.New("devissuer: an audience is required (and must not be empty): say which API the token is for, e.g. api/users")
	}
	for _, k := range [...]string{"iss", "exp", "iat", "nbf", "aud", "jti", "active"} {
		if _, ok := r.Extra[k]; ok {
			return "", fmt.Errorf("devissuer: extra claim %q is set by the issuer; drop it from Extra", k)
		}
	}
	if err := checkJKT(r); err != nil {
		return "", err
	}
	if r.TTL == 0 {
		r.TTL = time.Hour
	}
	if r.Subject == "" {
		r.Subject = ClientID
	}
	if r.ClientID == "" {
		r.ClientID = ClientID
	}
	if r.Opaque {
		return i.mintOpaque(r)
	}
	if r.KeyID == "" {
		r.KeyID = KeyRS256
	}
	return i.mintJWT(r)
}

// mintJWT signs an RFC 9068 access token for r (defaults applied).
func (i *Issuer) mintJWT(r MintRequest) (string, error) {
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
	if r.JKT != "" {
		b = b.Claim("cnf", map[string]string{"jkt": r.JKT})
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
		"issuer":                 i.url,
		"jwks_uri":               i.JWKSURL(),
		"token_endpoint":         i.TokenURL(),
		"introspection_endpoint": i.IntrospectionURL(),
		"revocation_endpoint":    i.RevocationURL(),
		"introspection_endpoint_auth_methods_supported": []string{"client_secret_basic"},
		"revocation_endpoint_auth_methods_supported":    []string{"client_secret_basic", "client_secret_post"},
		"grant_types_supported":                         []string{"client_credentials"},
		"token_endpoint_auth_methods_supported":         []string{"client_secret_basic", "client_secret_post"},
		"id_token_signing_alg_values_supported":         []string{"RS256", "ES256", "EdDSA"},
		"dpop_signing_alg_values_supported":             DPoPAlgorithms,
		"response_types_supported":                      []string{"token"},
		"subject_types_supported":                       []string{"public"},
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
// named by "audience" or RFC 8707 "resource", and the dev extensions "ttl",
// "kid" and "token_format".
func (i *Issuer) token(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "could not read the body: send an application/x-www-form-urlencoded form of at most 64 KiB")
		return
	}
	form := r.PostForm
	for _, name := range []string{"grant_type", "client_id", "client_secret", "scope", "ttl", "kid", "token_format"} {
		if len(form[name]) > 1 {
			oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("%q is given %d times: send it once (only audience and resource may repeat)", name, len(form[name])))
			return
		}
	}
	if !authenticate(w, r, form, true) {
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
	req, problem := mintRequest(form)
	if problem != "" {
		oauthError(w, http.StatusBadRequest, "invalid_request", problem)
		return
	}
	// A proof binds the token to its key (RFC 9449 §5); checked last, so
	// that a request refused for another reason does not spend its jti.
	jkt, bad := i.checkDPoP(r)
	if bad != "" {
		oauthError(w, http.StatusBadRequest, "invalid_dpop_proof", "DPoP proof refused: "+string(bad))
		return
	}
	req.JKT = jkt
	tok, err := i.Mint(req)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	tokenType := "Bearer"
	if jkt != "" {
		tokenType = "DPoP"
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": tok,
		"token_type":   tokenType,
		"expires_in":   max(int64(req.TTL/time.Second), 0),
		"scope":        strings.Join(req.Scopes, " "),
	})
}

// checkJKT refuses a JKT that is not a base64url SHA-256 thumbprint, and
// one given with a cnf of Extra.
func checkJKT(r MintRequest) error {
	if r.JKT == "" {
		return nil
	}
	if _, ok := r.Extra["cnf"]; ok {
		return errors.New("devissuer: JKT and Extra[\"cnf\"] both set the cnf claim: give one of them")
	}
	if b, err := base64.RawURLEncoding.DecodeString(r.JKT); err != nil || len(b) != sha256.Size {
		return fmt.Errorf("devissuer: JKT %q is not an RFC 7638 SHA-256 thumbprint (43 base64url characters, no padding)", clip(r.JKT))
	}
	return nil
}

// mintRequest reads what the token endpoint's form asks for, or says what
// is wrong with it.
func mintRequest(form url.Values) (MintRequest, string) {
	auds := slices.Concat(form["audience"], form["resource"])
	auds = slices.DeleteFunc(auds, func(s string) bool { return s == "" })
	if len(auds) == 0 {
		return MintRequest{}, `missing "audience" (or RFC 8707 "resource"): say which API the token is for, e.g. audience=api/users`
	}
	slices.Sort(auds)
	auds = slices.Compact(auds)
	req := MintRequest{Audience: auds, Scopes: strings.Fields(form.Get("scope")), TTL: time.Hour, KeyID: form.Get("kid")}
	if s := form.Get("ttl"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil {
			return MintRequest{}, fmt.Sprintf("ttl %q is not a Go duration: try ttl=5m, or ttl=-1m for an already expired token", s)
		}
		if d != 0 {
			req.TTL = d
		}
	}
	switch f := form.Get("token_format"); f {
	case "", "jwt":
	case "opaque":
		if req.KeyID != "" {
			return MintRequest{}, "kid picks a signing key, but an opaque token is not signed: drop kid, or drop token_format=opaque for a JWT"
		}
		req.Opaque = true
	default:
		return MintRequest{}, fmt.Sprintf("token_format %q: the dev issuer issues jwt (the default) or opaque", f)
	}
	return req, ""
}

// authenticate checks that the caller is the dev client: with HTTP Basic
// (client_secret_basic) or, when post is true, with client_id and
// client_secret form fields (client_secret_post), never both. It has
// written the error response when it returns false.
func authenticate(w http.ResponseWriter, r *http.Request, form url.Values, post bool) bool {
	id, secret, basic := basicCredentials(r)
	switch {
	case basic && form.Has("client_secret"):
		oauthError(w, http.StatusBadRequest, "invalid_request", "the client authenticated twice (HTTP Basic and a client_secret form field): use one of them")
		return false
	case basic && form.Has("client_id") && form.Get("client_id") != id:
		oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf("client_id %q in the form does not match the HTTP Basic user %q: drop one of them", form.Get("client_id"), id))
		return false
	case !basic && !post:
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("this endpoint authenticates its callers with HTTP Basic only (client_secret_basic): send %s:%s, each part form-urlencoded before base64 (RFC 6749 §2.3.1)", ClientID, ClientSecret))
		return false
	case !basic:
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	idOK := subtle.ConstantTimeCompare([]byte(id), []byte(ClientID))
	secretOK := subtle.ConstantTimeCompare([]byte(secret), []byte(ClientSecret))
	if idOK&secretOK != 1 {
		how := "sent with HTTP Basic or as client_id/client_secret form fields"
		if !post {
			how = "sent with HTTP Basic, each part form-urlencoded before base64 (RFC 6749 §2.3.1)"
		}
		oauthError(w, http.StatusUnauthorized, "invalid_client", fmt.Sprintf("unknown client or wrong secret: the dev client is %s / %s, %s", ClientID, ClientSecret, how))
		return false
	}
	return true
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
