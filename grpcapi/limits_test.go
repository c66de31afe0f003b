package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestLimitInFlight_ShedsInsteadOfQueuing(t *testing.T) {
	limit := grpcapi.LimitInFlight(2)
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	slow := func(ctx context.Context, _ any) (any, error) {
		entered <- struct{}{}
		<-release
		return "ok", nil
	}
	info := &grpc.UnaryServerInfo{FullMethod: "/usher.v1.TokenService/ValidateToken"}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := limit(context.Background(), nil, info, slow)
			errs <- err
		}()
	}
	<-entered
	<-entered
	start := time.Now()
	_, err := limit(context.Background(), nil, info, slow)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("third call with 2 in flight: %v, want RESOURCE_EXHAUSTED", err)
	}
	if time.Since(start) > time.Second {
		t.Error("the refused call waited instead of failing at once")
	}
	close(release)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Capacity is back once the calls finished.
	if _, err := limit(context.Background(), nil, info, func(ctx context.Context, _ any) (any, error) {
		if _, ok := ctx.Deadline(); !ok {
			t.Error("a call without a deadline got none")
		}
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
}
