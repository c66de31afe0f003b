// Command trivial is the baseline of the ghz benchmark: a grpc-go server of
// usher.v1.TokenService whose ValidateToken answers {valid: true, reason:
// REASON_VALID} without looking at the token. It serves reflection (so ghz
// needs no .proto) and the health service, and nothing else: no
// interceptors, no validation. Its CPU time per request is the cost of gRPC
// itself, which usher cannot go below.
//
// With -response FILE (a binary ValidateTokenResponse, as benchcheck
// response writes it), ValidateToken answers that message instead: the cost
// of gRPC for usher's own answer, whose size the trivial one does not have.
// With -pprof ADDR, net/http/pprof is served on ADDR (loopback), for the
// kit's profiles.
//
// With -http, it is instead the baseline of the HTTP/JSON peer (OPA's data
// API): an HTTP/1.1 server that decodes each POSTed body as
// {"input": {"token", "expected_audience"}} and answers {"result": true},
// the cost of HTTP and JSON for a request of the same size.
//
//	trivial [-listen 127.0.0.1:50052] [-response FILE] [-pprof 127.0.0.1:PORT] [-http 127.0.0.1:PORT]
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	"google.golang.org/protobuf/proto"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

type server struct {
	usherv1.UnimplementedTokenServiceServer
	answer *usherv1.ValidateTokenResponse // nil: {valid: true, reason: REASON_VALID}
}

func (s server) ValidateToken(context.Context, *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	if s.answer != nil {
		return s.answer, nil // only read by grpc's marshalling: safe to share
	}
	return &usherv1.ValidateTokenResponse{Valid: true, Reason: usherv1.Reason_REASON_VALID}, nil
}

func main() {
	listen := flag.String("listen", "127.0.0.1:50052", "loopback host:port to serve gRPC on")
	httpListen := flag.String("http", "", "loopback host:port to serve the HTTP/JSON baseline on, instead of gRPC")
	responseFile := flag.String("response", "", "binary ValidateTokenResponse to answer with (gRPC only)")
	pprofListen := flag.String("pprof", "", "loopback host:port to serve net/http/pprof on")
	flag.Parse()
	err := startPprof(*pprofListen)
	if err == nil && *httpListen != "" {
		err = runHTTP(*httpListen)
	} else if err == nil {
		var srv server
		if srv.answer, err = readAnswer(*responseFile); err == nil {
			err = runGRPC(*listen, srv)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "trivial:", err)
		os.Exit(1)
	}
}

// loopback listens on listen, which must be a loopback address.
func loopback(listen string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("%q: %w", listen, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("%q: not a loopback address", listen)
	}
	return net.Listen("tcp", listen)
}

// readAnswer reads a binary ValidateTokenResponse; "" is none.
func readAnswer(path string) (*usherv1.ValidateTokenResponse, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var resp usherv1.ValidateTokenResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		return nil, fmt.Errorf("%s: not a ValidateTokenResponse: %w", path, err)
	}
	return &resp, nil
}

// startPprof serves net/http/pprof on listen (loopback), if not "".
func startPprof(listen string) error {
	if listen == "" {
		return nil
	}
	lis, err := loopback(listen)
	if err != nil {
		return err
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	return nil
}

func runGRPC(listen string, srv server) error {
	lis, err := loopback(listen)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	usherv1.RegisterTokenServiceServer(gs, srv)
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

// runHTTP serves the HTTP/JSON baseline.
func runHTTP(listen string) error {
	lis, err := loopback(listen)
	if err != nil {
		return err
	}
	answer := []byte(`{"result":true}` + "\n")
	srv := &http.Server{
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var in struct {
				Input struct {
					Token            string `json:"token"`
					ExpectedAudience string `json:"expected_audience"`
				} `json:"input"`
			}
			if r.Method != http.MethodPost || json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20)).Decode(&in) != nil {
				http.Error(w, `{"code":"invalid_parameter"}`, http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(answer)
		}),
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		_ = srv.Close()
	}()
	fmt.Fprintln(os.Stderr, "trivial (HTTP) listening on", lis.Addr())
	if err := srv.Serve(lis); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
