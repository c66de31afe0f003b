// Command goclient calls one unary method of a gRPC server with grpc-go and
// prints, as JSON, what grpc-go makes of the answer: the status code and
// message, status.FromError(err).Details() and the trailers. The Node tests
// use it to show that a Go caller decodes the Node interceptor's
// google.rpc.ErrorInfo, and to send metadata grpc-js refuses to send (two
// authorization values). It lives under testdata so that `go build ./...`
// and `go vet ./...` leave it out.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

type values []string

func (v *values) String() string     { return strings.Join(*v, ",") }
func (v *values) Set(s string) error { *v = append(*v, s); return nil }

type detail struct {
	Type     string            `json:"type"`
	Reason   string            `json:"reason,omitempty"`
	Domain   string            `json:"domain,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
}

type result struct {
	Code    string              `json:"code"`
	Message string              `json:"message"`
	Details []detail            `json:"details"`
	Trailer map[string][]string `json:"trailer"`
}

func main() {
	addr := flag.String("addr", "", "host:port of the server")
	method := flag.String("method", "", "full method name, /pkg.Service/Method (unary)")
	var auth, dpop values
	flag.Var(&auth, "auth", "an authorization value (repeatable)")
	flag.Var(&dpop, "dpop", "a dpop value (repeatable)")
	flag.Parse()
	if *addr == "" || *method == "" {
		fmt.Fprintln(os.Stderr, "usage: goclient -addr HOST:PORT -method /pkg.Service/Method [-auth V]... [-dpop V]...")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var kv []string
	for _, a := range auth {
		kv = append(kv, "authorization", a)
	}
	for _, d := range dpop {
		kv = append(kv, "dpop", d)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, kv...)
	var trailer metadata.MD
	// An empty message is a valid EchoRequest, and any reply decodes into Empty.
	err = conn.Invoke(ctx, *method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.Trailer(&trailer))
	st := status.Convert(err)
	out := result{Code: st.Code().String(), Message: st.Message(), Details: []detail{}, Trailer: map[string][]string{}}
	for _, d := range status.Convert(err).Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			out.Details = append(out.Details, detail{Type: "google.rpc.ErrorInfo", Reason: d.GetReason(), Domain: d.GetDomain(), Metadata: d.GetMetadata()})
		case error:
			out.Details = append(out.Details, detail{Type: "error: " + d.Error()})
		default:
			out.Details = append(out.Details, detail{Type: fmt.Sprintf("%T", d)})
		}
	}
	for k, v := range trailer {
		if k != "grpc-status-details-bin" {
			out.Trailer[k] = v
		}
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(1)
	}
}
