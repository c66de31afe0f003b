package service

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lestrrat-go/httprc/v3"
	"github.com/lestrrat-go/jwx/v3/jwk"
	"github.com/lestrrat-go/jwx/v3/jws/jwsbb"
	"golang.org/x/sync/singleflight"
)

// Limits on what a key set fetch may bring back.
const (
	maxJWKSBytes      = 1 << 20
	maxJWKSKeys       = 100
	maxDiscoveryBytes = 256 << 10
	minRSABits        = 2048
	maxScheduledWait  = time.Hour
	maxStartBackoff   = 30 * time.Second
	maxRetryAfter     = 10 * time.Minute
)

// algSpec says which key a JWS algorithm needs and how it verifies.
type algSpec struct {
	kty  string // "RSA", "EC", "OKP"
	crv  string // for EC and OKP
	hash crypto.Hash
	pss  bool
}

var algSpecs = map[string]algSpec{
	"RS256": {kty: "RSA", hash: crypto.SHA256},
	"RS384": {kty: "RSA", hash: crypto.SHA384},
	"RS512": {kty: "RSA", hash: crypto.SHA512},
	"PS256": {kty: "RSA", hash: crypto.SHA256, pss: true},
	"PS384": {kty: "RSA", hash: crypto.SHA384, pss: true},
	"PS512": {kty: "RSA", hash: crypto.SHA512, pss: true},
	"ES256": {kty: "EC", crv: "P-256", hash: crypto.SHA256},
	"ES384": {kty: "EC", crv: "P-384", hash: crypto.SHA384},
	"ES512": {kty: "EC", crv: "P-521", hash: crypto.SHA512},
	"EdDSA": {kty: "OKP", crv: "Ed25519"},
}

// verifyKey is one usable public key, parsed once when its set is loaded.
type verifyKey struct {
	kid string
	alg string // the JWK's own alg, "" when it names none
	kty string
	crv string
	rsa *rsa.PublicKey
	ec  *ecdsa.PublicKey
	ed  ed25519.PublicKey
}

// equal reports whether two keys are the same public key.
func (k *verifyKey) equal(o *verifyKey) bool {
	switch {
	case k.kty != o.kty || k.alg != o.alg:
		return false
	case k.rsa != nil:
		return o.rsa != nil && k.rsa.Equal(o.rsa)
	case k.ec != nil:
		return o.ec != nil && k.ec.Equal(o.ec)
	default:
		return k.ed.Equal(o.ed)
	}
}

// fits reports why the key cannot verify alg, or "" when it can.
func (k *verifyKey) fits(alg string, spec algSpec) string {
	switch {
	case k.kty != spec.kty:
		return fmt.Sprintf("alg %s needs an %s key, but key %q is %s", alg, spec.kty, k.kid, k.kty)
	case spec.crv != "" && k.crv != spec.crv:
		return fmt.Sprintf("alg %s needs curve %s, but key %q is on %s", alg, spec.crv, k.kid, k.crv)
	case k.alg != "" && k.alg != alg:
		return fmt.Sprintf("key %q is published for alg %s, the token says %s", k.kid, k.alg, alg)
	}
	return ""
}

// verify checks sig over input with this key; the caller has checked fits.
func (k *verifyKey) verify(spec algSpec, input string, sig []byte) bool {
	switch k.kty {
	case "RSA":
		return len(sig) == k.rsa.Size() && jwsbb.VerifyRSA(k.rsa, []byte(input), sig, spec.hash, spec.pss) == nil
	case "EC":
		return len(sig) == 2*((k.ec.Curve.Params().BitSize+7)/8) && jwsbb.VerifyECDSA(k.ec, []byte(input), sig, spec.hash) == nil
	case "OKP":
		return len(sig) == ed25519.SignatureSize && jwsbb.VerifyEdDSA(k.ed, []byte(input), sig) == nil
	}
	return false
}

