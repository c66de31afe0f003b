package client_test

import (
	"context"
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
	usher, err := client.Dial("dns:///usher.platform.svc.cluster.local:50051",
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
