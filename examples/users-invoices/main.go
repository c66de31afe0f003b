// Command users-invoices plays the audience article end to end: a caller
// sends the Users API's token to the Invoices API, usher's interceptor says
// exactly why that fails, and per-audience credentials fix it. Then a
// stolen token: Billing's token for the Invoices API is bound to Billing's
// DPoP key (RFC 9449), so a copy replayed with another key, or as a plain
// bearer token, is refused, with the reason.
//
//	go run ./examples/users-invoices
//
// Everything runs in this process on 127.0.0.1: a development issuer, usher,
// a Users API and an Invoices API (each protected by the interceptor in two
// lines), and a caller. It exits 0 only when every step behaved as described.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/usher-dev/usher/client"
	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/devissuer"
	"github.com/usher-dev/usher/service"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "users-invoices:", err)
		os.Exit(1)
	}
}

// scene is the article's world: an issuer, usher trusting it, and two APIs
// protected by usher's interceptors.
type scene struct {
	say                     func(format string, args ...any)
	iss                     *devissuer.Issuer
	cc                      clientcredentials.Config // the caller's OAuth 2.0 client
	usersAddr, invoicesAddr string
	plain                   []grpc.DialOption
}

func run(ctx context.Context, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	s := &scene{
		say:   func(format string, args ...any) { fmt.Fprintf(out, format+"\n", args...) },
		plain: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
	}
	s.say("The audience article, end to end: one token sent to two APIs.\n")
	usher, err := s.start(ctx)
	if err != nil {
		return err
	}
	defer usher.Close()
	if err := s.oneTokenEverywhere(ctx); err != nil {
		return err
	}
	if err := s.tokenPerAudience(ctx); err != nil {
		return err
	}
	if err := s.stolenToken(ctx); err != nil {
		return err
	}
	s.say("Every step behaved as described.")
	return nil
}

// start runs an OAuth 2.0 issuer and usher trusting it, as `usher dev` runs
// them, and the two APIs (step 1).
func (s *scene) start(ctx context.Context) (*client.Client, error) {
	iss, err := devissuer.New(ctx, "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s.iss = iss
	s.cc = clientcredentials.Config{ClientID: devissuer.ClientID, ClientSecret: devissuer.ClientSecret, TokenURL: iss.TokenURL()}
	usherAddr, err := startUsher(ctx, iss)
	if err != nil {
		return nil, err
	}
	usher, err := client.Dial(usherAddr, s.plain)
	if err != nil {
		return nil, err
	}
	if s.usersAddr, err = startAPI(ctx, usher, "api/users", "users.v1.Users", "GetProfile"); err != nil {
		usher.Close()
		return nil, err
	}
	if s.invoicesAddr, err = startAPI(ctx, usher, "api/invoices", "billing.v1.Invoices", "ListInvoices"); err != nil {
		usher.Close()
		return nil, err
	}
	s.say("[1/4] usher on %s trusts the issuer %s", usherAddr, iss.URL())
	s.say("      Users API on %s answers to audience api/users", s.usersAddr)
	s.say("      Invoices API on %s answers to audience api/invoices\n", s.invoicesAddr)
	return usher, nil
}

// oneTokenEverywhere is the bug (step 2): one token, requested for the Users
// API, sent everywhere; the Invoices API refuses it and says why.
func (s *scene) oneTokenEverywhere(ctx context.Context) error {
	userCfg := s.cc
	userCfg.EndpointParams = map[string][]string{"audience": {"api/users"}}
	tok, err := userCfg.Token(ctx)
	if err != nil {
		return fmt.Errorf("get a token: %w", err)
	}
	s.say("[2/4] The caller gets ONE token (audience=api/users) and sends it to both APIs")
	withTok := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok.AccessToken)
	if err := call(withTok, s.usersAddr, "/users.v1.Users/GetProfile", s.plain); err != nil {
		return fmt.Errorf("Users API refused its own token: %w", err)
	}
	s.say("      Users API    -> OK")
	err = call(withTok, s.invoicesAddr, "/billing.v1.Invoices/ListInvoices", s.plain)
	st := status.Convert(err)
	info := errorInfo(st)
	if st.Code() != codes.Unauthenticated || info.GetReason() != "AUDIENCE_MISMATCH" {
		return fmt.Errorf("Invoices API: want UNAUTHENTICATED with AUDIENCE_MISMATCH, got %v %v", st.Code(), info)
	}
	md := info.GetMetadata()
	s.say("      Invoices API -> %s, and the ErrorInfo says why:", st.Code())
	s.say("         reason    %s", info.GetReason())
	s.say("         token for %s", md["actual_audience"])
	s.say("         service   %s", md["expected_audience"])
	s.say("         hint      %s\n", md["hint"])
	if md["actual_audience"] != "api/users" || md["expected_audience"] != "api/invoices" || !strings.Contains(md["hint"], "Users API") {
		return errors.New("the rejection does not name the token's audience, the service's and the API the token was issued for")
	}
	return nil
}