// keySet is an issuer's usable keys at one moment; replaced whole, never mutated.
type keySet struct {
	byKID   map[string]*verifyKey
	keys    []*verifyKey
	fetched time.Time
	dropped []string // why keys of the published set were not taken
}

func (ks *keySet) kids() []string {
	out := make([]string, 0, len(ks.keys))
	for _, k := range ks.keys {
		if k.kid != "" {
			out = append(out, k.kid)
		}
	}
	slices.Sort(out)
	return out
}

// parseKeySet reads a JWKS document: each key is parsed on its own (one key
// of an unknown type does not fail the set), weak, private, symmetric and
// encryption keys are dropped, and a set with no usable key is an error, so
// that it never replaces a good one.
func parseKeySet(body []byte, now time.Time) (*keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("not a JWKS document (JSON with a \"keys\" array): %w", err)
	}
	if doc.Keys == nil {
		return nil, errors.New(`not a JWKS document: no "keys" array`)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("%d keys, over the limit of %d", len(doc.Keys), maxJWKSKeys)
	}
	ks := &keySet{byKID: map[string]*verifyKey{}, fetched: now}
	dupes := map[string]bool{}
	for i, raw := range doc.Keys {
		k, why := usableKey(raw)
		if why != "" {
			ks.dropped = append(ks.dropped, fmt.Sprintf("keys[%d]: %s", i, why))
			continue
		}
		if k.kid != "" {
			if _, dup := ks.byKID[k.kid]; dup || dupes[k.kid] {
				dupes[k.kid] = true
				delete(ks.byKID, k.kid)
				continue
			}
			ks.byKID[k.kid] = k
		}
		ks.keys = append(ks.keys, k)
	}
	if len(dupes) > 0 {
		ks.keys = slices.DeleteFunc(ks.keys, func(k *verifyKey) bool { return dupes[k.kid] })
		for kid := range dupes {
			ks.dropped = append(ks.dropped, fmt.Sprintf("kid %q: published more than once, ambiguous", kid))
		}
	}
	if len(ks.keys) == 0 {
		if len(doc.Keys) == 0 {
			return nil, errors.New(`the key set is empty ({"keys":[]})`)
		}
		return nil, fmt.Errorf("no usable key among %d: %s", len(doc.Keys), strings.Join(ks.dropped, "; "))
	}
	return ks, nil
}

