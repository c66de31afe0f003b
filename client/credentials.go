package client

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc/credentials"
)

// AudienceFunc names the audience of the API a call goes to, from the
// call's full method name ("/pkg.Service/Method").
type AudienceFunc func(ctx context.Context, fullMethod string) (string, error)

// ServiceAudiences maps gRPC service names ("billing.v1.Invoices") or full
// method names to audiences; a method's own entry wins over its service's.
func ServiceAudiences(m map[string]string) AudienceFunc {
	return func(_ context.Context, fullMethod string) (string, error) {
		if aud, ok := m[fullMethod]; ok {
			return aud, nil
		}
		svc, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
		if aud, ok := m[svc]; ok {
			return aud, nil
		}
		return "", fmt.Errorf("usher credentials: no audience configured for %s (service %s)", fullMethod, svc)
	}
}

// AudienceCredentials is a credentials.PerRPCCredentials that attaches, to
// each call, a token issued for the audience of the API being called, so
// that a caller can no longer send the Users API's token to the Invoices API.
type AudienceCredentials struct {
	audienceFor AudienceFunc
	sources     map[string]oauth2.TokenSource
	insecure    bool
	dpop        *DPoPSigner
}

// CredentialsOption configures AudienceCredentials.
type CredentialsOption func(*AudienceCredentials)

// InsecureAllowLoopback lets tokens travel without TLS, to loopback
// addresses only (development and tests).
func InsecureAllowLoopback() CredentialsOption {
	return func(c *AudienceCredentials) { c.insecure = true }
}

// WithDPoP sends each token as a DPoP-bound one (RFC 9449): "authorization:
// DPoP <token>" and a "dpop" proof signed with signer, fresh for every
// call, for POST to https://{authority}/{package.Service}/{Method} (http://
// without TLS). The sources must give tokens bound to signer's key
// (DPoPClientCredentialsSources); a token of type Bearer is refused here
// rather than sent where the issuer did not bind it.
func WithDPoP(signer *DPoPSigner) CredentialsOption {
	return func(c *AudienceCredentials) { c.dpop = signer }
}

// NewAudienceCredentials picks, per call, the audience with audienceFor and
// the token from that audience's source (wrap sources in
// oauth2.ReuseTokenSource, as ClientCredentialsSources does, so tokens are
// cached until they expire).
func NewAudienceCredentials(audienceFor AudienceFunc, sources map[string]oauth2.TokenSource, opts ...CredentialsOption) (*AudienceCredentials, error) {
	if audienceFor == nil || len(sources) == 0 {
		return nil, errors.New("usher credentials: an AudienceFunc and at least one token source are required")
	}
	c := &AudienceCredentials{audienceFor: audienceFor, sources: sources}
	for _, o := range opts {
		o(c)
	}
	return c, nil
}

// ClientCredentialsSources returns one cached token source per audience from
// an OAuth 2.0 client-credentials configuration, asking for each audience
// with both the "audience" parameter (Auth0, Okta, usher dev) and RFC 8707
// "resource".
func ClientCredentialsSources(ctx context.Context, cfg clientcredentials.Config, audiences ...string) map[string]oauth2.TokenSource {
	out := make(map[string]oauth2.TokenSource, len(audiences))
	for _, aud := range audiences {
		c := audienceConfig(cfg, aud)
		out[aud] = oauth2.ReuseTokenSource(nil, c.TokenSource(ctx))
	}
	return out
}

// audienceConfig is cfg asking for aud, with its own copy of the parameters.
func audienceConfig(cfg clientcredentials.Config, aud string) clientcredentials.Config {
	c := cfg
	c.EndpointParams = url.Values{}
	for k, v := range cfg.EndpointParams {
		c.EndpointParams[k] = append([]string(nil), v...)
	}
	c.EndpointParams.Set("audience", aud)
	c.EndpointParams.Set("resource", aud)
	return c
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (c *AudienceCredentials) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	ri, ok := credentials.RequestInfoFromContext(ctx)
	if !ok {
		return nil, errors.New("usher credentials: no request info in the context (not called by grpc-go?)")
	}
	if err := credentials.CheckSecurityLevel(ri.AuthInfo, credentials.PrivacyAndIntegrity); err != nil {
		if !c.insecure {
			return nil, fmt.Errorf("usher credentials: refusing to send a token over an insecure connection: %w", err)
		}
		if len(uri) == 0 || !loopbackURI(uri[0]) {
			return nil, fmt.Errorf("usher credentials: InsecureAllowLoopback allows plaintext to loopback only, not %v", uri)
		}
	}
	aud, err := c.audienceFor(ctx, ri.Method)
	if err != nil {
		return nil, err
	}
	src, ok := c.sources[aud]
	if !ok {
		return nil, fmt.Errorf("usher credentials: no token source for audience %s (method %s)", aud, ri.Method)
	}
	tok, err := src.Token()
	if err != nil {
		return nil, fmt.Errorf("usher credentials: token for audience %s: %w", aud, err)
	}
	dpopType := strings.EqualFold(tok.TokenType, "DPoP")
	if c.dpop == nil {
		if dpopType {
			return nil, fmt.Errorf("usher credentials: the token for audience %s is DPoP-bound (token_type DPoP): add WithDPoP(signer) so that each call carries its proof", aud)
		}
		return map[string]string{"authorization": "Bearer " + tok.AccessToken}, nil
	}
	if !dpopType && tok.TokenType != "" {
		return nil, fmt.Errorf("usher credentials: the token for audience %s has token_type %q, not DPoP: the issuer did not bind it to the proof key (use DPoPClientCredentialsSources; is DPoP enabled for this client?)", aud, printable(tok.TokenType))
	}
	return c.dpopMetadata(ri, uri, tok.AccessToken)
}

// dpopMetadata is the DPoP authorization and a fresh proof for this call.
// grpc-go passes uri as "https://{authority}/{package.Service}", whatever
// the transport, with ":443" dropped: the scheme comes from the connection
// instead, as the interceptor sees it.
func (c *AudienceCredentials) dpopMetadata(ri credentials.RequestInfo, uri []string, token string) (map[string]string, error) {
	if len(uri) == 0 {
		return nil, errors.New("usher credentials: no URI from grpc-go to make the DPoP proof for")
	}
	u, err := url.Parse(uri[0])
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("usher credentials: grpc-go's URI %q has no authority to make the DPoP proof for", uri[0])
	}
	_, isTLS := ri.AuthInfo.(credentials.TLSInfo)
	proof, err := c.dpop.Proof("POST", grpcHTU(isTLS, u.Host, ri.Method), token)
	if err != nil {
		return nil, fmt.Errorf("usher credentials: %w", err)
	}
	return map[string]string{"authorization": "DPoP " + token, "dpop": proof}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (c *AudienceCredentials) RequireTransportSecurity() bool { return !c.insecure }

func loopbackURI(s string) bool {
	u, err := url.Parse(s)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}
