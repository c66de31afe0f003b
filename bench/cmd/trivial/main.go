// Command trivial is the baseline of the ghz benchmark: a grpc-go server of
// usher.v1.TokenService whose ValidateToken answers {valid: true, reason:
// REASON_VALID} without looking at the token. It serves reflection (so ghz
// needs no .proto) and the health service, and nothing else: no
// interceptors, no validation. Its CPU time per request is the cost of gRPC
// itself, which usher cannot go below.
//
//	trivial [-listen 127.0.0.1:50052]
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

type server struct {
	usherv1.UnimplementedTokenServiceServer
}

func (server) ValidateToken(context.Context, *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	return &usherv1.ValidateTokenResponse{Valid: true, Reason: usherv1.Reason_REASON_VALID}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:50052", "loopback host:port to serve gRPC on")
	flag.Parse()
	if err := run(*listen); err != nil {
		fmt.Fprintln(os.Stderr, "trivial:", err)
		os.Exit(1)
	}
}

func run(listen string) error {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("-listen %q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("-listen %q: not a loopback address", listen)
	}
	lis, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	usherv1.RegisterTokenServiceServer(gs, server{})
	healthpb.RegisterHealthServer(gs, health.NewServer())
	reflection.Register(gs)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		gs.Stop()
	}()
	fmt.Fprintln(os.Stderr, "trivial listening on", lis.Addr())
	return gs.Serve(lis)
}
