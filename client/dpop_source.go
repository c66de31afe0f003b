package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Bounds of one token request of a DPoP token source.
const (
	// DefaultTokenTimeout bounds one token request (and its nonce retry).
	DefaultTokenTimeout = 10 * time.Second
	// maxTokenResponse bounds what is read of a token endpoint's answer.
	maxTokenResponse = 1 << 20
)

// DPoPClientCredentialsSources is ClientCredentialsSources for DPoP-bound
// tokens: one cached source per audience, each asking the token endpoint
// with a DPoP proof of signer's key (RFC 9449 §5), so that the issuer binds
// the tokens to it. Use them with WithDPoP(signer).
func DPoPClientCredentialsSources(ctx context.Context, cfg clientcredentials.Config, signer *DPoPSigner, audiences ...string) map[string]oauth2.TokenSource {
	out := make(map[string]oauth2.TokenSource, len(audiences))
	for _, aud := range audiences {
		out[aud] = DPoPTokenSource(ctx, audienceConfig(cfg, aud), signer)
	}
	return out
}

// DPoPTokenSource obtains DPoP-bound access tokens with the OAuth 2.0
// client-credentials grant (RFC 6749 §4.4) and a DPoP proof at the token
// endpoint, and reuses each until it expires. It authenticates with
// client_secret_basic, or with the id and secret in the form when
// cfg.AuthStyle is oauth2.AuthStyleInParams. An answer whose token_type is
// not DPoP is an error: the issuer did not bind the token. A
// "use_dpop_nonce" answer (RFC 9449 §8) is retried once with the nonce.
// ctx carries the request's lifetime and, as for oauth2, an *http.Client
// under oauth2.HTTPClient; each request is bounded by DefaultTokenTimeout.
func DPoPTokenSource(ctx context.Context, cfg clientcredentials.Config, signer *DPoPSigner) oauth2.TokenSource {
	return oauth2.ReuseTokenSource(nil, &dpopSource{ctx: ctx, cfg: cfg, signer: signer, timeout: DefaultTokenTimeout})
}

type dpopSource struct {
	ctx     context.Context
	cfg     clientcredentials.Config
	signer  *DPoPSigner
	timeout time.Duration

	mu    sync.Mutex
	nonce string // the endpoint's latest DPoP-Nonce, sent until it gives another
}

// nonceError is the endpoint's demand for a proof with this nonce.
type nonceError struct{ nonce string }

func (e *nonceError) Error() string {
	return "the token endpoint wants a DPoP nonce (use_dpop_nonce)"
}

// Token implements oauth2.TokenSource.
func (s *dpopSource) Token() (*oauth2.Token, error) {
	if s.signer == nil {
		return nil, errors.New("usher dpop: DPoPTokenSource without a signer")
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.timeout)
	defer cancel()
	s.mu.Lock()
	nonce := s.nonce
	s.mu.Unlock()
	tok, err := s.fetch(ctx, nonce)
	var ne *nonceError
	if errors.As(err, &ne) && ne.nonce != nonce {
		tok, err = s.fetch(ctx, ne.nonce) // once: a second demand is an error
	}
	if errors.As(err, &ne) {
		return nil, fmt.Errorf("usher dpop: token endpoint %s answered use_dpop_nonce to a proof with the nonce it gave: check the endpoint's DPoP nonce settings", s.cfg.TokenURL)
	}
	return tok, err
}

