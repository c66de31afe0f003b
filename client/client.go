package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// DefaultCallTimeout bounds one call to usher when the caller's context has
// no earlier deadline.
const DefaultCallTimeout = 2 * time.Second

// serviceConfig spreads calls over every resolved usher address and retries
// UNAVAILABLE: all three RPCs are idempotent reads.
const serviceConfig = `{
  "loadBalancingConfig": [{"round_robin": {}}],
  "methodConfig": [{
    "name": [{"service": "usher.v1.TokenService"}],
    "retryPolicy": {
      "maxAttempts": 4,
      "initialBackoff": "0.05s",
      "maxBackoff": "0.5s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }]
}`

// Client is a small typed wrapper over the generated usher.v1 stub.
type Client struct {
	stub    usherv1.TokenServiceClient
	conn    *grpc.ClientConn // owned, closed by Close; nil when the caller owns it
	timeout time.Duration
}

// ClientOption configures a Client.
type ClientOption func(*Client)

// WithCallTimeout sets the deadline of one call when the caller's context
// has none earlier (default DefaultCallTimeout).
func WithCallTimeout(d time.Duration) ClientOption {
	return func(c *Client) { c.timeout = d }
}

// TLS returns transport credentials for reaching usher over TLS: caFile
// verifies usher's certificate (the system roots when empty); certFile and
// keyFile present a client certificate for mTLS (both empty: none).
func TLS(caFile, certFile, keyFile string) (credentials.TransportCredentials, error) {
	conf := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("usher client: tls ca: %w", err)
		}
		conf.RootCAs = x509.NewCertPool()
		if !conf.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("usher client: tls ca %s holds no PEM certificate", caFile)
		}
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("usher client: tls client certificate: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	return credentials.NewTLS(conf), nil
}

// New wraps a connection the caller owns (and closes).
func New(conn grpc.ClientConnInterface, opts ...ClientOption) *Client {
	c := &Client{stub: usherv1.NewTokenServiceClient(conn), timeout: DefaultCallTimeout}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Dial connects to usher at target (e.g. "dns:///usher-headless.platform.svc.cluster.local:50051")
// with production defaults: round_robin over every resolved address,
// keepalive, and retries of UNAVAILABLE. Pass the transport credentials in
// dialOpts (grpc.WithTransportCredentials); later options override the
// defaults. Close the Client to close the connection.
func Dial(target string, dialOpts []grpc.DialOption, opts ...ClientOption) (*Client, error) {
	base := []grpc.DialOption{
		grpc.WithDefaultServiceConfig(serviceConfig),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	conn, err := grpc.NewClient(target, append(base, dialOpts...)...)
	if err != nil {
		return nil, errors.Join(errors.New("usher client: dial "+target), err)
	}
	c := New(conn, opts...)
	c.conn = conn
	return c, nil
}

// Close closes the connection if Dial opened it.
func (c *Client) Close() error {
	if c.conn == nil {
		return nil
	}
	return c.conn.Close()
}

func (c *Client) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) <= c.timeout {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, c.timeout)
}

// Validate asks usher whether token is good for audience with every scope in
// scopes. A rejected token is a response with Valid false; an error means
// usher could not answer.
func (c *Client) Validate(ctx context.Context, token, audience string, scopes []string) (*usherv1.ValidateTokenResponse, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.stub.ValidateToken(ctx, &usherv1.ValidateTokenRequest{Token: token, ExpectedAudience: audience, RequiredScopes: scopes})
}

// ValidateRequest asks usher about a whole request: for a
// sender-constrained token, with the scheme it came with, its DPoP proof,
// the method and URI the proof is for and the caller's client certificate
// thumbprint (contract §8). The request's fields are sent as they are.
func (c *Client) ValidateRequest(ctx context.Context, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.stub.ValidateToken(ctx, req)
}

// Inspect asks usher to decode and diagnose a token.
func (c *Client) Inspect(ctx context.Context, token string) (*usherv1.InspectTokenResponse, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	return c.stub.InspectToken(ctx, &usherv1.InspectTokenRequest{Token: token})
}

// Issuers asks usher what it believes about each issuer.
func (c *Client) Issuers(ctx context.Context) ([]*usherv1.IssuerStatus, error) {
	ctx, cancel := c.withTimeout(ctx)
	defer cancel()
	resp, err := c.stub.ListIssuers(ctx, &usherv1.ListIssuersRequest{})
	return resp.GetIssuers(), err
}
