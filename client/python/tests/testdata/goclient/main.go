// Command goclient calls one method of a gRPC server the way a Go service
// would, and prints as JSON what grpc-go's status package reads from the
// answer: code, message, the details of grpc-status-details-bin
// (status.FromError(err).Details()) and www-authenticate. The Python
// interceptor's tests run it to prove that a Go caller decodes the
// google.rpc.Status and ErrorInfo the Python interceptor writes.
//
// It lives under testdata so that `go build ./...` and `go vet ./...` of the
// repository leave it alone; tests run it with `go run ./client/python/tests/testdata/goclient`.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"
)

func main() {
	addr := flag.String("addr", "", "the server's address (host:port)")
	method := flag.String("method", "/usher.test.v1.Echo/Say", "the full method name")
	auth := flag.String("authorization", "", "the authorization metadata value (none when empty)")
	stream := flag.Bool("stream", false, "call a server-streaming method")
	flag.Parse()

	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintln(os.Stderr, "goclient:", err)
		os.Exit(2)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if *auth != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", *auth)
	}

	var header, trailer metadata.MD
	if *stream {
		var s grpc.ClientStream
		s, err = conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, *method, grpc.Header(&header), grpc.Trailer(&trailer))
		if err == nil {
			if err = s.SendMsg(&emptypb.Empty{}); err == nil {
				err = s.CloseSend()
			}
			for err == nil {
				err = s.RecvMsg(&emptypb.Empty{})
			}
			if err == io.EOF {
				err = nil
			}
		}
	} else {
		err = conn.Invoke(ctx, *method, &emptypb.Empty{}, &emptypb.Empty{}, grpc.Header(&header), grpc.Trailer(&trailer))
	}

	st, _ := status.FromError(err)
	details := []any{}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			details = append(details, map[string]any{"type": "google.rpc.ErrorInfo", "reason": d.GetReason(), "domain": d.GetDomain(), "metadata": d.GetMetadata()})
		case error:
			details = append(details, map[string]any{"error": d.Error()})
		default:
			details = append(details, map[string]any{"type": fmt.Sprintf("%T", d)})
		}
	}
	out := map[string]any{
		"code":             st.Code().String(),
		"message":          st.Message(),
		"details":          details,
		"www_authenticate": append(header.Get("www-authenticate"), trailer.Get("www-authenticate")...),
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(2)
	}
}
