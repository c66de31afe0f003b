package grpcapi_test

import (
	"context"
	"crypto/elliptic"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/usher-dev/usher/grpcapi"
	"github.com/usher-dev/usher/internal/testkit"
	usherv1 "github.com/usher-dev/usher/proto/usher/v1"
	"github.com/usher-dev/usher/service"
)

var suppressedAttr = regexp.MustCompile(` suppressed=(\d+) `)

// logCount is what a text log says about the lines of one message: the
// lines written whole, and the total the summary lines say they left out.
func logCount(t *testing.T, log, msg string) (whole, suppressed int) {
	t.Helper()
	for line := range strings.Lines(log) {
		switch {
		case strings.Contains(line, " msg="+msg+" "):
			whole++
		case strings.Contains(line, ` msg="`+msg+": "):
			m := suppressedAttr.FindStringSubmatch(line)
			if m == nil {
				t.Fatalf("summary line without suppressed=: %s", line)
			}
			n, _ := strconv.Atoi(m[1])
			suppressed += n
		}
	}
	return whole, suppressed
}

// TestServer_RejectionLogIsBounded: 10,000 forged tokens of three kinds
// write at most SampleBurst whole lines per reason in a window, and the
// summary lines at the window's end count every one that was left out. The
// Server is the one a real gRPC server serves; the first calls go through
// it, the flood calls its handler directly (the same code, without the
// network's cost on a loaded machine).
func TestServer_RejectionLogIsBounded(t *testing.T) {
	ctx := testkit.Context(t)
	clock := testkit.NewClock()
	k := testkit.ECKey(t, "ec-1", elliptic.P256())
	ti := testkit.NewIssuer(t, k)
	v := testkit.NewValidator(t, ctx, clock, []service.IssuerConfig{ti.Config()})
	var logs testkit.SyncBuffer
	ticks := make(chan time.Time)
	conn, srv := serveWith(t, ctx, v, slog.New(slog.NewTextHandler(&logs, nil)), nil, grpcapi.WithClock(clock.Now), grpcapi.WithTicks(ticks))
	c := usherv1.NewTokenServiceClient(conn)
	validate := func(i int, req *usherv1.ValidateTokenRequest) (*usherv1.ValidateTokenResponse, error) {
		if i < 100 {
			return c.ValidateToken(ctx, req)
		}
		return srv.ValidateToken(ctx, req)
	}
	forged := []string{
		k.Like(t, "ec-1").Token(t, testkit.Claims(ti.URL())),      // INVALID_SIGNATURE
		k.Token(t, testkit.Claims("https://not-trusted.example")), // UNTRUSTED_ISSUER
		"not.a.token", // MALFORMED
	}
	const calls, workers = 10_000, 4
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < calls; i += workers {
				resp, err := validate(i, &usherv1.ValidateTokenRequest{Token: forged[i%len(forged)], ExpectedAudience: "api/users"})
				if err != nil || resp.GetValid() {
					errs <- fmt.Errorf("call %d: %v, %v", i, resp, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	whole, _ := logCount(t, logs.String(), "validate")
	if whole > len(forged)*grpcapi.SampleBurst {
		t.Fatalf("%d validate lines for %d rejections in one window, want at most %d", whole, calls, len(forged)*grpcapi.SampleBurst)
	}
	clock.Advance(grpcapi.SampleWindow)
	ticks <- clock.Now()
	var suppressed int
	testkit.Eventually(ctx, t, "the summary lines", func() bool {
		whole, suppressed = logCount(t, logs.String(), "validate")
		return whole+suppressed >= calls
	})
	if whole+suppressed != calls {
		t.Fatalf("%d whole + %d summarised = %d, want %d:\n%s", whole, suppressed, whole+suppressed, calls, logs.String())
	}
	t.Logf("%d rejections: %d log lines, %d bytes", calls, strings.Count(logs.String(), "\n"), len(logs.String()))
	for _, want := range []string{"INVALID_SIGNATURE", "UNTRUSTED_ISSUER", "MALFORMED"} {
		if !strings.Contains(logs.String(), " more "+want+" lines in the last 10s") {
			t.Errorf("no summary for %s:\n%s", want, logs.String())
		}
	}
}

// TestLogSampler_Rules: only Info-or-above lines of the sampled messages are
// sampled, per reason; a window's summaries are written by the next sampled
// line after it ended; derived handlers share the counts; the pairs a window
// tracks are bounded; Run writes what is left when its context ends.
func TestLogSampler_Rules(t *testing.T) {
	clock := testkit.NewClock()
	var buf testkit.SyncBuffer
	s := grpcapi.NewLogSampler(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}), clock.Now, "check")
	log := slog.New(s)
	derived := log.With("front", "envoy")
	for range 100 {
		log.Info("check", "reason", "EXPIRED")
		derived.Info("check", "reason", "EXPIRED")
		log.Debug("check", "reason", "EXPIRED") // below Info: passes
		log.Info("other", "reason", "EXPIRED")  // not sampled
	}
	whole, suppressed := logCount(t, buf.String(), "check")
	if whole != grpcapi.SampleBurst+100 || suppressed != 0 {
		t.Fatalf("whole %d (want %d: the burst and the Debug lines), suppressed %d before the window ended", whole, grpcapi.SampleBurst+100, suppressed)
	}
	if got := strings.Count(buf.String(), "msg=other"); got != 100 {
		t.Fatalf("%d lines of an unsampled message, want 100", got)
	}

	// The next sampled line after the window writes its summary first.
	clock.Advance(grpcapi.SampleWindow + time.Second)
	log.Warn("check", "reason", "NO_ROUTE")
	_, suppressed = logCount(t, buf.String(), "check")
	if suppressed != 190 || !strings.Contains(buf.String(), `msg="check: 190 more EXPIRED lines in the last 11s, not logged one by one" reason=EXPIRED suppressed=190 window=11s`) {
		t.Fatalf("summary after the window (want 190 suppressed):\n%s", buf.String())
	}

	// Many reasons in one window: counts beyond the tracked pairs share
	// "other"; lines stay bounded.
	buf = testkit.SyncBuffer{}
	clock.Advance(grpcapi.SampleWindow)
	for i := range 10_000 {
		log.Info("check", "reason", fmt.Sprintf("R%d", i%1000))
	}
	whole, _ = logCount(t, buf.String(), "check")
	if whole > 70*grpcapi.SampleBurst {
		t.Fatalf("%d whole lines for 1,000 reasons: the tracked pairs are not bounded", whole)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx, nil); close(done) }()
	cancel()
	<-done
	whole, suppressed = logCount(t, buf.String(), "check")
	if whole+suppressed != 10_000 || !strings.Contains(buf.String(), " more other lines") {
		t.Fatalf("whole %d + suppressed %d after Run ended, want 10,000:\n%.2000s", whole, suppressed, buf.String())
	}
}