// usableKey parses one JWK and returns it, or why it is not used.
func usableKey(raw json.RawMessage) (*verifyKey, string) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		return nil, "not a JSON object"
	}
	var rawKID string
	_ = json.Unmarshal(members["kid"], &rawKID)
	rawName := "key"
	if rawKID != "" {
		rawName = fmt.Sprintf("key %q", rawKID)
	}
	// RFC 7518 §6.2.2, §6.3.2, §6.4: any of these is private (p or q alone
	// factors the modulus), whatever a parser makes of the rest.
	for _, m := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
		if _, ok := members[m]; ok {
			return nil, fmt.Sprintf("%s holds private key material (%q): the issuer is leaking its signing key", rawName, m)
		}
	}
	key, err := jwk.ParseKey(raw)
	if err != nil {
		return nil, fmt.Sprintf("%s is not a usable JWK (%v)", rawName, err)
	}
	kid, _ := key.KeyID()
	name := "key"
	if kid != "" {
		name = fmt.Sprintf("key %q", kid)
	}
	if use, ok := key.KeyUsage(); ok && use != "sig" {
		return nil, fmt.Sprintf("%s has use %q, not \"sig\"", name, use)
	}
	if ops, ok := key.KeyOps(); ok && !slices.Contains(ops, jwk.KeyOpVerify) {
		return nil, fmt.Sprintf("%s has key_ops %v, without \"verify\"", name, ops)
	}
	if priv, err := jwk.IsPrivateKey(key); err == nil && priv {
		return nil, fmt.Sprintf("%s holds private key material: the issuer is leaking its signing key", name)
	}
	k := &verifyKey{kid: kid}
	if alg, ok := key.Algorithm(); ok {
		k.alg = alg.String()
	}
	var pub any
	if err := jwk.Export(key, &pub); err != nil {
		return nil, fmt.Sprintf("%s cannot be exported (%v)", name, err)
	}
	switch p := pub.(type) {
	case *rsa.PublicKey:
		if p.N.BitLen() < minRSABits {
			return nil, fmt.Sprintf("%s is RSA with %d bits, under %d", name, p.N.BitLen(), minRSABits)
		}
		if p.E < 3 || p.E%2 == 0 {
			return nil, fmt.Sprintf("%s is RSA with exponent %d", name, p.E)
		}
		k.kty, k.rsa = "RSA", p
	case *ecdsa.PublicKey:
		k.kty, k.crv, k.ec = "EC", p.Curve.Params().Name, p
		if k.crv != "P-256" && k.crv != "P-384" && k.crv != "P-521" {
			return nil, fmt.Sprintf("%s is on unsupported curve %s", name, k.crv)
		}
	case ed25519.PublicKey:
		k.kty, k.crv, k.ed = "OKP", "Ed25519", p
	default:
		return nil, fmt.Sprintf("%s is of type %s, which usher does not verify with", name, key.KeyType())
	}
	if k.alg != "" {
		spec, ok := algSpecs[k.alg]
		if !ok || spec.kty != k.kty || (spec.crv != "" && spec.crv != k.crv) {
			return nil, fmt.Sprintf("%s is published for alg %q, which cannot be used with a %s %s key", name, k.alg, k.kty, k.crv)
		}
	}
	if k.rsa != nil && rocaFingerprint(k.rsa.N) {
		return nil, fmt.Sprintf("%s is an RSA key with the ROCA fingerprint (CVE-2017-15361): its private key can be computed", name)
	}
	return k, ""
}

// rocaPrimes and the generator 65537 make the fingerprint of moduli from
// Infineon's flawed key generation (ROCA, CVE-2017-15361): for every prime p
// here, N mod p lies in the subgroup that 65537 generates mod p.
var rocaPrimes = []int64{3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107, 109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167}

func rocaFingerprint(n *big.Int) bool {
	var r big.Int
	for _, p := range rocaPrimes {
		rem := r.Mod(n, big.NewInt(p)).Int64()
		inGroup := false
		for g, i := int64(1), int64(0); i < p; i++ {
			if g == rem {
				inGroup = true
				break
			}
			g = g * 65537 % p
		}
		if !inGroup {
			return false
		}
	}
	return true
}

// issuerKeys holds one issuer's keys and fetches them: through httprc (the
// cache under jwx's jwk.Cache) with usher's own transformer, so that a bad
// fetch never replaces a good set, and the parsed keys are swapped atomically.
type issuerKeys struct {
	cfg    IssuerConfig
	log    *slog.Logger
	http   *http.Client
	bg     context.Context // owns the fetches
	set    atomic.Pointer[keySet]
	static bool // jwks_file: loaded once

	ctrl       httprc.Controller
	res        atomic.Pointer[httprc.ResourceBase[*keySet]]
	fetches    singleflight.Group
	lastForced atomic.Int64                  // unix nanoseconds of the last token-driven refresh
	forced     atomic.Pointer[chan struct{}] // closed when that refresh is done
	notBefore  atomic.Int64                  // unix nanoseconds: the issuer asked (Retry-After) for no fetch before then

	triedOnce sync.Once
	tried     chan struct{} // closed after the first fetch attempt

	goodFetches atomic.Uint64
	badFetches  atomic.Uint64

	mu        sync.Mutex
	jwksURI   string
	lastError string
}

