package grpcapi_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

// The bulkhead scenario: flood callers keep calls going with forged tokens
// naming an issuer whose key set never answers, over floodConns connections
// (each allows usher's default 256 streams), against max_in_flight 1024.
const (
	flood       = 1200
	floodConns  = 6
	maxInFlight = 1024
)

// slowIssuerStack is usher as `usher serve` runs it (its gRPC options, the
// in-flight limit chained as the only unary interceptor, Register) over two
// issuers: one whose key set request hangs until the test ends, one healthy.
type slowIssuerStack struct {
	addr    string
	forged  string // a token naming the slow issuer
	healthy usherv1.TokenServiceClient
	health  healthpb.HealthClient
	mint    func(i int) string // a valid token of the healthy issuer; distinct per i
}

func newSlowIssuerStack(tb testing.TB, ctx context.Context) *slowIssuerStack {
	tb.Helper()
	good, forger := testkit.EdKey(tb, "good"), testkit.EdKey(tb, "forged")
	healthy, slowIss := testkit.NewIssuer(tb, good), testkit.NewIssuer(tb)
	hold := make(chan struct{})
	slowIss.Handle(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hold:
		case <-r.Context().Done():
		}
	})
	tb.Cleanup(func() { close(hold) }) // before the issuer's server closes
	slowCfg := slowIss.Config()
	slowCfg.FetchTimeout = 20 * time.Second
	v := testkit.NewValidator(tb, ctx, testkit.NewClock(), []service.IssuerConfig{slowCfg, healthy.Config()})
	testkit.Eventually(ctx, tb, "the healthy issuer's keys", func() bool { return len(v.Issuers()[1].KeyIDs) == 1 })

	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	gs := grpc.NewServer(
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
		grpc.MaxRecvMsgSize(grpcapi.MaxRecvMsgSize(service.DefaultMaxTokenBytes)),
		grpc.MaxConcurrentStreams(256),
		grpc.ChainUnaryInterceptor(grpcapi.LimitInFlight(maxInFlight)))
	grpcapi.Register(ctx, gs, v, nil)
	go gs.Serve(lis)
	tb.Cleanup(gs.Stop)
	conn := testkit.Dial(tb, lis.Addr().String()) // the healthy caller's own connection
	return &slowIssuerStack{
		addr:    lis.Addr().String(),
		forged:  forger.Token(tb, testkit.Claims(slowIss.URL())),
		healthy: usherv1.NewTokenServiceClient(conn),
		health:  healthpb.NewHealthClient(conn),
		mint: func(i int) string {
			return good.Token(tb, testkit.Claims(healthy.URL(), "jti", fmt.Sprint("probe-", i)))
		},
	}
}

// floodStats counts the flood's callers (started, and those that sent their
// first call), calls and answers.
type floodStats struct{ started, first, sent, verdicts, refused, other atomic.Int64 }

func (s *floodStats) answers() int64 { return s.verdicts.Load() + s.refused.Load() + s.other.Load() }

// startFlood starts flood callers, each sending one call after another
// until ctx is done; with pace, a caller waits for a tick of it before each
// call (all callers share it).
func (s *slowIssuerStack) startFlood(tb testing.TB, ctx context.Context, pace <-chan time.Time) (*floodStats, *sync.WaitGroup) {
	tb.Helper()
	var st floodStats
	var wg sync.WaitGroup
	conns := make([]usherv1.TokenServiceClient, floodConns)
	for i := range conns {
		conns[i] = usherv1.NewTokenServiceClient(testkit.Dial(tb, s.addr))
	}
	req := &usherv1.ValidateTokenRequest{Token: s.forged, ExpectedAudience: "api/users"}
	for i := range flood {
		c := conns[i%floodConns]
		wg.Go(func() {
			st.started.Add(1)
			for first := true; ctx.Err() == nil; first = false {
				if pace != nil {
					select {
					case <-pace:
					case <-ctx.Done():
						return
					}
				}
				if first {
					st.first.Add(1)
				}
				st.sent.Add(1)
				_, err := c.ValidateToken(ctx, req)
				switch status.Code(err) {
				case codes.OK:
					st.verdicts.Add(1)
				case codes.ResourceExhausted:
					st.refused.Add(1)
				default:
					st.other.Add(1)
				}
			}
		})
	}
	return &st, &wg
}

// probe validates a valid token of the healthy issuer with a one-second
// deadline; err is nil only for VALID.
func (s *slowIssuerStack) probe(ctx context.Context, tok string) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	start := time.Now()
	resp, err := s.healthy.ValidateToken(cctx, &usherv1.ValidateTokenRequest{Token: tok, ExpectedAudience: "api/users"})
	took := time.Since(start)
	if err == nil && !resp.GetValid() {
		err = fmt.Errorf("reason %v: %s", resp.GetReason(), resp.GetMessage())
	}
	return took, err
}

// checkHealth asks grpc.health.v1.Health/Check with a short deadline.
func (s *slowIssuerStack) checkHealth(ctx context.Context) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 250*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := s.health.Check(cctx, &healthpb.HealthCheckRequest{})
	return time.Since(start), err
}

