package grpcapi

import (
	"fmt"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// LimitStreams bounds the streaming calls open at once across every
// connection (health Watch, server reflection): they can stay open for
// hours, and each holds memory. Beyond max a new stream is refused at once
// with RESOURCE_EXHAUSTED; unary calls are not counted here (LimitInFlight
// bounds them).
func LimitStreams(max int) grpc.StreamServerInterceptor {
	var open atomic.Int64
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if n := open.Add(1); n > int64(max) {
			open.Add(-1)
			return status.Error(codes.ResourceExhausted, fmt.Sprintf("usher has %d streams open (max_streams %d): close streams you no longer need (a health Watch per client is enough), or raise max_streams", n-1, max))
		}
		defer open.Add(-1)
		return handler(srv, ss)
	}
}