func newIssuerKeys(ctx context.Context, cfg IssuerConfig, hc *http.Client, log *slog.Logger, now func() time.Time) (*issuerKeys, error) {
	ik := &issuerKeys{cfg: cfg, log: log.With("issuer", cfg.Issuer), http: hc, bg: ctx, tried: make(chan struct{}), jwksURI: cfg.JWKSURI}
	if cfg.JWKSFile != "" {
		b, err := os.ReadFile(cfg.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("jwks_file: %w", err)
		}
		ks, err := parseKeySet(b, now())
		if err != nil {
			return nil, fmt.Errorf("jwks_file %s: %w", cfg.JWKSFile, err)
		}
		ik.static = true
		ik.jwksURI = (&url.URL{Scheme: "file", Path: cfg.JWKSFile}).String()
		ik.accept(ks)
		ik.markTried()
		return ik, nil
	}
	ctrl, err := httprc.NewClient(httprc.WithWorkers(1)).Start(ctx)
	if err != nil {
		return nil, fmt.Errorf("start key fetcher: %w", err)
	}
	ik.ctrl = ctrl
	go ik.firstFetch()
	return ik, nil
}

// firstFetch tries until a set is held, with jittered exponential backoff;
// after that, httprc refreshes on schedule.
func (ik *issuerKeys) firstFetch() {
	backoff := time.Second
	for {
		_ = ik.fetchShared(ik.bg)
		ik.markTried()
		if ik.set.Load() != nil {
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if until := time.Until(time.Unix(0, ik.notBefore.Load())); until > wait {
			wait = until
		}
		select {
		case <-ik.bg.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxStartBackoff)
	}
}

func (ik *issuerKeys) markTried() { ik.triedOnce.Do(func() { close(ik.tried) }) }

// keys returns the current set (nil when none was ever fetched).
func (ik *issuerKeys) keys() *keySet { return ik.set.Load() }

// stale reports whether a fetched set is older than max_stale: every
// refresh for that long failed, and it is no longer trusted.
func (ik *issuerKeys) stale(ks *keySet) bool {
	return !ik.static && time.Since(ks.fetched) > time.Duration(ik.cfg.MaxStale)
}

// refreshForToken refetches the set because a token named a kid it lacks
// (or no set is held): at most once per unknown_kid_cooldown per issuer, and
// concurrent callers share one fetch. It waits no longer than ctx allows.
func (ik *issuerKeys) refreshForToken(ctx context.Context) {
	if ik.static {
		return
	}
	now := time.Now().UnixNano()
	last := ik.lastForced.Load()
	if now < ik.notBefore.Load() || now-last < int64(ik.cfg.UnknownKIDCooldown) || !ik.lastForced.CompareAndSwap(last, now) {
		// Within the cooldown: join the refresh still in flight, if any,
		// so a burst of tokens signed with a freshly rotated key all see it.
		if done := ik.forced.Load(); done != nil {
			select {
			case <-*done:
			case <-ctx.Done():
			}
		}
		return
	}
	done := make(chan struct{})
	ik.forced.Store(&done)
	go func() {
		defer close(done)
		_ = ik.fetchShared(ik.bg)
	}()
	select {
	case <-done:
	case <-ctx.Done():
	}
}

// fetchShared runs one fetch at a time per issuer; concurrent callers share it.
func (ik *issuerKeys) fetchShared(ctx context.Context) error {
	_, err, _ := ik.fetches.Do("fetch", func() (any, error) {
		fctx, cancel := context.WithTimeout(ctx, time.Duration(ik.cfg.FetchTimeout)+time.Second)
		defer cancel()
		return nil, ik.fetch(fctx)
	})
	return err
}

func (ik *issuerKeys) fetch(ctx context.Context) error {
	res := ik.res.Load()
	if res == nil {
		uri := ik.cfg.JWKSURI
		if ik.cfg.Discovery {
			var err error
			if uri, err = ik.discover(ctx); err != nil {
				ik.fail(err)
				return err
			}
		}
		interval := time.Duration(ik.cfg.RefreshInterval)
		r, err := httprc.NewResource[*keySet](uri, httprc.TransformFunc[*keySet](ik.transform),
			httprc.WithHTTPClient(statusClient{ik}),
			httprc.WithMinInterval(interval),
			httprc.WithMaxInterval(max(interval, maxScheduledWait)))
		if err != nil {
			ik.fail(err)
			return err
		}
		r.SetNext(time.Now().Add(interval)) // the first fetch is the one below
		if err := ik.ctrl.Add(ctx, r, httprc.WithWaitReady(false)); err != nil {
			ik.fail(err)
			return err
		}
		ik.res.Store(r)
		ik.mu.Lock()
		ik.jwksURI = uri
		ik.mu.Unlock()
		res = r
	}
	return ik.ctrl.Refresh(ctx, res.URL())
}

// transform is httprc's Transformer: body to parsed keys. An error keeps the
// previous set in place.
func (ik *issuerKeys) transform(_ context.Context, res *http.Response) (*keySet, error) {
	body, err := io.ReadAll(io.LimitReader(res.Body, maxJWKSBytes+1))
	if err != nil {
		ik.fail(fmt.Errorf("read %s: %w", res.Request.URL, err))
		return nil, err
	}
	if len(body) > maxJWKSBytes {
		err := fmt.Errorf("%s: body over %d bytes", res.Request.URL, maxJWKSBytes)
		ik.fail(err)
		return nil, err
	}
	ks, err := parseKeySet(body, time.Now())
	if err != nil {
		err = fmt.Errorf("%s: %w", res.Request.URL, err)
		ik.fail(err)
		return nil, err
	}
	ik.accept(ks)
	return ks, nil
}

func (ik *issuerKeys) accept(ks *keySet) {
	ik.goodFetches.Add(1)
	prev := ik.set.Swap(ks)
	ik.mu.Lock()
	ik.lastError = ""
	ik.mu.Unlock()
	if prev == nil || !slices.Equal(prev.kids(), ks.kids()) {
		ik.log.Info("key set loaded", "kids", ks.kids(), "dropped", ks.dropped)
	}
}

func (ik *issuerKeys) fail(err error) {
	ik.badFetches.Add(1)
	ik.mu.Lock()
	ik.lastError = err.Error()
	ik.mu.Unlock()
	ik.log.Warn("key set fetch failed; keeping the last good set", "err", err, "have_keys", ik.set.Load() != nil)
}

// discover reads jwks_uri from the OIDC discovery document and insists that
// its issuer is exactly the configured one.
func (ik *issuerKeys) discover(ctx context.Context) (string, error) {
	doc, u, err := fetchDiscovery(ctx, ik.http, ik.cfg.Issuer)
	if err != nil {
		return "", err
	}
	if err := doc.check(ik.cfg.Issuer); err != nil {
		return "", fmt.Errorf("discovery %s: %w", u, err)
	}
	return doc.JWKSURI, nil
}

// discoveryDoc is the part of an OIDC discovery document usher reads.
type discoveryDoc struct {
	Issuer  string `json:"issuer"`
	JWKSURI string `json:"jwks_uri"`
}

// discoveryURL is where OIDC Discovery §4 puts an issuer's document.
func discoveryURL(issuer string) string {
	return strings.TrimSuffix(issuer, "/") + "/.well-known/openid-configuration"
}

func fetchDiscovery(ctx context.Context, hc *http.Client, issuer string) (discoveryDoc, string, error) {
	var doc discoveryDoc
	u := discoveryURL(issuer)
	body, err := getLimited(ctx, hc, u, maxDiscoveryBytes)
	if err != nil {
		return doc, u, fmt.Errorf("discovery: %w", err)
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return doc, u, fmt.Errorf("discovery %s: not a JSON discovery document: %w", u, err)
	}
	return doc, u, nil
}

// check applies OIDC Discovery §4.3: the document's issuer is exactly the
// configured one, and it names a jwks_uri usher may fetch.
func (d discoveryDoc) check(issuer string) error {
	if d.Issuer != issuer {
		return fmt.Errorf("the document's issuer is %q but the configured issuer is %q; they must be identical (OIDC Discovery §4.3)", d.Issuer, issuer)
	}
	if d.JWKSURI == "" {
		return errors.New("no jwks_uri")
	}
	if err := checkFetchURL(d.JWKSURI); err != nil {
		return fmt.Errorf("jwks_uri %w", err)
	}
	return nil
}

// getLimited GETs u and returns a 200 response's body of at most limit bytes.
func getLimited(ctx context.Context, hc *http.Client, u string, limit int64) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", u, resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	if int64(len(body)) > limit {
		return nil, fmt.Errorf("%s: body over %d bytes", u, limit)
	}
	return body, nil
}

