package grpcapi_test

import (
	"context"
	"testing"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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

// TestLimitInFlight_NeverShedsHealth: with every slot taken, health checks
// (Check and List, by their exact method names) still run, and health calls
// in flight take no slot; a method that only looks like health is counted.
func TestLimitInFlight_NeverShedsHealth(t *testing.T) {
	limit := grpcapi.LimitInFlight(1)
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	held := func(ctx context.Context, _ any) (any, error) {
		entered <- struct{}{}
		<-release
		return "ok", nil
	}
	quick := func(ctx context.Context, _ any) (any, error) { return "ok", nil }
	call := func(method string, h grpc.UnaryHandler) error {
		_, err := limit(context.Background(), nil, &grpc.UnaryServerInfo{FullMethod: method}, h)
		return err
	}
	const validate = "/usher.v1.TokenService/ValidateToken"
	errs := make(chan error, 2)
	go func() { errs <- call(validate, held) }()
	<-entered // the only slot is taken
	for _, m := range []string{healthpb.Health_Check_FullMethodName, healthpb.Health_List_FullMethodName} {
		if err := call(m, quick); err != nil {
			t.Errorf("%s with every slot taken: %v, want it served", m, err)
		}
	}
	for _, m := range []string{"/grpc.health.v1.Health/CheckX", "/grpc.health.v1.HealthX/Check", "/x/grpc.health.v1.Health/Check", "grpc.health.v1.Health/Check"} {
		if err := call(m, quick); status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s with every slot taken: %v, want RESOURCE_EXHAUSTED (not a health method)", m, err)
		}
	}
	close(release)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	// A health call in flight holds no slot.
	release = make(chan struct{})
	go func() { errs <- call(healthpb.Health_Check_FullMethodName, held) }()
	<-entered
	if err := call(validate, quick); err != nil {
		t.Errorf("a call with only a health check in flight: %v", err)
	}
	close(release)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