// tokenPerAudience is the fix at the source (step 3): each call carries a
// token issued for its API.
func (s *scene) tokenPerAudience(ctx context.Context) error {
	creds, err := client.NewAudienceCredentials(
		client.ServiceAudiences(map[string]string{"users.v1.Users": "api/users", "billing.v1.Invoices": "api/invoices"}),
		client.ClientCredentialsSources(ctx, s.cc, "api/users", "api/invoices"),
		client.InsecureAllowLoopback(), // plaintext, to 127.0.0.1 only
	)
	if err != nil {
		return err
	}
	s.say("[3/4] The caller uses per-audience credentials: each API gets a token issued for it")
	perAudience := append(slices.Clone(s.plain), grpc.WithPerRPCCredentials(creds))
	if err := call(ctx, s.usersAddr, "/users.v1.Users/GetProfile", perAudience); err != nil {
		return fmt.Errorf("Users API with per-audience credentials: %w", err)
	}
	s.say("      Users API    -> OK")
	if err := call(ctx, s.invoicesAddr, "/billing.v1.Invoices/ListInvoices", perAudience); err != nil {
		return fmt.Errorf("Invoices API with per-audience credentials: %w", err)
	}
	s.say("      Invoices API -> OK\n")
	return nil
}

// invoicesMethod is the Invoices API's one method.
const invoicesMethod = "/billing.v1.Invoices/ListInvoices"

// stolenToken is the stolen-token step (4): Billing's token for the
// Invoices API is DPoP-bound to Billing's key, so whoever copies it (from
// a log, a proxy, a heap dump) cannot use it: not with their own key, not
// as a bearer token.
func (s *scene) stolenToken(ctx context.Context) error {
	billing, err := newDPoPSigner()
	if err != nil {
		return err
	}
	audienceFor := client.ServiceAudiences(map[string]string{"billing.v1.Invoices": "api/invoices"})
	sources := client.DPoPClientCredentialsSources(ctx, s.cc, billing, "api/invoices")
	creds, err := client.NewAudienceCredentials(audienceFor, sources, client.WithDPoP(billing), client.InsecureAllowLoopback())
	if err != nil {
		return err
	}
	s.say("[4/4] Billing gets a DPoP-bound token for the Invoices API: a proof at the token endpoint binds it to Billing's key")
	s.say("      (cnf.jkt %s), and every call carries a fresh proof signed with that key", billing.Thumbprint())
	if err := call(ctx, s.invoicesAddr, invoicesMethod, append(slices.Clone(s.plain), grpc.WithPerRPCCredentials(creds))); err != nil {
		return fmt.Errorf("Invoices API with Billing's DPoP-bound token: %w", err)
	}
	s.say("      Billing, its own key          -> OK")
	tok, err := sources["api/invoices"].Token() // what an attacker copies
	if err != nil {
		return err
	}
	s.say("      An attacker copies the token and replays it:")
	if err := s.replayWithAnotherKey(ctx, audienceFor, tok.AccessToken, billing.Thumbprint()); err != nil {
		return err
	}
	asBearer := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tok.AccessToken)
	st := status.Convert(call(asBearer, s.invoicesAddr, invoicesMethod, s.plain))
	info := errorInfo(st)
	if st.Code() != codes.Unauthenticated || info.GetReason() != "PROOF_MISSING" {
		return fmt.Errorf("the stolen token as Bearer: want UNAUTHENTICATED with PROOF_MISSING, got %v %v", st.Code(), info)
	}
	s.say("      Attacker, as a Bearer token   -> %s", st.Code())
	s.say("         reason    %s", info.GetReason())
	s.say("         hint      %s\n", info.GetMetadata()["hint"])
	return nil
}