// statusClient is the HTTP client httprc uses: it records failed requests,
// which never reach the transformer.
type statusClient struct{ ik *issuerKeys }

func (c statusClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := c.ik.http.Do(req)
	switch {
	case err != nil:
		c.ik.fail(fmt.Errorf("fetch keys: %w", err))
	case resp.StatusCode != http.StatusOK:
		msg := fmt.Sprintf("fetch keys %s: HTTP %d", req.URL, resp.StatusCode)
		if d := retryAfter(resp, time.Now()); d > 0 {
			c.ik.notBefore.Store(time.Now().Add(d).UnixNano())
			msg += fmt.Sprintf(" (Retry-After: no fetch for %s)", d)
		}
		c.ik.fail(errors.New(msg))
	}
	return resp, err
}

// retryAfter reads a 429 or 503's Retry-After (seconds or an HTTP date),
// capped at maxRetryAfter; 0 when there is none.
func retryAfter(resp *http.Response, now time.Time) time.Duration {
	if resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable {
		return 0
	}
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.Atoi(v); err == nil {
		d = time.Duration(secs) * time.Second
	} else if at, err := http.ParseTime(v); err == nil {
		d = at.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// status is what ListIssuers reports.
func (ik *issuerKeys) status() IssuerStatus {
	st := IssuerStatus{Issuer: ik.cfg.Issuer, Algorithms: slices.Clone(ik.cfg.Algorithms), Fetches: ik.goodFetches.Load(), Failures: ik.badFetches.Load()}
	ik.mu.Lock()
	st.JWKSURI, st.LastError = ik.jwksURI, ik.lastError
	ik.mu.Unlock()
	if ks := ik.set.Load(); ks != nil {
		st.KeyIDs, st.LastRefresh = ks.kids(), ks.fetched
	}
	if r := ik.res.Load(); r != nil {
		st.NextRefresh = r.Next()
	}
	return st
}

// newFetchClient is the HTTP client for discovery and key sets: a deadline
// on the whole fetch, and redirects only to the same host without a
// downgrade to http.
func newFetchClient(timeout time.Duration) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	dialer := &net.Dialer{Timeout: timeout, Control: refuseLinkLocal}
	tr.DialContext = dialer.DialContext
	return &http.Client{
		Timeout:   timeout,
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 3 {
				return errors.New("more than 3 redirects")
			}
			from := via[0].URL
			if from.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("redirect from https to http refused")
			}
			if req.URL.Hostname() != from.Hostname() {
				return fmt.Errorf("redirect from %s to another host %s refused", from.Host, req.URL.Host)
			}
			return nil
		},
	}
}

// refuseLinkLocal stops key fetches from reaching link-local, multicast and
// unspecified addresses (e.g. a cloud metadata service at 169.254.169.254),
// whatever name resolved to them.
func refuseLinkLocal(_, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("key fetch to %s refused: not an IP address", address)
	}
	if ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsInterfaceLocalMulticast() || ip.IsMulticast() || ip.IsUnspecified() {
		return fmt.Errorf("key fetch to %s refused: link-local, multicast or unspecified address", address)
	}
	return nil
}