// TestBulkhead_SlowIssuerFloodSparesOthersAndHealth: 1,200 callers for an
// issuer whose key set never answers do not take usher down: a healthy
// issuer's valid token is answered VALID within a one-second deadline, and
// grpc.health.v1.Health/Check answers within 250 ms. The flood callers
// share ~500 calls/s: on two cores under -race the test's own client would
// otherwise starve usher of CPU, and what this test checks is in-flight
// slots (BenchmarkBulkhead_SlowIssuerFlood floods unpaced and measures).
func TestBulkhead_SlowIssuerFloodSparesOthersAndHealth(t *testing.T) {
	ctx := testkit.Context(t)
	s := newSlowIssuerStack(t, ctx)
	toks := []string{s.mint(0), s.mint(1), s.mint(2)}
	pace := time.NewTicker(2 * time.Millisecond)
	defer pace.Stop()
	fctx, stop := context.WithCancel(ctx)
	st, wg := s.startFlood(t, fctx, pace.C)
	defer func() { stop(); wg.Wait() }()
	testkit.Eventually(ctx, t, "every flood caller sending", func() bool { return st.first.Load() == flood && st.sent.Load() >= flood+100 })
	for _, tok := range toks {
		took, err := s.probe(ctx, tok)
		if err != nil {
			t.Errorf("a healthy issuer's valid token under the flood, with a 1s deadline: %v (after %s; flood: %d verdicts, %d RESOURCE_EXHAUSTED)",
				err, took.Round(time.Millisecond), st.verdicts.Load(), st.refused.Load())
		}
		t.Logf("healthy issuer's valid token under the flood: %s", took.Round(10*time.Microsecond))
	}
	took, err := s.checkHealth(ctx)
	if err != nil {
		t.Errorf("health Check under the flood, with a 250ms deadline: %v (after %s)", err, took.Round(time.Millisecond))
	}
	t.Logf("health Check under the flood: %s", took.Round(10*time.Microsecond))
	if st.verdicts.Load() == 0 || st.other.Load() != 0 {
		t.Errorf("the flood's calls got %d verdicts and %d errors: each should get its verdict (KEYS_UNAVAILABLE) without waiting for the fetch", st.verdicts.Load(), st.other.Load())
	}
}

// BenchmarkBulkhead_SlowIssuerFlood: the healthy issuer's valid token (one
// per op, each a new token: no cache) under an unpaced flood of 1,200
// callers for the slow issuer. Reports its latency (p50, max; and p50
// without the flood), how many were not VALID within 1s, health Check's
// latency (-1: not answered within 250ms), and the flood's calls per second
// (verdicts, and RESOURCE_EXHAUSTED refusals):
//
//	go test -run '^$' -bench Bulkhead -benchtime 50x ./grpcapi/
func BenchmarkBulkhead_SlowIssuerFlood(b *testing.B) {
	ctx := testkit.Context(b)
	s := newSlowIssuerStack(b, ctx)
	const quietN = 20
	toks := make([]string, quietN+b.N)
	for i := range toks {
		toks[i] = s.mint(i)
	}
	var quiet []time.Duration // the same calls without the flood, for the ratio
	for _, tok := range toks[:quietN] {
		d, _ := s.probe(ctx, tok)
		quiet = append(quiet, d)
	}
	toks = toks[quietN:]
	fctx, stop := context.WithCancel(ctx)
	st, wg := s.startFlood(b, fctx, nil)
	defer func() { stop(); wg.Wait() }()
	testkit.Eventually(ctx, b, "the flood in full swing", func() bool { return st.started.Load() == flood && st.sent.Load() >= 2*flood })
	from, v0, r0, start := st.answers(), st.verdicts.Load(), st.refused.Load(), time.Now()
	var took []time.Duration
	failed := 0
	b.ResetTimer()
	for i := range b.N {
		d, err := s.probe(ctx, toks[i])
		took = append(took, d)
		if err != nil {
			failed++
		}
	}
	b.StopTimer()
	secs := time.Since(start).Seconds()
	htook, herr := s.checkHealth(ctx)
	healthMS := float64(htook) / 1e6
	if herr != nil {
		healthMS = -1 // not answered within 250ms
	}
	slices.Sort(took)
	slices.Sort(quiet)
	b.ReportMetric(float64(quiet[len(quiet)/2])/1e6, "healthy-quiet-p50-ms")
	b.ReportMetric(float64(took[len(took)/2])/1e6, "healthy-p50-ms")
	b.ReportMetric(float64(took[len(took)-1])/1e6, "healthy-max-ms")
	b.ReportMetric(float64(failed)/float64(b.N), "healthy-failed/op")
	b.ReportMetric(healthMS, "health-ms")
	b.ReportMetric(float64(st.answers()-from)/secs, "flood-calls/s")
	b.ReportMetric(float64(st.verdicts.Load()-v0)/secs, "flood-verdicts/s")
	b.ReportMetric(float64(st.refused.Load()-r0)/secs, "flood-refused/s")
}
