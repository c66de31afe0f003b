package service

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// MaxCallTime bounds a call that arrives without a deadline, so that no
// internal wait (a key refetch) is unbounded.
const MaxCallTime = 10 * time.Second

// MaxRecvMsgSize is the largest request usher reads: a token of
// max_token_bytes plus room for the audience and scopes.
func MaxRecvMsgSize(cfg *Config) int { return cfg.MaxTokenBytes + 16<<10 }

// LimitInFlight sheds load: beyond max concurrent calls it answers
// RESOURCE_EXHAUSTED at once rather than queuing without bound, and it gives
// a call without a deadline one of MaxCallTime.
func LimitInFlight(max int) grpc.UnaryServerInterceptor {
	var inFlight atomic.Int64
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if n := inFlight.Add(1); n > int64(max) {
			inFlight.Add(-1)
			return nil, status.Error(codes.ResourceExhausted, fmt.Sprintf("usher is overloaded (%d calls in flight, max_in_flight %d): retry with backoff, or add replicas", n-1, max))
		}
		defer inFlight.Add(-1)
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, MaxCallTime)
			defer cancel()
		}
		return handler(ctx, req)
	}
}
