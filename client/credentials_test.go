package client_test

import (
	"strings"
	"testing"

	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/internal/testkit"
)

// TestAudienceCredentials_TokenPerAPI: one caller, two APIs, each gets a
// token issued for its own audience by a real client-credentials endpoint.
func TestAudienceCredentials_TokenPerAPI(t *testing.T) {
	u := newUsher(t)
	usher := u.client(t)
	users, err := client.NewAuthenticator(usher, "api/users")
	if err != nil {
		t.Fatal(err)
	}
	invoices, err := client.NewAuthenticator(usher, "api/invoices")
	if err != nil {
		t.Fatal(err)
	}
	_, usersImpl, usersConn := serveAPI(t, users)
	_, invoicesImpl, invoicesConn := serveAPI(t, invoices)

	cc := clientcredentials.Config{ClientID: devissuer.ClientID, ClientSecret: devissuer.ClientSecret, TokenURL: u.Issuer.TokenURL()}
	sources := client.ClientCredentialsSources(testkit.Context(t), cc, "api/users", "api/invoices")
	for target, aud := range map[string]string{usersConn.Target(): "api/users", invoicesConn.Target(): "api/invoices"} {
		creds, err := client.NewAudienceCredentials(client.ServiceAudiences(map[string]string{"grpc.testing.TestService": aud}), sources, client.InsecureAllowLoopback())
		if err != nil {
			t.Fatal(err)
		}
		conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		if _, err := testpb.NewTestServiceClient(conn).UnaryCall(testkit.Context(t), &testpb.SimpleRequest{}); err != nil {
			t.Errorf("%s with its own token: %v", aud, err)
		}
	}
	if usersImpl.handled() != 1 || invoicesImpl.handled() != 1 {
		t.Errorf("handled: users %d, invoices %d; want 1 each", usersImpl.handled(), invoicesImpl.handled())
	}
}

func TestAudienceCredentials_RefusesInsecureTransport(t *testing.T) {
	u := newUsher(t)
	authn, err := client.NewAuthenticator(u.client(t), "api/users")
	if err != nil {
		t.Fatal(err)
	}
	_, impl, conn := serveAPI(t, authn)
	cc := clientcredentials.Config{ClientID: devissuer.ClientID, ClientSecret: devissuer.ClientSecret, TokenURL: u.Issuer.TokenURL()}
	creds, err := client.NewAudienceCredentials(client.ServiceAudiences(map[string]string{"grpc.testing.TestService": "api/users"}),
		client.ClientCredentialsSources(testkit.Context(t), cc, "api/users"))
	if err != nil {
		t.Fatal(err)
	}
	// grpc-go refuses to dial: credentials that require transport security over an insecure channel.
	plain, err := grpc.NewClient(conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
	if err == nil {
		defer plain.Close()
		_, err = testpb.NewTestServiceClient(plain).UnaryCall(testkit.Context(t), &testpb.SimpleRequest{})
	}
	if err == nil || impl.handled() != 0 {
		t.Fatalf("a token was sent over plaintext without InsecureAllowLoopback (err=%v)", err)
	}

	// Unknown service: no token source, the call fails before anything is sent.
	creds, _ = client.NewAudienceCredentials(client.ServiceAudiences(map[string]string{"other.Service": "api/users"}),
		client.ClientCredentialsSources(testkit.Context(t), cc, "api/users"), client.InsecureAllowLoopback())
	conn2, err := grpc.NewClient(conn.Target(), grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	_, err = testpb.NewTestServiceClient(conn2).UnaryCall(testkit.Context(t), &testpb.SimpleRequest{})
	if err == nil || !strings.Contains(err.Error(), "no audience configured") {
		t.Errorf("call to an unmapped service: %v", err)
	}
}
