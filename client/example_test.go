package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"fmt"
	"log"

	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/usher-dev/usher/client"
)

// Protect a gRPC service with usher: the two lines are NewAuthenticator and
// the interceptors in grpc.NewServer.
func Example() {
	usher, err := client.Dial("dns:///usher-headless.platform.svc.cluster.local:50051",
		[]grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(nil))})
	if err != nil {
		log.Fatal(err)
	}
	defer usher.Close()

	authn, err := client.NewAuthenticator(usher, "api/invoices", client.WithRequiredScopes("/billing.v1.Invoices/Create", "invoices.write"))
	if err != nil {
		log.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(authn.StreamServerInterceptor()))
	_ = srv // register your services and Serve
}

// A handler reads the verified claims.
func ExampleClaimsFromContext() {
	handler := func(ctx context.Context) {
		if c, ok := client.ClaimsFromContext(ctx); ok {
			fmt.Println("called by", c.GetSubject(), "with scopes", c.GetScopes())
		}
	}
	_ = handler
}

// On the calling side: each API gets a token for its own audience.
func ExampleNewAudienceCredentials() {
	cfg := clientcredentials.Config{ClientID: "billing-ui", ClientSecret: "…", TokenURL: "https://auth.example.com/oauth/token"}
	sources := client.ClientCredentialsSources(context.Background(), cfg, "api/users", "api/invoices")
	creds, err := client.NewAudienceCredentials(client.ServiceAudiences(map[string]string{
		"users.v1.Users":      "api/users",
		"billing.v1.Invoices": "api/invoices",
	}), sources)
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.NewClient("dns:///gateway.internal:443",
		grpc.WithTransportCredentials(credentials.NewTLS(nil)), grpc.WithPerRPCCredentials(creds))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
}

// A DPoP caller (RFC 9449): tokens bound to the caller's key, with a fresh
// proof on every call, so a stolen token is useless without the key. The
// API's side is Example's unchanged: its interceptors take DPoP too.
func ExampleWithDPoP() {
	// One key for the life of the process (or keep it in a KMS: any
	// crypto.Signer over ECDSA, Ed25519 or RSA works).
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		log.Fatal(err)
	}
	signer, err := client.NewDPoPSigner(key)
	if err != nil {
		log.Fatal(err)
	}
	// The issuer binds each token to the key (cnf.jkt) after checking the
	// proof sent to its token endpoint.
	cfg := clientcredentials.Config{ClientID: "billing-ui", ClientSecret: "…", TokenURL: "https://auth.example.com/oauth/token"}
	sources := client.DPoPClientCredentialsSources(context.Background(), cfg, signer, "api/invoices")
	creds, err := client.NewAudienceCredentials(client.ServiceAudiences(map[string]string{"billing.v1.Invoices": "api/invoices"}),
		sources, client.WithDPoP(signer))
	if err != nil {
		log.Fatal(err)
	}
	conn, err := grpc.NewClient("dns:///invoices.internal:443",
		grpc.WithTransportCredentials(credentials.NewTLS(nil)), grpc.WithPerRPCCredentials(creds))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	fmt.Println("proofs signed with", signer.Algorithm())
	// Output: proofs signed with ES256
}