// tokenAnswer is a token endpoint's JSON answer, success or error.
type tokenAnswer struct {
	AccessToken      string          `json:"access_token"`
	TokenType        string          `json:"token_type"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	RefreshToken     string          `json:"refresh_token"`
	Error            string          `json:"error"`
	ErrorDescription string          `json:"error_description"`
}

// fetch makes one token request with a proof carrying nonce (when not empty).
func (s *dpopSource) fetch(ctx context.Context, nonce string) (*oauth2.Token, error) {
	req, err := s.newRequest(ctx, nonce)
	if err != nil {
		return nil, err
	}
	resp, err := s.httpClient().Do(req)
	if err != nil {
		return nil, fmt.Errorf("usher dpop: token request: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenResponse+1))
	if err != nil {
		return nil, fmt.Errorf("usher dpop: token endpoint %s: reading the answer: %w", s.cfg.TokenURL, err)
	}
	if len(body) > maxTokenResponse {
		return nil, fmt.Errorf("usher dpop: token endpoint %s: answer larger than %d bytes", s.cfg.TokenURL, maxTokenResponse)
	}
	if n := resp.Header.Get("DPoP-Nonce"); n != "" {
		s.mu.Lock()
		s.nonce = n
		s.mu.Unlock()
	}
	var a tokenAnswer
	jsonErr := json.Unmarshal(body, &a)
	if resp.StatusCode != http.StatusOK {
		if resp.StatusCode == http.StatusBadRequest && a.Error == "use_dpop_nonce" && resp.Header.Get("DPoP-Nonce") != "" {
			return nil, &nonceError{nonce: resp.Header.Get("DPoP-Nonce")}
		}
		msg := resp.Status
		if a.Error != "" {
			msg += ": " + printable(a.Error)
			if a.ErrorDescription != "" {
				msg += " (" + quoteSafe(bounded(a.ErrorDescription, 200)) + ")"
			}
		}
		return nil, fmt.Errorf("usher dpop: token endpoint %s answered %s", s.cfg.TokenURL, msg)
	}
	if jsonErr != nil || a.AccessToken == "" {
		return nil, fmt.Errorf("usher dpop: token endpoint %s answered 200 without a JSON access_token", s.cfg.TokenURL)
	}
	return s.token(a)
}

// token checks a successful answer is a DPoP-bound token and returns it.
func (s *dpopSource) token(a tokenAnswer) (*oauth2.Token, error) {
	if !strings.EqualFold(a.TokenType, "DPoP") {
		return nil, fmt.Errorf("usher dpop: token endpoint %s answered token_type %q, not DPoP: the issuer did not bind the token to the proof key (is DPoP enabled for client %s?)",
			s.cfg.TokenURL, printable(a.TokenType), printable(s.cfg.ClientID))
	}
	tok := &oauth2.Token{AccessToken: a.AccessToken, TokenType: "DPoP", RefreshToken: a.RefreshToken}
	if len(a.ExpiresIn) > 0 && string(a.ExpiresIn) != "null" {
		// A number, or a number in a string (some issuers send that).
		secs, err := strconv.ParseInt(strings.Trim(string(a.ExpiresIn), `"`), 10, 64)
		if err != nil || secs < 0 {
			return nil, fmt.Errorf("usher dpop: token endpoint %s answered expires_in %s, not a number of seconds", s.cfg.TokenURL, bounded(string(a.ExpiresIn), 32))
		}
		if secs > 0 {
			tok.Expiry = time.Now().Add(time.Duration(secs) * time.Second)
		}
	}
	return tok, nil
}

// newRequest is the client-credentials form POST with its DPoP proof.
func (s *dpopSource) newRequest(ctx context.Context, nonce string) (*http.Request, error) {
	form := url.Values{"grant_type": {"client_credentials"}}
	if len(s.cfg.Scopes) > 0 {
		form.Set("scope", strings.Join(s.cfg.Scopes, " "))
	}
	for k, v := range s.cfg.EndpointParams {
		form[k] = append([]string(nil), v...)
	}
	basic := s.cfg.AuthStyle != oauth2.AuthStyleInParams
	if !basic {
		form.Set("client_id", s.cfg.ClientID)
		if s.cfg.ClientSecret != "" {
			form.Set("client_secret", s.cfg.ClientSecret)
		}
	}
	proof, err := s.signer.proof(http.MethodPost, s.cfg.TokenURL, "", nonce)
	if err != nil {
		return nil, fmt.Errorf("usher dpop: proof for the token endpoint: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("usher dpop: token request: %w", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("DPoP", proof)
	if basic {
		// RFC 6749 §2.3.1: id and secret form-encoded before Basic.
		req.SetBasicAuth(url.QueryEscape(s.cfg.ClientID), url.QueryEscape(s.cfg.ClientSecret))
	}
	return req, nil
}

// httpClient is the caller's (oauth2.HTTPClient in the context) or one that
// does not follow redirects: the proof names the token endpoint's URL, and
// the secret goes nowhere else.
func (s *dpopSource) httpClient() *http.Client {
	if c, ok := s.ctx.Value(oauth2.HTTPClient).(*http.Client); ok && c != nil {
		return c
	}
	return &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func bounded(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}
