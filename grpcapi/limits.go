package grpcapi

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
)

// MaxCallTime bounds a call that arrives without a deadline, so that no
// internal wait (a key refetch) is unbounded.
const MaxCallTime = 10 * time.Second

// MaxRecvMsgSize is the largest request usher reads: a token of
// maxTokenBytes (the engine's max_token_bytes) plus room for a DPoP proof
// and URI at their limits (MaxProofBytes, MaxURIBytes) and for the audience
// and scopes.
func MaxRecvMsgSize(maxTokenBytes int) int { return maxTokenBytes + sizedFieldsBytes }

// LimitInFlight sheds load: beyond max concurrent calls it answers
// RESOURCE_EXHAUSTED at once rather than queuing without bound, and it gives
// a call without a deadline one of MaxCallTime. Health checks
// (grpc.health.v1.Health Check and List, matched by their exact method
// names) are never counted or refused: an orchestrator that cannot read
// health under load would pull or restart a replica that is only busy, and
// a health answer costs a map lookup.
func LimitInFlight(max int) grpc.UnaryServerInterceptor {
	var inFlight atomic.Int64
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if neverShed(info.FullMethod) {
			return handler(ctx, req)
		}
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

// neverShed reports whether a method is exempt from the in-flight limit.
func neverShed(method string) bool {
	return method == healthpb.Health_Check_FullMethodName || method == healthpb.Health_List_FullMethodName
}

// Intercepted runs a gRPC unary interceptor (such as LimitInFlight) around
// the calls another front end (HTTP/JSON) makes to srv, so that every front
// end shares one in-flight limit.
func Intercepted(srv usherv1.TokenServiceServer, ic grpc.UnaryServerInterceptor) usherv1.TokenServiceServer {
	return intercepted{srv, ic}
}

type intercepted struct {
	usherv1.TokenServiceServer
	ic grpc.UnaryServerInterceptor
}

func interceptCall[Req, Resp any](ctx context.Context, ic grpc.UnaryServerInterceptor, method string, req *Req, call func(context.Context, *Req) (*Resp, error)) (*Resp, error) {
	out, err := ic(ctx, req, &grpc.UnaryServerInfo{FullMethod: method}, func(ctx context.Context, r any) (any, error) {
		return call(ctx, r.(*Req))
	})
	if err != nil {
		return nil, err
	}
	return out.(*Resp), nil
}

func (s intercepted) ValidateToken(ctx context.Context, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
	return interceptCall(ctx, s.ic, usherv1.TokenService_ValidateToken_FullMethodName, req, s.TokenServiceServer.ValidateToken)
}

func (s intercepted) InspectToken(ctx context.Context, req *usherv1.InspectTokenRequest) (*usherv1.InspectTokenResponse, error) {
	return interceptCall(ctx, s.ic, usherv1.TokenService_InspectToken_FullMethodName, req, s.TokenServiceServer.InspectToken)
}

func (s intercepted) ListIssuers(ctx context.Context, req *usherv1.ListIssuersRequest) (*usherv1.ListIssuersResponse, error) {
	return interceptCall(ctx, s.ic, usherv1.TokenService_ListIssuers_FullMethodName, req, s.TokenServiceServer.ListIssuers)
}
