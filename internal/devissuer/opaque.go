package devissuer

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// OpaquePrefix starts every opaque access token of the dev issuer; a
// validator routes tokens with it to this issuer's introspection endpoint.
const OpaquePrefix = "usher_dev_at_"

// Bounds of the opaque-token store: live tokens and the bytes of their
// stored introspection answers. Expired and revoked tokens are dropped.
const (
	maxOpaqueTokens = 10_000
	maxOpaqueBytes  = 16 << 20
	maxAnswerBytes  = 64 << 10
)

// errStoreFull: the store holds as many live opaque tokens as it may.
var errStoreFull = fmt.Errorf("devissuer: %d live opaque tokens (or %d MiB of their claims) are held, the bound: mint with a shorter ttl, revoke some, or restart the dev issuer", maxOpaqueTokens, maxOpaqueBytes>>20)

// opaqueStore remembers the claims of the live opaque tokens, keyed on the
// token's SHA-256 (the raw token is not kept), as the ready JSON of an
// active introspection answer.
type opaqueStore struct {
	mu     sync.Mutex
	tokens map[[sha256.Size]byte]opaqueEntry
	bytes  int
}

type opaqueEntry struct {
	exp    time.Time
	answer []byte // {"active":true,...}
}

// put stores an entry, dropping expired ones first when the store is full.
func (s *opaqueStore) put(now time.Time, key [sha256.Size]byte, e opaqueEntry) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.tokens == nil {
		s.tokens = map[[sha256.Size]byte]opaqueEntry{}
	}
	full := func() bool { return len(s.tokens) >= maxOpaqueTokens || s.bytes+len(e.answer) > maxOpaqueBytes }
	if full() {
		for k, old := range s.tokens {
			if !now.Before(old.exp) {
				s.dropLocked(k, old)
			}
		}
		if full() {
			return errStoreFull
		}
	}
	s.tokens[key] = e
	s.bytes += len(e.answer)
	return nil
}

// active is the stored answer of a live token; an expired one is dropped.
func (s *opaqueStore) active(now time.Time, key [sha256.Size]byte) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.tokens[key]
	if !ok {
		return nil, false
	}
	if !now.Before(e.exp) {
		s.dropLocked(key, e)
		return nil, false
	}
	return e.answer, true
}

// revoke forgets a token and says whether it was live.
func (s *opaqueStore) revoke(now time.Time, key [sha256.Size]byte) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.tokens[key]
	if ok {
		s.dropLocked(key, e)
	}
	return ok && now.Before(e.exp)
}

func (s *opaqueStore) dropLocked(key [sha256.Size]byte, e opaqueEntry) {
	delete(s.tokens, key)
	s.bytes -= len(e.answer)
}

// mintOpaque makes an opaque token for r (defaults already applied) and
// remembers its claims for the introspection endpoint.
func (i *Issuer) mintOpaque(r MintRequest) (string, error) {
	if r.KeyID != "" {
		return "", fmt.Errorf("devissuer: KeyID %q picks a signing key, but an opaque token is not signed: leave KeyID empty", r.KeyID)
	}
	now := i.now().Truncate(time.Second)
	exp := now.Add(r.TTL)
	claims := map[string]any{}
	for k, v := range r.Extra {
		claims[k] = v
	}
	claims["active"] = true
	claims["iss"] = i.url
	claims["aud"] = r.Audience[0]
	if len(r.Audience) > 1 {
		claims["aud"] = r.Audience
	}
	claims["iat"], claims["exp"] = now.Unix(), exp.Unix()
	tokenType := "Bearer"
	if r.JKT != "" {
		claims["cnf"] = map[string]string{"jkt": r.JKT}
		tokenType = "DPoP" // RFC 9449 §6.2
	}
	for k, v := range map[string]string{"sub": r.Subject, "client_id": r.ClientID, "token_type": tokenType} {
		if _, set := r.Extra[k]; !set {
			claims[k] = v
		}
	}
	if _, set := r.Extra["scope"]; !set && len(r.Scopes) > 0 {
		claims["scope"] = strings.Join(r.Scopes, " ")
	}
	answer, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("devissuer: the claims of the opaque token do not encode as JSON: %w", err)
	}
	if len(answer) > maxAnswerBytes {
		return "", fmt.Errorf("devissuer: the claims of the opaque token are %d bytes, over the %d KiB bound: trim Extra", len(answer), maxAnswerBytes>>10)
	}
	random := make([]byte, 32)
	if _, err := rand.Read(random); err != nil {
		return "", fmt.Errorf("devissuer: %w", err)
	}
	tok := OpaquePrefix + base64.RawURLEncoding.EncodeToString(random)
	if !now.Before(exp) {
		return tok, nil // already expired: introspection says inactive, nothing to keep
	}
	if err := i.opaque.put(i.now(), sha256.Sum256([]byte(tok)), opaqueEntry{exp: exp, answer: answer}); err != nil {
		return "", err
	}
	return tok, nil
}

// Revoke makes token inactive at once, as the revocation endpoint does, and
// says whether it was a live opaque token of this issuer. A JWT access token
// cannot be revoked: validators check it with the published keys, without
// asking the issuer, until its exp.
func (i *Issuer) Revoke(token string) bool {
	return i.opaque.revoke(i.now(), sha256.Sum256([]byte(token)))
}

// IntrospectionURL is the RFC 7662 token introspection endpoint.
func (i *Issuer) IntrospectionURL() string { return i.url + "/introspect" }

// RevocationURL is the RFC 7009 token revocation endpoint.
func (i *Issuer) RevocationURL() string { return i.url + "/revoke" }

// tokenParam parses the form of the introspection and revocation endpoints
// and returns its one "token" after authenticating the client; it has
// written the error response when ok is false.
func tokenParam(w http.ResponseWriter, r *http.Request, post bool) (token string, ok bool) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBytes)
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", "could not read the body: send an application/x-www-form-urlencoded form of at most 64 KiB")
		return "", false
	}
	form := r.PostForm
	if !authenticate(w, r, form, post) {
		return "", false
	}
	switch n := len(form["token"]); {
	case n > 1:
		oauthError(w, http.StatusBadRequest, "invalid_request", fmt.Sprintf(`"token" is given %d times: send one token per request`, n))
		return "", false
	case form.Get("token") == "":
		oauthError(w, http.StatusBadRequest, "invalid_request", `missing "token": send token=<the access token> in an application/x-www-form-urlencoded body`)
		return "", false
	}
	return form.Get("token"), true
}

// introspect is the RFC 7662 introspection endpoint, for callers that
// authenticate with client_secret_basic. A live opaque token of this
// issuer is active with its claims; anything else (unknown, revoked,
// expired, a JWT) is {"active":false}.
func (i *Issuer) introspect(w http.ResponseWriter, r *http.Request) {
	tok, ok := tokenParam(w, r, false)
	if !ok {
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	answer, live := i.opaque.active(i.now(), sha256.Sum256([]byte(tok)))
	if !live {
		writeJSON(w, http.StatusOK, map[string]bool{"active": false})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(answer)
}

// revoke is the RFC 7009 revocation endpoint: 200 with an empty body
// whether or not the token was known (RFC 7009 §2.2), as the token's
// holder learns nothing from it. A JWT is unaffected.
func (i *Issuer) revoke(w http.ResponseWriter, r *http.Request) {
	tok, ok := tokenParam(w, r, true)
	if !ok {
		return
	}
	i.Revoke(tok)
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
}