// replayWithAnotherKey sends the stolen token with proofs the attacker
// signs with its own key: the proof is well made, but its key is not the
// one the token is bound to.
func (s *scene) replayWithAnotherKey(ctx context.Context, audienceFor client.AudienceFunc, stolen, billingJKT string) error {
	attacker, err := newDPoPSigner()
	if err != nil {
		return err
	}
	src := map[string]oauth2.TokenSource{"api/invoices": oauth2.StaticTokenSource(&oauth2.Token{AccessToken: stolen, TokenType: "DPoP"})}
	creds, err := client.NewAudienceCredentials(audienceFor, src, client.WithDPoP(attacker), client.InsecureAllowLoopback())
	if err != nil {
		return err
	}
	var header metadata.MD
	st := status.Convert(call(ctx, s.invoicesAddr, invoicesMethod, append(slices.Clone(s.plain), grpc.WithPerRPCCredentials(creds)), grpc.Header(&header)))
	info := errorInfo(st)
	md := info.GetMetadata()
	if st.Code() != codes.Unauthenticated || info.GetReason() != "INVALID_PROOF" || md["claim"] != "jkt" ||
		md["expected"] != billingJKT || md["actual"] != attacker.Thumbprint() {
		return fmt.Errorf("the stolen token with another key: want UNAUTHENTICATED with INVALID_PROOF, jkt %s expected, %s actual; got %v %v", billingJKT, attacker.Thumbprint(), st.Code(), info)
	}
	challenge, _, _ := strings.Cut(strings.Join(header.Get("www-authenticate"), ""), ", error_description")
	s.say("      Attacker, its own key         -> %s, and the ErrorInfo says why:", st.Code())
	s.say("         reason    %s", info.GetReason())
	s.say("         expected  jkt %s (Billing's key, the token's cnf)", md["expected"])
	s.say("         actual    jkt %s (the key that signed the proof)", md["actual"])
	s.say("         challenge %s", challenge)
	return nil
}

// newDPoPSigner is a caller's DPoP key, P-256, kept in memory.
func newDPoPSigner() (*client.DPoPSigner, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return client.NewDPoPSigner(key)
}

// startUsher serves usher.v1.TokenService on 127.0.0.1 trusting iss.
func startUsher(ctx context.Context, iss *devissuer.Issuer) (string, error) {
	cfg := &service.Config{
		Issuers:   []service.IssuerConfig{{Issuer: iss.URL(), Discovery: true, TokenType: "at+jwt"}},
		Audiences: []service.KnownAudience{{Audience: "api/users", Name: "Users API"}, {Audience: "api/invoices", Name: "Invoices API"}},
	}
	v, err := service.NewValidator(ctx, cfg, service.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		return "", err
	}
	if err := v.WaitTried(ctx); err != nil {
		return "", err
	}
	gs := grpc.NewServer()
	grpcapi.Register(ctx, gs, v, nil)
	return serve(ctx, gs)
}

// startAPI is a service protected by usher: the two lines are
// NewAuthenticator and the interceptors in grpc.NewServer.
func startAPI(ctx context.Context, usher *client.Client, audience, svc, method string) (string, error) {
	authn, err := client.NewAuthenticator(usher, audience)
	if err != nil {
		return "", err
	}
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor(authn.UnaryServerInterceptor()), grpc.ChainStreamInterceptor(authn.StreamServerInterceptor()))

	gs.RegisterService(&grpc.ServiceDesc{
		ServiceName: svc,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{MethodName: method, Handler: func(_ any, ctx context.Context, dec func(any) error, ic grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			h := func(ctx context.Context, _ any) (any, error) {
				c, _ := client.ClaimsFromContext(ctx)
				return wrapperspb.String("hello " + c.GetSubject()), nil
			}
			return ic(ctx, in, &grpc.UnaryServerInfo{FullMethod: "/" + svc + "/" + method}, h)
		}}},
	}, struct{}{})
	return serve(ctx, gs)
}

func serve(ctx context.Context, gs *grpc.Server) (string, error) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go func() { _ = gs.Serve(lis) }()
	go func() {
		<-ctx.Done()
		gs.Stop()
	}()
	return lis.Addr().String(), nil
}

func call(ctx context.Context, addr, method string, opts []grpc.DialOption, callOpts ...grpc.CallOption) error {
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	return conn.Invoke(ctx, method, wrapperspb.String("hi"), new(wrapperspb.StringValue), callOpts...)
}

func errorInfo(st *status.Status) *errdetails.ErrorInfo {
	for _, d := range st.Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok {
			return ei
		}
	}
	return nil
}
